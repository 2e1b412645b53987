//! Patching as whole systems: `muster-controller` and `muster-worker` as
//! real processes against moto + muster-sim, running Patch Manager's
//! documents: the patch state each instance is left in, its sums, and the
//! Install on exactly what a Scan left behind.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use muster_proto::v1::{CampaignState, ListTargetsRequest, Target, TargetStatus};
use muster_tests::checks::{assert_answers_lost, assert_ran_once, patch_sum};
use muster_tests::client::{assert_counters_add_up, patch_command, script_spec, submit, targets, wait_done, wait_for};
use muster_tests::procs::{System, SystemOptions, output_of};

const EAST: &str = "us-east-1";

/// Three Linux instances that reboot halfway through their patch, two that
/// exit 194 and two Windows ones that exit 3010 (the agent reboots, then
/// runs the step again), and one whose every command fails; the Linux ones
/// with patches missing.
const PATCH_FLEET: &str = r#"
name = "patch"
external_id = "ext-patch"
output_bucket = "muster-output"
results_bucket = "muster-results"

[[accounts]]
name = "only"
regions = ["us-east-1"]
  [[accounts.instances]]
  count = 3
  tags = { Role = "web", "muster-sim:duration" = "2", "muster-sim:reboot" = "true", "muster-sim:missing-patches" = "4", "muster-sim:critical-patches" = "1" }
  [[accounts.instances]]
  count = 2
  tags = { Role = "web", "muster-sim:duration" = "1", "muster-sim:reboot-exit" = "194", "muster-sim:missing-patches" = "2" }
  [[accounts.instances]]
  count = 2
  platform = "windows"
  tags = { Role = "win", "muster-sim:duration" = "1", "muster-sim:reboot-exit" = "3010" }
  [[accounts.instances]]
  count = 1
  tags = { Role = "broken", "muster-sim:duration" = "1", "muster-sim:exit-code" = "1", "muster-sim:missing-patches" = "5" }
"#;

/// The patch state is read after the run and is not the run: when it
/// cannot be read, every result is reported all the same, without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_state_that_cannot_be_read_costs_no_result() {
    let mut system = System::start(PATCH_FLEET, SystemOptions::default()).await;
    system.sb.tune(|t| {
        t.faults.push(muster_sim::FaultRule::new(
            "ssm",
            "DescribeInstancePatchStates",
            muster_sim::FaultKind::Error500,
        ))
    });
    let account = system.account("only");
    let mut spec = script_spec(&[account], &[EAST], &["unused"], &[]);
    spec.command = Some(patch_command(&[("Operation", "Scan")]));
    let id = submit(&mut system.client, spec).await;
    let done = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    let all = assert_ran_once(&mut system, &id, &done).await;
    let statuses: Vec<i32> = all.iter().map(|t| t.status).collect();
    assert_eq!(
        (
            statuses.iter().filter(|&&s| s == TargetStatus::Success as i32).count(),
            statuses.iter().filter(|&&s| s == TargetStatus::Failed as i32).count()
        ),
        (7, 1),
        "every result, as the run left it"
    );
    assert!(all.iter().all(|t| t.patch_state.is_none()), "{all:?}");
    assert_eq!(
        muster_tests::client::get(&mut system.client, &id).await.patch_counters,
        None
    );
    assert!(
        system.sb.count("ssm", "DescribeInstancePatchStates", "fault") > 0,
        "it was asked"
    );
}

/// A campaign's patch counters move with the report that writes a result.
/// Reports whose answers are lost after their effect come again, as their
/// results' duplicates, and count nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_counters_count_each_instance_once_though_reports_come_again() {
    let lost = [
        "worker_api.ReportResults@1",
        "worker_api.ReportResults@2",
        "worker_api.CompleteTask@1",
    ];
    let mut system = System::start(
        PATCH_FLEET,
        SystemOptions {
            controller_env: vec![("MUSTER_LOSE_AT".into(), lost.join(","))],
            ..Default::default()
        },
    )
    .await;
    let account = system.account("only");
    let mut spec = script_spec(&[account], &[EAST], &["unused"], &[]);
    spec.command = Some(patch_command(&[("Operation", "Scan")]));
    // Four batches, so several reports.
    spec.rate = Some(muster_proto::v1::RateControl {
        batch_size: 2,
        max_concurrency: "100%".into(),
        ..Default::default()
    });
    let id = submit(&mut system.client, spec).await;
    let done = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    let all = assert_ran_once(&mut system, &id, &done).await;
    assert_answers_lost(&system.logs(), &lost);
    let summed = patch_sum(&all);
    assert_eq!(
        (
            summed.reported,
            summed.compliant,
            summed.missing_targets,
            summed.critical_targets
        ),
        (7, 2, 5, 3),
        "the scan's states, the failed one without: {all:?}"
    );
    assert_eq!(
        muster_tests::client::get(&mut system.client, &id).await.patch_counters,
        Some(summed),
        "each instance counted once"
    );
}

/// Patch Manager may show a run's state a moment after the run's status,
/// and until then the state of the run before: the worker takes neither
/// that older state nor nothing, but asks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_state_that_shows_late_is_waited_for_and_an_earlier_runs_is_not_taken() {
    let mut system = System::start(PATCH_FLEET, SystemOptions::default()).await;
    system.sb.tune(|t| t.patch_state_lag_ms = 3_000);
    let account = system.account("only");
    let mut operations = Vec::new();
    for parameters in [
        &[("Operation", "Scan")][..],
        &[("Operation", "Install"), ("RebootOption", "NoReboot")][..],
    ] {
        let mut spec = script_spec(std::slice::from_ref(&account), &[EAST], &["unused"], &[]);
        spec.command = Some(patch_command(parameters));
        let id = submit(&mut system.client, spec).await;
        let done = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
        let all = targets(&mut system.client, &id, false).await;
        assert_counters_add_up(&done, &all);
        let states: BTreeMap<(String, u32, u32), usize> = all
            .iter()
            .filter(|t| t.status == TargetStatus::Success as i32)
            .fold(BTreeMap::new(), |mut by, t| {
                let state = t
                    .patch_state
                    .as_ref()
                    .unwrap_or_else(|| panic!("no patch state: {t:?}"));
                *by.entry((state.operation.clone(), state.missing, state.installed_pending_reboot))
                    .or_default() += 1;
                by
            });
        operations.push(states);
    }
    // Each instance got each campaign's command once.
    let sends = system.sends_per_instance();
    assert!(sends.len() == 8 && sends.values().all(|&n| n == 2), "{sends:?}");
    let [scanned, installed] = &operations[..] else {
        unreachable!("two campaigns")
    };
    assert_eq!(
        scanned,
        &BTreeMap::from([
            (("Scan".to_owned(), 0, 0), 2),
            (("Scan".to_owned(), 2, 0), 2),
            (("Scan".to_owned(), 4, 0), 3)
        ])
    );
    assert_eq!(
        installed,
        &BTreeMap::from([
            (("Install".to_owned(), 0, 0), 2),
            (("Install".to_owned(), 0, 2), 2),
            (("Install".to_owned(), 0, 4), 3)
        ]),
        "the install's own states, not the scan's shown meanwhile"
    );
}

/// A Scan tells which instances miss patches; the Install then goes to
/// exactly those, taken from the Scan's results, and to no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_install_goes_to_the_instances_a_scan_left_non_compliant_and_to_no_other() {
    let mut system = System::start(PATCH_FLEET, SystemOptions::default()).await;
    let account = system.account("only");
    let mut spec = script_spec(&[account], &[EAST], &["unused"], &[]);
    spec.command = Some(patch_command(&[("Operation", "Scan")]));
    let scan = submit(&mut system.client, spec.clone()).await;
    let from = |statuses: &[TargetStatus], non_compliant| {
        let mut spec = spec.clone();
        spec.targets = Some(muster_proto::v1::TargetSelector {
            from_campaign: Some(muster_proto::v1::CampaignTargets {
                campaign_id: scan.clone(),
                statuses: statuses.iter().map(|s| *s as i32).collect(),
                non_compliant,
                ..Default::default()
            }),
            ..Default::default()
        });
        muster_proto::v1::SubmitCampaignRequest { spec: Some(spec) }
    };

    // While the Scan runs, which instances it leaves non-compliant is not
    // known yet.
    let early = system
        .client
        .submit_campaign(from(&[], true))
        .await
        .expect_err("a running campaign's targets are not taken");
    assert_eq!(early.code(), tonic::Code::FailedPrecondition, "{early:?}");
    assert!(
        early
            .message()
            .starts_with(&format!("targets.from_campaign.campaign_id: {scan} is ")),
        "{}",
        early.message()
    );
    let done = wait_done(&mut system.client, &scan, Duration::from_secs(120)).await;
    let scanned = assert_ran_once(&mut system, &scan, &done).await;
    let behind: BTreeSet<String> = scanned
        .iter()
        .filter(|t| t.patch_state.as_ref().is_some_and(|p| !p.compliant()))
        .map(|t| t.instance_id.clone())
        .collect();
    assert_eq!(behind.len(), 5, "4 missing on 3, 2 missing on 2: {scanned:?}");
    let critical: BTreeSet<String> = scanned
        .iter()
        .filter(|t| t.patch_state.as_ref().is_some_and(|p| p.critical()))
        .map(|t| t.instance_id.clone())
        .collect();
    assert_eq!(critical.len(), 3, "1 critical of 4 missing on 3: {scanned:?}");

    // The controller lists those behind, a page at a time, without the
    // compliant ones.
    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = system
            .client
            .list_targets(ListTargetsRequest {
                campaign_id: scan.clone(),
                page_size: 2,
                page_token,
                critical: true,
                ..Default::default()
            })
            .await
            .expect("ListTargets, critical")
            .into_inner();
        pages.push(page.targets.iter().map(|t| t.instance_id.clone()).collect::<Vec<_>>());
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1], "{pages:?}");
    assert_eq!(pages.concat().into_iter().collect::<BTreeSet<_>>(), critical);
    for (flag, expected) in [("--non-compliant", &behind), ("--critical", &critical)] {
        let mut command = system.cli_with_token(&system.creds.submit_token);
        command.args(["-o", "csv", "results", &scan, flag]);
        let (code, stdout, stderr) = output_of(command).await;
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        let listed: BTreeSet<String> = stdout
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(3).unwrap().to_owned())
            .collect();
        assert_eq!(&listed, expected, "{flag}: {stdout}");
    }

    // Nothing to take is said, and nothing is made.
    let none = system
        .client
        .submit_campaign(from(&[TargetStatus::Failed], true))
        .await
        .expect_err("the failed scan has no patch state");
    assert_eq!(none.code(), tonic::Code::FailedPrecondition, "{none:?}");
    assert_eq!(
        none.message(),
        format!(
            "targets.from_campaign: {scan} has no target that is failed and non-compliant; there is nothing to run"
        )
    );

    // The Install, as an operator submits it.
    let mut command = system.cli_with_token(&system.creds.submit_token);
    command.args([
        "-o",
        "csv",
        "submit",
        "--from-campaign",
        &scan,
        "--non-compliant",
        "--document",
        "AWS-RunPatchBaseline",
        "--param",
        "Operation=Install",
        "--param",
        "RebootOption=NoReboot",
    ]);
    let (code, stdout, stderr) = output_of(command).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let install = stdout.trim().to_owned();
    let done = wait_done(&mut system.client, &install, Duration::from_secs(120)).await;
    assert_eq!(done.state, CampaignState::Succeeded as i32, "{}", done.state_reason);
    let installed = targets(&mut system.client, &install, false).await;
    assert_counters_add_up(&done, &installed);
    let ran: BTreeSet<String> = installed.iter().map(|t| t.instance_id.clone()).collect();
    assert_eq!(ran, behind, "exactly the non-compliant");
    assert!(
        installed.iter().all(|t| t.status == TargetStatus::Success as i32
            && t.patch_state
                .as_ref()
                .is_some_and(|p| p.operation == "Install" && p.missing == 0)),
        "{installed:?}"
    );
    // The Scan's command once on every instance; the Install's once on
    // each that was behind, and on no other.
    let sends = system.sends_per_instance();
    assert_eq!(sends.len(), 8, "{sends:?}");
    for (instance, n) in &sends {
        let expected = if behind.contains(instance) { 2 } else { 1 };
        assert_eq!(*n, expected, "{instance}: {sends:?}");
    }

    // The campaign says where its targets came from; its spec shows the
    // selector, which taken again takes them again.
    let shown = muster_tests::client::get(&mut system.client, &install).await;
    let targets_shown = shown.spec.unwrap().targets.unwrap();
    assert!(targets_shown.scopes.is_empty(), "{targets_shown:?}");
    assert_eq!(targets_shown.from_campaign.unwrap().campaign_id, scan);
    let mut command = system.cli_with_token(&system.creds.submit_token);
    command.args(["show", &install]);
    let (code, stdout, stderr) = output_of(command).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("  taken     from {scan}: its targets that are non-compliant")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_baseline_scan_then_install_follows_reboots_to_true_per_step_results_under_the_documents_timeout() {
    let mut system = System::start(PATCH_FLEET, SystemOptions::default()).await;
    let account = system.account("only");
    let mut spec = script_spec(&[account], &[EAST], &["unused"], &[]);
    spec.command = Some(patch_command(&[("Operation", "Scan")]));
    // NoReboot: the reboots here are the instances' own (scripted); what
    // the install adds waits for the next one.
    spec.then = vec![patch_command(&[("Operation", "Install"), ("RebootOption", "NoReboot")])];
    let id = submit(&mut system.client, spec).await;
    let shown = muster_tests::client::get(&mut system.client, &id).await;
    assert_eq!(
        shown.spec.unwrap().command.unwrap().execution_timeout_seconds,
        0,
        "a document's own timeout applies"
    );
    let done = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    assert_eq!(
        done.state,
        CampaignState::CompletedWithErrors as i32,
        "{}",
        done.state_reason
    );
    // Each command once per instance; the install only where the scan
    // succeeded.
    let all = assert_ran_once(&mut system, &id, &done).await;
    assert_eq!(all.len(), 8);
    let broken = all.iter().find(|t| t.status == TargetStatus::Failed as i32).unwrap();
    let sends = system.sends_per_command();
    assert_eq!(sends.keys().filter(|(_, n)| *n == 2).count(), 7, "{sends:?}");
    assert!(!sends.contains_key(&(broken.instance_id.clone(), 2)), "{sends:?}");
    assert!(broken.reason.starts_with("command 1 of 2: "), "{}", broken.reason);
    assert!(broken.steps.iter().all(|s| s.name.starts_with("1/")), "{broken:?}");

    let patched: Vec<&Target> = all.iter().filter(|t| t.instance_id != broken.instance_id).collect();
    assert!(patched.iter().all(|t| t.status == TargetStatus::Success as i32));
    let said = |text: &str| {
        patched
            .iter()
            .filter(|t| t.steps.iter().any(|s| s.stdout.contains(text)))
            .count()
    };
    assert_eq!(said("resumed after reboot"), 3, "rebooted halfway");
    assert_eq!(said("exit 194 on"), 2, "rebooted, then the step ran again");
    assert_eq!(said("exit 3010 on"), 2, "rebooted, then the step ran again");
    for target in &patched {
        let steps: Vec<(&str, &str)> = target
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.status.as_str()))
            .collect();
        assert_eq!(
            steps.len(),
            6,
            "three steps of the scan, then three of the install: {steps:?}"
        );
        let (ran, skipped) = if target.platform == muster_proto::v1::Platform::Windows as i32 {
            ("PatchWindows", "PatchLinux")
        } else {
            ("PatchLinux", "PatchWindows")
        };
        for (n, operation) in [(1, "Scan"), (2, "Install")] {
            let step = |name: &str| {
                let name = format!("{n}/{name}");
                target.steps.iter().find(|s| s.name == name).unwrap()
            };
            assert_eq!(
                (step(ran).status.as_str(), step(ran).exit_code),
                ("Success", Some(0)),
                "{target:?}"
            );
            assert!(
                step(ran).stdout.contains(&format!("patch baseline {operation}")),
                "{target:?}"
            );
            assert!(step(skipped).stdout.contains("Step execution skipped"), "{target:?}");
        }
    }
    // The worker read the document once, at discovery (to check the
    // parameters of both commands), and kept it for its own timeout (rather
    // than cancelling at a script's hour) in every batch.
    let reads = system.sb.count("ssm", "GetDocument", "ok");
    assert_eq!(reads, 1, "GetDocument calls");

    // Each instance's patch state, as the install left it: what was missing
    // is installed and waits for a reboot. The instance whose scan failed
    // reported none.
    let states: BTreeMap<(u32, u32), usize> = patched.iter().fold(BTreeMap::new(), |mut by, t| {
        let state = t
            .patch_state
            .as_ref()
            .unwrap_or_else(|| panic!("no patch state: {t:?}"));
        assert_eq!(
            (
                state.operation.as_str(),
                state.reboot_option.as_str(),
                state.missing,
                state.failed
            ),
            ("Install", "NoReboot", 0, 0),
            "{t:?}"
        );
        assert_eq!(state.compliant(), state.installed_pending_reboot == 0, "{state:?}");
        *by.entry((state.installed, state.installed_pending_reboot)).or_default() += 1;
        by
    });
    assert_eq!(
        states,
        BTreeMap::from([((42, 0), 2), ((44, 2), 2), ((46, 4), 3)]),
        "42 installed before, plus what was missing, pending a reboot"
    );
    assert_eq!(broken.patch_state, None, "{broken:?}");
    assert!(
        system.sb.count("ssm", "DescribeInstancePatchStates", "ok") >= 2,
        "after the scan and the install"
    );

    // The campaign keeps the sum as its results come, exactly once each.
    let summed = patch_sum(&all);
    assert_eq!(
        (
            summed.reported,
            summed.compliant,
            summed.pending_reboot_targets,
            summed.pending_reboot_patches
        ),
        (7, 2, 5, 16)
    );
    // Installed but not in effect before the reboot: still not compliant,
    // by severity too.
    assert_eq!(
        (
            summed.critical_targets,
            summed.critical_patches,
            summed.security_targets,
            summed.security_patches
        ),
        (3, 3, 5, 16)
    );
    let shown = muster_tests::client::get(&mut system.client, &id).await;
    assert_eq!(shown.patch_counters, Some(summed));

    // The CLI: the sum in show; the instances left non-compliant.
    let mut command = system.cli_with_token(&system.creds.submit_token);
    command.args(["show", &id]);
    let (code, stdout, stderr) = output_of(command).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "  patches   2 of 7 instances compliant; 3 with 3 critical patches not compliant; \
             5 waiting for a reboot (16 patches)"
        ),
        "{stdout}"
    );
    let mut command = system.cli_with_token(&system.creds.submit_token);
    command.args(["results", &id, "--non-compliant"]);
    let (code, stdout, stderr) = output_of(command).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(
        (
            stdout.matches("4 pending reboot (1 critical)").count(),
            stdout.matches("2 pending reboot").count()
        ),
        (3, 2),
        "{stdout}"
    );
    assert!(!stdout.contains("compliant"), "only the non-compliant: {stdout}");
    assert!(
        stderr.contains(
            "patch state of the campaign: 2 of 7 instances compliant; 3 with 3 critical patches not compliant; \
             5 waiting for a reboot (16 patches)"
        ) && stderr.contains("5 targets;")
            && stderr.contains(&format!(
                "to install on these: muster submit --from-campaign {id} --non-compliant "
            )),
        "{stderr}"
    );

    // The export carries it, in the shape of the Athena table's struct.
    let exported = wait_for(&mut system.client, &id, Duration::from_secs(30), "the export", |c| {
        c.export.as_ref().is_some_and(|e| !e.url.is_empty())
    })
    .await;
    let text = muster_tests::client::export_text(&system.sb.hub_config(EAST), &exported.export.unwrap().url).await;
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let columns = muster_tests::checks::athena_table();
    let fields = muster_tests::checks::struct_fields(&columns, "patch_state");
    assert_eq!(
        lines.iter().filter(|l| l["patch_state"].is_null()).count(),
        1,
        "the broken one"
    );
    for line in lines.iter().filter(|l| !l["patch_state"].is_null()) {
        let keys: BTreeSet<String> = line["patch_state"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, fields, "export keys vs the patch_state struct of the table");
        assert_eq!(line["patch_state"]["missing"], 0);
    }
}
