//! Results go to the controller in batches: many tasks' results share a few
//! requests, each retried with backoff until the controller records it, so a
//! controller restart loses nothing while this process lives.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use muster_proto::v1::{ReportResultsRequest, TargetResult};
use muster_proto::{MAX_REPORT_BYTES, split_by_size};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::Instrument as _;

use crate::controller::{ControllerClient, ControllerError};

/// Most results in one ReportResults request.
const MAX_BATCH: usize = 500;
/// How long the first result of a batch waits for company.
const LINGER: Duration = Duration::from_millis(50);
/// Most reports in flight at once. When many batches end together (every
/// batch of a wave, told by Run Command events), reports one after another
/// queue behind each other's commit; in flight together, the controller's
/// store commits them as one.
const IN_FLIGHT: usize = 8;

struct Pending {
    /// The reporting task's span and scope: the report joins its trace.
    span: tracing::Span,
    scope: Option<std::sync::Arc<crate::trace::Scope>>,
    task_id: String,
    lease_id: u64,
    result: TargetResult,
    ack: oneshot::Sender<Result<(), ControllerError>>,
}

/// Sends results on behalf of every task of the process.
#[derive(Clone)]
pub struct Reporter {
    tx: mpsc::UnboundedSender<Pending>,
}

/// Resolves when the controller has recorded a result (or refused it for good).
pub type Ack = oneshot::Receiver<Result<(), ControllerError>>;

impl Reporter {
    /// Starts the reporting loop.
    pub fn spawn(controller: ControllerClient) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(controller, rx));
        Self { tx }
    }

    /// Queues a result; the returned ack resolves once it is recorded.
    pub fn report(&self, task_id: &str, lease_id: u64, result: TargetResult) -> Ack {
        let (ack, done) = oneshot::channel();
        let pending = Pending {
            span: tracing::Span::current(),
            scope: crate::trace::current(),
            task_id: task_id.to_owned(),
            lease_id,
            result,
            ack,
        };
        if let Err(mpsc::error::SendError(pending)) = self.tx.send(pending) {
            let _ = pending
                .ack
                .send(Err(ControllerError::Unreachable("the reporter has stopped".into())));
        }
        done
    }
}

/// One task's results in requests of at most [`MAX_REPORT_BYTES`]: 50
/// results of 1 MiB output each would pass gRPC's limit in one, and a
/// refused report would lose them all. A result too large alone has its
/// output clipped (marked truncated; the full text stays in S3 or
/// CloudWatch Logs when the campaign sends it there).
fn fit(pendings: Vec<Pending>) -> Vec<Vec<Pending>> {
    let mut pendings = pendings;
    let results: Vec<TargetResult> = pendings.iter_mut().map(|p| std::mem::take(&mut p.result)).collect();
    let mut parts = Vec::new();
    let mut rest = pendings.into_iter();
    for group in split_by_size(results, MAX_REPORT_BYTES) {
        let part: Vec<Pending> = group
            .into_iter()
            .zip(rest.by_ref())
            .map(|(result, pending)| Pending { result, ..pending })
            .collect();
        parts.push(part);
    }
    parts
}

/// Waits until every ack resolved; the first refusal wins.
pub async fn all_recorded(acks: Vec<Ack>) -> Result<(), ControllerError> {
    let mut outcome = Ok(());
    for ack in acks {
        let result = ack
            .await
            .unwrap_or_else(|_| Err(ControllerError::Unreachable("the reporter has stopped".into())));
        if outcome.is_ok() {
            outcome = result;
        }
    }
    outcome
}

async fn run(controller: ControllerClient, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while batch.len() < MAX_BATCH {
            tokio::select! {
                () = &mut linger => break,
                next = rx.recv() => match next {
                    Some(next) => batch.push(next),
                    None => break,
                },
            }
        }
        let mut by_task: BTreeMap<(String, u64), Vec<Pending>> = BTreeMap::new();
        for pending in batch {
            by_task
                .entry((pending.task_id.clone(), pending.lease_id))
                .or_default()
                .push(pending);
        }
        for ((task_id, lease_id), pendings) in by_task
            .into_iter()
            .flat_map(|(key, pendings)| fit(pendings).into_iter().map(move |part| (key.clone(), part)))
        {
            let permit = in_flight
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            tokio::spawn(send(controller.clone(), task_id, lease_id, pendings, permit));
        }
    }
}

/// One report of one task's results; its acks learn the outcome.
async fn send(
    controller: ControllerClient,
    task_id: String,
    lease_id: u64,
    pendings: Vec<Pending>,
    _permit: OwnedSemaphorePermit,
) {
    let request = ReportResultsRequest {
        task_id: task_id.clone(),
        lease_id,
        results: pendings.iter().map(|p| p.result.clone()).collect(),
    };
    let first = &pendings[0];
    let report = controller.report_results(request).instrument(first.span.clone());
    let outcome = match first.scope.clone() {
        Some(scope) => crate::trace::scoped(scope, report).await,
        None => report.await,
    };
    match &outcome {
        Ok(answer) => tracing::debug!(
            task_id,
            accepted = answer.accepted,
            duplicates = answer.duplicates,
            "results recorded"
        ),
        Err(error) => tracing::error!(task_id, %error, "results refused by the controller"),
    }
    let outcome = outcome.map(|_| ());
    for pending in pendings {
        let _ = pending.ack.send(outcome.clone());
    }
}
