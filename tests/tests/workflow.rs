//! The patching workflow as whole systems: `muster-controller` and
//! `muster-worker` as real processes against moto + muster-sim.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use muster_proto::v1::{
    ApproveCampaignRequest, CampaignState, ListTargetsRequest, PromoteCampaignRequest, RerunCampaignRequest,
    ResumeCampaignRequest, Stage, StageGate, StagePhase, Target, TargetStatus,
};
use muster_tests::checks::assert_ran_once;
use muster_tests::client::{assert_counters_add_up, script_spec, submit, targets, wait_done};
use muster_tests::fleets;
use muster_tests::procs::{System, SystemOptions, output_of};

const EAST: &str = "us-east-1";
const WEST: &str = "eu-west-1";
/// An account the Organization does not have: its scopes cannot be
/// discovered (no role to assume) and end with one ERROR target each.
const STRANGER: &str = "999999999999";

type Key = (String, String, String);

fn key(t: &Target) -> Key {
    (t.account_id.clone(), t.region.clone(), t.instance_id.clone())
}

/// Every target of `id` as its latest rerun left it.
async fn latest(system: &mut System, id: &str) -> Vec<Target> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = system
            .client
            .list_targets(ListTargetsRequest {
                campaign_id: id.into(),
                page_size: 7,
                page_token: token.clone(),
                follow_reruns: true,
                ..Default::default()
            })
            .await
            .expect("ListTargets following reruns")
            .into_inner();
        all.extend(page.targets);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_covers_exactly_the_failed_targets_and_reads_together_with_the_first() {
    let mut system = System::start(fleets::MIXED, SystemOptions::default()).await;
    let mut accounts: Vec<String> = ["prod-a", "prod-b", "dev-a"]
        .iter()
        .map(|a| system.account(a))
        .collect();
    accounts.push(STRANGER.into());
    let spec = script_spec(&accounts, &[EAST, WEST], &["echo patched"], &["Write-Output patched"]);
    let first = submit(&mut system.client, spec.clone()).await;

    // A campaign still running cannot be rerun: its failures are not known.
    let early = system
        .client
        .rerun_campaign(RerunCampaignRequest {
            campaign_id: first.clone(),
            ..Default::default()
        })
        .await
        .expect_err("a running campaign is not rerun");
    assert_eq!(early.code(), tonic::Code::FailedPrecondition, "{early:?}");
    assert!(early.message().contains("once it has ended"), "{}", early.message());

    let campaign = wait_done(&mut system.client, &first, Duration::from_secs(120)).await;
    let first_targets = assert_ran_once(&mut system, &first, &campaign).await;
    // A shell command leaves no patch state to choose by.
    let mut follow_up = spec.clone();
    follow_up.targets = Some(muster_proto::v1::TargetSelector {
        from_campaign: Some(muster_proto::v1::CampaignTargets {
            campaign_id: first.clone(),
            non_compliant: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let refused = system
        .client
        .submit_campaign(muster_proto::v1::SubmitCampaignRequest { spec: Some(follow_up) })
        .await
        .expect_err("no patch state to choose by");
    assert_eq!(
        (refused.code(), refused.message()),
        (
            tonic::Code::FailedPrecondition,
            format!(
                "targets.from_campaign.non_compliant: {first} ran no patch document (AWS-RunPatchBaseline, \
                 AWS-RunPatchBaselineWithHooks, AWS-RunPatchBaselineAssociation), so no target of it has a patch state"
            )
            .as_str()
        )
    );
    let mut command = system.cli_with_token(&system.creds.submit_token);
    command.args(["results", &first, "--critical"]);
    let (code, stdout, stderr) = output_of(command).await;
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stderr.contains(&format!("--critical: {first} ran no patch document")),
        "the flag, and why: {stderr}"
    );
    let c = campaign.counters.unwrap();
    assert_eq!(
        (c.failed, c.error),
        (2, 2),
        "the fail instances and the stranger's scopes"
    );
    let failures: BTreeSet<Key> = first_targets
        .iter()
        .filter(|t| [TargetStatus::Failed as i32, TargetStatus::Error as i32].contains(&t.status))
        .map(key)
        .collect();
    let sends_before = system.sends_per_instance();

    let refused = system
        .client
        .rerun_campaign(RerunCampaignRequest {
            campaign_id: first.clone(),
            statuses: vec![TargetStatus::Running as i32],
            ..Default::default()
        })
        .await
        .expect_err("RUNNING ends nothing");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().starts_with("statuses[0]:"), "{}", refused.message());

    let request = RerunCampaignRequest {
        campaign_id: first.clone(),
        client_token: "rerun-1".into(),
        ..Default::default()
    };
    let answer = system
        .client
        .rerun_campaign(request.clone())
        .await
        .expect("RerunCampaign")
        .into_inner();
    assert!(answer.created);
    assert_eq!(answer.rerun_targets, 4);
    let rerun = answer.campaign_id;
    let again = system
        .client
        .rerun_campaign(request)
        .await
        .expect("the same token again")
        .into_inner();
    assert_eq!((again.campaign_id.as_str(), again.created), (rerun.as_str(), false));

    let rerun_campaign = wait_done(&mut system.client, &rerun, Duration::from_secs(120)).await;
    assert_eq!(rerun_campaign.rerun_of, first);
    assert_eq!(
        rerun_campaign.state,
        CampaignState::CompletedWithErrors as i32,
        "{}",
        rerun_campaign.state_reason
    );
    let rerun_targets = targets(&mut system.client, &rerun, false).await;
    assert_counters_add_up(&rerun_campaign, &rerun_targets);
    let covered: BTreeSet<Key> = rerun_targets.iter().map(key).collect();
    assert_eq!(
        covered, failures,
        "exactly the failed targets, and the undiscovered scopes whole"
    );

    // The rerun sent the failed instances their second command, and nothing
    // to anyone else.
    let sends_after = system.sends_per_instance();
    let resent: BTreeMap<&String, usize> = sends_after
        .iter()
        .filter(|(i, n)| sends_before.get(*i) != Some(n))
        .map(|(i, n)| (i, *n))
        .collect();
    let failed_instances: BTreeMap<&String, usize> = failures
        .iter()
        .filter(|(_, _, i)| !i.is_empty())
        .map(|(_, _, i)| (i, 2))
        .collect();
    assert_eq!(resent, failed_instances);

    // Together: every target of the first campaign once, the failed ones as
    // the rerun left them.
    let shown = system
        .client
        .get_campaign(muster_proto::v1::GetCampaignRequest {
            campaign_id: first.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .campaign
        .unwrap();
    assert_eq!(shown.reruns, std::slice::from_ref(&rerun));
    let together = latest(&mut system, &first).await;
    assert_eq!(
        together.iter().map(key).collect::<Vec<_>>(),
        first_targets.iter().map(key).collect::<Vec<_>>(),
        "the same targets, in the same order, across pages"
    );
    for target in &together {
        let expected = if failures.contains(&key(target)) {
            &rerun
        } else {
            &first
        };
        assert_eq!(&target.campaign_id, expected, "{target:?}");
    }

    // Once the rerun has ended, another may go.
    let second = system
        .client
        .rerun_campaign(RerunCampaignRequest {
            campaign_id: first.clone(),
            statuses: vec![TargetStatus::Error as i32],
            ..Default::default()
        })
        .await
        .expect("a second rerun")
        .into_inner();
    assert_eq!(second.rerun_targets, 2);
    let second = wait_done(&mut system.client, &second.campaign_id, Duration::from_secs(120)).await;
    let ended: BTreeSet<Key> = targets(&mut system.client, &second.id, false)
        .await
        .iter()
        .map(key)
        .collect();
    assert_eq!(ended.len(), 2);
    assert!(ended.iter().all(|(account, _, _)| account == STRANGER));
}

/// Instances sent a command so far, from the sim's audit log.
fn sent(system: &System) -> BTreeSet<String> {
    system.sends_per_instance().into_keys().collect()
}

/// The targets of `id` in stage `stage`.
fn in_stage<'a>(all: &'a [Target], stage: &str) -> BTreeSet<&'a str> {
    all.iter()
        .filter(|t| t.stage == stage)
        .map(|t| t.instance_id.as_str())
        .collect()
}

async fn wait_state(system: &mut System, id: &str, state: CampaignState) -> muster_proto::v1::Campaign {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let campaign = muster_tests::client::get(&mut system.client, id).await;
        if campaign.state == state as i32 {
            return campaign;
        }
        let now = CampaignState::try_from(campaign.state).unwrap_or(CampaignState::Unspecified);
        assert!(
            !now.is_terminal() && std::time::Instant::now() < deadline,
            "waiting for {} but {id} is {} ({})",
            state.short_name(),
            now.short_name(),
            campaign.state_reason
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_canary_pauses_until_resumed_and_a_manual_gate_waits_for_promotion() {
    let mut system = System::start(fleets::MIXED, SystemOptions::default()).await;
    let accounts: Vec<String> = ["prod-a", "prod-b", "dev-a"]
        .iter()
        .map(|a| system.account(a))
        .collect();
    let mut spec = script_spec(&accounts, &[EAST, WEST], &["echo patched"], &["Write-Output patched"]);
    let prod_a = system.account("prod-a");
    // prod-a's us-east-1 has a script that exits 2: the canary fails.
    spec.stages = vec![
        Stage {
            name: "canary".into(),
            account_ids: vec![prod_a.clone()],
            regions: vec![EAST.into()],
            max_errors: "0".into(),
            ..Default::default()
        },
        Stage {
            name: "tenth".into(),
            share: "10%".into(),
            gate: StageGate::Manual as i32,
            ..Default::default()
        },
        Stage {
            name: "rest".into(),
            ..Default::default()
        },
    ];
    let id = submit(&mut system.client, spec).await;
    // A pipeline's watch stops where the campaign waits on a person, exit 5,
    // and prints the campaign as it waits; a plain watch would wait with it.
    let watch_until_decision = |system: &System| {
        let mut command = system.cli_with_token(&system.creds.submit_token);
        command.args(["watch", &id, "--until-decision"]);
        tokio::spawn(output_of(command))
    };
    let watching = watch_until_decision(&system);
    let paused = wait_state(&mut system, &id, CampaignState::Paused).await;
    let (code, stdout, stderr) = tokio::time::timeout(Duration::from_secs(60), watching)
        .await
        .expect("the watch stops at the pause")
        .expect("the watch ran");
    assert_eq!(code, 5, "{stdout}\n{stderr}");
    assert!(stdout.contains("state     paused"), "{stdout}");
    assert!(stderr.contains("waits on a decision (paused)"), "{stderr}");
    assert!(
        paused
            .state_reason
            .contains("stage 'canary': 1 error passed its max_errors (0)"),
        "{}",
        paused.state_reason
    );
    let all = targets(&mut system.client, &id, false).await;
    let canary = in_stage(&all, "canary");
    let eligible = all.iter().filter(|t| t.status != TargetStatus::Skipped as i32).count();
    assert_eq!(canary.len(), 7, "prod-a us-east-1: 4 web, 2 windows, 1 failing");
    assert_eq!(in_stage(&all, "tenth").len(), 3, "10% of the 23 left, rounded up");
    assert_eq!(canary.len() + 3 + in_stage(&all, "rest").len(), eligible);
    assert!(
        all.iter()
            .all(|t| t.account_id == prod_a && t.region == EAST || !canary.contains(t.instance_id.as_str()))
    );
    let phases: Vec<(String, i32)> = paused.stages.iter().map(|s| (s.name.clone(), s.phase)).collect();
    assert_eq!(
        phases,
        [
            ("canary".to_owned(), StagePhase::Paused as i32),
            ("tenth".to_owned(), StagePhase::Waiting as i32),
            ("rest".to_owned(), StagePhase::Waiting as i32),
        ]
    );
    // Paused means nothing more runs: a few reconcile passes later only the
    // canary was ever sent anything.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sent(&system), canary.iter().map(|i| (*i).to_owned()).collect());
    assert_eq!(
        muster_tests::client::get(&mut system.client, &id).await.state,
        CampaignState::Paused as i32
    );

    // The wrong stage, or a promote of a paused stage, changes nothing.
    let wrong = system
        .client
        .resume_campaign(ResumeCampaignRequest {
            campaign_id: id.clone(),
            stage: "rest".into(),
            reason: String::new(),
        })
        .await
        .expect_err("rest has not run");
    assert_eq!(wrong.code(), tonic::Code::FailedPrecondition, "{wrong:?}");
    let wrong = system
        .client
        .promote_campaign(PromoteCampaignRequest {
            campaign_id: id.clone(),
            stage: "canary".into(),
            reason: String::new(),
        })
        .await
        .expect_err("a paused stage is resumed, not promoted");
    assert_eq!(wrong.code(), tonic::Code::FailedPrecondition);

    let resume = ResumeCampaignRequest {
        campaign_id: id.clone(),
        stage: "canary".into(),
        reason: "the failing host is known".into(),
    };
    system.client.resume_campaign(resume.clone()).await.expect("resume");
    let awaiting = wait_state(&mut system, &id, CampaignState::AwaitingPromotion).await;
    // Already waiting when the watch starts: it stops at once.
    let (code, stdout, stderr) = watch_until_decision(&system).await.expect("the watch ran");
    assert_eq!(code, 5, "{stdout}\n{stderr}");
    assert!(stdout.contains("state     awaiting_promotion"), "{stdout}");
    assert!(
        awaiting.state_reason.contains("stage 'tenth' passed"),
        "{}",
        awaiting.state_reason
    );
    let tenth = in_stage(&all, "tenth");
    let mut expected: BTreeSet<String> = canary.iter().map(|i| (*i).to_owned()).collect();
    expected.extend(tenth.iter().map(|i| (*i).to_owned()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sent(&system), expected, "the canary and the tenth, nothing of the rest");
    // Asked again after the answer was lost: no change, no error.
    system.client.resume_campaign(resume).await.expect("resume again");

    let promote = PromoteCampaignRequest {
        campaign_id: id.clone(),
        stage: "tenth".into(),
        reason: "looks good".into(),
    };
    system.client.promote_campaign(promote.clone()).await.expect("promote");
    // Promoted, nothing more waits on a person: it follows to the end.
    let (code, _, stderr) = watch_until_decision(&system).await.expect("the watch ran");
    assert_eq!(code, 2, "completed with errors: {stderr}");
    let done = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    system.client.promote_campaign(promote).await.expect("promote again");
    assert_eq!(
        done.state,
        CampaignState::CompletedWithErrors as i32,
        "{}",
        done.state_reason
    );
    assert!(
        done.stages.iter().all(|s| s.phase == StagePhase::Passed as i32),
        "{:?}",
        done.stages
    );
    let ended = assert_ran_once(&mut system, &id, &done).await;
    assert_eq!(
        ended
            .iter()
            .filter(|t| t.status == TargetStatus::Success as i32)
            .count(),
        eligible - 2
    );

    let trail = system
        .client
        .list_audit_events(muster_proto::v1::ListAuditEventsRequest {
            campaign_id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .events;
    let actions: Vec<&str> = trail.iter().rev().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["submitted", "resumed", "promoted"],
        "once each, however often asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_bakes_before_the_next_and_a_cancel_while_baking_runs_nothing_more() {
    let mut system = System::start(&fleets::uniform(6, 0, 0.5), SystemOptions::default()).await;
    let account = system.account("only");
    let mut spec = script_spec(&[account], &[EAST], &["echo patched"], &[]);
    spec.stages = vec![
        Stage {
            name: "first".into(),
            share: "2".into(),
            bake_seconds: 3_600,
            ..Default::default()
        },
        Stage {
            name: "rest".into(),
            ..Default::default()
        },
    ];
    let id = submit(&mut system.client, spec).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let baking = loop {
        let campaign = muster_tests::client::get(&mut system.client, &id).await;
        if campaign
            .stages
            .first()
            .is_some_and(|s| s.phase == StagePhase::Baking as i32)
        {
            break campaign;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never baked: {}",
            campaign.state_reason
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(baking.state, CampaignState::Running as i32);
    assert!(
        baking.state_reason.contains("baking 3600s before its gate"),
        "{}",
        baking.state_reason
    );
    let until = baking.stages[0].bake_until.expect("bake_until");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(until.seconds > now + 3_000, "an hour's bake ends in about an hour");
    let all = targets(&mut system.client, &id, false).await;
    let first: BTreeSet<String> = in_stage(&all, "first").into_iter().map(str::to_owned).collect();
    assert_eq!(first.len(), 2);
    assert_eq!(sent(&system), first, "only the first stage ran");

    system
        .client
        .cancel_campaign(muster_proto::v1::CancelCampaignRequest {
            campaign_id: id.clone(),
            reason: "change window closed".into(),
        })
        .await
        .expect("cancel while baking");
    let done = wait_done(&mut system.client, &id, Duration::from_secs(60)).await;
    assert_eq!(done.state, CampaignState::Cancelled as i32);
    assert_eq!(done.stages[1].phase, StagePhase::NotRun as i32);
    assert_eq!(done.counters.unwrap().cancelled, 4, "the rest never ran");
    assert_eq!(sent(&system), first);
}

/// A `[[tokens]]` entry of a policy file for `token`, with `role` everywhere.
fn token_with_role(name: &str, token: &str, role: &str) -> String {
    format!(
        "[[tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\n\n[[grants]]\nprincipals = [\"{name}\"]\nrole = \"{role}\"\n\n",
        muster_controller::auth::hash_token(token)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_the_policy_names_waits_for_a_second_principal_to_approve_it() {
    let bob = muster_controller::auth::new_token();
    let (prod_a_name, prod_b_name) = ("prod-a", "prod-b");
    let fleet = fleets::MIXED;
    let mut system = System::start_with_policy(fleet, SystemOptions::default(), |system| {
        format!(
            "{}[[approvals]]\nname = \"prod-a\"\naccounts = [\"{}\"]\nexpires = \"24h\"\n\n\
             [[approvals]]\nname = \"brief\"\naccounts = [\"{}\"]\nexpires = \"1s\"\n",
            token_with_role("bob", &bob, "approver"),
            system.account(prod_a_name),
            system.account(prod_b_name)
        )
    })
    .await;
    let spec_for = |system: &System, account: &str| {
        script_spec(
            &[system.account(account)],
            &[EAST],
            &["echo patched"],
            &["Write-Output patched"],
        )
    };

    // Named by the rule: it is discovered, then waits, running nothing.
    let id = {
        let spec = spec_for(&system, prod_a_name);
        submit(&mut system.client, spec).await
    };
    let waiting = wait_state(&mut system, &id, CampaignState::PendingApproval).await;
    let approval = waiting.approval.clone().expect("the approval asked");
    assert_eq!((approval.rule.as_str(), approval.decided_by.as_str()), ("prod-a", ""));
    assert!(
        waiting.state_reason.contains("an approver other than muster-admin"),
        "{}",
        waiting.state_reason
    );
    assert!(
        waiting.counters.unwrap().pending > 0,
        "discovered, so the approver sees what it runs on"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(sent(&system).is_empty(), "nothing runs before the approval");
    // A pipeline's watch stops here (exit 5) with the rule that holds it.
    let (code, stdout, stderr) = {
        let mut command = system.cli_with_token(&bob);
        command.args(["watch", &id, "--until-decision"]);
        output_of(command).await
    };
    assert_eq!(code, 5, "{stdout}\n{stderr}");
    assert!(stdout.contains("state     pending_approval"), "{stdout}");
    assert!(stdout.contains("approval  rule 'prod-a'"), "{stdout}");

    // The submitter (an admin, who may approve) may not approve their own.
    let own = system
        .client
        .approve_campaign(ApproveCampaignRequest {
            campaign_id: id.clone(),
            reason: "mine".into(),
        })
        .await
        .expect_err("no self-approval");
    assert_eq!(own.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        own.message(),
        "approval: muster-admin submitted this campaign; another approver must approve it"
    );

    // Bob approves with the CLI, which prints the campaign's new state.
    let approve = |system: &System| {
        let mut command = system.cli_with_token(&bob);
        command.args(["approve", &id, "--reason", "change CHG-1234"]);
        output_of(command)
    };
    let (code, stdout, stderr) = approve(&system).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with(&format!("{id} ")), "{stdout}");
    let done = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    let (code, _, stderr) = approve(&system).await;
    assert_eq!(code, 0, "asked again: no change: {stderr}");
    assert_eq!(
        done.state,
        CampaignState::CompletedWithErrors as i32,
        "{}",
        done.state_reason
    );
    assert!(
        done.approval
            .as_ref()
            .is_some_and(|a| a.approved && a.decided_by == "bob")
    );
    assert_ran_once(&mut system, &id, &done).await;

    // Outside every rule: runs at once.
    let free = {
        let spec = spec_for(&system, "dev-a");
        submit(&mut system.client, spec).await
    };
    let free = wait_done(&mut system.client, &free, Duration::from_secs(120)).await;
    assert!(free.approval.is_none());
    assert_eq!(free.state, CampaignState::Succeeded as i32, "{}", free.state_reason);

    // Rejected: ends CANCELLED, runs nothing.
    let before = sent(&system);
    let rejected = {
        let spec = spec_for(&system, prod_a_name);
        submit(&mut system.client, spec).await
    };
    wait_state(&mut system, &rejected, CampaignState::PendingApproval).await;
    let reject = |reason: &str| {
        let mut command = system.cli_with_token(&bob);
        command.args(["reject", &rejected, "--reason", reason]);
        output_of(command)
    };
    let (code, _, stderr) = reject(" ").await;
    assert_ne!(code, 0, "a rejection says why");
    assert!(stderr.contains("--reason: say why it is rejected"), "{stderr}");
    let (code, stdout, stderr) = reject("not in the change window").await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with(&format!("{rejected} ")), "{stdout}");
    let rejected = wait_done(&mut system.client, &rejected, Duration::from_secs(30)).await;
    assert_eq!(rejected.state, CampaignState::Cancelled as i32);
    assert_eq!(
        rejected.state_reason,
        "approval rejected by bob: not in the change window"
    );

    // Unanswered past its expiry: FAILED, runs nothing.
    let expired = {
        let spec = spec_for(&system, prod_b_name);
        submit(&mut system.client, spec).await
    };
    let expired = wait_done(&mut system.client, &expired, Duration::from_secs(60)).await;
    assert_eq!(expired.state, CampaignState::Failed as i32);
    assert!(
        expired
            .state_reason
            .starts_with("the approval under policy rule 'brief' was not given by"),
        "{}",
        expired.state_reason
    );
    assert_eq!(
        sent(&system),
        before,
        "neither the rejected nor the expired campaign ran"
    );

    let trail = system
        .client
        .list_audit_events(muster_proto::v1::ListAuditEventsRequest::default())
        .await
        .expect("audit")
        .into_inner()
        .events;
    let count = |action: &str| trail.iter().filter(|e| e.action == action).count();
    assert_eq!((count("approved"), count("rejected")), (1, 1));
    assert!(
        trail
            .iter()
            .any(|e| e.action == "refused" && e.principal == "muster-admin" && e.detail.contains("ApproveCampaign"))
    );
}
