//! WatchCampaign: a snapshot, then progress; slow watchers stall nothing.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_get_a_snapshot_then_progress_and_a_slow_one_stalls_nothing() {
    let stack = Stack::start(&fleets::uniform(30, 0, 0.5), Options::default()).await;
    let mut client = stack.client.clone();
    let mut spec = script_spec(&[stack.account("only")], &[EAST], &["true"], &[]);
    spec.rate = Some(RateControl {
        max_concurrency: "10".into(),
        batch_size: 5,
        ..Default::default()
    });
    let id = submit(&mut client, spec).await;
    // A subscriber that never reads until the end: the campaign must finish anyway.
    let slow = client
        .watch_campaign(WatchCampaignRequest {
            campaign_id: id.clone(),
            include_targets: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut watchers = Vec::new();
    for include_targets in [true, false, false] {
        let mut stream = client
            .watch_campaign(WatchCampaignRequest {
                campaign_id: id.clone(),
                include_targets,
            })
            .await
            .unwrap()
            .into_inner();
        watchers.push(tokio::spawn(async move {
            let mut events = Vec::new();
            while let Some(event) = stream.message().await.unwrap() {
                events.push(event.event.unwrap());
            }
            events
        }));
    }
    let campaign = wait_done(&mut client, &id, Duration::from_secs(120)).await;
    assert_eq!(campaign.state, CampaignState::Succeeded as i32);
    for (i, watcher) in watchers.into_iter().enumerate() {
        let events = tokio::time::timeout(Duration::from_secs(10), watcher)
            .await
            .expect("the stream ends")
            .unwrap();
        assert!(
            matches!(events.first(), Some(watch_campaign_response::Event::Snapshot(_))),
            "a snapshot comes first"
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, watch_campaign_response::Event::Progress(_))),
            "progress is streamed"
        );
        let targets = events
            .iter()
            .filter(|e| matches!(e, watch_campaign_response::Event::Target(_)))
            .count();
        assert_eq!(
            targets,
            if i == 0 { 30 } else { 0 },
            "target events only when asked for"
        );
        match events.last() {
            Some(watch_campaign_response::Event::Snapshot(last)) => {
                assert_eq!(last.state, CampaignState::Succeeded as i32);
                assert_eq!(last.counters, campaign.counters);
            }
            other => panic!("the stream ends with the final snapshot, not {other:?}"),
        }
    }
    drop(slow);
}
