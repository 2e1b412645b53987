//! WorkerService: leases and reports from workers.
//!
//! A worker is known by its certificate's SPIFFE ID
//! (`spiffe://<trust-domain>/worker/<name>`), never by what it says, and
//! every lease records its holder. Each call names a lease, which must be a
//! lease of that task held by the caller. Ownership changes (renew,
//! complete, fail) and discovery need the task's current lease; facts
//! (commands sent, results) are recorded from any lease of the task the
//! caller held, idempotently, and only for the task's own instances.
//! Everything else is PERMISSION_DENIED naming the rule, counted in
//! `muster_controller_worker_calls_refused_total` and logged. A worker
//! older than the worker protocol (`muster_proto::WORKER_PROTOCOL`) is
//! leased nothing: FAILED_PRECONDITION, counted and logged the same way.

use std::sync::Arc;

use muster_proto::v1::worker_service_server::WorkerService;
use muster_proto::v1::{
    AwaitCommandsRequest, AwaitCommandsResponse, CompleteTaskRequest, CompleteTaskResponse, EndedCommand,
    FailTaskRequest, FailTaskResponse, Lease, LeaseTaskRequest, LeaseTaskResponse, RenewLeaseRequest,
    RenewLeaseResponse, ReportDispatchRequest, ReportDispatchResponse, ReportResultsRequest, ReportResultsResponse,
    ReportTargetsRequest, ReportTargetsResponse, TaskKind, TaskRef,
};
use tonic::{Request, Response, Status};

use crate::Controller;
use crate::access::ExternalIds;
use crate::store::ingest::{self, Reported};
use crate::store::leases::{self, Ending, FailOutcome, Fenced, LeaseAnswer, LeaseSettings};
use crate::store::records::millis;
use crate::store::tasks::{self, TaskRow};
use crate::store::{Sql, StoreError};
use crate::store::{campaigns, command_endings, queue, targets};

/// Most instances in one ReportTargets.
const MAX_REPORTED_INSTANCES: usize = 5_000;
/// Most results in one ReportResults.
const MAX_RESULTS: usize = 1_000;
/// The largest ReportResults (with its compressed output expanded) whose
/// output is encoded on the async thread that took it: at zstd's fastest
/// level, about a millisecond's work.
const ENCODED_IN_PLACE: usize = 256 * 1024;
/// Most instance ids in one ReportDispatch (SendCommand's limit).
const MAX_DISPATCH_IDS: usize = 50;
/// Most leases handed to a worker with one CompleteTask or LeaseTask answer:
/// as many as one scope may have in flight (`--max-tasks-per-scope` is at
/// most 100), so that all of a scope's first batches go to the worker that
/// discovered it and one rate limiter paces the scope's calls. Spread over
/// workers, each learns the scope's quota alone and together they overrun it.
const MAX_HANDED_OFF: u32 = 100;
/// Most command ids in one AwaitCommands.
const MAX_AWAITED: usize = 5_000;
/// Most campaign ids in one AwaitCommands.
const MAX_AWAITED_CAMPAIGNS: usize = 100;
/// Longest AwaitCommands wait.
const MAX_AWAIT: std::time::Duration = std::time::Duration::from_secs(20);
/// How often a waiting AwaitCommands looks in the store for endings and
/// cancels it was not woken for: on PostgreSQL, a wake-up missed while the
/// listener reconnected (see [`crate::store::wakes`]).
const AWAIT_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// The service.
pub struct WorkerApi {
    ctl: Arc<Controller>,
    /// The trust domain of worker identities; none when serving plaintext
    /// (development on loopback), where callers cannot be known.
    trust_domain: Option<String>,
}

impl WorkerApi {
    /// Serves `ctl`; workers are known by SPIFFE IDs in `trust_domain`
    /// (none: plaintext, callers unknown).
    pub fn new(ctl: Arc<Controller>, trust_domain: Option<String>) -> Self {
        Self { ctl, trust_domain }
    }

    /// The worker calling: the name its certificate's SPIFFE ID gives (none
    /// in plaintext).
    fn caller<T>(&self, request: &Request<T>, method: &'static str) -> Result<Option<String>, Status> {
        let Some(domain) = &self.trust_domain else {
            return Ok(None);
        };
        let identity = request
            .peer_certs()
            .and_then(|certs| certs.first().cloned())
            .ok_or_else(|| "the call carries no client certificate".to_owned())
            .and_then(|leaf| muster_common::identity::worker_identity(leaf.as_ref()))
            .and_then(|(found, name)| {
                if found == *domain {
                    Ok(name)
                } else {
                    Err(format!("the certificate's trust domain '{found}' is not '{domain}'"))
                }
            });
        identity.map(Some).map_err(|reason| {
            self.deny(
                method,
                "identity",
                &format!(
                    "worker identity: {reason}; workers are known by the URI SAN spiffe://{domain}/worker/<name> \
                     of a certificate from the worker CA"
                ),
            )
        })
    }

    /// PERMISSION_DENIED for `rule`, counted and logged.
    fn deny(&self, method: &'static str, rule: &'static str, message: &str) -> Status {
        self.ctl.metrics.worker_call_refused(method, rule);
        tracing::warn!(method, rule, message, "worker call refused");
        Status::permission_denied(message)
    }

    /// A worker older than the worker protocol this controller speaks would
    /// run its tasks wrongly (a sequence's first command only, a cancelled
    /// campaign's batch sent): it is leased nothing. FAILED_PRECONDITION,
    /// counted and logged; its queue message comes back for another worker.
    fn speaks_protocol(&self, worker_id: &str, protocol: u32) -> Result<(), Status> {
        if protocol >= muster_proto::WORKER_PROTOCOL {
            return Ok(());
        }
        let message = format!(
            "protocol: worker '{}' speaks worker protocol {protocol}, older than this controller's {}: \
             upgrade the worker; it is leased nothing, and the task's message goes back to the queue for a \
             worker that speaks it",
            muster_common::domain::clip(worker_id),
            muster_proto::WORKER_PROTOCOL,
        );
        self.ctl.metrics.worker_call_refused("LeaseTask", "protocol");
        tracing::warn!(method = "LeaseTask", rule = "protocol", message, "worker call refused");
        Err(Status::failed_precondition(message))
    }

    /// The status of a failed write: PERMISSION_DENIED for a refused lease
    /// or scope, counted and logged; else as the store's error maps.
    fn refused(&self, method: &'static str, error: StoreError) -> Status {
        match error {
            StoreError::Denied { rule, message } => self.deny(method, rule, &message),
            other => other.into(),
        }
    }

    /// A LeaseTask's task reference, once the request is well formed and
    /// the caller asks under its own name (its certificate's, when there is
    /// one).
    fn lease_request(&self, request: &LeaseTaskRequest, caller: Option<&str>) -> Result<TaskRef, Status> {
        let task_ref = request
            .task
            .clone()
            .ok_or_else(|| crate::validate::refused("task: is required"))?;
        if uuid::Uuid::parse_str(&task_ref.task_id).is_err() || uuid::Uuid::parse_str(&task_ref.campaign_id).is_err() {
            return Err(crate::validate::refused("task: campaign_id and task_id must be UUIDs"));
        }
        if request.worker_id.is_empty() || request.worker_id.len() > 256 {
            return Err(crate::validate::refused("worker_id: 1 to 256 characters"));
        }
        if request.request_id.len() > 64 {
            return Err(crate::validate::refused(format!(
                "request_id: at most 64 characters, got {}",
                request.request_id.len()
            )));
        }
        if let Some(name) = caller
            && request.worker_id != name
        {
            return Err(self.deny(
                "LeaseTask",
                "worker_id",
                &format!(
                    "worker_id: '{}' is not the caller's identity '{name}' (from its certificate); a worker leases \
                     under its own name",
                    muster_common::domain::clip(&request.worker_id)
                ),
            ));
        }
        Ok(task_ref)
    }

    fn lease_settings(&self) -> LeaseSettings {
        LeaseSettings {
            ttl_ms: self.ctl.settings.lease_ttl.as_millis() as i64,
            max_tasks_per_scope: self.ctl.settings.max_tasks_per_scope,
        }
    }

    /// Fills the current span's task fields from the store (best effort:
    /// for calls whose answer does not carry the task).
    async fn trace_task(&self, task_id: &str) {
        // An extra read on every renewal is only worth it for an exported trace.
        if !muster_common::telemetry::is_traced(&tracing::Span::current()) || uuid::Uuid::parse_str(task_id).is_err() {
            return;
        }
        let id = task_id.to_owned();
        if let Ok(Some(task)) = self.ctl.store.read(move |conn| tasks::get(conn, &id)).await {
            trace_row(&task);
        }
    }

    /// The fleet as this controller hears it, counting the calling worker
    /// when its certificate names it (0 without: not counted).
    fn workers(&self, caller: Option<&str>) -> u32 {
        caller.map_or(0, |worker| self.ctl.fleet.heard(worker))
    }

    /// The task a report is about, once the caller is known to hold
    /// `lease_id` of it; unknown tasks, wrong kinds and other workers'
    /// leases are refused.
    async fn held_task(&self, held: Held, task_id: &str, kind: TaskKind) -> Result<TaskRow, Status> {
        Ok(self.held_task_and(held, task_id, kind, |_, _| Ok(())).await?.0)
    }

    /// [`Self::held_task`], and what `also` reads about the task, in one
    /// read apart from the writer. The lease check may run there: a lease's
    /// task and holder never change once it is granted, so what the read
    /// finds still holds when the report is written. (Moved off the writer,
    /// it is one round trip fewer there per report.)
    async fn held_task_and<T: Send + 'static>(
        &self,
        held: Held,
        task_id: &str,
        kind: TaskKind,
        also: impl FnOnce(&dyn Sql, &TaskRow) -> crate::store::StoreResult<T> + Send + 'static,
    ) -> Result<(TaskRow, T), Status> {
        if uuid::Uuid::parse_str(task_id).is_err() {
            return Err(crate::validate::refused("task_id: not a task id (a UUID)"));
        }
        let id = task_id.to_owned();
        let Held {
            method,
            lease_id,
            caller,
        } = held;
        let (task, also) = self
            .ctl
            .store
            .read(move |conn| {
                let Some(task) = tasks::get(conn, &id)? else {
                    return Ok(None);
                };
                if task.kind != kind {
                    return Ok(Some((task, None)));
                }
                // A refusal is the caller's to hear, with its rule counted:
                // kept apart from a failed read.
                let also =
                    leases::check_holder(conn, &task.id, lease_id, caller.as_deref()).and_then(|()| also(conn, &task));
                Ok(Some((task, Some(also))))
            })
            .await?
            .ok_or_else(|| Status::not_found(format!("task_id: no task {task_id}")))?;
        trace_row(&task);
        match also {
            Some(also) => Ok((task, also.map_err(|e| self.refused(method, e))?)),
            None => Err(crate::validate::refused(format!(
                "task_id: task {task_id} is a {} task",
                task.kind.as_str_name()
            ))),
        }
    }
}

/// A report's claim to a task: the method, for refusals' metric, the lease
/// it names and the worker calling (from its certificate, when it has one).
struct Held {
    method: &'static str,
    lease_id: u64,
    caller: Option<String>,
}

/// Starts the trace of a task handed out with an answer (CompleteTask's, or
/// LeaseTask's for the same account), as the enqueue span starts that of a
/// task from the queue; its `traceparent`, when traces are exported.
fn handed_off_trace(lease: &Lease) -> Option<String> {
    let task = lease.task.as_ref()?;
    crate::dispatcher::start_trace(
        "hand off task",
        &task.campaign_id,
        &task.task_id,
        task.attempt,
        (&task.account_id, &task.region),
    )
}

/// The key LeaseTask's leases are granted for: the worker and the id it
/// gave the ask ('' when it gave none, and the ask cannot be repeated).
fn ask_key(worker: &str, request_id: &str) -> String {
    if request_id.is_empty() {
        String::new()
    } else {
        format!("ask:{worker}:{request_id}")
    }
}

/// A LeaseTask repeated because its answer was lost: the lease on the task
/// it asks for and the same-account leases the first ask granted, those
/// still held, renewed. None when the first ask granted nothing that is
/// still held (or this is the first).
fn replayed(
    txn: &dyn Sql,
    key: &str,
    task_id: &str,
    settings: LeaseSettings,
) -> Result<Option<(Lease, Vec<Lease>)>, StoreError> {
    if key.is_empty() {
        return Ok(None);
    }
    let mut held = leases::held_for(txn, key)?;
    let Some(asked) = held.iter().position(|(task, _)| task == task_id) else {
        return Ok(None);
    };
    // The asked-for lease first, as the first answer had it.
    held.swap(0, asked);
    let mut again = leases::answer_again(txn, &held, settings)?;
    let lease = again.remove(0);
    tracing::info!(
        task_id,
        same_account = again.len(),
        "LeaseTask repeated; answered as before"
    );
    Ok(Some((lease, again)))
}

/// At most `most` ids, each 1 to 64 characters (an SSM command id and a
/// campaign id are both 36).
fn check_awaited(field: &str, ids: &[String], most: usize) -> Result<(), Status> {
    if ids.len() > most {
        return Err(crate::validate::refused(format!(
            "{field}: at most {most} ids, got {}",
            ids.len()
        )));
    }
    if let Some(bad) = ids.iter().find(|id| id.is_empty() || id.len() > 64) {
        return Err(crate::validate::refused(format!(
            "{field}: each id is 1 to 64 characters, got {:?}",
            bad.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

/// The lose point `worker_api.<method>` (`MUSTER_LOSE_AT`, for fault
/// tests): the call has taken effect, and its caller hears UNAVAILABLE, as
/// when the connection breaks before the answer.
fn lose_answer(method: &str) -> Result<(), Status> {
    if muster_common::crash::answer_lost(&format!("worker_api.{method}")) {
        return Err(Status::unavailable(format!(
            "{method}: the answer was lost (MUSTER_LOSE_AT); the call took effect"
        )));
    }
    Ok(())
}

/// With a lease on a Discover task, leases on the campaign's other Discover
/// tasks in that account that no worker holds, at most `capacity`: the
/// worker that assumes an account's role for one region finds the others
/// with the same credentials, not one AssumeRole per worker per account.
fn lease_same_account(
    conn: &dyn Sql,
    granted: &Lease,
    worker: &str,
    capacity: u32,
    settings: LeaseSettings,
    granted_for: &str,
) -> Result<Vec<Lease>, StoreError> {
    let Some(task) = granted.task.as_ref() else {
        return Ok(Vec::new());
    };
    if capacity == 0 || task.kind != TaskKind::Discover as i32 {
        return Ok(Vec::new());
    }
    let mut leases = Vec::new();
    for sibling in queue::waiting_discovery(conn, &task.campaign_id, &task.account_id, &task.task_id, capacity)? {
        if let LeaseAnswer::Granted(lease) = leases::lease_for(conn, &sibling, worker, settings, granted_for)? {
            leases.push(*lease);
        }
    }
    Ok(leases)
}

/// Puts into a lease's task the ExternalId that the configuration holds for
/// its account (the store names which one; never the value).
fn with_external_id(conn: &dyn Sql, ids: &ExternalIds, lease: &mut Lease) -> Result<(), StoreError> {
    let Some(task) = lease.task.as_mut() else {
        return Ok(());
    };
    let (reference, submitted) = campaigns::external_id_ref(conn, &task.campaign_id, &task.account_id)?;
    if reference.is_empty() {
        // None configured for the account (or a campaign stored before
        // ExternalIds moved to the configuration, which keeps its own).
        return Ok(());
    }
    match ids.value(&reference, &submitted) {
        Some(value) => task.external_id = value.to_owned(),
        None => tracing::error!(
            campaign_id = %task.campaign_id,
            account = %task.account_id,
            reference,
            "the ExternalId this campaign was submitted with is no longer configured; AssumeRole goes without one"
        ),
    }
    Ok(())
}

/// Fills the current (server) span's task fields from a task row.
fn trace_row(task: &TaskRow) {
    muster_common::telemetry::record_task(
        &tracing::Span::current(),
        &task.campaign_id,
        &task.id,
        &task.account_id,
        &task.region,
    );
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    async fn lease_task(&self, request: Request<LeaseTaskRequest>) -> Result<Response<LeaseTaskResponse>, Status> {
        let caller = self.caller(&request, "LeaseTask")?;
        let request = request.into_inner();
        let task_ref = self.lease_request(&request, caller.as_deref())?;
        self.speaks_protocol(&request.worker_id, request.protocol)?;
        let settings = self.lease_settings();
        let worker = request.worker_id.clone();
        let capacity = request.capacity.min(MAX_HANDED_OFF);
        let ctl = self.ctl.clone();
        let key = ask_key(&worker, &request.request_id);
        let (answer, same_account, repeated) = self
            .ctl
            .store
            .write(move |txn: &dyn Sql| {
                let ids = &ctl.settings.external_ids;
                let replay = replayed(txn, &key, &task_ref.task_id, settings)?;
                let repeated = replay.is_some();
                let (mut answer, mut same_account) = match replay {
                    Some((lease, same_account)) => (LeaseAnswer::Granted(Box::new(lease)), same_account),
                    None => {
                        let answer = leases::lease_for(txn, &task_ref, &worker, settings, &key)?;
                        let same_account = match &answer {
                            LeaseAnswer::Granted(lease) => {
                                lease_same_account(txn, lease, &worker, capacity, settings, &key)?
                            }
                            LeaseAnswer::Refused(..) => Vec::new(),
                        };
                        (answer, same_account)
                    }
                };
                if let LeaseAnswer::Granted(lease) = &mut answer {
                    with_external_id(txn, ids, lease)?;
                }
                for lease in &mut same_account {
                    with_external_id(txn, ids, lease)?;
                }
                Ok((answer, same_account, repeated))
            })
            .await?;
        // A repeat was counted the first time.
        let count_lease = || {
            if !repeated {
                self.ctl.metrics.leased(&request.worker_id);
            }
        };
        let same_account: Vec<Lease> = same_account
            .into_iter()
            .map(|mut lease| {
                count_lease();
                lease.traceparent = handed_off_trace(&lease).unwrap_or_default();
                lease
            })
            .collect();
        let workers = self.ctl.fleet.heard(&request.worker_id);
        lose_answer("LeaseTask")?;
        Ok(Response::new(match answer {
            LeaseAnswer::Granted(lease) => {
                let task = lease.task.as_ref();
                count_lease();
                if let Some(task) = task {
                    muster_common::telemetry::record_task(
                        &tracing::Span::current(),
                        &task.campaign_id,
                        &task.task_id,
                        &task.account_id,
                        &task.region,
                    );
                }
                tracing::debug!(
                    task_id = task.map(|t| t.task_id.as_str()),
                    lease_id = lease.lease_id,
                    worker = request.worker_id,
                    same_account = same_account.len(),
                    "lease granted"
                );
                LeaseTaskResponse {
                    outcome: muster_proto::v1::LeaseOutcome::Granted as i32,
                    lease: Some(*lease),
                    detail: String::new(),
                    same_account,
                    workers,
                }
            }
            LeaseAnswer::Refused(outcome, detail) => LeaseTaskResponse {
                outcome: outcome as i32,
                lease: None,
                detail,
                same_account: Vec::new(),
                workers,
            },
        }))
    }

    async fn renew_lease(&self, request: Request<RenewLeaseRequest>) -> Result<Response<RenewLeaseResponse>, Status> {
        let caller = self.caller(&request, "RenewLease")?;
        let workers = self.workers(caller.as_deref());
        let request = request.into_inner();
        self.trace_task(&request.task_id).await;
        let ttl = self.ctl.settings.lease_ttl;
        let ttl_ms = ttl.as_millis() as i64;
        let cancelled = self
            .ctl
            .store
            .write(move |txn| {
                leases::check_holder(txn, &request.task_id, request.lease_id, caller.as_deref())?;
                leases::renew(txn, &request.task_id, request.lease_id, ttl_ms)
            })
            .await
            .map_err(|e| self.refused("RenewLease", e))?;
        lose_answer("RenewLease")?;
        Ok(Response::new(RenewLeaseResponse {
            ttl: Some(prost_types::Duration {
                seconds: ttl.as_secs() as i64,
                nanos: ttl.subsec_nanos() as i32,
            }),
            campaign_cancelled: cancelled,
            workers,
        }))
    }

    async fn report_targets(
        &self,
        request: Request<ReportTargetsRequest>,
    ) -> Result<Response<ReportTargetsResponse>, Status> {
        let caller = self.caller(&request, "ReportTargets")?;
        let request = request.into_inner();
        if request.instances.len() > MAX_REPORTED_INSTANCES {
            return Err(crate::validate::refused(format!(
                "instances: at most {MAX_REPORTED_INSTANCES} per request"
            )));
        }
        for (i, instance) in request.instances.iter().enumerate() {
            if let Err(e) = muster_common::domain::check_instance_id(&instance.instance_id) {
                return Err(crate::validate::refused(format!("instances[{i}].instance_id: {e}")));
            }
        }
        let held = Held {
            method: "ReportTargets",
            lease_id: request.lease_id,
            caller,
        };
        let task = self.held_task(held, &request.task_id, TaskKind::Discover).await?;
        let accepted = self
            .ctl
            .store
            .write(move |txn| {
                // Instances are found under the current lease only: a
                // finished discovery takes no more.
                let task = leases::current(txn, &task.id, request.lease_id)?;
                targets::insert_discovered(txn, &task, &request.instances)
            })
            .await
            .map_err(|e| self.refused("ReportTargets", e))?;
        lose_answer("ReportTargets")?;
        Ok(Response::new(ReportTargetsResponse { accepted }))
    }

    async fn report_dispatch(
        &self,
        request: Request<ReportDispatchRequest>,
    ) -> Result<Response<ReportDispatchResponse>, Status> {
        let caller = self.caller(&request, "ReportDispatch")?;
        let request = request.into_inner();
        if request.command_id.is_empty() || request.command_id.len() > 64 {
            return Err(crate::validate::refused("command_id: 1 to 64 characters"));
        }
        if request.instance_ids.is_empty() || request.instance_ids.len() > MAX_DISPATCH_IDS {
            return Err(crate::validate::refused(format!(
                "instance_ids: 1 to {MAX_DISPATCH_IDS} ids"
            )));
        }
        if request.step > crate::validate::MAX_THEN as u32 {
            return Err(crate::validate::refused(format!(
                "step: {}; a sequence has at most {} commands after the first",
                request.step,
                crate::validate::MAX_THEN
            )));
        }
        let held = Held {
            method: "ReportDispatch",
            lease_id: request.lease_id,
            caller,
        };
        let task = self.held_task(held, &request.task_id, TaskKind::Execute).await?;
        let (task_id, command_id) = (task.id.clone(), request.command_id.clone());
        let (instances, adopted) = (request.instance_ids.len(), request.adopted);
        let sent = request.sent_at.as_ref().map(millis);
        self.ctl
            .store
            .write(move |txn| {
                targets::record_dispatch(
                    txn,
                    &task,
                    (&request.command_id, request.step),
                    &request.instance_ids,
                    sent,
                    request.adopted,
                )
            })
            .await
            .map_err(|e| self.refused("ReportDispatch", e))?;
        tracing::info!(task_id, command_id, instances, adopted, "dispatch recorded");
        lose_answer("ReportDispatch")?;
        Ok(Response::new(ReportDispatchResponse {}))
    }

    async fn report_results(
        &self,
        request: Request<ReportResultsRequest>,
    ) -> Result<Response<ReportResultsResponse>, Status> {
        let caller = self.caller(&request, "ReportResults")?;
        let request = request.into_inner();
        if request.results.len() > MAX_RESULTS {
            return Err(crate::validate::refused(format!(
                "results: at most {MAX_RESULTS} per request"
            )));
        }
        let size = prost::Message::encoded_len(&request);
        if size > muster_proto::MAX_REPORT_BYTES {
            return Err(crate::validate::refused(format!(
                "results: this report is {size} bytes; at most {} per ReportResults (send fewer results at once)",
                muster_proto::MAX_REPORT_BYTES
            )));
        }
        // The store keeps what the campaign asked for, whatever a worker
        // sends. (A spec never changes: read apart from the writer.)
        let held = Held {
            method: "ReportResults",
            lease_id: request.lease_id,
            caller,
        };
        let (task, keep) = self
            .held_task_and(held, &request.task_id, TaskKind::Execute, |conn, task| {
                campaigns::keep_bytes(conn, &task.campaign_id)
            })
            .await?;
        let campaign = task.campaign_id.clone();
        let task_id = task.id.clone();
        let scope = (task.account_id.clone(), task.region.clone());
        // Output is clipped and encoded (compressed) here, on as many
        // threads as reports arrive at once: the writer is one thread. A
        // large report is encoded off the async threads, and so is one
        // whose compressed output expands large. That expands to no more,
        // all told, than a report may carry plain.
        let work = request
            .results
            .iter()
            .map(|r| muster_proto::stated_size(&r.compressed_steps))
            .fold(size, usize::saturating_add);
        let encode = move || {
            let mut clipped = Vec::new();
            let mut budget = muster_proto::MAX_REPORT_BYTES;
            let results = request
                .results
                .into_iter()
                .enumerate()
                .map(|(i, result)| {
                    let (reported, was_clipped) =
                        Reported::new(result, keep, &mut budget).map_err(|e| format!("results[{i}].{e}"))?;
                    if was_clipped {
                        clipped.push(reported.result.instance_id.clone());
                    }
                    Ok(reported)
                })
                .collect::<Result<Vec<Reported>, String>>()?;
            Ok::<_, String>((results, clipped))
        };
        let encoded = if work <= ENCODED_IN_PLACE {
            encode()
        } else {
            tokio::task::spawn_blocking(encode)
                .await
                .map_err(|e| Status::internal(format!("encoding the report's output: {e}")))?
        };
        let (results, clipped) = encoded.map_err(|e| crate::validate::invalid_argument(&[e], ""))?;
        let ingested = self
            .ctl
            .store
            .write(move |txn| ingest::results(txn, &task, &results))
            .await
            .map_err(|e| match e {
                StoreError::Corrupt(message) => crate::validate::refused(message),
                other => self.refused("ReportResults", other),
            })?;
        if !clipped.is_empty() {
            tracing::warn!(
                task_id,
                instances = clipped.len(),
                "a report carried output beyond the campaign's keep_bytes; clipped"
            );
        }
        let (accepted, duplicates) = (ingested.accepted(), ingested.duplicates);
        self.ctl.metrics.ingested(accepted, duplicates);
        if accepted > 0 && self.ctl.watchers.wants_targets(&campaign) {
            let (written, (account, region)) = (ingested.written, scope);
            let of = campaign.clone();
            crate::remote_results::publish_written(&self.ctl, campaign, move |conn| {
                let ids: Vec<&str> = written.iter().map(String::as_str).collect();
                targets::of_instances(conn, &of, (&account, &region), &ids)
            })
            .await;
        }
        if accepted > 0 {
            self.ctl.wake.notify_one();
        }
        lose_answer("ReportResults")?;
        Ok(Response::new(ReportResultsResponse { accepted, duplicates }))
    }

    async fn complete_task(
        &self,
        request: Request<CompleteTaskRequest>,
    ) -> Result<Response<CompleteTaskResponse>, Status> {
        let caller = self.caller(&request, "CompleteTask")?;
        let workers = self.workers(caller.as_deref());
        let request = request.into_inner();
        // A worker older than this controller's protocol completes its
        // task, but is handed nothing: the batches go through the queue.
        let capacity = if request.protocol < muster_proto::WORKER_PROTOCOL {
            0
        } else {
            request.capacity.min(MAX_HANDED_OFF)
        };
        let lease = self.lease_settings();
        let ctl = self.ctl.clone();
        let (task, mut next, repeated) = self
            .ctl
            .store
            .write(move |txn| {
                leases::check_holder(txn, &request.task_id, request.lease_id, caller.as_deref())?;
                // The leases a completion hands on are granted for the
                // lease it completes: a repeat finds them again.
                let key = format!("done:{}", request.lease_id);
                let (task, mut next, repeated) = match leases::complete(txn, &request.task_id, request.lease_id) {
                    Ok(task) => {
                        let next = crate::reconcile::hand_off(txn, &task, capacity, &ctl.settings, lease, &key)?;
                        (task, next, false)
                    }
                    // Completed under this very lease: a repeat whose first
                    // answer was lost. It is told the same again.
                    Err(StoreError::Lease(Fenced::Stale))
                        if leases::completed_under(txn, &request.task_id, request.lease_id)? =>
                    {
                        let task = tasks::get(txn, &request.task_id)?
                            .ok_or_else(|| StoreError::Corrupt(format!("task {} is gone", request.task_id)))?;
                        let held = leases::held_for(txn, &key)?;
                        (task, leases::answer_again(txn, &held, lease)?, true)
                    }
                    Err(error) => return Err(error),
                };
                for lease in &mut next {
                    with_external_id(txn, &ctl.settings.external_ids, lease)?;
                }
                Ok((task, next, repeated))
            })
            .await
            .map_err(|e| self.refused("CompleteTask", e))?;
        for lease in &mut next {
            lease.traceparent = handed_off_trace(lease).unwrap_or_default();
        }
        if repeated {
            // Counted the first time.
            tracing::info!(task_id = %task.id, handed_off = next.len(), "CompleteTask repeated; answered as before");
            lose_answer("CompleteTask")?;
            return Ok(Response::new(CompleteTaskResponse { next, workers }));
        }
        trace_row(&task);
        self.ctl.metrics.completed(task.kind);
        for _ in &next {
            self.ctl.metrics.leased(task.lease_owner.as_deref().unwrap_or_default());
        }
        tracing::debug!(task_id = %task.id, kind = task.kind.as_str_name(), handed_off = next.len(), "task completed");
        self.ctl.wake.notify_one();
        lose_answer("CompleteTask")?;
        Ok(Response::new(CompleteTaskResponse { next, workers }))
    }

    async fn await_commands(
        &self,
        request: Request<AwaitCommandsRequest>,
    ) -> Result<Response<AwaitCommandsResponse>, Status> {
        self.caller(&request, "AwaitCommands")?;
        let request = request.into_inner();
        check_awaited("command_ids", &request.command_ids, MAX_AWAITED)?;
        check_awaited("campaign_ids", &request.campaign_ids, MAX_AWAITED_CAMPAIGNS)?;
        let wait = match request.wait {
            None => std::time::Duration::ZERO,
            Some(wait) => std::time::Duration::try_from(wait)
                .ok()
                .filter(|w| *w <= MAX_AWAIT)
                .ok_or_else(|| crate::validate::refused(format!("wait: 0 to {} s", MAX_AWAIT.as_secs())))?,
        };
        let events_enabled = self.ctl.settings.command_events_queue_url.is_some();
        let answer = |ended: Vec<(String, String)>, cancelling_campaigns: Vec<String>| {
            Response::new(AwaitCommandsResponse {
                ended: ended
                    .into_iter()
                    .map(|(command_id, status)| EndedCommand { command_id, status })
                    .collect(),
                events_enabled,
                cancelling_campaigns,
                answers_campaigns: true,
            })
        };
        // Commands are asked about only where events tell of their ends.
        let commands = std::sync::Arc::new(if events_enabled {
            request.command_ids
        } else {
            Vec::new()
        });
        let campaign_ids = std::sync::Arc::new(request.campaign_ids);
        // Nothing to wait for: a worker asking what this controller answers.
        if commands.is_empty() && campaign_ids.is_empty() {
            return Ok(answer(Vec::new(), Vec::new()));
        }
        let deadline = tokio::time::Instant::now() + wait;
        let endings = &self.ctl.command_endings;
        let mut recorded = self.ctl.store.wakes();
        loop {
            recorded.borrow_and_update();
            let (asked, campaigns) = (commands.clone(), campaign_ids.clone());
            let (ended, cancelling) = self
                .ctl
                .store
                .read(move |conn| {
                    Ok((
                        command_endings::ended(conn, &asked)?,
                        leases::cancelling_among(conn, &campaigns)?,
                    ))
                })
                .await?;
            if !cancelling.is_empty() {
                self.ctl.metrics.await_commands("cancelling");
                return Ok(answer(ended, cancelling));
            }
            if !ended.is_empty() {
                self.ctl.metrics.await_commands("ended");
                return Ok(answer(ended, cancelling));
            }
            if tokio::time::Instant::now() >= deadline {
                self.ctl.metrics.await_commands("waited");
                return Ok(answer(Vec::new(), Vec::new()));
            }
            tokio::select! {
                _ = recorded.changed() => {}
                () = tokio::time::sleep(AWAIT_RECHECK) => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = endings.stopping.cancelled() => return Ok(answer(Vec::new(), Vec::new())),
            }
        }
    }

    async fn fail_task(&self, request: Request<FailTaskRequest>) -> Result<Response<FailTaskResponse>, Status> {
        let caller = self.caller(&request, "FailTask")?;
        let request = request.into_inner();
        if request.reason.is_empty() || request.reason.chars().count() > 4096 {
            return Err(crate::validate::refused("reason: 1 to 4096 characters"));
        }
        let (task_id, reason, retryable) = (request.task_id.clone(), request.reason.clone(), request.retryable);
        self.trace_task(&task_id).await;
        let (outcome, repeated) = self
            .ctl
            .store
            .write(move |txn| {
                leases::check_holder(txn, &request.task_id, request.lease_id, caller.as_deref())?;
                let ending = if request.handed_back {
                    Ending::HandedBack
                } else if request.retryable {
                    Ending::Retryable
                } else {
                    Ending::Failed
                };
                match leases::fail(txn, &request.task_id, Some(request.lease_id), &request.reason, ending) {
                    Ok(outcome) => Ok((outcome, false)),
                    // Failed under this very lease: a repeat whose first
                    // answer was lost. It is told the same again.
                    Err(StoreError::Lease(Fenced::Stale)) => {
                        match leases::failed_under(txn, &request.task_id, request.lease_id)? {
                            Some(true) => Ok((FailOutcome::Retrying, true)),
                            Some(false) => Ok((FailOutcome::Failed, true)),
                            None => Err(StoreError::Lease(Fenced::Stale)),
                        }
                    }
                    Err(error) => Err(error),
                }
            })
            .await
            .map_err(|e| self.refused("FailTask", e))?;
        let will_retry = outcome == FailOutcome::Retrying;
        if repeated {
            // Counted the first time.
            tracing::info!(task_id, will_retry, "FailTask repeated; answered as before");
        } else {
            self.ctl.metrics.failed(will_retry);
            tracing::info!(task_id, reason, retryable, will_retry, "task failed");
            self.ctl.wake.notify_one();
        }
        lose_answer("FailTask")?;
        Ok(Response::new(FailTaskResponse { will_retry }))
    }
}
