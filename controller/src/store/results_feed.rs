//! Results one controller took in, told to the others. A WatchCampaign
//! with `include_targets` hears each target's result from the controller
//! that recorded it; with several controllers on PostgreSQL a worker's
//! report may reach another one than the watcher's. So on PostgreSQL the
//! statement that writes results also NOTIFYs [`CHANNEL`] with the targets
//! it wrote (PostgreSQL delivers it at commit and drops it with a
//! rollback), and every controller LISTENs on a connection of its own and
//! publishes those targets to its own watchers. A notification that is
//! lost (a listener reconnecting) costs a watcher events, never a result:
//! progress and the final snapshot come from the store.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use muster_proto::v1::Target;

use super::sql::Sql;
use super::tasks::TaskRow;
use super::{StoreResult, targets};

/// The channel results are told on.
pub const CHANNEL: &str = "muster_results";

/// PostgreSQL's limit on a payload is 8,000 bytes: past this, a
/// notification names the task instead of its targets.
const MAX_PAYLOAD: usize = 7_000;

/// Targets one controller wrote results for, as told on [`CHANNEL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// The process that wrote them.
    #[serde(rename = "o")]
    origin: String,
    /// Their campaign.
    #[serde(rename = "c")]
    pub campaign_id: String,
    /// Their account.
    #[serde(rename = "a")]
    pub account_id: String,
    /// Their region.
    #[serde(rename = "r")]
    pub region: String,
    /// Their task: every target of it that has a result, when
    /// `instance_ids` is empty.
    #[serde(rename = "t")]
    pub task_id: String,
    /// The instances.
    #[serde(rename = "i")]
    pub instance_ids: Vec<String>,
}

/// This process, so that it skips what it told itself.
fn origin() -> &'static str {
    static ORIGIN: OnceLock<String> = OnceLock::new();
    ORIGIN.get_or_init(|| uuid::Uuid::new_v4().simple().to_string())
}

/// The payload telling that `task`'s `instance_ids` have results.
pub(super) fn payload<'a>(task: &TaskRow, instance_ids: impl Iterator<Item = &'a str>) -> String {
    let mut written = Written {
        origin: origin().to_owned(),
        campaign_id: task.campaign_id.clone(),
        account_id: task.account_id.clone(),
        region: task.region.clone(),
        task_id: task.id.clone(),
        instance_ids: instance_ids.map(str::to_owned).collect(),
    };
    let text = serde_json::to_string(&written).unwrap_or_default();
    if text.len() <= MAX_PAYLOAD {
        return text;
    }
    written.instance_ids.clear();
    serde_json::to_string(&written).unwrap_or_default()
}

/// A payload another process told; `None` for this process's own, or text
/// that is not one.
pub fn from_others(payload: &str) -> Option<Written> {
    match serde_json::from_str::<Written>(payload) {
        Ok(written) if written.origin != origin() => Some(written),
        Ok(_) => None,
        Err(error) => {
            tracing::warn!(%error, "a notification on {CHANNEL} that is not muster's; ignored");
            None
        }
    }
}

/// The targets a notification names, as the store has them now (without
/// their output, as a watcher gets them).
pub fn targets(conn: &dyn Sql, written: &Written) -> StoreResult<Vec<Target>> {
    let ids = if written.instance_ids.is_empty() {
        conn.prepare_cached("SELECT instance_id FROM targets WHERE task_id = ?1 AND finished_ms IS NOT NULL")?
            .query_map([&written.task_id], |r| r.get::<_, String>(0))?
            .collect::<StoreResult<Vec<_>>>()?
    } else {
        written.instance_ids.clone()
    };
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    targets::of_instances(conn, &written.campaign_id, (&written.account_id, &written.region), &ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::Value;

    fn task() -> TaskRow {
        TaskRow {
            id: "t1".into(),
            campaign_id: "c1".into(),
            kind: muster_proto::v1::TaskKind::Execute,
            account_id: "111111111111".into(),
            region: "us-east-1".into(),
            platform: muster_proto::v1::Platform::Linux,
            state: 0,
            attempt: 1,
            max_attempts: 3,
            lease_id: None,
            lease_owner: None,
            lease_expires_ms: None,
            created_ms: 0,
            last_error: String::new(),
        }
    }

    #[test]
    fn a_payload_names_its_targets_and_its_own_process_skips_it() {
        let text = payload(&task(), ["i-1", "i-2"].into_iter());
        assert_eq!(from_others(&text), None, "this process wrote it");
        let other = text.replace(origin(), "another");
        let written = from_others(&other).expect("another process's");
        assert_eq!(
            (
                written.campaign_id.as_str(),
                written.task_id.as_str(),
                written.instance_ids
            ),
            ("c1", "t1", vec!["i-1".to_owned(), "i-2".to_owned()])
        );
        assert_eq!(from_others("NOTIFY from someone else"), None);
    }

    /// The listener hears what another process told, not what this one
    /// told, and hears again after the server cut its connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_listener_hears_others_and_comes_back_after_a_cut() {
        let database = crate::store::testkit::TestDatabase::create();
        let target = crate::store::PostgresTarget::parse(database.url(), None, None).unwrap();
        let store = crate::store::Store::connect(&target).unwrap();
        let mut told = store.listen_others().expect("PostgreSQL listens");
        let own = payload(&task(), ["i-1"].into_iter());
        let tell = |store: &crate::store::Store, payload: String| {
            let store = store.clone();
            async move {
                store
                    .write(move |txn| {
                        txn.query_values(
                            "SELECT pg_notify(?1, ?2)",
                            &[Value::Text(CHANNEL), Value::Text(&payload)],
                        )
                        .map(drop)
                    })
                    .await
                    .unwrap();
            }
        };
        // Until the listener has connected, a notification is not heard:
        // tell again until one is.
        let other = |n: u32| own.replace(origin(), "another").replace("i-1", &format!("i-{n}"));
        let mut n = 0;
        loop {
            n += 1;
            tell(&store, other(n)).await;
            if let Ok(Some(_)) = tokio::time::timeout(std::time::Duration::from_millis(200), told.recv()).await {
                break;
            }
            assert!(n < 50, "the listener never heard");
        }
        // What was told before, heard late, is not this test's business.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        while told.try_recv().is_ok() {}

        tell(&store, own.clone()).await;
        tell(&store, other(1000)).await;
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), told.recv())
            .await
            .expect("heard in time")
            .expect("listening");
        assert_eq!(next.instance_ids, ["i-1000"], "its own was skipped");

        store
            .write(|txn| {
                txn.query_values(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = current_database() AND query LIKE 'LISTEN%'",
                    &[],
                )
                .map(drop)
            })
            .await
            .unwrap();
        let mut n = 2000;
        loop {
            n += 1;
            tell(&store, other(n)).await;
            if let Ok(Some(written)) = tokio::time::timeout(std::time::Duration::from_millis(200), told.recv()).await {
                let id: u32 = written.instance_ids[0].trim_start_matches("i-").parse().unwrap();
                assert!(id > 2000, "told after the cut: {id}");
                break;
            }
            assert!(n < 2100, "the listener did not come back after its connection was cut");
        }
    }

    #[test]
    fn a_payload_past_postgres_limit_names_the_task_instead() {
        let ids: Vec<String> = (0..1_000).map(|n| format!("i-{n:017x}")).collect();
        let text = payload(&task(), ids.iter().map(String::as_str));
        assert!(text.len() < 8_000, "{} bytes", text.len());
        let written: Written = serde_json::from_str(&text).unwrap();
        assert!(written.instance_ids.is_empty());
        assert_eq!(written.task_id, "t1");
    }
}
