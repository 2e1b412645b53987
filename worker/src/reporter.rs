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

use crate::controller::{Controller, ControllerError};

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
    /// The lease said the controller takes compressed output.
    compress: bool,
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
    pub fn spawn(controller: Controller) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(controller, rx));
        Self { tx }
    }

    /// Queues a result; the returned ack resolves once it is recorded.
    /// `compress`: the lease says the controller takes output compressed
    /// (`Lease.takes_compressed_steps`), and long output goes so.
    pub fn report(&self, task_id: &str, lease_id: u64, result: TargetResult, compress: bool) -> Ack {
        let (ack, done) = oneshot::channel();
        let pending = Pending {
            span: tracing::Span::current(),
            scope: crate::trace::current(),
            task_id: task_id.to_owned(),
            lease_id,
            result,
            compress,
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

/// Output up to this many bytes a report is compressed on the async
/// threads; more (a few hundred patch logs) on the blocking pool.
const COMPRESSED_IN_PLACE: usize = 64 * 1024;

/// The results as they go: long output compressed where the controller
/// takes it (after [`fit`], which sized the report by the output plain,
/// so it only gets smaller). The workers compress so that the one
/// controller need not: a third of its CPU during an ingest of patch logs
/// (BENCHMARKS.md, "Compressed output").
fn compressed(results: Vec<(TargetResult, bool)>) -> Vec<TargetResult> {
    results
        .into_iter()
        .map(|(mut result, compress)| {
            if compress {
                muster_proto::compress_result(&mut result);
            }
            result
        })
        .collect()
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

async fn run(controller: Controller, mut rx: mpsc::UnboundedReceiver<Pending>) {
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
    controller: Controller,
    task_id: String,
    lease_id: u64,
    pendings: Vec<Pending>,
    _permit: OwnedSemaphorePermit,
) {
    let results: Vec<(TargetResult, bool)> = pendings.iter().map(|p| (p.result.clone(), p.compress)).collect();
    let output: usize = results
        .iter()
        .flat_map(|(r, _)| &r.steps)
        .map(|s| s.stdout.len() + s.stderr.len())
        .sum();
    let results = if output <= COMPRESSED_IN_PLACE {
        compressed(results)
    } else {
        tokio::task::spawn_blocking(move || compressed(results))
            .await
            .expect("compressing output does not panic")
    };
    let request = ReportResultsRequest {
        task_id: task_id.clone(),
        lease_id,
        results,
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use muster_proto::v1::StepOutput;
    use prost::Message as _;

    use super::*;
    use crate::controller::scripted::Scripted;

    fn result(instance: usize, stdout_bytes: usize) -> TargetResult {
        TargetResult {
            instance_id: format!("i-{instance:017}"),
            steps: vec![StepOutput {
                stdout: "x".repeat(stdout_bytes),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn results_arriving_together_go_in_one_report_per_lease() {
        let controller = Arc::new(Scripted::default());
        let reporter = Reporter::spawn(Arc::new(controller.clone()));
        let mut acks = Vec::new();
        for i in 0..6 {
            let (task, lease) = if i % 2 == 0 { ("a", 1) } else { ("b", 2) };
            acks.push(reporter.report(task, lease, result(i, 10), false));
        }
        all_recorded(acks).await.unwrap();
        let mut sent: Vec<(String, u64, usize)> = controller
            .made::<ReportResultsRequest>()
            .iter()
            .map(|r| (r.task_id.clone(), r.lease_id, r.results.len()))
            .collect();
        sent.sort();
        assert_eq!(sent, [("a".into(), 1, 3), ("b".into(), 2, 3)]);
    }

    #[tokio::test]
    async fn a_refused_report_fails_the_acks_of_its_own_results_only() {
        let controller = Arc::new(Scripted::default());
        let reporter = Reporter::spawn(Arc::new(controller.clone()));
        // Whichever of the two reports comes first is refused for good.
        controller
            .results
            .lock()
            .unwrap()
            .push_back(Err(ControllerError::Refused("InvalidArgument: results".into())));
        let a: Vec<Ack> = (0..2).map(|i| reporter.report("a", 1, result(i, 1), false)).collect();
        let b: Vec<Ack> = vec![reporter.report("b", 2, result(2, 1), false)];
        let mut outcomes = Vec::new();
        for acks in [a, b] {
            let mut each = Vec::new();
            for ack in acks {
                each.push(ack.await.unwrap().is_ok());
            }
            assert!(
                each.windows(2).all(|w| w[0] == w[1]),
                "one report, one outcome: {each:?}"
            );
            outcomes.push(each[0]);
        }
        outcomes.sort();
        assert_eq!(outcomes, [false, true], "one report refused, the other recorded");
    }

    #[tokio::test]
    async fn long_output_goes_compressed_only_where_the_lease_says_the_controller_takes_it() {
        let controller = Arc::new(Scripted::default());
        let reporter = Reporter::spawn(Arc::new(controller.clone()));
        let log = |i: usize| TargetResult {
            instance_id: format!("i-{i:017}"),
            steps: vec![StepOutput {
                stdout: (0..50).map(|n| format!("Installed: openssl-3.0.{n}-{i}\n")).collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let acks = vec![
            reporter.report("new", 1, log(1), true),
            reporter.report("new", 1, result(2, 10), true),
            reporter.report("old", 2, log(3), false),
        ];
        all_recorded(acks).await.unwrap();
        let mut sent: Vec<TargetResult> = controller
            .made::<ReportResultsRequest>()
            .into_iter()
            .flat_map(|r| r.results)
            .collect();
        sent.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        let [new_log, new_line, old_log] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert!(new_log.steps.is_empty());
        let (steps, _) = muster_proto::expand_steps(&new_log.compressed_steps, usize::MAX).unwrap();
        assert_eq!(steps, log(1).steps, "the frame holds the steps");
        assert!(
            new_log.compressed_steps.len() * 2 < log(1).steps[0].stdout.len(),
            "and is shorter"
        );
        assert_eq!(
            (new_line.steps.clone(), new_line.compressed_steps.is_empty()),
            (result(2, 10).steps, true),
            "a line goes as it is"
        );
        assert_eq!(
            (old_log.steps.clone(), old_log.compressed_steps.is_empty()),
            (log(3).steps, true),
            "a controller that does not say it takes compressed output gets it plain"
        );
    }

    #[tokio::test]
    async fn large_outputs_are_split_under_the_request_limit_and_each_result_sent_once() {
        let controller = Arc::new(Scripted::default());
        let reporter = Reporter::spawn(Arc::new(controller.clone()));
        // 40 results of 1 MiB: more than twice the limit of one request.
        let acks = (0..40)
            .map(|i| reporter.report("a", 1, result(i, 1 << 20), false))
            .collect();
        all_recorded(acks).await.unwrap();
        let reports = controller.made::<ReportResultsRequest>();
        assert!(reports.len() >= 3, "{} reports", reports.len());
        let mut seen = BTreeSet::new();
        for report in &reports {
            assert!(report.encoded_len() <= MAX_REPORT_BYTES, "{}", report.encoded_len());
            for r in &report.results {
                assert!(seen.insert(r.instance_id.clone()), "{} sent twice", r.instance_id);
            }
        }
        assert_eq!(seen.len(), 40);
    }

    #[tokio::test]
    async fn a_burst_beyond_the_batch_limit_is_reported_in_several_requests() {
        let controller = Arc::new(Scripted::default());
        let reporter = Reporter::spawn(Arc::new(controller.clone()));
        let acks = (0..MAX_BATCH * 2 + 1)
            .map(|i| reporter.report("a", 1, result(i, 1), false))
            .collect();
        all_recorded(acks).await.unwrap();
        let sizes: Vec<usize> = controller
            .made::<ReportResultsRequest>()
            .iter()
            .map(|r| r.results.len())
            .collect();
        assert!(sizes.iter().all(|n| *n <= MAX_BATCH), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), MAX_BATCH * 2 + 1);
    }
}
