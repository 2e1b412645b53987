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

/// A watcher that hangs up stops costing the controller at once: it is no
/// longer counted as watching, and results stop being read back for target
/// events nobody wants, even while the campaign runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_hangs_up_is_forgotten_while_the_campaign_runs() {
    let stack = Stack::start(&fleets::uniform(4, 0, 60.0), Options::default()).await;
    let mut client = stack.client.clone();
    let spec = script_spec(&[stack.account("only")], &[EAST], &["sleep 60"], &[]);
    let id = submit(&mut client, spec).await;
    // Every target running: no progress moves for a minute, so nothing
    // sent to a watcher would reveal that it hung up.
    wait_for(&mut client, &id, Duration::from_secs(60), "every target running", |c| {
        c.counters.as_ref().is_some_and(|n| n.running == 4)
    })
    .await;
    let watchers = &stack.controller.controller.watchers;
    let watch = |include_targets| {
        let mut client = client.clone();
        let id = id.clone();
        async move {
            let mut stream = client
                .watch_campaign(WatchCampaignRequest {
                    campaign_id: id,
                    include_targets,
                })
                .await
                .unwrap()
                .into_inner();
            stream.message().await.unwrap().expect("a snapshot");
            stream
        }
    };
    let progress_only = watch(false).await;
    assert_eq!(watchers.watched_campaigns(), vec![id.clone()]);
    assert!(!watchers.wants_targets(&id), "nobody asked for target events");
    let with_targets = watch(true).await;
    assert!(watchers.wants_targets(&id));
    drop(with_targets);
    until("target events are still built after their only watcher hung up", || {
        !watchers.wants_targets(&id)
    })
    .await;
    drop(progress_only);
    until("a progress-only watcher that hung up is still counted", || {
        watchers.watched_campaigns().is_empty()
    })
    .await;
    let campaign = get(&mut client, &id).await;
    assert_eq!(campaign.state(), CampaignState::Running, "the campaign runs on");
}

/// Waits up to 10 s for `check`; fails saying `what` if it never holds.
async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
