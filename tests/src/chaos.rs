//! The chaos harness: one whole campaign (real controller and workers, the
//! sim, moto) under a schedule of faults drawn from a seed, then the checks
//! an operator cares about, from the sim's audit log and the controller:
//! no instance got a command twice, every target ended with a true status
//! and a reason, the counters add up, the campaign ended, nothing is left
//! leased or queued. The seed also draws the campaign's [`Shape`]: one
//! command, a sequence, waves behind a gate, a cancel, or an error
//! threshold, each with the checks of what it promises.
//!
//! On PostgreSQL half the seeds run two controllers behind a load balancer
//! that spreads connections over both, as a deployment for availability
//! does: each fault of "the controller" then strikes the one leading or the
//! one following, and the other goes on serving.
//!
//! The same seed draws the same plan (faults in the sim, process faults and
//! their times), so a failing scenario replays from its seed; what the
//! processes do between the faults still depends on timing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use muster_proto::v1::{
    CampaignSpec, CampaignState, CancelCampaignRequest, GetCampaignRequest, PromoteCampaignRequest, RateControl, Stage,
    StageGate, StagePhase, TargetStatus,
};
use muster_sim::testkit::test_tunables;
use muster_sim::{FaultKind, FaultRule, FaultWhen, Quota, Tunables};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::client::{script_spec, submit, targets};
use crate::procs::{System, SystemOptions};

const EAST: &str = "us-east-1";
const WEST: &str = "eu-west-1";
/// How long a campaign may take to end once the faults have stopped.
const SETTLE: Duration = Duration::from_secs(240);
/// The controller's lease TTL, seconds.
const LEASE_TTL: u64 = 5;
/// With two controllers, their `--leader-ttl`, seconds: short, so that a
/// leader killed or paused is replaced within the scenario, and one paused
/// past its term wakes fenced.
const LEADER_TTL: u64 = 3;

/// Two accounts in two regions, five instances each, one of them failing;
/// account b's that succeed print [`B_OUTPUT`] bytes, which the store
/// keeps compressed.
const FLEET: &str = r#"
name = "chaos"
external_id = "ext-chaos"

[[accounts]]
name = "a"
regions = ["us-east-1", "eu-west-1"]
  [[accounts.instances]]
  count = 4
  tags = { Role = "web", "muster-sim:duration" = "2" }
  [[accounts.instances]]
  count = 1
  tags = { Role = "fail", "muster-sim:exit-code" = "3", "muster-sim:duration" = "2" }

[[accounts]]
name = "b"
regions = ["us-east-1", "eu-west-1"]
  [[accounts.instances]]
  count = 4
  tags = { Role = "web", "muster-sim:duration" = "2", "muster-sim:stdout-bytes" = "2000" }
  [[accounts.instances]]
  count = 1
  tags = { Role = "fail", "muster-sim:exit-code" = "3", "muster-sim:duration" = "2" }
"#;

/// The output of account b's instances that succeed: past what the
/// store keeps as it is, short of what ListCommandInvocations truncates.
const B_OUTPUT: usize = 2_000;

/// A fault of a process, at a time after the submit.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// SIGKILL a worker; a new one starts `after` later.
    KillWorker { after: Duration },
    /// SIGKILL a worker right after the next SendCommand (most likely
    /// before its ReportDispatch); a new one starts a second later.
    KillWorkerAfterSend,
    /// SIGSTOP a worker, SIGCONT it `for_` later.
    PauseWorker { for_: Duration },
    /// SIGTERM a worker, the one running the most tasks, as a scale-in or
    /// a deploy does: its tasks run on for its grace ([`GRACE`]), then it
    /// hands back the rest and exits, whatever else happens meanwhile; a
    /// new one starts `after` later.
    StopWorker { after: Duration },
    /// SIGKILL the controller, start it again `after` later.
    KillController { after: Duration },
    /// SIGSTOP the controller, SIGCONT it `for_` later.
    PauseController { for_: Duration },
    /// Restart the controller armed to abort at its `nth` pass of a crash
    /// point (after a store commit, before one, after an SQS send); it is
    /// started again a second after it dies.
    CrashController { point: &'static str, nth: u64 },
    /// Replace a worker by one that aborts right after its first accepted
    /// SendCommand, before ReportDispatch.
    CrashWorkerAfterSend,
    /// SIGKILL the controller for longer than the real dead-letter horizon
    /// (5 receives x 30 s), then start it again.
    LongOutage { for_: Duration },
    /// On PostgreSQL: cut the controller off its database (open
    /// connections closed, a transaction or its COMMIT's answer lost with
    /// them; new connections refused) for `for_`.
    DatabaseOutage { for_: Duration },
}

/// The controller's crash points a plan may arm.
const CONTROLLER_POINTS: [&str; 3] = ["store.after_commit", "store.before_commit", "controller.after_enqueue"];

/// The worker API's methods whose answers a plan may lose after their
/// effect (the controller's lose points `worker_api.<method>`).
const LOSE_POINTS: [&str; 7] = [
    "LeaseTask",
    "RenewLease",
    "ReportTargets",
    "ReportDispatch",
    "ReportResults",
    "CompleteTask",
    "FailTask",
];

impl Action {
    fn kind(&self) -> &'static str {
        match self {
            Self::KillWorker { .. } => "worker SIGKILL",
            Self::KillWorkerAfterSend => "worker SIGKILL after SendCommand",
            Self::PauseWorker { .. } => "worker SIGSTOP",
            Self::StopWorker { .. } => "worker SIGTERM (scale-in)",
            Self::KillController { .. } => "controller SIGKILL",
            Self::PauseController { .. } => "controller SIGSTOP",
            Self::CrashController { .. } => "controller armed to crash",
            Self::CrashWorkerAfterSend => "worker armed to crash after SendCommand",
            Self::LongOutage { .. } => "controller outage past the dead-letter horizon",
            Self::DatabaseOutage { .. } => "database unreachable",
        }
    }
}

/// The campaign a seed runs: what the faults meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// One command on every instance.
    #[default]
    Plain,
    /// Two commands; the second only where the first succeeded, each at
    /// most once.
    Sequence,
    /// A canary (account a, us-east-1) behind a bake and a manual gate,
    /// which the harness promotes (asked until answered) when it waits;
    /// nothing of the rest is sent before every canary target ended.
    Waves,
    /// Cancelled `after` the submit (asked until answered): no SendCommand
    /// starts after a lease TTL past the answer, and it ends CANCELLED.
    Cancelled { after: Duration },
    /// `max_errors` 0: a failure ends it FAILED, and what was never sent
    /// ends TERMINATED.
    ErrorThreshold,
}

/// The canary's bake in [`Shape::Waves`].
const BAKE_SECONDS: u32 = 1;

/// The shape of `seed`'s campaign: one command for about half the seeds,
/// each other shape for about an eighth. Drawn apart from the rest of the
/// plan, so a seed's faults stay what they were before shapes were drawn.
fn shape(seed: u64) -> Shape {
    let mut rng = StdRng::seed_from_u64(seed.rotate_left(41) ^ 0x005e_a9e5);
    match rng.random_range(0..16) {
        0..=7 => Shape::Plain,
        8 | 9 => Shape::Sequence,
        10 | 11 => Shape::Waves,
        12 | 13 => Shape::Cancelled {
            after: Duration::from_millis(rng.random_range(1_000..9_000)),
        },
        _ => Shape::ErrorThreshold,
    }
}

/// What a seed draws.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The seed.
    pub seed: u64,
    /// The campaign.
    pub shape: Shape,
    /// The sim's faults, quotas and session lifetime.
    pub tunables: Tunables,
    /// Process faults: wait, then act.
    pub actions: Vec<(Duration, Action)>,
    /// The queue keeps the hub's real redrive (5 receives x 30 s) instead of
    /// the shortened one, for an outage longer than it.
    pub real_redrive: bool,
    /// Answers every controller start loses after their effect
    /// (`MUSTER_LOSE_AT`); empty for none.
    pub lost_answers: String,
    /// Controllers: 1, or 2 sharing the store (PostgreSQL only).
    pub controllers: usize,
}

/// How many controllers a seed runs: two for half the seeds on PostgreSQL,
/// where several controllers share a store; one on SQLite. Drawn apart
/// from the rest of the plan, as [`scale_ins`] are.
fn controllers(seed: u64) -> usize {
    controllers_on(seed, crate::on_postgres())
}

fn controllers_on(seed: u64, postgres: bool) -> usize {
    if !postgres {
        return 1;
    }
    let mut rng = StdRng::seed_from_u64(seed.rotate_left(53) ^ 0x2c0_17e5);
    if rng.random_bool(0.5) { 2 } else { 1 }
}

/// Which answers of the worker API the controller loses after their effect,
/// armed anew on each of its starts: about half the methods, each at a
/// drawn call. Drawn apart from the rest of the plan, so the other draws of
/// a seed stay what they were before answers were lost.
fn lost_answers(seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed.rotate_left(17) ^ 0x1057_a115);
    let mut points = Vec::new();
    for method in LOSE_POINTS {
        if rng.random_bool(0.5) {
            points.push(format!("worker_api.{method}@{}", rng.random_range(1..20)));
        }
    }
    points.join(",")
}

/// The workers' shutdown grace, seconds: none, so a stopped worker hands
/// back every task it runs, as one whose grace is shorter than a patch
/// batch does. (The batches here end within a second of a stop as often as
/// not, so even a grace of 1 s left almost nothing to hand back.)
const GRACE: u64 = 0;

/// The scale-ins of a seed: none, one or two, each a worker stopped
/// ([`Action::StopWorker`]) at a drawn time. Drawn apart from the rest of
/// the plan, so a seed's other draws stay what they were before.
fn scale_ins(seed: u64) -> Vec<(Duration, Action)> {
    let mut rng = StdRng::seed_from_u64(seed.rotate_left(29) ^ 0x5ca1_e1a5);
    let stops = match rng.random_range(0..10) {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    };
    (0..stops)
        .map(|_| {
            let at = Duration::from_millis(rng.random_range(500..12_000));
            let after = Duration::from_millis(rng.random_range(200..3_000));
            (at, Action::StopWorker { after })
        })
        .collect()
}

/// The database outages of a seed on PostgreSQL: none or one, at a drawn
/// time. Drawn apart from the rest of the plan, as [`scale_ins`] are; none
/// on SQLite, which is in the controller's process.
fn database_outages(seed: u64) -> Vec<(Duration, Action)> {
    if !crate::on_postgres() {
        return Vec::new();
    }
    let mut rng = StdRng::seed_from_u64(seed.rotate_left(17) ^ 0xdb0_0ca6e);
    if rng.random_bool(0.5) {
        return Vec::new();
    }
    let at = Duration::from_millis(rng.random_range(1_000..12_000));
    let for_ = Duration::from_millis(rng.random_range(1_000..8_000));
    vec![(at, Action::DatabaseOutage { for_ })]
}

/// How much of the chaos a scenario gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The same campaign without faults: the baseline of the makespan.
    Calm,
    /// The seed's faults.
    Faults,
    /// The seed's faults and a controller outage of 3 minutes or more, past
    /// the real dead-letter horizon (a benchmark: too long for CI).
    LongOutage,
}

/// Draws the plan of `seed` in `mode`.
pub fn plan(seed: u64, mode: Mode) -> Plan {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tunables = test_tunables();
    tunables.fault_seed = Some(seed);
    if mode == Mode::Calm {
        return Plan {
            seed,
            shape: shape(seed),
            tunables,
            actions: Vec::new(),
            real_redrive: false,
            lost_answers: String::new(),
            controllers: controllers(seed),
        };
    }
    let rule = |service: &str, api: &str, kind, probability: f64, when| FaultRule {
        when,
        ..FaultRule::new(service, api, kind).probability(probability)
    };
    let slow = |service: &str, api: &str, probability: f64, delay_ms: u64, limit| FaultRule {
        limit,
        ..FaultRule::slow(service, api, delay_ms)
            .probability(probability)
            .after_effect()
    };
    let mut faults = vec![
        // Answers lost after SSM ran the command.
        rule(
            "ssm",
            "SendCommand",
            FaultKind::Error500,
            rng.random_range(0.1..0.4),
            FaultWhen::After,
        ),
        rule(
            "ssm",
            "SendCommand",
            FaultKind::Drop,
            rng.random_range(0.0..0.2),
            FaultWhen::After,
        ),
        // Duplicate deliveries: the controller sends again what SQS took.
        rule(
            "sqs",
            "SendMessageBatch",
            FaultKind::Error500,
            rng.random_range(0.0..0.3),
            FaultWhen::After,
        ),
        // Late deliveries: a received message the worker never saw comes
        // back after its visibility timeout.
        rule(
            "sqs",
            "ReceiveMessage",
            FaultKind::Drop,
            rng.random_range(0.0..0.1),
            FaultWhen::After,
        ),
        // Duplicate deliveries as SQS makes them: a received message is
        // visible again at once, and another receive gets it too.
        rule(
            "sqs",
            "ReceiveMessage",
            FaultKind::Duplicate,
            rng.random_range(0.0..0.15),
            FaultWhen::After,
        ),
        // A received message handed over late, its visibility running.
        slow(
            "sqs",
            "ReceiveMessage",
            rng.random_range(0.0..0.1),
            rng.random_range(500..4_000),
            None,
        ),
        // Once in a while, a SendCommand answered after the worker's 30 s
        // attempt timeout: it ran, and the worker gave up on the answer.
        slow(
            "ssm",
            "SendCommand",
            if rng.random_bool(0.25) { 0.2 } else { 0.0 },
            31_000,
            Some(1),
        ),
        rule(
            "ssm",
            "ListCommandInvocations",
            FaultKind::Error503,
            rng.random_range(0.0..0.2),
            FaultWhen::Before,
        ),
        rule(
            "sts",
            "AssumeRole",
            FaultKind::Error500,
            rng.random_range(0.0..0.2),
            FaultWhen::After,
        ),
    ];
    faults.retain(|f| f.probability > 0.0);
    tunables.faults = faults;
    if rng.random_bool(0.4) {
        // A throttling storm on the APIs that send and poll.
        tunables.throttling = true;
        tunables.quotas = vec![
            Quota::new("ssm", "SendCommand", 1.0, 1.0),
            Quota::new("ssm", "ListCommandInvocations", 2.0, 2.0),
        ];
    }
    if rng.random_bool(0.3) {
        // Role sessions expire during the campaign.
        tunables.session_ttl_seconds = Some(rng.random_range(8..20));
    }
    let mut actions = Vec::new();
    let mut at = Duration::ZERO;
    for _ in 0..rng.random_range(3..7) {
        at += Duration::from_millis(rng.random_range(300..4_000));
        let action = match rng.random_range(0..10) {
            0 | 1 => Action::KillWorker {
                after: Duration::from_millis(rng.random_range(200..3_000)),
            },
            2 | 3 => Action::KillWorkerAfterSend,
            4 => Action::PauseWorker {
                for_: Duration::from_millis(rng.random_range(1_000..8_000)),
            },
            // Sometimes an outage longer than two lease TTLs and the
            // (shortened) dead-letter horizon.
            5..=6 => Action::KillController {
                after: Duration::from_millis(if rng.random_bool(0.3) {
                    rng.random_range(11_000..15_000)
                } else {
                    rng.random_range(500..4_000)
                }),
            },
            7 => Action::PauseController {
                for_: Duration::from_millis(rng.random_range(1_000..7_000)),
            },
            8 => Action::CrashController {
                point: CONTROLLER_POINTS[rng.random_range(0..CONTROLLER_POINTS.len())],
                nth: rng.random_range(1..40),
            },
            _ => Action::CrashWorkerAfterSend,
        };
        actions.push((at, action));
    }
    actions.extend(scale_ins(seed));
    actions.extend(database_outages(seed));
    actions.sort_by_key(|(at, _)| *at);
    if mode == Mode::LongOutage {
        // Early, while most of the campaign waits; the other faults follow
        // once the controller is back, spaced as drawn.
        let at = Duration::from_millis(rng.random_range(1_000..4_000));
        let for_ = Duration::from_secs(rng.random_range(180..200));
        for (later, _) in &mut actions {
            *later += at + for_;
        }
        actions.insert(0, (at, Action::LongOutage { for_ }));
    }
    Plan {
        seed,
        shape: shape(seed),
        tunables,
        actions,
        real_redrive: mode == Mode::LongOutage,
        lost_answers: lost_answers(seed),
        controllers: controllers(seed),
    }
}

/// What one scenario did and found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The campaign it ran.
    pub shape: Shape,
    /// The controllers it ran: 1, or 2 sharing the store.
    pub controllers: usize,
    /// Submit to the campaign's end.
    pub makespan: Duration,
    /// Faults by kind: process faults and the sim's injected ones.
    pub faults: BTreeMap<String, u64>,
    /// Instances that got the command more than once.
    pub duplicates: usize,
    /// Targets not in a terminal status, or without a reason, or whose
    /// status contradicts the audit log.
    pub lost: usize,
    /// Whether the campaign failed to end in time.
    pub stuck: bool,
    /// Leases that ran out unused or unfinished, each an attempt of its task
    /// spent and a TTL waited: what the faults cost, not a violation.
    pub expired: usize,
    /// Tasks stopped workers handed back (no attempt spent).
    pub handed_back: usize,
    /// In a cancelled campaign, how long after the cancel was answered the
    /// last SendCommand started, if any started after it.
    pub sent_after_cancel: Option<Duration>,
    /// Everything that was wrong, for people.
    pub violations: Vec<String>,
}

impl Report {
    /// True when every check held.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs the scenario of `seed` in `mode` and checks it.
pub async fn run(seed: u64, mode: Mode) -> Report {
    run_plan(plan(seed, mode)).await
}

/// Runs `plan` (a seed's, perhaps with another shape) and checks it.
pub async fn run_plan(plan: Plan) -> Report {
    let seed = plan.seed;
    eprintln!(
        "chaos scenario seed {seed} (replay: MUSTER_CHAOS_SEED={seed}): {:?}, {} controller(s), {:?}, answers lost: {:?}",
        plan.shape, plan.controllers, plan.actions, plan.lost_answers
    );
    let env = if plan.lost_answers.is_empty() {
        Vec::new()
    } else {
        vec![("MUSTER_LOSE_AT".to_owned(), plan.lost_answers.clone())]
    };
    let two = plan.controllers > 1;
    let mut system = System::start(
        FLEET,
        SystemOptions {
            tunables: plan.tunables.clone(),
            // With two controllers the workers start once both run, so that
            // the load balancer spreads their connections over both.
            workers: if two { 0 } else { 2 },
            lease_ttl: LEASE_TTL,
            env,
            shutdown_grace: GRACE,
            database_proxy: crate::on_postgres(),
            controllers: plan.controllers,
            spread: true,
            controller_args: if two {
                vec!["--leader-ttl".into(), LEADER_TTL.to_string()]
            } else {
                Vec::new()
            },
            ..Default::default()
        },
    )
    .await;
    if two {
        system.start_standby(&[]).await;
        system.start_worker();
        system.start_worker();
    }
    if !plan.real_redrive {
        // The hub's 5 receives x 30 s would make the outages here pointless.
        system.shorten_redrive(3, 3).await;
    }
    let mut report = Report {
        seed,
        shape: plan.shape,
        controllers: plan.controllers,
        ..Default::default()
    };
    let spec = spec_of(plan.shape, &system);
    let started = Instant::now();
    let id = submit(&mut system.client, spec).await;
    // The people in the loop: their calls meet the same faults.
    let person = match plan.shape {
        Shape::Waves => Some(tokio::spawn(promote_when_waiting(system.client.clone(), id.clone()))),
        Shape::Cancelled { after } => Some(tokio::spawn(cancel_at(
            system.client.clone(),
            id.clone(),
            started + after,
        ))),
        _ => None,
    };
    let mut live: Vec<usize> = (0..system.worker_count()).collect();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    // Which controllers are armed to crash and have not yet.
    let mut armed = vec![false; system.controller_count()];
    for (at, action) in &plan.actions {
        while Instant::now() < started + *at {
            for index in revive(&mut system, &mut live, &mut report).await {
                armed[index] = false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let struck = act(&mut system, &mut live, &mut rng, *action).await;
        let kind = match struck {
            Some(Struck { role, .. }) if two => format!("{} ({role})", action.kind()),
            _ => action.kind().to_owned(),
        };
        *report.faults.entry(kind).or_default() += 1;
        match (action, struck) {
            (Action::CrashController { .. }, Some(struck)) => armed[struck.index] = true,
            (Action::KillController { .. }, Some(struck)) => armed[struck.index] = false,
            (Action::LongOutage { .. }, _) => armed.fill(false),
            _ => {}
        }
    }
    // Faults over: everything runs again.
    for index in 0..system.controller_count() {
        if system.pid_of(index).is_none() {
            system.start_controller_of(index, &[]).await;
        }
    }
    while live.len() < 2 {
        live.push(system.start_worker());
    }

    let settled = settle(&mut system, &mut live, &mut report, &mut armed, &id).await;
    let decided = match person {
        Some(person) if settled.is_some() => {
            // Ends once the campaign has (it asks until answered).
            tokio::time::timeout(Duration::from_secs(60), person)
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
        }
        Some(person) => {
            person.abort();
            None
        }
        None => None,
    };
    let Some(campaign) = settled else {
        report.stuck = true;
        report
            .violations
            .push(format!("campaign {id} did not end within {SETTLE:?}"));
        return finish(report, &system);
    };
    report.makespan = started.elapsed();
    for index in (0..armed.len()).filter(|i| armed[*i]) {
        // Its crash point may come with any later write (an export, a
        // dead letter): the checks read a controller started plain, as
        // ECS would have started it after the crash.
        system.kill_controller_of(index);
        system.start_controller_of(index, &[]).await;
    }
    check(&mut system, &id, &campaign, plan.shape, &mut report).await;
    check_shape(&mut system, &id, &campaign, &plan, decided, &mut report).await;
    check_drained(&system, &mut report).await;
    finish(report, &system)
}

fn signal(pid: Option<u32>, signal: &str) {
    if let Some(pid) = pid {
        let _ = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status();
    }
}

/// A position in `live`, if any worker runs.
fn pick(live: &[usize], rng: &mut StdRng) -> Option<usize> {
    (!live.is_empty()).then(|| rng.random_range(0..live.len()))
}

/// A position in `live` of the worker running the most tasks, by its
/// metrics, if any runs one: the worker whose stop has the most to hand
/// back.
async fn busiest(system: &System, live: &[usize]) -> Option<usize> {
    let mut most = (0, None);
    for (position, index) in live.iter().enumerate() {
        let port = system.worker_metrics_port(*index);
        let Ok(Ok((200, text))) =
            tokio::time::timeout(Duration::from_secs(2), crate::otlp::try_http_get(port, "/metrics")).await
        else {
            continue;
        };
        let running = text
            .lines()
            .find_map(|l| l.strip_prefix("muster_worker_tasks_running "))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        if running > most.0 {
            most = (running, Some(position));
        }
    }
    most.1
}

/// A controller a fault struck, with the part it played then.
#[derive(Debug, Clone, Copy)]
struct Struck {
    index: usize,
    role: &'static str,
}

/// The controller a fault of "the controller" strikes: the only one; of
/// two, the leader for about three faults in five and the follower for
/// the rest, or either when neither leads (a takeover under way).
async fn aim(system: &System, rng: &mut StdRng) -> Struck {
    if system.controller_count() == 1 {
        return Struck { index: 0, role: "" };
    }
    let (the_leader, either) = (rng.random_bool(0.6), rng.random_range(0..2));
    let mut leader = None;
    for index in 0..2 {
        if system.leads(index).await == Some(true) {
            leader = Some(index);
        }
    }
    match leader {
        Some(index) if the_leader => Struck {
            index,
            role: "the leader",
        },
        Some(index) => Struck {
            index: 1 - index,
            role: "the follower",
        },
        None => Struck {
            index: either,
            role: "neither leading",
        },
    }
}

/// Does `action`; the controller it struck, if it struck one.
async fn act(system: &mut System, live: &mut Vec<usize>, rng: &mut StdRng, action: Action) -> Option<Struck> {
    let struck = match action {
        Action::KillController { .. } | Action::PauseController { .. } | Action::CrashController { .. } => {
            Some(aim(system, rng).await)
        }
        _ => None,
    };
    let index = struck.map_or(0, |s| s.index);
    match action {
        Action::KillWorker { after } => {
            if let Some(i) = pick(live, rng) {
                system.kill_worker(live.remove(i));
            }
            tokio::time::sleep(after).await;
            live.push(system.start_worker());
        }
        Action::KillWorkerAfterSend => {
            let sent = system.sb.audit().len();
            let deadline = Instant::now() + Duration::from_secs(10);
            while system.sb.audit().len() == sent && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if let Some(i) = pick(live, rng) {
                system.kill_worker(live.remove(i));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            live.push(system.start_worker());
        }
        Action::StopWorker { after } => {
            if let Some(i) = busiest(system, live).await.or_else(|| pick(live, rng)) {
                system.scale_in_worker(live.remove(i));
            }
            tokio::time::sleep(after).await;
            live.push(system.start_worker());
        }
        Action::PauseWorker { for_ } => {
            if let Some(i) = pick(live, rng) {
                let pid = system.worker_pid(live[i]);
                signal(pid, "-STOP");
                tokio::time::sleep(for_).await;
                signal(pid, "-CONT");
            }
        }
        Action::KillController { after } => {
            system.kill_controller_of(index);
            tokio::time::sleep(after).await;
            system.start_controller_of(index, &[]).await;
        }
        Action::PauseController { for_ } => {
            let pid = system.pid_of(index);
            signal(pid, "-STOP");
            tokio::time::sleep(for_).await;
            signal(pid, "-CONT");
        }
        Action::CrashController { point, nth } => {
            system.kill_controller_of(index);
            let armed = format!("{point}@{nth}");
            system.start_controller_of(index, &[("MUSTER_CRASH_AT", &armed)]).await;
        }
        Action::CrashWorkerAfterSend => {
            if let Some(i) = pick(live, rng) {
                system.kill_worker(live.remove(i));
            }
            live.push(system.start_worker_with(&[("MUSTER_CRASH_AT", "worker.after_send@1")]));
        }
        Action::LongOutage { for_ } => {
            // Every controller: the service is out.
            for index in 0..system.controller_count() {
                system.kill_controller_of(index);
            }
            tokio::time::sleep(for_).await;
            for index in 0..system.controller_count() {
                system.start_controller_of(index, &[]).await;
            }
        }
        Action::DatabaseOutage { for_ } => {
            system.database_outage(true);
            tokio::time::sleep(for_).await;
            system.database_outage(false);
        }
    }
    struck
}

/// Starts again, as ECS would, whatever died at its crash point, and counts
/// the crash; the controllers started again.
async fn revive(system: &mut System, live: &mut Vec<usize>, report: &mut Report) -> Vec<usize> {
    let mut revived = Vec::new();
    for index in 0..system.controller_count() {
        if system.reap_controller_of(index).is_some() {
            *report
                .faults
                .entry("controller crashed at its point".into())
                .or_default() += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
            system.start_controller_of(index, &[]).await;
            revived.push(index);
        }
    }
    let mut crashed = Vec::new();
    for (position, index) in live.iter().enumerate() {
        if system.reap_worker(*index).is_some() {
            crashed.push(position);
        }
    }
    for position in crashed.into_iter().rev() {
        live.remove(position);
        *report
            .faults
            .entry("worker crashed after SendCommand".into())
            .or_default() += 1;
        live.push(system.start_worker());
    }
    revived
}

async fn settle(
    system: &mut System,
    live: &mut Vec<usize>,
    report: &mut Report,
    armed: &mut [bool],
    id: &str,
) -> Option<muster_proto::v1::Campaign> {
    let deadline = Instant::now() + SETTLE;
    loop {
        for index in revive(system, live, report).await {
            armed[index] = false;
        }
        if let Ok(answer) = system
            .client
            .get_campaign(muster_proto::v1::GetCampaignRequest { campaign_id: id.into() })
            .await
            && let Some(campaign) = answer.into_inner().campaign
            && CampaignState::try_from(campaign.state).is_ok_and(CampaignState::is_terminal)
        {
            return Some(campaign);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every target ended with a reason, its status agrees with the audit log,
/// the counters add up, nobody got a command twice, and the output of
/// those that ran reads back whole.
async fn check(
    system: &mut System,
    id: &str,
    campaign: &muster_proto::v1::Campaign,
    shape: Shape,
    report: &mut Report,
) {
    let all = targets(&mut system.client, id, true).await;
    let sends = system.sends_per_instance();
    let per_command = system.sends_per_command();
    // What a target that succeeded printed: each command of the sequence.
    let printed = if shape == Shape::Sequence {
        2 * B_OUTPUT
    } else {
        B_OUTPUT
    };
    let b = system
        .fleet
        .accounts
        .iter()
        .find(|a| a.name == "b")
        .map(|a| a.id.clone())
        .unwrap_or_default();
    report.duplicates = per_command.values().filter(|n| **n > 1).count();
    for ((instance, command), n) in per_command.iter().filter(|(_, n)| **n > 1) {
        report
            .violations
            .push(format!("{instance} got command {command} {n} times"));
    }
    let counters = campaign.counters.unwrap_or_default();
    if counters.total as usize != all.len() {
        report.violations.push(format!(
            "counters say {} targets, ListTargets {}",
            counters.total,
            all.len()
        ));
    }
    let mut by_status: BTreeMap<i32, u64> = BTreeMap::new();
    for target in &all {
        *by_status.entry(target.status).or_default() += 1;
        let status = TargetStatus::try_from(target.status).unwrap_or(TargetStatus::Unspecified);
        let sent = sends.contains_key(&target.instance_id);
        let wrong = if !status.is_terminal() {
            Some("is not in a terminal status")
        } else if target.reason.is_empty() {
            Some("has no reason")
        } else if matches!(status, TargetStatus::Success | TargetStatus::Failed) && !sent {
            Some("ran, says its status, but SSM never got it")
        } else if matches!(status, TargetStatus::Skipped | TargetStatus::Terminated) && sent {
            Some("was sent, yet its status says it never was")
        } else {
            None
        };
        let stdout: usize = target.steps.iter().map(|s| s.stdout.len()).sum();
        if status == TargetStatus::Success && target.account_id == b && stdout != printed {
            report.violations.push(format!(
                "{} printed {printed} bytes; {stdout} read back",
                target.instance_id
            ));
        }
        if let Some(wrong) = wrong {
            report.lost += 1;
            report.violations.push(format!(
                "{} {wrong}: {} ({})",
                target.instance_id,
                status.short_name(),
                target.reason
            ));
        }
    }
    let counted = [
        (TargetStatus::Success, counters.success),
        (TargetStatus::Failed, counters.failed),
        (TargetStatus::Error, counters.error),
        (TargetStatus::Cancelled, counters.cancelled),
    ];
    for (status, n) in counted {
        let listed = by_status.get(&(status as i32)).copied().unwrap_or(0);
        if listed != n {
            report
                .violations
                .push(format!("{} counted {n}, listed {listed}", status.short_name()));
        }
    }
}

/// The spec of `shape` over the whole fleet: half of it in flight at most,
/// in batches of 3.
fn spec_of(shape: Shape, system: &System) -> CampaignSpec {
    let accounts = [system.account("a"), system.account("b")];
    let mut spec = script_spec(&accounts, &[EAST, WEST], &["echo once"], &[]);
    let mut rate = RateControl {
        max_concurrency: "50%".into(),
        batch_size: 3,
        ..Default::default()
    };
    match shape {
        Shape::Plain | Shape::Cancelled { .. } => {}
        Shape::Sequence => {
            let then = script_spec(&accounts, &[EAST], &["echo twice"], &[]);
            spec.then = then.command.into_iter().collect();
        }
        Shape::Waves => {
            spec.stages = vec![
                Stage {
                    name: "canary".into(),
                    account_ids: vec![system.account("a")],
                    regions: vec![EAST.into()],
                    // Its failing instance is known: one error passes.
                    max_errors: "1".into(),
                    bake_seconds: BAKE_SECONDS,
                    gate: StageGate::Manual as i32,
                    ..Default::default()
                },
                Stage {
                    name: "rest".into(),
                    ..Default::default()
                },
            ];
        }
        Shape::ErrorThreshold => rate.max_errors = "0".into(),
    }
    spec.rate = Some(rate);
    spec
}

/// How long a person keeps asking before giving up.
const PERSON_GIVES_UP: Duration = Duration::from_secs(360);

/// An approver who promotes the canary whenever the campaign waits for it,
/// until it ends; when the last promote was answered.
async fn promote_when_waiting(
    mut client: muster_proto::v1::campaign_service_client::CampaignServiceClient<tonic::transport::Channel>,
    id: String,
) -> Option<SystemTime> {
    let mut answered = None;
    let deadline = Instant::now() + PERSON_GIVES_UP;
    while Instant::now() < deadline {
        let asked = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_campaign(GetCampaignRequest {
                campaign_id: id.clone(),
            }),
        )
        .await;
        if let Ok(Ok(answer)) = asked {
            let state = answer
                .into_inner()
                .campaign
                .and_then(|c| CampaignState::try_from(c.state).ok())
                .unwrap_or_default();
            if state.is_terminal() {
                return answered;
            }
            if state == CampaignState::AwaitingPromotion {
                let promote = PromoteCampaignRequest {
                    campaign_id: id.clone(),
                    stage: "canary".into(),
                    reason: "chaos".into(),
                };
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), client.promote_campaign(promote)).await
                {
                    answered = Some(SystemTime::now());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    answered
}

/// An operator who cancels the campaign at `at`, asking until answered;
/// when the answer came.
async fn cancel_at(
    mut client: muster_proto::v1::campaign_service_client::CampaignServiceClient<tonic::transport::Channel>,
    id: String,
    at: Instant,
) -> Option<SystemTime> {
    tokio::time::sleep_until(at.into()).await;
    let deadline = Instant::now() + PERSON_GIVES_UP;
    while Instant::now() < deadline {
        let cancel = CancelCampaignRequest {
            campaign_id: id.clone(),
            reason: "chaos".into(),
        };
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), client.cancel_campaign(cancel)).await {
            return Some(SystemTime::now());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// When each SendCommand was accepted, by instance and command, from the
/// sim's audit log.
fn sends_at(system: &System) -> Vec<(String, u32, SystemTime)> {
    let mut sends = Vec::new();
    for entry in system.sb.audit() {
        let command = crate::procs::command_of(&entry.comment);
        let at: SystemTime = chrono::DateTime::parse_from_rfc3339(&entry.at)
            .expect("the audit log's times are RFC 3339")
            .into();
        for id in entry.instance_ids {
            sends.push((id, command, at));
        }
    }
    sends
}

fn system_time(ts: &Option<prost_types::Timestamp>) -> Option<SystemTime> {
    ts.as_ref().and_then(|t| SystemTime::try_from(*t).ok())
}

/// What the campaign's shape promises, beyond what every campaign does.
/// `decided`: when the person's last call (promote, cancel) was answered.
async fn check_shape(
    system: &mut System,
    id: &str,
    campaign: &muster_proto::v1::Campaign,
    plan: &Plan,
    decided: Option<SystemTime>,
    report: &mut Report,
) {
    let all = targets(&mut system.client, id, false).await;
    let sends = sends_at(system);
    let state = CampaignState::try_from(campaign.state).unwrap_or_default();
    let violations = &mut report.violations;
    match plan.shape {
        Shape::Plain => {}
        Shape::Sequence => {
            let second: std::collections::BTreeSet<&str> =
                sends.iter().filter(|s| s.1 == 2).map(|s| s.0.as_str()).collect();
            for target in &all {
                let got_second = second.contains(target.instance_id.as_str());
                let status = TargetStatus::try_from(target.status).unwrap_or_default();
                // Only the failing instances fail, at the first command.
                if status == TargetStatus::Success && !got_second {
                    violations.push(format!("{} succeeded without its second command", target.instance_id));
                }
                if status == TargetStatus::Failed && got_second {
                    violations.push(format!(
                        "{} got the second command though the first failed",
                        target.instance_id
                    ));
                }
            }
        }
        Shape::Waves => {
            for stage in &campaign.stages {
                if stage.phase != StagePhase::Passed as i32 {
                    violations.push(format!(
                        "stage '{}' ended {}",
                        stage.name,
                        StagePhase::try_from(stage.phase).unwrap_or_default().short_name()
                    ));
                }
            }
            let canary_ended = all
                .iter()
                .filter(|t| t.stage == "canary")
                .filter_map(|t| system_time(&t.finished_at))
                .max();
            let rest: std::collections::BTreeSet<&str> = all
                .iter()
                .filter(|t| t.stage == "rest")
                .map(|t| t.instance_id.as_str())
                .collect();
            let first_of_rest = sends.iter().filter(|s| rest.contains(s.0.as_str())).map(|s| s.2).min();
            if let (Some(canary), Some(first)) = (canary_ended, first_of_rest)
                && first < canary
            {
                violations.push(format!(
                    "the rest was sent {:?} before the canary's last target ended",
                    canary.duration_since(first).unwrap_or_default()
                ));
            }
            if decided.is_none() {
                violations.push("the canary's promotion was never answered".into());
            }
        }
        Shape::Cancelled { .. } => {
            let Some(acknowledged) = decided else {
                violations.push("the cancel was never answered".into());
                return;
            };
            let ended_before = system_time(&campaign.finished_at).is_some_and(|f| f <= acknowledged);
            if state != CampaignState::Cancelled && !ended_before {
                violations.push(format!(
                    "cancelled, it ended {} ({})",
                    state.short_name(),
                    campaign.state_reason
                ));
            }
            // A worker sends only within its lease, renewed at most a TTL
            // before the cancel, or after a pause of its own (SIGSTOP
            // between its check and its call).
            let paused: Duration = plan
                .actions
                .iter()
                .map(|(_, action)| match action {
                    Action::PauseWorker { for_ } => *for_,
                    _ => Duration::ZERO,
                })
                .sum();
            report.sent_after_cancel = sends.iter().filter_map(|s| s.2.duration_since(acknowledged).ok()).max();
            let horizon = acknowledged + Duration::from_secs(LEASE_TTL) + Duration::from_secs(2) + paused;
            for (instance, command, at) in sends.iter().filter(|s| s.2 > horizon) {
                violations.push(format!(
                    "{instance} was sent command {command} {:?} after the cancel was answered",
                    at.duration_since(acknowledged).unwrap_or_default()
                ));
            }
        }
        Shape::ErrorThreshold => {
            let passed = campaign.errors > campaign.error_threshold.unwrap_or(0);
            if passed != (state == CampaignState::Failed) {
                violations.push(format!(
                    "{} errors of max_errors 0, yet it ended {} ({})",
                    campaign.errors,
                    state.short_name(),
                    campaign.state_reason
                ));
            }
        }
    }
}

/// Nothing left leased or waiting in the store, and both queues drained
/// (workers delete duplicate messages as they meet them; the controller
/// drains dead letters, whose receives the sim may drop too, hiding them
/// for the drain's 30 s visibility timeout).
async fn check_drained(system: &System, report: &mut Report) {
    let sqs = aws_sdk_sqs::Client::new(&system.sb.hub_config(EAST));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let store = open_tasks(system).await;
        let main = depth(&sqs, &system.fleet.queue_url).await;
        let dead = depth(&sqs, &system.fleet.dlq_url).await;
        if store == 0 && main == 0 && dead == 0 {
            return;
        }
        if Instant::now() >= deadline {
            report.violations.push(format!(
                "left behind: {store} tasks leased or queued in the store, {main} messages on the task queue, {dead} dead letters"
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Tasks waiting, queued or leased, from the controller's metrics.
async fn open_tasks(system: &System) -> u64 {
    let (_, text) = crate::otlp::http_get(system.controller_metrics_port(), "/metrics").await;
    text.lines()
        .filter(|l| l.starts_with("muster_controller_tasks{"))
        .filter(|l| {
            ["\"waiting\"", "\"queued\"", "\"leased\""]
                .iter()
                .any(|s| l.contains(s))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()))
        .sum::<f64>() as u64
}

async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> u64 {
    let (visible, in_flight) = crate::checks::queue_depth(sqs, url).await;
    visible + in_flight
}

/// Adds the sim's injected faults to the report, and the logs when
/// something was wrong.
fn finish(mut report: Report, system: &System) -> Report {
    report.expired = system
        .muster_warnings()
        .iter()
        .filter(|line| line.contains("muster_controller::reconcile") && line.contains("lease expired"))
        .count();
    report.handed_back = system
        .muster_warnings()
        .iter()
        .filter(|line| line.contains("muster_worker::task") && line.contains("worker stopping"))
        .count();
    let lost = system.logs().matches("lose point worker_api.").count() as u64;
    if lost > 0 {
        *report
            .faults
            .entry("worker API answer lost after the effect".into())
            .or_default() += lost;
    }
    for (service, api) in [
        ("ssm", "SendCommand"),
        ("sqs", "SendMessageBatch"),
        ("sqs", "ReceiveMessage"),
        ("ssm", "ListCommandInvocations"),
        ("sts", "AssumeRole"),
    ] {
        for kind in [
            FaultKind::Error500,
            FaultKind::Error503,
            FaultKind::Drop,
            FaultKind::Slow,
            FaultKind::Duplicate,
        ] {
            for (when, label) in [("fault_after", "after the effect"), ("fault", "before")] {
                let n = system.sb.count(service, api, &format!("{when}:{}", kind.name()));
                if n > 0 {
                    *report
                        .faults
                        .entry(format!("{api} {} {label}", kind.name()))
                        .or_default() += n;
                }
            }
        }
    }
    let throttled = system.sb.count("ssm", "SendCommand", "throttled")
        + system.sb.count("ssm", "ListCommandInvocations", "throttled");
    if throttled > 0 {
        *report.faults.entry("throttled".into()).or_default() += throttled;
    }
    let expired: u64 = [
        "SendCommand",
        "ListCommandInvocations",
        "DescribeInstances",
        "DescribeInstanceInformation",
    ]
    .iter()
    .map(|api| system.sb.count("ssm", api, "expired_token") + system.sb.count("ec2", api, "expired_token"))
    .sum();
    if expired > 0 {
        *report.faults.entry("expired credentials".into()).or_default() += expired;
    }
    if !report.ok() {
        eprintln!(
            "chaos seed {} failed (replay: MUSTER_CHAOS_SEED={}):\n  {}\n{}",
            report.seed,
            report.seed,
            report.violations.join("\n  "),
            system.logs()
        );
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_draws_the_same_plan_every_time() {
        for seed in [1, 29, 1049] {
            let (first, again) = (plan(seed, Mode::Faults), plan(seed, Mode::Faults));
            assert_eq!(format!("{first:?}"), format!("{again:?}"), "seed {seed}");
        }
        assert_ne!(
            format!("{:?}", plan(1, Mode::Faults).actions),
            format!("{:?}", plan(2, Mode::Faults).actions)
        );
    }

    #[test]
    fn every_shape_is_drawn_and_the_faults_do_not_depend_on_it() {
        let shapes: Vec<Shape> = (0..200).map(shape).collect();
        for (name, kind) in [
            ("plain", Shape::Plain),
            ("sequence", Shape::Sequence),
            ("waves", Shape::Waves),
            ("error threshold", Shape::ErrorThreshold),
        ] {
            let n = shapes.iter().filter(|s| **s == kind).count();
            assert!(n >= 10, "{name}: {n} of 200 seeds");
        }
        let cancels: Vec<Duration> = shapes
            .iter()
            .filter_map(|s| match s {
                Shape::Cancelled { after } => Some(*after),
                _ => None,
            })
            .collect();
        assert!(cancels.len() >= 10, "cancelled: {} of 200 seeds", cancels.len());
        assert!(cancels.iter().all(|a| (1..9).contains(&a.as_secs())), "{cancels:?}");
        // The CI set's seeds of each shape (tests/tests/chaos.rs).
        assert_eq!(shape(4), Shape::ErrorThreshold);
        assert!(matches!(shape(7), Shape::Cancelled { .. }));
        assert_eq!(shape(9), Shape::Waves);
        assert_eq!(shape(15), Shape::Sequence);
    }

    #[test]
    fn half_the_seeds_run_two_controllers_on_postgres_and_one_on_sqlite() {
        let two = (0..200).filter(|seed| controllers_on(*seed, true) == 2).count();
        assert!((70..130).contains(&two), "{two} of 200 seeds");
        assert!((0..200).all(|seed| controllers_on(seed, false) == 1));
        assert!((0..200).all(|seed| controllers_on(seed, true) <= 2));
    }

    #[test]
    fn a_calm_plan_has_no_faults_and_a_long_one_outlasts_the_real_redrive() {
        let calm = plan(5, Mode::Calm);
        assert!(calm.actions.is_empty() && calm.tunables.faults.is_empty() && calm.lost_answers.is_empty());
        let lost: Vec<String> = (0..50).map(|seed| plan(seed, Mode::Faults).lost_answers).collect();
        assert!(lost.iter().any(|l| !l.is_empty()), "some seeds lose answers");
        for entry in lost.iter().flat_map(|l| l.split(',')).filter(|e| !e.is_empty()) {
            let (point, nth) = entry.split_once('@').unwrap();
            let method = point.strip_prefix("worker_api.").unwrap();
            assert!(LOSE_POINTS.contains(&method), "{entry}");
            assert!((1..20).contains(&nth.parse::<u64>().unwrap()), "{entry}");
        }
        let long = plan(5, Mode::LongOutage);
        assert!(long.real_redrive);
        let Some((at, Action::LongOutage { for_ })) = long.actions.first().copied() else {
            panic!("the outage comes first: {:?}", long.actions);
        };
        assert!(for_ >= Duration::from_secs(180), "5 receives x 30 s is 150 s");
        assert!(
            long.actions[1..].iter().all(|(later, _)| *later >= at + for_),
            "the other faults wait for the controller to be back"
        );
        assert!(long.tunables.validate().is_ok());
    }
}
