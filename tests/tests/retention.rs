//! Retention against the running controller: a campaign that ended before
//! the horizon leaves the store with its targets, output and events, once
//! its results are in the bucket; a running one stays whole.

use std::time::Duration;

use muster_proto::v1::{CampaignState, ListTargetsRequest, RateControl};
use muster_tests::client::{script_spec, submit, targets, wait_done, wait_for};
use muster_tests::fleets;
use muster_tests::stack::{Options, Stack};
use tonic::Code;

const EAST: &str = "us-east-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_past_the_horizon_leaves_the_store_and_a_running_one_stays() {
    let stack = Stack::start(
        &fleets::uniform(4, 0, 1.0),
        Options {
            retention: Some(Duration::from_secs(30 * 86_400)),
            ..Default::default()
        },
    )
    .await;
    let mut client = stack.client.clone();
    let account = stack.account("only");
    let old = submit(
        &mut client,
        script_spec(std::slice::from_ref(&account), &[EAST], &["true"], &[]),
    )
    .await;
    let campaign = wait_done(&mut client, &old, Duration::from_secs(120)).await;
    assert_eq!(campaign.state(), CampaignState::Succeeded, "{}", campaign.state_reason);
    // A second campaign, still at work (or just ended) when the pass runs.
    let mut spec = script_spec(&[account], &[EAST], &["true"], &[]);
    spec.rate = Some(RateControl {
        max_concurrency: "1".into(),
        ..Default::default()
    });
    let running = submit(&mut client, spec).await;
    let old_targets = targets(&mut client, &old, true).await;
    assert_eq!(old_targets.len(), 4);
    // Its results are archived first.
    let exported = wait_for(&mut client, &old, Duration::from_secs(60), "the results export", |c| {
        c.export.as_ref().is_some_and(|e| !e.url.is_empty())
    })
    .await;
    let url = exported.export.unwrap().url;

    // Ended 31 days ago.
    let id = old.clone();
    stack
        .store()
        .write(move |txn| {
            txn.execute(
                "UPDATE campaigns SET finished_ms = finished_ms - ?2 WHERE id = ?1",
                muster_controller::params![id, 31 * 86_400_000i64],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let pruned = muster_controller::retention::pass(&stack.controller.controller).await;
    assert_eq!(pruned, 1, "one campaign was past the horizon");

    let gone = client
        .get_campaign(muster_proto::v1::GetCampaignRequest {
            campaign_id: old.clone(),
            ..Default::default()
        })
        .await
        .expect_err("the pruned campaign is gone");
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    let listed = client
        .list_targets(ListTargetsRequest {
            campaign_id: old.clone(),
            ..Default::default()
        })
        .await;
    assert!(
        listed.is_err() || listed.unwrap().into_inner().targets.is_empty(),
        "its targets and output are gone"
    );
    let id = old.clone();
    let left: i64 = stack
        .store()
        .read(move |conn| {
            conn.query_row(
                "SELECT (SELECT COUNT(*) FROM tasks WHERE campaign_id = ?1)
                      + (SELECT COUNT(*) FROM targets WHERE campaign_id = ?1)
                      + (SELECT COUNT(*) FROM events WHERE campaign_id = ?1)
                      + (SELECT COUNT(*) FROM scopes WHERE campaign_id = ?1)
                      + (SELECT COUNT(*) FROM counters WHERE campaign_id = ?1)",
                [&id],
                |r| r.get(0),
            )
        })
        .await
        .unwrap();
    assert_eq!(left, 0, "no row of it is left");

    let kept = wait_done(&mut client, &running, Duration::from_secs(120)).await;
    assert_eq!(
        kept.state(),
        CampaignState::Succeeded,
        "the other campaign ran on to its end"
    );
    assert_eq!(targets(&mut client, &running, false).await.len(), 4);
    assert!(url.starts_with("s3://"), "the results stay in the bucket: {url}");

    let (_, metrics) = muster_tests::otlp::http_get(stack.controller.metrics_addr.unwrap().port(), "/metrics").await;
    assert!(
        metrics.contains("muster_controller_campaigns_pruned_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("muster_controller_store_rows{table=\"campaigns\"} 1"),
        "only the other campaign is counted: {metrics}"
    );
}
