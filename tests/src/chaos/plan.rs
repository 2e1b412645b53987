//! A seed's scenario: the campaign's shape, the faults and their times.

use super::*;

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
    pub(super) fn kind(&self) -> &'static str {
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
pub(super) const BAKE_SECONDS: u32 = 1;

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
pub(super) const GRACE: u64 = 0;

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
