//! Prometheus metrics of the controller. Counters count what this process
//! did since it started; gauges (campaigns, tasks, targets, the backlog) are
//! read from the store at each scrape, so they are right after a restart and
//! agree with what the API reports.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::{Engine, Sql};
use muster_proto::v1::{CampaignState, TargetStatus, TaskKind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::Controller;
use crate::store::StoreResult;
use crate::store::records::task_state;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    kind: String,
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    status: String,
    campaign_state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    webhook: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    schema: String,
    worker_protocol: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    method: String,
    rule: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailLabels {
    retried: String,
}

/// What this process counted.
#[derive(Debug, Default)]
pub struct Metrics {
    tasks_enqueued: Counter,
    leases_granted: Counter,
    tasks_completed: Family<KindLabel, Counter>,
    tasks_failed: Family<FailLabels, Counter>,
    lease_expiries: Counter,
    tasks_requeued: Counter,
    dead_letters: Family<OutcomeLabel, Counter>,
    command_events: Family<OutcomeLabel, Counter>,
    await_commands: Family<OutcomeLabel, Counter>,
    results_ingested: Counter,
    results_duplicate: Counter,
    campaigns_pruned: Counter,
    leader: Gauge,
    leader_epoch: Gauge,
    leader_changes: Counter,
    store_rows: Family<TableLabel, Gauge>,
    worker_calls_refused: Family<RefusalLabels, Counter>,
    policy_reloads: Family<OutcomeLabel, Counter>,
    signins: Family<OutcomeLabel, Counter>,
    notifications: Family<WebhookLabels, Counter>,
    schedule_runs: Family<OutcomeLabel, Counter>,
    /// Workers by when they last called.
    workers: Mutex<HashMap<String, Instant>>,
}

impl Metrics {
    /// Task references put on the queue.
    pub fn enqueued(&self, n: usize) {
        self.tasks_enqueued.inc_by(n as u64);
    }

    /// Whether this controller leads, and its term's epoch (0 when not);
    /// counts each change.
    pub fn set_leader(&self, leads: bool, epoch: i64) {
        if self.leader.set(i64::from(leads)) != i64::from(leads) {
            self.leader_changes.inc();
        }
        self.leader_epoch.set(epoch);
    }

    /// A lease was granted to `worker`.
    pub fn leased(&self, worker: &str) {
        self.leases_granted.inc();
        self.saw_worker(worker);
    }

    /// A worker called: it is alive.
    pub fn saw_worker(&self, worker: &str) {
        let mut workers = self.workers.lock().expect("metrics lock");
        if let Some(seen) = workers.get_mut(worker) {
            *seen = Instant::now();
        } else {
            workers.insert(worker.to_owned(), Instant::now());
        }
    }

    /// A worker's call was refused (PERMISSION_DENIED) by `rule`.
    pub fn worker_call_refused(&self, method: &str, rule: &str) {
        self.worker_calls_refused
            .get_or_create(&RefusalLabels {
                method: method.to_owned(),
                rule: rule.to_owned(),
            })
            .inc();
    }

    /// The policy file was read again: `ok`, or it did not parse.
    pub fn policy_reloaded(&self, ok: bool) {
        self.policy_reloads
            .get_or_create(&OutcomeLabel {
                outcome: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
    }

    /// An AWS sign-in token was looked at: verified by STS, remembered,
    /// refused or STS unavailable.
    pub fn signed_in(&self, outcome: &str) {
        self.signins
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A notification posted to `webhook`, or given up on (a dead letter).
    pub fn notified(&self, webhook: &str, delivered: bool) {
        self.notifications
            .get_or_create(&WebhookLabels {
                webhook: webhook.to_owned(),
                outcome: if delivered { "delivered" } else { "dead_letter" }.to_owned(),
            })
            .inc();
    }

    /// A run time of a schedule handled: started, resumed, missed, skipped
    /// or refused.
    pub fn schedule_run(&self, outcome: muster_proto::v1::RunOutcome) {
        let name = outcome
            .as_str_name()
            .trim_start_matches("RUN_OUTCOME_")
            .to_ascii_lowercase();
        self.schedule_runs.get_or_create(&OutcomeLabel { outcome: name }).inc();
    }

    /// A task completed.
    pub fn completed(&self, kind: TaskKind) {
        self.tasks_completed.get_or_create(&kind_label(kind)).inc();
    }

    /// A task attempt failed; `retried` when another attempt follows.
    pub fn failed(&self, retried: bool) {
        self.tasks_failed
            .get_or_create(&FailLabels {
                retried: retried.to_string(),
            })
            .inc();
    }

    /// Leases that ran out without a renewal.
    pub fn lease_expired(&self, n: usize) {
        self.lease_expiries.inc_by(n as u64);
    }

    /// Task messages sent again: their tasks waited on the queue too long.
    pub fn requeued(&self, n: usize) {
        self.tasks_requeued.inc_by(n as u64);
    }

    /// Messages drained from the dead-letter queue: `requeued` (the task
    /// still waited for that attempt), `stale` (it did not), `unreadable`.
    pub fn dead_lettered(&self, outcome: &str, n: usize) {
        self.dead_letters
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc_by(n as u64);
    }

    /// Run Command events read from the command event queue: `recorded`
    /// (a command's first final status), `repeated` (delivered again),
    /// `ignored` (not a final command status), `unreadable`.
    pub fn command_events(&self, outcome: &str, n: usize) {
        self.command_events
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc_by(n as u64);
    }

    /// One Run Command event, as [`Self::command_events`].
    pub fn command_event(&self, outcome: &str) {
        self.command_events(outcome, 1);
    }

    /// AwaitCommands answers: `ended` (some command had ended),
    /// `cancelling` (some campaign asked about is being cancelled), `waited`
    /// (neither within the wait).
    pub fn await_commands(&self, outcome: &str) {
        self.await_commands
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Campaigns removed from the store by retention.
    pub fn pruned(&self, n: usize) {
        self.campaigns_pruned.inc_by(n as u64);
    }

    /// Rows per store table, as the retention pass counted them.
    pub fn store_rows(&self, counts: &[(&str, i64)]) {
        for (table, n) in counts {
            self.store_rows
                .get_or_create(&TableLabel {
                    table: (*table).to_owned(),
                })
                .set(*n);
        }
    }

    /// Results recorded (`accepted`) and repeated (`duplicates`).
    pub fn ingested(&self, accepted: u32, duplicates: u32) {
        self.results_ingested.inc_by(u64::from(accepted));
        self.results_duplicate.inc_by(u64::from(duplicates));
    }

    /// Workers that took a lease within `window` or hold one now; older
    /// ones are forgotten.
    pub(crate) fn active_workers(&self, window: Duration, holding: &[String]) -> usize {
        let mut workers = self.workers.lock().expect("metrics lock");
        workers.retain(|_, seen| seen.elapsed() < window);
        let mut active: std::collections::HashSet<&str> = workers.keys().map(String::as_str).collect();
        active.extend(holding.iter().map(String::as_str));
        active.len()
    }
}

fn kind_label(kind: TaskKind) -> KindLabel {
    // TASK_KIND_DISCOVER -> discover
    let name = kind.as_str_name();
    KindLabel {
        kind: name.strip_prefix("TASK_KIND_").unwrap_or(name).to_ascii_lowercase(),
    }
}

/// Counts read from the store.
#[derive(Debug, Default)]
struct Snapshot {
    campaigns: Vec<(i32, i64)>,
    /// (kind, state label, count)
    tasks: Vec<(i32, &'static str, i64)>,
    /// (campaign state, target status, count)
    targets: Vec<(i32, i32, i64)>,
    /// Workers holding a lease.
    holding: Vec<String>,
    /// Tasks waiting for a worker in campaigns that release work (the
    /// scaling signal).
    waiting: i64,
    /// Tasks workers hold.
    held: i64,
    /// Tasks on the queue past the requeue bound.
    overdue: i64,
    /// The database's size as PostgreSQL counts it (none on SQLite, whose
    /// files are measured instead).
    database_bytes: Option<i64>,
}

fn snapshot(conn: &dyn Sql, overdue_before_ms: i64) -> StoreResult<Snapshot> {
    let campaigns = conn
        .prepare_cached("SELECT state, COUNT(*) FROM campaigns GROUP BY state")?
        .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<StoreResult<Vec<_>>>()?;
    let tasks = conn
        .prepare_cached("SELECT kind, state, enqueued_attempt = attempt, COUNT(*) FROM tasks GROUP BY kind, state, 3")?
        .query_map((), |r| {
            let state: i32 = r.get(1)?;
            let on_queue: bool = r.get(2)?;
            let state = match state {
                task_state::QUEUED if on_queue => "queued",
                task_state::QUEUED => "waiting",
                task_state::LEASED => "leased",
                task_state::COMPLETED => "completed",
                task_state::FAILED => "failed",
                task_state::CANCELLED => "cancelled",
                _ => "unknown",
            };
            Ok((r.get(0)?, state, r.get(3)?))
        })?
        .collect::<StoreResult<Vec<_>>>()?;
    let targets = conn
        .prepare_cached(
            "SELECT c.state, n.status, CAST(SUM(n.count) AS BIGINT) FROM campaign_counters n JOIN campaigns c ON c.id = n.campaign_id
             GROUP BY c.state, n.status",
        )?
        .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<StoreResult<Vec<_>>>()?;
    let (waiting, held, holding) = crate::store::queue::demand(conn)?;
    let overdue = crate::store::queue::overdue_count(conn, overdue_before_ms)? as i64;
    let database_bytes = match conn.engine() {
        Engine::Postgres => Some(conn.query_row("SELECT pg_database_size(current_database())", (), |r| r.get(0))?),
        Engine::Sqlite => None,
    };
    Ok(Snapshot {
        database_bytes,
        campaigns,
        tasks,
        targets,
        holding,
        waiting,
        held,
        overdue,
    })
}

fn campaign_state(state: i32) -> String {
    CampaignState::try_from(state)
        .unwrap_or_default()
        .short_name()
        .to_owned()
}

/// The metrics in the OpenMetrics text format.
pub async fn render(ctl: &Controller) -> String {
    let m = &ctl.metrics;
    let mut registry = Registry::with_prefix("muster_controller");
    let cutoff = ctl.settings.requeue_cutoff_ms(crate::store::records::now_ms());
    let snapshot = match ctl.store.read(move |conn| snapshot(conn, cutoff)).await {
        Ok(snapshot) => Some(snapshot),
        Err(error) => {
            tracing::warn!(%error, "cannot read the store for metrics");
            None
        }
    };
    registry.register(
        "store_readable",
        "1 when the store answered this scrape's queries",
        ConstGauge::new(i64::from(snapshot.is_some())),
    );
    let snapshot = snapshot.unwrap_or_default();
    let build = Family::<BuildLabels, Gauge>::default();
    build
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
            schema: crate::store::newest_known().to_string(),
            worker_protocol: muster_proto::WORKER_PROTOCOL.to_string(),
        })
        .set(1);
    registry.register(
        "build_info",
        "1, labelled with this controller's version, the newest schema migration it knows and the worker protocol it leases to (a rolling deploy's progress: count by version)",
        build,
    );

    register_store_state(&mut registry, ctl, &snapshot);
    register_counters(&mut registry, m);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

/// What the store holds now: campaigns, tasks and targets by state, the
/// backlog and the scaling signal, its size. A flat list of gauges filled
/// from one snapshot, kept together for the same reason as
/// [`register_counters`].
fn register_store_state(registry: &mut Registry, ctl: &Controller, snapshot: &Snapshot) {
    let m = &ctl.metrics;
    let campaigns = Family::<StateLabel, Gauge>::default();
    for &(state, n) in &snapshot.campaigns {
        campaigns
            .get_or_create(&StateLabel {
                state: campaign_state(state),
            })
            .set(n);
    }
    registry.register("campaigns", "Campaigns in the store by state", campaigns);

    let tasks = Family::<TaskLabels, Gauge>::default();
    let mut backlog = 0;
    for &(kind, state, n) in &snapshot.tasks {
        if matches!(state, "waiting" | "queued" | "leased") {
            backlog += n;
        }
        tasks
            .get_or_create(&TaskLabels {
                kind: kind_label(TaskKind::try_from(kind).unwrap_or_default()).kind,
                state: state.to_owned(),
            })
            .inc_by(n);
    }
    registry.register(
        "tasks",
        "Tasks by kind and state: waiting (not on the queue yet), queued (on SQS), leased, completed, failed, cancelled",
        tasks,
    );

    let targets = Family::<TargetLabels, Gauge>::default();
    for &(state, status, n) in &snapshot.targets {
        targets
            .get_or_create(&TargetLabels {
                status: TargetStatus::try_from(status)
                    .unwrap_or_default()
                    .short_name()
                    .to_owned(),
                campaign_state: campaign_state(state),
            })
            .inc_by(n);
    }
    registry.register(
        "targets",
        "Targets (instances) by status and by the state of their campaign",
        targets,
    );

    let workers = m.active_workers(ctl.settings.active_worker_window(), &snapshot.holding);
    registry.register(
        "workers_active",
        "Workers holding a lease or granted one within two lease TTLs",
        ConstGauge::new(workers as i64),
    );
    registry.register(
        "backlog_tasks",
        "Tasks not finished: waiting, queued or leased",
        ConstGauge::new(backlog),
    );
    registry.register(
        "backlog_per_worker",
        "The scaling signal: tasks workers hold or that wait for one in campaigns that release work, per active \
         worker (all of them when none is active); CloudWatch's TaskDemandPerWorker with --scaling-namespace",
        ConstGauge::<f64>::new(
            crate::scaling::Demand {
                waiting: snapshot.waiting,
                held: snapshot.held,
                workers,
            }
            .per_worker(),
        ),
    );

    registry.register(
        "tasks_overdue",
        "Tasks on the queue longer than --requeue-after without a lease (0 unless the queue loses messages)",
        ConstGauge::new(snapshot.overdue),
    );
    let writes = ctl.store.write_stats().counts();
    registry.register(
        "store_commits",
        "Transactions the store's writer committed; each holds every write queued when it began (group commit)",
        ConstCounter::new(writes.commits),
    );
    registry.register(
        "store_writes",
        "Writes the store's writer committed (a report, a lease, a dispatch...); per commit, what group commit saved",
        ConstCounter::new(writes.writes),
    );
    registry.register(
        "store_writes_rolled_back",
        "Writes that failed (a refused lease, a fenced leader...) and were undone, while the rest of their transaction committed",
        ConstCounter::new(writes.rolled_back),
    );
    registry.register(
        "store_bytes",
        "Size of the store: SQLite's files on disk (database and write-ahead log), or PostgreSQL's database",
        ConstGauge::new(match ctl.store.file() {
            Some(path) => store_bytes(path),
            None => snapshot.database_bytes.unwrap_or(0),
        }),
    );
}

/// The counters and gauges the controller keeps as it works. Long because
/// it is a flat list, one registration (name, help, metric) per metric, in
/// the order `/metrics` shows them; split, the list would only be harder
/// to scan.
fn register_counters(registry: &mut Registry, m: &Metrics) {
    registry.register(
        "tasks_enqueued",
        "Task references put on the SQS queue",
        m.tasks_enqueued.clone(),
    );
    registry.register("leases_granted", "Leases granted to workers", m.leases_granted.clone());
    registry.register(
        "policy_reloads",
        "Times the policy file was read again after it changed, by outcome (error: the one in force stays)",
        m.policy_reloads.clone(),
    );
    registry.register(
        "aws_signins",
        "AWS sign-in tokens looked at, by outcome: verified (by STS), remembered, refused, unavailable (STS)",
        m.signins.clone(),
    );
    registry.register(
        "notifications",
        "Campaign state changes posted to webhooks, by webhook and outcome (dead_letter: failed every try)",
        m.notifications.clone(),
    );
    registry.register(
        "schedule_runs",
        "Run times of schedules, by outcome: started, resumed (a waiting campaign's next window), missed (no \
         leader until its window closed), skipped (the previous campaign had not ended), refused, paused",
        m.schedule_runs.clone(),
    );
    registry.register(
        "worker_calls_refused",
        "WorkerService calls refused with PERMISSION_DENIED, by method and rule",
        m.worker_calls_refused.clone(),
    );
    registry.register("tasks_completed", "Tasks completed, by kind", m.tasks_completed.clone());
    registry.register(
        "tasks_failed",
        "Task attempts failed, by kind and whether another attempt follows",
        m.tasks_failed.clone(),
    );
    registry.register(
        "leader",
        "1 while this controller leads (runs reconcile, dispatch, export, retention), 0 while it follows",
        m.leader.clone(),
    );
    registry.register(
        "leader_epoch",
        "The epoch of this controller's term as leader (0 while it follows); it grows with every change of leader",
        m.leader_epoch.clone(),
    );
    registry.register(
        "leader_changes",
        "Times this controller started or stopped leading",
        m.leader_changes.clone(),
    );
    registry.register(
        "lease_expiries",
        "Leases that ran out because their worker stopped renewing",
        m.lease_expiries.clone(),
    );
    registry.register(
        "tasks_requeued",
        "Task messages sent again because their task waited on the queue past --requeue-after without a lease",
        m.tasks_requeued.clone(),
    );
    registry.register(
        "campaigns_pruned",
        "Campaigns removed from the store with all their rows, past --retention-days",
        m.campaigns_pruned.clone(),
    );
    registry.register(
        "store_rows",
        "Rows per store table, counted at each retention pass (every 10 minutes)",
        m.store_rows.clone(),
    );
    registry.register(
        "dead_letters",
        "Messages drained from the dead-letter queue, by outcome: requeued, stale, unreadable",
        m.dead_letters.clone(),
    );
    registry.register(
        "command_events",
        "Run Command events read from the command event queue, by outcome: recorded, repeated, ignored, unreadable",
        m.command_events.clone(),
    );
    registry.register(
        "await_commands",
        "AwaitCommands answers, by outcome: ended (a command the worker follows had ended), cancelling (a campaign it follows is being cancelled), waited (neither within the wait)",
        m.await_commands.clone(),
    );
    registry.register(
        "results_ingested",
        "Target results recorded from workers",
        m.results_ingested.clone(),
    );
    registry.register(
        "results_duplicate",
        "Target results reported again and ignored (already recorded)",
        m.results_duplicate.clone(),
    );
}

/// Whether the controller can do its work: the store answers and the task
/// queue took the last messages.
pub async fn readiness(ctl: &Controller) -> Result<(), String> {
    ctl.store
        .read(|conn| conn.query_row("SELECT 1", (), |r| r.get::<_, i64>(0)))
        .await
        .map_err(|error| format!("the store does not answer: {error}"))?;
    if let Some(error) = ctl.queue_error.lock().expect("queue error lock").clone() {
        return Err(format!("the task queue refuses messages: {error}"));
    }
    Ok(())
}

/// The database file and its write-ahead log, in bytes.
fn store_bytes(path: &std::path::Path) -> i64 {
    let wal = path.with_extension("db-wal");
    [path, wal.as_path()]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| i64::try_from(m.len()).unwrap_or(i64::MAX))
        .sum()
}
