//! muster-sim against moto, through the AWS SDK clients muster itself uses:
//! each test proves one behaviour of DESIGN section 6 as a caller sees it.

use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::operation::send_command::{SendCommandError, SendCommandOutput};
use aws_sdk_ssm::types::{CloudWatchOutputConfig, CommandInvocation, CommandInvocationStatus};
use aws_smithy_types::error::metadata::ProvideErrorMetadata as _;
use muster_sim::seed::fleet_file::FleetState;
use muster_sim::ssm::output;
use muster_sim::testkit::{HUB_ACCOUNT, Sandbox, test_tunables};
use muster_sim::{FaultKind, FaultRule, Quota};

mod access;
mod commands;
mod events;
mod limits;
mod rate_controls;

const REGION: &str = "us-east-1";

/// Two accounts: "alpha" with a mix of behaviours, "beta" with plain Linux.
const FLEET: &str = r#"
name = "t"
external_id = "ext-42"
output_bucket = "out"
results_bucket = "results"
log_group = "/muster/test"

[[ous]]
path = "Work"

[[accounts]]
name = "alpha"
ou = "Work"
regions = ["us-east-1"]
  [[accounts.instances]]
  count = 2
  name = "web-{i}"
  tags = { Role = "web", "muster-sim:duration" = "1" }
  [[accounts.instances]]
  count = 1
  name = "big"
  tags = { Role = "big", "muster-sim:stdout-bytes" = "100000", "muster-sim:stderr-bytes" = "20000", "muster-sim:duration" = "0.2" }
  [[accounts.instances]]
  count = 1
  platform = "windows"
  name = "win"
  tags = { Role = "win", "muster-sim:duration" = "0.2" }
  [[accounts.instances]]
  count = 1
  name = "slow"
  tags = { Role = "slow", "muster-sim:duration" = "60" }
  [[accounts.instances]]
  count = 1
  name = "offline"
  tags = { Role = "offline", "muster-sim:agent" = "offline" }
  [[accounts.instances]]
  count = 1
  name = "unmanaged"
  tags = { Role = "unmanaged", "muster-sim:agent" = "unmanaged" }
  [[accounts.instances]]
  count = 1
  name = "hang"
  tags = { Role = "hang", "muster-sim:hang" = "true" }
  [[accounts.instances]]
  count = 1
  name = "gone"
  tags = { Role = "gone", "muster-sim:delivery" = "undeliverable" }
  [[accounts.instances]]
  count = 1
  name = "fail"
  tags = { Role = "fail", "muster-sim:exit-code" = "7", "muster-sim:duration" = "0.2" }
  [[accounts.instances]]
  count = 1
  name = "behind"
  tags = { Role = "behind", "muster-sim:missing-patches" = "3", "muster-sim:critical-patches" = "2", "muster-sim:duration" = "0.2" }
  [[accounts.instances]]
  count = 1
  name = "broken"
  tags = { Role = "broken", "muster-sim:missing-patches" = "2", "muster-sim:exit-code" = "1", "muster-sim:duration" = "0.2" }

[[accounts]]
name = "beta"
regions = ["us-east-1"]
  [[accounts.instances]]
  count = 2
  tags = { Role = "web" }

[[accounts]]
name = "norole"
regions = ["us-east-1"]
execution_role = false
  [[accounts.instances]]
  count = 1
"#;

struct World {
    sb: Sandbox,
    fleet: FleetState,
}

impl World {
    async fn new() -> Self {
        Self::with(test_tunables()).await
    }

    async fn with(tunables: muster_sim::Tunables) -> Self {
        let sb = Sandbox::start_with(tunables).await;
        let fleet = sb.seed(FLEET).await;
        Self { sb, fleet }
    }

    fn account(&self, name: &str) -> String {
        self.fleet.account(name).expect("account in fleet").id.clone()
    }

    /// Instance ids of `account` whose Role tag is `role`.
    fn ids(&self, account: &str, role: &str) -> Vec<String> {
        self.fleet.account(account).expect("account in fleet").instances[REGION]
            .iter()
            .filter(|i| i.tags.get("Role").map(String::as_str) == Some(role))
            .map(|i| i.id.clone())
            .collect()
    }

    /// A session of the hub's worker role, as a muster worker has.
    async fn worker(&self) -> SdkConfig {
        let hub = self.sb.hub_config(REGION);
        let creds = self
            .sb
            .assume(&hub, &format!("arn:aws:iam::{HUB_ACCOUNT}:role/muster-worker"), None)
            .await
            .expect("the hub may assume its worker role");
        self.sb.config_with(REGION, creds)
    }

    /// The execution role of `account`, assumed from the worker role.
    async fn exec(&self, account: &str) -> SdkConfig {
        let worker = self.worker().await;
        let arn = format!("arn:aws:iam::{}:role/muster-execution", self.account(account));
        let creds = self
            .sb
            .assume_execution(&worker, &arn, Some("ext-42"))
            .await
            .expect("the worker may assume the execution role");
        self.sb.config_with(REGION, creds)
    }
}

fn shell(lines: &[&str]) -> std::collections::HashMap<String, Vec<String>> {
    [("commands".to_owned(), lines.iter().map(|l| l.to_string()).collect())].into()
}

/// SendCommand of AWS-RunShellScript running `lines` on `ids`, as SSM
/// answers it.
async fn run_shell(
    ssm: &aws_sdk_ssm::Client,
    ids: &[String],
    lines: &[&str],
) -> Result<SendCommandOutput, SdkError<SendCommandError>> {
    ssm.send_command()
        .document_name("AWS-RunShellScript")
        .set_instance_ids(Some(ids.to_vec()))
        .set_parameters(Some(shell(lines)))
        .send()
        .await
}

async fn send(ssm: &aws_sdk_ssm::Client, ids: &[String]) -> String {
    ssm.send_command()
        .document_name("AWS-RunShellScript")
        .set_instance_ids(Some(ids.to_vec()))
        .set_parameters(Some(shell(&["echo hi"])))
        .comment("test")
        .send()
        .await
        .expect("SendCommand accepted")
        .command
        .and_then(|c| c.command_id)
        .expect("a command id")
}

async fn invocations(ssm: &aws_sdk_ssm::Client, command_id: &str) -> Vec<CommandInvocation> {
    ssm.list_command_invocations()
        .command_id(command_id)
        .details(true)
        .send()
        .await
        .expect("ListCommandInvocations")
        .command_invocations
        .unwrap_or_default()
}

fn is_terminal(status: Option<&CommandInvocationStatus>) -> bool {
    !matches!(
        status,
        None | Some(CommandInvocationStatus::Pending)
            | Some(CommandInvocationStatus::InProgress)
            | Some(CommandInvocationStatus::Delayed)
            | Some(CommandInvocationStatus::Cancelling)
    )
}

async fn wait_terminal(ssm: &aws_sdk_ssm::Client, command_id: &str, expected: usize) -> Vec<CommandInvocation> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = invocations(ssm, command_id).await;
        if list.len() == expected && list.iter().all(|i| is_terminal(i.status())) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "command {command_id} did not finish: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeding_twice_creates_nothing_new() {
    let w = World::new().await;
    let again = w.sb.seed(FLEET).await;
    let ids = |state: &FleetState| {
        let mut v: Vec<String> = state.instances().map(|(_, _, i)| i.id.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&w.fleet), ids(&again));
    assert_eq!(ids(&again).len(), 15);
    let accounts = |state: &FleetState| state.accounts.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
    assert_eq!(accounts(&w.fleet), accounts(&again));
    // Listing back through EC2 shows exactly the fleet.
    let ec2 = aws_sdk_ec2::Client::new(&w.exec("alpha").await);
    let listed: usize = ec2
        .describe_instances()
        .send()
        .await
        .expect("DescribeInstances")
        .reservations()
        .iter()
        .map(|r| r.instances().len())
        .sum();
    assert_eq!(listed, 12);
    assert!(w.fleet.ous.contains_key("Work"));
}

/// A tiny HTTP GET for the admin API, over the SDK's own HTTP stack would be
/// overkill: one request with hyper.
async fn reqwest_like_get(url: &str) -> serde_json::Value {
    use http_body_util::BodyExt as _;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response = client
        .get(url.parse().expect("a valid url"))
        .await
        .expect("admin API answers");
    let bytes = response.into_body().collect().await.expect("a body").to_bytes();
    serde_json::from_slice(&bytes).expect("JSON")
}
