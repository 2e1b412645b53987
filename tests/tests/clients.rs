//! Clients people already use, against the real controller: a Python
//! grpcio client that learns the API only by server reflection
//! (grpcio-reflection speaks v1alpha; grpcurl speaks v1).

use std::time::Duration;

use muster_proto::v1::{CampaignState, Stage, StageGate};
use muster_tests::client::{get, script_spec, submit, wait_done, wait_for};
use muster_tests::fleets;
use muster_tests::stack::{Options, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_reflects_the_api_and_decodes_get_campaign() {
    let (mut stack, id) = idle_stack_with_campaign().await;
    let expected = get(&mut stack.client, &id).await;

    let output = tokio::process::Command::new(muster_sim::testkit::venv_python())
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/reflect.py"))
        .arg(format!("127.0.0.1:{}", stack.controller.campaign_addr.port()))
        .arg(&stack.creds.files.ca)
        .arg(&stack.creds.read_token)
        .arg(&id)
        .output()
        .await
        .expect("the venv's python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).expect("the client prints JSON");
    let services: Vec<&str> = answer["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    for service in [
        "muster.v1.CampaignService",
        "muster.v1.ScheduleService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(services.contains(&service), "{service} is listed: {services:?}");
    }
    assert!(
        !services.contains(&"muster.v1.WorkerService"),
        "WorkerService is served on its own port only: {services:?}"
    );
    assert_eq!(answer["campaign_id"], id.as_str());
    assert_eq!(
        answer["state"],
        muster_proto::v1::CampaignState::try_from(expected.state)
            .unwrap()
            .as_str_name()
    );
    assert_eq!(answer["total"], expected.counters.unwrap().total);

    // The CLI's JSON is the API's, as protobuf's own library maps it.
    let (code, stdout, stderr) = muster_cli(&stack, &["-o", "json", "show", &id], None).await;
    assert_eq!(code, 0, "{stderr}");
    let printed: serde_json::Value = serde_json::from_str(&stdout).expect("the CLI prints JSON");
    assert_eq!(
        printed, answer["campaign_json"],
        "muster -o json show is protobuf's JSON of the campaign"
    );
}

/// The CLI with the submitting token against the stack's
/// controller, `stdin` written to its standard input: exit code, stdout,
/// stderr.
async fn muster_cli(stack: &Stack, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    run_cli(stack, As::Submitter, args, stdin).await
}

/// Who the CLI calls as.
enum As {
    /// The `ci` token (operator).
    Submitter,
    /// The admin's client certificate (CN muster-admin).
    Admin,
}

async fn run_cli(stack: &Stack, caller: As, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use tokio::io::AsyncWriteExt as _;
    let mut command = muster_tests::procs::muster_command();
    command
        .arg("--controller")
        .arg(format!("https://localhost:{}", stack.controller.campaign_addr.port()))
        .arg("--tls-ca")
        .arg(&stack.creds.files.ca);
    match caller {
        As::Submitter => command.env("MUSTER_TOKEN", &stack.creds.submit_token),
        As::Admin => command
            .arg("--tls-cert")
            .arg(&stack.creds.files.admin_cert)
            .arg("--tls-key")
            .arg(&stack.creds.files.admin_key),
    };
    command
        .args(["--color", "never"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("the CLI runs");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .await
        .expect("stdin written");
    drop(input);
    let out = child.wait_with_output().await.expect("the CLI ends");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `muster show -o yaml` prints a campaign `muster submit -f -` reads back:
/// the same client token answers with the same campaign, a new one makes a
/// campaign of the same spec; and the wide table shows who submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_as_yaml_submits_again_and_the_table_widens() {
    let stack = idle_stack().await;
    let account = stack.account("prod-a");
    let (code, first, stderr) = muster_cli(
        &stack,
        &[
            "-o",
            "csv",
            "submit",
            "--name",
            "round-trip",
            "--account",
            &account,
            "--region",
            "us-east-1",
            "--linux",
            "uptime",
            "--label",
            "ticket=CHG-1",
            "--max-concurrency",
            "10%",
            "--client-token",
            "round-trip-1",
        ],
        None,
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let first = first.trim().to_owned();

    let (code, yaml, stderr) = muster_cli(&stack, &["-o", "yaml", "show", &first], None).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(yaml.contains("clientToken: round-trip-1"), "{yaml}");

    let (code, again, stderr) = muster_cli(&stack, &["-o", "json", "submit", "-f", "-"], Some(&yaml)).await;
    assert_eq!(code, 0, "{stderr}");
    let again: serde_json::Value = serde_json::from_str(&again).expect("JSON");
    assert_eq!(
        again["campaignId"],
        first.as_str(),
        "the same token answers with the same campaign"
    );
    assert_eq!(again["created"], false);

    let (code, second, stderr) = muster_cli(
        &stack,
        &["-o", "csv", "submit", "-f", "-", "--client-token", "round-trip-2"],
        Some(&yaml),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let second = second.trim().to_owned();
    assert_ne!(second, first, "a new token makes a new campaign");
    let mut client = stack.client.clone();
    let spec_of = |campaign: muster_proto::v1::Campaign| {
        let mut spec = campaign.spec.expect("a spec");
        spec.client_token.clear();
        spec
    };
    let (one, two) = (get(&mut client, &first).await, get(&mut client, &second).await);
    assert_eq!(spec_of(two), spec_of(one), "the spec went round unchanged");

    let (code, wide, stderr) = muster_cli(&stack, &["-o", "wide", "ls"], None).await;
    assert_eq!(code, 0, "{stderr}");
    let header = wide.lines().next().unwrap_or_default();
    for column in ["id", "state", "finished", "by", "labels"] {
        assert!(header.split_whitespace().any(|c| c == column), "{column} in {header}");
    }
    assert!(wide.contains("ticket=CHG-1"), "{wide}");
    // show says what the campaign runs.
    let (code, shown, stderr) = muster_cli(&stack, &["show", &first], None).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(shown.contains("  runs      linux: uptime\n"), "{shown}");
    assert!(shown.contains("  labels    ticket=CHG-1\n"), "{shown}");
    let (_, narrow, stderr) = muster_cli(&stack, &["ls"], None).await;
    assert!(
        !narrow.contains("ticket=CHG-1"),
        "the narrow table has no labels: {narrow}"
    );
    assert!(!stderr.contains("may be more"), "both campaigns are shown: {stderr}");
    // A limit that leaves one out says so.
    let (code, one, stderr) = muster_cli(&stack, &["ls", "--limit", "1"], None).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(one.lines().count(), 2, "the header and the newest: {one}");
    assert!(one.contains(&second), "{one}");
    assert!(stderr.contains("the newest 1 shown; there may be more"), "{stderr}");
}

/// `muster plan && muster submit` stops where some account or region
/// cannot run: the plan exits 2 and says how many, naming why in each row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_with_scopes_that_cannot_run_exits_2() {
    let stack = Stack::start(
        fleets::MIXED,
        Options {
            workers: 1,
            ..Default::default()
        },
    )
    .await;
    let account = stack.account("prod-a");
    let plan = |accounts: String| {
        let stack = &stack;
        async move {
            muster_cli(
                stack,
                &[
                    "plan",
                    "--account",
                    &accounts,
                    "--region",
                    "us-east-1",
                    "--linux",
                    "uptime",
                ],
                None,
            )
            .await
        }
    };
    let (code, stdout, stderr) = plan(account.clone()).await;
    assert_eq!(code, 0, "every scope can run: {stdout}{stderr}");
    // The plan is kept: `muster show` prints it as a plan again.
    let id = stderr
        .lines()
        .find_map(|l| l.strip_prefix("plan ")?.split(':').next())
        .unwrap_or_else(|| panic!("the plan's id: {stderr}"));
    let (code, shown, stderr) = muster_cli(&stack, &["show", id], None).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(shown.contains("(a plan: nothing ran)"), "{shown}");
    let table = |text: &str| {
        text.lines()
            .skip_while(|l| !(l.contains("would run") && l.contains("managed")))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(table(&shown), table(&stdout), "the same table as the plan printed");
    // An account outside the Organization: the execution role cannot be
    // assumed there.
    let (code, stdout, stderr) = plan(format!("{account},999999999999")).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("1 of 2 accounts/regions cannot run: the note says why"),
        "{stderr}"
    );
    let row = stdout.lines().find(|l| l.contains("999999999999")).unwrap_or_default();
    assert!(row.contains("AccessDenied"), "{stdout}");
}

/// The `muster` CLI as a shell and a packager meet it: completions, a man
/// page, and an exit code for a wrong command line that no campaign
/// outcome uses.
#[tokio::test]
async fn the_cli_completes_in_each_shell_has_a_man_page_and_exits_64_on_a_wrong_command_line() {
    let run = |args: &[&str]| {
        let mut command = muster_tests::procs::muster_command();
        command.args(args);
        muster_tests::procs::output_of(command)
    };
    for shell in ["bash", "zsh", "fish"] {
        let (code, stdout, stderr) = run(&["completions", shell]).await;
        assert_eq!(code, 0, "{stderr}");
        for word in ["submit", "watch", "console", "max-concurrency"] {
            assert!(stdout.contains(word), "the {shell} completions know {word}");
        }
    }
    let (code, man, _) = run(&["man"]).await;
    assert_eq!(code, 0);
    assert!(man.contains(".TH muster 1") && man.contains("submit"), "{man}");
    // No controller is needed for any of those; a wrong flag is 64, not 1
    // (bad input to the controller) or 2 (completed with errors).
    let (code, _, stderr) = run(&["--no-such-flag", "ls"]).await;
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
    let (code, _, stderr) = run(&["cancel"]).await;
    assert_eq!(code, 64, "a missing argument: {stderr}");
    // Stopping at a decision means nothing without following the campaign.
    let (code, _, stderr) = run(&["submit", "--until-decision", "--account", "123456789012"]).await;
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("--watch"), "{stderr}");
    let (code, stdout, _) = run(&["--help"]).await;
    assert_eq!(code, 0, "help is an answer");
    assert!(stdout.contains("Usage: muster"));
}

/// A refused spec answers with `google.rpc` details a generated client can
/// read without parsing the message: one BadRequest field violation per
/// field, named by its path in the request, and an ErrorInfo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_submit_names_each_field_in_bad_request_details() {
    use tonic_types::StatusExt;
    let mut stack = idle_stack().await;
    let mut spec = script_spec(&["12345".to_owned()], &["us-east-1"], &["true"], &[]);
    spec.name = "x".repeat(200);
    let refused = stack
        .client
        .submit_campaign(muster_proto::v1::SubmitCampaignRequest { spec: Some(spec) })
        .await
        .expect_err("the spec is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let bad = refused.get_details_bad_request().expect("BadRequest details");
    let fields: Vec<&str> = bad.field_violations.iter().map(|v| v.field.as_str()).collect();
    assert!(fields.contains(&"spec.name"), "{fields:?}");
    assert!(fields.contains(&"spec.targets.account_ids[0]"), "{fields:?}");
    for violation in &bad.field_violations {
        assert!(
            refused.message().contains(&violation.description),
            "the message still says all of it: {}",
            refused.message()
        );
    }
    let info = refused.get_details_error_info().expect("ErrorInfo details");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("INVALID_ARGUMENT", "muster.v1")
    );
    assert_eq!(info.metadata["violations"], bad.field_violations.len().to_string());
}

/// Every refusal of bad input carries the same details as a refused spec,
/// not only the spec's: a list's page token, a campaign's view, a status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_request_names_its_field_in_bad_request_details() {
    use muster_proto::v1::{GetCampaignRequest, ListCampaignsRequest, ListTargetsRequest};
    use tonic_types::StatusExt;
    let (mut stack, id) = idle_stack_with_campaign().await;
    let refusals = [
        (
            stack
                .client
                .list_campaigns(ListCampaignsRequest {
                    page_token: "not-a-token".into(),
                    ..Default::default()
                })
                .await
                .expect_err("a made-up page token is refused"),
            "page_token",
        ),
        (
            stack
                .client
                .get_campaign(GetCampaignRequest {
                    campaign_id: id.clone(),
                    view: 9,
                })
                .await
                .expect_err("an unknown view is refused"),
            "view",
        ),
        (
            stack
                .client
                .list_targets(ListTargetsRequest {
                    campaign_id: id.clone(),
                    statuses: vec![0, 99],
                    ..Default::default()
                })
                .await
                .expect_err("an unknown status is refused"),
            "statuses[0]",
        ),
    ];
    for (refused, field) in refusals {
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        let bad = refused.get_details_bad_request().expect("BadRequest details");
        let fields: Vec<&str> = bad.field_violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, [field], "{refused:?}");
        assert!(
            refused.message().starts_with(&format!("{field}: ")),
            "the message names the field too: {}",
            refused.message()
        );
        let info = refused.get_details_error_info().expect("ErrorInfo details");
        assert_eq!(info.domain, "muster.v1");
    }
}

/// `muster watch` through a controller restart: the stream drops, the CLI
/// subscribes again, and it ends with the campaign's own exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_survives_the_controller_restarting_and_ends_with_the_campaigns_exit_code() {
    use muster_tests::procs::{System, SystemOptions};
    let mut system = System::start(&fleets::uniform(6, 1, 6.0), SystemOptions::default()).await;
    let account = system.fleet.accounts[0].id.clone();
    let id = submit(
        &mut system.client,
        script_spec(&[account], &["us-east-1"], &["true"], &[]),
    )
    .await;
    let mut watch = muster_tests::procs::muster_command();
    watch
        .args(["--controller", &format!("https://localhost:{}", system.campaign_port())])
        .arg("--tls-ca")
        .arg(&system.creds.files.ca)
        .args(["--color", "never", "watch", &id])
        .env("MUSTER_TOKEN", &system.creds.read_token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let watch = watch.spawn().expect("muster watch starts");
    // Once the watch follows it, the controller dies and comes back.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    system.kill_controller();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    system.start_controller().await;
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), watch.wait_with_output())
        .await
        .expect("the watch ends")
        .expect("its output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let campaign = get(&mut system.client, &id).await;
    assert_eq!(
        campaign.state,
        muster_proto::v1::CampaignState::CompletedWithErrors as i32,
        "{}",
        campaign.state_reason
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "completed with errors, as if the stream never dropped:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("subscribing again") || stdout.contains("subscribing again"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("5") && stdout.contains("1"),
        "the summary counts: {stdout}"
    );
}

/// A client certificate typed on the command line signs in with it,
/// although a token is exported (as in the sandbox's env file): the
/// controller takes a token first, so the CLI does not send it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_on_the_command_line_beats_a_token_in_the_environment() {
    let stack = idle_stack().await;
    let url = format!("https://localhost:{}", stack.controller.campaign_addr.port());
    let whoami = |cert: bool| {
        let mut command = muster_tests::procs::muster_command();
        command
            .env("MUSTER_TOKEN", &stack.creds.submit_token)
            .args(["--controller", &url, "--tls-ca"])
            .arg(&stack.creds.files.ca);
        if cert {
            command
                .arg("--tls-cert")
                .arg(&stack.creds.files.admin_cert)
                .arg("--tls-key")
                .arg(&stack.creds.files.admin_key);
        }
        command.args(["-o", "json", "whoami"]);
        muster_tests::procs::output_of(command)
    };
    let (code, stdout, stderr) = whoami(false).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"via\": \"token\""), "{stdout}");
    let (code, stdout, stderr) = whoami(true).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"via\": \"certificate\""), "{stdout}");
    assert!(stdout.contains("muster-admin"), "{stdout}");
}

/// `muster cancel` cancels a campaign that has not ended, with the reason;
/// asked again once it has ended, it says there is nothing to cancel
/// instead of printing the state as if it had made it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_says_when_there_is_nothing_left_to_cancel() {
    let (mut stack, id) = idle_stack_with_campaign().await;
    let (code, stdout, stderr) = muster_cli(&stack, &["cancel", &id, "--reason", "wrong window"], None).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("wrong window"), "{stdout}");
    let campaign = wait_for(&mut stack.client, &id, Duration::from_secs(60), "the cancel", |c| {
        c.state == CampaignState::Cancelled as i32
    })
    .await;
    assert!(
        campaign.state_reason.contains("wrong window"),
        "{}",
        campaign.state_reason
    );

    let (code, stdout, stderr) = muster_cli(&stack, &["cancel", &id], None).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "");
    assert!(
        stderr.contains(&format!("campaign {id} already ended (cancelled): nothing to cancel")),
        "{stderr}"
    );
    // The audit trail has the submit and the cancel: a limit of one says
    // it left some out.
    let (code, events, stderr) = run_cli(&stack, As::Admin, &["audit", "--limit", "1"], None).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(events.contains("cancel"), "the newest is the cancel: {events}");
    assert!(stderr.contains("the newest 1 shown; there may be more"), "{stderr}");
}

/// Contexts as kubectl users know them: made once, then every command uses
/// the current one; the environment overrides the context and a flag the
/// environment; a context that is not there is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_context_is_used_until_the_environment_or_a_flag_says_otherwise() {
    let (stack, id) = idle_stack_with_campaign().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("muster/config.toml");
    let token = dir.path().join("token");
    std::fs::write(&token, &stack.creds.submit_token).expect("the token file");
    let url = format!("https://localhost:{}", stack.controller.campaign_addr.port());
    let run = |env: Vec<(&'static str, String)>, args: Vec<String>| {
        let mut command = muster_tests::procs::muster_command();
        command.env("MUSTER_CONFIG", &config).envs(env).args(args);
        muster_tests::procs::output_of(command)
    };
    let args = |line: &[&str]| line.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();

    let ca = stack.creds.files.ca.display().to_string();
    let token_file = token.display().to_string();
    let (code, _, stderr) = run(
        vec![],
        args(&[
            "config",
            "set-context",
            "sandbox",
            "--controller",
            &url,
            "--tls-ca",
            &ca,
            "--token-file",
            &token_file,
            "-o",
            "json",
        ]),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, _) = run(vec![], args(&["config", "get-contexts"])).await;
    assert_eq!((code, stdout.trim()), (0, format!("* sandbox\t{url}").as_str()));

    // No flags: the context's controller, CA, token and output.
    let (code, stdout, stderr) = run(vec![], args(&["ls"])).await;
    assert_eq!(code, 0, "{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).expect("the context's -o json");
    assert_eq!(listed["campaigns"][0]["id"], id.as_str());

    // The environment over the context, a flag over the environment.
    let elsewhere = vec![("MUSTER_CONTROLLER", "https://localhost:1".to_owned())];
    let (code, _, stderr) = run(elsewhere.clone(), args(&["ls"])).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("localhost:1"), "the environment's controller: {stderr}");
    let (code, stdout, stderr) = run(elsewhere, args(&["--controller", &url, "-o", "csv", "ls"])).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("id,name,state"), "the flag's output: {stdout}");

    let (code, _, stderr) = run(vec![], args(&["--context", "prod", "ls"])).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("--context: no context 'prod' (there are: sandbox)"),
        "{stderr}"
    );
    let (code, _, stderr) = run(vec![], args(&["config", "set-context", "prod", "--token", "secret"])).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("--token: a context keeps no token"), "{stderr}");
    assert!(
        !std::fs::read_to_string(&config).unwrap().contains("secret"),
        "nothing of a refused change is written"
    );
}

/// The Python client package (clients/python, built from these protos into
/// the venv) runs its example: it submits a campaign, watches it to its
/// end, and reports what the controller recorded, each instance run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_package_submits_and_watches_a_campaign() {
    let mut stack = Stack::start(fleets::MIXED, Options::default()).await;
    let account = stack.account("prod-a");
    let dir = tempfile::tempdir().expect("a temp dir");
    let token = dir.path().join("token");
    std::fs::write(&token, &stack.creds.submit_token).expect("the token file");
    let example = muster_sim::testkit::workspace_root().join("clients/python/examples/submit_and_watch.py");
    let output = tokio::process::Command::new(muster_sim::testkit::venv_python())
        .arg(example)
        .args([
            "--address",
            &format!("127.0.0.1:{}", stack.controller.campaign_addr.port()),
        ])
        .arg("--ca")
        .arg(&stack.creds.files.ca)
        .arg("--token-file")
        .arg(&token)
        .args([
            "--server-name",
            "localhost",
            "--account",
            &account,
            "--region",
            "us-east-1",
        ])
        .args(["--linux", "echo patched"])
        .output()
        .await
        .expect("the venv's python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let id = stdout
        .lines()
        .find_map(|line| line.strip_prefix("campaign "))
        .expect("the example names its campaign")
        .to_owned();
    let campaign = get(&mut stack.client, &id).await;
    let state = CampaignState::try_from(campaign.state).expect("a state");
    // prod-a has an instance whose command fails: the campaign completes
    // with errors, and the example exits as the CLI would.
    assert_eq!(state, CampaignState::CompletedWithErrors, "{stdout}\n{stderr}");
    assert_eq!(output.status.code(), Some(2), "{stdout}\n{stderr}");
    let counters = campaign.counters.expect("counters");
    assert!(counters.success > 0 && counters.failed > 0, "{campaign:?}");
    assert!(
        stdout.contains(&format!(
            "{}: {} of {} targets succeeded",
            state.as_str_name(),
            counters.success,
            counters.total
        )),
        "the example reports what the controller recorded: {stdout}"
    );
    let sends = stack.sends_per_instance();
    assert_eq!(
        sends.len() as u64,
        counters.success + counters.failed,
        "every instance that ran was sent to: {sends:?}"
    );
    assert!(sends.values().all(|n| *n == 1), "each instance ran once: {sends:?}");
}

/// A call that fails on the way says why in words a person can act on:
/// nothing listening, or a certificate the CA given does not vouch for,
/// told apart by the errors under the call, not by their text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_tells_an_unreachable_controller_from_a_tls_mismatch() {
    let stack = idle_stack().await;
    let files = &stack.creds.files;
    let port = stack.controller.campaign_addr.port();
    let run = |url: String, ca: &std::path::Path| {
        let mut command = muster_tests::procs::muster_command();
        command
            .env("MUSTER_TOKEN", &stack.creds.submit_token)
            .args(["--controller", &url, "--tls-ca"])
            .arg(ca)
            .arg("ls");
        muster_tests::procs::output_of(command)
    };

    let closed = format!("https://localhost:{}", muster_sim::testkit::free_port());
    let (code, _, stderr) = run(closed.clone(), &files.ca).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("cannot reach the controller at {closed}")),
        "{stderr}"
    );

    // The worker CA signed no certificate of the controller's.
    let (code, _, stderr) = run(format!("https://localhost:{port}"), &files.worker_ca).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("TLS with the controller at"), "{stderr}");
    assert!(stderr.contains("check --tls-ca"), "{stderr}");

    let (code, _, stderr) = run(format!("https://localhost:{port}"), &files.ca).await;
    assert_eq!(code, 0, "the right CA works: {stderr}");
}

/// `muster promote` finds the stage that waits at its gate and lets the
/// next one start, for a caller whose role may; asked when nothing waits,
/// or by an operator, it says why and changes nothing.
/// Stages: `canary` (what it selects), then a manual gate, then the rest.
fn canary_behind_a_gate(canary: Stage) -> Vec<Stage> {
    vec![
        Stage {
            name: "canary".into(),
            gate: StageGate::Manual as i32,
            ..canary
        },
        Stage {
            name: "rest".into(),
            ..Default::default()
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_lets_the_stage_waiting_at_its_gate_go_on() {
    let mut stack = Stack::start(fleets::MIXED, Options::default()).await;
    let (canary, rest) = (stack.account("prod-b"), stack.account("dev-a"));
    let mut spec = script_spec(&[canary.clone(), rest.clone()], &["us-east-1"], &["true"], &["$true"]);
    spec.stages = canary_behind_a_gate(Stage {
        account_ids: vec![canary],
        ..Default::default()
    });
    let id = submit(&mut stack.client, spec).await;

    let (code, _, stderr) = run_cli(&stack, As::Admin, &["resume", &id], None).await;
    assert_ne!(code, 0, "nothing is paused");
    assert!(stderr.contains("not paused: nothing to decide"), "{stderr}");

    wait_for(
        &mut stack.client,
        &id,
        Duration::from_secs(60),
        "the canary's gate",
        |c| c.state == CampaignState::AwaitingPromotion as i32,
    )
    .await;
    let promote = ["promote", &id, "--reason", "canary is fine"];
    let (code, _, stderr) = muster_cli(&stack, &promote, None).await;
    assert_ne!(code, 0, "an operator may not promote");
    assert!(stderr.contains("PromoteCampaign needs approver or admin"), "{stderr}");
    let (code, stdout, stderr) = run_cli(&stack, As::Admin, &promote, None).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with(&id), "{stdout}");
    let done = wait_done(&mut stack.client, &id, Duration::from_secs(60)).await;
    let counters = done.counters.unwrap();
    assert_eq!(
        (counters.success, counters.failed),
        (3 + 4, 0),
        "prod-b's 3 managed instances, then dev-a's 4: {}",
        done.state_reason
    );
}

/// `muster results ID --instance I` is one target's output; with
/// `--follow-reruns` it is that instance as the latest rerun left it, said
/// so. Flags it cannot honour, and values that can name no target, are
/// refused by the flag's name instead of being ignored or answered
/// "0 targets".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_of_one_instance_follow_its_rerun_and_refuse_what_they_cannot_honour() {
    use muster_proto::v1::{RerunCampaignRequest, TargetStatus};
    let mut stack = Stack::start(fleets::MIXED, Options::default()).await;
    let account = stack.account("prod-a");
    let spec = script_spec(
        std::slice::from_ref(&account),
        &["us-east-1"],
        &["echo patched"],
        &["Write-Output patched"],
    );
    let first = submit(&mut stack.client, spec).await;
    wait_done(&mut stack.client, &first, Duration::from_secs(120)).await;
    let failed: Vec<_> = muster_tests::client::targets(&mut stack.client, &first, false)
        .await
        .into_iter()
        .filter(|t| t.status == TargetStatus::Failed as i32)
        .collect();
    assert_eq!(failed.len(), 1, "prod-a's failing instance: {failed:?}");
    let instance = failed[0].instance_id.clone();
    let rerun = stack
        .client
        .rerun_campaign(RerunCampaignRequest {
            campaign_id: first.clone(),
            client_token: "results-rerun".into(),
            ..Default::default()
        })
        .await
        .expect("a rerun")
        .into_inner()
        .campaign_id;
    wait_done(&mut stack.client, &rerun, Duration::from_secs(120)).await;
    let again = muster_tests::client::targets(&mut stack.client, &rerun, false).await;
    assert_eq!(again.len(), 1);
    assert_ne!(
        again[0].command_id, failed[0].command_id,
        "the rerun sent its own command"
    );

    let (code, own, stderr) = muster_cli(&stack, &["results", &first, "--instance", &instance], None).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        own.contains(&failed[0].command_id) && !own.contains("as rerun"),
        "{own}"
    );
    let (code, latest, stderr) = muster_cli(
        &stack,
        &["results", &first, "--instance", &instance, "--follow-reruns"],
        None,
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(latest.contains(&format!("as rerun {rerun} left it")), "{latest}");
    assert!(latest.contains(&again[0].command_id), "{latest}");

    for (args, said) in [
        (vec!["--account", "12"], "--account: '12' is not a 12-digit account id"),
        (vec!["--region", "mars-1"], "--region: 'mars-1' is not an AWS region"),
        (vec!["--instance", "web-1"], "--instance: 'web-1' is not an instance id"),
        (
            vec!["--instance", instance.as_str(), "--status", "failed"],
            "--status: --instance shows that one target whatever its status",
        ),
        (
            vec![
                "--instance",
                instance.as_str(),
                "--account",
                &account,
                "--account",
                "111111111111",
            ],
            "--account: --instance shows one target; give at most one",
        ),
    ] {
        let mut command = vec!["results", first.as_str()];
        command.extend(args.iter().copied());
        let (code, _, stderr) = muster_cli(&stack, &command, None).await;
        assert_eq!(code, 1, "{command:?}: {stderr}");
        assert!(stderr.contains(said), "{command:?}: {stderr}");
    }
}

/// The sandbox and a controller without workers: campaigns stay where
/// they are while a client looks.
async fn idle_stack() -> Stack {
    Stack::start(
        fleets::MIXED,
        Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await
}

/// An idle stack with one campaign submitted (prod-a, us-east-1).
async fn idle_stack_with_campaign() -> (Stack, String) {
    let mut stack = idle_stack().await;
    let accounts = vec![stack.account("prod-a")];
    let id = submit(
        &mut stack.client,
        script_spec(&accounts, &["us-east-1"], &["true"], &[]),
    )
    .await;
    (stack, id)
}

/// A controller whose host vanished leaves its clients' connections open
/// and silent. The client the workers and the CLI share
/// (`muster_common::tls::endpoint`) pings, gives such a connection up and
/// connects again, to wherever the address leads now. Without the pings,
/// every call on it would time out until the kernel gave up on it, about 15
/// minutes on a real network, and here never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_the_controller_leaves_a_silent_connection_for_a_new_one() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let proxy = muster_tests::proxy::StallingProxy::start(upstream).await;
    let url = format!("http://{}", proxy.addr);
    let channel = muster_common::tls::endpoint("controller", &url, "tls", &Default::default())
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest::default())
        .await
        .expect("answered through the proxy");
    assert_eq!(proxy.connections(), 1);

    proxy.stall();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut failed = 0;
    while let Err(status) = client.check(HealthCheckRequest::default()).await {
        failed += 1;
        assert!(
            std::time::Instant::now() < deadline,
            "no answer in 2 minutes ({failed} calls failed, the last with {status}): the silent connection was kept"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(failed >= 1, "the first call after the stall went unanswered");
    assert_eq!(proxy.connections(), 2, "answered on a new connection");
}

/// The Python client's watch stops where the campaign waits on a person,
/// as `muster watch --until-decision` does; without it, it would wait on
/// with the campaign (and the test's bound would end it). Its `get` asks
/// for the view it is given, and its schedules stub shares the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_watch_stops_at_a_decision() {
    let mut stack = Stack::start(&fleets::uniform(4, 0, 0.5), Options::default()).await;
    let account = stack.account("only");
    let mut spec = script_spec(&[account], &["us-east-1"], &["echo patched"], &[]);
    spec.stages = canary_behind_a_gate(Stage {
        share: "1".into(),
        ..Default::default()
    });
    let schedule = muster_proto::v1::ScheduleSpec {
        name: "nightly".into(),
        campaign: Some(spec.clone()),
        cron: "0 2 * * *".into(),
        ..Default::default()
    };
    let id = submit(&mut stack.client, spec).await;
    stack
        .schedules()
        .put_schedule(muster_proto::v1::PutScheduleRequest {
            spec: Some(schedule),
            expected_version: 0,
        })
        .await
        .expect("a schedule is stored");
    let dir = tempfile::tempdir().expect("a temp dir");
    let token = dir.path().join("token");
    std::fs::write(&token, &stack.creds.read_token).expect("the token file");
    let script = r#"
import sys
from muster import Client
from muster.v1 import campaign_pb2, schedule_pb2

address, ca, token_file, campaign_id = sys.argv[1:]
with Client(address, ca=ca, token=open(token_file).read().strip(), server_name="localhost") as client:
    last = None
    for event in client.watch(campaign_id, until_decision=True):
        kind = event.WhichOneof("event")
        if kind == "snapshot":
            last = event.snapshot.state
        elif kind == "state":
            last = event.state.state
    full = client.get(campaign_id)
    basic = client.get(campaign_id, view=campaign_pb2.CAMPAIGN_VIEW_BASIC)
    schedules = client.schedules.ListSchedules(schedule_pb2.ListSchedulesRequest(), metadata=client.metadata)
print(campaign_pb2.CampaignState.Name(last))
print(f"full: {campaign_pb2.CampaignState.Name(full.state)}, {len(full.scopes)} scopes, {full.counters.total} targets")
print(f"basic: {campaign_pb2.CampaignState.Name(basic.state)}, {len(basic.scopes)} scopes, {basic.counters.total} targets")
print(f"schedules: {[s.spec.name for s in schedules.schedules]}")
"#;
    let run = tokio::process::Command::new(muster_sim::testkit::venv_python())
        .args(["-c", script])
        .arg(format!("127.0.0.1:{}", stack.controller.campaign_addr.port()))
        .arg(&stack.creds.files.ca)
        .arg(&token)
        .arg(&id)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the watch stopped at the gate rather than waiting on with the campaign")
        .expect("the venv's python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "CAMPAIGN_STATE_AWAITING_PROMOTION",
            // The client asks for the view it is given: the basic one
            // leaves the row of each account and region out.
            "full: CAMPAIGN_STATE_AWAITING_PROMOTION, 1 scopes, 4 targets",
            "basic: CAMPAIGN_STATE_AWAITING_PROMOTION, 0 scopes, 4 targets",
            // The schedules' stub shares the channel and the token.
            "schedules: ['nightly']",
        ],
        "{stderr}"
    );
    let campaign = get(&mut stack.client, &id).await;
    assert_eq!(
        campaign.state,
        CampaignState::AwaitingPromotion as i32,
        "the campaign still waits: {}",
        campaign.state_reason
    );
}
