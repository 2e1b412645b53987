//! Benchmark: what one discovery costs the store's writer as a campaign's
//! scopes grow (the "many accounts" shape at the size of a large
//! Organization: 500 accounts x 17 regions is 8,500 scopes).
//!
//! No processes: the store and the functions the worker API calls, on the
//! controller's default settings. One campaign of MUSTER_BENCH_SCOPES
//! (account, region) scopes (default 2,000), 5 instances each, every
//! instance allowed at once (max_concurrency 100%). Each scope's discovery
//! is what a worker's calls write: the lease, the ReportTargets write, and
//! the CompleteTask write that hands the scope's first batch to the same
//! worker. The figure to watch is the CompleteTask write's time for the
//! last tenth of the scopes over the first tenth's: near 1 when a
//! discovery costs the same however many scopes came before it, near the
//! number of scopes over 10 when each one reads the whole campaign.
//!
//!     cargo bench -p muster-tests --bench discovery_cost
//!
//! On PostgreSQL: MUSTER_TEST_STORE=postgres and MUSTER_TEST_POSTGRES_URL
//! (`deploy/local/postgres.sh start DIR` prints it).

use std::time::{Duration, Instant};

use muster_controller::config::{Args, Config};
use muster_controller::store::campaigns::{self, NewCampaign};
use muster_controller::store::leases::{self, LeaseAnswer, LeaseSettings};
use muster_controller::store::{Store, targets, testkit::TestDatabase};
use muster_proto::v1::{CampaignState, DiscoveredInstance, PingStatus, Platform, RateControl, TaskRef};

const INSTANCES_PER_SCOPE: usize = 5;
const WORKER: &str = "bench-worker";
/// What a worker of this release asks for when it completes a discovery.
const CAPACITY: u32 = 4;

fn scopes_wanted() -> usize {
    std::env::var("MUSTER_BENCH_SCOPES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// The controller's configuration with its defaults, on a SQLite store in
/// `dir` or on a PostgreSQL database of its own.
fn config(dir: &std::path::Path, database: Option<&TestDatabase>) -> Config {
    let mut args = vec![
        "muster-controller".to_owned(),
        "--queue-url".into(),
        "http://127.0.0.1:1/queue/bench".into(),
        "--insecure".into(),
        "--aws-endpoint-url".into(),
        "http://127.0.0.1:1".into(),
        "--data-dir".into(),
        dir.display().to_string(),
    ];
    if let Some(database) = database {
        args.extend(["--database-url".into(), database.url().to_owned()]);
    }
    use clap::Parser as _;
    Config::resolve(Args::try_parse_from(args).expect("arguments")).expect("configuration")
}

fn instances(scope: usize) -> Vec<DiscoveredInstance> {
    (0..INSTANCES_PER_SCOPE)
        .map(|i| DiscoveredInstance {
            instance_id: format!("i-{scope:08x}{i:09x}"),
            platform: Platform::Linux as i32,
            ping_status: PingStatus::Online as i32,
            ..Default::default()
        })
        .collect()
}

fn mean(times: &[Duration]) -> Duration {
    times.iter().sum::<Duration>() / times.len().max(1) as u32
}

#[tokio::main]
async fn main() {
    let count = scopes_wanted();
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = (std::env::var("MUSTER_TEST_STORE").as_deref() == Ok("postgres")).then(TestDatabase::create);
    let config = config(dir.path(), database.as_ref());
    let store: Store = config.store.open().expect("store");
    let settings = std::sync::Arc::new(config.settings.clone());
    let lease = LeaseSettings {
        ttl_ms: settings.lease_ttl.as_millis() as i64,
        max_tasks_per_scope: settings.max_tasks_per_scope,
    };

    let mut new = NewCampaign::for_test("bench", settings.max_attempts);
    new.scopes = (0..count)
        .map(|i| {
            (
                format!("{:012}", 100_000_000_000 + i / 2),
                ["us-east-1", "eu-west-1"][i % 2].to_owned(),
            )
        })
        .collect();
    new.spec.rate = Some(RateControl {
        max_concurrency: "100%".into(),
        batch_size: 50,
        ..Default::default()
    });
    let created = Instant::now();
    let tasks: Vec<String> = store
        .write(move |txn| {
            campaigns::insert(txn, &new)?;
            campaigns::set_state(txn, "bench", CampaignState::Discovering, "benchmark")?;
            let mut stmt = txn.prepare_cached("SELECT id FROM tasks WHERE campaign_id = 'bench' ORDER BY id")?;
            stmt.query_map(muster_controller::params![], |r| r.get::<_, String>(0))?
                .collect()
        })
        .await
        .expect("the campaign");
    println!(
        "a campaign of {count} scopes ({} instances) stored in {:.2} s on {}",
        count * INSTANCES_PER_SCOPE,
        created.elapsed().as_secs_f64(),
        if database.is_some() { "PostgreSQL" } else { "SQLite" },
    );

    let (mut reports, mut completions, mut handed) = (Vec::new(), Vec::new(), 0usize);
    let started = Instant::now();
    for (scope, task_id) in tasks.into_iter().enumerate() {
        let task_ref = TaskRef {
            campaign_id: "bench".into(),
            task_id: task_id.clone(),
            attempt: 1,
        };
        let lease_id = store
            .write(move |txn| match leases::lease(txn, &task_ref, WORKER, lease)? {
                LeaseAnswer::Granted(granted) => Ok(granted.lease_id),
                LeaseAnswer::Refused(outcome, why) => panic!("Discover task refused: {outcome:?} {why}"),
            })
            .await
            .expect("LeaseTask");

        let id = task_id.clone();
        let at = Instant::now();
        store
            .write(move |txn| {
                let task = leases::current(txn, &id, lease_id)?;
                targets::insert_discovered(txn, &task, &instances(scope))
            })
            .await
            .expect("ReportTargets");
        reports.push(at.elapsed());

        let settings = settings.clone();
        let at = Instant::now();
        let next = store
            .write(move |txn| {
                let task = leases::complete(txn, &task_id, lease_id)?;
                muster_controller::reconcile::hand_off(
                    txn,
                    &task,
                    CAPACITY,
                    &settings,
                    lease,
                    &format!("done:{lease_id}"),
                )
            })
            .await
            .expect("CompleteTask");
        completions.push(at.elapsed());
        handed += next.len();
    }
    let wall = started.elapsed();
    let totals = store
        .read(|conn| campaigns::totals(conn, "bench"))
        .await
        .expect("GetCampaign's counters");
    assert_eq!(
        (totals.pending, totals.queued, handed),
        (0, (count * INSTANCES_PER_SCOPE) as u64, count),
        "every scope's instances handed, in one batch, to the worker that discovered it: {totals:?}"
    );

    let tenth = (count / 10).max(1);
    let (first, last) = (mean(&completions[..tenth]), mean(&completions[count - tenth..]));
    let (first_report, last_report) = (mean(&reports[..tenth]), mean(&reports[count - tenth..]));
    println!(
        "{count} discoveries in {:.2} s, {handed} batches handed off",
        wall.as_secs_f64()
    );
    println!(
        "CompleteTask write: first tenth {:.0} us, last tenth {:.0} us, last/first {:.2}",
        first.as_secs_f64() * 1e6,
        last.as_secs_f64() * 1e6,
        last.as_secs_f64() / first.as_secs_f64()
    );
    println!(
        "ReportTargets write: first tenth {:.0} us, last tenth {:.0} us, last/first {:.2}",
        first_report.as_secs_f64() * 1e6,
        last_report.as_secs_f64() * 1e6,
        last_report.as_secs_f64() / first_report.as_secs_f64()
    );
}
