//! Run Command's EventBridge events reach the hub's queue as the target
//! accounts' rule (deploy/cloudformation/target-events.yaml) routes them:
//! one per command when it ends, in the documented shape, with delivery
//! faults on request.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

/// Receives events from the hub's queue until `count` arrived or `wait`
/// passed; deletes them.
async fn receive(world: &World, count: usize, wait: Duration) -> Vec<Value> {
    let sqs = aws_sdk_sqs::Client::new(&world.sb.hub_config(REGION));
    let deadline = Instant::now() + wait;
    let mut events = Vec::new();
    while events.len() < count && Instant::now() < deadline {
        let answer = sqs
            .receive_message()
            .queue_url(&world.fleet.command_events_queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("ReceiveMessage");
        for message in answer.messages.unwrap_or_default() {
            events.push(serde_json::from_str(message.body().unwrap_or_default()).expect("an event is JSON"));
            sqs.delete_message()
                .queue_url(&world.fleet.command_events_queue_url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("DeleteMessage");
        }
    }
    events
}

#[tokio::test]
async fn a_command_that_ends_sends_one_event_with_its_final_status() {
    let world = World::new().await;
    let alpha = world.account("alpha");
    let ssm = aws_sdk_ssm::Client::new(&world.exec("alpha").await);
    let web = world.ids("alpha", "web");
    let ok = send(&ssm, &web).await;
    let failing = send(&ssm, &world.ids("alpha", "fail")).await;
    wait_terminal(&ssm, &ok, web.len()).await;
    wait_terminal(&ssm, &failing, 1).await;

    let events = receive(&world, 2, Duration::from_secs(10)).await;
    // Nothing more comes: no intermediate statuses, no per-instance events.
    assert!(receive(&world, 1, Duration::from_secs(2)).await.is_empty());
    assert_eq!(events.len(), 2, "{events:#?}");
    let of = |id: &str| {
        events
            .iter()
            .find(|e| e["detail"]["command-id"] == id)
            .expect("an event per command")
    };
    let event = of(&ok);
    assert_eq!(event["source"], "aws.ssm");
    assert_eq!(event["detail-type"], "EC2 Command Status-change Notification");
    assert_eq!(event["account"], alpha.as_str());
    assert_eq!(event["region"], REGION);
    assert_eq!(event["detail"]["status"], "Success");
    assert_eq!(event["detail"]["document-name"], "AWS-RunShellScript");
    let mut resources: Vec<String> = event["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_owned())
        .collect();
    resources.sort();
    let mut expected: Vec<String> = web
        .iter()
        .map(|i| format!("arn:aws:ec2:{REGION}:{alpha}:instance/{i}"))
        .collect();
    expected.sort();
    assert_eq!(resources, expected);
    assert_eq!(of(&failing)["detail"]["status"], "Failed");
}

#[tokio::test]
async fn a_cancelled_command_sends_its_cancelled_status() {
    let world = World::new().await;
    let ssm = aws_sdk_ssm::Client::new(&world.exec("alpha").await);
    let slow = send(&ssm, &world.ids("alpha", "slow")).await;
    ssm.cancel_command()
        .command_id(&slow)
        .send()
        .await
        .expect("CancelCommand");
    let events = receive(&world, 1, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["detail"]["command-id"], slow.as_str());
    assert_eq!(events[0]["detail"]["status"], "Cancelled");
}

#[tokio::test]
async fn dropped_events_never_arrive_and_duplicated_ones_arrive_twice() {
    let world = World::new().await;
    let ssm = aws_sdk_ssm::Client::new(&world.exec("beta").await);
    let beta = world.fleet.account("beta").expect("beta").instances[REGION]
        .iter()
        .map(|i| i.id.clone())
        .collect::<Vec<_>>();
    let patch = |drop: f64, duplicate: f64| {
        world.sb.tune(|t| {
            let events = t.events.as_mut().expect("seeding routes events");
            events.drop_percent = drop;
            events.duplicate_percent = duplicate;
        })
    };

    patch(100.0, 0.0);
    let lost = send(&ssm, &beta).await;
    wait_terminal(&ssm, &lost, beta.len()).await;
    assert!(receive(&world, 1, Duration::from_secs(2)).await.is_empty());

    patch(0.0, 100.0);
    let twice = send(&ssm, &beta).await;
    wait_terminal(&ssm, &twice, beta.len()).await;
    let events = receive(&world, 2, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(events.iter().all(|e| e["detail"]["command-id"] == twice.as_str()));
    // The same event (one id) delivered twice, as EventBridge may.
    assert_eq!(events[0]["id"], events[1]["id"]);
}
