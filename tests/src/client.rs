//! Client-side helpers: specs, waiting, reading results.

use std::time::{Duration, Instant};

use muster_proto::v1::campaign_service_client::CampaignServiceClient;
use muster_proto::v1::{
    AccessConfig, Campaign, CampaignSpec, CampaignState, Command, GetCampaignRequest, ListTargetsRequest, OutputConfig,
    RateControl, Script, SubmitCampaignRequest, Target, TargetSelector, command,
};
use tonic::transport::Channel;

/// AWS-RunPatchBaseline with these parameters.
pub fn patch_command(parameters: &[(&str, &str)]) -> muster_proto::v1::Command {
    muster_proto::v1::Command {
        kind: Some(muster_proto::v1::command::Kind::Document(muster_proto::v1::Document {
            name: "AWS-RunPatchBaseline".into(),
            version: String::new(),
            parameters: parameters
                .iter()
                .map(|(k, v)| {
                    (
                        (*k).to_owned(),
                        muster_proto::v1::ParameterValues {
                            values: vec![(*v).to_owned()],
                        },
                    )
                })
                .collect(),
        })),
        execution_timeout_seconds: 0,
        delivery_timeout_seconds: 0,
    }
}

/// A script campaign over `accounts` and `regions`.
pub fn script_spec(accounts: &[String], regions: &[&str], linux: &[&str], windows: &[&str]) -> CampaignSpec {
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
        access: Some(AccessConfig::default()),
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
        .get_campaign(GetCampaignRequest {
            campaign_id: id.into(),
            ..Default::default()
        })
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

/// The text of a results export (`s3://muster-results/...`, JSON lines,
/// gzip), read with `sdk`'s credentials.
pub async fn export_text(sdk: &aws_config::SdkConfig, url: &str) -> String {
    let key = url.strip_prefix("s3://muster-results/").expect("the results bucket");
    let s3 = aws_sdk_s3::Client::from_conf(muster_common::aws::s3_config(sdk));
    let body = s3
        .get_object()
        .bucket("muster-results")
        .key(key)
        .send()
        .await
        .expect("the export")
        .body
        .collect()
        .await
        .expect("its body")
        .into_bytes();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text).expect("gzip");
    text
}

/// A codec that sends a protobuf request and keeps the answer as the bytes
/// on the wire, so a test can assert what an answer does not carry,
/// whatever fields this build of the protocol knows.
#[derive(Debug)]
struct RawAnswer<T>(std::marker::PhantomData<T>);

/// Decodes an answer to its bytes.
#[derive(Debug, Default)]
struct BytesDecoder;

impl tonic::codec::Decoder for BytesDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf as _;
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

impl<T: prost::Message + Send + 'static> tonic::codec::Codec for RawAnswer<T> {
    type Encode = T;
    type Decode = Vec<u8>;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder
    }
}

/// A ready client of `channel`, and `request` with a bearer `token`, for
/// CampaignService `method`.
async fn raw_setup<T>(
    channel: tonic::transport::Channel,
    token: &str,
    method: &str,
    request: T,
) -> Result<
    (
        tonic::client::Grpc<tonic::transport::Channel>,
        tonic::Request<T>,
        http::uri::PathAndQuery,
    ),
    tonic::Status,
> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(request);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a printable token"),
    );
    let path = format!("/muster.v1.CampaignService/{method}")
        .parse()
        .expect("a method path");
    Ok((grpc, request, path))
}

/// Calls CampaignService `method` (e.g. "GetCampaign") over `channel` with a
/// bearer `token`; the answer's protobuf bytes, or the status.
pub async fn raw_call<T: prost::Message + Send + 'static>(
    channel: tonic::transport::Channel,
    token: &str,
    method: &str,
    request: T,
) -> Result<Vec<u8>, tonic::Status> {
    let (mut grpc, request, path) = raw_setup(channel, token, method, request).await?;
    let codec = RawAnswer::<T>(std::marker::PhantomData);
    Ok(grpc.unary(request, path, codec).await?.into_inner())
}

/// Calls CampaignService streaming `method` (e.g. "WatchCampaign") and
/// gathers the bytes of its first `messages` answers.
pub async fn raw_stream<T: prost::Message + Send + 'static>(
    channel: tonic::transport::Channel,
    token: &str,
    method: &str,
    request: T,
    messages: usize,
) -> Result<Vec<u8>, tonic::Status> {
    let (mut grpc, request, path) = raw_setup(channel, token, method, request).await?;
    let codec = RawAnswer::<T>(std::marker::PhantomData);
    let mut stream = grpc.server_streaming(request, path, codec).await?.into_inner();
    let mut all = Vec::new();
    for _ in 0..messages {
        match stream.message().await? {
            Some(bytes) => all.extend(bytes),
            None => break,
        }
    }
    Ok(all)
}

/// The runs of schedule `name`, newest first, once `done` holds of them.
pub async fn runs_until(
    client: &mut muster_proto::v1::schedule_service_client::ScheduleServiceClient<Channel>,
    name: &str,
    within: Duration,
    done: impl Fn(&[muster_proto::v1::ScheduleRun]) -> bool,
) -> Vec<muster_proto::v1::ScheduleRun> {
    let deadline = Instant::now() + within;
    loop {
        let runs = client
            .get_schedule(muster_proto::v1::GetScheduleRequest {
                name: name.into(),
                runs: 50,
                ..Default::default()
            })
            .await
            .expect("GetSchedule")
            .into_inner()
            .runs;
        if done(&runs) {
            return runs;
        }
        assert!(Instant::now() < deadline, "schedule {name}: runs {runs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
