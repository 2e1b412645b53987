//! The sim's two ways to talk to moto: forwarding a client's request unchanged,
//! and its own calls (role lookups, instance facts, output writes) made with
//! the AWS SDK in a chosen account through moto's `x-moto-account-id` header.

use std::sync::Arc;

use aws_config::{Region, SdkConfig};
use aws_credential_types::Credentials;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::ec2::InstanceFact;
use crate::protocol::Resp;

/// Something went wrong talking to moto.
#[derive(Debug, thiserror::Error)]
pub enum MotoError {
    /// moto did not answer.
    #[error("moto is unreachable: {0}")]
    Unreachable(String),
    /// moto answered with an error.
    #[error("moto {operation} failed: {message}")]
    Api {
        /// The operation.
        operation: &'static str,
        /// What moto said.
        message: String,
    },
}

/// A role as IAM (moto) describes it.
#[derive(Debug, Clone)]
pub struct RoleInfo {
    /// Full ARN, path included.
    pub arn: String,
    /// The trust policy document.
    pub trust_policy: serde_json::Value,
    /// MaxSessionDuration in seconds.
    pub max_session_seconds: u64,
}

/// One moto process.
#[derive(Clone)]
struct Shard {
    base_url: String,
    sdk: SdkConfig,
}

/// Handles to moto: one process, or several with accounts spread over them.
///
/// moto runs on one core and spends milliseconds per EC2 instance, so a big
/// fleet is faster over several processes. EC2 and CloudWatch Logs, whose
/// state is per account, go to the account's shard; everything global (IAM,
/// STS, Organizations, S3, SQS) stays on the first.
#[derive(Clone)]
pub struct Moto {
    shards: Vec<Shard>,
    http: Client<HttpConnector, Full<Bytes>>,
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

impl Moto {
    /// Connects to moto at `base_urls` ("http://127.0.0.1:5000"), the first
    /// being the primary.
    pub fn new(base_urls: &[String]) -> Self {
        assert!(!base_urls.is_empty(), "at least one moto");
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            // moto closes every connection; do not keep idle ones around.
            .pool_max_idle_per_host(0)
            .build(connector);
        let shards = base_urls
            .iter()
            .map(|url| Shard {
                base_url: url.trim_end_matches('/').to_owned(),
                sdk: muster_common::aws::fixed(
                    url,
                    "us-east-1",
                    Credentials::new("AKIAMUSTERSIMINTERNAL", "muster-sim", None, None, "muster-sim"),
                    aws_smithy_types::retry::RetryConfig::standard().with_max_attempts(4),
                ),
            })
            .collect();
        Self { shards, http }
    }

    fn primary(&self) -> &Shard {
        &self.shards[0]
    }

    /// The shard holding an account's per-account state.
    fn shard_of(&self, account: &str) -> &Shard {
        let n = account
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        &self.shards[(n % self.shards.len() as u64) as usize]
    }

    /// Whether a service keeps per-account state on the account's shard.
    pub fn is_sharded(service: &str) -> bool {
        matches!(service, "ec2" | "logs")
    }

    /// Forwards a client's request to the right moto: the account's shard for
    /// per-account services (with `x-moto-account-id`, since only the primary
    /// knows session keys), the primary otherwise.
    pub async fn forward_for(
        &self,
        service: &str,
        account: &str,
        method: http::Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Resp, MotoError> {
        if Self::is_sharded(service) {
            let mut headers = headers.clone();
            if let Ok(value) = account.parse() {
                headers.insert("x-moto-account-id", value);
            }
            self.send(self.shard_of(account), method, path_and_query, &headers, body)
                .await
        } else {
            self.send(self.primary(), method, path_and_query, headers, body).await
        }
    }

    /// Forwards a request unchanged to the primary.
    pub async fn forward(
        &self,
        method: http::Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Resp, MotoError> {
        self.send(self.primary(), method, path_and_query, headers, body).await
    }

    async fn send(
        &self,
        shard: &Shard,
        method: http::Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Resp, MotoError> {
        let uri = format!("{}{}", shard.base_url, path_and_query);
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                builder = builder.header(name, value);
            }
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| MotoError::Unreachable(e.to_string()))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| MotoError::Unreachable(e.to_string()))?;
        let (mut parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| MotoError::Unreachable(e.to_string()))?
            .to_bytes();
        for name in HOP_BY_HOP {
            parts.headers.remove(*name);
        }
        Ok(Response::from_parts(parts, Full::new(bytes)))
    }

    /// Asks every moto to forget everything.
    pub async fn reset(&self) -> Result<(), MotoError> {
        for shard in &self.shards {
            let response = self
                .send(
                    shard,
                    http::Method::POST,
                    "/moto-api/reset",
                    &HeaderMap::new(),
                    Bytes::new(),
                )
                .await?;
            if !response.status().is_success() {
                return Err(MotoError::Api {
                    operation: "reset",
                    message: response.status().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Whether every moto answers.
    pub async fn healthy(&self) -> Result<(), MotoError> {
        for shard in &self.shards {
            let response = self
                .send(shard, http::Method::GET, "/moto-api/", &HeaderMap::new(), Bytes::new())
                .await?;
            if !response.status().is_success() {
                return Err(MotoError::Api {
                    operation: "health",
                    message: format!("{} answered {}", shard.base_url, response.status()),
                });
            }
        }
        Ok(())
    }

    fn in_region(&self, account: &str, region: &str) -> SdkConfig {
        self.shard_of(account)
            .sdk
            .to_builder()
            .region(Region::new(region.to_owned()))
            .build()
    }

    /// Looks a role up in an account; `None` when it does not exist.
    pub async fn get_role(&self, account: &str, role_name: &str) -> Result<Option<RoleInfo>, MotoError> {
        let iam = aws_sdk_iam::Client::new(&self.primary().sdk);
        let account = account.to_owned();
        let result = iam
            .get_role()
            .role_name(role_name)
            .customize()
            .mutate_request(move |req| {
                req.headers_mut().insert("x-moto-account-id", account.clone());
            })
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(error) => {
                let service_error = error.as_service_error();
                if service_error.is_some_and(|e| e.is_no_such_entity_exception()) {
                    return Ok(None);
                }
                return Err(MotoError::Api {
                    operation: "GetRole",
                    message: aws_smithy_types::error::display::DisplayErrorContext(&error).to_string(),
                });
            }
        };
        let Some(role) = output.role else { return Ok(None) };
        let raw = role.assume_role_policy_document.unwrap_or_default();
        let decoded = percent_encoding::percent_decode_str(&raw)
            .decode_utf8_lossy()
            .into_owned();
        let trust_policy = serde_json::from_str(&decoded).unwrap_or(serde_json::Value::Null);
        Ok(Some(RoleInfo {
            arn: role.arn,
            trust_policy,
            max_session_seconds: role
                .max_session_duration
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(3600),
        }))
    }

    /// Instances of an (account, region), all states; only `ids` when given.
    /// Raw EC2 Query calls, parsed with the same code that learns from the
    /// answers the sim forwards.
    pub async fn instances(
        &self,
        account: &str,
        region: &str,
        ids: Option<&[String]>,
    ) -> Result<Vec<InstanceFact>, MotoError> {
        let mut headers = HeaderMap::new();
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=AKIAMUSTERSIMINTERNAL/20260101/{region}/ec2/aws4_request, SignedHeaders=host, Signature=0"
        );
        headers.insert(
            http::header::AUTHORIZATION,
            auth.parse().map_err(|_| MotoError::Unreachable("bad region".into()))?,
        );
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(
            "x-moto-account-id",
            account
                .parse()
                .map_err(|_| MotoError::Unreachable("bad account".into()))?,
        );
        let mut facts = Vec::new();
        // EC2 takes at most 200 values per filter.
        let chunks: Vec<Option<&[String]>> = match ids {
            Some([]) => return Ok(facts),
            Some(ids) => ids.chunks(200).map(Some).collect(),
            None => vec![None],
        };
        for chunk in chunks {
            let mut token: Option<String> = None;
            loop {
                let body = describe_instances_form(chunk, token.as_deref());
                let response = self
                    .send(
                        self.shard_of(account),
                        http::Method::POST,
                        "/",
                        &headers,
                        Bytes::from(body),
                    )
                    .await?;
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| MotoError::Unreachable(e.to_string()))?
                    .to_bytes();
                if !status.is_success() {
                    return Err(MotoError::Api {
                        operation: "DescribeInstances",
                        message: String::from_utf8_lossy(&body).chars().take(300).collect(),
                    });
                }
                let page = crate::ec2::parse_describe_instances(&body);
                facts.extend(page.instances);
                match page.next_token {
                    Some(next) if !next.is_empty() => token = Some(next),
                    _ => break,
                }
            }
        }
        Ok(facts)
    }

    /// Writes an S3 object as `account` (moto allows cross-account writes, as
    /// a bucket policy scoped to the Organization would).
    pub async fn put_object(&self, account: &str, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), MotoError> {
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.primary().sdk)
                .force_path_style(true)
                .build(),
        );
        let account = account.to_owned();
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(body.into())
            .customize()
            .mutate_request(move |req| {
                req.headers_mut().insert("x-moto-account-id", account.clone());
            })
            .send()
            .await
            .map_err(|e| MotoError::Api {
                operation: "PutObject",
                message: aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
            })?;
        Ok(())
    }

    /// Sends one SQS message to `queue_url` (as EventBridge's target does),
    /// in the queue's account, named by the URL's path.
    pub async fn send_message(&self, queue_url: &str, region: &str, body: String) -> Result<(), MotoError> {
        let sqs = aws_sdk_sqs::Client::new(
            &self
                .primary()
                .sdk
                .to_builder()
                .region(Region::new(region.to_owned()))
                .build(),
        );
        let account = queue_url
            .rsplit('/')
            .nth(1)
            .filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned);
        sqs.send_message()
            .queue_url(queue_url)
            .message_body(body)
            .customize()
            .mutate_request(move |req| {
                if let Some(account) = &account {
                    req.headers_mut().insert("x-moto-account-id", account.clone());
                }
            })
            .send()
            .await
            .map_err(|e| MotoError::Api {
                operation: "SendMessage",
                message: aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
            })?;
        Ok(())
    }

    /// Appends text to a CloudWatch Logs stream in (account, region), creating
    /// the group and stream when missing, as the SSM agent does.
    pub async fn put_log_text(
        &self,
        account: &str,
        region: &str,
        group: &str,
        stream: &str,
        text: &str,
    ) -> Result<(), MotoError> {
        let logs = aws_sdk_cloudwatchlogs::Client::new(&self.in_region(account, region));
        let header = Arc::new(account.to_owned());
        let with_account = |header: Arc<String>| {
            move |req: &mut aws_smithy_runtime_api::http::Request| {
                req.headers_mut()
                    .insert("x-moto-account-id", header.as_str().to_owned());
            }
        };
        let created = logs
            .create_log_group()
            .log_group_name(group)
            .customize()
            .mutate_request(with_account(header.clone()))
            .send()
            .await;
        if let Err(error) = created
            && !error
                .as_service_error()
                .is_some_and(|e| e.is_resource_already_exists_exception())
        {
            return Err(api_error("CreateLogGroup", &error));
        }
        let created = logs
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .customize()
            .mutate_request(with_account(header.clone()))
            .send()
            .await;
        if let Err(error) = created
            && !error
                .as_service_error()
                .is_some_and(|e| e.is_resource_already_exists_exception())
        {
            return Err(api_error("CreateLogStream", &error));
        }
        let now = chrono::Utc::now().timestamp_millis();
        let events: Vec<_> = log_events(text)
            .into_iter()
            .map(|message| {
                aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                    .timestamp(now)
                    .message(message)
                    .build()
                    .expect("timestamp and message are set")
            })
            .collect();
        // PutLogEvents takes at most 10,000 events and 1 MB per call.
        for chunk in chunk_events(events) {
            logs.put_log_events()
                .log_group_name(group)
                .log_stream_name(stream)
                .set_log_events(Some(chunk))
                .customize()
                .mutate_request(with_account(header.clone()))
                .send()
                .await
                .map_err(|e| api_error("PutLogEvents", &e))?;
        }
        Ok(())
    }
}

fn describe_instances_form(ids: Option<&[String]>, token: Option<&str>) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("Action", "DescribeInstances")
        .append_pair("Version", "2016-11-15");
    if let Some(ids) = ids {
        form.append_pair("Filter.1.Name", "instance-id");
        for (i, id) in ids.iter().enumerate() {
            form.append_pair(&format!("Filter.1.Value.{}", i + 1), id);
        }
    }
    if let Some(token) = token {
        form.append_pair("NextToken", token);
    }
    form.finish()
}

fn api_error<E: std::error::Error + 'static, R: std::fmt::Debug>(
    operation: &'static str,
    error: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> MotoError {
    MotoError::Api {
        operation,
        message: aws_smithy_types::error::display::DisplayErrorContext(error).to_string(),
    }
}

/// Splits output into log events the way the agent streams it: a line (or a
/// run of lines) per event, at most 64 KB each, so that concatenating the
/// events gives back the exact text.
pub fn log_events(text: &str) -> Vec<String> {
    const MAX_EVENT: usize = 64 * 1024;
    let mut events = Vec::new();
    let mut current = String::new();
    for line in text.split_inclusive('\n') {
        if current.len() + line.len() > MAX_EVENT && !current.is_empty() {
            events.push(std::mem::take(&mut current));
        }
        if line.len() > MAX_EVENT {
            let mut rest = line;
            while !rest.is_empty() {
                let mut cut = rest.len().min(MAX_EVENT);
                while !rest.is_char_boundary(cut) {
                    cut -= 1;
                }
                events.push(rest[..cut].to_owned());
                rest = &rest[cut..];
            }
        } else {
            current.push_str(line);
        }
    }
    if !current.is_empty() {
        events.push(current);
    }
    events
}

fn chunk_events(
    events: Vec<aws_sdk_cloudwatchlogs::types::InputLogEvent>,
) -> Vec<Vec<aws_sdk_cloudwatchlogs::types::InputLogEvent>> {
    const MAX_BATCH_BYTES: usize = 900 * 1024;
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for event in events {
        let len = event.message().len() + 26;
        if (size + len > MAX_BATCH_BYTES || current.len() == 10_000) && !current.is_empty() {
            chunks.push(std::mem::take(&mut current));
            size = 0;
        }
        size += len;
        current.push(event);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_events_reassemble_exactly() {
        let text: String = (0..5_000).map(|i| format!("line {i} of output\n")).collect::<String>() + "no newline";
        let events = log_events(&text);
        assert!(events.len() > 1);
        assert!(events.iter().all(|e| e.len() <= 64 * 1024));
        assert_eq!(events.concat(), text);
        let long = "x".repeat(200_000);
        assert_eq!(log_events(&long).concat(), long);
    }
}
