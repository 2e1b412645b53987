//! Smithy RPC v2 CBOR, which the AWS SDK for Rust speaks to CloudWatch,
//! bridged to the JSON protocol moto serves: the request's CBOR body becomes
//! the same document in JSON with the operation as `X-Amz-Target`, and
//! moto's JSON answer goes back as CBOR.
//!
//! Timestamps in requests (CBOR tag 1) become epoch seconds, as JSON writes
//! them. Answers carry no shapes, so an answer's timestamps come back as
//! plain numbers, not tag 1: fine for PutMetricData, whose answer is empty;
//! a Rust client that reads metrics through the sim would need the model.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::Full;
use minicbor::data::{IanaTag, Tag, Type};
use serde_json::{Map, Number, Value};

/// Whether a request speaks RPC v2 CBOR.
pub fn is_rpc_v2(headers: &HeaderMap) -> bool {
    headers
        .get("smithy-protocol")
        .is_some_and(|v| v.as_bytes() == b"rpc-v2-cbor")
}

/// (service, operation) of a path `/service/{Service}/operation/{Operation}`.
pub fn target(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/service/")?;
    let (service, operation) = rest.split_once("/operation/")?;
    (!service.is_empty() && !operation.is_empty() && !operation.contains('/')).then_some((service, operation))
}

/// A CBOR document as JSON.
pub fn to_json(bytes: &[u8]) -> Result<Value, String> {
    if bytes.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let mut decoder = minicbor::Decoder::new(bytes);
    value(&mut decoder).map_err(|e| format!("not a CBOR document: {e}"))
}

fn value(d: &mut minicbor::Decoder<'_>) -> Result<Value, minicbor::decode::Error> {
    Ok(match d.datatype()? {
        Type::Bool => Value::Bool(d.bool()?),
        Type::Null | Type::Undefined => {
            d.skip()?;
            Value::Null
        }
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => Value::from(d.u64()?),
        Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => Value::from(d.i64()?),
        Type::F16 | Type::F32 => float(f64::from(d.f32()?)),
        Type::F64 => float(d.f64()?),
        Type::String | Type::StringIndef => {
            let mut text = String::new();
            for chunk in d.str_iter()? {
                text.push_str(chunk?);
            }
            Value::String(text)
        }
        Type::Bytes | Type::BytesIndef => {
            let mut blob = Vec::new();
            for chunk in d.bytes_iter()? {
                blob.extend_from_slice(chunk?);
            }
            Value::String(base64_encode(&blob))
        }
        Type::Array | Type::ArrayIndef => {
            let mut items = Vec::new();
            match d.array()? {
                Some(n) => {
                    for _ in 0..n {
                        items.push(value(d)?);
                    }
                }
                None => {
                    while d.datatype()? != Type::Break {
                        items.push(value(d)?);
                    }
                    d.skip()?;
                }
            }
            Value::Array(items)
        }
        Type::Map | Type::MapIndef => {
            let mut map = Map::new();
            let mut entry = |d: &mut minicbor::Decoder<'_>| -> Result<(), minicbor::decode::Error> {
                let key = match value(d)? {
                    Value::String(key) => key,
                    other => other.to_string(),
                };
                let item = value(d)?;
                map.insert(key, item);
                Ok(())
            };
            match d.map()? {
                Some(n) => {
                    for _ in 0..n {
                        entry(d)?;
                    }
                }
                None => {
                    while d.datatype()? != Type::Break {
                        entry(d)?;
                    }
                    d.skip()?;
                }
            }
            Value::Object(map)
        }
        // Tag 1 (epoch seconds) is a timestamp; other tags are read through.
        Type::Tag => {
            d.tag()?;
            value(d)?
        }
        _ => {
            d.skip()?;
            Value::Null
        }
    })
}

fn float(x: f64) -> Value {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A JSON document as CBOR (definite lengths; integers stay integers).
pub fn to_cbor(value: &Value) -> Vec<u8> {
    let mut encoder = minicbor::Encoder::new(Vec::new());
    write(&mut encoder, value).expect("writing to a Vec cannot fail");
    encoder.into_writer()
}

fn write(
    e: &mut minicbor::Encoder<Vec<u8>>,
    value: &Value,
) -> Result<(), minicbor::encode::Error<std::convert::Infallible>> {
    match value {
        Value::Null => {
            e.null()?;
        }
        Value::Bool(b) => {
            e.bool(*b)?;
        }
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                e.u64(u)?;
            } else if let Some(i) = n.as_i64() {
                e.i64(i)?;
            } else {
                e.f64(n.as_f64().unwrap_or_default())?;
            }
        }
        Value::String(s) => {
            e.str(s)?;
        }
        Value::Array(items) => {
            e.array(items.len() as u64)?;
            for item in items {
                write(e, item)?;
            }
        }
        Value::Object(map) => {
            e.map(map.len() as u64)?;
            for (key, item) in map {
                e.str(key)?;
                write(e, item)?;
            }
        }
    }
    Ok(())
}

/// The timestamp tag, for tests that build requests as the SDK does.
pub fn timestamp_tag() -> Tag {
    Tag::from(IanaTag::Timestamp)
}

/// The request moto takes for a CBOR one: JSON body, operation as
/// `X-Amz-Target`, the other headers as they were. An error says why the
/// request is not one.
pub fn json_request(path: &str, headers: &HeaderMap, body: &[u8]) -> Result<(HeaderMap, Bytes), String> {
    let (service, operation) = target(path).ok_or_else(|| format!("{path} is not /service/S/operation/O"))?;
    let document = to_json(body)?;
    let mut headers = headers.clone();
    for name in ["smithy-protocol", "content-length", "accept"] {
        headers.remove(name);
    }
    headers.insert(
        "x-amz-target",
        HeaderValue::from_str(&format!("{service}.{operation}")).map_err(|e| e.to_string())?,
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    Ok((headers, Bytes::from(document.to_string())))
}

/// moto's JSON answer as the CBOR one the SDK reads.
pub fn cbor_response(status: StatusCode, body: &[u8]) -> http::Response<Full<Bytes>> {
    let document: Value = if body.is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(body).unwrap_or_else(
            |_| serde_json::json!({"__type": "InternalFailure", "message": String::from_utf8_lossy(body)}),
        )
    };
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/cbor")
        .header("smithy-protocol", "rpc-v2-cbor")
        .body(Full::new(Bytes::from(to_cbor(&document))))
        .expect("static response parts are valid")
}

/// A refusal in the protocol's own shape.
pub fn refusal(message: &str) -> http::Response<Full<Bytes>> {
    let body = serde_json::json!({"__type": "SerializationException", "message": message});
    cbor_response(StatusCode::BAD_REQUEST, body.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_metric_data_request_reads_as_the_json_moto_takes() {
        // As the SDK writes it: an indefinite map, a nested array, a tagged
        // timestamp, a float and an integer.
        let mut e = minicbor::Encoder::new(Vec::new());
        e.begin_map().unwrap();
        e.str("Namespace").unwrap().str("Muster").unwrap();
        e.str("MetricData").unwrap().array(1).unwrap();
        e.map(4).unwrap();
        e.str("MetricName").unwrap().str("TaskDemand").unwrap();
        e.str("Value").unwrap().f64(12.5).unwrap();
        e.str("StorageResolution").unwrap().i32(1).unwrap();
        e.str("Timestamp")
            .unwrap()
            .tag(timestamp_tag())
            .unwrap()
            .f64(1_796_340_000.0)
            .unwrap();
        e.end().unwrap();
        let json = to_json(&e.into_writer()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"Namespace": "Muster", "MetricData": [{
                "MetricName": "TaskDemand", "Value": 12.5, "StorageResolution": 1, "Timestamp": 1_796_340_000.0
            }]})
        );
    }

    #[test]
    fn answers_round_trip_and_paths_name_the_operation() {
        let answer = serde_json::json!({"MetricDataResults": [{"Id": "m", "Values": [2.5, 3], "Label": "x"}]});
        assert_eq!(to_json(&to_cbor(&answer)).unwrap(), answer);
        assert_eq!(
            target("/service/GraniteServiceVersion20100801/operation/PutMetricData"),
            Some(("GraniteServiceVersion20100801", "PutMetricData"))
        );
        assert_eq!(target("/"), None);
        assert_eq!(base64_encode(b"muster"), "bXVzdGVy");
        assert_eq!(base64_encode(b"ab"), "YWI=");
    }
}
