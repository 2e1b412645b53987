//! The HTTP front: every sandbox AWS request comes here. Each one is routed by
//! its SigV4 scope, passes the fault, quota and latency models, and is then
//! served by the sim (SSM, AssumeRole) or forwarded to moto unchanged.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{FaultKind, FaultRule, FaultWhen, Tunables};
use crate::identity::KeyState;
use crate::limits::{self, CallKey};
use crate::protocol::{self, Protocol, Resp};
use crate::ssm::Ctx;
use crate::state::SimState;
use crate::{admin, fleet, sigv4, sts};

/// Largest request body accepted (S3 uploads of command output included).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Why a request got no answer at all.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
struct Dropped;

/// Serves until `shutdown` is cancelled, then lets open requests finish.
pub async fn serve(listener: TcpListener, state: Arc<SimState>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = service_fn(move |request| {
            let state = state.clone();
            async move { handle(state, request, peer).await }
        });
        let connection = auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended");
            }
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {
            tracing::warn!("open connections did not finish within 5s");
        }
    }
}

async fn handle(state: Arc<SimState>, request: Request<Incoming>, _peer: SocketAddr) -> Result<Resp, Dropped> {
    let (parts, body) = request.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(too_large) => return Ok(too_large),
    };
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();

    if path.starts_with("/_sim/") {
        return Ok(admin::handle(&state, &parts.method, &path, body).await);
    }
    let Some(scope) = sigv4::scope(&parts.headers, query.as_deref()) else {
        // Unsigned requests (moto's own API, health checks) go straight through;
        // one that may change moto's state (a reset) makes every cached fact stale.
        if parts.method != http::Method::GET {
            state.fleet.clear();
        }
        return Ok(forward(&state, "", "", parts.method, &path_and_query, &parts.headers, body).await);
    };
    let service = scope.service.as_str();
    let protocol = protocol::protocol_of(service, &parts.headers);
    let api = protocol::api_name(service, &parts.method, &path, query.as_deref(), &parts.headers, &body);

    let caller = match state.identities.resolve(&scope.access_key) {
        KeyState::Valid(caller) => caller,
        KeyState::Expired => {
            state.count(service, &api, "expired_token");
            return Ok(expired_token(protocol));
        }
    };

    let tunables = state.tunables();
    let fault = state.faults.pick(&tunables.faults, service, &api);
    // A duplicate delivery needs the request again after it was served.
    let duplicate = fault
        .as_ref()
        .is_some_and(|rule| rule.kind == FaultKind::Duplicate)
        .then(|| (parts.headers.clone(), body.clone()));
    let (before, after) = match fault {
        Some(rule) if rule.when == FaultWhen::After => (None, Some(rule)),
        rule => (rule, None),
    };
    if let Some(rule) = before {
        state.count(service, &api, "fault");
        state.count(service, &api, &format!("fault:{}", rule.kind.name()));
        // A slow fault before the call only delays it: it is served late.
        if let Some(answer) = injected(&rule, service, protocol).await {
            return answer;
        }
    }
    if !admitted(&state, &tunables, (&caller.account, &scope.region), (service, &api)) {
        return Ok(protocol::throttling(service, protocol));
    }
    if let Some(delay) = limits::latency(tunables.latency_ms) {
        tokio::time::sleep(delay).await;
    }

    let signed = Signed {
        method: parts.method,
        path,
        query,
        path_and_query,
        headers: parts.headers,
        body,
        access_key: scope.access_key.clone(),
        region: scope.region.clone(),
        service,
        api: &api,
        caller: &caller,
    };
    let response = serve_call(&state, signed, tunables.fleet_cache_ms).await;
    state.count(service, &api, outcome_of(response.status()));
    match after {
        Some(rule) => fault_after(&state, &rule, (service, &api, protocol), duplicate, response).await,
        None => Ok(response),
    }
}

/// The request's body, or the answer to one over [`MAX_BODY`].
async fn read_body(body: Incoming) -> Result<Bytes, Resp> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => Err(protocol::admin_json(
            StatusCode::PAYLOAD_TOO_LARGE,
            &serde_json::json!({"error": format!("request body not read: {error}")}),
        )),
    }
}

/// How a call ended, as the API counters name it.
fn outcome_of(status: StatusCode) -> &'static str {
    match status {
        s if s.is_success() || s.is_redirection() => "ok",
        s if s.is_client_error() => "client_error",
        _ => "server_error",
    }
}

/// A fault injected after the call took effect: the caller is told
/// otherwise, or late, or the request is delivered again.
async fn fault_after(
    state: &SimState,
    rule: &FaultRule,
    (service, api, protocol): (&str, &str, Protocol),
    duplicate: Option<(http::HeaderMap, Bytes)>,
    response: Resp,
) -> Result<Resp, Dropped> {
    state.count(service, api, "fault_after");
    state.count(service, api, &format!("fault_after:{}", rule.kind.name()));
    if let Some((headers, request)) = duplicate {
        return Ok(redeliver(state, &headers, &request, response).await);
    }
    match injected(rule, service, protocol).await {
        Some(answer) => answer,
        None => Ok(response),
    }
}

/// What STS, SSM and the rest answer a call signed with an expired
/// session's key.
fn expired_token(protocol: Protocol) -> Resp {
    let code = if protocol == Protocol::AwsJson {
        "ExpiredTokenException"
    } else {
        "ExpiredToken"
    };
    protocol::error(
        protocol,
        StatusCode::BAD_REQUEST,
        code,
        "The security token included in the request is expired",
    )
}

/// Whether the (account, region)'s quota for the API admits the call now;
/// a throttled call is counted.
fn admitted(
    state: &SimState,
    tunables: &Tunables,
    (account, region): (&str, &str),
    (service, api): (&str, &str),
) -> bool {
    if !tunables.throttling {
        return true;
    }
    let key = CallKey {
        account: account.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        api: api.to_owned(),
    };
    let admitted = state.limits.admit(&key, &tunables.quotas);
    if !admitted {
        state.count(service, api, "throttled");
    }
    admitted
}

/// A signed AWS call that passed the gates (identity, faults, quotas).
struct Signed<'a> {
    method: http::Method,
    path: String,
    query: Option<String>,
    path_and_query: String,
    headers: http::HeaderMap,
    body: Bytes,
    access_key: String,
    region: String,
    service: &'a str,
    api: &'a str,
    caller: &'a crate::identity::Caller,
}

/// Serves a call: SSM Run Command and STS's AssumeRole and
/// GetCallerIdentity here, DescribeInstances from the fleet cache, the
/// rest by moto (CBOR-encoded calls translated to JSON and back).
async fn serve_call(state: &Arc<SimState>, call: Signed<'_>, fleet_cache_ms: u64) -> Resp {
    // GetCallerIdentity of a session the sim handed out is answered here,
    // its signature verified; of a static key, by moto.
    let session_secret = (call.service == "sts" && call.api == "GetCallerIdentity")
        .then(|| state.identities.secret(&call.access_key))
        .flatten();
    match (call.service, session_secret) {
        ("ssm", _) => {
            let ctx = Ctx {
                account: call.caller.account.clone(),
                region: call.region.clone(),
                principal: call.caller.principal_arn.clone(),
            };
            state.ssm.handle(call.api, &ctx, &call.body).await
        }
        ("sts", _) if sts::is_assume_role(&call.method, call.api) => {
            sts::assume_role(state, call.caller, &call.headers, &call.path_and_query, call.body).await
        }
        ("sts", Some(secret)) => {
            let request = sigv4::Request {
                method: call.method.as_str(),
                path: &call.path,
                query: call.query.as_deref(),
                headers: &call.headers,
                body: &call.body,
            };
            sts::get_caller_identity(&call.access_key, call.caller, &secret, &request)
        }
        ("sts", None) if call.api == "GetCallerIdentity" && !call.headers.contains_key(http::header::AUTHORIZATION) => {
            sts::unverifiable_presigned(&call.access_key)
        }
        ("ec2", _) if call.api == "DescribeInstances" => describe_call(state, call, fleet_cache_ms).await,
        _ if crate::cbor::is_rpc_v2(&call.headers) => rpc_v2_call(state, call).await,
        _ => forward_call(state, call).await,
    }
}

/// DescribeInstances, answered from the fleet's cache when it is fresh.
async fn describe_call(state: &Arc<SimState>, call: Signed<'_>, fleet_cache_ms: u64) -> Resp {
    let listing = Listing {
        account: call.caller.account.clone(),
        region: call.region.clone(),
        request: describe_request(&call.path_and_query, &call.body),
        max_age: std::time::Duration::from_millis(fleet_cache_ms),
    };
    let forwarded = Forwarded {
        method: call.method,
        path_and_query: call.path_and_query,
        headers: call.headers,
        body: call.body,
    };
    describe_instances(state.clone(), listing, forwarded).await
}

/// A Smithy RPC v2 CBOR call: moto speaks JSON, so it goes there as JSON
/// and its answer comes back as CBOR.
async fn rpc_v2_call(state: &Arc<SimState>, call: Signed<'_>) -> Resp {
    match crate::cbor::json_request(&call.path, &call.headers, &call.body) {
        Ok((headers, json)) => {
            let answer = forward(
                state,
                call.service,
                &call.caller.account,
                http::Method::POST,
                "/",
                &headers,
                json,
            )
            .await;
            let (answer, body) = answer.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            crate::cbor::cbor_response(answer.status, &body)
        }
        Err(why) => crate::cbor::refusal(&why),
    }
}

/// Any other call goes to moto; what EC2 answers keeps the fleet's facts
/// current.
async fn forward_call(state: &Arc<SimState>, call: Signed<'_>) -> Resp {
    let response = forward(
        state,
        call.service,
        &call.caller.account,
        call.method,
        &call.path_and_query,
        &call.headers,
        call.body,
    )
    .await;
    if call.service == "ec2" {
        observe_ec2(state, &call.caller.account, &call.region, call.api, None, response).await
    } else {
        response
    }
}

/// Makes the messages of a ReceiveMessage answer visible again at once (one
/// ChangeMessageVisibilityBatch to moto), so the next receive delivers them
/// a second time while the first receiver still holds them; the answer
/// itself goes to the caller unchanged. Only the JSON protocol is read.
async fn redeliver(state: &SimState, headers: &http::HeaderMap, request: &Bytes, response: Resp) -> Resp {
    let (parts, body) = response.into_parts();
    let Ok(collected) = body.collect().await;
    let bytes = collected.to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let queue_url = serde_json::from_slice::<serde_json::Value>(request)
        .ok()
        .and_then(|r| r.get("QueueUrl").and_then(|u| u.as_str()).map(str::to_owned));
    let entries: Vec<serde_json::Value> = answer
        .get("Messages")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("ReceiptHandle").and_then(|h| h.as_str()))
        .enumerate()
        .map(|(i, handle)| serde_json::json!({"Id": i.to_string(), "ReceiptHandle": handle, "VisibilityTimeout": 0}))
        .collect();
    if let (Some(queue_url), false) = (queue_url, entries.is_empty()) {
        let mut headers = headers.clone();
        headers.remove(http::header::CONTENT_LENGTH);
        headers.insert(
            "x-amz-target",
            http::HeaderValue::from_static("AmazonSQS.ChangeMessageVisibilityBatch"),
        );
        let change = serde_json::json!({"QueueUrl": queue_url, "Entries": entries}).to_string();
        let changed = forward(state, "sqs", "", http::Method::POST, "/", &headers, Bytes::from(change)).await;
        if changed.status().is_success() {
            state.count("sqs", "ReceiveMessage", "redelivered");
        } else {
            tracing::warn!(status = %changed.status(), "a duplicate delivery was not arranged");
        }
    }
    http::Response::from_parts(parts, Full::new(bytes))
}

/// What an injected fault answers instead of the real answer; `None` for a
/// slow fault, which only waits (the real answer follows).
async fn injected(rule: &FaultRule, service: &str, protocol: Protocol) -> Option<Result<Resp, Dropped>> {
    match rule.kind {
        FaultKind::Drop => Some(Err(Dropped)),
        FaultKind::Error500 => Some(Ok(protocol::server_fault(
            service,
            protocol,
            StatusCode::INTERNAL_SERVER_ERROR,
        ))),
        FaultKind::Error503 => Some(Ok(protocol::server_fault(
            service,
            protocol,
            StatusCode::SERVICE_UNAVAILABLE,
        ))),
        FaultKind::Slow => {
            tokio::time::sleep(std::time::Duration::from_millis(rule.delay_ms)).await;
            None
        }
        // The answer goes through; `redeliver` did the rest.
        FaultKind::Duplicate => None,
    }
}

/// What makes two DescribeInstances requests the same question: path, query
/// and body (filters, ids, page size and token; the signature is a header).
fn describe_request(path_and_query: &str, body: &Bytes) -> Bytes {
    let mut request = Vec::with_capacity(path_and_query.len() + 1 + body.len());
    request.extend_from_slice(path_and_query.as_bytes());
    request.push(b'\n');
    request.extend_from_slice(body);
    Bytes::from(request)
}

/// One DescribeInstances request, as the sim keeps its answers.
struct Listing {
    account: String,
    region: String,
    /// Path, query and body: the same filters and page token.
    request: Bytes,
    max_age: std::time::Duration,
}

/// A request to pass on to moto as it came.
struct Forwarded {
    method: http::Method,
    path_and_query: String,
    headers: http::HeaderMap,
    body: Bytes,
}

/// moto's answer to a DescribeInstances listing, kept or asked for. The
/// asking runs on a task of its own and one at a time per request: moto
/// takes longer to describe 5,000 instances than a caller waits, so the
/// answer is still kept for the caller's retry when the caller gave up, and
/// the retries wait for it instead of each asking moto again.
async fn describe_instances(state: Arc<SimState>, listing: Listing, call: Forwarded) -> Resp {
    if let Some(answer) = kept_answer(
        &state,
        &listing.account,
        &listing.region,
        Some(&listing.request),
        listing.max_age,
    )
    .await
    {
        return answer;
    }
    let asking = tokio::spawn(async move {
        let Listing {
            account,
            region,
            request,
            max_age,
        } = listing;
        let one = state.fleet.asking(&account, &region, &request);
        let _alone = one.lock().await;
        if let Some(answer) = kept_answer(&state, &account, &region, Some(&request), max_age).await {
            return answer;
        }
        let response = forward(
            &state,
            "ec2",
            &account,
            call.method,
            &call.path_and_query,
            &call.headers,
            call.body,
        )
        .await;
        observe_ec2(&state, &account, &region, "DescribeInstances", Some(request), response).await
    });
    asking.await.unwrap_or_else(|error| {
        http::Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Full::new(Bytes::from(format!("the sim's listing failed: {error}"))))
            .expect("static response parts are valid")
    })
}

/// The answer the sim kept for this DescribeInstances `listing`, if fresh,
/// with a request id of its own.
async fn kept_answer(
    state: &SimState,
    account: &str,
    region: &str,
    listing: Option<&Bytes>,
    max_age: std::time::Duration,
) -> Option<Resp> {
    let answer = fleet::replayed(state.fleet.answer(account, region, listing?, max_age).await?);
    let mut response = http::Response::new(Full::new(answer.body));
    *response.headers_mut() = answer.headers;
    Some(response)
}

/// Keeps the sim's instance facts in step with EC2: learns from listings
/// (and keeps the answer to `listing`, the request), forgets a scope after
/// any call that may change it.
async fn observe_ec2(
    state: &SimState,
    account: &str,
    region: &str,
    api: &str,
    listing: Option<Bytes>,
    response: Resp,
) -> Resp {
    if !fleet::reads_only(api) {
        // Even a failed write may have changed something; start afresh.
        state.fleet.invalidate(account, region).await;
        return response;
    }
    let Some(request) = listing.filter(|_| response.status().is_success()) else {
        return response;
    };
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let page = crate::ec2::parse_describe_instances(&bytes);
    state.fleet.learn(account, region, page.instances).await;
    let answer = fleet::Answer {
        headers: parts.headers.clone(),
        body: bytes.clone(),
    };
    state.fleet.keep_answer(account, region, request, answer).await;
    http::Response::from_parts(parts, Full::new(bytes))
}

async fn forward(
    state: &SimState,
    service: &str,
    account: &str,
    method: http::Method,
    path_and_query: &str,
    headers: &http::HeaderMap,
    body: Bytes,
) -> Resp {
    match state
        .moto
        .forward_for(service, account, method, path_and_query, headers, body)
        .await
    {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(%error, "forwarding to moto failed");
            http::Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Full::new(Bytes::from(error.to_string())))
                .expect("static response parts are valid")
        }
    }
}
