//! Schedules and maintenance windows as whole systems: `muster-controller`
//! and `muster-worker` as real processes against moto + muster-sim.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use muster_proto::v1::schedule_service_client::ScheduleServiceClient;
use muster_proto::v1::{
    AfterWindow, CampaignSpec, CampaignState, DeleteScheduleRequest, GetScheduleRequest, ListCampaignsRequest,
    ListSchedulesRequest, PutScheduleRequest, RunOutcome, ScheduleRun, ScheduleSpec, TargetStatus, WindowEnd,
};
use muster_tests::checks::assert_ran_once;
use muster_tests::client::{get, runs_until, script_spec, targets, wait_done, wait_for};
use muster_tests::fleets;
use muster_tests::procs::{System, SystemOptions, until_crashed};
use muster_tests::stack::{Options, Stack};
use tonic::transport::Channel;

const EAST: &str = "us-east-1";

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

fn time(ts: &Option<prost_types::Timestamp>) -> DateTime<Utc> {
    let ts = ts.as_ref().expect("a time");
    DateTime::from_timestamp(ts.seconds, ts.nanos as u32).expect("a valid time")
}

/// Two instances at a time, one batch each: a campaign of `instances`
/// takes about instances / 2 command durations.
fn slow_spec(system: &System) -> CampaignSpec {
    let mut spec = script_spec(&[system.account("only")], &[EAST], &["echo patched"], &[]);
    let rate = spec.rate.as_mut().unwrap();
    rate.max_concurrency = "2".into();
    rate.batch_size = 2;
    spec
}

/// Schedule `name`: the slow campaign once, at `at`, in a window of
/// `window_seconds`.
fn once(system: &System, name: &str, at: DateTime<Utc>, window_seconds: u32) -> ScheduleSpec {
    ScheduleSpec {
        name: name.into(),
        campaign: Some(slow_spec(system)),
        at: Some(timestamp(at)),
        window_seconds,
        ..Default::default()
    }
}

/// When each SendCommand the sim took was accepted.
fn send_times(system: &System) -> Vec<DateTime<Utc>> {
    system
        .sb
        .audit()
        .iter()
        .map(|e| {
            DateTime::parse_from_rfc3339(&e.at)
                .expect("an RFC 3339 time")
                .with_timezone(&Utc)
        })
        .collect()
}

/// Stores a new schedule.
async fn create(client: &mut ScheduleServiceClient<Channel>, spec: ScheduleSpec) -> muster_proto::v1::Schedule {
    client
        .put_schedule(PutScheduleRequest {
            spec: Some(spec),
            expected_version: 0,
        })
        .await
        .expect("PutSchedule")
        .into_inner()
        .schedule
        .expect("the stored schedule")
}

async fn campaign_count(system: &mut System) -> usize {
    system
        .client
        .list_campaigns(ListCampaignsRequest::default())
        .await
        .expect("ListCampaigns")
        .into_inner()
        .campaigns
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_campaign_starts_at_its_time_and_stops_releasing_at_its_window_end() {
    let mut system = System::start(&fleets::uniform(12, 0, 4.0), SystemOptions::default()).await;
    let mut schedules = system.schedules();
    let at = Utc::now() + chrono::Duration::seconds(4);
    let spec = once(&system, "tonight", at, 6);

    // Every bad field is named, and nothing is stored.
    let mut bad = spec.clone();
    bad.time_zone = "Europe/Berlin".into();
    bad.window_seconds = 700_000;
    bad.campaign.as_mut().unwrap().targets.as_mut().unwrap().account_ids = vec!["12345".into()];
    let refused = schedules
        .put_schedule(PutScheduleRequest {
            spec: Some(bad),
            expected_version: 0,
        })
        .await
        .expect_err("a bad schedule is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    for field in [
        "window_seconds: 700000",
        "time_zone: applies to cron only",
        "campaign.targets.account_ids[0]",
    ] {
        assert!(refused.message().contains(field), "{field} in {}", refused.message());
    }
    // A rule about two fields names each of them, by its path, for a
    // client that reads the details.
    let mut both = spec.clone();
    both.cron = "0 2 * * TUE".into();
    let refused = schedules
        .put_schedule(PutScheduleRequest {
            spec: Some(both),
            expected_version: 0,
        })
        .await
        .expect_err("a schedule with a cron and an instant is refused");
    let bad = tonic_types::StatusExt::get_details_bad_request(&refused).expect("BadRequest details");
    let said: Vec<(&str, &str)> = bad
        .field_violations
        .iter()
        .map(|v| (v.field.as_str(), v.description.as_str()))
        .collect();
    assert_eq!(
        said,
        [
            ("spec.cron", "give one of them, not both"),
            ("spec.at", "give one of them, not both"),
        ],
        "{refused:?}"
    );

    let stored = schedules
        .put_schedule(PutScheduleRequest {
            spec: Some(spec.clone()),
            expected_version: 0,
        })
        .await
        .expect("PutSchedule")
        .into_inner()
        .schedule
        .unwrap();
    assert_eq!((stored.version, stored.created_by.as_str()), (1, "muster-admin"));
    assert_eq!(time(&stored.next_run_at).timestamp(), at.timestamp());
    // The same put again (its answer lost) is answered with what it stored;
    // another schedule of that name is refused.
    let replayed = schedules
        .put_schedule(PutScheduleRequest {
            spec: Some(spec.clone()),
            expected_version: 0,
        })
        .await
        .expect("the same put, asked again")
        .into_inner()
        .schedule
        .unwrap();
    assert_eq!(replayed.version, 1);
    let again = schedules
        .put_schedule(PutScheduleRequest {
            spec: Some(ScheduleSpec {
                description: "another".into(),
                ..spec.clone()
            }),
            expected_version: 0,
        })
        .await
        .expect_err("the name is taken");
    assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again:?}");

    // Nothing runs before its time.
    assert_eq!(campaign_count(&mut system).await, 0);
    let runs = runs_until(&mut schedules, "tonight", Duration::from_secs(30), |runs| {
        !runs.is_empty()
    })
    .await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].outcome, RunOutcome::Started as i32, "{runs:?}");
    let id = runs[0].campaign_id.clone();
    let first_send = send_times(&system).into_iter().min();
    assert!(
        first_send.is_none_or(|t| t >= at),
        "sent at {first_send:?} before its time {at}"
    );

    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    let window = campaign
        .window
        .clone()
        .expect("the campaign names its schedule and window");
    assert_eq!((window.schedule.as_str(), window.schedule_version), ("tonight", 1));
    let closes = time(&window.closes_at);
    assert_eq!(closes.timestamp(), at.timestamp() + 6);
    assert_eq!(
        CampaignState::try_from(campaign.state).unwrap(),
        CampaignState::CompletedWithErrors,
        "{}",
        campaign.state_reason
    );
    assert!(
        campaign.state_reason.contains("maintenance window closed"),
        "{}",
        campaign.state_reason
    );

    let all = assert_ran_once(&mut system, &id, &campaign).await;
    let c = campaign.counters.unwrap();
    assert!(c.success >= 2, "the first batches ran in the window: {c:?}");
    assert!(c.terminated >= 2, "the window closed before the last batches: {c:?}");
    assert_eq!(c.success + c.terminated, 12, "{c:?}");
    for target in all.iter().filter(|t| t.status == TargetStatus::Terminated as i32) {
        assert!(target.reason.contains("maintenance window closed"), "{}", target.reason);
        assert!(target.command_id.is_empty(), "a terminated target was never sent");
    }
    // A batch released before the end may reach SSM a moment later; none
    // released after it would come before its predecessors' 4 s ended.
    for sent in send_times(&system) {
        assert!(
            sent <= closes + chrono::Duration::seconds(3),
            "sent at {sent}, the window closed at {closes}"
        );
    }
    let shown = schedules
        .get_schedule(GetScheduleRequest {
            name: "tonight".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .schedule
        .unwrap();
    assert!(
        shown.next_run_at.is_none(),
        "a one-time schedule has nothing left to run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_waits_for_the_next_window_and_a_window_missed_while_down_is_reported() {
    let mut system = System::start(&fleets::uniform(8, 0, 3.0), SystemOptions::default()).await;
    let mut schedules = system.schedules();
    let spec = ScheduleSpec {
        name: "rolling".into(),
        description: "every 10 s, 4 s windows".into(),
        campaign: Some(slow_spec(&system)),
        cron: "*/10 * * * * *".into(),
        time_zone: "Europe/Berlin".into(),
        window_seconds: 4,
        on_window_end: WindowEnd::Finish as i32,
        after_window: AfterWindow::NextWindow as i32,
        ..Default::default()
    };
    create(&mut schedules, spec).await;
    let first = runs_until(&mut schedules, "rolling", Duration::from_secs(30), |runs| {
        !runs.is_empty()
    })
    .await;
    assert_eq!(first[0].outcome, RunOutcome::Started as i32, "{first:?}");
    let id = first[0].campaign_id.clone();

    // It waits between windows, and goes on in the next.
    let mut waited = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    let campaign = loop {
        let campaign = get(&mut system.client, &id).await;
        let state = CampaignState::try_from(campaign.state).unwrap();
        if state == CampaignState::WaitingForWindow {
            waited = true;
            assert!(
                campaign.state_reason.contains("wait for the next window"),
                "{}",
                campaign.state_reason
            );
        }
        if state.is_terminal() {
            break campaign;
        }
        assert!(
            Instant::now() < deadline,
            "campaign {id} is {state:?}: {}",
            campaign.state_reason
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(waited, "four batches of 3 s do not fit in one 4 s window");
    assert_eq!(
        CampaignState::try_from(campaign.state).unwrap(),
        CampaignState::Succeeded,
        "{}",
        campaign.state_reason
    );
    assert_eq!(campaign.counters.unwrap().success, 8);
    let all = targets(&mut system.client, &id, false).await;
    assert_eq!(all.len(), 8);
    // Every command went out inside a window (run times at :00, :10, ...;
    // 4 s windows; a batch released at the end reaches SSM a moment later).
    for sent in send_times(&system)
        .iter()
        .filter(|t| **t <= time(&campaign.finished_at))
    {
        let into = sent.timestamp_millis().rem_euclid(10_000);
        assert!(
            into < 6_500,
            "sent at {sent}, {into} ms into a 10 s period with 4 s windows"
        );
    }
    let runs = runs_until(&mut schedules, "rolling", Duration::from_secs(5), |_| true).await;
    let resumed: Vec<&ScheduleRun> = runs
        .iter()
        .filter(|r| r.outcome == RunOutcome::Resumed as i32)
        .collect();
    assert!(!resumed.is_empty(), "{runs:?}");
    assert!(resumed.iter().all(|r| r.campaign_id == id), "{runs:?}");

    // Deleting stops the runs.
    schedules
        .delete_schedule(DeleteScheduleRequest {
            name: "rolling".into(),
            allow_missing: false,
        })
        .await
        .expect("DeleteSchedule");
    let listed = schedules
        .list_schedules(ListSchedulesRequest {})
        .await
        .unwrap()
        .into_inner()
        .schedules;
    assert!(listed.is_empty(), "{listed:?}");
    let campaigns = campaign_count(&mut system).await;

    // A window that passes while no controller runs is reported, not run
    // late.
    let at = Utc::now() + chrono::Duration::seconds(3);
    create(&mut schedules, once(&system, "missed", at, 2)).await;
    // One paused (a change freeze) would have started nothing anyway: its
    // run time is paused, not missed.
    let mut frozen = once(&system, "frozen", at, 2);
    frozen.paused = true;
    create(&mut schedules, frozen).await;
    system.stop_controller();
    let reopened = at + chrono::Duration::seconds(3);
    tokio::time::sleep((reopened - Utc::now()).to_std().unwrap_or_default()).await;
    system.start_controller().await;
    let mut schedules = system.schedules();
    let runs = runs_until(&mut schedules, "missed", Duration::from_secs(30), |runs| {
        !runs.is_empty()
    })
    .await;
    assert_eq!(runs[0].outcome, RunOutcome::Missed as i32, "{runs:?}");
    assert!(
        runs[0].reason.contains("no controller was leading"),
        "{}",
        runs[0].reason
    );
    assert_eq!(time(&runs[0].scheduled_at).timestamp(), at.timestamp());
    let frozen = runs_until(&mut schedules, "frozen", Duration::from_secs(30), |runs| {
        !runs.is_empty()
    })
    .await;
    assert_eq!(frozen[0].outcome, RunOutcome::Paused as i32, "{frozen:?}");
    assert!(
        frozen[0].reason.starts_with("the schedule is paused (version 1 by "),
        "{}",
        frozen[0].reason
    );
    assert_eq!(
        campaign_count(&mut system).await,
        campaigns,
        "a missed window starts nothing"
    );
}

/// A paused schedule (a change freeze) starts nothing at its run times and
/// its campaign waiting for the next window waits on; resumed, the next run
/// time reopens the window and the campaign ends with every instance run
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_schedule_starts_nothing_and_its_waiting_campaign_waits_until_resumed() {
    let mut system = System::start(&fleets::uniform(8, 0, 3.0), SystemOptions::default()).await;
    let mut schedules = system.schedules();
    // A one-off stored paused passes its time as PAUSED.
    let mut frozen = once(&system, "frozen", Utc::now() + chrono::Duration::seconds(3), 0);
    frozen.paused = true;
    create(&mut schedules, frozen).await;
    let rolling = ScheduleSpec {
        name: "rolling".into(),
        campaign: Some(slow_spec(&system)),
        cron: "*/6 * * * * *".into(),
        window_seconds: 3,
        after_window: AfterWindow::NextWindow as i32,
        ..Default::default()
    };
    create(&mut schedules, rolling.clone()).await;
    let first = runs_until(&mut schedules, "rolling", Duration::from_secs(30), |runs| {
        !runs.is_empty()
    })
    .await;
    assert_eq!(first[0].outcome, RunOutcome::Started as i32, "{first:?}");
    let id = first[0].campaign_id.clone();
    wait_for(
        &mut system.client,
        &id,
        Duration::from_secs(60),
        "the campaign waiting for the next window",
        |c| c.state == CampaignState::WaitingForWindow as i32,
    )
    .await;

    let put = |spec: ScheduleSpec, expected_version| PutScheduleRequest {
        spec: Some(spec),
        expected_version,
    };
    let paused = schedules
        .put_schedule(put(
            ScheduleSpec {
                paused: true,
                ..rolling.clone()
            },
            1,
        ))
        .await
        .expect("the pause is stored")
        .into_inner()
        .schedule
        .unwrap();
    assert_eq!(paused.version, 2);
    let done_before = get(&mut system.client, &id).await.counters.unwrap().success;
    let runs = runs_until(&mut schedules, "rolling", Duration::from_secs(30), |runs| {
        runs.first().is_some_and(|r| r.outcome == RunOutcome::Paused as i32)
    })
    .await;
    assert_eq!(runs[0].campaign_id, id, "{runs:?}");
    assert!(
        runs[0]
            .reason
            .contains("the schedule is paused (version 2 by muster-admin)")
            && runs[0].reason.contains("waits on"),
        "{}",
        runs[0].reason
    );
    let waiting = get(&mut system.client, &id).await;
    assert_eq!(
        (waiting.state, waiting.counters.unwrap().success),
        (CampaignState::WaitingForWindow as i32, done_before),
        "the paused run time released nothing: {}",
        waiting.state_reason
    );
    let frozen = runs_until(&mut schedules, "frozen", Duration::from_secs(30), |runs| {
        !runs.is_empty()
    })
    .await;
    assert_eq!(
        (frozen[0].outcome, frozen[0].campaign_id.as_str()),
        (RunOutcome::Paused as i32, ""),
        "{frozen:?}"
    );
    assert_eq!(
        campaign_count(&mut system).await,
        1,
        "nothing but the first run started a campaign"
    );

    // Resumed, a run time reopens the window and the campaign ends.
    schedules
        .put_schedule(put(rolling, 2))
        .await
        .expect("the resume is stored");
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    assert_eq!(
        (campaign.state, campaign.counters.unwrap().success),
        (CampaignState::Succeeded as i32, 8),
        "{}",
        campaign.state_reason
    );
    assert_ran_once(&mut system, &id, &campaign).await;
    let runs = runs_until(&mut schedules, "rolling", Duration::from_secs(5), |_| true).await;
    assert!(
        runs.iter()
            .any(|r| r.outcome == RunOutcome::Resumed as i32 && r.version == 3 && r.campaign_id == id),
        "the resumed version reopened the window: {runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_that_cancels_in_flight_cancels_the_commands_running_at_its_end() {
    let mut system = System::start(&fleets::uniform(6, 0, 8.0), SystemOptions::default()).await;
    let mut schedules = system.schedules();
    let at = Utc::now() + chrono::Duration::seconds(3);
    create(
        &mut schedules,
        ScheduleSpec {
            on_window_end: WindowEnd::Cancel as i32,
            ..once(&system, "strict", at, 4)
        },
    )
    .await;
    let runs = runs_until(&mut schedules, "strict", Duration::from_secs(30), |runs| {
        !runs.is_empty()
    })
    .await;
    let id = runs[0].campaign_id.clone();
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    assert_eq!(campaign.window.as_ref().unwrap().on_window_end, "cancel");
    let all = assert_ran_once(&mut system, &id, &campaign).await;
    let sent: Vec<_> = all.iter().filter(|t| !t.command_id.is_empty()).collect();
    assert!(!sent.is_empty(), "the first batch went out in the window");
    for target in &sent {
        // An 8 s command cannot finish in a 4 s window: it was cancelled.
        assert_eq!(target.status, TargetStatus::Cancelled as i32, "{target:?}");
    }
    for target in all.iter().filter(|t| t.command_id.is_empty()) {
        assert!(
            [TargetStatus::Terminated as i32, TargetStatus::Cancelled as i32].contains(&target.status),
            "{target:?}"
        );
        assert!(target.reason.contains("maintenance window closed"), "{}", target.reason);
    }
    assert!(system.sb.count("ssm", "CancelCommand", "ok") >= 1);
    assert_eq!(
        CampaignState::try_from(campaign.state).unwrap(),
        CampaignState::CompletedWithErrors,
        "{}",
        campaign.state_reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_dies_after_starting_a_run_starts_no_second_campaign_for_it() {
    let mut system = System::start(&fleets::uniform(4, 0, 0.5), SystemOptions::default()).await;
    let mut schedules = system.schedules();
    let at = Utc::now() + chrono::Duration::seconds(3);
    create(&mut schedules, once(&system, "once", at, 600)).await;
    // The campaign is stored, then the leader dies before it records the run.
    system.kill_controller();
    let point = "controller.schedule_started@1";
    system.start_controller_with(&[("MUSTER_CRASH_AT", point)]).await;
    until_crashed(&mut system, point, System::reap_controller).await;
    system.start_controller().await;
    let mut schedules = system.schedules();
    let runs = runs_until(&mut schedules, "once", Duration::from_secs(30), |runs| !runs.is_empty()).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].outcome, RunOutcome::Started as i32, "{runs:?}");
    assert_eq!(campaign_count(&mut system).await, 1, "one run time, one campaign");
    let campaign = wait_done(&mut system.client, &runs[0].campaign_id, Duration::from_secs(120)).await;
    assert_eq!(campaign.counters.unwrap().success, 4, "{}", campaign.state_reason);
    assert_ran_once(&mut system, &runs[0].campaign_id, &campaign).await;
}

/// Runs the muster CLI as the admin (its client certificate) against the
/// stack's controller: exit code, stdout, stderr.
async fn muster(stack: &Stack, args: &[&str]) -> (i32, String, String) {
    let files = &stack.creds.files;
    let mut command = muster_tests::procs::muster_command();
    command
        .arg("--controller")
        .arg(format!("https://localhost:{}", stack.controller.campaign_addr.port()))
        .arg("--tls-ca")
        .arg(&files.ca)
        .arg("--tls-cert")
        .arg(&files.admin_cert)
        .arg("--tls-key")
        .arg(&files.admin_key)
        .args(["--color", "never"])
        .args(args);
    muster_tests::procs::output_of(command).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_lists_shows_updates_and_removes_schedules() {
    let stack = Stack::start(
        &fleets::uniform(2, 0, 0.5),
        Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    let account = stack.fleet.account("only").unwrap().id.clone();
    let campaign = ["--account", &account, "--region", EAST, "--linux", "echo patched"];

    let mut bad = vec![
        "schedule",
        "create",
        "patch",
        "--cron",
        "0 2 * * TUE",
        "--tz",
        "Europe/Nowhere",
    ];
    bad.extend(campaign);
    let (code, _, stderr) = muster(&stack, &bad).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("refused: --tz: 'Europe/Nowhere' is not an IANA time zone"),
        "{stderr}"
    );

    let mut create = vec![
        "schedule",
        "create",
        "patch",
        "--cron",
        "0 2 * * TUE",
        "--tz",
        "Europe/Berlin",
    ];
    create.extend(["--window", "4h", "--after-window", "next-window"]);
    create.extend(campaign);
    let (code, stdout, stderr) = muster(&stack, &create).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("created schedule patch version 1; next run 20"),
        "{stdout}"
    );
    // The same create again is the same schedule; another of that name is
    // refused.
    let (code, stdout, stderr) = muster(&stack, &create).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("schedule patch version 1"), "{stdout}");
    let mut another = create.clone();
    another.extend(["--max-concurrency", "3"]);
    let (code, _, stderr) = muster(&stack, &another).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("already exists: name: schedule 'patch' exists (version 1)"),
        "{stderr}"
    );

    let mut update = vec![
        "schedule",
        "update",
        "patch",
        "--cron",
        "30 1 * * TUE",
        "--tz",
        "Europe/Berlin",
    ];
    update.extend(["--window", "3h", "--on-window-end", "cancel"]);
    update.extend(campaign);
    let (code, stdout, stderr) = muster(&stack, &update).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("updated schedule patch version 2"), "{stdout}");

    let (code, stdout, stderr) = muster(&stack, &["-o", "json", "schedule", "ls"]).await;
    assert_eq!(code, 0, "{stderr}");
    // ListSchedulesResponse in the proto3 JSON mapping.
    let listed: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let listed = &listed["schedules"];
    assert_eq!(listed[0]["spec"]["name"], "patch");
    assert_eq!(listed[0]["version"], 2);
    assert_eq!(listed[0]["spec"]["cron"], "30 1 * * TUE");
    assert_eq!(listed[0]["spec"]["windowSeconds"], 10_800);
    assert_eq!(listed[0]["spec"]["onWindowEnd"], "WINDOW_END_CANCEL");
    assert_eq!(
        listed[0]["spec"]["afterWindow"], "AFTER_WINDOW_END",
        "the update's own choice, not version 1's"
    );
    let next: DateTime<Utc> = listed[0]["nextRunAt"].as_str().unwrap().parse().unwrap();
    let berlin = next.with_timezone(&chrono_tz::Europe::Berlin);
    assert_eq!(
        (berlin.format("%a %H:%M").to_string()),
        "Tue 01:30",
        "the next run is Tuesday 01:30 in Berlin"
    );

    let (code, stdout, _) = muster(&stack, &["schedule", "show", "patch", "--version", "1"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("version   1 (not the current one, 2)"), "{stdout}");
    assert!(stdout.contains("cron \"0 2 * * TUE\" Europe/Berlin"), "{stdout}");
    assert!(
        stdout.contains("4h; then in-flight batches finish, targets not sent wait for the next window"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  command   linux: echo patched\n"),
        "what it runs: {stdout}"
    );

    // A change freeze: pause, an update that keeps it paused, resume.
    let (code, stdout, stderr) = muster(&stack, &["schedule", "pause", "patch"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(
            "paused schedule patch (version 3): its run times start nothing until `muster schedule resume patch`"
        ),
        "{stdout}"
    );
    let (code, stdout, _) = muster(&stack, &["schedule", "pause", "patch"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("(version 3)"), "pausing again stores nothing: {stdout}");
    let (_, stdout, _) = muster(&stack, &["schedule", "show", "patch"]).await;
    assert!(
        stdout.contains("  paused    yes: run times start nothing until `muster schedule resume patch`"),
        "{stdout}"
    );
    let (_, stdout, _) = muster(&stack, &["schedule", "ls"]).await;
    assert!(stdout.contains("(paused)"), "{stdout}");
    let (code, stdout, stderr) = muster(&stack, &update).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("updated schedule patch version 4")
            && stdout.contains("(still paused: `muster schedule resume patch` ends it)"),
        "{stdout}"
    );
    let (_, stdout, _) = muster(&stack, &["-o", "json", "schedule", "show", "patch"]).await;
    let shown: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(shown["schedule"]["spec"]["paused"], true, "an update keeps the freeze");
    let (code, stdout, stderr) = muster(&stack, &["schedule", "resume", "patch"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("resumed schedule patch (version 5); next run 20"),
        "{stdout}"
    );
    let (_, stdout, _) = muster(&stack, &["-o", "json", "schedule", "show", "patch"]).await;
    let shown: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(shown["schedule"]["spec"]["paused"], false, "resumed: {shown}");

    let (code, stdout, stderr) = muster(&stack, &["schedule", "rm", "patch"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "deleted schedule patch");
    let (code, _, stderr) = muster(&stack, &["schedule", "show", "patch"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("not found: name: no schedule"), "{stderr}");
}
