//! Run Command as a caller sees it: statuses, refusals, output, cancel,
//! offline agents, documents, and real mode.

use super::*;

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
    let err = run_shell(&ssm, &fifty_one, &["true"])
        .await
        .expect_err("51 ids are refused");
    assert_eq!(err.code(), Some("ValidationException"));
    assert!(err.message().unwrap_or_default().contains("less than or equal to 50"));

    let fifty = &fifty_one[..50];
    let err = run_shell(&ssm, fifty, &["true"])
        .await
        .expect_err("unknown instances are refused");
    assert_eq!(err.code(), Some("InvalidInstanceId"));

    let web = w.ids("alpha", "web");
    let err = run_shell(&ssm, &[web[0].clone(), web[0].clone()], &["true"])
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

    let err = run_shell(&ssm, &w.ids("alpha", "unmanaged"), &["true"])
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
async fn patch_baseline_reports_each_step_and_windows_runs_powershell() {
    let w = World::new().await;
    let ssm = aws_sdk_ssm::Client::new(&w.exec("alpha").await);
    let win = w.ids("alpha", "win");
    let done = patch(&ssm, &win, "Scan", "RebootIfNeeded").await;
    let command_id = done[0].command_id().unwrap().to_owned();
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

/// AWS-RunPatchBaseline with `Operation` and `RebootOption` on `ids`, to
/// its end.
async fn patch(ssm: &aws_sdk_ssm::Client, ids: &[String], operation: &str, reboot: &str) -> Vec<CommandInvocation> {
    let command_id = ssm
        .send_command()
        .document_name("AWS-RunPatchBaseline")
        .set_instance_ids(Some(ids.to_vec()))
        .parameters("Operation", vec![operation.to_owned()])
        .parameters("RebootOption", vec![reboot.to_owned()])
        .send()
        .await
        .expect("SendCommand")
        .command
        .and_then(|c| c.command_id)
        .unwrap();
    wait_terminal(ssm, &command_id, ids.len()).await
}

/// (operation, missing, failed, installed, pending reboot) of each of
/// `ids` that has a patch state, in the order asked.
async fn patch_states(ssm: &aws_sdk_ssm::Client, ids: &[String]) -> Vec<(String, i32, i32, i32, i32)> {
    let answer = ssm
        .describe_instance_patch_states()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .expect("DescribeInstancePatchStates");
    answer
        .instance_patch_states()
        .iter()
        .map(|s| {
            (
                s.operation().as_str().to_owned(),
                s.missing_count(),
                s.failed_count(),
                s.installed_count(),
                s.installed_pending_reboot_count().unwrap_or_default(),
            )
        })
        .collect()
}

/// (critical, security) non-compliant counts of each of `ids` that has a
/// patch state.
async fn severities(ssm: &aws_sdk_ssm::Client, ids: &[String]) -> Vec<(i32, i32)> {
    let answer = ssm
        .describe_instance_patch_states()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .expect("DescribeInstancePatchStates");
    answer
        .instance_patch_states()
        .iter()
        .map(|s| {
            (
                s.critical_non_compliant_count().unwrap_or_default(),
                s.security_non_compliant_count().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_baseline_leaves_a_patch_state_that_scans_report_and_installs_change() {
    let w = World::new().await;
    let ssm = aws_sdk_ssm::Client::new(&w.exec("alpha").await);
    let behind = w.ids("alpha", "behind");
    let broken = w.ids("alpha", "broken");
    let both = [behind.clone(), broken.clone()].concat();
    assert!(patch_states(&ssm, &both).await.is_empty(), "no patch run yet, no state");

    let scanned = patch(&ssm, &both, "Scan", "NoReboot").await;
    assert!(
        scanned
            .iter()
            .any(|i| i.status() == Some(&CommandInvocationStatus::Failed))
    );
    // The failed scan reported nothing; the other found 3 missing.
    assert_eq!(patch_states(&ssm, &both).await, [("Scan".to_owned(), 3, 0, 42, 0)]);
    assert_eq!(severities(&ssm, &behind).await, [(2, 3)], "2 of the 3 are critical");

    let installed = patch(&ssm, &both, "Install", "NoReboot").await;
    let output = installed
        .iter()
        .find(|i| i.instance_id() == Some(behind[0].as_str()))
        .and_then(|i| i.command_plugins().iter().find(|p| p.name() == Some("PatchLinux")))
        .and_then(|p| p.output())
        .unwrap_or_default()
        .to_owned();
    assert!(
        output.contains("Install on") && output.contains("0 missing, 0 failed, 45 installed, 3 pending reboot"),
        "{output}"
    );
    assert_eq!(
        patch_states(&ssm, &both).await,
        [
            ("Install".to_owned(), 0, 0, 45, 3),
            // The install failed its 2 patches.
            ("Install".to_owned(), 0, 2, 42, 0),
        ]
    );
    // A scan after the install finds nothing missing; pending stays until
    // an install with RebootIfNeeded reboots it.
    patch(&ssm, &behind, "Scan", "NoReboot").await;
    assert_eq!(patch_states(&ssm, &behind).await, [("Scan".to_owned(), 0, 0, 45, 3)]);
    assert_eq!(
        severities(&ssm, &behind).await,
        [(2, 3)],
        "installed, but not in effect before the reboot"
    );
    patch(&ssm, &behind, "Install", "RebootIfNeeded").await;
    assert_eq!(patch_states(&ssm, &behind).await, [("Install".to_owned(), 0, 0, 45, 0)]);
    assert_eq!(severities(&ssm, &behind).await, [(0, 0)]);

    let too_many: Vec<String> = (0..51).map(|i| format!("i-{i:017x}")).collect();
    let refused = ssm
        .describe_instance_patch_states()
        .set_instance_ids(Some(too_many))
        .send()
        .await
        .expect_err("at most 50 instance ids");
    assert_eq!(refused.code(), Some("ValidationException"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_mode_runs_the_script_with_sh() {
    let mut tunables = test_tunables();
    tunables.exec_mode = muster_sim::ExecMode::Real;
    let w = World::with(tunables).await;
    let ssm = aws_sdk_ssm::Client::new(&w.exec("beta").await);
    let ids = w.ids("beta", "web");
    let command_id = run_shell(&ssm, &ids[..1], &["echo out-$((6*7))", "echo err >&2", "exit 5"])
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
async fn real_mode_reboots_on_exit_194_and_runs_the_script_again() {
    let mut tunables = test_tunables();
    tunables.exec_mode = muster_sim::ExecMode::Real;
    let w = World::with(tunables).await;
    let ssm = aws_sdk_ssm::Client::new(&w.exec("beta").await);
    let ids = w.ids("beta", "web");
    let state = tempfile::tempdir().expect("tempdir");
    let marker = state.path().join("rebooted");
    let marker = marker.display();
    // An idempotent script, as AWS asks of one that reboots: the second run
    // sees what the first left.
    let script =
        format!("if [ -f {marker} ]; then echo after-reboot; else touch {marker}; echo before-reboot; exit 194; fi");
    let command_id = run_shell(&ssm, &ids[..1], &[&script])
        .await
        .expect("SendCommand")
        .command
        .and_then(|c| c.command_id)
        .unwrap();
    let done = wait_terminal(&ssm, &command_id, 1).await;
    assert_eq!(done[0].status(), Some(&CommandInvocationStatus::Success));
    let plugin = &done[0].command_plugins()[0];
    assert_eq!(plugin.response_code(), 0);
    assert_eq!(
        plugin.output(),
        Some(
            "before-reboot\n[muster-sim] exit 194: the agent rebooted the instance and ran the script again\nafter-reboot\n"
        )
    );

    // A script that always asks for a reboot runs until its execution
    // timeout stops it. (On Linux `exit 3010` is 194 too: exit codes are
    // 8 bits.)
    let mut parameters = shell(&["echo again", "exit 194"]);
    parameters.insert("executionTimeout".into(), vec!["5".into()]);
    let looping = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .set_instance_ids(Some(ids[..1].to_vec()))
        .set_parameters(Some(parameters))
        .send()
        .await
        .expect("SendCommand")
        .command
        .and_then(|c| c.command_id)
        .unwrap();
    let done = wait_terminal(&ssm, &looping, 1).await;
    assert_eq!(
        (done[0].status(), done[0].status_details()),
        (Some(&CommandInvocationStatus::TimedOut), Some("ExecutionTimedOut"))
    );
}
