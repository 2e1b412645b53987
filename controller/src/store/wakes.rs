//! Wake-ups told to every controller of a PostgreSQL store. A worker's
//! AwaitCommands call waits on one controller for its commands' ends
//! (recorded from Run Command's events) and for its campaigns' cancels (a
//! CancelCampaign, a maintenance window closing with its commands to
//! cancel). Another controller may make that write: SQS hands an event to
//! either, a person's cancel reaches either, and the leader closes
//! windows. So the statement that makes it also NOTIFYs [`CHANNEL`]
//! (PostgreSQL delivers it at commit and drops it with a rollback), and
//! every controller, the writer too, wakes its waiting calls when it hears
//! it (`Store::listen_others`). A wake-up that is lost (a listener
//! reconnecting) costs the call its next look in the store, a second
//! later, never an answer. On SQLite one controller holds the store, and
//! the writes wake their own waiters.

use super::StoreResult;
use super::sql::{Engine, Sql, Value};

/// The channel wake-ups are told on.
pub const CHANNEL: &str = "muster_wake";

/// Tells every controller, at this transaction's commit, that calls
/// waiting on command ends or cancels should look again. Nothing on
/// SQLite.
pub fn tell(conn: &dyn Sql) -> StoreResult<()> {
    if conn.engine() == Engine::Postgres {
        conn.query_values("SELECT pg_notify(?1, '')", &[Value::Text(CHANNEL)])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc::UnboundedReceiver;

    use super::*;
    use crate::store::command_endings::{self, Ending};
    use crate::store::testkit::TestDatabase;
    use crate::store::{PostgresTarget, Store, StoreError, Told, campaigns, testing};

    /// Whether a wake-up comes within `within` (results told are skipped).
    async fn woken(told: &mut UnboundedReceiver<Told>, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, told.recv()).await {
                Ok(Some(Told::Wake)) => return true,
                Ok(Some(Told::Results(_))) => {}
                Ok(None) | Err(_) => return false,
            }
        }
    }

    /// Both listeners woken by one commit of `write` on the first store.
    async fn both_woken<F>(stores: &[Store; 2], listeners: &mut [UnboundedReceiver<Told>; 2], write: F) -> [bool; 2]
    where
        F: FnOnce(&dyn Sql) -> StoreResult<()> + Send + 'static,
    {
        stores[0].write(write).await.unwrap();
        let mut heard = [false; 2];
        for (n, told) in listeners.iter_mut().enumerate() {
            heard[n] = woken(told, Duration::from_secs(10)).await;
        }
        heard
    }

    fn ending(id: &str) -> Ending {
        Ending {
            command_id: id.into(),
            status: "Success".into(),
            account_id: "111111111111".into(),
            region: "us-east-1".into(),
        }
    }

    /// Two controllers on one database: what one writes wakes both at its
    /// commit, and a write undone wakes nobody.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancel_a_closing_window_and_new_endings_wake_every_controller_at_the_commit() {
        let database = TestDatabase::create();
        let target = PostgresTarget::parse(database.url(), None, None).unwrap();
        let stores = [Store::connect(&target).unwrap(), Store::connect(&target).unwrap()];
        let mut listeners = [
            stores[0].listen_others().expect("PostgreSQL listens"),
            stores[1].listen_others().expect("PostgreSQL listens"),
        ];
        // Until a listener has connected it hears nothing: tell until both
        // have heard, then let what is still on its way arrive.
        for n in 0.. {
            stores[0].write(tell).await.unwrap();
            let mut heard = true;
            for told in &mut listeners {
                heard &= woken(told, Duration::from_millis(200)).await;
            }
            if heard {
                break;
            }
            assert!(n < 50, "the listeners never heard");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        for told in &mut listeners {
            while told.try_recv().is_ok() {}
        }

        let undone = stores[0]
            .write(|txn| {
                tell(txn)?;
                Err::<(), _>(StoreError::Corrupt("undone on purpose".into()))
            })
            .await;
        assert!(undone.is_err());
        assert!(
            !woken(&mut listeners[0], Duration::from_secs(1)).await,
            "an undone write wakes nobody"
        );

        let scope = ("111111111111", "us-east-1");
        stores[0]
            .write(move |txn| {
                testing::pending_campaign(txn, scope, 2);
                Ok(())
            })
            .await
            .unwrap();
        let tester = crate::store::audit::Actor {
            principal: "tester".into(),
            ..Default::default()
        };
        let cancel = move |txn: &dyn Sql| campaigns::request_cancel(txn, "c1", &tester, "stop").map(drop);
        assert_eq!(
            both_woken(&stores, &mut listeners, cancel).await,
            [true, true],
            "a cancel"
        );
        let window = |txn: &dyn Sql| campaigns::set_window_cancelling(txn, "c1", true);
        assert_eq!(
            both_woken(&stores, &mut listeners, window).await,
            [true, true],
            "a window closing with its commands to cancel"
        );
        let endings = |txn: &dyn Sql| command_endings::record(txn, &[ending("c-1")], 1_000).map(drop);
        assert_eq!(
            both_woken(&stores, &mut listeners, endings).await,
            [true, true],
            "new endings"
        );
        stores[0]
            .write(|txn| command_endings::record(txn, &[ending("c-1")], 2_000))
            .await
            .unwrap();
        assert!(
            !woken(&mut listeners[1], Duration::from_secs(1)).await,
            "an ending known already wakes nobody"
        );
    }

    #[test]
    fn on_sqlite_telling_does_nothing() {
        let conn = testing::TestDb::sqlite();
        tell(&*conn).unwrap();
    }
}
