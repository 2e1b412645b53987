//! Wake-ups for the calls that wait on writes. A worker's AwaitCommands
//! call waits on one controller for its commands' ends (recorded from Run
//! Command's events) and for its campaigns' cancels (a CancelCampaign, a
//! maintenance window closing with its commands to cancel). A write that
//! makes one of those calls [`tell`], and the store wakes the waiting
//! calls once it commits ([`super::Store::wakes`]), never before and never
//! for a write undone:
//!
//! - on this controller, from the writer, after the commit; a write undone
//!   to its savepoint forgets its wake-up;
//! - on the other controllers of a PostgreSQL store, which may be where
//!   the call waits (SQS hands an event to either, a person's cancel
//!   reaches either, the leader closes windows): `tell` also NOTIFYs
//!   [`CHANNEL`], which the server delivers at the commit and drops with a
//!   rollback, and each controller's listener passes it on
//!   ([`super::Store::listen_others`]).
//!
//! A wake-up that is lost (a listener reconnecting) costs the call its next
//! look in the store, a second later, never an answer.

use std::cell::{Cell, RefCell};

use super::StoreResult;
use super::sql::{Engine, Sql, Value};

/// The channel wake-ups are told on.
pub const CHANNEL: &str = "muster_wake";

thread_local! {
    /// Whether the write running on this thread (the store's writer) told
    /// a wake-up: the writer wakes this controller's waiting calls after
    /// its commit, and forgets it when the write is undone.
    static TOLD: Cell<bool> = const { Cell::new(false) };
    /// The store whose writer runs on this thread, named in its NOTIFYs so
    /// that its own listener skips them (its writer woke its calls).
    static ORIGIN: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Names the store whose writer runs on this thread.
pub(super) fn writer_of(origin: &str) {
    ORIGIN.with_borrow_mut(|o| origin.clone_into(o));
}

/// Whether a NOTIFY on [`CHANNEL`] came from another store than `origin`
/// (a controller of the previous release tells an empty payload).
pub(super) fn from_others(payload: &str, origin: &str) -> bool {
    payload != origin
}

/// Wakes the calls waiting on command ends or cancels, on every controller
/// of the store, once this write commits ([`super::Store::wakes`]): this
/// controller's from the writer, after the commit; on PostgreSQL the others'
/// from a NOTIFY that the server delivers at the commit and drops with a
/// rollback.
pub fn tell(conn: &dyn Sql) -> StoreResult<()> {
    TOLD.set(true);
    if conn.engine() == Engine::Postgres {
        ORIGIN.with_borrow(|origin| {
            conn.query_values("SELECT pg_notify(?1, ?2)", &[Value::Text(CHANNEL), Value::Text(origin)])
        })?;
    }
    Ok(())
}

/// Whether a wake-up was told on this thread since the last take; clears it.
pub(super) fn take_told() -> bool {
    TOLD.replace(false)
}

/// Sets what [`take_told`] will answer.
pub(super) fn set_told(told: bool) {
    TOLD.set(told);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::watch;

    use super::*;
    use crate::store::command_endings::{self, Ending};
    use crate::store::testkit::TestDatabase;
    use crate::store::{PostgresTarget, Store, StoreError, campaigns, testing};

    /// Whether `wakes` changes within `within`, after what it has seen.
    async fn woken(wakes: &mut watch::Receiver<u64>, within: Duration) -> bool {
        tokio::time::timeout(within, wakes.changed())
            .await
            .is_ok_and(|changed| changed.is_ok())
    }

    /// Forgets the wake-ups so far.
    fn seen(wakes: &mut [watch::Receiver<u64>]) {
        for w in wakes {
            w.borrow_and_update();
        }
    }

    /// Which of the stores' waiting calls one commit of `write` on the
    /// first store wakes.
    async fn woken_by<F>(stores: &[Store], wakes: &mut [watch::Receiver<u64>], write: F) -> Vec<bool>
    where
        F: FnOnce(&dyn Sql) -> StoreResult<()> + Send + 'static,
    {
        seen(wakes);
        stores[0].write(write).await.unwrap();
        let mut heard = Vec::new();
        for w in wakes.iter_mut() {
            heard.push(woken(w, Duration::from_secs(10)).await);
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

    /// What wakes the waiting calls, on `stores` (the first writes): a
    /// cancel, a window closing, new endings; not an undone write, not an
    /// ending known already, not a write that tells nothing.
    async fn every_reason_wakes_and_nothing_else(stores: &[Store], wakes: &mut [watch::Receiver<u64>]) {
        let all = vec![true; stores.len()];
        let none = vec![false; stores.len()];
        let quiet = Duration::from_secs(1);

        seen(wakes);
        let undone = stores[0]
            .write(|txn| {
                tell(txn)?;
                Err::<(), _>(StoreError::Corrupt("undone on purpose".into()))
            })
            .await;
        assert!(undone.is_err());
        // Kept in the same group commit as the undone one, or after it.
        stores[0].write(|_| Ok(())).await.unwrap();
        for w in wakes.iter_mut() {
            assert!(!woken(w, quiet).await, "an undone write wakes nobody");
        }

        let scope = ("111111111111", "us-east-1");
        let plain = move |txn: &dyn Sql| {
            testing::pending_campaign(txn, scope, 2);
            Ok(())
        };
        seen(wakes);
        stores[0].write(plain).await.unwrap();
        for w in wakes.iter_mut() {
            assert!(!woken(w, quiet).await, "a write that tells nothing wakes nobody");
        }

        let tester = crate::store::audit::Actor {
            principal: "tester".into(),
            ..Default::default()
        };
        let cancel = move |txn: &dyn Sql| campaigns::request_cancel(txn, "c1", &tester, "stop").map(drop);
        assert_eq!(woken_by(stores, wakes, cancel).await, all, "a cancel");
        let window = |txn: &dyn Sql| campaigns::set_window_cancelling(txn, "c1", true);
        assert_eq!(
            woken_by(stores, wakes, window).await,
            all,
            "a window closing with its commands to cancel"
        );
        let endings = |txn: &dyn Sql| command_endings::record(txn, &[ending("c-1")], 1_000).map(drop);
        assert_eq!(woken_by(stores, wakes, endings).await, all, "new endings");

        seen(wakes);
        stores[0]
            .write(|txn| command_endings::record(txn, &[ending("c-1")], 2_000))
            .await
            .unwrap();
        let mut heard = Vec::new();
        for w in wakes.iter_mut() {
            heard.push(woken(w, quiet).await);
        }
        assert_eq!(heard, none, "an ending known already wakes nobody");
    }

    /// One controller, on SQLite: its writes wake its own waiting calls.
    #[tokio::test]
    async fn on_sqlite_a_write_wakes_its_own_controllers_calls_at_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let stores = [Store::open(dir.path()).unwrap()];
        let mut wakes = [stores[0].wakes()];
        every_reason_wakes_and_nothing_else(&stores, &mut wakes).await;
    }

    /// Two controllers on one database: what one writes wakes both at its
    /// commit (the other by its listener), and a write undone wakes
    /// nobody.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_postgres_a_write_wakes_every_controllers_calls_at_the_commit() {
        let database = TestDatabase::create();
        let target = PostgresTarget::parse(database.url(), None, None).unwrap();
        let stores = [Store::connect(&target).unwrap(), Store::connect(&target).unwrap()];
        let _listening = [
            stores[0].listen_others().expect("PostgreSQL listens"),
            stores[1].listen_others().expect("PostgreSQL listens"),
        ];
        let mut wakes = [stores[0].wakes(), stores[1].wakes()];
        // Until its listener has connected the second store hears nothing:
        // tell until it has heard, then let what is still on its way
        // arrive.
        for n in 0.. {
            seen(&mut wakes);
            stores[0].write(tell).await.unwrap();
            if woken(&mut wakes[1], Duration::from_millis(200)).await {
                break;
            }
            assert!(n < 50, "the listener never heard");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        every_reason_wakes_and_nothing_else(&stores, &mut wakes).await;
    }
}
