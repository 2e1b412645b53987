//! The controller with real workers against moto + muster-sim, in one
//! process: campaigns from submit to results, as issue 4 describes them.

use std::collections::BTreeSet;
use std::time::Duration;

use muster_proto::v1::worker_service_client::WorkerServiceClient;
use muster_proto::v1::{
    AwaitCommandsRequest, CampaignSpec, CampaignState, CampaignView, CancelCampaignRequest, DiscoveredInstance,
    GetCampaignRequest, LeaseOutcome, LeaseTaskRequest, ListCampaignsRequest, PingStatus, PlanCampaignRequest,
    Platform, RateControl, RenewLeaseRequest, ReportDispatchRequest, ReportResultsRequest, ReportTargetsRequest,
    ScopeState, StepOutput, SubmitCampaignRequest, TargetResult, TargetStatus, TaskKind, TaskRef, WatchCampaignRequest,
    watch_campaign_response,
};
use muster_tests::client::{assert_counters_add_up, get, script_spec, submit, targets, wait_done, wait_for};
use muster_tests::fleets;
use muster_tests::stack::{Options, Stack};
use tonic::Code;

mod campaigns;
mod notify;
mod stopping;
mod upgrades;
mod watch;
mod worker_api;

const EAST: &str = "us-east-1";
const WEST: &str = "eu-west-1";

/// A stack over `fleet` with no worker: the test plays the workers, or
/// needs none.
async fn without_workers(fleet: &str) -> Stack {
    Stack::start(
        fleet,
        Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await
}

fn mixed_spec(stack: &Stack) -> CampaignSpec {
    let accounts: Vec<String> = ["prod-a", "prod-b", "dev-a"].iter().map(|a| stack.account(a)).collect();
    let mut spec = script_spec(&accounts, &[EAST, WEST], &["echo patched"], &["Write-Output patched"]);
    spec.output.as_mut().unwrap().s3_bucket = "muster-output".into();
    spec
}
