//! The SQS message body: a `TaskRef`, protobuf-encoded, then base64 (SQS bodies
//! are text). Every message is untrusted input: whoever can write to the queue
//! can put anything there, so decoding checks sizes and shapes before anything
//! else looks at it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prost::Message as _;

use crate::v1::TaskRef;

/// The largest body a real TaskRef can have, with room to spare. Two UUIDs and
/// a varint encode to well under 100 bytes; base64 adds a third.
const MAX_BODY_LEN: usize = 512;
/// Ids are UUIDs in their 36-character hyphenated form.
const ID_LEN: usize = 36;

/// Why a queue message is not a TaskRef.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TaskRefError {
    /// The body is longer than any TaskRef.
    #[error("message body is {0} bytes, more than the {MAX_BODY_LEN} a task reference can have")]
    TooLong(usize),
    /// The body is not base64.
    #[error("message body is not base64: {0}")]
    NotBase64(String),
    /// The bytes are not a protobuf TaskRef.
    #[error("message body is not a task reference: {0}")]
    NotProtobuf(String),
    /// A field has the wrong shape.
    #[error("task reference field {field}: {rule}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// The rule it breaks.
        rule: &'static str,
    },
}

/// Encodes a TaskRef as an SQS message body.
pub fn encode_task_ref(task: &TaskRef) -> String {
    STANDARD.encode(task.encode_to_vec())
}

/// Decodes and checks an SQS message body.
pub fn decode_task_ref(body: &str) -> Result<TaskRef, TaskRefError> {
    if body.len() > MAX_BODY_LEN {
        return Err(TaskRefError::TooLong(body.len()));
    }
    let bytes = STANDARD
        .decode(body.trim())
        .map_err(|e| TaskRefError::NotBase64(e.to_string()))?;
    let task = TaskRef::decode(bytes.as_slice()).map_err(|e| TaskRefError::NotProtobuf(e.to_string()))?;
    check_id("campaign_id", &task.campaign_id)?;
    check_id("task_id", &task.task_id)?;
    if task.attempt == 0 {
        return Err(TaskRefError::Invalid {
            field: "attempt",
            rule: "must be 1 or more",
        });
    }
    Ok(task)
}

fn check_id(field: &'static str, id: &str) -> Result<(), TaskRefError> {
    let well_formed = id.len() == ID_LEN
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
        });
    if well_formed {
        Ok(())
    } else {
        Err(TaskRefError::Invalid {
            field,
            rule: "must be a lowercase hyphenated UUID",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TaskRef {
        TaskRef {
            campaign_id: "0193a4b2-7c1d-7e2f-8a9b-0c1d2e3f4a5b".into(),
            task_id: "0193a4b2-7c1d-7e2f-8a9b-0c1d2e3f4a5c".into(),
            attempt: 2,
        }
    }

    #[test]
    fn round_trips() {
        let body = encode_task_ref(&sample());
        assert_eq!(decode_task_ref(&body), Ok(sample()));
    }

    #[test]
    fn refuses_garbage_with_a_reason() {
        assert!(matches!(
            decode_task_ref("not base64!"),
            Err(TaskRefError::NotBase64(_))
        ));
        assert!(matches!(
            decode_task_ref(&"A".repeat(600)),
            Err(TaskRefError::TooLong(600))
        ));
        let empty = encode_task_ref(&TaskRef::default());
        assert_eq!(
            decode_task_ref(&empty),
            Err(TaskRefError::Invalid {
                field: "campaign_id",
                rule: "must be a lowercase hyphenated UUID"
            })
        );
        let mut zero = sample();
        zero.attempt = 0;
        assert!(matches!(
            decode_task_ref(&encode_task_ref(&zero)),
            Err(TaskRefError::Invalid { field: "attempt", .. })
        ));
        let mut sql = sample();
        sql.task_id = "'; drop table tasks; --".into();
        assert!(matches!(
            decode_task_ref(&encode_task_ref(&sql)),
            Err(TaskRefError::Invalid { field: "task_id", .. })
        ));
    }
}
