//! Issue 6: who may call what, guardrails, and hostile queue messages,
//! against the real controller (TLS on) and workers over the sandbox.
//! Policies and their scopes are in `policy`, sign-in with an AWS identity
//! in `signin`.

use std::time::{Duration, Instant};

use muster_controller::guardrails::Guardrails;
use muster_proto::v1::worker_service_client::WorkerServiceClient;
use muster_proto::v1::{
    CampaignState, CancelCampaignRequest, GetCampaignRequest, LeaseOutcome, LeaseTaskRequest, ListCampaignsRequest,
    ListTargetsRequest, PlanCampaignRequest, SubmitCampaignRequest, TaskRef, WatchCampaignRequest,
};
use muster_tests::client::{get, raw_call, raw_stream, script_spec, submit, wait_done};
use muster_tests::creds::TokenClient;
use muster_tests::fleets;
use muster_tests::stack::{Options, Stack};
use tonic::Code;

mod policy;
mod signin;

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
