//! The schedules: every saved campaign with when it runs next and how its
//! last run went, and one schedule with what it runs and its runs, each
//! leading to the campaign it started.

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use muster_proto::v1::schedule_service_server::ScheduleService;
use muster_proto::v1::{
    GetScheduleRequest, ListSchedulesRequest, PutScheduleRequest, RunOutcome, Schedule, ScheduleRun,
};
use serde::Deserialize;

use super::{Who, check_form, html, who};
use crate::console::session::Caller;
use crate::console::views::{command_words, segment, targets_words, when};
use crate::console::{Console, PageError};

/// Runs one schedule's page shows, newest first.
const RUNS_SHOWN: u32 = 50;

/// A schedule's page.
fn href(name: &str) -> String {
    format!("/console/schedules/{}", segment(name))
}

/// A run, as a line of either page.
pub struct RunLine {
    at: String,
    outcome: &'static str,
    /// Its colour's class; the outcome is always printed next to it.
    class: &'static str,
    /// The campaign it started or resumed, if any.
    campaign_id: String,
    campaign_href: String,
    version: u32,
    reason: String,
}

impl RunLine {
    fn of(run: &ScheduleRun) -> Self {
        let outcome = RunOutcome::try_from(run.outcome).unwrap_or_default();
        Self {
            at: when(run.scheduled_at.as_ref()),
            outcome: outcome.short_name(),
            class: match outcome {
                RunOutcome::Started | RunOutcome::Resumed => "ok",
                RunOutcome::Refused => "failed",
                RunOutcome::Missed | RunOutcome::Skipped | RunOutcome::Paused | RunOutcome::Unspecified => "not-run",
            },
            campaign_id: run.campaign_id.clone(),
            campaign_href: format!("/console/campaigns/{}", segment(&run.campaign_id)),
            version: run.version,
            reason: run.reason.clone(),
        }
    }
}

/// One line of the schedules list.
pub struct ScheduleLine {
    href: String,
    name: String,
    version: u32,
    runs: String,
    window: String,
    next_run: String,
    paused: bool,
    last_run: Option<RunLine>,
    owner: String,
}

#[derive(Template)]
#[template(path = "console/schedules.html")]
struct SchedulesPage {
    who: Option<Who>,
    csrf: String,
    lines: Vec<ScheduleLine>,
}

fn next_run(schedule: &Schedule) -> String {
    match &schedule.next_run_at {
        None => "none".into(),
        Some(at) => when(Some(at)),
    }
}

/// Every schedule, by name.
pub async fn schedules(State(console): State<Console>, caller: Caller) -> Result<Response, PageError> {
    let next = "/console/schedules";
    let who = who(&console, &caller, next).await?;
    let answer = console
        .schedules
        .list_schedules(caller.request(ListSchedulesRequest {}))
        .await
        .map_err(|s| PageError::from(s).at(next))?
        .into_inner();
    let lines = answer
        .schedules
        .iter()
        .map(|s| {
            let spec = s.spec.clone().unwrap_or_default();
            ScheduleLine {
                href: href(&spec.name),
                name: spec.name.clone(),
                version: s.version,
                runs: spec.runs_in_words(when),
                window: spec.window_in_words(),
                next_run: next_run(s),
                paused: spec.paused,
                last_run: s.last_run.as_ref().map(RunLine::of),
                owner: s.created_by.clone(),
            }
        })
        .collect();
    html(&SchedulesPage {
        who: Some(who),
        csrf: caller.csrf(),
        lines,
    })
}

/// One schedule's page's query: a version other than the current one.
#[derive(Debug, Default, Deserialize)]
pub struct ScheduleQuery {
    #[serde(default)]
    version: String,
}

#[derive(Template)]
#[template(path = "console/schedule.html")]
struct SchedulePage {
    who: Option<Who>,
    csrf: String,
    name: String,
    description: String,
    facts: Vec<(String, String)>,
    /// The current version's page, when this is an older one.
    current: Option<(u32, String)>,
    runs: Vec<RunLine>,
    /// The version shown, which a pause or resume replaces.
    version: u32,
    /// Pause or resume (the current version only): its path segment and
    /// its button's text.
    toggle: Option<(&'static str, &'static str)>,
}

/// One schedule (at `?version=N`, an older version), with its newest runs.
pub async fn schedule(
    State(console): State<Console>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<ScheduleQuery>,
) -> Result<Response, PageError> {
    let next = href(&name);
    let who = who(&console, &caller, &next).await?;
    let version = match query.version.as_str() {
        "" => 0,
        text => text.parse::<u32>().map_err(|_| {
            PageError::Plain(
                StatusCode::BAD_REQUEST,
                format!("version: {text:?} is not a schedule version (1, 2, ...)"),
            )
        })?,
    };
    let answer = console
        .schedules
        .get_schedule(caller.request(GetScheduleRequest {
            name: name.clone(),
            version,
            runs: RUNS_SHOWN,
        }))
        .await
        .map_err(|s| PageError::from(s).at(&next))?
        .into_inner();
    let schedule = answer.schedule.unwrap_or_default();
    let spec = schedule.spec.clone().unwrap_or_default();
    let campaign = spec.campaign.clone().unwrap_or_default();
    let mut facts = vec![
        (
            "Version".to_owned(),
            format!(
                "{} by {} at {}",
                schedule.version,
                schedule.created_by,
                when(schedule.created_at.as_ref())
            ),
        ),
        ("Runs".to_owned(), spec.runs_in_words(when)),
        ("Window".to_owned(), spec.window_in_words()),
        ("Next run".to_owned(), next_run(&schedule)),
        (
            "Paused".to_owned(),
            if spec.paused {
                format!(
                    "yes: its run times start nothing until it is resumed (the button above, or `muster schedule resume {}`)",
                    spec.name
                )
            } else {
                String::new()
            },
        ),
        ("Campaign".to_owned(), campaign.name.clone()),
        ("Targets".to_owned(), targets_words(campaign.targets.as_ref())),
        (
            "Command".to_owned(),
            campaign.command.as_ref().map(command_words).unwrap_or_default(),
        ),
    ];
    for then in &campaign.then {
        facts.push(("Then".to_owned(), command_words(then)));
    }
    if !campaign.stages.is_empty() {
        let names: Vec<&str> = campaign.stages.iter().map(|s| s.name.as_str()).collect();
        facts.push(("Stages".to_owned(), names.join(", ")));
    }
    facts.retain(|(_, v)| !v.is_empty());
    let latest = schedule.version == schedule.current_version;
    html(&SchedulePage {
        who: Some(who),
        csrf: caller.csrf(),
        version: schedule.version,
        toggle: latest.then_some(if spec.paused {
            ("resume", "Resume schedule")
        } else {
            ("pause", "Pause schedule")
        }),
        current: (!latest).then(|| (schedule.current_version, href(&spec.name))),
        name: spec.name,
        description: spec.description,
        facts,
        runs: answer.runs.iter().map(RunLine::of).collect(),
    })
}

/// A pause or resume form: the version the page showed.
#[derive(Debug, Default, Deserialize)]
pub struct ToggleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    version: u32,
}

/// Pauses or resumes a schedule: the version the page showed, stored again
/// paused or not as the next version, with the caller as its owner. The API
/// decides whether this caller may (it checks the schedule's campaign as
/// the caller's, as any PutSchedule); a version stored by someone else
/// since the page was drawn is refused, and a second click of the same
/// form stores nothing more.
pub async fn schedule_act(
    State(console): State<Console>,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<ToggleForm>,
) -> Result<Response, PageError> {
    check_form(&headers, &uri, &caller, &form.csrf)?;
    let here = href(&name);
    let paused = match action.as_str() {
        "pause" => true,
        "resume" => false,
        other => {
            return Err(PageError::Plain(
                StatusCode::NOT_FOUND,
                format!("action: {other:?} is not one of pause, resume"),
            ));
        }
    };
    if form.version == 0 {
        return Err(PageError::Plain(
            StatusCode::BAD_REQUEST,
            "version: the form names no schedule version; reload the page and try again".into(),
        ));
    }
    let shown = console
        .schedules
        .get_schedule(caller.request(GetScheduleRequest {
            name: name.clone(),
            version: form.version,
            runs: 1,
        }))
        .await
        .map_err(|s| PageError::from(s).at(&here))?
        .into_inner()
        .schedule
        .unwrap_or_default();
    let mut spec = shown.spec.unwrap_or_default();
    spec.paused = paused;
    console
        .schedules
        .put_schedule(caller.request(PutScheduleRequest {
            spec: Some(spec),
            expected_version: form.version,
        }))
        .await
        .map_err(|s| PageError::from(s).at(&here))?;
    Ok(Redirect::to(&here).into_response())
}
