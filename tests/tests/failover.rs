//! Two controllers on PostgreSQL behind a load balancer: one leads (runs
//! reconcile, dispatch, export), both serve the APIs. The leader dies, or
//! freezes past its term at the worst moment and wakes; the other takes over,
//! the campaign ends with every instance run once, a watcher on the follower
//! sees it to its end, and the woken leader's late write is refused. And
//! the database itself goes away for a while.

use std::time::{Duration, Instant};

use muster_proto::v1::campaign_service_client::CampaignServiceClient;
use muster_proto::v1::{
    Campaign, CampaignState, GetCampaignRequest, RateControl, WatchCampaignRequest, watch_campaign_response,
};
use muster_tests::checks::assert_ran_once;
use muster_tests::client::{script_spec, submit};
use muster_tests::fleets;
use muster_tests::procs::{System, SystemOptions};
use tonic::transport::Channel;

const EAST: &str = "us-east-1";
const INSTANCES: u32 = 240;

async fn two_controllers(controller_env: Vec<(String, String)>) -> System {
    let mut system = System::start(
        &fleets::uniform(INSTANCES, 0, 2.0),
        SystemOptions {
            workers: 2,
            controllers: 2,
            controller_args: vec!["--leader-ttl".into(), "3".into()],
            controller_env,
            ..Default::default()
        },
    )
    .await;
    system.start_standby(&[]).await;
    system
}

async fn wait_until_leads(system: &System, index: usize, within: Duration) -> Duration {
    let started = Instant::now();
    while system.leads(index).await != Some(true) {
        assert!(
            started.elapsed() < within,
            "controller {index} did not take over within {within:?}:\n{}",
            system.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// The campaign through the load balancer, riding out a failover: a call
/// that fails (its connection went to the controller that died) is retried.
async fn campaign_when(
    client: &mut CampaignServiceClient<Channel>,
    id: &str,
    within: Duration,
    check: impl Fn(&Campaign) -> bool,
) -> Campaign {
    let deadline = Instant::now() + within;
    loop {
        let got = client
            .get_campaign(GetCampaignRequest {
                campaign_id: id.into(),
                ..Default::default()
            })
            .await;
        if let Ok(campaign) = got
            && let Some(campaign) = campaign.into_inner().campaign
            && check(&campaign)
        {
            return campaign;
        }
        assert!(Instant::now() < deadline, "campaign {id}: not there within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ended(campaign: &Campaign) -> bool {
    CampaignState::try_from(campaign.state).is_ok_and(CampaignState::is_terminal)
}

/// What a watcher was told: the campaign's states, and the instances
/// whose results it heard.
#[derive(Debug, Default)]
struct Told {
    states: Vec<i32>,
    results: std::collections::BTreeSet<String>,
}

/// A watcher connected straight to controller 1 (a follower when it
/// starts), asking for each target's result: what it was told, until its
/// stream ends.
fn watch_on_follower(system: &System, id: &str) -> tokio::task::JoinHandle<Told> {
    let channel = system
        .creds
        .endpoint(system.campaign_port_of(1), Some(&system.creds.pki.admin))
        .connect_lazy();
    let mut client = muster_tests::stack::campaign_client(channel);
    let id = id.to_owned();
    tokio::spawn(async move {
        let mut stream = client
            .watch_campaign(WatchCampaignRequest {
                campaign_id: id,
                include_targets: true,
            })
            .await
            .expect("WatchCampaign on the follower")
            .into_inner();
        let mut told = Told::default();
        while let Ok(Some(event)) = stream.message().await {
            match event.event {
                Some(watch_campaign_response::Event::State(change)) => told.states.push(change.state),
                Some(watch_campaign_response::Event::Snapshot(c)) => told.states.push(c.state),
                Some(watch_campaign_response::Event::Target(t)) => {
                    told.results.insert(t.instance_id);
                }
                _ => {}
            }
        }
        told
    })
}

fn spec(system: &System) -> muster_proto::v1::CampaignSpec {
    spec_in(system, "only")
}

/// `sleep 2` on every instance of `account`, 40 at a time in batches of 10.
fn spec_in(system: &System, account: &str) -> muster_proto::v1::CampaignSpec {
    let mut spec = script_spec(&[system.account(account)], &[EAST], &["sleep 2"], &[]);
    spec.rate = Some(RateControl {
        max_concurrency: "40".into(),
        batch_size: 10,
        ..Default::default()
    });
    spec.confirm_large = true;
    spec
}

/// The campaign succeeds, every instance run once.
async fn succeeds_with_every_instance_run_once(system: &mut System, id: &str) {
    succeeds_on_all_run_once(system, id, INSTANCES, INSTANCES as usize).await;
}

/// The campaign succeeds on all its `instances`, each run once, and
/// `sent_in_all` instances of the fleet were sent a command.
async fn succeeds_on_all_run_once(system: &mut System, id: &str, instances: u32, sent_in_all: usize) {
    let mut client = system.client.clone();
    let campaign = campaign_when(&mut client, id, Duration::from_secs(240), ended).await;
    assert_eq!(
        campaign.state,
        CampaignState::Succeeded as i32,
        "{}\n{}",
        campaign.state_reason,
        system.logs()
    );
    assert_eq!(campaign.counters.unwrap().success, u64::from(instances));
    assert_ran_once(system, id, &campaign).await;
    assert_eq!(system.sends_per_instance().len(), sent_in_all);
}

async fn ends_with_every_instance_run_once(
    system: &mut System,
    id: &str,
    watcher: tokio::task::JoinHandle<Told>,
) -> Told {
    succeeds_with_every_instance_run_once(system, id).await;
    let told = tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .expect("the watcher's stream ends with the campaign")
        .expect("the watcher");
    assert_eq!(
        told.states.last().copied(),
        Some(CampaignState::Succeeded as i32),
        "the follower's watcher saw the end: {:?}",
        told.states
    );
    told
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_every_instance_runs_once() {
    let mut system = two_controllers(Vec::new()).await;
    assert_eq!(system.leads(0).await, Some(true), "the first controller leads");
    assert_eq!(system.leads(1).await, Some(false), "the second follows");
    let spec = spec(&system);
    let id = submit(&mut system.client, spec).await;
    let watcher = watch_on_follower(&system, &id);
    let mut client = system.client.clone();
    campaign_when(&mut client, &id, Duration::from_secs(120), |c| {
        c.counters.is_some_and(|c| c.success >= 40)
    })
    .await;

    system.kill_controller_of(0);
    system.set_in_service(0, false);
    let failover = wait_until_leads(&system, 1, Duration::from_secs(30)).await;
    println!("failover: SIGKILL of the leader to the follower leading: {failover:?} (leader TTL 3 s)");

    let told = ends_with_every_instance_run_once(&mut system, &id, watcher).await;
    // The first 40 or more results went to controller 0 through the load
    // balancer; the watcher on controller 1 heard them all the same.
    assert_eq!(
        told.results.len(),
        INSTANCES as usize,
        "the follower's watcher heard every instance's result"
    );
}

/// A worker through the load balancer to the follower only, a person's
/// cancel to the leader: the worker's long poll on the follower hears it
/// and cancels the running commands. The lease lasts a minute (renewed
/// every 20 s), and the commands 15 s: without the long poll they would
/// have ended SUCCESS before any renewal told of the cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_made_on_one_controller_stops_the_commands_of_a_worker_on_the_other() {
    const RUNNING: u32 = 10;
    let mut system = System::start(
        &fleets::uniform(RUNNING, 0, 15.0),
        SystemOptions {
            workers: 0,
            controllers: 2,
            lease_ttl: 60,
            controller_args: vec!["--leader-ttl".into(), "3".into()],
            ..Default::default()
        },
    )
    .await;
    system.start_standby(&[]).await;
    system.set_in_service(0, false);
    system.start_worker();
    let mut spec = script_spec(&[system.account("only")], &[EAST], &["sleep 15"], &[]);
    spec.rate = Some(RateControl {
        max_concurrency: RUNNING.to_string(),
        batch_size: RUNNING,
        ..Default::default()
    });
    let id = submit(&mut system.client, spec).await;
    let sent = Instant::now();
    while system.sends_per_instance().len() < RUNNING as usize {
        assert!(
            sent.elapsed() < Duration::from_secs(60),
            "the batch was not sent:\n{}",
            system.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut leader = muster_tests::stack::campaign_client(
        system
            .creds
            .endpoint(system.campaign_port_of(0), Some(&system.creds.pki.admin))
            .connect_lazy(),
    );
    assert_eq!(system.leads(0).await, Some(true), "the cancel goes to the leader");
    // The worker's long poll is waiting by now, not starting (a new one
    // looks in the store first), and the cancel comes halfway between its
    // looks in the store once a second.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let asked = Instant::now();
    leader
        .cancel_campaign(muster_proto::v1::CancelCampaignRequest {
            campaign_id: id.clone(),
            reason: "stop the patch".into(),
        })
        .await
        .expect("CancelCampaign on the leader");
    let mut client = system.client.clone();
    let campaign = campaign_when(&mut client, &id, Duration::from_secs(120), ended).await;
    println!(
        "a cancel on the leader to CANCELLED, the worker on the follower: {:.2} s",
        asked.elapsed().as_secs_f64()
    );
    assert_eq!(
        campaign.state,
        CampaignState::Cancelled as i32,
        "{}\n{}",
        campaign.state_reason,
        system.logs()
    );
    assert_eq!(
        system.sb.count("ssm", "CancelCommand", "ok"),
        1,
        "the batch's command was cancelled"
    );
    let targets = muster_tests::client::targets(&mut client, &id, false).await;
    assert_eq!(targets.len(), RUNNING as usize);
    for target in &targets {
        assert_eq!(
            target.status,
            muster_proto::v1::TargetStatus::Cancelled as i32,
            "cancelled while it ran, not run to its end: {target:?}"
        );
    }
    assert_eq!(system.sb.audit().len(), 1, "one command, sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_past_its_term_is_fenced_when_it_wakes() {
    // The leader stops itself (SIGSTOP) on its 20th reconcile pass, holding
    // its term, just before a write: the worst moment a host can freeze.
    let mut system = two_controllers(vec![("MUSTER_STOP_AT".into(), "controller.leader_write@20".into())]).await;
    let spec = spec(&system);
    let id = submit(&mut system.client, spec).await;
    let watcher = watch_on_follower(&system, &id);
    let pid = system.pid_of(0).expect("the leader runs");
    let frozen = Instant::now();
    while !process_stopped(pid) {
        assert!(
            frozen.elapsed() < Duration::from_secs(60),
            "the leader never reached its stop point"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its health check fails; the other takes over when the term runs out.
    system.set_in_service(0, false);
    wait_until_leads(&system, 1, Duration::from_secs(30)).await;
    let mut client = system.client.clone();
    let before = campaign_when(&mut client, &id, Duration::from_secs(60), |_| true).await;
    campaign_when(&mut client, &id, Duration::from_secs(120), |c| {
        c.counters.unwrap_or_default().success > before.counters.unwrap_or_default().success
    })
    .await;

    // It wakes, back in service, and goes on with the write it was about
    // to make: refused by the fence. On PostgreSQL the freeze may have
    // caught its writer inside another transaction (a worker's report),
    // which the server ends after idle_in_transaction_session_timeout: the
    // write then fails with the lost connection before the fence is asked,
    // unacknowledged all the same.
    let resumed = std::process::Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status()
        .expect("kill -CONT");
    assert!(resumed.success());
    system.set_in_service(0, true);
    let woke = Instant::now();
    loop {
        let logs = system.logs();
        if logs.contains("fenced: the write of") || logs.contains("its writes were not acknowledged") {
            break;
        }
        assert!(
            woke.elapsed() < Duration::from_secs(30),
            "the woken leader's write was not refused:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let follows = Instant::now();
    while system.leads(0).await != Some(false) {
        assert!(
            follows.elapsed() < Duration::from_secs(30),
            "the woken leader still says it leads"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(system.leads(1).await, Some(true), "the new leader keeps leading");

    ends_with_every_instance_run_once(&mut system, &id, watcher).await;
}

/// Whether the process is stopped (state T in /proc).
fn process_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
    })
}

/// The controller loses its database mid-campaign (every connection cut,
/// whatever it carried: a transaction, a COMMIT's answer) and lives through
/// it; one started while the database cannot be reached waits for it
/// instead of exiting. The campaign ends with every instance run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_goes_away_mid_campaign_and_nothing_is_lost() {
    let mut system = System::start(
        // Commands of 5 s: the campaign outlasts both outages.
        &fleets::uniform(INSTANCES, 0, 5.0),
        SystemOptions {
            workers: 2,
            database_proxy: true,
            ..Default::default()
        },
    )
    .await;
    let spec = spec(&system);
    let id = submit(&mut system.client, spec).await;
    let mut client = system.client.clone();
    let before = campaign_when(&mut client, &id, Duration::from_secs(120), |c| {
        c.counters.is_some_and(|c| c.success >= 40)
    })
    .await;
    let success = |c: &Campaign| c.counters.as_ref().map_or(0, |c| c.success);

    system.database_outage(true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    system.database_outage(false);
    let pid = system.controller_pid();
    let after = campaign_when(&mut client, &id, Duration::from_secs(120), |c| {
        success(c) > success(&before) + 20
    })
    .await;
    assert!(!ended(&after), "still running, for what follows");
    assert!(
        system.reap_controller().is_none(),
        "the controller lived through it:\n{}",
        system.logs()
    );
    assert_eq!(system.controller_pid(), pid, "the same controller");

    // A controller (re)started while its database cannot be reached.
    system.kill_controller();
    system.database_outage(true);
    let link = system.database_link();
    let back = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(4)).await;
        link.set_in_service(0, true);
    });
    system.start_controller().await;
    back.await.unwrap();
    assert!(
        system.logs().contains("cannot reach the database yet"),
        "the controller waited for its database:\n{}",
        system.logs()
    );

    succeeds_with_every_instance_run_once(&mut system, &id).await;
}

/// An installation outgrows one controller. Its hub is stopped in the
/// middle of a campaign, `muster-controller copy-store` moves its SQLite
/// store into PostgreSQL, and a controller on the database finishes the
/// campaign with every instance run once (no batch sent before the move
/// goes out again, not even those of a worker that died with the hub); the
/// campaign that had ended and a schedule
/// read as they did. (Whatever `MUSTER_TEST_STORE` says: `.ci` runs it in
/// the SQLite pass only.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_moves_from_its_sqlite_store_to_postgres_mid_campaign() {
    use muster_proto::v1::{GetScheduleRequest, PutScheduleRequest, ScheduleSpec};
    const MOVED: u32 = 200;
    let mut system = System::start(
        &fleets::shaped(&[20, MOVED], &[EAST], 2.0),
        SystemOptions {
            workers: 2,
            sqlite: true,
            ..Default::default()
        },
    )
    .await;
    let mut client = system.client.clone();
    let finished = submit(
        &mut client,
        script_spec(&[system.account("a000")], &[EAST], &["echo done"], &[]),
    )
    .await;
    let finished_before = campaign_when(&mut client, &finished, Duration::from_secs(120), ended).await;
    let finished_targets = muster_tests::client::targets(&mut client, &finished, true).await;
    let a_year_on = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 365 * 86_400,
        nanos: 0,
    };
    let schedule = system
        .schedules()
        .put_schedule(PutScheduleRequest {
            spec: Some(ScheduleSpec {
                name: "yearly".into(),
                campaign: Some(script_spec(&[system.account("a000")], &[EAST], &["echo yearly"], &[])),
                at: Some(a_year_on),
                ..Default::default()
            }),
            expected_version: 0,
        })
        .await
        .expect("PutSchedule")
        .into_inner()
        .schedule;

    let id = submit(&mut client, spec_in(&system, "a001")).await;
    campaign_when(&mut client, &id, Duration::from_secs(120), |c| {
        c.counters.is_some_and(|c| c.success >= 40)
    })
    .await;

    // A worker dies with the hub: its batches in flight go to the other
    // worker after the move, which must find them sent, not send them again.
    system.kill_worker(0);
    system.stop_controller();
    let output = system.copy_store_to_postgres();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "copy-store failed:\n{stdout}\n{stderr}");
    println!("{stdout}");
    assert!(stdout.contains("every table's count matched"), "{stdout}");
    assert!(stdout.contains("targets"), "each table is told: {stdout}");
    system.start_controller().await;

    // Every instance of both campaigns was sent its command, once.
    succeeds_on_all_run_once(&mut system, &id, MOVED, 20 + MOVED as usize).await;

    let finished_after = campaign_when(&mut client, &finished, Duration::from_secs(10), ended).await;
    assert_eq!(finished_after.counters, finished_before.counters);
    assert_eq!(finished_after.state, finished_before.state);
    assert_eq!(
        muster_tests::client::targets(&mut client, &finished, true).await,
        finished_targets,
        "the ended campaign's results read as they did"
    );
    let schedule_after = system
        .schedules()
        .get_schedule(GetScheduleRequest {
            name: "yearly".into(),
            ..Default::default()
        })
        .await
        .expect("GetSchedule after the move")
        .into_inner()
        .schedule;
    assert_eq!(schedule_after, schedule, "the schedule reads as it did");
}
