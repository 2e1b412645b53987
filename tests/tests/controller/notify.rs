//! Notifications: every campaign state change reaches the webhooks; one that
//! keeps failing leaves a dead letter and holds nothing up.

use std::sync::{Arc, Mutex};

use super::*;
use muster_controller::notify::{Notifications, Webhook};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A webhook receiver on 127.0.0.1 answering every POST with `status`, and
/// keeping the JSON bodies.
async fn receiver(status: u16) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).to_string();
                    let Some(end) = text.find("\r\n\r\n") else { continue };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if data.len() < end + 4 + length {
                        continue;
                    }
                    let body = &data[end + 4..end + 4 + length];
                    if status == 200 {
                        kept.lock().unwrap().push(serde_json::from_slice(body).unwrap());
                    }
                    let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    let _ = socket.write_all(answer.as_bytes()).await;
                    return;
                }
            });
        }
    });
    (url, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_change_reaches_the_webhook_and_a_failing_one_leaves_a_dead_letter() {
    let (url, bodies) = receiver(200).await;
    let (broken, _) = receiver(500).await;
    let stack = Stack::start(
        &fleets::uniform(3, 0, 0.3),
        Options {
            notifications: Notifications {
                event_bus: None,
                sns_topic: None,
                webhooks: vec![
                    Webhook {
                        name: "chat".into(),
                        url,
                        states: vec![],
                    },
                    Webhook {
                        name: "broken".into(),
                        url: broken,
                        states: vec!["succeeded".into()],
                    },
                ],
            },
            ..Default::default()
        },
    )
    .await;
    let mut client = stack.client.clone();
    let account = stack.fleet.account("only").unwrap().id.clone();
    let id = submit(&mut client, script_spec(&[account], &["us-east-1"], &["echo hi"], &[])).await;
    let done = wait_done(&mut client, &id, Duration::from_secs(60)).await;
    assert_eq!(done.state, CampaignState::Succeeded as i32);

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let store = stack.controller.controller.store.clone();
    let (posted, dead) = loop {
        let posted = bodies.lock().unwrap().clone();
        let dead = store
            .read(|conn| muster_controller::notify::failures(conn))
            .await
            .unwrap();
        let ended = posted.iter().any(|b| b["muster"]["state"] == "succeeded");
        if ended && !dead.is_empty() {
            break (posted, dead);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "notifications: {posted:#?}, dead letters: {dead:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let states: Vec<&str> = posted.iter().map(|b| b["muster"]["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["running", "succeeded"], "each change once, in order");
    let ids: Vec<i64> = posted
        .iter()
        .map(|b| b["muster"]["event_id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let last = &posted[1]["muster"];
    assert_eq!(last["campaign_id"], id.as_str());
    assert_eq!(
        (last["counters"]["total"].as_u64(), last["counters"]["success"].as_u64()),
        (Some(3), Some(3))
    );
    assert!(
        posted[1]["text"].as_str().unwrap().contains("succeeded"),
        "Slack reads `text`"
    );
    // The broken webhook wanted only the end; it failed every try.
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].0.as_str(), dead[0].2.as_str()), ("broken", id.as_str()));
    assert!(dead[0].3.contains("500"), "{}", dead[0].3);
}

/// A queue of the hub: its URL and ARN.
async fn queue(sqs: &aws_sdk_sqs::Client, name: &str) -> (String, String) {
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    (url, arn)
}

/// The JSON messages of `queue`, read until one says the campaign
/// succeeded (directly, or as an event's detail).
async fn until_succeeded(sqs: &aws_sdk_sqs::Client, queue: &str) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut messages: Vec<serde_json::Value> = Vec::new();
    let succeeded = |m: &serde_json::Value| m["state"] == "succeeded" || m["detail"]["state"] == "succeeded";
    while !messages.iter().any(succeeded) {
        assert!(std::time::Instant::now() < deadline, "messages so far: {messages:#?}");
        let received = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for message in received.messages() {
            messages.push(serde_json::from_str(message.body().unwrap()).unwrap());
        }
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_change_reaches_a_queue_subscribed_to_the_hub_bus() {
    let stack = Stack::start(
        &fleets::uniform(2, 0, 0.3),
        Options {
            notifications: Notifications {
                event_bus: Some("default".into()),
                sns_topic: None,
                webhooks: vec![],
            },
            ..Default::default()
        },
    )
    .await;
    // As an operator would route them: a rule on muster's events to a queue.
    let hub = stack.sb.hub_config("us-east-1");
    let sqs = aws_sdk_sqs::Client::new(&hub);
    let queue = routed(&hub, "campaign-changes", "Campaign State Change").await;

    let mut client = stack.client.clone();
    let account = stack.fleet.account("only").unwrap().id.clone();
    let id = submit(&mut client, script_spec(&[account], &["us-east-1"], &["echo hi"], &[])).await;
    wait_done(&mut client, &id, Duration::from_secs(60)).await;

    let events = until_succeeded(&sqs, &queue).await;
    for event in &events {
        assert_eq!(
            (event["source"].as_str(), event["detail-type"].as_str()),
            (Some("muster"), Some("Campaign State Change"))
        );
    }
    let details: Vec<serde_json::Value> = events.iter().map(|e| e["detail"].clone()).collect();
    let states: Vec<&str> = details.iter().map(|d| d["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["running", "succeeded"]);
    assert!(
        details
            .iter()
            .all(|d| d["campaign_id"] == id.as_str() && d["schema"] == "muster.notification.v1")
    );
    assert_eq!(details[1]["counters"]["success"].as_u64(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_change_reaches_a_queue_subscribed_to_the_sns_topic() {
    let topic_arn = format!(
        "arn:aws:sns:us-east-1:{}:muster-campaigns",
        muster_sim::testkit::HUB_ACCOUNT
    );
    let stack = Stack::start(
        &fleets::uniform(2, 0, 0.3),
        Options {
            notifications: Notifications {
                event_bus: None,
                sns_topic: Some(topic_arn.clone()),
                webhooks: vec![],
            },
            ..Default::default()
        },
    )
    .await;
    // The topic (hub.yaml makes it) with a queue subscribed, raw.
    let hub = stack.sb.hub_config("us-east-1");
    let sns = aws_sdk_sns::Client::new(&hub);
    let created = sns
        .create_topic()
        .name("muster-campaigns")
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    assert_eq!(created, topic_arn);
    let sqs = aws_sdk_sqs::Client::new(&hub);
    let (queue, queue_arn) = queue(&sqs, "campaign-messages").await;
    sns.subscribe()
        .topic_arn(&topic_arn)
        .protocol("sqs")
        .endpoint(queue_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();

    let mut client = stack.client.clone();
    let account = stack.fleet.account("only").unwrap().id.clone();
    let id = submit(&mut client, script_spec(&[account], &["us-east-1"], &["echo hi"], &[])).await;
    wait_done(&mut client, &id, Duration::from_secs(60)).await;

    let messages = until_succeeded(&sqs, &queue).await;
    let states: Vec<&str> = messages.iter().map(|m| m["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["running", "succeeded"]);
    assert!(
        messages
            .iter()
            .all(|m| m["campaign_id"] == id.as_str() && m["schema"] == "muster.notification.v1")
    );
    assert_eq!(messages[1]["counters"]["success"].as_u64(), Some(2));
}

/// A rule on the hub's default bus sending muster's events of `detail_type`
/// to a new queue; the queue's URL.
async fn routed(hub: &aws_config::SdkConfig, name: &str, detail_type: &str) -> String {
    let sqs = aws_sdk_sqs::Client::new(hub);
    let (queue, queue_arn) = queue(&sqs, name).await;
    let events = aws_sdk_eventbridge::Client::new(hub);
    events
        .put_rule()
        .name(name)
        .event_pattern(format!(r#"{{"source": ["muster"], "detail-type": ["{detail_type}"]}}"#))
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule(name)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(queue_arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    queue
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_run_time_that_starts_nothing_is_notified_once() {
    use muster_proto::v1::{DeleteScheduleRequest, GetScheduleRequest, PutScheduleRequest, RunOutcome, ScheduleSpec};

    let (url, bodies) = receiver(200).await;
    let stack = Stack::start(
        &fleets::uniform(4, 0, 3.0),
        Options {
            notifications: Notifications {
                event_bus: Some("default".into()),
                sns_topic: None,
                webhooks: vec![Webhook {
                    name: "on-call".into(),
                    url,
                    states: vec!["schedule_skipped".into()],
                }],
            },
            ..Default::default()
        },
    )
    .await;
    let hub = stack.sb.hub_config("us-east-1");
    let queue = routed(&hub, "schedule-runs", "Schedule Run Not Started").await;

    // Every 2 s; a campaign of four 3 s commands one at a time outlasts
    // several run times, which are skipped.
    let account = stack.fleet.account("only").unwrap().id.clone();
    let mut campaign = script_spec(&[account], &["us-east-1"], &["echo patched"], &[]);
    let rate = campaign.rate.as_mut().unwrap();
    rate.max_concurrency = "1".into();
    rate.batch_size = 1;
    let mut schedules = stack.schedules();
    schedules
        .put_schedule(PutScheduleRequest {
            spec: Some(ScheduleSpec {
                name: "busy".into(),
                campaign: Some(campaign),
                cron: "*/2 * * * * *".into(),
                ..Default::default()
            }),
            expected_version: 0,
        })
        .await
        .expect("PutSchedule");

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let posted = loop {
        let posted = bodies.lock().unwrap().clone();
        if posted.len() >= 2 {
            break posted;
        }
        assert!(std::time::Instant::now() < deadline, "posted: {posted:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let runs = schedules
        .get_schedule(GetScheduleRequest {
            name: "busy".into(),
            runs: 50,
            ..Default::default()
        })
        .await
        .expect("GetSchedule")
        .into_inner()
        .runs;
    schedules
        .delete_schedule(DeleteScheduleRequest {
            name: "busy".into(),
            allow_missing: false,
        })
        .await
        .expect("DeleteSchedule");
    let started: Vec<&str> = runs
        .iter()
        .filter(|r| r.outcome == RunOutcome::Started as i32)
        .map(|r| r.campaign_id.as_str())
        .collect();
    assert_eq!(started.len(), 1, "{runs:?}");

    // The webhook wanted skipped run times only: no campaign changes.
    let fields: Vec<&serde_json::Value> = posted.iter().map(|b| &b["muster"]).collect();
    assert!(
        fields
            .iter()
            .all(|m| m["kind"] == "schedule_run" && m["state"] == "schedule_skipped" && m["schedule"] == "busy"),
        "{posted:#?}"
    );
    // Each run time once, naming the campaign that kept it from starting.
    let times: BTreeSet<&str> = fields.iter().map(|m| m["scheduled_at"].as_str().unwrap()).collect();
    assert_eq!(times.len(), fields.len(), "{posted:#?}");
    assert!(fields.iter().all(|m| m["campaign_id"] == started[0]), "{runs:?}");
    assert!(
        posted[0]["text"].as_str().unwrap().contains("was skipped"),
        "{posted:#?}"
    );

    // The bus has them as their own detail-type, for rules to route.
    let sqs = aws_sdk_sqs::Client::new(&hub);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let event = loop {
        let received = sqs
            .receive_message()
            .queue_url(&queue)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        if let Some(message) = received.messages().first() {
            break serde_json::from_str::<serde_json::Value>(message.body().unwrap()).unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "no schedule event on the bus");
    };
    assert_eq!(event["detail-type"], "Schedule Run Not Started");
    assert_eq!(
        (event["detail"]["schedule"].as_str(), event["detail"]["state"].as_str()),
        (Some("busy"), Some("schedule_skipped"))
    );
}
