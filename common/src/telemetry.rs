//! Logs, traces and the metrics endpoint, shared by every binary.
//!
//! Logs: `RUST_LOG` filters, text for people or JSON for machines, always on
//! stderr so stdout stays clean for output. Traces: OpenTelemetry over OTLP
//! (gRPC), only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; otherwise no exporter exists
//! and nothing connects anywhere. The other standard variables apply as the
//! OpenTelemetry SDKs document them: `_HEADERS`, `_TIMEOUT`, `_PROTOCOL`
//! (`grpc`; another is refused with the reason), `_CERTIFICATE`,
//! `_CLIENT_CERTIFICATE`, `_CLIENT_KEY` (each also as `_TRACES_`), and
//! `OTEL_SERVICE_NAME`/`OTEL_RESOURCE_ATTRIBUTES` over the resource's
//! defaults. Spans follow OpenTelemetry's semantic conventions (see
//! [`attr`]). The W3C `traceparent` carries a task's
//! trace from the controller over SQS to the worker and back in gRPC
//! metadata.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// The installed telemetry; [`Telemetry::shutdown`] flushes spans.
#[must_use = "call shutdown() before exiting so buffered spans are sent"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Where OTLP traces go, from the standard environment; `None` (unset or
/// empty) means tracing export is off.
pub fn otlp_endpoint() -> Option<String> {
    otlp_var(&process_env, "ENDPOINT").map(|(_, value)| value)
}

/// Installs the global subscriber: logs always, OTLP traces when an endpoint
/// is configured. `default_filter` applies when `RUST_LOG` is not set, e.g.
/// "info,aws_config=warn". Must run inside the Tokio runtime (the OTLP
/// exporter's channel lives there).
pub fn init(format: LogFormat, default_filter: &str, service: &'static str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(true)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .with_target(true)
            .boxed(),
    };
    let endpoint = otlp_endpoint();
    let mut export_error = None;
    let provider = endpoint.as_ref().and_then(|endpoint| match tracer_provider(service) {
        Ok(provider) => Some(provider),
        Err(error) => {
            export_error = Some(format!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}: {error}"));
            None
        }
    });
    let traces = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(service)));
    // A second init (tests starting several servers in one process) is fine.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init();
    if let Some(error) = export_error {
        tracing::error!(error, "cannot export traces; running without them");
    } else if provider.is_some() {
        tracing::info!(endpoint, "exporting traces over OTLP");
    }
    Telemetry { provider }
}

/// The process environment, as the OTLP settings read it.
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The first of the trace-specific and general spelling of an OTLP
/// variable that is set: (its name, its value).
fn otlp_var(env: Env<'_>, suffix: &str) -> Option<(String, String)> {
    [
        format!("OTEL_EXPORTER_OTLP_TRACES_{suffix}"),
        format!("OTEL_EXPORTER_OTLP_{suffix}"),
    ]
    .into_iter()
    .find_map(|name| {
        let value = env(&name).filter(|v| !v.trim().is_empty())?;
        Some((name, value.trim().to_owned()))
    })
}

/// The protocol the variables ask for is the one muster speaks (gRPC).
fn otlp_protocol(env: Env<'_>) -> Result<(), String> {
    match otlp_var(env, "PROTOCOL") {
        Some((name, protocol)) if protocol != "grpc" => Err(format!(
            "{name}={protocol}: muster exports OTLP over gRPC only; set it to grpc and point the endpoint at the \
             collector's gRPC port (4317)"
        )),
        _ => Ok(()),
    }
}

/// TLS toward an `https://` collector from the standard variables: the
/// system's roots, or `_CERTIFICATE`'s CA; a client certificate and key for
/// mTLS. A certificate given for a plaintext endpoint is refused rather
/// than ignored.
fn otlp_tls(env: Env<'_>, endpoint: &str) -> Result<Option<tonic::transport::ClientTlsConfig>, String> {
    let (ca, cert, key) = (
        otlp_var(env, "CERTIFICATE"),
        otlp_var(env, "CLIENT_CERTIFICATE"),
        otlp_var(env, "CLIENT_KEY"),
    );
    if !endpoint.trim().starts_with("https://") {
        if let Some((name, _)) = ca.as_ref().or(cert.as_ref()).or(key.as_ref()) {
            return Err(format!("{name} is set but the endpoint {endpoint} is not https://"));
        }
        return Ok(None);
    }
    let read = |(name, path): &(String, String)| {
        std::fs::read(path).map_err(|e| format!("{name}={path}: cannot read it: {e}"))
    };
    let mut tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
    if let Some(ca) = &ca {
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
    }
    match (&cert, &key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(tonic::transport::Identity::from_pem(read(cert)?, read(key)?));
        }
        (Some((name, _)), None) => return Err(format!("{name} is set without OTEL_EXPORTER_OTLP_CLIENT_KEY")),
        (None, Some((name, _))) => {
            return Err(format!("{name} is set without OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"));
        }
        (None, None) => {}
    }
    Ok(Some(tls))
}

fn tracer_provider(service: &'static str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
    otlp_protocol(&process_env)?;
    let endpoint = otlp_endpoint().unwrap_or_default();
    // The exporter reads the endpoint, _HEADERS and _TIMEOUT itself.
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_protocol(opentelemetry_otlp::Protocol::Grpc);
    if let Some(tls) = otlp_tls(&process_env, &endpoint)? {
        exporter = exporter.with_tls_config(tls);
    }
    let exporter = exporter.build().map_err(|e| e.to_string())?;
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (read by the builder)
    // win over the binary's own name.
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !named {
        resource = resource.with_service_name(service);
    }
    let given = std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    let ours = [
        ("service.namespace", "muster"),
        ("service.version", env!("CARGO_PKG_VERSION")),
    ];
    let resource = resource
        .with_attributes(
            ours.into_iter()
                .filter(|(key, _)| !given.contains(&format!("{key}=")))
                .map(|(key, value)| opentelemetry::KeyValue::new(key, value)),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

impl Telemetry {
    /// Sends buffered spans and stops the exporter, waiting at most
    /// `timeout`: a dead collector must not hold up shutdown.
    pub async fn shutdown(self, timeout: Duration) {
        let Some(provider) = self.provider else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout));
        match tokio::time::timeout(timeout + Duration::from_secs(1), flushed).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "flushing spans failed"),
            _ => tracing::warn!(timeout_s = timeout.as_secs(), "flushing spans timed out"),
        }
    }
}

/// Whether `span` is part of an exported trace (false when no exporter is
/// installed): work done only to decorate spans can be skipped otherwise.
pub fn is_traced(span: &Span) -> bool {
    span.context().span().span_context().is_valid()
}

/// The W3C `traceparent` of `span`, when traces are exported.
pub fn traceparent(span: &Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// The `traceparent` of the current span.
pub fn current_traceparent() -> Option<String> {
    traceparent(&Span::current())
}

/// Makes `span` a child of the remote span in `traceparent`. A malformed
/// value is ignored: the span starts its own trace.
pub fn set_parent(span: &Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// A tonic request carrying the current trace context in its metadata.
pub fn traced<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = current_traceparent().and_then(|v| v.parse().ok()) {
        request.metadata_mut().insert("traceparent", value);
    }
    request
}

/// The server span of one gRPC call (`Server::trace_fn`): named after the
/// method, a child of the caller's `traceparent`, with the task's fields
/// left for the handler to fill in ([`record_task`] on `Span::current()`).
pub fn grpc_server_span(request: &http::Request<()>) -> Span {
    // "/muster.v1.WorkerService/LeaseTask"
    let path = request.uri().path().trim_start_matches('/');
    let (service, method) = path.rsplit_once('/').unwrap_or(("", path));
    let span = tracing::info_span!(
        "rpc",
        otel.name = path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        muster.campaign.id = tracing::field::Empty,
        muster.task.id = tracing::field::Empty,
        cloud.account.id = tracing::field::Empty,
        cloud.region = tracing::field::Empty,
    );
    if let Some(parent) = request.headers().get("traceparent").and_then(|v| v.to_str().ok()) {
        set_parent(&span, parent);
    }
    span
}

/// Fills the task fields (declared empty) of `span`.
pub fn record_task(span: &Span, campaign_id: &str, task_id: &str, account: &str, region: &str) {
    span.record(attr::CAMPAIGN_ID, campaign_id);
    span.record(attr::TASK_ID, task_id);
    span.record(attr::ACCOUNT, account);
    span.record(attr::REGION, region);
}

/// Span attribute names: OpenTelemetry's semantic conventions where one
/// exists (`cloud.*`, `rpc.*`, `messaging.*`), `muster.*` for muster's own.
/// The span macros spell them as dotted field names; `Span::record` takes
/// these.
pub mod attr {
    /// The campaign a span worked for.
    pub const CAMPAIGN_ID: &str = "muster.campaign.id";
    /// The task (one attempt's lease) a span worked for.
    pub const TASK_ID: &str = "muster.task.id";
    /// The task's kind (TASK_KIND_DISCOVER, TASK_KIND_EXECUTE).
    pub const TASK_KIND: &str = "muster.task.kind";
    /// The target account (semantic conventions: cloud.account.id).
    pub const ACCOUNT: &str = "cloud.account.id";
    /// The target region (semantic conventions: cloud.region).
    pub const REGION: &str = "cloud.region";
}

/// A future in a box, for the metrics endpoint's callbacks.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Whether the process can do its work; the error says why not.
pub type Readiness = Arc<dyn Fn() -> BoxFuture<Result<(), String>> + Send + Sync>;

/// What the metrics endpoint serves.
#[derive(Clone)]
pub struct Endpoint {
    /// The metrics in the OpenMetrics text format.
    pub render: Arc<dyn Fn() -> BoxFuture<String> + Send + Sync>,
    /// Whether the process can do its work; the error says why not.
    pub ready: Readiness,
    /// The SHA-256 of the bearer token `/metrics` demands, if any (health
    /// and readiness stay open for load balancers and ECS).
    pub token_sha256: Option<[u8; 32]>,
}

impl Endpoint {
    /// An endpoint whose answers are computed from `state` by `render` and
    /// `ready`.
    pub fn new<S, R, RF, Q, QF>(state: Arc<S>, render: R, ready: Q) -> Self
    where
        S: Send + Sync + 'static,
        R: Fn(Arc<S>) -> RF + Send + Sync + 'static,
        RF: Future<Output = String> + Send + 'static,
        Q: Fn(Arc<S>) -> QF + Send + Sync + 'static,
        QF: Future<Output = Result<(), String>> + Send + 'static,
    {
        let for_ready = state.clone();
        Self {
            render: Arc::new(move || Box::pin(render(state.clone()))),
            ready: Arc::new(move || Box::pin(ready(for_ready.clone()))),
            token_sha256: None,
        }
    }

    /// `/metrics` answers only `Authorization: Bearer <token>` (none: anyone
    /// who reaches the listener).
    pub fn with_token(mut self, token: Option<&str>) -> Self {
        self.token_sha256 = token.map(|t| <sha2::Sha256 as sha2::Digest>::digest(t.trim().as_bytes()).into());
        self
    }
}

/// Whether `headers` carry the bearer token whose SHA-256 is `want`.
fn carries_token(headers: &axum::http::HeaderMap, want: &[u8; 32]) -> bool {
    let Some(token) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
    else {
        return false;
    };
    let got: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(token.trim().as_bytes()).into();
    got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Serves `/metrics`, `/healthz` (the process answers), `/readyz` (it can do
/// its work) and the gRPC health service (`grpc.health.v1`, following
/// readiness) on `listener` until `shutdown`.
pub async fn serve_metrics(
    listener: TcpListener,
    endpoint: Endpoint,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use axum::http::HeaderMap;
    use axum::routing::get;

    let addr = listener.local_addr()?;
    let token = endpoint.token_sha256;
    if token.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "metrics are served beyond loopback without a token: anyone who reaches {addr} reads them (set --metrics-token)"
        );
    }
    let (reporter, health) = tonic_health::server::health_reporter();
    let (for_page, ready) = (endpoint.clone(), endpoint.ready.clone());
    let app = tonic::service::Routes::new(health)
        .into_axum_router()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| metrics_page(for_page.clone(), headers)),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(move || readyz(ready.clone())));
    tokio::spawn(grpc_health(reporter, endpoint.ready.clone(), shutdown.clone()));
    let incoming = crate::net::incoming(listener);
    let server = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(app))
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "metrics endpoint stopped");
        }
    });
    Ok((addr, server))
}

/// `/metrics`: the rendered metrics, to a caller with the token if one is
/// set.
async fn metrics_page(endpoint: Endpoint, headers: axum::http::HeaderMap) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse as _;
    if let Some(want) = endpoint.token_sha256
        && !carries_token(&headers, &want)
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "metrics: this endpoint needs 'Authorization: Bearer <the --metrics-token>'\n",
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        (endpoint.render)().await,
    )
        .into_response()
}

/// `/readyz`: 200 when the process can do its work, 503 and why not.
async fn readyz(ready: Readiness) -> (axum::http::StatusCode, String) {
    match ready().await {
        Ok(()) => (axum::http::StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// The gRPC health service follows readiness every 2 s, and says
/// NOT_SERVING once the process stops.
async fn grpc_health(reporter: tonic_health::server::HealthReporter, ready: Readiness, stop: CancellationToken) {
    loop {
        let status = match ready().await {
            Ok(()) => tonic_health::ServingStatus::Serving,
            Err(_) => tonic_health::ServingStatus::NotServing,
        };
        reporter.set_service_status("", status).await;
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_otlp_variables_apply_as_the_sdks_document_them() {
        assert!(otlp_protocol(&env_of(&[])).is_ok(), "gRPC unless told otherwise");
        assert!(otlp_protocol(&env_of(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])).is_ok());
        let refused = otlp_protocol(&env_of(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ]))
        .unwrap_err();
        assert!(
            refused.starts_with("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf: muster exports OTLP over gRPC only"),
            "the trace-specific variable wins, and is named: {refused}"
        );

        assert!(
            otlp_tls(&env_of(&[]), "http://collector:4317").unwrap().is_none(),
            "plaintext"
        );
        assert!(
            otlp_tls(&env_of(&[]), "https://collector:4317").unwrap().is_some(),
            "system roots"
        );
        let error = otlp_tls(
            &env_of(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem")]),
            "http://collector:4317",
        )
        .unwrap_err();
        assert_eq!(
            error,
            "OTEL_EXPORTER_OTLP_CERTIFICATE is set but the endpoint http://collector:4317 is not https://"
        );
        let error = otlp_tls(
            &env_of(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")]),
            "https://collector:4317",
        )
        .unwrap_err();
        assert!(
            error.starts_with("OTEL_EXPORTER_OTLP_CERTIFICATE=/nonexistent/ca.pem: cannot read it"),
            "{error}"
        );
        let error = otlp_tls(
            &env_of(&[("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", "/etc/c.pem")]),
            "https://collector:4317",
        )
        .unwrap_err();
        assert_eq!(
            error,
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE is set without OTEL_EXPORTER_OTLP_CLIENT_KEY"
        );
    }

    /// The status line of `GET path` on `addr`, with an authorization header.
    async fn status_of(addr: SocketAddr, path: &str, authorization: Option<&str>) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = authorization
            .map(|a| format!("authorization: {a}\r\n"))
            .unwrap_or_default();
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer.lines().next().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn metrics_demand_the_token_and_health_stays_open() {
        let endpoint = Endpoint::new(Arc::new(()), |_| async { "# EOF\n".to_owned() }, |_| async { Ok(()) })
            .with_token(Some("a-metrics-token-0123"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stop = CancellationToken::new();
        let (addr, server) = serve_metrics(listener, endpoint, stop.clone()).await.unwrap();
        assert_eq!(status_of(addr, "/metrics", None).await, "HTTP/1.1 401 Unauthorized");
        assert_eq!(
            status_of(addr, "/metrics", Some("Bearer wrong-token-0123456")).await,
            "HTTP/1.1 401 Unauthorized"
        );
        assert_eq!(
            status_of(addr, "/metrics", Some("Bearer a-metrics-token-0123")).await,
            "HTTP/1.1 200 OK"
        );
        assert_eq!(status_of(addr, "/healthz", None).await, "HTTP/1.1 200 OK");
        assert_eq!(status_of(addr, "/readyz", None).await, "HTTP/1.1 200 OK");
        stop.cancel();
        server.await.unwrap();
    }

    #[test]
    fn without_an_exporter_there_is_no_trace_context_to_send() {
        let span = tracing::info_span!("task");
        assert_eq!(traceparent(&span), None);
        let request = traced(());
        assert!(request.metadata().get("traceparent").is_none());
    }
}
