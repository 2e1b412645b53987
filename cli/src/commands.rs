//! The commands other than `watch`.

use comfy_table::Cell;
use muster_proto::v1::{
    Campaign, CampaignState, CancelCampaignRequest, GetCampaignRequest, GetTargetRequest, ListCampaignsRequest,
    ListTargetsRequest, PlanCampaignRequest, PromoteCampaignRequest, RerunCampaignRequest, ResumeCampaignRequest,
    StagePhase, SubmitCampaignRequest, Target, TargetStatus,
};
use serde_json::json;

use crate::args::{ApprovalArgs, AuditArgs, DecideArgs, LsArgs, Output, RerunArgs, ResultsArgs, SpecArgs};
use crate::connect::Client;
use crate::render::{self, Style};

/// Why a command failed: a bad argument (before anything was sent) or the
/// controller's answer.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Bad input on this side.
    #[error("{0}")]
    Input(String),
    /// The controller refused or could not be reached.
    #[error("{}", .0.message())]
    Controller(#[from] tonic::Status),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Input(format!("{e:#}"))
    }
}

/// Counters in one short line.
fn summary(c: &muster_proto::v1::StatusCounters) -> String {
    format!(
        "{} targets: {} ok, {} failed, {} timed out, {} skipped, {} other",
        c.total,
        c.success,
        c.failed,
        c.timed_out,
        c.skipped,
        c.total - c.success - c.failed - c.timed_out - c.skipped
    )
}

/// Prints a campaign in the chosen format: details, then its scopes.
pub fn print_campaign(campaign: &Campaign, style: Style, output: Output) {
    match output {
        Output::Json | Output::Yaml => render::print_message(campaign, output),
        Output::Csv => print_scopes_csv(campaign),
        Output::Table | Output::Wide => {
            print_details(campaign, style);
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
    println!(
        "  state     {}  {}",
        style.status(render::campaign_state(campaign.state)),
        style.dim(&campaign.state_reason)
    );
    println!("  targets   {}", summary(&c));
    if let Some(threshold) = campaign.error_threshold {
        println!("  errors    {} (max_errors allows {threshold})", campaign.errors);
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
    if let Some(approval) = &campaign.approval {
        let decided = if approval.decided_by.is_empty() {
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

/// One table row per scope; `wide` adds running, managed, offline and
/// unmanaged.
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
    for s in &campaign.scopes {
        let c = s.counters.unwrap_or_default();
        let state = if s.error.is_empty() {
            render::scope_state(s.state)
        } else {
            format!("failed: {}", s.error)
        };
        let mut row = vec![
            Cell::new(&s.account_id),
            Cell::new(&s.region),
            Cell::new(state),
            Cell::new(c.success),
            Cell::new(c.failed + c.error),
            Cell::new(c.timed_out),
            Cell::new(c.skipped),
            Cell::new(c.total - c.success - c.failed - c.error - c.timed_out - c.skipped),
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
}

/// Tries of one SubmitCampaign when the controller cannot be reached or
/// does not answer in time.
const SUBMIT_TRIES: u32 = 5;
/// How long one SubmitCampaign may take (it expands OUs and regions).
const SUBMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `muster submit`: prints the new campaign's id.
///
/// Every submission carries a client token (`--client-token`, or one made
/// for this invocation): an answer lost on the way back is asked for again
/// with the same token, and the controller answers with the campaign it
/// already made, never a second one.
pub async fn submit(client: &mut Client, args: &SpecArgs, style: Style, output: Output) -> Result<String, Failure> {
    let mut spec = crate::spec::build(args)?;
    if spec.client_token.is_empty() {
        spec.client_token = uuid::Uuid::new_v4().to_string();
    }
    if output.is_table() {
        eprintln!(
            "client token {} (submitting again with --client-token {0} returns this campaign)",
            spec.client_token
        );
    }
    let request = SubmitCampaignRequest { spec: Some(spec) };
    let answer = ask_until_answered(|| {
        let mut client = client.clone();
        let request = request.clone();
        async move { client.submit_campaign(timed(request)).await }
    })
    .await?;
    match output {
        Output::Json | Output::Yaml => render::print_message(&answer, output),
        Output::Csv => println!("{}", answer.campaign_id),
        Output::Table | Output::Wide => {
            if answer.created {
                eprintln!(
                    "{} submitted; follow it with: muster watch {}",
                    style.bold("campaign"),
                    answer.campaign_id
                );
            } else {
                eprintln!("{} already submitted with this client token", style.bold("campaign"));
            }
            println!("{}", answer.campaign_id);
        }
    }
    Ok(answer.campaign_id)
}

/// `request` with the time one creating call may take.
pub(crate) fn timed<T>(request: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(request);
    request.set_timeout(SUBMIT_TIMEOUT);
    request
}

/// Makes a call that is safe to repeat (a creating call's request carries a
/// client token; the controller recognises a repeated put or delete) until
/// it is answered: asked again, the same, while the controller cannot be
/// reached or its answer is lost, up to [`SUBMIT_TRIES`] times.
pub(crate) async fn ask_until_answered<T, F, Fut>(mut call: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match call().await {
            Ok(answer) => return Ok(answer.into_inner()),
            Err(status) if tries < SUBMIT_TRIES && retry_submit(&status) => {
                let wait = std::time::Duration::from_secs(1 << (tries - 1));
                eprintln!(
                    "no answer from the controller ({}: {}); asking again in {}s (a repeat is recognised: nothing is done twice)",
                    status.code(),
                    status.message(),
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
            }
            Err(status) => return Err(status.into()),
        }
    }
}

/// Whether a failed SubmitCampaign may be asked again with its token: the
/// controller could not be reached, its answer did not arrive in time, or
/// the connection broke on the way (an error made here, from a transport
/// failure, carries its cause; the controller's own answers do not).
fn retry_submit(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => true,
        tonic::Code::Unknown => std::error::Error::source(status).is_some(),
        _ => false,
    }
}

/// `muster plan`.
pub async fn plan(client: &mut Client, args: &SpecArgs, style: Style, output: Output) -> Result<i32, Failure> {
    let spec = crate::spec::build(args)?;
    if output.is_table() {
        eprintln!("discovering targets (nothing runs)...");
    }
    let answer = client
        .plan_campaign(PlanCampaignRequest {
            spec: Some(spec),
            wait_seconds: 300,
        })
        .await?
        .into_inner();
    if matches!(output, Output::Json | Output::Yaml) {
        render::print_message(&answer, output);
    }
    let campaign = answer.campaign.unwrap_or_default();
    match output {
        Output::Json | Output::Yaml => {}
        Output::Csv => render::print_csv(
            &[
                "account_id",
                "region",
                "would_run",
                "managed",
                "offline",
                "unmanaged",
                "skipped",
                "error",
            ],
            campaign.scopes.iter().map(|s| {
                let c = s.counters.unwrap_or_default();
                let mut row = vec![s.account_id.clone(), s.region.clone()];
                row.extend([c.pending, s.managed, s.offline, s.unmanaged, c.skipped].map(|n| n.to_string()));
                row.push(s.error.clone());
                row
            }),
        ),
        Output::Table | Output::Wide => {
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
            let mut totals = [0u64; 5];
            for s in &campaign.scopes {
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
                    Cell::new(&s.error),
                ]);
            }
            table.add_row(
                std::iter::once(Cell::new("total").add_attribute(comfy_table::Attribute::Bold))
                    .chain(std::iter::once(Cell::new("")))
                    .chain(totals.iter().map(Cell::new))
                    .chain(std::iter::once(Cell::new(""))),
            );
            println!("{table}");
            print_stages(&campaign, style);
            if !answer.complete {
                eprintln!("discovery is still going; see `muster show {}` later", campaign.id);
            }
        }
    }
    Ok(if answer.complete { 0 } else { 1 })
}

/// `muster ls`.
pub async fn ls(client: &mut Client, args: &LsArgs, style: Style, output: Output) -> Result<(), Failure> {
    let states = campaign_states(&args.states)?;
    let campaigns = campaigns_up_to(client, args, states).await?;
    match output {
        // The pages read, as one answer.
        Output::Json | Output::Yaml => render::print_message(
            &muster_proto::v1::ListCampaignsResponse {
                campaigns,
                next_page_token: String::new(),
            },
            output,
        ),
        Output::Csv => print_campaigns_csv(&campaigns),
        Output::Table | Output::Wide => print_campaigns(&campaigns, style, output == Output::Wide),
    }
    Ok(())
}

/// `--state` names as the API's numbers.
fn campaign_states(names: &[String]) -> Result<Vec<i32>, Failure> {
    let mut states = Vec::new();
    for name in names {
        let state = CampaignState::from_short_name(name).ok_or_else(|| {
            Failure::Input(format!(
                "--state: '{name}' is not a campaign state (pending, discovering, running, cancelling, paused, awaiting_promotion, pending_approval, waiting_for_window, succeeded, completed_with_errors, failed, cancelled, planned)"
            ))
        })?;
        states.push(state as i32);
    }
    Ok(states)
}

/// The newest campaigns, `args.limit` at most, over as many pages as that
/// takes.
async fn campaigns_up_to(client: &mut Client, args: &LsArgs, states: Vec<i32>) -> Result<Vec<Campaign>, Failure> {
    let mut campaigns = Vec::new();
    let mut token = String::new();
    while campaigns.len() < args.limit as usize {
        let page = client
            .list_campaigns(ListCampaignsRequest {
                page_size: (args.limit as usize - campaigns.len()).min(500) as u32,
                page_token: token.clone(),
                states: states.clone(),
                include_plans: args.plans,
            })
            .await?
            .into_inner();
        campaigns.extend(page.campaigns);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    Ok(campaigns)
}

/// One CSV row per campaign.
fn print_campaigns_csv(campaigns: &[Campaign]) {
    render::print_csv(
        &[
            "id",
            "name",
            "state",
            "created_at",
            "total",
            "success",
            "failed",
            "timed_out",
            "skipped",
            "started_at",
            "finished_at",
            "submitted_by",
        ],
        campaigns.iter().map(|c| {
            let n = c.counters.unwrap_or_default();
            let mut row = vec![
                c.id.clone(),
                c.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
                render::campaign_state(c.state).to_owned(),
                render::time(&c.created_at),
            ];
            row.extend([n.total, n.success, n.failed, n.timed_out, n.skipped].map(|n| n.to_string()));
            row.extend([
                render::time(&c.started_at),
                render::time(&c.finished_at),
                c.submitted_by.clone(),
            ]);
            row
        }),
    );
}

/// One table row per campaign; `wide` adds running, finished, who and
/// labels.
fn print_campaigns(campaigns: &[Campaign], style: Style, wide: bool) {
    let mut headers = vec!["id", "name", "state", "created", "targets", "ok", "failed", "skipped"];
    if wide {
        headers.extend(["running", "finished", "by", "labels"]);
    }
    let mut table = style.table(&headers);
    for c in campaigns {
        let n = c.counters.unwrap_or_default();
        let mut row = vec![
            Cell::new(&c.id),
            Cell::new(c.spec.as_ref().map(|s| s.name.as_str()).unwrap_or_default()),
            style.status_cell(render::campaign_state(c.state)),
            Cell::new(render::time(&c.created_at)),
            Cell::new(n.total),
            Cell::new(n.success),
            Cell::new(n.failed + n.timed_out + n.error + n.undeliverable),
            Cell::new(n.skipped),
        ];
        if wide {
            let labels = c.spec.as_ref().map(|s| {
                s.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            });
            row.extend([
                Cell::new(n.queued + n.running),
                Cell::new(render::time(&c.finished_at)),
                Cell::new(&c.submitted_by),
                Cell::new(labels.unwrap_or_default()),
            ]);
        }
        table.add_row(row);
    }
    println!("{table}");
}

/// `muster audit`.
pub async fn audit(client: &mut Client, args: &AuditArgs, style: Style, output: Output) -> Result<(), Failure> {
    let mut events = Vec::new();
    let mut token = String::new();
    while events.len() < args.limit as usize {
        let page = client
            .list_audit_events(muster_proto::v1::ListAuditEventsRequest {
                campaign_id: args.campaign.clone().unwrap_or_default(),
                principal: args.principal.clone().unwrap_or_default(),
                page_size: (args.limit as usize - events.len()).min(1_000) as u32,
                page_token: token.clone(),
            })
            .await?
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    match output {
        Output::Json | Output::Yaml => render::print_message(
            &muster_proto::v1::ListAuditEventsResponse {
                events,
                next_page_token: String::new(),
            },
            output,
        ),
        Output::Csv => render::print_csv(
            &[
                "id",
                "at",
                "principal",
                "via",
                "peer",
                "action",
                "campaign_id",
                "detail",
            ],
            events.iter().map(|e| {
                vec![
                    e.id.to_string(),
                    render::time(&e.at),
                    e.principal.clone(),
                    e.via.clone(),
                    e.peer.clone(),
                    e.action.clone(),
                    e.campaign_id.clone(),
                    e.detail.clone(),
                ]
            }),
        ),
        Output::Table | Output::Wide => {
            let mut table = style.table(&["when", "who", "via", "from", "what", "campaign", "detail"]);
            for e in &events {
                table.add_row(vec![
                    Cell::new(render::time(&e.at)),
                    Cell::new(&e.principal),
                    Cell::new(&e.via),
                    Cell::new(&e.peer),
                    Cell::new(&e.action),
                    Cell::new(&e.campaign_id),
                    Cell::new(&e.detail),
                ]);
            }
            println!("{table}");
        }
    }
    Ok(())
}

/// `muster whoami`.
pub async fn whoami(client: &mut Client, style: Style, output: Output) -> Result<(), Failure> {
    let me = client.who_am_i(muster_proto::v1::WhoAmIRequest {}).await?.into_inner();
    let scope = |g: &muster_proto::v1::RoleGrant| {
        let mut parts = Vec::new();
        for (label, list) in [
            ("accounts", &g.accounts),
            ("OUs", &g.ous),
            ("regions", &g.regions),
            ("documents", &g.documents),
        ] {
            if !list.is_empty() {
                parts.push(format!("{label} {}", list.join(", ")));
            }
        }
        if parts.is_empty() {
            "everywhere".to_owned()
        } else {
            parts.join("; ")
        }
    };
    match output {
        Output::Json | Output::Yaml => render::print_message(&me, output),
        Output::Csv => render::print_csv(
            &["name", "via", "aws_arn", "role", "scope"],
            me.grants.iter().map(|g| {
                vec![
                    me.name.clone(),
                    me.via.clone(),
                    me.aws_arn.clone(),
                    g.role.clone(),
                    scope(g),
                ]
            }),
        ),
        Output::Table | Output::Wide => {
            let how = if me.aws_arn.is_empty() {
                me.via.clone()
            } else {
                format!("{} ({})", me.via, me.aws_arn)
            };
            println!("{} via {how}, from {}", me.name, me.peer);
            if me.grants.is_empty() {
                println!("no roles: the policy grants this principal nothing");
            } else {
                let mut table = style.table(&["role", "where"]);
                for g in &me.grants {
                    table.add_row(vec![Cell::new(&g.role), Cell::new(scope(g))]);
                }
                println!("{table}");
            }
        }
    }
    Ok(())
}

/// `muster show`.
pub async fn show(client: &mut Client, id: &str, style: Style, output: Output) -> Result<(), Failure> {
    let campaign = client
        .get_campaign(GetCampaignRequest {
            campaign_id: id.to_owned(),
        })
        .await?
        .into_inner()
        .campaign
        .unwrap_or_default();
    print_campaign(&campaign, style, output);
    Ok(())
}

/// `muster cancel`.
pub async fn cancel(client: &mut Client, id: &str, reason: &str, style: Style, output: Output) -> Result<(), Failure> {
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

/// `muster rerun`: prints the new campaign's id.
///
/// As `muster submit`, every request carries a client token, so an answer
/// lost on the way back is asked for again and never makes a second rerun.
pub async fn rerun(client: &mut Client, args: &RerunArgs, style: Style, output: Output) -> Result<String, Failure> {
    let mut statuses = Vec::new();
    for name in &args.statuses {
        match TargetStatus::from_short_name(name) {
            Some(status) if status.is_terminal() => statuses.push(status as i32),
            _ => {
                return Err(Failure::Input(format!(
                    "--status: '{name}' is not a status a target ends in (failed, timed_out, undeliverable, error, \
                     cancelled, terminated, skipped, success)"
                )));
            }
        }
    }
    let client_token = args
        .client_token
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let request = RerunCampaignRequest {
        campaign_id: args.campaign_id.clone(),
        statuses,
        client_token,
        name: args.name.clone().unwrap_or_default(),
        confirm_large: args.confirm_large,
    };
    let answer = ask_until_answered(|| {
        let mut client = client.clone();
        let request = request.clone();
        async move { client.rerun_campaign(timed(request)).await }
    })
    .await?;
    match output {
        Output::Json | Output::Yaml => render::print_message(&answer, output),
        Output::Csv => println!("{}", answer.campaign_id),
        Output::Table | Output::Wide => {
            eprintln!(
                "{} of {} over its {} targets; follow it with: muster watch {}",
                style.bold("rerun"),
                args.campaign_id,
                answer.rerun_targets,
                answer.campaign_id
            );
            println!("{}", answer.campaign_id);
        }
    }
    Ok(answer.campaign_id)
}

/// The waves of a staged campaign, as a table.
fn print_stages(campaign: &Campaign, style: Style) {
    if campaign.stages.is_empty() {
        return;
    }
    let mut table = style.table(&[
        "stage", "phase", "targets", "ok", "failed", "running", "errors", "limits",
    ]);
    for stage in &campaign.stages {
        let c = stage.counters.unwrap_or_default();
        let phase = StagePhase::try_from(stage.phase).unwrap_or(StagePhase::Unspecified);
        let mut phase_text = phase.short_name().to_owned();
        if phase == StagePhase::Baking {
            phase_text = format!("baking until {}", render::time(&stage.bake_until));
        }
        let errors = stage
            .error_threshold
            .map_or("no max".to_owned(), |t| format!("max {t}"));
        table.add_row(vec![
            Cell::new(&stage.name),
            style.status_cell(&phase_text),
            Cell::new(c.total),
            Cell::new(c.success),
            Cell::new(c.failed + c.timed_out + c.error + c.undeliverable),
            Cell::new(c.queued + c.running),
            Cell::new(stage.errors),
            Cell::new(format!("{} at once, {errors} errors", stage.concurrency_limit)),
        ]);
    }
    println!("{table}");
}

/// The stage an operator decides on: the one given, or the campaign's
/// current stage when it awaits that decision.
async fn current_stage(
    client: &mut Client,
    id: &str,
    given: Option<&str>,
    waiting: CampaignState,
) -> Result<String, Failure> {
    if let Some(stage) = given {
        return Ok(stage.to_owned());
    }
    let campaign = client
        .get_campaign(GetCampaignRequest {
            campaign_id: id.to_owned(),
        })
        .await?
        .into_inner()
        .campaign
        .unwrap_or_default();
    let state = CampaignState::try_from(campaign.state).unwrap_or(CampaignState::Unspecified);
    if state != waiting {
        return Err(Failure::Input(format!(
            "campaign {id} is {}, not {}: nothing to decide ({})",
            state.short_name(),
            waiting.short_name(),
            campaign.state_reason
        )));
    }
    let phase = if waiting == CampaignState::Paused {
        StagePhase::Paused
    } else {
        StagePhase::AwaitingPromotion
    };
    campaign
        .stages
        .iter()
        .find(|s| s.phase == phase as i32)
        .map(|s| s.name.clone())
        .ok_or_else(|| Failure::Input(format!("campaign {id} has no stage {}", phase.short_name())))
}

/// `muster promote` and `muster resume`: an operator's decision on the
/// current stage. Asking again after a lost answer changes nothing.
pub async fn decide(
    client: &mut Client,
    args: &DecideArgs,
    resume: bool,
    style: Style,
    output: Output,
) -> Result<(), Failure> {
    let waiting = if resume {
        CampaignState::Paused
    } else {
        CampaignState::AwaitingPromotion
    };
    let stage = current_stage(client, &args.campaign_id, args.stage.as_deref(), waiting).await?;
    let campaign = if resume {
        let request = ResumeCampaignRequest {
            campaign_id: args.campaign_id.clone(),
            stage,
            reason: args.reason.clone(),
        };
        ask_until_answered(|| {
            let mut client = client.clone();
            let request = request.clone();
            async move { client.resume_campaign(timed(request)).await }
        })
        .await?
        .campaign
    } else {
        let request = PromoteCampaignRequest {
            campaign_id: args.campaign_id.clone(),
            stage,
            reason: args.reason.clone(),
        };
        ask_until_answered(|| {
            let mut client = client.clone();
            let request = request.clone();
            async move { client.promote_campaign(timed(request)).await }
        })
        .await?
        .campaign
    }
    .unwrap_or_default();
    print_decision(&campaign, style, output);
    Ok(())
}

/// A campaign after an operator's decision: its state and why.
fn print_decision(campaign: &Campaign, style: Style, output: Output) {
    match output {
        Output::Json | Output::Yaml => render::print_message(campaign, output),
        _ => println!(
            "{} {}  {}",
            campaign.id,
            style.status(render::campaign_state(campaign.state)),
            style.dim(&campaign.state_reason)
        ),
    }
}

/// `muster approve` and `muster reject`. Asking again after a lost answer
/// changes nothing.
pub async fn approval(
    client: &mut Client,
    args: &ApprovalArgs,
    approve: bool,
    style: Style,
    output: Output,
) -> Result<(), Failure> {
    if !approve && args.reason.trim().is_empty() {
        return Err(Failure::Input(
            "--reason: say why it is rejected; the submitter reads it".into(),
        ));
    }
    let (id, reason) = (args.campaign_id.clone(), args.reason.clone());
    let campaign = if approve {
        let request = muster_proto::v1::ApproveCampaignRequest {
            campaign_id: id,
            reason,
        };
        ask_until_answered(|| {
            let mut client = client.clone();
            let request = request.clone();
            async move { client.approve_campaign(timed(request)).await }
        })
        .await?
        .campaign
    } else {
        let request = muster_proto::v1::RejectCampaignRequest {
            campaign_id: id,
            reason,
        };
        ask_until_answered(|| {
            let mut client = client.clone();
            let request = request.clone();
            async move { client.reject_campaign(timed(request)).await }
        })
        .await?
        .campaign
    }
    .unwrap_or_default();
    print_decision(&campaign, style, output);
    Ok(())
}

/// `muster results`.
pub async fn results(client: &mut Client, args: &ResultsArgs, style: Style, output: Output) -> Result<(), Failure> {
    if let Some(instance) = &args.instance {
        let target = client
            .get_target(GetTargetRequest {
                campaign_id: args.campaign_id.clone(),
                instance_id: instance.clone(),
                account_id: args.accounts.first().cloned().unwrap_or_default(),
                region: args.regions.first().cloned().unwrap_or_default(),
            })
            .await?
            .into_inner()
            .target
            .unwrap_or_default();
        print_target_output(&target, style, output);
        return Ok(());
    }
    let statuses = statuses(&args.statuses)?;
    let all = all_targets(client, args, statuses, !output.is_table()).await?;
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
            eprintln!(
                "{} targets; one target's output: muster results {} --instance <id>",
                all.len(),
                args.campaign_id
            );
        }
    }
    Ok(())
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
        }),
    );
}

/// One table row per target; `wide` adds the command, document and times,
/// `follow_reruns` the campaign each result is from.
fn print_targets(all: &[Target], style: Style, wide: bool, follow_reruns: bool) {
    let mut headers = vec![
        "account", "region", "instance", "name", "platform", "status", "exit", "reason",
    ];
    if follow_reruns {
        headers.insert(0, "campaign");
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
        Output::Csv => {
            return render::print_csv(
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
            if text.is_empty() && !truncated {
                continue;
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
    }
}

/// The console's address: `/console/` of the controller, or the page of
/// one campaign.
pub fn console_url(controller: &str, campaign_id: Option<&str>) -> String {
    let base = controller.trim_end_matches('/');
    match campaign_id {
        Some(id) => format!(
            "{base}/console/campaigns/{}",
            form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
        ),
        None => format!("{base}/console/"),
    }
}

/// `muster console`: the address, after checking who you are there (and,
/// signing in with AWS, a token for the sign-in page).
pub async fn console(
    client: &mut Client,
    target: &crate::connect::Target,
    args: &crate::args::ConsoleArgs,
    output: Output,
) -> Result<(), Failure> {
    let me = client.who_am_i(muster_proto::v1::WhoAmIRequest {}).await?.into_inner();
    if let Some(id) = &args.campaign_id {
        // A wrong id is said here, not by the page.
        client
            .get_campaign(muster_proto::v1::GetCampaignRequest {
                campaign_id: id.clone(),
            })
            .await?;
    }
    let url = console_url(&target.url, args.campaign_id.as_deref());
    let token = match &target.aws_signin {
        Some(server_id) => Some(
            crate::signin::AwsSigner::load(server_id)
                .await
                .and_then(|signer| signer.token())
                .map_err(|e| Failure::Input(e.to_string()))?,
        ),
        None => None,
    };
    match output {
        // Not one of the API's messages: named as the proto3 JSON mapping
        // would name them.
        Output::Json | Output::Yaml => render::print_document(
            &json!({
                "url": url,
                "name": me.name,
                "signinToken": token,
            }),
            output,
        ),
        _ => {
            println!("{url}");
            match token {
                Some(token) => {
                    eprintln!("sign in there as {} with this token (valid five minutes):", me.name);
                    println!("{token}");
                }
                None => eprintln!(
                    "sign in there as {} with your API token (the one --token-file names) or your client certificate",
                    me.name
                ),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod console_tests {
    use super::console_url;

    #[test]
    fn the_console_is_under_the_controllers_address() {
        assert_eq!(
            console_url("https://muster.example:7070", None),
            "https://muster.example:7070/console/"
        );
        assert_eq!(
            console_url("https://muster.example:7070/", Some("4f1c-9a")),
            "https://muster.example:7070/console/campaigns/4f1c-9a"
        );
    }
}
