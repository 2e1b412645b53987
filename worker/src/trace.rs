//! Spans of one task. Every span a task makes carries its campaign, task,
//! account and region, taken from a task-local [`Scope`] set when the lease
//! is granted, so code deep in a call (an AWS call, a gRPC report) need not
//! be handed them.

use std::future::Future;
use std::sync::Arc;

use tracing::Span;

tokio::task_local! {
    static SCOPE: Arc<Scope>;
}

/// Which task the current code works for.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Campaign id.
    pub campaign_id: String,
    /// Task id.
    pub task_id: String,
    /// Account id.
    pub account: String,
    /// Region.
    pub region: String,
}

/// Runs `future` with `scope` as the current task's.
pub async fn scoped<F: Future>(scope: Arc<Scope>, future: F) -> F::Output {
    SCOPE.scope(scope, future).await
}

/// The current task's scope, if any.
pub fn current() -> Option<Arc<Scope>> {
    SCOPE.try_with(Arc::clone).ok()
}

/// A span for one step of the current task (`kind`: "internal" or
/// "client"), named `name` in traces. Outside a task the fields stay empty
/// until [`record`] fills them.
pub fn step(name: &'static str, kind: &'static str) -> Span {
    let span = task_span(kind);
    span.record("otel.name", name);
    span
}

/// The client span of one call to another service, for the current task,
/// with OpenTelemetry's RPC attributes: `system` is "grpc" (named
/// "service/method", as its server span) or "aws-api" (named
/// "Service.Method", as AWS's SDKs name theirs).
pub fn rpc(system: &'static str, service: &'static str, method: &'static str) -> Span {
    let name = if system == "grpc" {
        format!("{service}/{method}")
    } else {
        format!("{service}.{method}")
    };
    let span = task_span("client");
    span.record("otel.name", name.as_str());
    span.record("rpc.system", system);
    span.record("rpc.service", service);
    span.record("rpc.method", method);
    span
}

/// A span with every field a worker's spans may carry, the current task's
/// filled in; the caller records its name and the rest.
fn task_span(kind: &'static str) -> Span {
    let span = tracing::info_span!(
        "step",
        otel.name = tracing::field::Empty,
        otel.kind = kind,
        rpc.system = tracing::field::Empty,
        rpc.service = tracing::field::Empty,
        rpc.method = tracing::field::Empty,
        muster.campaign.id = tracing::field::Empty,
        muster.task.id = tracing::field::Empty,
        cloud.account.id = tracing::field::Empty,
        cloud.region = tracing::field::Empty,
    );
    if let Some(scope) = current() {
        record(&span, &scope);
    }
    span
}

/// Fills a span's task fields.
pub fn record(span: &Span, scope: &Scope) {
    muster_common::telemetry::record_task(span, &scope.campaign_id, &scope.task_id, &scope.account, &scope.region);
}
