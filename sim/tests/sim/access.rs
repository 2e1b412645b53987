//! Who may call what: account boundaries, role trust, session expiry.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_of_account_b_is_refused_with_account_a_credentials() {
    let w = World::new().await;
    let alpha = aws_sdk_ssm::Client::new(&w.exec("alpha").await);
    let beta_ids = w.ids("beta", "web");
    let err = run_shell(&alpha, &beta_ids, &["true"])
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
async fn assume_role_is_enforced_as_aws_does() {
    let w = World::new().await;
    let worker = w.worker().await;
    let alpha_role = format!("arn:aws:iam::{}:role/muster-execution", w.account("alpha"));

    let denied = |e: &aws_sdk_sts::error::SdkError<aws_sdk_sts::operation::assume_role::AssumeRoleError>| {
        e.code() == Some("AccessDenied")
    };
    // No ExternalId, a wrong one: AccessDenied.
    let err =
        w.sb.assume_execution(&worker, &alpha_role, None)
            .await
            .expect_err("ExternalId is required");
    assert!(denied(&err), "{err:?}");
    let err =
        w.sb.assume_execution(&worker, &alpha_role, Some("wrong"))
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
        w.sb.assume_execution(&worker, &missing, Some("ext-42"))
            .await
            .expect_err("no role");
    assert!(denied(&err));

    // The trust policy names the worker role: the hub's other principals are not it.
    let hub = w.sb.hub_config(REGION);
    let err =
        w.sb.assume_execution(&hub, &alpha_role, Some("ext-42"))
            .await
            .expect_err("not the worker role");
    assert!(denied(&err));

    // The right ExternalId without naming who asked: AccessDenied, and a
    // SourceIdentity STS would not take: ValidationError.
    let err =
        w.sb.assume_with(&worker, &alpha_role, Some("ext-42"), None)
            .await
            .expect_err("no SourceIdentity");
    assert!(denied(&err), "{err:?}");
    let err =
        w.sb.assume_with(&worker, &alpha_role, Some("ext-42"), Some("a b"))
            .await
            .expect_err("a SourceIdentity with a space");
    assert_eq!(err.code(), Some("ValidationError"), "{err:?}");

    // The right principal with the right ExternalId, naming who asked, acts
    // in the account; the sim records who.
    let creds =
        w.sb.assume_execution(&worker, &alpha_role, Some("ext-42"))
            .await
            .expect("trusted");
    let who = aws_sdk_sts::Client::new(&w.sb.config_with(REGION, creds))
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity");
    assert_eq!(who.account(), Some(w.account("alpha").as_str()));
    assert!(
        w.sb.assumed_roles()
            .iter()
            .any(|a| a.role_arn == alpha_role && a.source_identity.as_deref() == Some("muster-test")),
        "the sim records the SourceIdentity"
    );

    // DurationSeconds: at least 900, and at most an hour when chained.
    let sts = aws_sdk_sts::Client::new(&worker);
    let err = sts
        .assume_role()
        .role_arn(&alpha_role)
        .role_session_name("short")
        .external_id("ext-42")
        .source_identity("muster-test")
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
        .source_identity("muster-test")
        .duration_seconds(7_200)
        .send()
        .await
        .expect_err("role chaining caps sessions at an hour");
    assert_eq!(err.code(), Some("ValidationError"));
    assert!(err.message().unwrap_or_default().contains("role chaining"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_and_then_get_expired_token() {
    let w = World::new().await;
    // Seed first: the cap applies to sessions handed out from now on.
    w.sb.tune(|t| t.session_ttl_seconds = Some(2));
    let worker = w.worker().await;
    let arn = format!("arn:aws:iam::{}:role/muster-execution", w.account("beta"));
    let creds =
        w.sb.assume_execution(&worker, &arn, Some("ext-42"))
            .await
            .expect("assumed");
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
