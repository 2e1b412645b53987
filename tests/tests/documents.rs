//! Customer-owned and shared SSM documents, by name or ARN, at a pinned
//! version, across regions, and what discovery refuses before sending (a
//! document missing in a scope, a parameter it does not allow):
//! `muster-controller` and `muster-worker` as real processes against moto +
//! muster-sim.

use std::collections::BTreeMap;
use std::time::Duration;

use muster_proto::v1::{
    CampaignSpec, CampaignState, Document, ParameterValues, PlanCampaignRequest, Target, TargetStatus, command,
};
use muster_tests::client::{script_spec, submit, targets, wait_done};
use muster_tests::procs::{System, SystemOptions};

const EAST: &str = "us-east-1";
const WEST: &str = "eu-west-1";

/// A tooling account that owns shared documents, and a production account
/// whose instances run them.
const FLEET: &str = r#"
name = "documents"
external_id = "ext-documents"
output_bucket = "muster-output"
results_bucket = "muster-results"

[[accounts]]
name = "tools"
regions = ["us-east-1", "eu-west-1"]
  [[accounts.instances]]
  count = 1
  tags = { Role = "build", "muster-sim:duration" = "0.2" }

[[accounts]]
name = "prod"
regions = ["us-east-1", "eu-west-1"]
  [[accounts.instances]]
  count = 2
  tags = { Role = "web", "muster-sim:duration" = "0.2" }
"#;

/// A Command document (2.2) of Linux shell steps named `steps`.
fn content(steps: &[&str]) -> String {
    let steps: Vec<serde_json::Value> = steps
        .iter()
        .map(|name| {
            serde_json::json!({
                "action": "aws:runShellScript",
                "name": name,
                "precondition": {"StringEquals": ["platformType", "Linux"]},
                "inputs": {"runCommand": [format!("echo {name}")], "timeoutSeconds": "900"},
            })
        })
        .collect();
    serde_json::json!({
        "schemaVersion": "2.2",
        "description": "muster test document",
        "parameters": {"Mode": {"type": "String", "default": "scan", "allowedValues": ["scan", "install"]}},
        "mainSteps": steps,
    })
    .to_string()
}

/// An SSM client of `account` in `region`, through its execution role (as
/// an administrator of that account would be).
async fn ssm_of(system: &System, account: &str, region: &str) -> aws_sdk_ssm::Client {
    let worker = muster_tests::stack::worker_sdk(&system.sb).await;
    let creds = system
        .sb
        .assume_execution(
            &worker,
            &format!("arn:aws:iam::{account}:role/muster-execution"),
            Some("ext-documents"),
        )
        .await
        .expect("the execution role");
    aws_sdk_ssm::Client::new(&system.sb.config_with(region, creds))
}

fn document_spec(account: &str, regions: &[&str], name: &str, version: &str) -> CampaignSpec {
    let mut spec = script_spec(&[account.to_owned()], regions, &["unused"], &[]);
    spec.command.as_mut().unwrap().kind = Some(command::Kind::Document(Document {
        name: name.into(),
        version: version.into(),
        parameters: [(
            "Mode".to_owned(),
            ParameterValues {
                values: vec!["install".into()],
            },
        )]
        .into(),
    }));
    spec.command.as_mut().unwrap().execution_timeout_seconds = 0;
    spec
}

/// SendCommand calls the sim answered, taken or refused.
fn send_commands(system: &System) -> u64 {
    ["ok", "client_error", "server_error"]
        .iter()
        .map(|outcome| system.sb.count("ssm", "SendCommand", outcome))
        .sum()
}

/// The worker's document checks so far: passed, refused, missing and
/// unchecked.
async fn document_checks(system: &System) -> Vec<u64> {
    let scrape = muster_tests::metrics::scrape(system.worker_metrics_port(0)).await;
    ["passed", "refused", "missing", "unchecked"]
        .iter()
        .map(|outcome| {
            muster_tests::metrics::sum(&scrape, "muster_worker_document_checks_total", &[("outcome", outcome)]) as u64
        })
        .collect()
}

fn step_names(target: &Target) -> Vec<&str> {
    target.steps.iter().map(|s| s.name.as_str()).collect()
}

async fn run(system: &mut System, spec: CampaignSpec) -> (muster_proto::v1::Campaign, Vec<Target>) {
    let id = submit(&mut system.client, spec).await;
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    let all = targets(&mut system.client, &id, true).await;
    (campaign, all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_and_own_documents_run_by_arn_and_name_at_the_pinned_version_in_every_region() {
    let mut system = System::start(FLEET, SystemOptions::default()).await;
    let (tools, prod) = (system.account("tools"), system.account("prod"));

    // The tooling account shares its patch document, in both regions; it
    // keeps another to itself.
    for region in [EAST, WEST] {
        let ssm = ssm_of(&system, &tools, region).await;
        for name in ["Acme-ScanThenInstall", "Acme-Private"] {
            ssm.create_document()
                .name(name)
                .content(content(&["Scan", "Install"]))
                .document_type(aws_sdk_ssm::types::DocumentType::Command)
                .document_format(aws_sdk_ssm::types::DocumentFormat::Json)
                .send()
                .await
                .expect("CreateDocument");
        }
        ssm.modify_document_permission()
            .name("Acme-ScanThenInstall")
            .permission_type(aws_sdk_ssm::types::DocumentPermissionType::Share)
            .account_ids_to_add(&prod)
            .send()
            .await
            .expect("ModifyDocumentPermission");
    }
    // Production's own inventory document has two versions; the default
    // stays 1.
    let ssm = ssm_of(&system, &prod, EAST).await;
    ssm.create_document()
        .name("Acme-Inventory")
        .content(content(&["Collect"]))
        .send()
        .await
        .expect("CreateDocument");
    ssm.update_document()
        .name("Acme-Inventory")
        .content(content(&["Collect", "Report"]))
        .document_version("$LATEST")
        .send()
        .await
        .expect("UpdateDocument");

    // The shared document by ARN: one ARN in the spec, sent in each region
    // with that region in it.
    let arn = format!("arn:aws:ssm:{EAST}:{tools}:document/Acme-ScanThenInstall");
    let (campaign, all) = run(&mut system, document_spec(&prod, &[EAST, WEST], &arn, "")).await;
    assert_eq!(
        CampaignState::try_from(campaign.state).unwrap(),
        CampaignState::Succeeded,
        "{}",
        campaign.state_reason
    );
    assert_eq!(all.len(), 4);
    for target in &all {
        assert_eq!(step_names(target), ["Scan", "Install"], "{target:?}");
        assert!(target.steps.iter().all(|s| s.status == "Success"), "{target:?}");
    }
    let regions: std::collections::BTreeSet<String> = system
        .sb
        .audit()
        .iter()
        .filter(|e| e.document_name.ends_with("document/Acme-ScanThenInstall"))
        .map(|e| format!("{} {}", e.region, e.document_name))
        .collect();
    assert_eq!(
        regions,
        [
            format!("{WEST} arn:aws:ssm:{WEST}:{tools}:document/Acme-ScanThenInstall"),
            format!("{EAST} arn:aws:ssm:{EAST}:{tools}:document/Acme-ScanThenInstall"),
        ]
        .into()
    );

    // Its own document by name: the pinned version 2, not the default.
    let (campaign, all) = run(&mut system, document_spec(&prod, &[EAST], "Acme-Inventory", "2")).await;
    assert_eq!(
        CampaignState::try_from(campaign.state).unwrap(),
        CampaignState::Succeeded
    );
    assert!(all.iter().all(|t| step_names(t) == ["Collect", "Report"]), "{all:?}");
    let (_, all) = run(&mut system, document_spec(&prod, &[EAST], "Acme-Inventory", "")).await;
    assert!(
        all.iter().all(|t| step_names(t) == ["Collect"]),
        "the default version: {all:?}"
    );

    // A document not shared with production cannot run there, and says so.
    let private = format!("arn:aws:ssm:{EAST}:{tools}:document/Acme-Private");
    let (campaign, all) = run(&mut system, document_spec(&prod, &[EAST], &private, "")).await;
    assert_ne!(
        CampaignState::try_from(campaign.state).unwrap(),
        CampaignState::Succeeded
    );
    for target in &all {
        assert!(
            [
                TargetStatus::Error as i32,
                TargetStatus::Undeliverable as i32,
                TargetStatus::Failed as i32
            ]
            .contains(&target.status),
            "{target:?}"
        );
        assert!(target.reason.contains("InvalidDocument"), "{}", target.reason);
    }

    // Production's inventory document is in one region only. With a value
    // it does not allow, the plan names what SSM would refuse in each
    // scope, and nothing is sent.
    let sent_before = send_commands(&system);
    let checks_before = document_checks(&system).await;
    let mut wrong = document_spec(&prod, &[EAST, WEST], "Acme-Inventory", "");
    if let Some(command::Kind::Document(document)) = &mut wrong.command.as_mut().unwrap().kind {
        document.parameters.get_mut("Mode").unwrap().values = vec!["destroy".into()];
    }
    let plan = system
        .client
        .plan_campaign(PlanCampaignRequest {
            spec: Some(wrong.clone()),
            wait_seconds: 60,
        })
        .await
        .expect("a plan")
        .into_inner();
    assert!(plan.complete);
    let scope_errors: BTreeMap<String, String> = plan
        .campaign
        .unwrap()
        .scopes
        .into_iter()
        .map(|s| (s.region, s.error))
        .collect();
    assert_eq!(
        scope_errors[EAST],
        format!(
            "command: document Acme-Inventory in account {prod} region {EAST}: parameter 'Mode': 'destroy' \
             is not one of scan, install; nothing was sent"
        )
    );
    assert!(
        scope_errors[WEST].starts_with(&format!(
            "command: document Acme-Inventory in account {prod} region {WEST}: not found (InvalidDocument"
        )),
        "{}",
        scope_errors[WEST]
    );
    // Submitted as it is, it fails the same way, sending nothing.
    let (campaign, all) = run(&mut system, wrong).await;
    assert_eq!(
        CampaignState::try_from(campaign.state).unwrap(),
        CampaignState::CompletedWithErrors
    );
    assert!(all.iter().all(|t| t.status == TargetStatus::Error as i32), "{all:?}");
    assert_eq!(send_commands(&system), sent_before, "SendCommand was not called");

    // With a value it allows, it runs where the document is; where it is
    // not, the scope fails with the reason and nothing is sent there. A
    // region with no instances needs no document, and is not refused.
    const EMPTY: &str = "ap-southeast-2";
    let (campaign, all) = run(
        &mut system,
        document_spec(&prod, &[EAST, WEST, EMPTY], "Acme-Inventory", ""),
    )
    .await;
    let empty = campaign.scopes.iter().find(|s| s.region == EMPTY).unwrap();
    assert_eq!(
        (empty.error.as_str(), empty.counters.unwrap().total),
        ("", 0),
        "{empty:?}"
    );
    let east: Vec<&Target> = all.iter().filter(|t| t.region == EAST).collect();
    assert_eq!(east.len(), 2);
    assert!(
        east.iter().all(|t| t.status == TargetStatus::Success as i32),
        "{east:?}"
    );
    let west = campaign.scopes.iter().find(|s| s.region == WEST).unwrap();
    assert!(west.error.contains("not found (InvalidDocument"), "{}", west.error);
    assert_eq!(west.counters.unwrap().error, 1, "the scope's one ERROR target");
    assert!(
        !system
            .sb
            .audit()
            .iter()
            .any(|e| e.region == WEST && e.document_name == "Acme-Inventory"),
        "nothing sent where the document is not"
    );
    // The worker's metrics count each check: the plan's and the submit's
    // refusal (east) and absence (west), then the run's pass (east) and
    // absence (west); the empty region needed none.
    let checks = document_checks(&system).await;
    let made: Vec<u64> = checks
        .iter()
        .zip(&checks_before)
        .map(|(now, then)| now - then)
        .collect();
    assert_eq!(made, [1, 2, 3, 0], "passed, refused, missing, unchecked");

    // Its owner adds a parameter it requires and makes that version the
    // default. A campaign that passes it runs, although the worker kept the
    // document as it read it before: a refusal rests on the document as it
    // is now.
    let mut changed: serde_json::Value = serde_json::from_str(&content(&["Collect"])).expect("JSON");
    changed["parameters"]["Reason"] = serde_json::json!({"type": "String"});
    let ssm = ssm_of(&system, &prod, EAST).await;
    let version = ssm
        .update_document()
        .name("Acme-Inventory")
        .content(changed.to_string())
        .document_version("$LATEST")
        .send()
        .await
        .expect("UpdateDocument")
        .document_description
        .and_then(|d| d.document_version)
        .expect("a new version");
    ssm.update_document_default_version()
        .name("Acme-Inventory")
        .document_version(version)
        .send()
        .await
        .expect("UpdateDocumentDefaultVersion");
    let mut spec = document_spec(&prod, &[EAST], "Acme-Inventory", "");
    if let Some(command::Kind::Document(document)) = &mut spec.command.as_mut().unwrap().kind {
        document.parameters.insert(
            "Reason".into(),
            ParameterValues {
                values: vec!["patch tuesday".into()],
            },
        );
    }
    let (campaign, all) = run(&mut system, spec).await;
    assert_eq!(
        CampaignState::try_from(campaign.state).unwrap(),
        CampaignState::Succeeded,
        "{:?}",
        campaign.scopes
    );
    assert_eq!(all.len(), 2);
}
