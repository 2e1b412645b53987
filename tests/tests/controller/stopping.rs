//! What stops a rollout: max_errors and cancel.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_errors_stops_the_rollout_and_terminates_the_rest() {
    let stack = Stack::start(&fleets::uniform(40, 12, 0.3), Options::default()).await;
    let mut client = stack.client.clone();
    let mut spec = script_spec(&[stack.account("only")], &[EAST], &["patch"], &[]);
    spec.rate = Some(RateControl {
        max_concurrency: "2".into(),
        max_errors: "3".into(),
        batch_size: 1,
        api_calls_per_second: 0.0,
    });
    let id = submit(&mut client, spec).await;
    let campaign = wait_done(&mut client, &id, Duration::from_secs(120)).await;
    assert_eq!(campaign.state, CampaignState::Failed as i32);
    assert!(
        campaign.state_reason.starts_with("error threshold exceeded"),
        "{}",
        campaign.state_reason
    );
    let c = campaign.counters.unwrap();
    assert!(c.failed >= 4, "the 4th error stopped it");
    assert!(
        c.failed <= 5,
        "in flight when it stopped: at most concurrency - 1 more ({} failed)",
        c.failed
    );
    assert!(c.terminated > 0);
    assert_eq!(c.success + c.failed + c.terminated, 40);
    let all = targets(&mut client, &id, false).await;
    assert_counters_add_up(&campaign, &all);
    let sent = stack.sends_per_instance();
    for target in &all {
        if target.status == TargetStatus::Terminated as i32 {
            assert!(
                !sent.contains_key(&target.instance_id),
                "a terminated target was never sent"
            );
            assert!(target.reason.contains("max_errors (3)"), "{}", target.reason);
        } else {
            assert_eq!(sent.get(&target.instance_id), Some(&1));
        }
    }
    assert_eq!(campaign.error_threshold, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_releasing_and_cancels_commands_in_flight() {
    let stack = Stack::start(&fleets::uniform(20, 0, 60.0), Options::default()).await;
    let mut client = stack.client.clone();
    let mut spec = script_spec(&[stack.account("only")], &[EAST], &["sleep 60"], &[]);
    spec.rate = Some(RateControl {
        max_concurrency: "10".into(),
        batch_size: 5,
        ..Default::default()
    });
    let id = submit(&mut client, spec).await;
    wait_for(&mut client, &id, Duration::from_secs(60), "10 running", |c| {
        c.counters.is_some_and(|c| c.running == 10)
    })
    .await;
    let answer = client
        .cancel_campaign(CancelCampaignRequest {
            campaign_id: id.clone(),
            reason: "change freeze".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.campaign.unwrap().state, CampaignState::Cancelling as i32);
    let campaign = wait_done(&mut client, &id, Duration::from_secs(60)).await;
    assert_eq!(campaign.state, CampaignState::Cancelled as i32);
    assert!(
        campaign.state_reason.contains("change freeze"),
        "{}",
        campaign.state_reason
    );
    let c = campaign.counters.unwrap();
    assert_eq!((c.cancelled, c.success, c.total), (20, 0, 20));
    let all = targets(&mut client, &id, false).await;
    assert_counters_add_up(&campaign, &all);
    assert_eq!(
        stack.sends_per_instance().len(),
        10,
        "nothing released after the cancel"
    );
    assert!(
        stack.sb.count("ssm", "CancelCommand", "ok") >= 2,
        "both batches in flight were cancelled"
    );
    assert_eq!(
        all.iter()
            .filter(|t| t.reason == "cancelled before it was released")
            .count(),
        10
    );
}
