//! `show` and `cancel`, and how a campaign prints: its details, stages and scopes.

use comfy_table::Cell;
use muster_proto::v1::{Campaign, CampaignState, CancelCampaignRequest, ScopeSummary, StagePhase};

use super::{Failure, summary};
use crate::args::Output;
use crate::connect::Client;
use crate::render::{self, Style};

/// Prints a campaign in the chosen format: details, then its scopes.
pub fn print_campaign(campaign: &Campaign, style: Style, output: Output) {
    match output {
        Output::Json | Output::Yaml => render::print_message(campaign, output),
        Output::Csv => print_scopes_csv(campaign),
        Output::Table | Output::Wide => {
            print_details(campaign, style);
            if campaign.dry_run {
                print_plan(campaign, style, output == Output::Wide);
                return;
            }
            print_stages(campaign, style);
            if !campaign.scopes.is_empty() {
                print_scopes(campaign, style, output == Output::Wide);
            }
        }
    }
}

/// One CSV row per scope, with every counter.
fn print_scopes_csv(campaign: &Campaign) {
    render::print_csv(
        &[
            "account_id",
            "region",
            "scope_state",
            "total",
            "success",
            "failed",
            "timed_out",
            "skipped",
            "error",
            "cancelled",
            "terminated",
            "undeliverable",
        ],
        campaign.scopes.iter().map(|s| {
            let c = s.counters.unwrap_or_default();
            let mut row = vec![s.account_id.clone(), s.region.clone(), render::scope_state(s.state)];
            row.extend(
                [
                    c.total,
                    c.success,
                    c.failed,
                    c.timed_out,
                    c.skipped,
                    c.error,
                    c.cancelled,
                    c.terminated,
                    c.undeliverable,
                ]
                .map(|n| n.to_string()),
            );
            row
        }),
    );
}

/// The campaign's state, counts, who and when, approval and window.
fn print_details(campaign: &Campaign, style: Style) {
    let spec = campaign.spec.clone().unwrap_or_default();
    let c = campaign.counters.unwrap_or_default();
    println!("{} {}", style.bold("campaign"), campaign.id);
    if !spec.name.is_empty() {
        println!("  name      {}", spec.name);
    }
    if !spec.description.is_empty() {
        println!("  about     {}", spec.description);
    }
    if !spec.labels.is_empty() {
        let mut labels: Vec<String> = spec.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        println!("  labels    {}", labels.join(", "));
    }
    if let Some(command) = &spec.command {
        println!("  runs      {}", render::command_line(command));
    }
    for then in &spec.then {
        println!("  then      {}", render::command_line(then));
    }
    println!(
        "  state     {}  {}",
        style.status(render::campaign_state(campaign.state)),
        style.dim(&campaign.state_reason)
    );
    if campaign.dry_run {
        println!(
            "  targets   {} would run, {} skipped, of {} instances found (a plan: nothing ran)",
            c.pending, c.skipped, c.total
        );
    } else {
        println!("  targets   {}", summary(&c));
    }
    if let Some(threshold) = campaign.error_threshold {
        println!("  errors    {} (max_errors allows {threshold})", campaign.errors);
    }
    if let Some(words) = campaign.patch_counters.as_ref().and_then(|p| p.in_words()) {
        println!("  patches   {words}");
    }
    println!(
        "  created   {}  by {}",
        render::time(&campaign.created_at),
        campaign.submitted_by
    );
    if campaign.finished_at.is_some() {
        println!("  finished  {}", render::time(&campaign.finished_at));
    }
    if let Some(export) = campaign.export.as_ref().filter(|e| !e.url.is_empty()) {
        println!("  results   {}", export.url);
    }
    if !campaign.rerun_of.is_empty() {
        println!("  rerun of  {}", campaign.rerun_of);
    }
    let taken = campaign
        .spec
        .as_ref()
        .and_then(|s| s.targets.as_ref()?.from_campaign.as_ref());
    if let Some(from) = taken {
        println!(
            "  taken     from {}: its targets that are {}",
            from.campaign_id,
            from.in_words()
        );
    }
    if let Some(approval) = &campaign.approval {
        let decided = if approval.decided_by.is_empty() && approval.expires_at.is_none() {
            "asked once discovery has ended".to_owned()
        } else if approval.decided_by.is_empty() {
            format!("waits until {}", render::time(&approval.expires_at))
        } else if approval.approved {
            format!("approved by {}", approval.decided_by)
        } else {
            format!("rejected by {}", approval.decided_by)
        };
        println!("  approval  rule '{}' ({}): {decided}", approval.rule, approval.reason);
    }
    if let Some(window) = &campaign.window {
        let closes = if window.closes_at.is_none() {
            "no window".to_owned()
        } else {
            format!(
                "window {} to {} (then in-flight {}, the rest {})",
                render::time(&window.opened_at),
                render::time(&window.closes_at),
                window.on_window_end,
                window.after_window.replace('_', " ")
            )
        };
        println!(
            "  schedule  {} version {}: {closes}",
            window.schedule, window.schedule_version
        );
    }
    for rerun in &campaign.reruns {
        println!(
            "  rerun     {rerun}  (muster results {} --follow-reruns: each target's latest result)",
            campaign.id
        );
    }
}

/// The scopes a table of `campaign` shows (all when `wide`, else those
/// that found something or have something to say), their notes, and how
/// many it left out.
fn shown_scopes(campaign: &Campaign, wide: bool) -> (Vec<&ScopeSummary>, render::Notes, usize) {
    let (shown, folded): (Vec<&ScopeSummary>, Vec<&ScopeSummary>) =
        campaign.scopes.iter().partition(|s| wide || !s.matched_nothing());
    let notes = render::Notes::of(
        shown
            .iter()
            .map(|s| (s.account_id.as_str(), s.region.as_str(), s.error.as_str())),
    );
    (shown, notes, folded.len())
}

/// Under a table of scopes: its shared notes, and what it left out.
fn print_under(notes: &render::Notes, folded: usize) {
    for line in notes.footer().into_iter().chain(render::folded_line(folded)) {
        println!("{line}");
    }
}

/// One table row per scope: "failed" as [`render::failed`], "other" the
/// cancelled, terminated and not yet ended; `wide` adds running, managed,
/// offline and unmanaged.
fn print_scopes(campaign: &Campaign, style: Style, wide: bool) {
    let mut headers = vec![
        "account",
        "region",
        "discovery",
        "ok",
        "failed",
        "timed out",
        "skipped",
        "other",
        "total",
    ];
    if wide {
        headers.extend(["running", "managed", "offline", "unmanaged"]);
    }
    let mut table = style.table(&headers);
    let (shown, notes, folded) = shown_scopes(campaign, wide);
    for s in shown {
        let c = s.counters.unwrap_or_default();
        let state = if s.error.is_empty() {
            render::scope_state(s.state)
        } else {
            format!("failed: {}", notes.cell(&s.account_id, &s.region, &s.error))
        };
        let mut row = vec![
            Cell::new(&s.account_id),
            Cell::new(&s.region),
            Cell::new(state),
            Cell::new(c.success),
            Cell::new(render::failed(&c)),
            Cell::new(c.timed_out),
            Cell::new(c.skipped),
            Cell::new(c.total - c.success - render::failed(&c) - c.timed_out - c.skipped),
            Cell::new(c.total),
        ];
        if wide {
            row.extend([
                Cell::new(c.queued + c.running),
                Cell::new(s.managed),
                Cell::new(s.offline),
                Cell::new(s.unmanaged),
            ]);
        }
        table.add_row(row);
    }
    println!("{table}");
    print_under(&notes, folded);
}

/// A plan: what would run where, with the totals, then its stages.
pub(super) fn print_plan(campaign: &Campaign, style: Style, wide: bool) {
    let mut table = style.table(&[
        "account",
        "region",
        "would run",
        "managed",
        "offline",
        "unmanaged",
        "skipped",
        "note",
    ]);
    let (shown, notes, folded) = shown_scopes(campaign, wide);
    let mut totals = [0u64; 5];
    for s in shown {
        let c = s.counters.unwrap_or_default();
        for (total, n) in totals
            .iter_mut()
            .zip([c.pending, s.managed, s.offline, s.unmanaged, c.skipped])
        {
            *total += n;
        }
        table.add_row(vec![
            Cell::new(&s.account_id),
            Cell::new(&s.region),
            Cell::new(c.pending),
            Cell::new(s.managed),
            Cell::new(s.offline),
            Cell::new(s.unmanaged),
            Cell::new(c.skipped),
            Cell::new(notes.cell(&s.account_id, &s.region, &s.error)),
        ]);
    }
    table.add_row(
        std::iter::once(Cell::new("total").add_attribute(comfy_table::Attribute::Bold))
            .chain(std::iter::once(Cell::new("")))
            .chain(totals.iter().map(Cell::new))
            .chain(std::iter::once(Cell::new(""))),
    );
    println!("{table}");
    print_under(&notes, folded);
    print_stages(campaign, style);
}

/// The waves of a staged campaign, as a table: for a plan, what each
/// would take and what lets the next start; for a campaign, also where
/// each is.
pub(super) fn print_stages(campaign: &Campaign, style: Style) {
    if campaign.stages.is_empty() {
        return;
    }
    let plan = campaign.dry_run;
    let mut headers = vec!["stage"];
    if !plan {
        headers.push("phase");
    }
    headers.push("targets");
    if !plan {
        headers.extend(["ok", "failed", "running", "errors"]);
    }
    headers.extend(["limits", "then"]);
    let mut table = style.table(&headers);
    let specs = campaign.spec.as_ref().map_or(&[][..], |spec| &spec.stages[..]);
    for (i, stage) in campaign.stages.iter().enumerate() {
        let c = stage.counters.unwrap_or_default();
        let mut row = vec![Cell::new(&stage.name)];
        if !plan {
            let phase = StagePhase::try_from(stage.phase).unwrap_or(StagePhase::Unspecified);
            let mut phase_text = phase.short_name().to_owned();
            if phase == StagePhase::Baking {
                phase_text = format!("baking until {}", render::time(&stage.bake_until));
            }
            row.push(style.status_cell(&phase_text));
        }
        row.push(Cell::new(c.total));
        if !plan {
            row.extend([
                Cell::new(c.success),
                Cell::new(render::failed(&c) + c.timed_out),
                Cell::new(c.queued + c.running),
                Cell::new(stage.errors),
            ]);
        }
        row.push(Cell::new(stage.limits()));
        let last = i + 1 == campaign.stages.len();
        let follows = specs
            .iter()
            .find(|s| s.name == stage.name)
            .map(|s| s.what_follows(last))
            .unwrap_or_default();
        row.push(Cell::new(follows));
        table.add_row(row);
    }
    println!("{table}");
}

/// `muster show`.
pub async fn show(client: &mut Client, id: &str, style: Style, output: Output) -> Result<(), Failure> {
    let campaign = super::fetch_campaign(client, id).await?;
    print_campaign(&campaign, style, output);
    Ok(())
}

/// `muster cancel`.
pub async fn cancel(client: &mut Client, id: &str, reason: &str, style: Style, output: Output) -> Result<(), Failure> {
    // Cancelling what has ended changes nothing; say so rather than print
    // its state as if the cancel had made it.
    let before = super::fetch_campaign(client, id).await?;
    let ended = CampaignState::try_from(before.state).is_ok_and(CampaignState::is_terminal);
    if ended && output.is_table() {
        eprintln!(
            "campaign {id} already ended ({}): nothing to cancel",
            render::campaign_state(before.state)
        );
        return Ok(());
    }
    let campaign = client
        .cancel_campaign(CancelCampaignRequest {
            campaign_id: id.to_owned(),
            reason: reason.to_owned(),
        })
        .await?
        .into_inner()
        .campaign
        .unwrap_or_default();
    match output {
        Output::Json | Output::Yaml => render::print_message(&campaign, output),
        _ => println!(
            "{} {}  {}",
            id,
            style.status(render::campaign_state(campaign.state)),
            style.dim(&campaign.state_reason)
        ),
    }
    Ok(())
}
