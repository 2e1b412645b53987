//! Campaigns from submit to results: refusals, a whole run exported for
//! Athena, OU targeting.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_campaigns_are_refused_naming_the_field_and_nothing_is_stored() {
    let stack = without_workers(fleets::MIXED).await;
    let mut client = stack.client.clone();
    let base = mixed_spec(&stack);
    type Breaker = Box<dyn Fn(&mut CampaignSpec)>;
    let cases: Vec<(&str, Breaker)> = vec![
        (
            "targets.account_ids[0]: '12345' is not a 12-digit account id",
            Box::new(|s| s.targets.as_mut().unwrap().account_ids = vec!["12345".into()]),
        ),
        (
            "targets.regions[0]: 'us-middle-7' is not an AWS region",
            Box::new(|s| s.targets.as_mut().unwrap().regions = vec!["us-middle-7".into()]),
        ),
        (
            "rate.max_concurrency: '110%'",
            Box::new(|s| s.rate.as_mut().unwrap().max_concurrency = "110%".into()),
        ),
        (
            "rate.batch_size: 51 is more than 50",
            Box::new(|s| s.rate.as_mut().unwrap().batch_size = 51),
        ),
        (
            "command.script: is empty",
            Box::new(|s| {
                if let Some(muster_proto::v1::command::Kind::Script(script)) = s.command.as_mut().unwrap().kind.as_mut()
                {
                    script.linux_lines.clear();
                    script.windows_lines.clear();
                }
            }),
        ),
        (
            "targets.account_ids: 10000 accounts; at most 1000",
            Box::new(|s| {
                s.targets.as_mut().unwrap().account_ids =
                    (0..10_000).map(|i| format!("{:012}", 100_000_000_000u64 + i)).collect();
            }),
        ),
        (
            "command.script.linux_lines: 1048577 bytes; at most 102400",
            Box::new(|s| {
                if let Some(muster_proto::v1::command::Kind::Script(script)) = s.command.as_mut().unwrap().kind.as_mut()
                {
                    script.linux_lines = vec!["x".repeat(1024 * 1024)];
                }
            }),
        ),
        (
            "targets.organizational_unit_ids[0]: ou-abcd-12345678 is not an OU",
            Box::new(|s| {
                s.targets.as_mut().unwrap().organizational_unit_ids = vec!["ou-abcd-12345678".into()];
            }),
        ),
    ];
    for (expected, break_it) in cases {
        let mut spec = base.clone();
        break_it(&mut spec);
        let status = client
            .submit_campaign(SubmitCampaignRequest { spec: Some(spec) })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{expected}: {}", status.message());
        assert!(
            status.message().starts_with(expected),
            "expected '{expected}', got '{}'",
            status.message()
        );
    }
    let listed = client
        .list_campaigns(ListCampaignsRequest {
            include_plans: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.campaigns.is_empty(), "nothing was stored");
    let stored: i64 = stack
        .store()
        .read(|conn| {
            conn.query_row(
                "SELECT (SELECT COUNT(*) FROM campaigns) + (SELECT COUNT(*) FROM tasks)",
                (),
                |r| r.get(0),
            )
        })
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_runs_from_submit_to_exported_results() {
    let stack = Stack::start(
        fleets::MIXED,
        Options {
            workers: 2,
            ..Default::default()
        },
    )
    .await;
    let mut client = stack.client.clone();
    let mut spec = mixed_spec(&stack);
    spec.client_token = "patch-2026-11".into();
    spec.labels.insert("ticket".into(), "CHG-1".into());
    let submitted = client
        .submit_campaign(SubmitCampaignRequest {
            spec: Some(spec.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(submitted.created);
    let id = submitted.campaign_id;

    // The same client token and spec: the same campaign, not a second one.
    let again = client
        .submit_campaign(SubmitCampaignRequest {
            spec: Some(spec.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.campaign_id.as_str(), again.created), (id.as_str(), false));
    let mut other = spec.clone();
    other.name = "something else".into();
    let status = client
        .submit_campaign(SubmitCampaignRequest { spec: Some(other) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(status.message().starts_with("spec.client_token:"));

    let campaign = wait_done(&mut client, &id, Duration::from_secs(120)).await;
    assert_eq!(
        campaign.state,
        CampaignState::CompletedWithErrors as i32,
        "{}",
        campaign.state_reason
    );
    let all = targets(&mut client, &id, true).await;
    assert_counters_add_up(&campaign, &all);
    let c = campaign.counters.unwrap();
    // 2 regions x (prod-a 8 + prod-b 4 + dev-a 4) = 32 targets.
    assert_eq!(c.total, 32);
    assert_eq!(c.failed, 2, "prod-a's failing instance in each region");
    assert_eq!(c.skipped, 4, "an offline and an unmanaged instance per region");
    assert_eq!(c.success, 26);
    assert_eq!(campaign.errors, 2);
    for target in &all {
        let role = stack
            .fleet
            .instances()
            .find(|(_, _, i)| i.id == target.instance_id)
            .and_then(|(_, _, i)| i.tags.get("Role").cloned())
            .unwrap_or_default();
        match role.as_str() {
            "fail" => {
                assert_eq!(target.status, TargetStatus::Failed as i32);
                assert_eq!(target.exit_code, Some(2));
                assert_eq!(target.reason, "exit code 2");
            }
            "offline" => assert!(target.reason.contains("offline"), "{target:?}"),
            "unmanaged" => assert!(target.reason.contains("not managed by SSM"), "{target:?}"),
            "win" => {
                assert_eq!(target.status, TargetStatus::Success as i32);
                assert_eq!(target.platform, Platform::Windows as i32);
                assert_eq!(target.document_name, "AWS-RunPowerShellScript");
                assert!(
                    target.steps[0].stdout_url.starts_with("s3://muster-output/"),
                    "{:?}",
                    target.steps
                );
            }
            _ => {
                assert_eq!(target.status, TargetStatus::Success as i32, "{target:?}");
                assert_eq!(target.document_name, "AWS-RunShellScript");
                assert!(target.steps[0].stdout.contains("AWS-RunShellScript"));
            }
        }
    }
    assert_eq!(campaign.scopes.len(), 6);
    assert!(campaign.scopes.iter().all(|s| s.state == ScopeState::Discovered as i32));
    let prod_a_east = campaign
        .scopes
        .iter()
        .find(|s| s.account_id == stack.account("prod-a") && s.region == EAST)
        .unwrap();
    assert_eq!(
        (prod_a_east.managed, prod_a_east.offline, prod_a_east.unmanaged),
        (7, 1, 0)
    );
    assert!(
        stack.sends_per_instance().values().all(|n| *n == 1),
        "no instance ran twice"
    );

    // A tool polling for the end asks for the basic view: the same campaign
    // without its (account, region) rows.
    let view = |view: CampaignView| GetCampaignRequest {
        campaign_id: id.clone(),
        view: view as i32,
    };
    let basic = client
        .get_campaign(view(CampaignView::Basic))
        .await
        .unwrap()
        .into_inner();
    let basic = basic.campaign.unwrap();
    assert!(basic.scopes.is_empty(), "{:?}", basic.scopes);
    assert_eq!(
        (basic.state, basic.counters, basic.errors, &basic.state_reason),
        (
            campaign.state,
            campaign.counters,
            campaign.errors,
            &campaign.state_reason
        )
    );
    let full = client
        .get_campaign(view(CampaignView::Full))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(full.campaign.unwrap().scopes, campaign.scopes);
    let refused = client
        .get_campaign(GetCampaignRequest {
            campaign_id: id.clone(),
            view: 9,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().starts_with("view: 9 is not a campaign view"),
        "{refused:?}"
    );

    // The export: one JSON line per target, where the Athena table reads.
    let campaign = wait_for(&mut client, &id, Duration::from_secs(30), "the export", |c| {
        c.export.as_ref().is_some_and(|e| !e.url.is_empty())
    })
    .await;
    let url = campaign.export.unwrap().url;
    let key = url.strip_prefix("s3://muster-results/").expect("the results bucket");
    assert!(
        key.starts_with("campaigns/dt=") && key.ends_with(&format!("/campaign={id}/targets.jsonl.gz")),
        "{key}"
    );
    let text = muster_tests::client::export_text(&stack.sb.hub_config(EAST), &url).await;
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 32);
    assert!(
        lines
            .iter()
            .all(|l| l["campaign_id"] == id.as_str() && l["labels"]["ticket"] == "CHG-1")
    );
    assert_eq!(lines.iter().filter(|l| l["status"] == "failed").count(), 2);

    // Every key is a column of the Athena table that hub.yaml creates, and
    // every column is a key: the export and the table cannot drift apart.
    let (columns, step_fields) = athena_columns();
    for line in &lines {
        let keys: BTreeSet<String> = line.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, columns, "export keys vs muster.campaign_targets columns");
        for step in line["steps"].as_array().unwrap() {
            let keys: BTreeSet<String> = step.as_object().unwrap().keys().cloned().collect();
            assert_eq!(keys, step_fields, "step keys vs the steps struct of the table");
        }
    }
}

/// The columns of `muster.campaign_targets` in hub.yaml, and the fields of its
/// `steps` struct.
fn athena_columns() -> (BTreeSet<String>, BTreeSet<String>) {
    let columns = muster_tests::checks::athena_table();
    let names = columns.iter().map(|c| c["Name"].as_str().unwrap().to_owned()).collect();
    (names, muster_tests::checks::struct_fields(&columns, "steps"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ous_expand_recursively_minus_excluded_accounts() {
    let stack = Stack::start(fleets::MIXED, Options::default()).await;
    let mut client = stack.client.clone();
    let mut spec = mixed_spec(&stack);
    {
        let t = spec.targets.as_mut().unwrap();
        t.account_ids.clear();
        t.organizational_unit_ids = vec![stack.fleet.root_id.clone()];
        // The root holds the management (hub) account too; leave it and prod-b out.
        t.exclude_account_ids = vec![stack.account("prod-b"), stack.fleet.hub_account.clone()];
    }
    let plan = client
        .plan_campaign(PlanCampaignRequest {
            spec: Some(spec.clone()),
            wait_seconds: 60,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(plan.complete);
    let campaign = plan.campaign.unwrap();
    assert_eq!(campaign.state, CampaignState::Planned as i32);
    let accounts: BTreeSet<String> = campaign.scopes.iter().map(|s| s.account_id.clone()).collect();
    assert_eq!(
        accounts,
        [stack.account("prod-a"), stack.account("dev-a")].into(),
        "the root's OUs, recursively, minus prod-b"
    );
    assert_eq!(campaign.scopes.len(), 4);
    let c = campaign.counters.unwrap();
    assert_eq!(c.pending, 2 * (7 + 4), "would run: everything online");
    assert_eq!(c.skipped, 2, "prod-a's offline instance in each region");
    assert!(stack.sb.audit().is_empty(), "a plan runs nothing");

    // One OU only.
    spec.targets.as_mut().unwrap().organizational_unit_ids = vec![stack.fleet.ous["Dev"].clone()];
    spec.targets.as_mut().unwrap().exclude_account_ids.clear();
    let plan = client
        .plan_campaign(PlanCampaignRequest {
            spec: Some(spec),
            wait_seconds: 60,
        })
        .await
        .unwrap()
        .into_inner();
    let accounts: BTreeSet<String> = plan
        .campaign
        .unwrap()
        .scopes
        .iter()
        .map(|s| s.account_id.clone())
        .collect();
    assert_eq!(accounts, [stack.account("dev-a")].into());

    // No regions named: every region enabled in the hub, of the campaign's
    // partition only (the sandbox, unlike AWS, lists China's and
    // GovCloud's too), each discovered; the instances are in two.
    let mut spec = mixed_spec(&stack);
    spec.targets.as_mut().unwrap().account_ids = vec![stack.account("dev-a")];
    spec.targets.as_mut().unwrap().regions.clear();
    let plan = client
        .plan_campaign(PlanCampaignRequest {
            spec: Some(spec),
            wait_seconds: 120,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(plan.complete);
    let campaign = plan.campaign.unwrap();
    let regions: BTreeSet<&str> = campaign.scopes.iter().map(|s| s.region.as_str()).collect();
    assert!(regions.len() > 2, "{regions:?}");
    assert!(
        regions.iter().all(|r| muster_common::domain::RegionName::parse(r)
            .is_ok_and(|r| r.partition() == muster_common::domain::Partition::Aws)),
        "only the aws partition's regions: {regions:?}"
    );
    assert!(
        campaign.scopes.iter().all(|s| s.error.is_empty()),
        "{:?}",
        campaign.scopes
    );
    assert_eq!(campaign.counters.unwrap().pending, 2 * 4, "dev-a's instances");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_named_by_ou_and_by_tag_take_the_targets_of_that_ou_and_those_tags() {
    let stack = Stack::start(fleets::MIXED, Options::default()).await;
    let mut client = stack.client.clone();
    let mut spec = mixed_spec(&stack);
    let prod = stack.fleet.ous["Prod"].clone();
    spec.stages = vec![
        muster_proto::v1::Stage {
            name: "prod-first".into(),
            ous: vec![prod.clone()],
            // Given on input, ignored: the controller resolves the OU.
            ou_account_ids: vec![stack.account("dev-a")],
            ..Default::default()
        },
        muster_proto::v1::Stage {
            name: "role-w".into(),
            tags: vec![muster_proto::v1::TagFilter {
                key: "Role".into(),
                values: vec!["w*".into()],
            }],
            ..Default::default()
        },
        muster_proto::v1::Stage {
            name: "the-rest".into(),
            ..Default::default()
        },
    ];
    let plan = client
        .plan_campaign(PlanCampaignRequest {
            spec: Some(spec),
            wait_seconds: 60,
        })
        .await
        .unwrap()
        .into_inner();
    let campaign = plan.campaign.unwrap();
    assert_eq!(
        campaign.state,
        CampaignState::Planned as i32,
        "{}",
        campaign.state_reason
    );
    let stages = &campaign.stages;
    assert_eq!(stages.len(), 3);
    let shown = &campaign.spec.as_ref().unwrap().stages[0];
    assert_eq!(
        shown.ou_account_ids.iter().cloned().collect::<BTreeSet<_>>(),
        [stack.account("prod-a"), stack.account("prod-b")].into(),
        "resolved from the OU at submit"
    );
    // prod-a: 7 online per region (its offline one is skipped); prod-b: 3.
    assert_eq!(stages[0].counters.unwrap().total, 2 * (7 + 3), "{stages:?}");
    // dev-a: 3 web and 1 Windows (Role=win) per region; Role=w* takes all
    // of them (web and win alike).
    assert_eq!(stages[1].counters.unwrap().total, 2 * 4, "dev-a's, by tag: {stages:?}");
    assert_eq!(stages[2].counters.unwrap().total, 0, "none left: {stages:?}");
    let all = targets(&mut client, &campaign.id, false).await;
    for target in all.iter().filter(|t| t.stage == "prod-first") {
        assert!(shown.ou_account_ids.contains(&target.account_id), "{target:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_client_token_is_answered_before_any_other_work() {
    let stack = without_workers(fleets::MIXED).await;
    let mut client = stack.client.clone();
    let mut spec = mixed_spec(&stack);
    {
        let t = spec.targets.as_mut().unwrap();
        t.account_ids.clear();
        t.organizational_unit_ids = vec![stack.fleet.ous["Dev"].clone()];
    }
    spec.client_token = "patch-2026-12-02".into();
    let first = client
        .submit_campaign(SubmitCampaignRequest {
            spec: Some(spec.clone()),
        })
        .await
        .expect("the first submission")
        .into_inner();
    assert!(first.created);

    // Organizations now fails every call: a new campaign over an OU could
    // not be expanded, but the same token needs no expansion.
    stack.sb.tune(|t| {
        t.faults = vec![muster_sim::FaultRule::new(
            "organizations",
            "*",
            muster_sim::FaultKind::Error500,
        )];
    });
    let again = client
        .submit_campaign(SubmitCampaignRequest {
            spec: Some(spec.clone()),
        })
        .await
        .expect("the first campaign again, without asking Organizations")
        .into_inner();
    assert!(!again.created, "not a new campaign");
    assert_eq!(again.campaign_id, first.campaign_id);

    // The same token with another spec is refused, naming the field.
    spec.name = "another".into();
    let status = client
        .submit_campaign(SubmitCampaignRequest { spec: Some(spec) })
        .await
        .expect_err("a token names one spec");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(status.message().starts_with("spec.client_token:"), "{status:?}");
    let listed = client
        .list_campaigns(ListCampaignsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .campaigns;
    assert_eq!(listed.len(), 1, "one campaign in all");
}
