//! Quotas, injected faults, and the audit log of sends.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_beyond_the_quota_then_recovery() {
    let w = World::new().await;
    w.sb.tune(|t| {
        t.throttling = true;
        t.quotas = vec![
            Quota::new("ssm", "SendCommand", 1.0, 2.0),
            Quota::new("ec2", "*", 0.5, 1.0),
        ];
    });
    let alpha_cfg = w.exec("alpha").await;
    let ssm = aws_sdk_ssm::Client::new(&alpha_cfg);
    let web = w.ids("alpha", "web");
    let mut accepted = 0;
    let mut throttled = 0;
    for _ in 0..6 {
        match run_shell(&ssm, &web, &["true"]).await {
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
async fn injected_faults_answer_5xx_or_drop_the_connection() {
    let w = World::new().await;
    let ssm = aws_sdk_ssm::Client::new(&w.exec("beta").await);
    w.sb.tune(|t| {
        t.faults = vec![FaultRule::new("ssm", "DescribeInstanceInformation", FaultKind::Error500).every(2)];
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
        t.faults = vec![FaultRule::new("ssm", "*", FaultKind::Drop).limit(1)];
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
async fn a_fault_after_the_effect_loses_only_the_answer() {
    let w = World::new().await;
    let ssm = aws_sdk_ssm::Client::new(&w.exec("beta").await);
    let web = w.ids("beta", "web");
    let after = |kind| FaultRule::new("ssm", "SendCommand", kind).limit(1).after_effect();
    for (kind, code) in [
        (FaultKind::Error500, Some("InternalServerError")),
        (FaultKind::Drop, None),
    ] {
        w.sb.tune(|t| t.faults = vec![after(kind)]);
        let before = w.sb.audit().len();
        let err = ssm
            .send_command()
            .document_name("AWS-RunShellScript")
            .set_instance_ids(Some(web.clone()))
            .set_parameters(Some(shell(&["echo once"])))
            .comment("lost answer")
            .send()
            .await
            .expect_err("the caller hears of a failure");
        assert_eq!(err.code(), code, "{kind:?}: {err:?}");
        let audit = w.sb.audit();
        assert_eq!(audit.len(), before + 1, "{kind:?}: yet SSM accepted the command");
        // Listed once visible (SSM is eventually consistent after a send).
        let mut comment = None;
        for _ in 0..50 {
            let listed = ssm.list_commands().command_id(&audit[before].command_id).send().await;
            comment = listed
                .ok()
                .and_then(|l| l.commands().first().and_then(|c| c.comment().map(str::to_owned)));
            if comment.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            comment.as_deref(),
            Some("lost answer"),
            "{kind:?}: and lists it by its comment"
        );
    }
    assert_eq!(w.sb.count("ssm", "SendCommand", "fault_after"), 2);
    assert_eq!(
        w.sb.count("ssm", "SendCommand", "fault"),
        0,
        "no fault struck before a call"
    );
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
async fn a_duplicate_fault_delivers_a_received_message_twice() {
    let w = World::new().await;
    let sqs = aws_sdk_sqs::Client::new(&w.sb.hub_config(REGION));
    let queue = &w.fleet.queue_url;
    sqs.send_message()
        .queue_url(queue)
        .message_body("task")
        .send()
        .await
        .expect("SendMessage");
    w.sb.tune(|t| {
        t.faults = vec![
            FaultRule::new("sqs", "ReceiveMessage", FaultKind::Duplicate)
                .limit(1)
                .after_effect(),
        ]
    });
    let receive = || async {
        sqs.receive_message()
            .queue_url(queue)
            .visibility_timeout(60)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("ReceiveMessage")
            .messages
            .unwrap_or_default()
    };
    let first = receive().await;
    let second = receive().await;
    assert_eq!(first.len(), 1, "the first receive gets the message");
    assert_eq!(
        second.len(),
        1,
        "and, within its visibility timeout, so does the second"
    );
    assert_eq!(first[0].message_id, second[0].message_id, "the same message");
    assert_ne!(
        first[0].receipt_handle, second[0].receipt_handle,
        "with its own receipt handle"
    );
    assert!(receive().await.is_empty(), "the limit of one duplicate was reached");
    assert_eq!(w.sb.count("sqs", "ReceiveMessage", "redelivered"), 1);
}

#[test]
fn a_duplicate_fault_is_refused_outside_sqs_receives() {
    let mut tunables = test_tunables();
    tunables.faults = vec![FaultRule::new("ssm", "SendCommand", FaultKind::Duplicate).after_effect()];
    let error = tunables.validate().expect_err("refused");
    assert!(error.starts_with("faults[0].kind: duplicate applies to"), "{error}");
}
