//! Client-side helpers: specs, waiting, reading results.

use std::time::{Duration, Instant};

use muster_proto::v1::campaign_service_client::CampaignServiceClient;
use muster_proto::v1::{
    AccessConfig, Campaign, CampaignSpec, CampaignState, Command, GetCampaignRequest, ListTargetsRequest, OutputConfig,
    RateControl, Script, SubmitCampaignRequest, Target, TargetSelector, command,
};
use tonic::transport::Channel;

/// A script campaign over `accounts` and `regions`.
pub fn script_spec(
    accounts: &[String],
    regions: &[&str],
    linux: &[&str],
    windows: &[&str],
    external_id: &str,
) -> CampaignSpec {
    CampaignSpec {
        name: "test".into(),
        targets: Some(TargetSelector {
            account_ids: accounts.to_vec(),
            regions: regions.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }),
        command: Some(Command {
            kind: Some(command::Kind::Script(Script {
                linux_lines: linux.iter().map(|l| l.to_string()).collect(),
                windows_lines: windows.iter().map(|l| l.to_string()).collect(),
                working_directory: String::new(),
            })),
            execution_timeout_seconds: 600,
            delivery_timeout_seconds: 600,
        }),
        rate: Some(RateControl {
            max_concurrency: "100%".into(),
            max_errors: String::new(),
            batch_size: 50,
            api_calls_per_second: 0.0,
        }),
        output: Some(OutputConfig::default()),
        access: Some(AccessConfig {
            external_id: external_id.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Submits and returns the campaign id.
pub async fn submit(client: &mut CampaignServiceClient<Channel>, spec: CampaignSpec) -> String {
    client
        .submit_campaign(SubmitCampaignRequest { spec: Some(spec) })
        .await
        .expect("the campaign is accepted")
        .into_inner()
        .campaign_id
}

/// The campaign now.
pub async fn get(client: &mut CampaignServiceClient<Channel>, id: &str) -> Campaign {
    client
        .get_campaign(GetCampaignRequest { campaign_id: id.into() })
        .await
        .expect("GetCampaign")
        .into_inner()
        .campaign
        .expect("a campaign")
}

/// Waits until the campaign reaches a terminal state.
pub async fn wait_done(client: &mut CampaignServiceClient<Channel>, id: &str, within: Duration) -> Campaign {
    let deadline = Instant::now() + within;
    loop {
        let campaign = get(client, id).await;
        let state = CampaignState::try_from(campaign.state).unwrap_or(CampaignState::Unspecified);
        if state.is_terminal() {
            return campaign;
        }
        assert!(
            Instant::now() < deadline,
            "campaign {id} still {} after {within:?}: {:?}",
            state.short_name(),
            campaign.counters
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `check` holds for the campaign.
pub async fn wait_for(
    client: &mut CampaignServiceClient<Channel>,
    id: &str,
    within: Duration,
    what: &str,
    check: impl Fn(&Campaign) -> bool,
) -> Campaign {
    let deadline = Instant::now() + within;
    loop {
        let campaign = get(client, id).await;
        if check(&campaign) {
            return campaign;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            campaign.counters
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every target of a campaign, all pages.
pub async fn targets(client: &mut CampaignServiceClient<Channel>, id: &str, with_output: bool) -> Vec<Target> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_targets(ListTargetsRequest {
                campaign_id: id.into(),
                page_size: 100,
                page_token: token.clone(),
                include_output: with_output,
                ..Default::default()
            })
            .await
            .expect("ListTargets")
            .into_inner();
        all.extend(page.targets);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

/// Checks that a campaign's counters add up to its targets.
pub fn assert_counters_add_up(campaign: &Campaign, targets: &[Target]) {
    let c = campaign.counters.expect("counters");
    let sum = c.pending
        + c.queued
        + c.running
        + c.success
        + c.failed
        + c.timed_out
        + c.cancelled
        + c.undeliverable
        + c.terminated
        + c.skipped
        + c.error;
    assert_eq!(sum, c.total, "counters add up to the total");
    assert_eq!(c.total, targets.len() as u64, "the total is the number of targets");
    for status in muster_proto::ALL_TARGET_STATUSES {
        let listed = targets.iter().filter(|t| t.status == status as i32).count() as u64;
        let counted = match status {
            muster_proto::v1::TargetStatus::Pending => c.pending,
            muster_proto::v1::TargetStatus::Queued => c.queued,
            muster_proto::v1::TargetStatus::Running => c.running,
            muster_proto::v1::TargetStatus::Success => c.success,
            muster_proto::v1::TargetStatus::Failed => c.failed,
            muster_proto::v1::TargetStatus::TimedOut => c.timed_out,
            muster_proto::v1::TargetStatus::Cancelled => c.cancelled,
            muster_proto::v1::TargetStatus::Undeliverable => c.undeliverable,
            muster_proto::v1::TargetStatus::Terminated => c.terminated,
            muster_proto::v1::TargetStatus::Skipped => c.skipped,
            muster_proto::v1::TargetStatus::Error => c.error,
            muster_proto::v1::TargetStatus::Unspecified => 0,
        };
        assert_eq!(listed, counted, "{} targets listed vs counted", status.short_name());
    }
}
