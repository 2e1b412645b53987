//! Playing a plan: the processes, the faults as they fall due, the people
//! who promote and cancel, and the revival of what the faults stopped.

use super::*;

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
            .get_campaign(muster_proto::v1::GetCampaignRequest {
                campaign_id: id.into(),
                ..Default::default()
            })
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
                ..Default::default()
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
