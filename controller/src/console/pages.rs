//! The console's pages: each handler asks CampaignService as the caller and
//! draws a template (`controller/templates/console/`).

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use futures::StreamExt;
use muster_proto::v1::campaign_service_server::CampaignService;
use muster_proto::v1::{
    ApproveCampaignRequest, Campaign, CampaignState, CancelCampaignRequest, ListCampaignsRequest, ListTargetsRequest,
    PromoteCampaignRequest, RejectCampaignRequest, RerunCampaignRequest, ResumeCampaignRequest, StagePhase,
    TargetStatus, WatchCampaignRequest, WatchCampaignResponse, WhoAmIRequest, watch_campaign_response,
};
use serde::Deserialize;

use super::session::{self, Caller};
use super::views::{self, HeatMap, StageRow, Summary, TargetRow, segment, state_word, when};
use super::{Console, PageError, live};
use crate::store::campaigns::Detail;

mod audit;
mod schedules;
mod signin;
mod targets;
pub use audit::audit;
pub use schedules::{schedule, schedule_act, schedules};
pub use signin::{sign_in, sign_in_page, sign_out};
pub use targets::{scope, target};

/// Who is signed in, as every page's header shows it.
pub struct Who {
    /// The principal.
    pub name: String,
    /// How it proved it.
    pub via: String,
    /// Its roles, in words.
    pub roles: String,
    /// Whether it holds the admin role, which may read the audit trail.
    pub admin: bool,
}

async fn who(console: &Console, caller: &Caller, next: &str) -> Result<Who, PageError> {
    let me = console
        .api
        .who_am_i(caller.request(WhoAmIRequest {}))
        .await
        .map_err(|s| PageError::from(s).at(next))?
        .into_inner();
    let mut roles: Vec<String> = me
        .grants
        .iter()
        .map(|g| {
            let mut scope: Vec<String> = Vec::new();
            for (kind, list) in [("accounts", &g.accounts), ("OUs", &g.ous), ("regions", &g.regions)] {
                if !list.is_empty() {
                    scope.push(format!("{kind} {}", list.join(", ")));
                }
            }
            if scope.is_empty() {
                g.role.clone()
            } else {
                format!("{} in {}", g.role, scope.join("; "))
            }
        })
        .collect();
    roles.dedup();
    Ok(Who {
        admin: me.grants.iter().any(|g| g.role == "admin"),
        name: me.name,
        via: me.via,
        roles: if roles.is_empty() {
            "no role".into()
        } else {
            roles.join(", ")
        },
    })
}

fn html(page: &impl Template) -> Result<Response, PageError> {
    Ok(Html(page.render()?).into_response())
}

/// An error page's template.
#[derive(Template)]
#[template(path = "console/error.html")]
pub struct ErrorPage {
    /// Its heading.
    pub title: String,
    /// What went wrong, as the API said it.
    pub message: String,
}

// ---- campaigns ----

/// The campaigns list's filters.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    plans: String,
    #[serde(default)]
    page: String,
}

/// One line of the campaigns list.
pub struct CampaignLine {
    href: String,
    name: String,
    id: String,
    state: String,
    state_class: String,
    progress: String,
    failed: u64,
    by: String,
    created: String,
    finished: String,
    plan: bool,
}

#[derive(Template)]
#[template(path = "console/campaigns.html")]
struct CampaignsPage {
    who: Option<Who>,
    csrf: String,
    lines: Vec<CampaignLine>,
    state: String,
    q: String,
    plans: String,
    /// (value, label) of the state filter.
    state_options: Vec<(String, String)>,
    next_href: Option<String>,
    searched: usize,
}

/// The groups of states the list filters on, then each state.
fn state_filter(value: &str) -> Result<Vec<i32>, PageError> {
    let all = muster_proto::ALL_CAMPAIGN_STATES;
    Ok(match value {
        "" => Vec::new(),
        "active" => all.iter().filter(|s| !s.is_terminal()).map(|s| *s as i32).collect(),
        "ended" => all.iter().filter(|s| s.is_terminal()).map(|s| *s as i32).collect(),
        other => vec![CampaignState::from_short_name(other).ok_or_else(|| {
            PageError::Plain(
                StatusCode::BAD_REQUEST,
                format!("state: {other:?} is not a campaign state (active, ended, or one such as running)"),
            )
        })? as i32],
    })
}

fn state_options() -> Vec<(String, String)> {
    let mut options = vec![
        (String::new(), "any".to_owned()),
        ("active".into(), "active".into()),
        ("ended".into(), "ended".into()),
    ];
    for state in muster_proto::ALL_CAMPAIGN_STATES {
        options.push((state.short_name().to_owned(), state_word(state as i32)));
    }
    options
}

/// Whether `c` matches the search text (id, name, description, submitter).
fn matches(c: &Campaign, q: &str) -> bool {
    let q = q.trim().to_lowercase();
    if q.is_empty() {
        return true;
    }
    let spec = c.spec.clone().unwrap_or_default();
    [c.id.as_str(), &spec.name, &spec.description, &c.submitted_by]
        .iter()
        .any(|field| field.to_lowercase().contains(&q))
}

/// The campaigns, newest first, filtered by state, plans and text.
pub async fn campaigns(
    State(console): State<Console>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Response, PageError> {
    let who = who(&console, &caller, "/console/").await?;
    let states = state_filter(&query.state)?;
    let searching = !query.q.trim().is_empty();
    let answer = console
        .api
        .list_campaigns(caller.request(ListCampaignsRequest {
            // A search reads the newest 500 at once; a plain list pages by 50.
            page_size: if searching { 500 } else { 50 },
            page_token: query.page.clone(),
            states,
            include_plans: query.plans == "include" || query.plans == "only",
        }))
        .await
        .map_err(|s| PageError::from(s).at("/console/"))?
        .into_inner();
    let searched = answer.campaigns.len();
    let lines = answer
        .campaigns
        .iter()
        .filter(|c| query.plans != "only" || c.dry_run)
        .filter(|c| matches(c, &query.q))
        .map(|c| {
            let s = Summary::of(c);
            let spec = c.spec.clone().unwrap_or_default();
            CampaignLine {
                href: format!("/console/campaigns/{}", segment(&c.id)),
                name: if spec.name.is_empty() {
                    "(no name)".into()
                } else {
                    spec.name
                },
                id: c.id.clone(),
                state: state_word(c.state),
                state_class: state_word(c.state).replace(' ', "-"),
                progress: format!("{}/{}", s.done, s.buckets.total),
                failed: s.buckets.failed,
                by: c.submitted_by.clone(),
                created: when(c.created_at.as_ref()),
                finished: when(c.finished_at.as_ref()),
                plan: c.dry_run,
            }
        })
        .collect();
    let next_href = (!answer.next_page_token.is_empty()).then(|| {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("state", &query.state)
            .append_pair("q", &query.q)
            .append_pair("plans", &query.plans)
            .append_pair("page", &answer.next_page_token)
            .finish();
        format!("/console/?{query}")
    });
    html(&CampaignsPage {
        who: Some(who),
        csrf: caller.csrf(),
        lines,
        state: query.state,
        q: query.q,
        plans: query.plans,
        state_options: state_options(),
        next_href,
        searched: if searching { searched } else { 0 },
    })
}

// ---- one campaign ----

/// An action button and its form.
pub struct ActionView {
    /// The path segment: cancel, approve, reject, promote, resume, rerun.
    name: &'static str,
    /// The button's text.
    label: String,
    /// The stage it names (promote, resume).
    stage: String,
    /// Whether a reason must be given.
    reason_required: bool,
    /// A fresh idempotency key (rerun): a double click makes one rerun.
    client_token: String,
    /// Drawn as a dangerous action.
    danger: bool,
}

/// The actions `c`'s state allows (the API still decides who may).
fn actions(c: &Campaign) -> Vec<ActionView> {
    let state = CampaignState::try_from(c.state).unwrap_or_default();
    let action = |name, label: &str| ActionView {
        name,
        label: label.to_owned(),
        stage: String::new(),
        reason_required: false,
        client_token: String::new(),
        danger: false,
    };
    let mut list = Vec::new();
    match state {
        CampaignState::PendingApproval => {
            list.push(action("approve", "Approve"));
            list.push(ActionView {
                reason_required: true,
                danger: true,
                ..action("reject", "Reject")
            });
        }
        CampaignState::AwaitingPromotion => {
            if let Some(stage) = views::stage_in(c, StagePhase::AwaitingPromotion) {
                list.push(ActionView {
                    label: format!("Promote after stage {stage}"),
                    stage,
                    ..action("promote", "")
                });
            }
        }
        CampaignState::Paused => {
            if let Some(stage) = views::stage_in(c, StagePhase::Paused) {
                list.push(ActionView {
                    label: format!("Resume stage {stage}"),
                    stage,
                    ..action("resume", "")
                });
            }
        }
        _ => {}
    }
    if !state.is_terminal() && state != CampaignState::Cancelling {
        list.push(ActionView {
            danger: true,
            ..action("cancel", "Cancel campaign")
        });
    }
    let failed = Summary::of(c).buckets.failed;
    if state.is_terminal() && !c.dry_run && failed > 0 {
        list.push(ActionView {
            client_token: uuid::Uuid::new_v4().to_string(),
            ..action("rerun", &format!("Rerun the {failed} failed"))
        });
    }
    list
}

#[derive(Template)]
#[template(path = "console/campaign.html")]
struct CampaignPage {
    who: Option<Who>,
    csrf: String,
    id: String,
    name: String,
    description: String,
    state: String,
    state_class: String,
    reason: String,
    plan: bool,
    summary: Summary,
    stages: Vec<StageRow>,
    map: HeatMap,
    scopes: Vec<ScopeLine>,
    failures: Vec<TargetRow>,
    more_failures: bool,
    actions: Vec<ActionView>,
    live_url: Option<String>,
    details: Vec<(String, String)>,
    links: Vec<(String, String)>,
}

/// A scope's line in a plan's table.
pub struct ScopeLine {
    account: String,
    region: String,
    href: String,
    discovery: String,
    managed: u64,
    offline: u64,
    unmanaged: u64,
    would_run: u64,
    error: String,
}

/// A plan's scopes, without those that matched nothing (the map says how
/// many).
fn scope_lines(c: &Campaign) -> Vec<ScopeLine> {
    c.scopes
        .iter()
        .filter(|s| !s.matched_nothing())
        .map(|s| {
            let counters = s.counters.unwrap_or_default();
            ScopeLine {
                href: views::Cell::of(&c.id, s, true).href,
                account: s.account_id.clone(),
                region: s.region.clone(),
                discovery: muster_proto::v1::ScopeState::try_from(s.state)
                    .map(|st| st.as_str_name().trim_start_matches("SCOPE_STATE_").to_lowercase())
                    .unwrap_or_default(),
                managed: s.managed,
                offline: s.offline,
                unmanaged: s.unmanaged,
                would_run: counters.pending,
                error: s.error.clone(),
            }
        })
        .collect()
}

/// Labelled lines: (label, value) or (text, link).
type Lines = Vec<(String, String)>;

fn details(c: &Campaign) -> (Lines, Lines) {
    let spec = c.spec.clone().unwrap_or_default();
    let mut details = vec![
        ("Id".to_owned(), c.id.clone()),
        (
            "Command".to_owned(),
            spec.command.as_ref().map(views::command_words).unwrap_or_default(),
        ),
        ("Targets".to_owned(), views::targets_words(spec.targets.as_ref())),
        ("Submitted by".to_owned(), c.submitted_by.clone()),
        ("Created".to_owned(), when(c.created_at.as_ref())),
        ("Started".to_owned(), when(c.started_at.as_ref())),
        ("Finished".to_owned(), when(c.finished_at.as_ref())),
        ("Spec SHA-256".to_owned(), c.spec_sha256.clone()),
    ];
    if !spec.then.is_empty() {
        details.push(("Then".into(), format!("{} more command(s), in order", spec.then.len())));
    }
    if let Some(words) = c.patch_counters.as_ref().and_then(|p| p.in_words()) {
        details.push(("Patch state".into(), words));
    }
    if let Some(export) = &c.export {
        details.push((
            "Results export".into(),
            if export.url.is_empty() {
                export.error.clone()
            } else {
                export.url.clone()
            },
        ));
    }
    if let Some(approval) = &c.approval {
        let decided = if approval.decided_by.is_empty() && approval.expires_at.is_none() {
            "asked once discovery has ended".to_owned()
        } else if approval.decided_by.is_empty() {
            format!("waiting; expires {}", when(approval.expires_at.as_ref()))
        } else {
            format!(
                "{} by {} at {}",
                if approval.approved { "approved" } else { "rejected" },
                approval.decided_by,
                when(approval.decided_at.as_ref())
            )
        };
        details.push((
            "Approval".into(),
            format!("{} ({}): {decided}", approval.rule, approval.reason),
        ));
    }
    if let Some(window) = &c.window {
        let closes = match &window.closes_at {
            Some(at) => format!("window closes {}", when(Some(at))),
            None => "no window".to_owned(),
        };
        details.push((
            "Schedule".into(),
            format!("{} v{}, {closes}", window.schedule, window.schedule_version),
        ));
    }
    details.retain(|(_, v)| !v.is_empty());
    let mut links = Vec::new();
    if let Some(window) = &c.window {
        links.push((
            format!("Schedule {}", window.schedule),
            format!("/console/schedules/{}", segment(&window.schedule)),
        ));
    }
    let taken_from = c
        .spec
        .as_ref()
        .and_then(|s| s.targets.as_ref()?.from_campaign.as_ref())
        .map(|from| ("Targets from", &from.campaign_id));
    let reruns = (!c.rerun_of.is_empty())
        .then_some(("Reruns", &c.rerun_of))
        .into_iter()
        .chain(taken_from)
        .chain(c.reruns.iter().map(|id| ("Rerun", id)));
    links.extend(reruns.map(|(what, id)| (format!("{what} {id}"), format!("/console/campaigns/{}", segment(id)))));
    (details, links)
}

/// Campaign `id` read to `detail`, as the caller may see it.
async fn get_campaign(console: &Console, caller: &Caller, id: &str, detail: Detail) -> Result<Campaign, PageError> {
    let here = format!("/console/campaigns/{}", segment(id));
    console
        .api
        .read_campaign(&caller.request(()), id, detail)
        .await
        .map_err(|s| PageError::from(s).at(&here))
}

/// A campaign's name as pages show it: its id when it has none.
fn display_name(c: &Campaign) -> String {
    match c.spec.as_ref().map(|s| s.name.as_str()) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => c.id.clone(),
    }
}

/// The failures shown when the page opens (the stream adds later ones).
const FIRST_FAILURES: u32 = 100;

/// One campaign, live while it runs.
pub async fn campaign(
    State(console): State<Console>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let here = format!("/console/campaigns/{}", segment(&id));
    let who = who(&console, &caller, &here).await?;
    let c = get_campaign(&console, &caller, &id, Detail::Full).await?;
    let problems = [
        TargetStatus::Failed,
        TargetStatus::TimedOut,
        TargetStatus::Undeliverable,
        TargetStatus::Error,
    ];
    let failures = console
        .api
        .list_targets(caller.request(ListTargetsRequest {
            campaign_id: id.clone(),
            page_size: FIRST_FAILURES,
            statuses: problems.iter().map(|s| *s as i32).collect(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    let spec = c.spec.clone().unwrap_or_default();
    let (details, links) = details(&c);
    html(&CampaignPage {
        who: Some(who),
        csrf: caller.csrf(),
        name: display_name(&c),
        description: spec.description,
        state: state_word(c.state),
        state_class: state_word(c.state).replace(' ', "-"),
        reason: c.state_reason.clone(),
        plan: c.dry_run,
        summary: Summary::of(&c),
        stages: StageRow::all(&c),
        map: HeatMap::of(&c),
        scopes: if c.dry_run { scope_lines(&c) } else { Vec::new() },
        failures: failures.targets.iter().map(TargetRow::of).collect(),
        more_failures: !failures.next_page_token.is_empty(),
        actions: actions(&c),
        live_url: (!views::is_terminal(c.state)).then(|| format!("{here}/events")),
        details,
        links,
        id,
    })
}

#[derive(Template)]
#[template(path = "console/map.html")]
struct MapFragment {
    map: HeatMap,
}

/// The heat map alone: the live page fetches it when a scope appears that
/// it has no cell for.
pub async fn map(
    State(console): State<Console>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let c = get_campaign(&console, &caller, &id, Detail::Full).await?;
    html(&MapFragment { map: HeatMap::of(&c) })
}

#[derive(Template)]
#[template(path = "console/rollout.html")]
struct RolloutFragment {
    id: String,
    csrf: String,
    plan: bool,
    stages: Vec<StageRow>,
    actions: Vec<ActionView>,
}

/// The live stream of one campaign's page.
pub async fn events(
    State(console): State<Console>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let stream = console
        .api
        .watch_campaign(caller.request(WatchCampaignRequest {
            campaign_id: id.clone(),
            include_targets: true,
        }))
        .await?
        .into_inner();
    // Whether it is a plan: the first message, a snapshot, says.
    let mut plan = false;
    let watched = stream
        .filter_map(move |message| {
            if let Ok(WatchCampaignResponse {
                event: Some(watch_campaign_response::Event::Snapshot(c)),
            }) = &message
            {
                plan = c.dry_run;
            }
            let event = match message {
                Ok(message) => live::event_of(&id, plan, message),
                Err(status) => Some(live::end(status.message())),
            };
            std::future::ready(event.map(Ok::<_, std::convert::Infallible>))
        })
        .chain(futures::stream::once(async { Ok(live::end("the campaign ended")) }));
    Ok(Sse::new(watched).keep_alive(KeepAlive::default()).into_response())
}

/// The rollout panel's stages and actions alone, redrawn by the live page
/// when the state or its reason changes (a stage passed, baked, paused)
/// and now and then as targets finish.
pub async fn rollout_fragment(
    State(console): State<Console>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    // The stages and the state, not every scope: an open page asks for
    // this every few seconds while targets finish.
    let c = get_campaign(&console, &caller, &id, Detail::Stages).await?;
    html(&RolloutFragment {
        csrf: caller.csrf(),
        plan: c.dry_run,
        stages: StageRow::all(&c),
        actions: actions(&c),
        id,
    })
}

/// An action's form.
#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    stage: String,
    #[serde(default)]
    client_token: String,
}

/// Refuses a form posted from another site (its Origin), or from another
/// sign-in or site (its csrf field).
fn check_form(headers: &HeaderMap, uri: &Uri, caller: &Caller, csrf: &str) -> Result<(), PageError> {
    session::same_origin(headers, uri).map_err(|e| PageError::Plain(StatusCode::FORBIDDEN, e))?;
    if csrf != caller.csrf() {
        return Err(PageError::Plain(
            StatusCode::FORBIDDEN,
            "csrf: the form is from another sign-in or another site; reload the page and try again".into(),
        ));
    }
    Ok(())
}

/// Cancel, approve, reject, promote, resume or rerun: the API decides
/// whether this caller may.
pub async fn act(
    State(console): State<Console>,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Result<Response, PageError> {
    check_form(&headers, &uri, &caller, &form.csrf)?;
    let here = format!("/console/campaigns/{}", segment(&id));
    let api = &console.api;
    let (campaign_id, reason, stage) = (id.clone(), form.reason.clone(), form.stage.clone());
    let outcome = match action.as_str() {
        "cancel" => api
            .cancel_campaign(caller.request(CancelCampaignRequest { campaign_id, reason }))
            .await
            .map(|_| here.clone()),
        "approve" => api
            .approve_campaign(caller.request(ApproveCampaignRequest { campaign_id, reason }))
            .await
            .map(|_| here.clone()),
        "reject" => api
            .reject_campaign(caller.request(RejectCampaignRequest { campaign_id, reason }))
            .await
            .map(|_| here.clone()),
        "promote" => api
            .promote_campaign(caller.request(PromoteCampaignRequest {
                campaign_id,
                stage,
                reason,
            }))
            .await
            .map(|_| here.clone()),
        "resume" => api
            .resume_campaign(caller.request(ResumeCampaignRequest {
                campaign_id,
                stage,
                reason,
            }))
            .await
            .map(|_| here.clone()),
        "rerun" => api
            .rerun_campaign(caller.request(RerunCampaignRequest {
                campaign_id,
                client_token: form.client_token.clone(),
                ..Default::default()
            }))
            .await
            .map(|answer| format!("/console/campaigns/{}", segment(&answer.into_inner().campaign_id))),
        other => {
            return Err(PageError::Plain(
                StatusCode::NOT_FOUND,
                format!("action: {other:?} is not one of cancel, approve, reject, promote, resume, rerun"),
            ));
        }
    };
    let to = outcome.map_err(|s| PageError::from(s).at(&here))?;
    Ok(Redirect::to(&to).into_response())
}

// ---- drill down ----

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_filter_names_the_field_when_it_is_wrong() {
        assert!(state_filter("").unwrap().is_empty());
        assert_eq!(state_filter("running").unwrap(), vec![CampaignState::Running as i32]);
        assert!(
            state_filter("active")
                .unwrap()
                .contains(&(CampaignState::Paused as i32))
        );
        assert!(
            !state_filter("active")
                .unwrap()
                .contains(&(CampaignState::Succeeded as i32))
        );
        let Err(PageError::Plain(code, message)) = state_filter("green") else {
            panic!("a wrong state is refused");
        };
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(message.starts_with("state: \"green\""), "{message}");
    }

    #[test]
    fn actions_follow_the_state() {
        let names = |c: &Campaign| actions(c).iter().map(|a| a.name).collect::<Vec<_>>();
        let mut c = Campaign {
            state: CampaignState::Running as i32,
            ..Default::default()
        };
        assert_eq!(names(&c), ["cancel"]);
        c.state = CampaignState::PendingApproval as i32;
        assert_eq!(names(&c), ["approve", "reject", "cancel"]);
        c.state = CampaignState::Cancelling as i32;
        assert!(names(&c).is_empty());
        c.state = CampaignState::CompletedWithErrors as i32;
        c.counters = Some(muster_proto::v1::StatusCounters {
            failed: 2,
            total: 2,
            ..Default::default()
        });
        assert_eq!(names(&c), ["rerun"]);
        c.dry_run = true;
        assert!(names(&c).is_empty(), "a plan is not rerun");
    }

    #[test]
    fn a_patch_run_says_its_patch_state_among_its_details() {
        let mut c = Campaign::default();
        let has = |c: &Campaign| {
            details(c)
                .0
                .into_iter()
                .find(|(k, _)| k == "Patch state")
                .map(|(_, v)| v)
        };
        assert_eq!(has(&c), None);
        c.patch_counters = Some(muster_proto::v1::PatchCounters {
            reported: 3,
            compliant: 2,
            missing_targets: 1,
            missing_patches: 4,
            ..Default::default()
        });
        assert_eq!(has(&c).unwrap(), "2 of 3 instances compliant; 1 with 4 missing patches");
    }

    #[test]
    fn a_campaign_links_the_one_it_took_its_targets_from() {
        let c = Campaign {
            spec: Some(muster_proto::v1::CampaignSpec {
                targets: Some(muster_proto::v1::TargetSelector {
                    from_campaign: Some(muster_proto::v1::CampaignTargets {
                        campaign_id: "0190d3c4-scan".into(),
                        non_compliant: true,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (details, links) = details(&c);
        assert_eq!(
            links,
            [(
                "Targets from 0190d3c4-scan".to_owned(),
                "/console/campaigns/0190d3c4-scan".to_owned()
            )]
        );
        assert!(
            details
                .iter()
                .any(|(_, v)| v == "the targets of 0190d3c4-scan that are non-compliant"),
            "{details:?}"
        );
    }

    #[test]
    fn search_looks_at_id_name_description_and_submitter() {
        let c = Campaign {
            id: "4f1c".into(),
            submitted_by: "alice".into(),
            spec: Some(muster_proto::v1::CampaignSpec {
                name: "Patch Tuesday".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        for q in ["", "4F1", "tuesday", "ALICE"] {
            assert!(matches(&c, q), "{q}");
        }
        assert!(!matches(&c, "bob"));
    }
}
