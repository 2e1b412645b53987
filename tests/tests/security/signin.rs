//! Signing in with an AWS identity: the CLI's signed token, the role the
//! policy maps it to, and the console's session.

use std::time::Duration;

use muster_proto::v1::ListAuditEventsRequest;
use muster_tests::client::get;
use muster_tests::fleets;
use muster_tests::stack::{Options, Stack};
use tonic::Code;

use super::{EAST, set_policy, token_entry, with_token};

/// A person's AWS config: the hub's static keys, and the two roles the
/// sandbox seeds with IAM Identity Center's names, as profiles with the
/// person's name as the session name (as Identity Center sets it).
fn aws_config(stack: &Stack, dir: &std::path::Path) -> std::path::PathBuf {
    let roles = &stack.fleet.people_roles;
    let path = dir.join("aws-config");
    let text = format!(
        "[profile base]\naws_access_key_id = AKIAMUSTERTESTHUB\naws_secret_access_key = muster-test\n\n\
         [profile patch-operator]\nrole_arn = {}\nsource_profile = base\nrole_session_name = alice@example.com\n\n\
         [profile read-only]\nrole_arn = {}\nsource_profile = base\nrole_session_name = bob@example.com\n",
        roles["PatchOperators"], roles["ReadOnly"]
    );
    std::fs::write(&path, text).expect("the AWS config is written");
    path
}

/// Runs the `muster` CLI as a person signed in with AWS profile `profile`;
/// its exit code, stdout and stderr.
async fn muster_as(
    stack: &Stack,
    config: &std::path::Path,
    profile: &str,
    server_id: &str,
    args: &[&str],
) -> (i32, String, String) {
    let mut command = muster_tests::procs::muster_command();
    command
        .env("AWS_CONFIG_FILE", config)
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_PROFILE", profile)
        .env("AWS_ENDPOINT_URL", stack.sb.endpoint())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args([
            "--controller",
            &format!("https://localhost:{}", stack.controller.campaign_addr.port()),
            "--tls-ca",
        ])
        .arg(&stack.creds.files.ca)
        .args([
            "--aws-signin",
            "--server-id",
            server_id,
            "--color",
            "never",
            "-o",
            "json",
        ])
        .args(args);
    muster_tests::procs::output_of(command).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_in_with_their_aws_identity_and_get_the_role_the_policy_maps() {
    let stack = Stack::start(
        fleets::MIXED,
        Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    let hub = stack.fleet.hub_account.clone();
    let dev_ou = stack.fleet.ous["Dev"].clone();
    let watcher = muster_controller::auth::new_token();
    let policy = format!(
        "{}[[grants]]\nprincipals = [\"watcher\"]\nrole = \"viewer\"\n\n\
         [[grants]]\nprincipals = [\"arn:aws:sts::{hub}:assumed-role/AWSReservedSSO_PatchOperators_*/*\"]\n\
         role = \"operator\"\nous = [\"{dev_ou}\"]\n",
        token_entry("watcher", &watcher, None)
    );
    set_policy(&stack, &policy, &watcher).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = aws_config(&stack, dir.path());
    let server_id = muster_tests::creds::SERVER_ID;

    // Alice signs in with her profile and gets the role the policy maps to
    // her permission set's role, in its scope.
    let (code, stdout, stderr) = muster_as(&stack, &config, "patch-operator", server_id, &["whoami"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let me: serde_json::Value = serde_json::from_str(&stdout).expect("whoami prints JSON");
    assert_eq!(me["name"], "alice@example.com", "{me}");
    assert_eq!(me["via"], "aws");
    assert_eq!(
        me["awsArn"],
        format!("arn:aws:sts::{hub}:assumed-role/AWSReservedSSO_PatchOperators_5f2c1a9b3e7d4c60/alice@example.com")
    );
    assert_eq!(
        me["grants"],
        serde_json::json!([{"role": "operator", "accounts": [], "ous": [dev_ou], "regions": [], "documents": []}])
    );

    // She submits in her OU, and the audit trail names her and her ARN.
    let (dev, prod) = (stack.account("dev-a"), stack.account("prod-a"));
    let submit_args =
        |account: &str| ["submit", "--account", account, "--region", EAST, "--linux", "true"].map(str::to_owned);
    let args = submit_args(&dev);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = muster_as(&stack, &config, "patch-operator", server_id, &args).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).expect("submit prints JSON");
    let id = answer["campaignId"].as_str().expect("a campaign id").to_owned();
    let campaign = get(&mut stack.client.clone(), &id).await;
    assert_eq!(campaign.submitted_by, "alice@example.com");
    let events = stack
        .client
        .clone()
        .list_audit_events(ListAuditEventsRequest {
            campaign_id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("the admin reads the audit trail")
        .into_inner()
        .events;
    let submitted = events
        .iter()
        .find(|e| e.action == "submitted")
        .expect("the submission is audited");
    assert_eq!(submitted.principal, "alice@example.com");
    assert_eq!(submitted.via, format!("aws {}", me["awsArn"].as_str().unwrap()));

    // Outside her OU she may not, and the error names her scope.
    let args = submit_args(&prod);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, stderr) = muster_as(&stack, &config, "patch-operator", server_id, &args).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "not allowed: scope: alice@example.com may submit only within OUs {dev_ou}"
        )),
        "{stderr}"
    );

    // Bob's role is mapped to nothing: he is known, and may do nothing.
    let (code, stdout, stderr) = muster_as(&stack, &config, "read-only", server_id, &["whoami"]).await;
    assert_eq!(code, 0, "{stderr}");
    let bob: serde_json::Value = serde_json::from_str(&stdout).expect("whoami prints JSON");
    assert_eq!(
        (bob["name"].as_str(), bob["grants"].as_array().map(Vec::len)),
        (Some("bob@example.com"), Some(0))
    );
    let (code, _, stderr) = muster_as(&stack, &config, "read-only", server_id, &["ls"]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("not allowed: role: bob@example.com has no role; ListCampaigns needs"),
        "{stderr}"
    );

    // A token signed for another controller fails at STS, and says which id
    // this one has.
    let (code, _, stderr) = muster_as(&stack, &config, "patch-operator", "another-controller", &["whoami"]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("STS refused the AWS sign-in: SignatureDoesNotMatch"),
        "{stderr}"
    );
    assert!(
        stderr.contains("this controller's server id is 'muster-test'"),
        "{stderr}"
    );

    // Made-up, altered, stale and misdirected tokens are refused by name.
    let session = stack
        .sb
        .assume(
            &stack.sb.hub_config(EAST),
            &stack.fleet.people_roles["PatchOperators"],
            None,
        )
        .await
        .expect("the role is assumed");
    let signer = muster_cli::signin::AwsSigner::new(session, EAST, &stack.sb.endpoint(), server_id).expect("a signer");
    let url_of = |token: &str| -> String {
        use base64::Engine as _;
        let encoded = token
            .strip_prefix(muster_cli::signin::TOKEN_PREFIX)
            .expect("the prefix");
        String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded)
                .unwrap(),
        )
        .unwrap()
    };
    let token_of = |url: &str| -> String {
        use base64::Engine as _;
        format!(
            "{}{}",
            muster_cli::signin::TOKEN_PREFIX,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url)
        )
    };
    let good = url_of(&signer.sign(std::time::SystemTime::now()).unwrap());
    let signature = good.rsplit("X-Amz-Signature=").next().unwrap().to_owned();
    let flipped = format!(
        "{}{}",
        &signature[..63],
        if signature.ends_with('0') { '1' } else { '0' }
    );
    let stale = url_of(
        &signer
            .sign(std::time::SystemTime::now() - Duration::from_secs(600))
            .unwrap(),
    );
    let elsewhere = good.replacen(&stack.sb.endpoint(), "https://sts.example.com", 1);
    let who = |token: String| {
        let stack = &stack;
        async move {
            with_token(stack, Some(&token))
                .who_am_i(muster_proto::v1::WhoAmIRequest {})
                .await
        }
    };
    // The same token again is remembered: STS is asked once per token.
    for _ in 0..2 {
        let me = who(token_of(&good))
            .await
            .expect("the good token is let in")
            .into_inner();
        assert_eq!((me.name.as_str(), me.grants.len()), ("muster-test", 1));
    }
    for (token, says) in [
        (
            token_of(&good.replace(&signature, &flipped)),
            "STS refused the AWS sign-in: SignatureDoesNotMatch",
        ),
        (token_of(&stale), "AWS sign-in token: it expired at"),
        (
            token_of(&elsewhere),
            "AWS sign-in token: https://sts.example.com is not an STS endpoint",
        ),
        (
            token_of(&good.replace("GetCallerIdentity", "GetSessionToken")),
            "is not sts:GetCallerIdentity",
        ),
        ("muster-aws-v1.not-a-url".to_owned(), "AWS sign-in token:"),
    ] {
        let status = who(token).await.expect_err(says);
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(
            status.message().starts_with(says) || status.message().contains(says),
            "{says}: {status:?}"
        );
    }
    let metrics = muster_controller::metrics::render(&stack.controller.controller).await;
    for outcome in ["verified", "remembered", "refused"] {
        assert!(
            metrics.contains(&format!("muster_controller_aws_signins_total{{outcome=\"{outcome}\"}}")),
            "{outcome} is counted: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_to_the_console_with_their_aws_identity_for_a_session() {
    let stack = Stack::start(
        fleets::MIXED,
        Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    let hub = stack.fleet.hub_account.clone();
    let watcher = muster_controller::auth::new_token();
    let policy = format!(
        "{}[[grants]]\nprincipals = [\"watcher\"]\nrole = \"viewer\"\n\n\
         [[grants]]\nprincipals = [\"arn:aws:sts::{hub}:assumed-role/AWSReservedSSO_PatchOperators_*/*\"]\n\
         role = \"operator\"\n",
        token_entry("watcher", &watcher, None)
    );
    set_policy(&stack, &policy, &watcher).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = aws_config(&stack, dir.path());

    // The CLI gives the console's address and a sign-in token to paste.
    let (code, stdout, stderr) = muster_as(
        &stack,
        &config,
        "patch-operator",
        muster_tests::creds::SERVER_ID,
        &["console"],
    )
    .await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).expect("console prints JSON");
    let base = format!("https://localhost:{}", stack.controller.campaign_addr.port());
    assert_eq!(answer["url"], format!("{base}/console/"));
    assert_eq!(answer["name"], "alice@example.com");
    let token = answer["signinToken"].as_str().expect("a sign-in token").to_owned();

    let browser = muster_tests::browser::Browser::start("aws-signin").await;
    browser.sign_in(&base, &token).await;
    let who = browser.text_of("who").await;
    assert!(
        who.contains("alice@example.com") && who.contains("aws") && who.contains("operator"),
        "{who}"
    );
    browser.screenshot("signed-in").await;
    // The browser keeps a sealed session, not the five-minute token.
    let cookie = browser
        .client
        .get_named_cookie("muster_console")
        .await
        .expect("the session cookie");
    assert!(cookie.value().starts_with("s1."), "{}", cookie.value());
    assert_ne!(cookie.value(), token);
    assert_eq!(cookie.http_only(), Some(true));
    // A session changed by hand is no session: sign in again.
    let mut forged = cookie.clone().into_owned();
    forged.set_value(cookie.value().replace("s1.", "s1.x"));
    browser.client.delete_cookie("muster_console").await.expect("deleted");
    browser
        .client
        .add_cookie(forged)
        .await
        .expect("the forged cookie is set");
    browser.goto(&format!("{base}/console/")).await;
    browser.element("token").await;
    assert!(
        browser
            .client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/console/signin")
    );
}
