//! `muster-controller copy-store`: how long moving a SQLite store into
//! PostgreSQL takes, and so how long the hub is down for it. Builds a store
//! the size of a large installation's history (`MUSTER_BENCH_TARGETS`
//! targets, default 100,000, in campaigns of 5,000, each target with 1 KiB
//! of output; tasks, leases, dispatches, counters and events to match),
//! copies it into a new database on the test server, and prints rows/s and
//! MB/s. Needs a PostgreSQL server (`deploy/local/postgres.sh start DIR`):
//!
//!     MUSTER_TEST_POSTGRES_URL=<url> cargo bench -p muster-tests --bench copy_store

use std::time::Instant;

use muster_controller::store::Store;
use muster_controller::store::sql::params;
use muster_controller::store::testkit::TestDatabase;

const PER_CAMPAIGN: usize = 5_000;
const PER_TASK: usize = 50;

#[tokio::main]
async fn main() {
    let targets: usize = std::env::var("MUSTER_BENCH_TARGETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("a temp dir");
    let started = Instant::now();
    let store = Store::open(dir.path()).expect("a SQLite store");
    let output = "x".repeat(1024);
    for campaign in 0..targets.div_ceil(PER_CAMPAIGN) {
        let size = PER_CAMPAIGN.min(targets - campaign * PER_CAMPAIGN);
        let output = output.clone();
        store
            .write(move |txn| fill_campaign(txn, campaign, size, &output))
            .await
            .expect("a campaign written");
    }
    drop(store);
    let bytes = std::fs::metadata(dir.path().join("muster.db")).map_or(0, |m| m.len());
    println!(
        "store: {targets} targets, {:.0} MB, written in {:.1} s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    let database = TestDatabase::create();
    let target = muster_controller::store::PostgresTarget::parse(database.url(), None, None).expect("the URL");
    let path = dir.path().to_owned();
    let started = Instant::now();
    let copied = tokio::task::spawn_blocking(move || {
        muster_controller::store::copy::sqlite_into_postgres(&path, &target, |p| {
            let so_far = if p.done { "" } else { " so far" };
            println!("  {:<24} {:>10} rows{so_far}", p.table, p.rows);
        })
    })
    .await
    .expect("the copy thread")
    .expect("the copy");
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "copy-store: {} rows in {seconds:.1} s: {:.0} rows/s, {:.1} MB/s of SQLite file",
        copied.rows(),
        copied.rows() as f64 / seconds,
        bytes as f64 / 1e6 / seconds
    );
}

/// Campaign `n` with `size` finished targets, in tasks of [`PER_TASK`],
/// each with a lease, a dispatch and two events.
fn fill_campaign(
    txn: &dyn muster_controller::store::Sql,
    n: usize,
    size: usize,
    output: &str,
) -> muster_controller::store::StoreResult<()> {
    let campaign = format!("c{n:04}");
    txn.execute(
        "INSERT INTO campaigns (id, created_ms, submitted_by, client_token, spec, spec_sha256, dry_run, state, \
         started_ms, finished_ms) VALUES (?1, ?2, 'bench', '', ?3, 'sha', 0, 4, ?2, ?2)",
        params![campaign, n as i64, vec![7u8; 512]],
    )?;
    txn.execute(
        "INSERT INTO scopes (campaign_id, account_id, region, state, managed) \
         VALUES (?1, '111111111111', 'us-east-1', 3, ?2)",
        params![campaign, size as i64],
    )?;
    for task in 0..size.div_ceil(PER_TASK) {
        let task_id = format!("{campaign}-t{task:04}");
        let lease_id = (n * 1_000 + task) as i64 + 1;
        txn.execute(
            "INSERT INTO tasks (id, campaign_id, kind, account_id, region, state, attempt, max_attempts, \
             created_ms) VALUES (?1, ?2, 2, '111111111111', 'us-east-1', 3, 1, 3, 1)",
            params![task_id, campaign],
        )?;
        txn.execute(
            "INSERT INTO leases (lease_id, task_id, attempt, worker_id, granted_ms, ended_ms, outcome) \
             VALUES (?1, ?2, 1, 'worker-1', 1, 2, 'completed')",
            params![lease_id, task_id],
        )?;
        let instances: Vec<String> = (0..PER_TASK.min(size - task * PER_TASK))
            .map(|i| format!("i-{:017x}", task * PER_TASK + i))
            .collect();
        txn.execute(
            "INSERT INTO dispatches (task_id, command_id, instance_ids, sent_ms, attempt) VALUES (?1, ?2, ?3, 1, 1)",
            params![
                task_id,
                format!("cmd-{task_id}"),
                serde_json::to_string(&instances).unwrap()
            ],
        )?;
        for instance in &instances {
            txn.execute(
                "INSERT INTO targets (campaign_id, account_id, region, instance_id, name, platform, status, \
                 exit_code, reason, task_id, command_id, document_name, dispatched_ms, started_ms, finished_ms, \
                 steps) VALUES (?1, '111111111111', 'us-east-1', ?2, 'web', 1, 3, 0, 'exit 0', ?3, ?4, \
                 'AWS-RunShellScript', 1, 2, 3, ?5)",
                params![campaign, instance, task_id, format!("cmd-{task_id}"), output.as_bytes()],
            )?;
        }
        for kind in ["leased", "completed"] {
            txn.execute(
                "INSERT INTO events (campaign_id, at_ms, kind, detail) VALUES (?1, 1, ?2, ?3)",
                params![campaign, kind, format!("{{\"task\":\"{task_id}\"}}")],
            )?;
        }
    }
    txn.execute(
        "INSERT INTO counters (campaign_id, account_id, region, status, count) \
         VALUES (?1, '111111111111', 'us-east-1', 3, ?2)",
        params![campaign, size as i64],
    )?;
    Ok(())
}
