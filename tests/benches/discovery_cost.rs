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
//! Then a second campaign of the same scopes, discovered and RUNNING with
//! max_concurrency 500, so nearly every target waits: the figure is what
//! one reconcile step costs when it has room for one more batch (it reads
//! every pending target's scope to plan the release), next to a step
//! without room.
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

/// Steps timed in the running campaign.
const STEPS: usize = 20;

/// Campaign `id` of `count` scopes, two regions of each account from
/// `first_account` on, batches of 50, at most `max_concurrency` at once.
fn campaign(id: &str, first_account: usize, count: usize, max_concurrency: &str, max_attempts: u32) -> NewCampaign {
    let mut new = NewCampaign::for_test(id, max_attempts);
    new.scopes = (0..count)
        .map(|i| {
            (
                format!("{:012}", first_account + i / 2),
                ["us-east-1", "eu-west-1"][i % 2].to_owned(),
            )
        })
        .collect();
    new.spec.rate = Some(RateControl {
        max_concurrency: max_concurrency.into(),
        batch_size: 50,
        ..Default::default()
    });
    new
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

    let new = campaign("bench", 100_000_000_000, count, "100%", settings.max_attempts);
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

    running_with_room(&store, settings, lease, count, database.is_some()).await;
}

/// The second campaign: every scope discovered in one write, then RUNNING
/// with room for 500 targets; each timed step is given room for one more
/// batch (a scope's 5 instances) and must release exactly that.
async fn running_with_room(
    store: &Store,
    settings: std::sync::Arc<muster_controller::Settings>,
    lease: LeaseSettings,
    count: usize,
    postgres: bool,
) {
    let new = campaign("room", 200_000_000_000, count, "500", settings.max_attempts);
    store
        .write(move |txn| {
            campaigns::insert(txn, &new)?;
            campaigns::set_state(txn, "room", CampaignState::Discovering, "benchmark")?;
            let ids: Vec<String> = txn
                .prepare_cached("SELECT id FROM tasks WHERE campaign_id = 'room' ORDER BY id")?
                .query_map(muster_controller::params![], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()?;
            for (scope, task_id) in ids.into_iter().enumerate() {
                let task_ref = TaskRef {
                    campaign_id: "room".into(),
                    task_id: task_id.clone(),
                    attempt: 1,
                };
                let LeaseAnswer::Granted(granted) = leases::lease(txn, &task_ref, WORKER, lease)? else {
                    panic!("Discover task refused");
                };
                let task = leases::current(txn, &task_id, granted.lease_id)?;
                targets::insert_discovered(txn, &task, &instances(count + scope))?;
                leases::complete(txn, &task_id, granted.lease_id)?;
            }
            Ok(())
        })
        .await
        .expect("the second campaign, discovered");
    // Where the round-robin resumes, as the reconcile loop keeps it.
    let after = std::sync::Mutex::new(None::<(String, String)>);
    let step = || {
        let settings = settings.clone();
        let mut resume = after.lock().unwrap().clone();
        let after = &after;
        async move {
            let (changed, resume) = store
                .write(move |txn| {
                    let changed =
                        muster_controller::reconcile::step_for_benchmarks(txn, "room", &settings, &mut resume)?;
                    Ok((changed, resume))
                })
                .await?;
            *after.lock().unwrap() = resume;
            Ok::<_, muster_controller::store::StoreError>(changed)
        }
    };
    let changed = step().await.expect("discovery ends");
    assert_eq!(
        changed.map(|(state, _)| state),
        Some(CampaignState::Running),
        "discovery ended"
    );
    step().await.expect("the first release");
    let queued = || store.read(|conn| campaigns::totals(conn, "room").map(|t| (t.pending, t.queued)));
    let (pending, mut queued_now) = queued().await.expect("totals");
    assert_eq!(queued_now, 500, "max_concurrency's 500 released");

    if postgres && std::env::var("MUSTER_BENCH_ANALYZE").as_deref() != Ok("0") {
        // PostgreSQL's autovacuum would have analyzed a table grown this much
        // by the time a campaign this size runs; without it the planner
        // takes the new rows for a handful (MUSTER_BENCH_ANALYZE=0 shows
        // what a store whose statistics lag behind does).
        store
            .write(|txn| {
                txn.execute("ANALYZE targets", muster_controller::params![])?;
                Ok(())
            })
            .await
            .expect("ANALYZE");
    }
    let (mut with_room, mut without_room) = (Vec::new(), Vec::new());
    for _ in 0..STEPS {
        let at = Instant::now();
        step().await.expect("a step without room");
        without_room.push(at.elapsed());
        store
            .write(|txn| {
                txn.execute(
                    "UPDATE campaigns SET concurrency_limit = concurrency_limit + ?1 WHERE id = 'room'",
                    muster_controller::params![INSTANCES_PER_SCOPE as i64],
                )?;
                Ok(())
            })
            .await
            .expect("room for one batch");
        let at = Instant::now();
        step().await.expect("a step with room");
        with_room.push(at.elapsed());
        let (_, after) = queued().await.expect("totals");
        assert_eq!(after, queued_now + INSTANCES_PER_SCOPE as u64, "one batch released");
        queued_now = after;
    }
    println!(
        "running, {pending} targets pending in {count} scopes: a step with room for one batch {:.2} ms, without room {:.2} ms",
        mean(&with_room).as_secs_f64() * 1e3,
        mean(&without_room).as_secs_f64() * 1e3,
    );

    // What the reconcile loop reads for a watched campaign after each pass
    // (`publish_progress`): its row, totals and every scope's counters.
    let mut progress = Vec::new();
    for _ in 0..STEPS {
        let at = Instant::now();
        store
            .read(|conn| {
                campaigns::get(conn, "room")?;
                campaigns::totals(conn, "room")?;
                campaigns::scopes(conn, "room")
            })
            .await
            .expect("the progress read");
        progress.push(at.elapsed());
    }
    println!(
        "a watcher's progress read of the running campaign: {:.2} ms",
        mean(&progress).as_secs_f64() * 1e3
    );
}
