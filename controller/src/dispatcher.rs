//! Puts task references on the SQS queue: SendMessageBatch, ten a call and
//! several calls at once.
//! Each message starts its task's trace: an "enqueue task" span whose W3C
//! `traceparent` travels as a message attribute (when traces are exported).
//! Only as much work as workers can take soon is on the queue at once; the
//! rest waits in the store.
//!
//! A message sent twice (the controller died between sending and recording
//! it) is harmless: the second lease attempt answers "leased elsewhere" or
//! "stale attempt" and the worker deletes it.

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use muster_proto::v1::TaskRef;

use futures::StreamExt as _;

use crate::Controller;
use crate::store::leadership::Fence;
use crate::store::queue::{self, Due};
use crate::store::records::now_ms;

/// Most SendMessageBatch calls at once.
const SENDS_IN_FLIGHT: usize = 16;

/// Enqueues what is due; failures are retried on the next pass.
///
/// Due are new attempts (as many as leave at most `max_queued` on the queue)
/// and, whatever the queue holds, attempts that have waited there longer
/// than `requeue_after` without a lease: their message may be lost or
/// dead-lettered, and the store, not SQS, says what is queued.
pub async fn enqueue(ctl: &Controller, fence: &Fence) {
    let max = ctl.settings.max_queued;
    let requeue_after = ctl.settings.requeue_after;
    let cutoff = ctl.settings.requeue_cutoff_ms(now_ms());
    let due = ctl
        .store
        .read(move |conn| {
            let waiting = queue::waiting_on_queue(conn)?;
            let overdue = queue::overdue(conn, cutoff, max)?;
            let fresh = queue::to_enqueue(conn, max.saturating_sub(waiting))?;
            Ok((overdue, fresh))
        })
        .await;
    let due = match due {
        Ok((overdue, mut fresh)) => {
            if !overdue.is_empty() {
                tracing::warn!(
                    tasks = overdue.len(),
                    after_seconds = requeue_after.as_secs(),
                    "tasks waited on the queue without a lease; sending their messages again"
                );
                ctl.metrics.requeued(overdue.len());
            }
            let mut due = overdue;
            due.append(&mut fresh);
            due
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read tasks to enqueue");
            return;
        }
    };
    // The batches go out together: one round trip for the lot, not one per
    // ten tasks, so workers find a campaign's work on the queue at once.
    let chunks: Vec<Vec<Due>> = due.chunks(10).map(<[Due]>::to_vec).collect();
    let answers: Vec<_> = futures::stream::iter(chunks)
        .map(|chunk| async move { send(ctl, &chunk).await })
        .buffer_unordered(SENDS_IN_FLIGHT)
        .collect()
        .await;
    let mut sent = Vec::new();
    let mut failure = None;
    for answer in answers {
        match answer {
            Ok(refs) => sent.extend(refs),
            Err(error) => failure = Some(error),
        }
    }
    match failure {
        Some(error) => {
            tracing::warn!(error, queue = %ctl.settings.queue_url, "cannot put tasks on the queue; retrying");
            *ctl.queue_error.lock().expect("queue error lock") = Some(error);
        }
        // Only a send proves the queue answers again.
        None if !sent.is_empty() => *ctl.queue_error.lock().expect("queue error lock") = None,
        None => {}
    }
    if !sent.is_empty() {
        ctl.metrics.enqueued(sent.len());
        let at = now_ms();
        if let Err(error) = ctl
            .store
            .write_fenced(fence, move |txn| queue::mark_enqueued(txn, &sent, at))
            .await
        {
            tracing::warn!(%error, "cannot record enqueued tasks; they will be sent again");
        }
    }
}

/// Starts a task attempt's trace at a producer span named `name` (its
/// enqueue, or its hand-off with a worker's answer); the `traceparent` the
/// worker continues it from, when traces are exported.
pub(crate) fn start_trace(
    name: &str,
    campaign_id: &str,
    task_id: &str,
    attempt: u32,
    (account, region): (&str, &str),
) -> Option<String> {
    start_trace_in(name, campaign_id, task_id, attempt, (account, region), None)
}

/// As [`start_trace`]; `queue` names the SQS queue of an enqueue, which the
/// span then describes as a message sent (OpenTelemetry's messaging
/// conventions).
fn start_trace_in(
    name: &str,
    campaign_id: &str,
    task_id: &str,
    attempt: u32,
    (account, region): (&str, &str),
    queue: Option<&str>,
) -> Option<String> {
    let span = tracing::info_span!(
        parent: None,
        "task trace",
        otel.name = %name,
        otel.kind = "producer",
        muster.campaign.id = %campaign_id,
        muster.task.id = %task_id,
        muster.task.attempt = attempt,
        cloud.account.id = %account,
        cloud.region = %region,
        messaging.system = tracing::field::Empty,
        messaging.operation.type = tracing::field::Empty,
        messaging.operation.name = tracing::field::Empty,
        messaging.destination.name = tracing::field::Empty,
    );
    if let Some(queue) = queue {
        span.record("messaging.system", "aws_sqs");
        span.record("messaging.operation.type", "send");
        span.record("messaging.operation.name", "SendMessageBatch");
        span.record("messaging.destination.name", queue);
    }
    muster_common::telemetry::traceparent(&span)
}

async fn send(ctl: &Controller, due: &[Due]) -> Result<Vec<TaskRef>, String> {
    let queue = crate::scaling::queue_name(&ctl.settings.queue_url);
    let entries: Vec<SendMessageBatchRequestEntry> = due
        .iter()
        .enumerate()
        .map(|(i, due)| {
            let task = &due.task;
            let entry = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(muster_proto::encode_task_ref(task));
            let scope = (due.account_id.as_str(), due.region.as_str());
            let traced = start_trace_in(
                &format!("send {queue}"),
                &task.campaign_id,
                &task.task_id,
                task.attempt,
                scope,
                Some(queue),
            );
            match traced {
                Some(traceparent) => entry.message_attributes(
                    "traceparent",
                    MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(traceparent)
                        .build()
                        .expect("type and value are set"),
                ),
                None => entry,
            }
            .build()
            .expect("id and body are set")
        })
        .collect();
    let answer = ctl
        .sqs
        .send_message_batch()
        .queue_url(&ctl.settings.queue_url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| muster_common::retry::describe(&e))?;
    muster_common::crash::point("controller.after_enqueue");
    for failed in answer.failed() {
        tracing::warn!(
            entry = failed.id(),
            code = failed.code(),
            message = failed.message(),
            "task message not enqueued"
        );
    }
    Ok(answer
        .successful()
        .iter()
        .filter_map(|ok| ok.id().parse::<usize>().ok())
        .filter_map(|i| due.get(i).map(|d| d.task.clone()))
        .collect())
}
