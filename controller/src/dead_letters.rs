//! Drains the task queue's dead-letter queue back into the store.
//!
//! A message lands there after workers received it `maxReceiveCount` times
//! without leasing its task: the controller was down (or unreachable) for
//! longer than the redrive horizon (5 receives x 30 s visibility in the hub
//! template). Such a task still waits in the store; the store, not SQS, is
//! the truth about what is queued, so each dead-lettered TaskRef whose task
//! still waits for that attempt is marked due again and the dispatcher
//! sends a fresh message. Everything else (a finished task, a later attempt,
//! an unreadable body) is only counted and deleted.
//!
//! Deleting comes after the store has recorded the TaskRef: a controller
//! killed in between finds the message again (it becomes visible after its
//! visibility timeout), and marking a task due twice is harmless.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use muster_proto::v1::TaskRef;
use tokio_util::sync::CancellationToken;

use crate::Controller;
use crate::store::queue;

/// How long one receive waits for a dead letter to arrive (a long poll: a
/// message is drained as soon as it lands, at one call per 20 s when idle).
const LONG_POLL_SECONDS: i32 = 20;
/// How long to wait after the dead-letter queue could not be read.
const AFTER_ERROR: Duration = Duration::from_secs(5);
/// Most messages drained in one round.
const ROUND: usize = 500;

/// Drains `url` until `shutdown`.
pub async fn run(ctl: Arc<Controller>, url: String, shutdown: CancellationToken) {
    loop {
        if !ctl.leader.is_leader() {
            // The leader drains; a follower only waits for its turn.
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(ctl.settings.leader_ttl / 3) => continue,
            }
        }
        let drained = tokio::select! {
            () = shutdown.cancelled() => return,
            drained = drain(&ctl, &url) => drained,
        };
        if let Err(error) = drained {
            tracing::warn!(error, queue = %url, "cannot drain the dead-letter queue; retrying");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(AFTER_ERROR) => {}
            }
        }
    }
}

/// One round: waits for dead letters, then receives up to [`ROUND`]
/// messages, records them, deletes them. Returns how many it handled.
pub async fn drain(ctl: &Controller, url: &str) -> Result<usize, String> {
    let mut handled = 0;
    while handled < ROUND {
        let received = ctl
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(if handled == 0 { LONG_POLL_SECONDS } else { 0 })
            // Long enough to record and delete them; should the controller
            // die first, they are back (and drained) 30 s later.
            .visibility_timeout(30)
            .send()
            .await
            .map_err(|e| muster_common::retry::describe(&e))?;
        let messages = received.messages();
        if messages.is_empty() {
            break;
        }
        let mut refs = Vec::new();
        let mut unreadable = 0;
        for message in messages {
            match muster_proto::decode_task_ref(message.body().unwrap_or_default()) {
                Ok(task_ref) => refs.push(task_ref),
                Err(error) => {
                    unreadable += 1;
                    tracing::warn!(%error, message_id = message.message_id().unwrap_or_default(), "unreadable message in the dead-letter queue; deleting it");
                }
            }
        }
        let found = refs.len();
        let requeued = record(ctl, refs).await?;
        ctl.metrics.dead_lettered("requeued", requeued);
        ctl.metrics.dead_lettered("stale", found - requeued);
        ctl.metrics.dead_lettered("unreadable", unreadable);
        if requeued > 0 {
            tracing::warn!(
                tasks = requeued,
                "tasks found in the dead-letter queue still wait for a worker; queueing them again"
            );
            ctl.wake.notify_one();
        }
        if found > requeued {
            tracing::info!(
                messages = found - requeued,
                "dead letters of tasks that no longer wait for them deleted"
            );
        }
        delete(ctl, url, messages).await?;
        handled += messages.len();
    }
    Ok(handled)
}

async fn record(ctl: &Controller, refs: Vec<TaskRef>) -> Result<usize, String> {
    if refs.is_empty() {
        return Ok(0);
    }
    // Kept on the queue (back after its visibility timeout) unless this
    // controller still leads when it records them.
    let fence = ctl.leader.fence().ok_or("this controller no longer leads")?;
    ctl.store
        .write_fenced(&fence, move |txn| queue::dead_lettered(txn, &refs))
        .await
        .map_err(|e| e.to_string())
}

/// Deletes `messages` from `url` in one batch.
pub(crate) async fn delete(
    ctl: &Controller,
    url: &str,
    messages: &[aws_sdk_sqs::types::Message],
) -> Result<(), String> {
    let entries: Vec<DeleteMessageBatchRequestEntry> = messages
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle()?)
                .build()
                .ok()
        })
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let answer = ctl
        .sqs
        .delete_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| muster_common::retry::describe(&e))?;
    for failed in answer.failed() {
        // It comes back after its visibility timeout and is handled again.
        tracing::warn!(entry = failed.id(), code = failed.code(), "dead letter not deleted");
    }
    Ok(())
}
