//! Run Command's status-change events, read from the hub's command event
//! queue, so that a worker learns a batch ended without polling for it.
//!
//! Every controller reads the queue (SQS hands each message to one of
//! them) and records each command's final status in the store, then wakes
//! the AwaitCommands calls waiting here; on PostgreSQL the calls waiting on
//! the other controllers are woken at the commit too (see
//! [`crate::store::wakes`]), or see it at their next look in the store. A message is deleted
//! after its ending is recorded: a controller that dies in between sees it
//! again, which records nothing twice. Events are a shortcut and never the
//! only way: one lost, late or never sent (an account without
//! target-events.yaml) costs the worker a poll, not a result.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::Controller;
use crate::store::command_endings::{self, Ending};
use crate::store::records::now_ms;

/// How long one receive waits for an event (a long poll).
const LONG_POLL_SECONDS: i32 = 20;
/// How long to wait before the next receive after one that brought fewer
/// than ten messages. Commands of a big scope end a few a second (as fast
/// as SendCommand's quota sent them); without the wait each event came
/// alone, a receive and a delete apiece (the huge shape: 200 calls for 100
/// events). With it they come a few to a call, each at most this much
/// later. (A second cut the calls further but cost the uniform shape half
/// a second of makespan: its 200 events come within about a second.)
const LINGER: Duration = Duration::from_millis(300);
/// How long to wait after the queue could not be read.
const AFTER_ERROR: Duration = Duration::from_secs(5);
/// How often endings older than an hour are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(300);
/// The detail-type of a command's status change.
const COMMAND_STATUS_CHANGE: &str = "EC2 Command Status-change Notification";
/// Run Command's final command statuses.
const FINAL: [&str; 4] = ["Success", "Failed", "TimedOut", "Cancelled"];

/// What the waiting AwaitCommands calls listen to besides the store's
/// wake-ups ([`crate::store::Store::wakes`], told by the writes they wait
/// for: endings recorded, a cancel, a window closing with its commands to
/// cancel, on any controller of the store).
#[derive(Default)]
pub struct Endings {
    /// Cancelled when the controller stops, so long waits end at once.
    pub stopping: CancellationToken,
}

/// The ending an event tells of, if it is a command's final status.
pub fn ending_of(body: &str) -> Result<Option<Ending>, String> {
    let event: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    if event["source"] != "aws.ssm" || event["detail-type"] != COMMAND_STATUS_CHANGE {
        return Ok(None);
    }
    let text = |v: &Value, what: &str| {
        v.as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("{what} is missing"))
    };
    let status = text(&event["detail"]["status"], "detail.status")?;
    if !FINAL.contains(&status.as_str()) {
        return Ok(None);
    }
    Ok(Some(Ending {
        command_id: text(&event["detail"]["command-id"], "detail.command-id")?,
        status,
        account_id: text(&event["account"], "account")?,
        region: text(&event["region"], "region")?,
    }))
}

/// Reads `url` until `shutdown`.
pub async fn run(ctl: Arc<Controller>, url: String, shutdown: CancellationToken) {
    let mut pruned = tokio::time::Instant::now();
    loop {
        let round = tokio::select! {
            () = shutdown.cancelled() => return,
            round = receive(&ctl, &url) => round,
        };
        let pause = match round {
            Ok(received) if received > 0 && received < 10 => LINGER,
            Ok(_) => Duration::ZERO,
            Err(error) => {
                tracing::warn!(error, queue = %url, "cannot read the command event queue; retrying");
                AFTER_ERROR
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
        if pruned.elapsed() >= PRUNE_EVERY {
            pruned = tokio::time::Instant::now();
            let cutoff = now_ms() - command_endings::KEPT_MS;
            if let Err(error) = ctl.store.write(move |txn| command_endings::prune(txn, cutoff)).await {
                tracing::warn!(%error, "cannot forget old command endings");
            }
        }
    }
}

/// One receive: records the endings it brought, then deletes the messages;
/// how many it brought.
async fn receive(ctl: &Controller, url: &str) -> Result<usize, String> {
    let received = ctl
        .sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(LONG_POLL_SECONDS)
        .visibility_timeout(30)
        .send()
        .await
        .map_err(|e| muster_common::retry::describe(&e))?;
    let messages = received.messages();
    if messages.is_empty() {
        return Ok(0);
    }
    let mut endings = Vec::new();
    for message in messages {
        match ending_of(message.body().unwrap_or_default()) {
            Ok(Some(ending)) => endings.push(ending),
            Ok(None) => ctl.metrics.command_event("ignored"),
            Err(error) => {
                ctl.metrics.command_event("unreadable");
                tracing::warn!(
                    error,
                    message_id = message.message_id().unwrap_or_default(),
                    "unreadable command event; deleting it"
                );
            }
        }
    }
    if !endings.is_empty() {
        let count = endings.len();
        let now = now_ms();
        let new = ctl
            .store
            .write(move |txn| command_endings::record(txn, &endings, now))
            .await
            .map_err(|e| e.to_string())?;
        ctl.metrics.command_events("recorded", new);
        ctl.metrics.command_events("repeated", count - new);
        tracing::debug!(new, repeated = count - new, "command endings recorded");
    }
    crate::dead_letters::delete(ctl, url, messages).await?;
    Ok(messages.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(detail_type: &str, status: &str) -> String {
        serde_json::json!({
            "version": "0",
            "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": detail_type,
            "source": "aws.ssm",
            "account": "111111111111",
            "time": "2026-12-03T10:00:00Z",
            "region": "eu-west-1",
            "resources": ["arn:aws:ec2:eu-west-1:111111111111:instance/i-0123456789abcdef0"],
            "detail": {
                "command-id": "c0ffee00-0000-4000-8000-000000000001",
                "document-name": "AWS-RunShellScript",
                "status": status,
            }
        })
        .to_string()
    }

    #[test]
    fn a_final_command_status_is_an_ending() {
        let ending = ending_of(&event(COMMAND_STATUS_CHANGE, "TimedOut")).unwrap().unwrap();
        assert_eq!(
            ending,
            Ending {
                command_id: "c0ffee00-0000-4000-8000-000000000001".into(),
                status: "TimedOut".into(),
                account_id: "111111111111".into(),
                region: "eu-west-1".into(),
            }
        );
    }

    #[test]
    fn other_statuses_and_events_are_not_endings() {
        assert_eq!(ending_of(&event(COMMAND_STATUS_CHANGE, "InProgress")).unwrap(), None);
        assert_eq!(
            ending_of(&event("EC2 Command Invocation Status-change Notification", "Success")).unwrap(),
            None
        );
    }

    #[test]
    fn a_broken_event_names_what_is_wrong() {
        assert!(ending_of("{").unwrap_err().starts_with("not JSON"));
        let mut missing: Value = serde_json::from_str(&event(COMMAND_STATUS_CHANGE, "Success")).unwrap();
        missing["detail"].as_object_mut().unwrap().remove("command-id");
        assert_eq!(
            ending_of(&missing.to_string()).unwrap_err(),
            "detail.command-id is missing"
        );
    }
}
