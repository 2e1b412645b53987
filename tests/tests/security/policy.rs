//! Roles within scopes from a policy file or an S3 object, read again
//! without a restart, and what a scoped principal may see and do.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use muster_proto::v1::{
    CancelCampaignRequest, GetCampaignRequest, ListAuditEventsRequest, ListCampaignsRequest, ListTargetsRequest,
    PlanCampaignRequest, RerunCampaignRequest, SubmitCampaignRequest, WatchCampaignRequest,
};
use muster_tests::client::{get, script_spec, submit};
use muster_tests::fleets;
use muster_tests::stack::{Options, Stack};
use tonic::Code;

use super::{EAST, set_policy, token_entry, two_instances_no_workers, with_token, write_policy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_scoped_to_one_ou_plans_submits_reads_and_cancels_only_there() {
    let stack = Stack::start(
        fleets::MIXED,
        Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    let dev_ou = stack.fleet.ous["Dev"].clone();
    let (dev_ops, dev_viewer) = (
        muster_controller::auth::new_token(),
        muster_controller::auth::new_token(),
    );
    let policy = format!(
        "{}{}[[grants]]\nprincipals = [\"dev-ops\"]\nrole = \"operator\"\nous = [\"{dev_ou}\"]\n\n\
         [[grants]]\nprincipals = [\"dev-viewer\"]\nrole = \"viewer\"\nous = [\"{dev_ou}\"]\n",
        token_entry("dev-ops", &dev_ops, None),
        token_entry("dev-viewer", &dev_viewer, None),
    );
    set_policy(&stack, &policy, &dev_ops).await;
    let (prod, dev) = (stack.account("prod-a"), stack.account("dev-a"));
    let prod_spec = script_spec(std::slice::from_ref(&prod), &[EAST], &["true"], &[]);
    let dev_spec = script_spec(std::slice::from_ref(&dev), &[EAST], &["true"], &[]);
    // The unscoped operator's campaign in Prod.
    let mut ci = stack.client.clone();
    let prod_id = submit(&mut ci, prod_spec.clone()).await;

    let mut scoped = with_token(&stack, Some(&dev_ops));
    let outside = |action: &str| {
        format!(
            "scope: dev-ops may {action} only within OUs {dev_ou}; this campaign reaches account {prod}, outside it"
        )
    };
    let denied = |status: tonic::Status, action: &str| {
        assert_eq!(status.code(), Code::PermissionDenied, "{action}: {status:?}");
        assert_eq!(status.message(), outside(action), "{action}");
    };
    // Plan and submit in Prod: refused, and nothing is stored for it.
    denied(
        scoped
            .plan_campaign(PlanCampaignRequest {
                spec: Some(prod_spec.clone()),
                ..Default::default()
            })
            .await
            .expect_err("plan in Prod"),
        "plan",
    );
    denied(
        scoped
            .submit_campaign(SubmitCampaignRequest {
                spec: Some(prod_spec.clone()),
            })
            .await
            .expect_err("submit in Prod"),
        "submit",
    );
    // Read and cancel the Prod campaign: refused.
    denied(
        scoped
            .get_campaign(GetCampaignRequest {
                campaign_id: prod_id.clone(),
                ..Default::default()
            })
            .await
            .expect_err("read Prod"),
        "read",
    );
    denied(
        scoped
            .list_targets(ListTargetsRequest {
                campaign_id: prod_id.clone(),
                ..Default::default()
            })
            .await
            .expect_err("read Prod's targets"),
        "read",
    );
    denied(
        scoped
            .watch_campaign(WatchCampaignRequest {
                campaign_id: prod_id.clone(),
                ..Default::default()
            })
            .await
            .expect_err("watch Prod"),
        "read",
    );
    denied(
        scoped
            .cancel_campaign(CancelCampaignRequest {
                campaign_id: prod_id.clone(),
                reason: "not mine".into(),
            })
            .await
            .expect_err("cancel in Prod"),
        "cancel",
    );
    assert!(
        !get(&mut ci, &prod_id).await.state_reason.contains("not mine"),
        "the Prod campaign was not cancelled"
    );
    // Nor may it take the Prod campaign's targets for one of its own.
    let mut taking = dev_spec.clone();
    taking.targets = Some(muster_proto::v1::TargetSelector {
        from_campaign: Some(muster_proto::v1::CampaignTargets {
            campaign_id: prod_id.clone(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let status = scoped
        .submit_campaign(SubmitCampaignRequest { spec: Some(taking) })
        .await
        .expect_err("take Prod's targets");
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::PermissionDenied,
            format!("targets.from_campaign.campaign_id: {}", outside("read")).as_str()
        )
    );

    // In Dev it does all of it, and sees only its own OU's campaigns.
    scoped
        .plan_campaign(PlanCampaignRequest {
            spec: Some(dev_spec.clone()),
            // No worker discovers anything here: answer at once.
            wait_seconds: 1,
        })
        .await
        .expect("plan in Dev");
    let dev_id = scoped
        .submit_campaign(SubmitCampaignRequest {
            spec: Some(dev_spec.clone()),
        })
        .await
        .expect("submit in Dev")
        .into_inner()
        .campaign_id;
    let seen: BTreeSet<String> = scoped
        .list_campaigns(ListCampaignsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .campaigns
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(seen, BTreeSet::from([dev_id.clone()]), "only its own OU's campaign");
    let all: BTreeSet<String> = ci
        .list_campaigns(ListCampaignsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .campaigns
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(
        all.contains(&prod_id) && all.contains(&dev_id),
        "the unscoped operator sees both"
    );
    // The Dev viewer reads Dev, but not its output, and cancels nothing.
    let mut viewer = with_token(&stack, Some(&dev_viewer));
    viewer
        .get_campaign(GetCampaignRequest {
            campaign_id: dev_id.clone(),
            ..Default::default()
        })
        .await
        .expect("a viewer reads in its scope");
    let status = viewer
        .list_targets(ListTargetsRequest {
            campaign_id: dev_id.clone(),
            include_output: true,
            ..Default::default()
        })
        .await
        .expect_err("a viewer reads no output");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "role: dev-viewer has role viewer; ListTargets needs operator or approver or admin"
    );
    let status = viewer
        .cancel_campaign(CancelCampaignRequest {
            campaign_id: dev_id.clone(),
            reason: String::new(),
        })
        .await
        .expect_err("a viewer cancels nothing");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = viewer
        .rerun_campaign(RerunCampaignRequest {
            campaign_id: dev_id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("a viewer reruns nothing");
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::PermissionDenied,
            "role: dev-viewer has role viewer; RerunCampaign needs operator or admin"
        )
    );
    scoped
        .cancel_campaign(CancelCampaignRequest {
            campaign_id: dev_id.clone(),
            reason: "done looking".into(),
        })
        .await
        .expect("cancel in Dev");

    // The audit trail, as an admin reads it: who submitted, planned,
    // cancelled and was refused what, how they proved it, and from where.
    let trail = ci
        .list_audit_events(ListAuditEventsRequest::default())
        .await
        .expect("an admin reads the audit trail")
        .into_inner()
        .events;
    let count = |who: &str, action: &str| {
        trail
            .iter()
            .filter(|e| e.principal == who && e.action == action)
            .count()
    };
    assert_eq!(count("muster-admin", "submitted"), 1, "{trail:#?}");
    assert_eq!((count("dev-ops", "planned"), count("dev-ops", "submitted")), (1, 1));
    assert_eq!(count("dev-ops", "cancel_requested"), 1);
    assert_eq!(
        count("dev-ops", "refused"),
        7,
        "plan, submit, get, targets, watch, cancel, from_campaign"
    );
    assert_eq!(count("dev-viewer", "refused"), 3, "output, cancel and rerun");
    // The policy written for this test is in it too, by its hash.
    assert_eq!(count("policy file", "policy_reloaded"), 1, "{trail:#?}");
    assert!(
        trail
            .iter()
            .filter(|e| e.action != "policy_reloaded")
            .all(|e| e.peer.starts_with("127.0.0.1:") && ["token", "certificate"].contains(&e.via.as_str())),
        "{trail:#?}"
    );
    let cancel_refused = trail
        .iter()
        .find(|e| e.action == "refused" && e.detail.contains("CancelCampaign") && e.principal == "dev-ops")
        .expect("the refused cancel");
    assert_eq!(cancel_refused.campaign_id, prod_id);
    assert!(cancel_refused.detail.contains("scope: dev-ops may cancel only within"));
    // Only admins read it.
    let status = viewer
        .list_audit_events(ListAuditEventsRequest::default())
        .await
        .expect_err("a viewer reads no audit trail");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "role: dev-viewer has role viewer; ListAuditEvents needs admin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_and_leave_with_the_policy_file_without_a_restart() {
    let stack = two_instances_no_workers().await;
    let (kept, short, later) = (
        muster_controller::auth::new_token(),
        muster_controller::auth::new_token(),
        muster_controller::auth::new_token(),
    );
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let grants = "[[grants]]\nprincipals = [\"kept\", \"short\", \"later\"]\nrole = \"viewer\"\n";
    set_policy(
        &stack,
        &format!(
            "{}{}{grants}",
            token_entry("kept", &kept, None),
            token_entry("short", &short, Some(&soon))
        ),
        &kept,
    )
    .await;
    let list = |token: String| {
        let stack = &stack;
        async move {
            with_token(stack, Some(&token))
                .list_campaigns(ListCampaignsRequest::default())
                .await
        }
    };
    // The short-lived token works until it expires, then is refused.
    list(short.clone()).await.expect("not expired yet");
    let deadline = Instant::now() + Duration::from_secs(20);
    let expired = loop {
        match list(short.clone()).await {
            Ok(_) => assert!(Instant::now() < deadline, "the token never expired"),
            Err(status) => break status,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(expired.code(), Code::Unauthenticated);
    assert_eq!(
        expired.message(),
        format!("the bearer token of short expired at {soon}")
    );
    // A token taken out of the file is refused once the file is read again.
    write_policy(&stack, &format!("{}{grants}", token_entry("later", &later, None)));
    let deadline = Instant::now() + Duration::from_secs(20);
    let removed = loop {
        match list(kept.clone()).await {
            Ok(_) => assert!(Instant::now() < deadline, "the removed token is still let in"),
            Err(status) => break status,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (removed.code(), removed.message()),
        (Code::Unauthenticated, "unknown bearer token")
    );
    list(later.clone()).await.expect("the new token is let in");
    // A file that does not parse leaves the policy in force, and says so.
    write_policy(&stack, "[[tokens]]\nname = \"broken\"\n");
    let metrics = || async { muster_controller::metrics::render(&stack.controller.controller).await };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !metrics()
        .await
        .contains("muster_controller_policy_reloads_total{outcome=\"error\"} 1")
    {
        assert!(Instant::now() < deadline, "the broken policy was never read");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    list(later).await.expect("the policy in force stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_kept_in_s3_is_read_at_start_and_again_when_it_changes() {
    let sb = muster_sim::testkit::Sandbox::start().await;
    let fleet = sb.seed(fleets::MIXED).await;
    let s3 = aws_sdk_s3::Client::from_conf(muster_common::aws::s3_config(&sb.hub_config(EAST)));
    let (bucket, key) = (fleet.results_bucket.clone(), "config/policy.toml".to_owned());
    let put = |text: String| {
        let (s3, bucket, key) = (s3.clone(), bucket.clone(), key.clone());
        async move {
            s3.put_object()
                .bucket(bucket)
                .key(key)
                .body(text.into_bytes().into())
                .send()
                .await
                .expect("the policy is put");
        }
    };
    let (ops, later) = (
        muster_controller::auth::new_token(),
        muster_controller::auth::new_token(),
    );
    let grants = "[[grants]]\nprincipals = [\"ops\", \"later\"]\nrole = \"operator\"\n";
    let uri = std::path::PathBuf::from(format!("s3://{bucket}/{key}"));
    let auth = muster_controller::auth::Auth::new(&[], &[], Some(&uri)).expect("an S3 policy source");
    assert_eq!(
        auth.policy_source().map(ToString::to_string),
        Some(uri.display().to_string())
    );
    let who = |token: &str| {
        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        auth.identify(&request, None).map(|p| (p.name, p.grants.len()))
    };

    // Not there yet: the controller would not start, and says where it looked.
    let missing = auth
        .refresh(&s3, true)
        .await
        .expect("read")
        .expect_err("no object")
        .to_string();
    assert!(
        missing.starts_with(&format!("policy: cannot read s3://{bucket}/{key}: ")),
        "{missing}"
    );
    put(format!("{}{grants}", token_entry("ops", &ops, None))).await;
    auth.refresh(&s3, true).await.expect("read").expect("applied");
    assert_eq!(who(&ops), Ok(("ops".to_owned(), 1)));
    assert_eq!(auth.refresh(&s3, false).await, None, "unchanged: nothing to apply");

    // A new version replaces the old without a restart.
    put(format!("{}{grants}", token_entry("later", &later, None))).await;
    auth.refresh(&s3, false).await.expect("changed").expect("applied");
    assert_eq!(who(&ops), Err("unknown bearer token".to_owned()));
    assert_eq!(who(&later), Ok(("later".to_owned(), 1)));

    // A broken version is refused by name, and the one in force stays.
    put("[[tokens]]\nname = \"broken\"\n".to_owned()).await;
    let broken = auth
        .refresh(&s3, false)
        .await
        .expect("changed")
        .expect_err("broken")
        .to_string();
    assert!(
        broken.starts_with(&format!("policy: s3://{bucket}/{key}: ")),
        "{broken}"
    );
    assert_eq!(who(&later), Ok(("later".to_owned(), 1)));
    assert!(
        muster_controller::auth::Auth::new(&[], &[], Some(std::path::Path::new("s3://only-a-bucket")))
            .unwrap_err()
            .to_string()
            .starts_with("policy: 's3://only-a-bucket' is not s3://BUCKET/KEY")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_principal_gets_full_pages_of_the_campaigns_it_may_see() {
    let stack = Stack::start(
        fleets::MIXED,
        Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    let dev_ou = stack.fleet.ous["Dev"].clone();
    let dev_viewer = muster_controller::auth::new_token();
    let policy = format!(
        "{}[[grants]]\nprincipals = [\"dev-viewer\"]\nrole = \"viewer\"\nous = [\"{dev_ou}\"]\n",
        token_entry("dev-viewer", &dev_viewer, None)
    );
    set_policy(&stack, &policy, &dev_viewer).await;
    let (prod, dev) = (stack.account("prod-a"), stack.account("dev-a"));
    let mut admin = stack.client.clone();
    // Newest first: three in Dev, each followed by four in Prod, so every
    // page of two read from the store alone would be mostly Prod.
    let mut dev_ids = Vec::new();
    for _ in 0..3 {
        dev_ids.push(
            submit(
                &mut admin,
                script_spec(std::slice::from_ref(&dev), &[EAST], &["true"], &[]),
            )
            .await,
        );
        for _ in 0..4 {
            submit(
                &mut admin,
                script_spec(std::slice::from_ref(&prod), &[EAST], &["true"], &[]),
            )
            .await;
        }
    }
    let mut viewer = with_token(&stack, Some(&dev_viewer));
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = viewer
            .list_campaigns(ListCampaignsRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("the viewer lists")
            .into_inner();
        pages.push(page.campaigns.iter().map(|c| c.id.clone()).collect::<Vec<_>>());
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        pages.first().map(Vec::len),
        Some(2),
        "the first page is full: {pages:?}"
    );
    let (mut seen, mut want) = (pages.concat(), dev_ids.clone());
    seen.sort();
    want.sort();
    assert_eq!(seen, want, "exactly the Dev campaigns, each once");
    assert!(pages.len() <= 3, "no empty pages in between: {pages:?}");
}
