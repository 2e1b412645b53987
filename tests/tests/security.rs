//! Issue 6: who may call what, guardrails, and hostile queue messages,
//! against the real controller (TLS on) and workers over the sandbox.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use muster_controller::guardrails::Guardrails;
use muster_proto::v1::worker_service_client::WorkerServiceClient;
use muster_proto::v1::{
    CampaignState, CancelCampaignRequest, GetCampaignRequest, LeaseOutcome, LeaseTaskRequest, ListAuditEventsRequest,
    ListCampaignsRequest, ListTargetsRequest, PlanCampaignRequest, RerunCampaignRequest, SubmitCampaignRequest,
    TaskRef, WatchCampaignRequest,
};
use muster_tests::client::{get, raw_call, raw_stream, script_spec, submit, wait_done};
use muster_tests::creds::TokenClient;
use muster_tests::fleets;
use muster_tests::stack::{Options, Stack};
use tonic::Code;

const EAST: &str = "us-east-1";

/// A CampaignService client that presents `token` (TLS, no client
/// certificate).
fn with_token(stack: &Stack, token: Option<&str>) -> TokenClient {
    stack.creds.token_client(stack.controller.campaign_addr.port(), token)
}

/// Visible and in-flight messages on the task queue.
async fn queue_depth(stack: &Stack) -> (u64, u64) {
    let sqs = aws_sdk_sqs::Client::new(&stack.sb.hub_config(EAST));
    muster_tests::checks::queue_depth(&sqs, &stack.fleet.queue_url).await
}

/// Puts `task` straight on the queue, as anyone with sqs:SendMessage could,
/// and waits until a worker was refused its lease (and deleted it).
async fn inject_and_wait_consumed(stack: &Stack, task: &TaskRef) {
    // The workers count each message they handle by the lease answer; a
    // refused one is never run, so its count is the positive signal.
    let handled = |outcomes: &[&'static str]| -> u64 {
        stack
            .workers
            .iter()
            .flat_map(|w| outcomes.iter().map(|o| w.ctx.stats.handled(o)))
            .sum()
    };
    const REFUSED: [&str; 5] = [
        "unknown_task",
        "finished",
        "leased_elsewhere",
        "stale_attempt",
        "campaign_inactive",
    ];
    let (refused, granted) = (handled(&REFUSED), handled(&["granted"]));
    aws_sdk_sqs::Client::new(&stack.sb.hub_config(EAST))
        .send_message()
        .queue_url(&stack.fleet.queue_url)
        .message_body(muster_proto::encode_task_ref(task))
        .send()
        .await
        .expect("SendMessage");
    let deadline = Instant::now() + Duration::from_secs(30);
    while handled(&REFUSED) == refused {
        assert!(Instant::now() < deadline, "no worker handled the injected message");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(handled(&["granted"]), granted, "the injected message was leased");
    let (visible, in_flight) = queue_depth(stack).await;
    assert_eq!(
        visible, 0,
        "and deleted ({in_flight} in flight while the delete is batched)"
    );
}

/// One account with two instances, and no worker: tasks stay on the queue.
async fn two_instances_no_workers() -> Stack {
    let options = Options {
        workers: 0,
        ..Default::default()
    };
    Stack::start(&fleets::uniform(2, 0, 0.1), options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_a_client_certificate_cannot_lease() {
    let stack = two_instances_no_workers().await;
    let mut client = stack.client.clone();
    submit(
        &mut client,
        script_spec(&[stack.account("only")], &[EAST], &["true"], &[]),
    )
    .await;
    // The discovery task's reference, as a worker would receive it.
    let sqs = aws_sdk_sqs::Client::new(&stack.sb.hub_config(EAST));
    let task = loop {
        let got = sqs
            .receive_message()
            .queue_url(&stack.fleet.queue_url)
            .wait_time_seconds(5)
            .send()
            .await
            .expect("ReceiveMessage");
        if let Some(message) = got.messages.unwrap_or_default().into_iter().next() {
            break muster_proto::decode_task_ref(message.body().expect("a body")).expect("a TaskRef");
        }
    };
    let port = stack.controller.worker_addr.port();
    let request = || LeaseTaskRequest {
        protocol: muster_proto::WORKER_PROTOCOL,
        task: Some(task.clone()),
        worker_id: "intruder".into(),
        capacity: 0,
        ..Default::default()
    };

    // No client certificate: the TLS handshake is refused.
    let mut anonymous = WorkerServiceClient::new(stack.creds.endpoint(port, None).connect_lazy());
    // (With TLS 1.3 the client learns of it as the connection closes.)
    let refused = |status: &tonic::Status| matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled);
    let status = anonymous
        .lease_task(request())
        .await
        .expect_err("no client certificate");
    assert!(refused(&status), "expected a refused connection, got {status:?}");
    // A certificate from another CA: refused too.
    let foreign = muster_sim::certs::DevPki::generate_named("someone else's CA").expect("a CA");
    let intruder = foreign.worker("intruder").expect("a certificate");
    let mut stranger = WorkerServiceClient::new(stack.creds.endpoint(port, Some(&intruder)).connect_lazy());
    let status = stranger.lease_task(request()).await.expect_err("a foreign certificate");
    assert!(refused(&status), "expected a refused connection, got {status:?}");
    // The operator's certificate is from the API clients' CA, which the
    // worker port does not trust: refused at the handshake.
    let mut admin = WorkerServiceClient::new(stack.creds.endpoint(port, Some(&stack.creds.pki.admin)).connect_lazy());
    let status = admin.lease_task(request()).await.expect_err("the admin certificate");
    assert!(refused(&status), "expected a refused connection, got {status:?}");
    // A real worker's certificate leases only under its own name.
    let mut worker_2 = WorkerServiceClient::new(stack.creds.worker_endpoint(port, "worker-2").connect_lazy());
    let status = worker_2
        .lease_task(LeaseTaskRequest {
            worker_id: "worker-1".into(),
            ..request()
        })
        .await
        .expect_err("another worker's name");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "worker_id: 'worker-1' is not the caller's identity 'worker-2' (from its certificate); a worker leases under \
         its own name"
    );
    // Plaintext to the TLS port: refused.
    let mut plain = WorkerServiceClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("a URL")
            .connect_lazy(),
    );
    assert!(plain.lease_task(request()).await.is_err(), "plaintext got through");

    // Nobody took the task: the real worker certificate leases it.
    let mut worker = WorkerServiceClient::new(stack.creds.worker_endpoint(port, "worker-1").connect_lazy());
    let lease = worker
        .lease_task(LeaseTaskRequest {
            protocol: muster_proto::WORKER_PROTOCOL,
            task: Some(task.clone()),
            worker_id: "worker-1".into(),
            capacity: 0,
            ..Default::default()
        })
        .await
        .expect("the worker certificate is accepted")
        .into_inner();
    assert_eq!(lease.outcome(), LeaseOutcome::Granted, "{lease:?}");
    assert!(stack.sb.audit().is_empty(), "nothing ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_cannot_submit_and_a_wrong_token_is_unauthenticated() {
    let stack = two_instances_no_workers().await;
    let spec = script_spec(&[stack.account("only")], &[EAST], &["true"], &[]);

    // No identity, or a token nobody issued: UNAUTHENTICATED, for reads too.
    for token in [None, Some("mst_not-a-token-anyone-issued")] {
        let mut client = with_token(&stack, token);
        let status = client
            .list_campaigns(ListCampaignsRequest::default())
            .await
            .expect_err("unknown caller");
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}: {status:?}");
        let status = client
            .submit_campaign(SubmitCampaignRequest {
                spec: Some(spec.clone()),
            })
            .await
            .expect_err("unknown caller");
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}: {status:?}");
    }

    // A read token reads, and may not submit, plan or cancel.
    let mut reader = with_token(&stack, Some(&stack.creds.read_token));
    reader
        .list_campaigns(ListCampaignsRequest::default())
        .await
        .expect("read may list");
    let status = reader
        .submit_campaign(SubmitCampaignRequest {
            spec: Some(spec.clone()),
        })
        .await
        .expect_err("read may not submit");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "role: dashboard has role viewer; SubmitCampaign needs operator or admin"
    );
    let status = reader
        .plan_campaign(PlanCampaignRequest {
            spec: Some(spec.clone()),
            ..Default::default()
        })
        .await
        .expect_err("read may not plan");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // The submit token submits; the store says who, and the spec's hash.
    let mut submitter = with_token(&stack, Some(&stack.creds.submit_token));
    let id = submitter
        .submit_campaign(SubmitCampaignRequest { spec: Some(spec) })
        .await
        .expect("submit may submit")
        .into_inner()
        .campaign_id;
    let campaign = reader
        .get_campaign(GetCampaignRequest {
            campaign_id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("read may get")
        .into_inner()
        .campaign
        .expect("a campaign");
    assert_eq!(campaign.submitted_by, "ci");
    assert_eq!(campaign.spec_sha256.len(), 64, "{}", campaign.spec_sha256);
    let status = reader
        .cancel_campaign(CancelCampaignRequest {
            campaign_id: id.clone(),
            reason: "not mine to cancel".into(),
        })
        .await
        .expect_err("read may not cancel");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let state = get(&mut stack.client.clone(), &id).await.state();
    assert!(
        !matches!(state, CampaignState::Cancelling | CampaignState::Cancelled),
        "a refused cancel changed nothing: {state:?}"
    );

    // The operator certificate is a caller too, known by its common name.
    let mut admin = stack.client.clone();
    let campaign = admin
        .cancel_campaign(CancelCampaignRequest {
            campaign_id: id.clone(),
            reason: "test".into(),
        })
        .await
        .expect("the admin certificate may cancel")
        .into_inner()
        .campaign
        .expect("a campaign");
    assert!(
        matches!(campaign.state(), CampaignState::Cancelling | CampaignState::Cancelled),
        "{campaign:?}"
    );
}

fn allow_prod_a(fleet: &muster_sim::seed::fleet_file::FleetState) -> Guardrails {
    Guardrails {
        allowed_accounts: vec![fleet.account("prod-a").expect("prod-a").id.clone()],
        allowed_roles: vec!["muster-*".into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_outside_the_guardrails_is_refused_before_anything_is_enqueued() {
    let stack = Stack::start(
        fleets::MIXED,
        Options {
            workers: 0,
            guardrails: allow_prod_a,
            ..Default::default()
        },
    )
    .await;
    let mut client = stack.client.clone();
    let outside = stack.account("prod-b");
    let spec = script_spec(&[stack.account("prod-a"), outside.clone()], &[EAST], &["true"], &[]);
    for dry_run in [false, true] {
        let status = if dry_run {
            client
                .plan_campaign(PlanCampaignRequest {
                    spec: Some(spec.clone()),
                    ..Default::default()
                })
                .await
                .expect_err("refused")
        } else {
            client
                .submit_campaign(SubmitCampaignRequest {
                    spec: Some(spec.clone()),
                })
                .await
                .expect_err("refused")
        };
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains(&outside), "the account is named: {status:?}");
    }
    // A role outside the allowed patterns.
    let mut wrong_role = script_spec(&[stack.account("prod-a")], &[EAST], &["true"], &[]);
    wrong_role.access.as_mut().expect("access").role_name = "OrganizationAccountAccessRole".into();
    let status = client
        .submit_campaign(SubmitCampaignRequest { spec: Some(wrong_role) })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("OrganizationAccountAccessRole"), "{status:?}");

    // Nothing was stored and nothing was enqueued.
    let listed = client
        .list_campaigns(ListCampaignsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(listed.campaigns.is_empty(), "{:?}", listed.campaigns);
    // The dispatcher enqueues only what the store holds: nothing, ever.
    assert_eq!(queue_depth(&stack).await, (0, 0), "the queue is empty");

    // Inside the guardrails, the same controller takes it.
    let id = submit(
        &mut client,
        script_spec(&[stack.account("prod-a")], &[EAST], &["true"], &[]),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue_depth(&stack).await.0 == 0 {
        assert!(Instant::now() < deadline, "the allowed campaign was not enqueued");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(get(&mut client, &id).await.submitted_by, muster_sim::certs::ADMIN_CN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_campaign_runs_only_when_confirmed() {
    let stack = Stack::start(
        &fleets::uniform(3, 0, 0.1),
        Options {
            guardrails: |_| Guardrails {
                confirm_above_targets: Some(2),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let mut client = stack.client.clone();
    let spec = script_spec(&[stack.account("only")], &[EAST], &["true"], &[]);
    let id = submit(&mut client, spec.clone()).await;
    let campaign = wait_done(&mut client, &id, Duration::from_secs(60)).await;
    assert_eq!(campaign.state(), CampaignState::Failed, "{campaign:?}");
    assert!(
        campaign.state_reason.contains("confirm_large"),
        "{}",
        campaign.state_reason
    );
    assert!(stack.sb.audit().is_empty(), "nothing ran");

    let mut confirmed = spec;
    confirmed.confirm_large = true;
    let id = submit(&mut client, confirmed).await;
    let campaign = wait_done(&mut client, &id, Duration::from_secs(60)).await;
    assert_eq!(campaign.state(), CampaignState::Succeeded, "{campaign:?}");
    assert_eq!(stack.sends_per_instance().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_refs_written_straight_to_sqs_run_nothing() {
    let stack = Stack::start(&fleets::uniform(3, 0, 0.1), Options::default()).await;

    // A made-up task id: the controller knows no such task; nothing runs.
    inject_and_wait_consumed(
        &stack,
        &TaskRef {
            campaign_id: uuid::Uuid::new_v4().to_string(),
            task_id: uuid::Uuid::new_v4().to_string(),
            attempt: 1,
        },
    )
    .await;
    assert!(
        stack.sb.audit().is_empty(),
        "a made-up task ran: {:?}",
        stack.sb.audit()
    );

    // A finished campaign's real tasks, replayed: nothing runs again.
    let mut client = stack.client.clone();
    let id = submit(
        &mut client,
        script_spec(&[stack.account("only")], &[EAST], &["true"], &[]),
    )
    .await;
    let campaign = wait_done(&mut client, &id, Duration::from_secs(60)).await;
    assert_eq!(campaign.state(), CampaignState::Succeeded);
    let sends = stack.sb.audit().len();
    assert!(sends > 0);
    let campaign_id = id.clone();
    let tasks: Vec<(String, u32)> = stack
        .store()
        .read(move |conn| {
            let mut statement = conn.prepare("SELECT id, attempt FROM tasks WHERE campaign_id = ?1")?;
            let rows = statement
                .query_map([&campaign_id], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
        .expect("the store reads");
    assert!(tasks.len() >= 2, "a discovery and an execute task: {tasks:?}");
    for (task_id, attempts) in tasks {
        for attempt in [attempts, attempts + 1] {
            inject_and_wait_consumed(
                &stack,
                &TaskRef {
                    campaign_id: id.clone(),
                    task_id: task_id.clone(),
                    attempt,
                },
            )
            .await;
        }
    }
    assert_eq!(stack.sb.audit().len(), sends, "a replayed task sent commands again");
    let after = get(&mut client, &id).await;
    assert_eq!(after.state(), CampaignState::Succeeded);
    assert_eq!(after.counters, campaign.counters, "the counters did not move");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_external_id_stays_with_the_controller() {
    let stack = Stack::start(&fleets::uniform(2, 0, 0.1), Options::default()).await;
    let secret = stack.fleet.external_id.clone();
    let spec = script_spec(&[stack.account("only")], &[EAST], &["echo ok"], &[]);

    // A spec that carries an ExternalId is refused, and nothing is stored.
    let mut carrying = spec.clone();
    carrying.access.as_mut().expect("access").external_id = secret.clone();
    let mut submitter = with_token(&stack, Some(&stack.creds.submit_token));
    let status = submitter
        .submit_campaign(SubmitCampaignRequest { spec: Some(carrying) })
        .await
        .expect_err("an ExternalId from a submitter");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("access.external_id: the controller keeps the target accounts' ExternalIds"),
        "{status:?}"
    );
    assert!(!status.message().contains(&secret), "{status:?}");
    let listed = submitter
        .list_campaigns(ListCampaignsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(listed.campaigns.is_empty(), "nothing was stored: {listed:?}");

    // Without one, the worker gets it with its lease (the sandbox's trust
    // policy demands it) and every instance runs.
    let mut client = stack.client.clone();
    let id = submit(&mut client, spec).await;
    let campaign = wait_done(&mut client, &id, Duration::from_secs(60)).await;
    assert_eq!(campaign.state, CampaignState::Succeeded as i32, "{campaign:?}");
    assert_eq!(campaign.counters.expect("counters").success, 2);
    let campaign = muster_tests::client::wait_for(&mut client, &id, Duration::from_secs(30), "the export", |c| {
        c.export.as_ref().is_some_and(|e| !e.url.is_empty())
    })
    .await;

    // No viewer's answer carries it, byte for byte; each does carry the
    // campaign, so the search is over the real thing.
    let channel = stack
        .creds
        .endpoint(stack.controller.campaign_addr.port(), None)
        .connect_lazy();
    let viewer = stack.creds.read_token.as_str();
    let answers = [
        (
            "GetCampaign",
            raw_call(
                channel.clone(),
                viewer,
                "GetCampaign",
                GetCampaignRequest {
                    campaign_id: id.clone(),
                    ..Default::default()
                },
            )
            .await,
        ),
        (
            "ListCampaigns",
            raw_call(
                channel.clone(),
                viewer,
                "ListCampaigns",
                ListCampaignsRequest::default(),
            )
            .await,
        ),
        (
            "ListTargets",
            raw_call(
                channel.clone(),
                viewer,
                "ListTargets",
                ListTargetsRequest {
                    campaign_id: id.clone(),
                    page_size: 100,
                    ..Default::default()
                },
            )
            .await,
        ),
        (
            "ListTargets with output, as the operator",
            raw_call(
                channel.clone(),
                &stack.creds.submit_token,
                "ListTargets",
                ListTargetsRequest {
                    campaign_id: id.clone(),
                    include_output: true,
                    page_size: 100,
                    ..Default::default()
                },
            )
            .await,
        ),
        (
            "WatchCampaign",
            raw_stream(
                channel.clone(),
                viewer,
                "WatchCampaign",
                WatchCampaignRequest {
                    campaign_id: id.clone(),
                    ..Default::default()
                },
                1,
            )
            .await,
        ),
    ];
    let contains = |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    for (method, answer) in answers {
        let bytes = answer.unwrap_or_else(|status| panic!("{method}: {status:?}"));
        assert!(contains(&bytes, id.as_bytes()), "{method} answers about the campaign");
        assert!(!contains(&bytes, secret.as_bytes()), "{method} carries the ExternalId");
    }

    // Nor does the export.
    let url = campaign.export.expect("an export").url;
    let text = muster_tests::client::export_text(&stack.sb.hub_config(EAST), &url).await;
    assert!(
        text.contains(&id) && !text.contains(&secret),
        "the export carries the ExternalId"
    );

    // The campaign's audit trail goes with it, under its own prefix.
    let audit_url = url
        .replace("/campaigns/", "/audit/")
        .replace("targets.jsonl.gz", "audit.jsonl.gz");
    let trail = muster_tests::client::export_text(&stack.sb.hub_config(EAST), &audit_url).await;
    let submitted: serde_json::Value =
        serde_json::from_str(trail.lines().next().expect("an audit line")).expect("JSON");
    assert_eq!(
        (submitted["action"].as_str(), submitted["campaign_id"].as_str()),
        (Some("submitted"), Some(id.as_str()))
    );
    assert!(!trail.contains(&secret), "the audit trail carries the ExternalId");

    // CloudTrail (the sim's record of AssumeRole) names who asked on every
    // session of the campaign, and tags it with the campaign.
    let session = muster_common::domain::session_name(&id);
    let sessions: Vec<_> = stack
        .sb
        .assumed_roles()
        .into_iter()
        .filter(|a| a.session_name == session)
        .collect();
    assert!(!sessions.is_empty(), "the campaign assumed its roles");
    for assumed in sessions {
        assert_eq!(
            assumed.source_identity.as_deref(),
            Some(campaign.submitted_by.as_str()),
            "{assumed:?}"
        );
        assert_eq!(
            assumed.tags,
            [("muster:campaign".to_owned(), id.clone())],
            "{assumed:?}"
        );
    }
}

/// Writes the controller's policy file and waits until `token` is let in
/// (the controller reads the file again when it changes).
/// Replaces the policy file at once, as an editor or a deploy does: the
/// controller polls it and must never read it half written (a truncated
/// file is a valid, empty policy).
fn write_policy(stack: &Stack, body: &str) {
    let path = stack.creds.policy_path();
    let next = path.with_extension("toml.next");
    std::fs::write(&next, body).expect("the policy is written");
    std::fs::rename(&next, &path).expect("the policy is replaced");
}

async fn set_policy(stack: &Stack, body: &str, token: &str) {
    write_policy(stack, body);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = with_token(stack, Some(token))
            .list_campaigns(ListCampaignsRequest::default())
            .await;
        match answer {
            Ok(_) => return,
            Err(status) if Instant::now() < deadline => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("the policy was not applied: {status:?}"),
        }
    }
}

/// A `[[tokens]]` entry of a policy file for `token`.
fn token_entry(name: &str, token: &str, expires: Option<&str>) -> String {
    let expires = expires.map(|e| format!("expires = \"{e}\"\n")).unwrap_or_default();
    format!(
        "[[tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\n{expires}\n",
        muster_controller::auth::hash_token(token)
    )
}

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
