//! muster-sim against moto, through the AWS SDK clients muster itself uses:
//! each test proves one behaviour of DESIGN section 6 as a caller sees it.

use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_ssm::types::{CloudWatchOutputConfig, CommandInvocation, CommandInvocationStatus};
use aws_smithy_types::error::metadata::ProvideErrorMetadata as _;
use muster_sim::seed::fleet_file::FleetState;
use muster_sim::ssm::output;
use muster_sim::testkit::{HUB_ACCOUNT, Sandbox, test_tunables};
use muster_sim::{FaultKind, FaultRule, Quota};

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
            .assume(&worker, &arn, Some("ext-42"))
            .await
            .expect("the worker may assume the execution role");
        self.sb.config_with(REGION, creds)
    }
}

fn shell(lines: &[&str]) -> std::collections::HashMap<String, Vec<String>> {
    [("commands".to_owned(), lines.iter().map(|l| l.to_string()).collect())].into()
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
async fn statuses_progress_from_invisible_to_pending_to_in_progress_to_success() {
    let w = World::new().await;
    let ssm = aws_sdk_ssm::Client::new(&w.exec("alpha").await);
    let ids = w.ids("alpha", "web");
    let command_id = send(&ssm, &ids).await;

    // Right after sending, SSM has not caught up (eventual consistency).
    let early = ssm
        .get_command_invocation()
        .command_id(&command_id)
        .instance_id(&ids[0])
        .send()
        .await
        .expect_err("not visible yet");
    assert_eq!(early.code(), Some("InvocationDoesNotExist"));

    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let finals = loop {
        let list = invocations(&ssm, &command_id).await;
        if let Some(first) = list.first() {
            let status = first.status().map(|s| s.as_str().to_owned()).unwrap_or_default();
            if seen.last() != Some(&status) {
                seen.push(status);
            }
        }
        if list.len() == 2 && list.iter().all(|i| is_terminal(i.status())) {
            break list;
        }
        assert!(Instant::now() < deadline, "never finished; saw {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(seen.last().map(String::as_str), Some("Success"), "saw {seen:?}");
    assert!(
        seen.contains(&"InProgress".to_owned()),
        "must pass through InProgress, saw {seen:?}"
    );
    let order = ["Pending", "InProgress", "Success"];
    let positions: Vec<usize> = seen
        .iter()
        .map(|s| order.iter().position(|o| o == s).expect("known status"))
        .collect();
    assert!(
        positions.windows(2).all(|p| p[0] < p[1]),
        "statuses went backwards: {seen:?}"
    );

    for invocation in &finals {
        assert_eq!(invocation.status_details(), Some("Success"));
        let plugin = &invocation.command_plugins()[0];
        assert_eq!(plugin.name(), Some("aws:runShellScript"));
        assert_eq!(plugin.response_code(), 0);
        assert!(plugin.output().unwrap_or_default().contains("AWS-RunShellScript on i-"));
    }
    let detail = ssm
        .get_command_invocation()
        .command_id(&command_id)
        .instance_id(&ids[0])
        .send()
        .await
        .expect("visible now");
    assert_eq!(detail.status(), Some(&CommandInvocationStatus::Success));
    assert!(detail.standard_output_content().unwrap_or_default().contains(&ids[0]));
    assert!(!detail.execution_elapsed_time().unwrap_or_default().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_command_refuses_51_ids_duplicates_and_unknown_instances() {
    let w = World::new().await;
    let ssm = aws_sdk_ssm::Client::new(&w.exec("alpha").await);
    let fifty_one: Vec<String> = (0..51).map(|n| format!("i-{n:017x}")).collect();
    let err = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .set_instance_ids(Some(fifty_one.clone()))
        .set_parameters(Some(shell(&["true"])))
        .send()
        .await
        .expect_err("51 ids are refused");
    assert_eq!(err.code(), Some("ValidationException"));
    assert!(err.message().unwrap_or_default().contains("less than or equal to 50"));

    let fifty = &fifty_one[..50];
    let err = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .set_instance_ids(Some(fifty.to_vec()))
        .set_parameters(Some(shell(&["true"])))
        .send()
        .await
        .expect_err("unknown instances are refused");
    assert_eq!(err.code(), Some("InvalidInstanceId"));

    let web = w.ids("alpha", "web");
    let err = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .set_instance_ids(Some(vec![web[0].clone(), web[0].clone()]))
        .set_parameters(Some(shell(&["true"])))
        .send()
        .await
        .expect_err("duplicates are refused");
    assert_eq!(err.code(), Some("DuplicateInstanceId"));

    let err = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .set_instance_ids(Some(web.clone()))
        .send()
        .await
        .expect_err("the commands parameter is required");
    assert_eq!(err.code(), Some("InvalidParameters"));

    let err = ssm
        .send_command()
        .document_name("Not-A-Document")
        .set_instance_ids(Some(web))
        .send()
        .await
        .expect_err("unknown documents are refused");
    assert_eq!(err.code(), Some("InvalidDocument"));
    assert!(w.sb.audit().is_empty(), "nothing refused may reach the audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_of_account_b_is_refused_with_account_a_credentials() {
    let w = World::new().await;
    let alpha = aws_sdk_ssm::Client::new(&w.exec("alpha").await);
    let beta_ids = w.ids("beta", "web");
    let err = alpha
        .send_command()
        .document_name("AWS-RunShellScript")
        .set_instance_ids(Some(beta_ids.clone()))
        .set_parameters(Some(shell(&["true"])))
        .send()
        .await
        .expect_err("beta's instances are not alpha's");
    assert_eq!(err.code(), Some("InvalidInstanceId"));
    assert!(err.message().unwrap_or_default().contains(&w.account("alpha")));
    assert!(w.sb.audit().is_empty());

    // The same ids work with beta's own role.
    let beta = aws_sdk_ssm::Client::new(&w.exec("beta").await);
    let command_id = send(&beta, &beta_ids).await;
    let done = wait_terminal(&beta, &command_id, 2).await;
    assert!(
        done.iter()
            .all(|i| i.status() == Some(&CommandInvocationStatus::Success))
    );
    // And alpha cannot see beta's command.
    let err = alpha
        .list_commands()
        .command_id(&command_id)
        .send()
        .await
        .expect_err("commands are per account");
    assert_eq!(err.code(), Some("InvalidCommandId"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_output_is_truncated_by_the_api_and_whole_in_s3_and_cloudwatch_logs() {
    let w = World::new().await;
    let config = w.exec("alpha").await;
    let ssm = aws_sdk_ssm::Client::new(&config);
    let id = w.ids("alpha", "big").remove(0);
    let command_id = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .instance_ids(&id)
        .set_parameters(Some(shell(&["produce output"])))
        .output_s3_bucket_name("out")
        .output_s3_key_prefix("runs/c1")
        .cloud_watch_output_config(
            CloudWatchOutputConfig::builder()
                .cloud_watch_output_enabled(true)
                .cloud_watch_log_group_name("/muster/test")
                .build(),
        )
        .send()
        .await
        .expect("SendCommand")
        .command
        .and_then(|c| c.command_id)
        .expect("a command id");
    let done = wait_terminal(&ssm, &command_id, 1).await;
    let stdout = output::filler(&id, "stdout", 100_000);
    let stderr = output::filler(&id, "stderr", 20_000);

    // ListCommandInvocations: the agent's 2,500-character plugin output, marked.
    let plugin = &done[0].command_plugins()[0];
    let shown = plugin.output().unwrap_or_default();
    assert!(shown.chars().count() <= 2_500);
    assert!(shown.contains("---Output truncated---"));
    assert!(shown.contains("----------ERROR-------"));
    let key = format!("runs/c1/{command_id}/{id}/awsrunShellScript/0.awsrunShellScript/stdout");
    assert_eq!(
        plugin.standard_output_url(),
        Some(format!("https://s3.{REGION}.amazonaws.com/out/{key}").as_str())
    );

    // GetCommandInvocation: the first 24,000 / 8,000 characters.
    let detail = ssm
        .get_command_invocation()
        .command_id(&command_id)
        .instance_id(&id)
        .send()
        .await
        .expect("GetCommandInvocation");
    assert_eq!(detail.standard_output_content(), Some(&stdout[..24_000]));
    assert_eq!(detail.standard_error_content(), Some(&stderr[..8_000]));

    // S3: the whole text at SSM's key layout.
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );
    let object = s3
        .get_object()
        .bucket("out")
        .key(&key)
        .send()
        .await
        .expect("stdout in S3");
    let body = object.body.collect().await.expect("body").into_bytes();
    assert_eq!(body.len(), 100_000);
    assert_eq!(std::str::from_utf8(&body).unwrap(), stdout);
    let err_key = key.replace("/stdout", "/stderr");
    let object = s3
        .get_object()
        .bucket("out")
        .key(&err_key)
        .send()
        .await
        .expect("stderr in S3");
    assert_eq!(object.body.collect().await.unwrap().into_bytes().len(), 20_000);

    // CloudWatch Logs: the whole text in SSM's stream, in the instance's account.
    let logs = aws_sdk_cloudwatchlogs::Client::new(&config);
    let stream = format!("{command_id}/{id}/aws-runShellScript/stdout");
    let mut text = String::new();
    let mut token: Option<String> = None;
    loop {
        let page = logs
            .get_log_events()
            .log_group_name("/muster/test")
            .log_stream_name(&stream)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await
            .expect("GetLogEvents");
        for event in page.events() {
            text.push_str(event.message().unwrap_or_default());
        }
        let next = page.next_forward_token().map(str::to_owned);
        if next == token || page.events().is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(text, stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_command() {
    let w = World::new().await;
    let ssm = aws_sdk_ssm::Client::new(&w.exec("alpha").await);
    let slow = w.ids("alpha", "slow");
    let command_id = send(&ssm, &slow).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while invocations(&ssm, &command_id)
        .await
        .first()
        .and_then(|i| i.status().cloned())
        != Some(CommandInvocationStatus::InProgress)
    {
        assert!(Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ssm.cancel_command()
        .command_id(&command_id)
        .send()
        .await
        .expect("CancelCommand");
    let done = wait_terminal(&ssm, &command_id, 1).await;
    assert_eq!(done[0].status(), Some(&CommandInvocationStatus::Cancelled));
    let commands = ssm
        .list_commands()
        .command_id(&command_id)
        .send()
        .await
        .expect("ListCommands");
    assert_eq!(commands.commands()[0].status().map(|s| s.as_str()), Some("Cancelled"));
    let err = ssm
        .cancel_command()
        .command_id("00000000-0000-0000-0000-000000000000")
        .send()
        .await
        .expect_err("unknown command");
    assert_eq!(err.code(), Some("InvalidCommandId"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_agents_show_connection_lost_and_time_out_on_delivery() {
    // Ten simulated seconds per real second: a 30 s delivery timeout takes 3 s.
    let mut tunables = test_tunables();
    tunables.time_scale = 10.0;
    let w = World::with(tunables).await;
    let ssm = aws_sdk_ssm::Client::new(&w.exec("alpha").await);

    let info = ssm
        .describe_instance_information()
        .max_results(50)
        .send()
        .await
        .expect("DescribeInstanceInformation");
    let ping = |role: &str| {
        let id = w.ids("alpha", role).remove(0);
        info.instance_information_list()
            .iter()
            .find(|i| i.instance_id() == Some(id.as_str()))
            .map(|i| {
                (
                    i.ping_status().map(|p| p.as_str().to_owned()),
                    i.platform_type().map(|p| p.as_str().to_owned()),
                )
            })
    };
    assert_eq!(ping("web"), Some((Some("Online".into()), Some("Linux".into()))));
    assert_eq!(ping("win"), Some((Some("Online".into()), Some("Windows".into()))));
    assert_eq!(ping("offline").map(|p| p.0), Some(Some("ConnectionLost".into())));
    assert_eq!(ping("unmanaged"), None, "an unmanaged instance is unknown to SSM");

    let err = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .set_instance_ids(Some(w.ids("alpha", "unmanaged")))
        .set_parameters(Some(shell(&["true"])))
        .send()
        .await
        .expect_err("SSM cannot send to an unmanaged instance");
    assert_eq!(err.code(), Some("InvalidInstanceId"));

    let command_id = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .set_instance_ids(Some(
            [
                w.ids("alpha", "offline"),
                w.ids("alpha", "hang"),
                w.ids("alpha", "gone"),
            ]
            .concat(),
        ))
        .set_parameters(Some(
            [
                ("commands".to_owned(), vec!["sleep 1000".to_owned()]),
                ("executionTimeout".to_owned(), vec!["20".to_owned()]),
            ]
            .into(),
        ))
        .timeout_seconds(30)
        .send()
        .await
        .expect("SendCommand")
        .command
        .and_then(|c| c.command_id)
        .expect("a command id");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let early = invocations(&ssm, &command_id).await;
    let offline_id = w.ids("alpha", "offline").remove(0);
    let early_offline = early
        .iter()
        .find(|i| i.instance_id() == Some(offline_id.as_str()))
        .unwrap();
    assert_eq!(
        early_offline.status(),
        Some(&CommandInvocationStatus::Pending),
        "waits for the agent"
    );

    let done = wait_terminal(&ssm, &command_id, 3).await;
    let details = |role: &str| {
        let id = w.ids("alpha", role).remove(0);
        let i = done.iter().find(|i| i.instance_id() == Some(id.as_str())).unwrap();
        (
            i.status().map(|s| s.as_str().to_owned()).unwrap(),
            i.status_details().unwrap().to_owned(),
        )
    };
    assert_eq!(details("offline"), ("TimedOut".into(), "DeliveryTimedOut".into()));
    assert_eq!(details("hang"), ("TimedOut".into(), "ExecutionTimedOut".into()));
    assert_eq!(details("gone"), ("Failed".into(), "Undeliverable".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_is_enforced_as_aws_does() {
    let w = World::new().await;
    let worker = w.worker().await;
    let alpha_role = format!("arn:aws:iam::{}:role/muster-execution", w.account("alpha"));

    let denied = |e: &aws_sdk_sts::error::SdkError<aws_sdk_sts::operation::assume_role::AssumeRoleError>| {
        e.code() == Some("AccessDenied")
    };
    // No ExternalId, a wrong one: AccessDenied.
    let err =
        w.sb.assume(&worker, &alpha_role, None)
            .await
            .expect_err("ExternalId is required");
    assert!(denied(&err), "{err:?}");
    let err =
        w.sb.assume(&worker, &alpha_role, Some("wrong"))
            .await
            .expect_err("wrong ExternalId");
    assert!(denied(&err));
    assert!(
        err.message().unwrap_or_default().contains(&alpha_role),
        "the error names the role"
    );

    // A missing role: AccessDenied, as AWS answers (it never says "no such role").
    let missing = format!("arn:aws:iam::{}:role/muster-execution", w.account("norole"));
    let err =
        w.sb.assume(&worker, &missing, Some("ext-42"))
            .await
            .expect_err("no role");
    assert!(denied(&err));

    // The trust policy names the worker role: the hub's other principals are not it.
    let hub = w.sb.hub_config(REGION);
    let err =
        w.sb.assume(&hub, &alpha_role, Some("ext-42"))
            .await
            .expect_err("not the worker role");
    assert!(denied(&err));

    // The right principal with the right ExternalId acts in the account.
    let creds =
        w.sb.assume(&worker, &alpha_role, Some("ext-42"))
            .await
            .expect("trusted");
    let who = aws_sdk_sts::Client::new(&w.sb.config_with(REGION, creds))
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity");
    assert_eq!(who.account(), Some(w.account("alpha").as_str()));

    // DurationSeconds: at least 900, and at most an hour when chained.
    let sts = aws_sdk_sts::Client::new(&worker);
    let err = sts
        .assume_role()
        .role_arn(&alpha_role)
        .role_session_name("short")
        .external_id("ext-42")
        .duration_seconds(600)
        .send()
        .await
        .expect_err("below 900");
    assert_eq!(err.code(), Some("ValidationError"));
    let err = sts
        .assume_role()
        .role_arn(&alpha_role)
        .role_session_name("long")
        .external_id("ext-42")
        .duration_seconds(7_200)
        .send()
        .await
        .expect_err("role chaining caps sessions at an hour");
    assert_eq!(err.code(), Some("ValidationError"));
    assert!(err.message().unwrap_or_default().contains("role chaining"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_beyond_the_quota_then_recovery() {
    let w = World::new().await;
    w.sb.tune(|t| {
        t.throttling = true;
        t.quotas = vec![
            Quota {
                service: "ssm".into(),
                api: "SendCommand".into(),
                rate: 1.0,
                burst: 2.0,
            },
            Quota {
                service: "ec2".into(),
                api: "*".into(),
                rate: 0.5,
                burst: 1.0,
            },
        ];
    });
    let alpha_cfg = w.exec("alpha").await;
    let ssm = aws_sdk_ssm::Client::new(&alpha_cfg);
    let web = w.ids("alpha", "web");
    let mut accepted = 0;
    let mut throttled = 0;
    for _ in 0..6 {
        match ssm
            .send_command()
            .document_name("AWS-RunShellScript")
            .set_instance_ids(Some(web.clone()))
            .set_parameters(Some(shell(&["true"])))
            .send()
            .await
        {
            Ok(_) => accepted += 1,
            Err(e) => {
                assert_eq!(e.code(), Some("ThrottlingException"));
                throttled += 1;
            }
        }
    }
    assert!(
        accepted >= 2 && throttled >= 3,
        "accepted {accepted}, throttled {throttled}"
    );
    assert_eq!(w.sb.count("ssm", "SendCommand", "throttled"), throttled);

    // Another account's bucket is its own.
    let beta = aws_sdk_ssm::Client::new(&w.exec("beta").await);
    send(&beta, &w.ids("beta", "web")).await;

    // EC2 throttles with its own error code.
    let ec2 = aws_sdk_ec2::Client::new(&alpha_cfg);
    let mut codes = Vec::new();
    for _ in 0..3 {
        if let Err(e) = ec2.describe_instances().send().await {
            codes.push(e.code().unwrap_or_default().to_owned());
        }
    }
    assert!(codes.iter().any(|c| c == "RequestLimitExceeded"), "{codes:?}");

    // Recovery: the bucket refills at its rate.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    send(&ssm, &web).await;
    assert_eq!(w.sb.audit().len() as u64, accepted + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_and_then_get_expired_token() {
    let w = World::new().await;
    // Seed first: the cap applies to sessions handed out from now on.
    w.sb.tune(|t| t.session_ttl_seconds = Some(2));
    let worker = w.worker().await;
    let arn = format!("arn:aws:iam::{}:role/muster-execution", w.account("beta"));
    let creds = w.sb.assume(&worker, &arn, Some("ext-42")).await.expect("assumed");
    let left = creds
        .expiry()
        .expect("session credentials expire")
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(left <= Duration::from_secs(3), "the cap shows in Expiration: {left:?}");
    let ssm = aws_sdk_ssm::Client::new(&w.sb.config_with(REGION, creds));
    ssm.describe_instance_information()
        .send()
        .await
        .expect("fresh credentials work");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let err = ssm.describe_instance_information().send().await.expect_err("expired");
    assert_eq!(err.code(), Some("ExpiredTokenException"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_answer_5xx_or_drop_the_connection() {
    let w = World::new().await;
    let ssm = aws_sdk_ssm::Client::new(&w.exec("beta").await);
    w.sb.tune(|t| {
        t.faults = vec![FaultRule {
            service: "ssm".into(),
            api: "DescribeInstanceInformation".into(),
            kind: FaultKind::Error500,
            probability: 0.0,
            every: Some(2),
            limit: None,
        }];
    });
    ssm.describe_instance_information()
        .send()
        .await
        .expect("first call passes");
    let err = ssm
        .describe_instance_information()
        .send()
        .await
        .expect_err("second call faults");
    assert_eq!(err.code(), Some("InternalServerError"));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(500));

    w.sb.tune(|t| {
        t.faults = vec![FaultRule {
            service: "ssm".into(),
            api: "*".into(),
            kind: FaultKind::Drop,
            probability: 1.0,
            every: None,
            limit: Some(1),
        }];
    });
    let err = ssm.describe_instance_information().send().await.expect_err("dropped");
    assert!(
        err.code().is_none(),
        "a dropped connection has no AWS error code: {err:?}"
    );
    ssm.describe_instance_information()
        .send()
        .await
        .expect("the limit of one drop was reached");
    assert_eq!(w.sb.count("ssm", "DescribeInstanceInformation", "fault"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_every_accepted_send() {
    let w = World::new().await;
    let alpha = aws_sdk_ssm::Client::new(&w.exec("alpha").await);
    let beta = aws_sdk_ssm::Client::new(&w.exec("beta").await);
    let web = w.ids("alpha", "web");
    let first = send(&alpha, &web).await;
    let second = beta
        .send_command()
        .document_name("AWS-RunShellScript")
        .set_instance_ids(Some(w.ids("beta", "web")))
        .set_parameters(Some(shell(&["uptime"])))
        .comment("muster task 0193a4b2-7c1d-7e2f-8a9b-0c1d2e3f4a5c")
        .send()
        .await
        .expect("SendCommand")
        .command
        .and_then(|c| c.command_id)
        .unwrap();
    let audit = w.sb.audit();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0].command_id, first);
    assert_eq!(audit[0].account, w.account("alpha"));
    assert_eq!(audit[0].region, REGION);
    assert_eq!(audit[0].instance_ids, web);
    assert_eq!(audit[0].document_name, "AWS-RunShellScript");
    assert!(audit[0].principal.contains(":assumed-role/muster-execution/"));
    assert_eq!(audit[1].command_id, second);
    assert_eq!(audit[1].account, w.account("beta"));
    assert_eq!(audit[1].comment, "muster task 0193a4b2-7c1d-7e2f-8a9b-0c1d2e3f4a5c");

    // The same log over the admin API.
    let body: serde_json::Value = reqwest_like_get(&format!("{}/_sim/audit", w.sb.endpoint())).await;
    assert_eq!(body["entries"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_baseline_reports_each_step_and_windows_runs_powershell() {
    let w = World::new().await;
    let ssm = aws_sdk_ssm::Client::new(&w.exec("alpha").await);
    let win = w.ids("alpha", "win");
    let command_id = ssm
        .send_command()
        .document_name("AWS-RunPatchBaseline")
        .set_instance_ids(Some(win.clone()))
        .parameters("Operation", vec!["Scan".to_owned()])
        .send()
        .await
        .expect("SendCommand")
        .command
        .and_then(|c| c.command_id)
        .unwrap();
    let done = wait_terminal(&ssm, &command_id, 1).await;
    let plugins = done[0].command_plugins();
    let names: Vec<&str> = plugins.iter().filter_map(|p| p.name()).collect();
    assert_eq!(names, ["PatchWindows", "PatchLinux", "PatchMacOS"]);
    assert!(plugins[0].output().unwrap_or_default().contains("patch baseline Scan"));
    assert!(
        plugins[1]
            .output()
            .unwrap_or_default()
            .contains("Step execution skipped")
    );
    let err = ssm
        .get_command_invocation()
        .command_id(&command_id)
        .instance_id(&win[0])
        .send()
        .await
        .expect_err("a multi-step document needs a plugin name");
    assert_eq!(err.code(), Some("InvalidPluginName"));
    let step = ssm
        .get_command_invocation()
        .command_id(&command_id)
        .instance_id(&win[0])
        .plugin_name("PatchWindows")
        .send()
        .await
        .expect("one step's detail");
    assert!(step.standard_output_content().unwrap_or_default().contains("0 missing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_mode_runs_the_script_with_sh() {
    let mut tunables = test_tunables();
    tunables.exec_mode = muster_sim::ExecMode::Real;
    let w = World::with(tunables).await;
    let ssm = aws_sdk_ssm::Client::new(&w.exec("beta").await);
    let ids = w.ids("beta", "web");
    let command_id = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .set_instance_ids(Some(ids[..1].to_vec()))
        .set_parameters(Some(shell(&["echo out-$((6*7))", "echo err >&2", "exit 5"])))
        .send()
        .await
        .expect("SendCommand")
        .command
        .and_then(|c| c.command_id)
        .unwrap();
    let done = wait_terminal(&ssm, &command_id, 1).await;
    assert_eq!(done[0].status(), Some(&CommandInvocationStatus::Failed));
    let plugin = &done[0].command_plugins()[0];
    assert_eq!(plugin.response_code(), 5);
    assert_eq!(plugin.output(), Some("out-42\n\n----------ERROR-------\nerr\n"));
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
    assert_eq!(ids(&again).len(), 13);
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
    assert_eq!(listed, 10);
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
