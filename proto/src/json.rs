//! The API's messages in proto3's canonical JSON mapping, the JSON that
//! grpcurl, the generated clients of every language and the API's reference
//! use: lowerCamelCase names, enums by name, 64-bit integers as strings,
//! timestamps in RFC 3339 and durations as "1.5s".
//!
//! Written with the descriptors compiled into this crate (prost-reflect), so
//! the mapping follows the `.proto` files, never a hand-kept copy.

use std::sync::LazyLock;

use prost::{Message, Name};
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};

/// Why a document is not the message it should be.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The document does not fit the message (a field's name or value).
    #[error("not a {message}: {detail}")]
    Mismatch {
        /// The message's full name, e.g. `muster.v1.CampaignSpec`.
        message: String,
        /// What did not fit, as the mapping says it.
        detail: String,
    },
}

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(crate::v1::FILE_DESCRIPTOR_SET).expect("the compiled-in descriptors decode")
});

fn descriptor<M: Name>() -> MessageDescriptor {
    POOL.get_message_by_name(&M::full_name())
        .unwrap_or_else(|| panic!("{} is in the compiled-in descriptors", M::full_name()))
}

/// `message` as canonical JSON, with fields at their defaults written out
/// (as grpcurl's `-emit-defaults` and protojson's `EmitUnpopulated` do), so
/// a script reads `0` or `""` where the value is that, not a missing key.
pub fn to_json<M: Message + Name>(message: &M) -> serde_json::Value {
    let dynamic =
        DynamicMessage::decode(descriptor::<M>(), message.encode_to_vec().as_slice()).expect("a message re-decodes");
    let options = SerializeOptions::new().skip_default_fields(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("a message serializes to JSON")
}

/// The message a canonical JSON document (or YAML read as JSON) holds.
/// Field names may be lowerCamelCase or as in the `.proto`; unknown fields
/// are refused, so a typo is an error rather than a setting dropped.
pub fn from_json<M: Message + Name + Default>(document: serde_json::Value) -> Result<M, JsonError> {
    let mismatch = |detail: String| JsonError::Mismatch {
        message: M::full_name(),
        detail,
    };
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let dynamic = DynamicMessage::deserialize_with_options(descriptor::<M>(), document, &options)
        .map_err(|e| mismatch(e.to_string()))?;
    dynamic.transcode_to::<M>().map_err(|e| mismatch(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Campaign, CampaignSpec, CampaignState, RateControl, StatusCounters};

    #[test]
    fn messages_print_as_the_proto3_json_mapping_says() {
        let campaign = Campaign {
            id: "c1".into(),
            state: CampaignState::Running as i32,
            counters: Some(StatusCounters {
                total: 3,
                ..Default::default()
            }),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_764_806_400,
                nanos: 0,
            }),
            error_threshold: Some(2),
            ..Default::default()
        };
        let json = to_json(&campaign);
        assert_eq!(json["id"], "c1");
        assert_eq!(json["state"], "CAMPAIGN_STATE_RUNNING", "enums by name");
        assert_eq!(json["counters"]["total"], "3", "64-bit integers as strings");
        assert_eq!(json["counters"]["failed"], "0", "defaults written out");
        assert_eq!(json["createdAt"], "2025-12-04T00:00:00Z", "timestamps in RFC 3339");
        assert_eq!(json["errorThreshold"], "2");
        assert_eq!(json["stateReason"], "", "lowerCamelCase names");
    }

    #[test]
    fn documents_read_back_into_the_message_and_typos_are_refused() {
        let spec = CampaignSpec {
            name: "patch".into(),
            rate: Some(RateControl {
                max_concurrency: "10%".into(),
                batch_size: 25,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(from_json::<CampaignSpec>(to_json(&spec)).unwrap(), spec);
        let proto_names = serde_json::json!({"name": "patch", "rate": {"max_concurrency": "10%", "batch_size": 25}});
        assert_eq!(from_json::<CampaignSpec>(proto_names).unwrap(), spec);
        let typo = serde_json::json!({"name": "patch", "rate": {"maxConcurency": "10%"}});
        let error = from_json::<CampaignSpec>(typo).unwrap_err().to_string();
        assert!(error.contains("muster.v1.CampaignSpec"), "{error}");
        assert!(error.contains("maxConcurency"), "{error}");
    }
}
