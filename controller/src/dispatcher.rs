//! Puts task references on the SQS queue: SendMessageBatch, ten at a time,
//! with a W3C `traceparent` attribute. Only as much work as workers can take
//! soon is on the queue at once; the rest waits in the store.
//!
//! A message sent twice (the controller died between sending and recording
//! it) is harmless: the second lease attempt answers "leased elsewhere" or
//! "stale attempt" and the worker deletes it.

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use muster_proto::v1::TaskRef;
use rand::Rng as _;

use crate::Controller;
use crate::store::tasks;

/// A fresh W3C trace context for a task message.
pub fn traceparent() -> String {
    let mut rng = rand::rng();
    format!(
        "00-{:032x}-{:016x}-01",
        rng.random::<u128>() | 1,
        rng.random::<u64>() | 1
    )
}

/// Enqueues what is due; failures are retried on the next pass.
pub async fn enqueue(ctl: &Controller) {
    let max = ctl.settings.max_queued;
    let due = ctl
        .store
        .read(move |conn| {
            let waiting = tasks::waiting_on_queue(conn)?;
            tasks::to_enqueue(conn, max.saturating_sub(waiting))
        })
        .await;
    let due = match due {
        Ok(due) => due,
        Err(error) => {
            tracing::warn!(%error, "cannot read tasks to enqueue");
            return;
        }
    };
    for chunk in due.chunks(10) {
        match send(ctl, chunk).await {
            Ok(sent) if !sent.is_empty() => {
                if let Err(error) = ctl.store.write(move |txn| tasks::mark_enqueued(txn, &sent)).await {
                    tracing::warn!(%error, "cannot record enqueued tasks; they will be sent again");
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(error, queue = %ctl.settings.queue_url, "cannot put tasks on the queue; retrying");
                return;
            }
        }
    }
}

async fn send(ctl: &Controller, refs: &[TaskRef]) -> Result<Vec<TaskRef>, String> {
    let entries: Vec<SendMessageBatchRequestEntry> = refs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(muster_proto::encode_task_ref(r))
                .message_attributes(
                    "traceparent",
                    MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(traceparent())
                        .build()
                        .expect("type and value are set"),
                )
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
        .filter_map(|i| refs.get(i).cloned())
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn traceparents_are_w3c_shaped() {
        let t = super::traceparent();
        let parts: Vec<&str> = t.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "01")
        );
    }
}
