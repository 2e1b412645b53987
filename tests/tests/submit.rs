//! `muster submit`, `schedule create` and `schedule rm` when the
//! controller's answer is lost on the way back: the CLI asks again and the
//! thing is done once.

use muster_proto::v1::campaign_service_client::CampaignServiceClient;
use muster_proto::v1::schedule_service_client::ScheduleServiceClient;
use muster_proto::v1::{ListCampaignsRequest, ListSchedulesRequest};
use muster_sim::testkit::Sandbox;
use muster_tests::fleets;
use muster_tests::procs::bin_dir;
use muster_tests::proxy::AnswerLosingProxy;
use muster_tests::stack::{Options, controller_settings};
use tokio_util::sync::CancellationToken;

const EAST: &str = "us-east-1";

/// A controller without TLS on loopback ports, over `fleet`, storing in
/// `data`.
async fn controller(
    sb: &Sandbox,
    fleet: &muster_sim::seed::fleet_file::FleetState,
    data: &std::path::Path,
) -> muster_controller::Running {
    let store = muster_controller::store::Store::open(data).unwrap();
    let controller = muster_controller::Controller::new(
        store,
        controller_settings(fleet, &Options::default()),
        &sb.hub_config(EAST),
    );
    let listeners = muster_controller::Listeners {
        campaign: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        worker: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        metrics: None,
    };
    muster_controller::start(
        controller,
        listeners,
        muster_controller::Security::insecure(),
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

/// The campaigns the controller has.
async fn stored_campaigns(running: &muster_controller::Running) -> Vec<muster_proto::v1::Campaign> {
    let mut client = CampaignServiceClient::connect(format!("http://{}", running.campaign_addr))
        .await
        .unwrap();
    let answer = client.list_campaigns(ListCampaignsRequest::default()).await.unwrap();
    answer.into_inner().campaigns
}

/// The schedules the controller has.
async fn stored_schedules(running: &muster_controller::Running) -> Vec<muster_proto::v1::Schedule> {
    let mut client = ScheduleServiceClient::connect(format!("http://{}", running.campaign_addr))
        .await
        .unwrap();
    let answer = client.list_schedules(ListSchedulesRequest {}).await.unwrap();
    answer.into_inner().schedules
}

/// Runs the CLI through `proxy`: success, stdout, stderr.
async fn muster(proxy: &AnswerLosingProxy, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(bin_dir().join("muster"))
        .env_clear()
        .args(["--controller", &format!("http://{}", proxy.addr), "--color", "never"])
        .args(args)
        .output()
        .await
        .expect("the CLI runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_whose_answer_was_lost_is_asked_again_and_makes_one_campaign() {
    let sb = Sandbox::start().await;
    let fleet = sb.seed(&fleets::uniform(4, 0, 0.5)).await;
    let data = tempfile::tempdir().unwrap();
    let running = controller(&sb, &fleet, data.path()).await;
    // The controller stores the campaign; its answer never arrives.
    let proxy = AnswerLosingProxy::start(running.campaign_addr, 1).await;

    let account = &fleet.account("only").unwrap().id;
    let (ok, stdout, stderr) = muster(
        &proxy,
        &["submit", "--account", account, "--region", EAST, "--linux", "echo once"],
    )
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(proxy.answers_lost(), 1, "the first answer was lost");
    assert!(stderr.contains("asking again"), "the CLI says it asks again: {stderr}");
    assert!(stderr.contains("client token"), "and prints its client token: {stderr}");

    let campaigns = stored_campaigns(&running).await;
    assert_eq!(campaigns.len(), 1, "one campaign, not two");
    assert_eq!(stdout.trim(), campaigns[0].id, "the CLI printed it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_put_or_delete_whose_answer_was_lost_is_asked_again_and_done_once() {
    let sb = Sandbox::start().await;
    let fleet = sb.seed(&fleets::uniform(2, 0, 0.5)).await;
    let data = tempfile::tempdir().unwrap();
    let running = controller(&sb, &fleet, data.path()).await;
    let account = &fleet.account("only").unwrap().id;

    // The schedule is stored; the answer never arrives. Asked again, the
    // controller knows the put and answers with the version it stored.
    let proxy = AnswerLosingProxy::start(running.campaign_addr, 1).await;
    let (ok, stdout, stderr) = muster(
        &proxy,
        &[
            "schedule",
            "create",
            "nightly",
            "--cron",
            "0 2 * * *",
            "--account",
            account,
            "--region",
            EAST,
            "--linux",
            "echo nightly",
        ],
    )
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(proxy.answers_lost(), 1, "the first answer was lost");
    assert!(stderr.contains("asking again"), "{stderr}");
    assert!(stdout.contains("schedule nightly version 1"), "{stdout}");

    // The schedule is deleted; the answer never arrives. Asked again, it is
    // gone, by this very command: no error.
    let proxy = AnswerLosingProxy::start(running.campaign_addr, 1).await;
    let (ok, stdout, stderr) = muster(&proxy, &["schedule", "rm", "nightly"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(proxy.answers_lost(), 1);
    assert!(stdout.contains("deleted schedule nightly"), "{stdout}");
    let left = stored_schedules(&running).await;
    assert!(left.is_empty(), "{left:?}");

    // Asked first time for a schedule that is not there, rm still says so.
    let proxy = AnswerLosingProxy::start(running.campaign_addr, 0).await;
    let (ok, _, stderr) = muster(&proxy, &["schedule", "rm", "nightly"]).await;
    assert!(!ok);
    assert!(stderr.contains("no schedule with that name"), "{stderr}");
}

/// A refused campaign names each broken rule where its author wrote it:
/// the campaign file's key, or the flag with its value. Nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_names_the_files_keys_and_the_flags_the_author_wrote() {
    let sb = Sandbox::start().await;
    let fleet = sb.seed(&fleets::uniform(2, 0, 0.5)).await;
    let data = tempfile::tempdir().unwrap();
    let running = controller(&sb, &fleet, data.path()).await;
    let proxy = AnswerLosingProxy::start(running.campaign_addr, 0).await;
    let account = &fleet.account("only").unwrap().id;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("patch.yaml");
    std::fs::write(
        &file,
        format!(
            "name: patch\ntargets:\n  accounts: [{account}, 12345]\ncommand:\n  linux: uptime\nrate:\n  batch_size: 80\n\
             stages:\n  - name: canary\n    share: 10%\n    bake: 30m\n  - name: rest\n    bake: 10m\n"
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (ok, stdout, stderr) = muster(
        &proxy,
        &[
            "submit",
            "-f",
            file,
            "--region",
            EAST,
            "--region",
            "mars-1",
            "--keep-bytes",
            "2000000",
        ],
    )
    .await;
    assert!(!ok, "{stdout}\n{stderr}");
    let lines: Vec<&str> = stderr.lines().skip_while(|l| !l.starts_with("muster: ")).collect();
    assert_eq!(lines.len(), 6, "{stderr}");
    assert_eq!(lines[0], "muster: refused, 5 problems:", "{stderr}");
    let said = |start: &str| lines.iter().any(|l| l.trim_start().starts_with(start));
    for start in [
        &format!("targets.accounts[1] in {file}: '12345' is not a 12-digit account id") as &str,
        "--region mars-1: 'mars-1' is not an AWS region",
        &format!("stages[1].bake in {file}: 600 on the last stage"),
        &format!("rate.batch_size in {file}: "),
        "--keep-bytes: ",
    ] {
        assert!(said(start), "a line starts with {start:?}: {stderr}");
    }
    assert!(
        !stderr.contains("account_ids") && !stderr.contains("bake_seconds"),
        "no API names: {stderr}"
    );

    // A schedule's own fields are its flags; its campaign's, as above.
    let (ok, _, stderr) = muster(
        &proxy,
        &[
            "schedule", "create", "nightly", "--cron", "at two", "-f", file, "--region", EAST,
        ],
    )
    .await;
    assert!(!ok);
    assert!(
        stderr.contains("\n  --cron: 'at two' is not a cron expression"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("\n  targets.accounts[1] in {file}: ")),
        "{stderr}"
    );

    let campaigns = stored_campaigns(&running).await;
    assert!(campaigns.is_empty(), "nothing stored: {campaigns:?}");
    let stored = stored_schedules(&running).await;
    assert!(stored.is_empty(), "{stored:?}");
}
