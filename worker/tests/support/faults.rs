//! The real controller's WorkerService behind a fault layer: every call goes
//! to `muster_controller::worker_api::WorkerApi`, and a test can make some
//! of them fail or arrive late, as a network or a dying worker would.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster_controller::worker_api::WorkerApi;
use muster_proto::v1::worker_service_server::WorkerService;
use muster_proto::v1::*;
use tonic::{Request, Response, Status};

/// The faults in force; change them at any time.
#[derive(Debug, Default)]
pub struct Faults {
    /// ReportDispatch fails with UNAVAILABLE: as far as the controller can
    /// tell, the worker died between SendCommand and its report.
    pub refuse_dispatches: bool,
    /// The grant of an Execute task's attempt `.0` (by LeaseTask or in
    /// CompleteTask's answer) reaches the worker `.1` late (a paused worker,
    /// a slow network), though the controller granted it at once.
    pub late_execute_grant: Option<(u32, Duration)>,
    /// LeaseTask of these campaigns' tasks fails with UNAVAILABLE.
    pub unreachable_leases: HashSet<String>,
    /// RenewLease of these campaigns' tasks fails with UNAVAILABLE.
    pub unreachable_renewals: HashSet<String>,
    /// AwaitCommands answers as a controller from before it told of
    /// cancels (muster 0.2's): it ignores the campaigns asked about, so a
    /// worker hears of a cancel only from its renewals and the send guard.
    pub cancels_untold: bool,
    /// Campaign of each task leased so far (RenewLease names only the task).
    leased: HashMap<String, String>,
}

/// The controller's service with `faults` applied.
pub struct Faulty {
    pub inner: WorkerApi,
    pub faults: Arc<Mutex<Faults>>,
}

fn unavailable(what: &str) -> Status {
    Status::unavailable(format!("fault layer: {what}"))
}

impl Faulty {
    /// Notes the tasks of leases the controller granted; how late their
    /// answer is to arrive.
    fn granted<'a>(&self, leases: impl Iterator<Item = &'a Lease>) -> Option<Duration> {
        let mut faults = self.faults.lock().unwrap();
        let mut late = None;
        for task in leases.filter_map(|lease| lease.task.as_ref()) {
            faults.leased.insert(task.task_id.clone(), task.campaign_id.clone());
            if task.kind == TaskKind::Execute as i32
                && let Some((attempt, delay)) = faults.late_execute_grant
                && task.attempt == attempt
            {
                late = Some(delay);
            }
        }
        late
    }

    fn renewal_cut_off(&self, task_id: &str) -> bool {
        let faults = self.faults.lock().unwrap();
        faults
            .leased
            .get(task_id)
            .is_some_and(|campaign| faults.unreachable_renewals.contains(campaign))
    }
}

#[tonic::async_trait]
impl WorkerService for Faulty {
    async fn lease_task(&self, request: Request<LeaseTaskRequest>) -> Result<Response<LeaseTaskResponse>, Status> {
        let campaign = request.get_ref().task.as_ref().map(|t| t.campaign_id.clone());
        if campaign.is_some_and(|c| self.faults.lock().unwrap().unreachable_leases.contains(&c)) {
            return Err(unavailable("LeaseTask"));
        }
        let answer = self.inner.lease_task(request).await?;
        let leases = answer.get_ref().lease.iter().chain(&answer.get_ref().same_account);
        if let Some(delay) = self.granted(leases) {
            tokio::time::sleep(delay).await;
        }
        Ok(answer)
    }

    async fn renew_lease(&self, request: Request<RenewLeaseRequest>) -> Result<Response<RenewLeaseResponse>, Status> {
        if self.renewal_cut_off(&request.get_ref().task_id) {
            return Err(unavailable("RenewLease"));
        }
        self.inner.renew_lease(request).await
    }

    async fn report_targets(
        &self,
        request: Request<ReportTargetsRequest>,
    ) -> Result<Response<ReportTargetsResponse>, Status> {
        self.inner.report_targets(request).await
    }

    async fn report_dispatch(
        &self,
        request: Request<ReportDispatchRequest>,
    ) -> Result<Response<ReportDispatchResponse>, Status> {
        if self.faults.lock().unwrap().refuse_dispatches {
            return Err(unavailable("ReportDispatch"));
        }
        self.inner.report_dispatch(request).await
    }

    async fn report_results(
        &self,
        request: Request<ReportResultsRequest>,
    ) -> Result<Response<ReportResultsResponse>, Status> {
        self.inner.report_results(request).await
    }

    async fn complete_task(
        &self,
        request: Request<CompleteTaskRequest>,
    ) -> Result<Response<CompleteTaskResponse>, Status> {
        // A completed discovery hands its scope's first batches to the
        // same worker in this answer: they are grants too.
        let answer = self.inner.complete_task(request).await?;
        if let Some(delay) = self.granted(answer.get_ref().next.iter()) {
            tokio::time::sleep(delay).await;
        }
        Ok(answer)
    }

    async fn await_commands(
        &self,
        request: Request<AwaitCommandsRequest>,
    ) -> Result<Response<AwaitCommandsResponse>, Status> {
        if !self.faults.lock().unwrap().cancels_untold {
            return self.inner.await_commands(request).await;
        }
        let mut request = request;
        request.get_mut().campaign_ids.clear();
        let mut answer = self.inner.await_commands(request).await?;
        answer.get_mut().answers_campaigns = false;
        Ok(answer)
    }

    async fn fail_task(&self, request: Request<FailTaskRequest>) -> Result<Response<FailTaskResponse>, Status> {
        self.inner.fail_task(request).await
    }
}
