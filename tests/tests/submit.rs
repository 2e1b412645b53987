//! `muster submit` when the controller's answer is lost on the way back: the
//! CLI asks again with the same client token and one campaign exists.

use muster_proto::v1::ListCampaignsRequest;
use muster_proto::v1::campaign_service_client::CampaignServiceClient;
use muster_sim::testkit::Sandbox;
use muster_tests::fleets;
use muster_tests::procs::bin_dir;
use muster_tests::proxy::AnswerLosingProxy;
use muster_tests::stack::{Options, controller_settings};
use tokio_util::sync::CancellationToken;

const EAST: &str = "us-east-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_whose_answer_was_lost_is_asked_again_and_makes_one_campaign() {
    let sb = Sandbox::start().await;
    let fleet = sb.seed(&fleets::uniform(4, 0, 0.5)).await;
    let data = tempfile::tempdir().unwrap();
    let store = muster_controller::store::Store::open(data.path()).unwrap();
    let controller = muster_controller::Controller::new(
        store,
        controller_settings(&fleet, &Options::default()),
        &sb.hub_config(EAST),
    );
    let listeners = muster_controller::Listeners {
        campaign: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        worker: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        metrics: None,
    };
    let running = muster_controller::start(
        controller,
        listeners,
        muster_controller::Security::insecure(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    // The controller stores the campaign; its answer never arrives.
    let proxy = AnswerLosingProxy::start(running.campaign_addr, 1).await;

    let account = &fleet.account("only").unwrap().id;
    let out = tokio::process::Command::new(bin_dir().join("muster"))
        .env_clear()
        .args(["--controller", &format!("http://{}", proxy.addr), "--color", "never"])
        .args(["submit", "--account", account, "--region", EAST, "--linux", "echo once"])
        .output()
        .await
        .expect("the CLI runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(proxy.answers_lost(), 1, "the first answer was lost");
    assert!(stderr.contains("asking again"), "the CLI says it asks again: {stderr}");
    assert!(stderr.contains("client token"), "and prints its client token: {stderr}");

    let mut client = CampaignServiceClient::connect(format!("http://{}", running.campaign_addr))
        .await
        .unwrap();
    let campaigns = client
        .list_campaigns(ListCampaignsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .campaigns;
    assert_eq!(campaigns.len(), 1, "one campaign, not two");
    assert_eq!(stdout.trim(), campaigns[0].id, "the CLI printed it");
}
