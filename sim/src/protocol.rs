//! The wire shapes of AWS errors, per protocol, and how to tell which API a
//! request calls. The SDKs parse errors by these shapes, so the sim must answer
//! exactly as AWS would for the client to see `ThrottlingException` and not a
//! generic failure.

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::Full;

/// The response type of every handler.
pub type Resp = Response<Full<Bytes>>;

/// AWS wire protocols the sim answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// awsJson1_0 / awsJson1_1: `X-Amz-Target` header, JSON bodies.
    AwsJson,
    /// awsQuery: form bodies, XML answers (STS, IAM).
    AwsQuery,
    /// ec2Query: like awsQuery with EC2's own error envelope.
    Ec2Query,
    /// restXml: S3.
    RestXml,
}

/// Which protocol a request to `service` speaks.
pub fn protocol_of(service: &str, headers: &HeaderMap) -> Protocol {
    match service {
        "ec2" => Protocol::Ec2Query,
        "s3" => Protocol::RestXml,
        "sts" | "iam" => Protocol::AwsQuery,
        _ if headers.contains_key("x-amz-target") => Protocol::AwsJson,
        "ssm" | "logs" | "organizations" => Protocol::AwsJson,
        _ => Protocol::AwsQuery,
    }
}

/// The API a request calls, e.g. "SendCommand", "DescribeInstances",
/// "PutObject".
pub fn api_name(
    service: &str,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return target.rsplit('.').next().unwrap_or(target).to_owned();
    }
    if crate::cbor::is_rpc_v2(headers)
        && let Some((_, operation)) = crate::cbor::target(path)
    {
        return operation.to_owned();
    }
    if service == "s3" {
        return s3_api(method, path, query, headers);
    }
    let from_pairs = |bytes: &[u8]| {
        form_urlencoded::parse(bytes)
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v.into_owned())
    };
    from_pairs(body)
        .or_else(|| query.and_then(|q| from_pairs(q.as_bytes())))
        .unwrap_or_else(|| "Unknown".to_owned())
}

fn s3_api(method: &Method, path: &str, query: Option<&str>, headers: &HeaderMap) -> String {
    let segments = path
        .trim_start_matches('/')
        .splitn(2, '/')
        .filter(|s| !s.is_empty())
        .count();
    let query = query.unwrap_or("");
    let name = match (method.as_str(), segments) {
        ("GET", 0) => "ListBuckets",
        ("GET", 1) if query.contains("list-type=2") => "ListObjectsV2",
        ("GET", 1) => "ListObjects",
        ("PUT", 1) => "CreateBucket",
        ("HEAD", 1) => "HeadBucket",
        ("DELETE", 1) => "DeleteBucket",
        ("GET", _) => "GetObject",
        ("PUT", _) if headers.contains_key("x-amz-copy-source") => "CopyObject",
        ("PUT", _) => "PutObject",
        ("HEAD", _) => "HeadObject",
        ("DELETE", _) => "DeleteObject",
        ("POST", _) => "PostObject",
        _ => "Unknown",
    };
    name.to_owned()
}

/// An AWS error in the shape of `protocol`.
pub fn error(protocol: Protocol, status: StatusCode, code: &str, message: &str) -> Resp {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (content_type, body) = match protocol {
        Protocol::AwsJson => (
            "application/x-amz-json-1.1",
            serde_json::json!({ "__type": code, "message": message }).to_string(),
        ),
        Protocol::AwsQuery => (
            "text/xml",
            format!(
                "<ErrorResponse><Error><Type>{}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
                if status.is_server_error() { "Receiver" } else { "Sender" },
                xml_escape(code),
                xml_escape(message)
            ),
        ),
        Protocol::Ec2Query => (
            "text/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>",
                xml_escape(code),
                xml_escape(message)
            ),
        ),
        Protocol::RestXml => (
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{}</Code><Message>{}</Message><RequestId>{request_id}</RequestId></Error>",
                xml_escape(code),
                xml_escape(message)
            ),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-amzn-requestid", &request_id)
        .header("x-amzn-errortype", code)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// The throttling error each service answers with, and its HTTP status.
pub fn throttling(service: &str, protocol: Protocol) -> Resp {
    let (status, code, message) = match service {
        "ec2" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "RequestLimitExceeded",
            "Request limit exceeded.",
        ),
        "s3" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "Please reduce your request rate.",
        ),
        "sts" | "iam" => (StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded"),
        "organizations" => (StatusCode::BAD_REQUEST, "TooManyRequestsException", "Rate exceeded"),
        _ => (StatusCode::BAD_REQUEST, "ThrottlingException", "Rate exceeded"),
    };
    error(protocol, status, code, message)
}

/// An injected server fault.
pub fn server_fault(service: &str, protocol: Protocol, status: StatusCode) -> Resp {
    let code = match (service, status) {
        (_, StatusCode::SERVICE_UNAVAILABLE) => "ServiceUnavailable",
        ("ec2" | "s3", _) => "InternalError",
        ("ssm", _) => "InternalServerError",
        _ => "InternalFailure",
    };
    error(protocol, status, code, "injected fault (muster-sim)")
}

/// A successful JSON answer (awsJson protocols).
pub fn json_ok(value: &serde_json::Value) -> Resp {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-requestid", uuid::Uuid::new_v4().to_string())
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("static response parts are valid")
}

/// A plain JSON answer for the admin API.
pub fn admin_json(status: StatusCode, value: &serde_json::Value) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("static response parts are valid")
}

/// Escapes text for an XML element.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_names_come_from_target_action_or_s3_shape() {
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-target", "AmazonSSM.SendCommand".parse().unwrap());
        assert_eq!(
            api_name("ssm", &Method::POST, "/", None, &headers, b"{}"),
            "SendCommand"
        );
        let empty = HeaderMap::new();
        assert_eq!(
            api_name(
                "ec2",
                &Method::POST,
                "/",
                None,
                &empty,
                b"Action=DescribeInstances&Version=2016-11-15"
            ),
            "DescribeInstances"
        );
        assert_eq!(
            api_name("s3", &Method::PUT, "/bucket/a/b", None, &empty, b""),
            "PutObject"
        );
        assert_eq!(
            api_name("s3", &Method::GET, "/bucket", Some("list-type=2&prefix=x"), &empty, b""),
            "ListObjectsV2"
        );
    }

    #[test]
    fn json_errors_carry_the_type() {
        let resp = error(Protocol::AwsJson, StatusCode::BAD_REQUEST, "InvalidInstanceId", "nope");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(resp.headers()["x-amzn-errortype"], "InvalidInstanceId");
    }
}
