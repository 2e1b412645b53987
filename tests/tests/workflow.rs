//! The patching workflow as whole systems: `muster-controller` and
//! `muster-worker` as real processes against moto + muster-sim.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use muster_proto::v1::{CampaignState, ListTargetsRequest, RerunCampaignRequest, Target, TargetStatus};
use muster_tests::checks::assert_ran_once;
use muster_tests::client::{assert_counters_add_up, script_spec, submit, targets, wait_done};
use muster_tests::fleets;
use muster_tests::procs::{System, SystemOptions};

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
