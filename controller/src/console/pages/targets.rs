//! A scope's targets and one target's output: the pages under a campaign,
//! whose crumbs lead back to it by name.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use muster_proto::PatchChoice;
use muster_proto::v1::campaign_service_server::CampaignService;
use muster_proto::v1::{GetTargetRequest, ListTargetsRequest, TargetStatus};
use serde::Deserialize;

use super::{Who, display_name, html, who};
use crate::console::session::Caller;
use crate::console::views::{self, TargetRow, segment, when};
use crate::console::{Console, PageError};
use crate::store::campaigns::{self, Detail};

/// The crumb of a page under campaign `id`: its name ("Plan: " before a
/// plan's).
async fn campaign_crumb(console: &Console, caller: &Caller, id: &str) -> Result<String, tonic::Status> {
    Ok(campaign_of_page(console, caller, id).await?.0)
}

/// The crumb of a page under campaign `id`, and whether it runs a patch
/// document (so that its targets may be chosen by patch state).
async fn campaign_of_page(console: &Console, caller: &Caller, id: &str) -> Result<(String, bool), tonic::Status> {
    let c = console
        .api
        .read_campaign(&caller.request(()), id, Detail::Summary)
        .await?;
    let name = display_name(&c);
    let patch_run = c.spec.as_ref().is_some_and(campaigns::runs_patches);
    Ok((if c.dry_run { format!("Plan: {name}") } else { name }, patch_run))
}

/// The scope page's choices by patch state, as its query names them.
const PATCH_CHOICES: [(&str, PatchChoice); 3] = [
    ("", PatchChoice::Any),
    ("non-compliant", PatchChoice::NonCompliant),
    ("critical", PatchChoice::Critical),
];

/// A scope's targets' filters.
#[derive(Debug, Default, Deserialize)]
pub struct ScopeQuery {
    #[serde(default)]
    status: String,
    /// "", "non-compliant" or "critical" (see [`PATCH_CHOICES`]).
    #[serde(default)]
    patches: String,
    #[serde(default)]
    page: String,
}

#[derive(Template)]
#[template(path = "console/scope.html")]
struct ScopePage {
    who: Option<Who>,
    csrf: String,
    campaign_href: String,
    /// The campaign's name, for the crumb that leads back to it.
    campaign_name: String,
    account: String,
    region: String,
    status: String,
    statuses: Vec<String>,
    /// The campaign runs a patch document: its targets may be chosen by
    /// patch state.
    patch_run: bool,
    /// The choice by patch state, as the query names it.
    patches: String,
    /// Some target reports a patch state: the table has a column for it.
    patched: bool,
    rows: Vec<TargetRow>,
    next_href: Option<String>,
}

/// The targets of one (account, region).
pub async fn scope(
    State(console): State<Console>,
    caller: Caller,
    Path((id, account, region)): Path<(String, String, String)>,
    Query(query): Query<ScopeQuery>,
) -> Result<Response, PageError> {
    let campaign_href = format!("/console/campaigns/{}", segment(&id));
    let here = format!("{campaign_href}/scopes/{}/{}", segment(&account), segment(&region));
    let who = who(&console, &caller, &here).await?;
    let statuses = if query.status.is_empty() {
        Vec::new()
    } else {
        let status = TargetStatus::from_short_name(&query.status.replace(' ', "_")).ok_or_else(|| {
            PageError::Plain(
                StatusCode::BAD_REQUEST,
                format!(
                    "status: {:?} is not a target status (e.g. failed, success)",
                    query.status
                ),
            )
        })?;
        vec![status as i32]
    };
    let patch = PATCH_CHOICES
        .iter()
        .find(|(name, _)| *name == query.patches)
        .map(|(_, choice)| *choice)
        .ok_or_else(|| {
            PageError::Plain(
                StatusCode::BAD_REQUEST,
                format!(
                    "patches: {:?} is not a choice by patch state (non-compliant, critical, or empty for any)",
                    query.patches
                ),
            )
        })?;
    let targets = console.api.list_targets(caller.request(ListTargetsRequest {
        campaign_id: id.clone(),
        page_size: 500,
        page_token: query.page.clone(),
        statuses,
        account_ids: vec![account.clone()],
        regions: vec![region.clone()],
        non_compliant: patch == PatchChoice::NonCompliant,
        critical: patch == PatchChoice::Critical,
        ..Default::default()
    }));
    let ((campaign_name, patch_run), answer) = tokio::try_join!(campaign_of_page(&console, &caller, &id), targets)
        .map_err(|s| PageError::from(s).at(&here))?;
    let answer = answer.into_inner();
    let next_href = (!answer.next_page_token.is_empty()).then(|| {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("status", &query.status)
            .append_pair("patches", &query.patches)
            .append_pair("page", &answer.next_page_token)
            .finish();
        format!("{here}?{q}")
    });
    html(&ScopePage {
        who: Some(who),
        csrf: caller.csrf(),
        campaign_href,
        campaign_name,
        account,
        region,
        status: query.status,
        patch_run,
        patches: query.patches,
        statuses: muster_proto::ALL_TARGET_STATUSES
            .iter()
            .map(|s| s.short_name().replace('_', " "))
            .collect(),
        patched: answer.targets.iter().any(|t| t.patch_state.is_some()),
        rows: answer.targets.iter().map(TargetRow::of).collect(),
        next_href,
    })
}

/// One step's output as the target page shows it.
pub struct StepView {
    name: String,
    status: String,
    exit_code: String,
    stdout: String,
    stderr: String,
    stdout_truncated: bool,
    stderr_truncated: bool,
    stdout_url: String,
    stderr_url: String,
    stdout_link: Option<String>,
    stderr_link: Option<String>,
}

#[derive(Template)]
#[template(path = "console/target.html")]
struct TargetPage {
    who: Option<Who>,
    csrf: String,
    campaign_href: String,
    /// The campaign's name, for the crumb that leads back to it.
    campaign_name: String,
    scope_href: String,
    row: TargetRow,
    facts: Vec<(String, String)>,
    steps: Vec<StepView>,
}

/// One target: its status, why, and each step's output.
pub async fn target(
    State(console): State<Console>,
    caller: Caller,
    Path((id, account, region, instance)): Path<(String, String, String, String)>,
) -> Result<Response, PageError> {
    let campaign_href = format!("/console/campaigns/{}", segment(&id));
    let scope_href = format!("{campaign_href}/scopes/{}/{}", segment(&account), segment(&region));
    let here = format!(
        "{campaign_href}/targets/{}/{}/{}",
        segment(&account),
        segment(&region),
        segment(&instance)
    );
    let who = who(&console, &caller, &here).await?;
    let (campaign_name, t) = tokio::try_join!(
        campaign_crumb(&console, &caller, &id),
        fetch_target(&console, &caller, (&id, &account, &region, &instance))
    )
    .map_err(|s| PageError::from(s).at(&here))?;
    let t = t.ok_or_else(|| {
        PageError::Plain(
            StatusCode::NOT_FOUND,
            format!("instance: no target {instance} in {account} {region}"),
        )
    })?;
    let facts = target_facts(&t);
    let steps = t.steps.iter().map(|s| StepView::of(s, &t.region)).collect();
    html(&TargetPage {
        who: Some(who),
        csrf: caller.csrf(),
        campaign_href,
        campaign_name,
        scope_href,
        row: TargetRow::of(&t),
        facts,
        steps,
    })
}

/// The target the page is about, with its output. The ERROR target of a
/// scope that could not be discovered has no instance id (`-` in the
/// address): it is the scope's only target.
async fn fetch_target(
    console: &Console,
    caller: &Caller,
    (id, account, region, instance): (&str, &str, &str, &str),
) -> Result<Option<muster_proto::v1::Target>, tonic::Status> {
    if instance == "-" {
        let page = console
            .api
            .list_targets(caller.request(ListTargetsRequest {
                campaign_id: id.to_owned(),
                page_size: 1,
                account_ids: vec![account.to_owned()],
                regions: vec![region.to_owned()],
                include_output: true,
                ..Default::default()
            }))
            .await?;
        Ok(page.into_inner().targets.into_iter().next())
    } else {
        let answer = console
            .api
            .get_target(caller.request(GetTargetRequest {
                campaign_id: id.to_owned(),
                instance_id: instance.to_owned(),
                account_id: account.to_owned(),
                region: region.to_owned(),
            }))
            .await?;
        Ok(answer.into_inner().target)
    }
}

/// The target's facts that have a value, in the page's order.
fn target_facts(t: &muster_proto::v1::Target) -> Vec<(String, String)> {
    [
        ("Status", views::status_word(t.status)),
        ("Reason", t.reason.clone()),
        ("Exit code", t.exit_code.map(|c| c.to_string()).unwrap_or_default()),
        ("SSM status details", t.ssm_status_details.clone()),
        ("Command id", t.command_id.clone()),
        ("Document", t.document_name.clone()),
        ("Stage", t.stage.clone()),
        (
            "Patch state",
            t.patch_state.as_ref().map(|p| p.in_full()).unwrap_or_default(),
        ),
        ("Sent", when(t.dispatched_at.as_ref())),
        ("Started", when(t.started_at.as_ref())),
        ("Finished", when(t.finished_at.as_ref())),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

impl StepView {
    /// One step's output, with links to its full copy in `region`.
    fn of(s: &muster_proto::v1::StepOutput, region: &str) -> Self {
        StepView {
            name: s.name.clone(),
            status: s.status.clone(),
            exit_code: s.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            stdout: s.stdout.clone(),
            stderr: s.stderr.clone(),
            stdout_truncated: s.stdout_truncated,
            stderr_truncated: s.stderr_truncated,
            stdout_link: views::output_link(&s.stdout_url, region),
            stderr_link: views::output_link(&s.stderr_url, region),
            stdout_url: s.stdout_url.clone(),
            stderr_url: s.stderr_url.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use muster_proto::v1::{PatchState, Target};

    use super::*;

    fn page(targets: &[Target]) -> String {
        ScopePage {
            who: None,
            csrf: String::new(),
            campaign_href: "/console/campaigns/c1".into(),
            campaign_name: "patch".into(),
            account: "111111111111".into(),
            region: "us-east-1".into(),
            status: String::new(),
            statuses: Vec::new(),
            patch_run: targets.iter().any(|t| t.patch_state.is_some()),
            patches: "critical".into(),
            patched: targets.iter().any(|t| t.patch_state.is_some()),
            rows: targets.iter().map(TargetRow::of).collect(),
            next_href: None,
        }
        .render()
        .expect("the scope page renders")
    }

    #[test]
    fn a_scope_of_a_patch_run_shows_each_targets_patch_state_and_others_have_no_such_column() {
        let target = |id: &str, patch_state: Option<PatchState>| Target {
            campaign_id: "c1".into(),
            account_id: "111111111111".into(),
            region: "us-east-1".into(),
            instance_id: id.into(),
            status: TargetStatus::Success as i32,
            patch_state,
            ..Default::default()
        };
        let behind = PatchState {
            operation: "Scan".into(),
            missing: 3,
            ..Default::default()
        };
        let patched = page(&[
            target("i-1", Some(behind)),
            target("i-2", Some(PatchState::default())),
            target("i-3", None),
        ]);
        assert!(patched.contains(r#"<th scope="col">Patches</th>"#), "{patched}");
        assert_eq!(patched.matches(r#"<td class="patches">"#).count(), 3);
        assert!(patched.contains(r#"<td class="patches">3 missing</td>"#), "{patched}");
        assert!(patched.contains(r#"<td class="patches">compliant</td>"#), "{patched}");
        assert!(
            patched.contains(r#"<option value="critical" selected>critical</option>"#),
            "a patch run's targets are chosen by patch state: {patched}"
        );
        let plain = page(&[target("i-1", None)]);
        assert!(!plain.contains("Patches") && !plain.contains("patches"), "{plain}");
    }
}
