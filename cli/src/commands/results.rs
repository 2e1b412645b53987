//! `results`: each target's status, and one target's full output.

use comfy_table::Cell;
use muster_common::domain::{AccountId, RegionName, check_instance_id};
use muster_proto::PatchChoice;
use muster_proto::v1::{
    CampaignView, GetCampaignRequest, GetTargetRequest, ListTargetsRequest, PatchCounters, Target, TargetStatus,
};

use super::Failure;
use crate::args::{Output, ResultsArgs};
use crate::connect::Client;
use crate::render::{self, Style};

/// `muster results`.
pub async fn results(client: &mut Client, args: &ResultsArgs, style: Style, output: Output) -> Result<(), Failure> {
    check_filters(args)?;
    if let Some(instance) = &args.instance {
        let target = if args.follow_reruns {
            latest_run_of(client, args, instance).await?
        } else {
            client
                .get_target(GetTargetRequest {
                    campaign_id: args.campaign_id.clone(),
                    instance_id: instance.clone(),
                    account_id: args.accounts.first().cloned().unwrap_or_default(),
                    region: args.regions.first().cloned().unwrap_or_default(),
                })
                .await?
                .into_inner()
                .target
                .unwrap_or_default()
        };
        if output.is_table() && target.campaign_id != args.campaign_id && !target.campaign_id.is_empty() {
            println!("{}", style.dim(&format!("as rerun {} left it", target.campaign_id)));
        }
        print_target_output(&target, style, output);
        return Ok(());
    }
    let statuses = statuses(&args.statuses)?;
    let patch = PatchChoice::of(args.non_compliant, args.critical);
    let mut all = all_targets(client, args, statuses, !output.is_table())
        .await
        .map_err(|failure| said_with_flag(failure, patch))?;
    // The controller chooses by patch state; one older than those fields
    // ignores them, so choose here as well.
    all.retain(|t| patch.admits(t.patch_state.as_ref()));
    let mut summary = PatchCounters::default();
    all.iter()
        .filter_map(|t| t.patch_state.as_ref())
        .for_each(|p| summary.add(p));
    match output {
        // The pages read, as one answer.
        Output::Json | Output::Yaml => render::print_message(
            &muster_proto::v1::ListTargetsResponse {
                targets: all,
                next_page_token: String::new(),
            },
            output,
        ),
        Output::Csv => print_targets_csv(&all),
        Output::Table | Output::Wide => {
            print_targets(&all, style, output == Output::Wide, args.follow_reruns);
            if let Some(line) = patch_state_line(client, args, patch, &summary).await? {
                eprintln!("{line}");
            }
            eprintln!(
                "{} targets; one target's output: muster results {} --instance <id>",
                all.len(),
                args.campaign_id
            );
            if let Some(field) = patch.field().filter(|_| !all.is_empty()) {
                eprintln!(
                    "to install on these: muster submit --from-campaign {} {}{} \
                     --document AWS-RunPatchBaseline --param Operation=Install",
                    args.campaign_id,
                    flag(field),
                    if args.follow_reruns { " --follow-reruns" } else { "" }
                );
            }
        }
    }
    Ok(())
}

/// The line under the table that sums the patch states: of the targets
/// listed, or, when they were chosen by patch state (and all are behind),
/// of the whole campaign, as it counts them.
async fn patch_state_line(
    client: &mut Client,
    args: &ResultsArgs,
    patch: PatchChoice,
    listed: &PatchCounters,
) -> Result<Option<String>, Failure> {
    // The campaign's counters are its own targets', not as its reruns left
    // them.
    if patch == PatchChoice::Any || args.follow_reruns {
        return Ok(listed.in_words().map(|words| format!("patch state: {words}")));
    }
    let campaign = client
        .get_campaign(GetCampaignRequest {
            campaign_id: args.campaign_id.clone(),
            view: CampaignView::Basic as i32,
        })
        .await?
        .into_inner()
        .campaign
        .unwrap_or_default();
    Ok(campaign
        .patch_counters
        .and_then(|counters| counters.in_words())
        .map(|words| format!("patch state of the campaign: {words}")))
}

/// The flag of a request field ("--non-compliant" for "non_compliant").
fn flag(field: &str) -> String {
    format!("--{}", field.replace('_', "-"))
}

/// The controller's refusal of the choice by patch state, said with the
/// flag that asked for it.
fn said_with_flag(failure: Failure, patch: PatchChoice) -> Failure {
    let (Failure::Controller(status), Some(field)) = (&failure, patch.field()) else {
        return failure;
    };
    match status.message().strip_prefix(&format!("{field}: ")) {
        Some(rest) => Failure::Controller(tonic::Status::new(status.code(), format!("{}: {rest}", flag(field)))),
        None => failure,
    }
}

/// The flags' values, each named by its flag: an account or region that
/// can name no target, and what `--instance` (one target) cannot take.
fn check_filters(args: &ResultsArgs) -> Result<(), Failure> {
    for account in &args.accounts {
        AccountId::parse(account).map_err(|e| Failure::Input(format!("--account: {e}")))?;
    }
    for region in &args.regions {
        RegionName::parse(region).map_err(|e| Failure::Input(format!("--region: {e}")))?;
    }
    let Some(instance) = &args.instance else {
        return Ok(());
    };
    check_instance_id(instance).map_err(|e| Failure::Input(format!("--instance: {e}")))?;
    if !args.statuses.is_empty() {
        return Err(Failure::Input(
            "--status: --instance shows that one target whatever its status; leave one of them out".into(),
        ));
    }
    for (flag, given) in [("--account", &args.accounts), ("--region", &args.regions)] {
        if given.len() > 1 {
            return Err(Failure::Input(format!(
                "{flag}: --instance shows one target; give at most one (the instance's), not {}",
                given.len()
            )));
        }
    }
    Ok(())
}

/// One instance as the latest rerun that covered it left it, with its
/// output.
async fn latest_run_of(client: &mut Client, args: &ResultsArgs, instance: &str) -> Result<Target, Failure> {
    let mut found = client
        .list_targets(ListTargetsRequest {
            campaign_id: args.campaign_id.clone(),
            page_size: 2,
            statuses: Vec::new(),
            account_ids: args.accounts.clone(),
            regions: args.regions.clone(),
            instance_ids: vec![instance.to_owned()],
            include_output: true,
            follow_reruns: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .targets;
    match found.len() {
        0 => Err(Failure::Controller(tonic::Status::not_found(format!(
            "instance_id: no target {instance} in this campaign"
        )))),
        1 => Ok(found.remove(0)),
        _ => Err(Failure::Input(format!(
            "--instance: {instance} is a target in more than one account or region; name one with --account and --region"
        ))),
    }
}

/// `--status` names as the API's numbers.
fn statuses(names: &[String]) -> Result<Vec<i32>, Failure> {
    let mut statuses = Vec::new();
    for name in names {
        let status = TargetStatus::from_short_name(name).ok_or_else(|| {
            Failure::Input(format!(
                "--status: '{name}' is not a target status (success, failed, timed_out, cancelled, undeliverable, terminated, skipped, error, pending, queued, running)"
            ))
        })?;
        statuses.push(status as i32);
    }
    Ok(statuses)
}

/// Every page of the campaign's targets that `args` select.
async fn all_targets(
    client: &mut Client,
    args: &ResultsArgs,
    statuses: Vec<i32>,
    include_output: bool,
) -> Result<Vec<Target>, Failure> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_targets(ListTargetsRequest {
                campaign_id: args.campaign_id.clone(),
                page_size: 5_000,
                page_token: token.clone(),
                statuses: statuses.clone(),
                account_ids: args.accounts.clone(),
                regions: args.regions.clone(),
                instance_ids: Vec::new(),
                include_output,
                follow_reruns: args.follow_reruns,
                non_compliant: args.non_compliant,
                critical: args.critical,
            })
            .await?
            .into_inner();
        all.extend(page.targets);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    Ok(all)
}

/// One CSV row per target.
fn print_targets_csv(all: &[Target]) {
    render::print_csv(
        &[
            "campaign_id",
            "account_id",
            "region",
            "instance_id",
            "name",
            "platform",
            "status",
            "exit_code",
            "reason",
            "command_id",
            "finished_at",
            "stdout_url",
            "timeout_kind",
            "started_at",
            "document_name",
            "patch_operation",
            "patches_installed",
            "patches_missing",
            "patches_failed",
            "patches_pending_reboot",
            "patches_critical",
            "patches_security",
        ],
        all.iter().map(|t| {
            vec![
                t.campaign_id.clone(),
                t.account_id.clone(),
                t.region.clone(),
                t.instance_id.clone(),
                t.name.clone(),
                render::platform(t.platform).to_owned(),
                render::target_status(t.status).to_owned(),
                t.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                t.reason.clone(),
                t.command_id.clone(),
                render::time(&t.finished_at),
                t.steps.first().map(|s| s.stdout_url.clone()).unwrap_or_default(),
                render::timeout_kind(t.timeout_kind).to_owned(),
                render::time(&t.started_at),
                t.document_name.clone(),
            ]
            .into_iter()
            .chain(patch_columns(t))
            .collect()
        }),
    );
}

/// A target's patch state in the CSV's columns: empty where it has none.
fn patch_columns(target: &Target) -> Vec<String> {
    match &target.patch_state {
        None => vec![String::new(); 7],
        Some(p) => vec![
            p.operation.clone(),
            p.installed.to_string(),
            p.missing.to_string(),
            p.failed.to_string(),
            p.installed_pending_reboot.to_string(),
            p.critical_non_compliant.to_string(),
            p.security_non_compliant.to_string(),
        ],
    }
}

/// One table row per target; `wide` adds the command, document and times,
/// `follow_reruns` the campaign each result is from; a patch run's targets
/// say their patch state.
fn print_targets(all: &[Target], style: Style, wide: bool, follow_reruns: bool) {
    let mut headers = vec![
        "account", "region", "instance", "name", "platform", "status", "exit", "reason",
    ];
    if follow_reruns {
        headers.insert(0, "campaign");
    }
    let patched = all.iter().any(|t| t.patch_state.is_some());
    if patched {
        headers.push("patches");
    }
    if wide {
        headers.extend(["command", "document", "started", "finished"]);
    }
    let mut table = style.table(&headers);
    for t in all {
        // A wide table has room for the whole reason.
        let reason: String = t.reason.chars().take(if wide { usize::MAX } else { 90 }).collect();
        let mut row = Vec::with_capacity(headers.len());
        if follow_reruns {
            row.push(Cell::new(&t.campaign_id));
        }
        row.extend([
            Cell::new(&t.account_id),
            Cell::new(&t.region),
            Cell::new(if t.instance_id.is_empty() { "-" } else { &t.instance_id }),
            Cell::new(&t.name),
            Cell::new(render::platform(t.platform)),
            style.status_cell(render::target_status(t.status)),
            Cell::new(t.exit_code.map(|c| c.to_string()).unwrap_or_default()),
            Cell::new(reason),
        ]);
        if patched {
            row.push(Cell::new(
                t.patch_state.as_ref().map_or_else(|| "-".into(), |p| p.in_words()),
            ));
        }
        if wide {
            row.extend([
                Cell::new(&t.command_id),
                Cell::new(&t.document_name),
                Cell::new(render::time(&t.started_at)),
                Cell::new(render::time(&t.finished_at)),
            ]);
        }
        table.add_row(row);
    }
    println!("{table}");
}

fn print_target_output(target: &Target, style: Style, output: Output) {
    match output {
        Output::Json | Output::Yaml => return render::print_message(target, output),
        Output::Csv => return print_steps_csv(target),
        Output::Table | Output::Wide => {}
    }
    println!(
        "{} {} {}  {}  {}",
        style.bold(&target.instance_id),
        target.account_id,
        target.region,
        style.status(render::target_status(target.status)),
        target.reason
    );
    if !target.command_id.is_empty() {
        println!(
            "{}",
            style.dim(&format!(
                "command {}  document {}",
                target.command_id, target.document_name
            ))
        );
    }
    if let Some(p) = &target.patch_state {
        println!("patch state: {}", p.in_full());
    }
    for step in &target.steps {
        println!(
            "\n{} {} ({}, exit {})",
            style.bold("step"),
            step.name,
            step.status,
            step.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into())
        );
        for (name, text, truncated, url) in [
            ("stdout", &step.stdout, step.stdout_truncated, &step.stdout_url),
            ("stderr", &step.stderr, step.stderr_truncated, &step.stderr_url),
        ] {
            print_stream(style, name, text, truncated, url);
        }
    }
}

/// One row per step of the target, its output whole.
fn print_steps_csv(target: &Target) {
    render::print_csv(
        &[
            "step",
            "status",
            "exit_code",
            "stdout",
            "stderr",
            "stdout_truncated",
            "stderr_truncated",
            "stdout_url",
            "stderr_url",
        ],
        target.steps.iter().map(|s| {
            vec![
                s.name.clone(),
                s.status.clone(),
                s.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                s.stdout.clone(),
                s.stderr.clone(),
                s.stdout_truncated.to_string(),
                s.stderr_truncated.to_string(),
                s.stdout_url.clone(),
                s.stderr_url.clone(),
            ]
        }),
    );
}

/// One stream of a step under its heading, and where the rest of it is
/// when it was cut.
fn print_stream(style: Style, name: &str, text: &str, truncated: bool, url: &str) {
    if text.is_empty() && !truncated {
        return;
    }
    println!("{}", style.dim(&format!("--- {name} ---")));
    print!("{text}");
    if !text.ends_with('\n') && !text.is_empty() {
        println!();
    }
    if truncated {
        let rest = if url.is_empty() {
            "the rest was not kept (send output to S3 or CloudWatch Logs to keep it all)".to_owned()
        } else {
            format!("the rest is at {url}")
        };
        println!("{}", style.dim(&format!("--- {name} truncated; {rest} ---")));
    } else if !url.is_empty() {
        println!("{}", style.dim(&format!("--- {name} also at {url} ---")));
    }
}
