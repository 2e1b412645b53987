//! The audit trail, for admins: who submitted, planned, cancelled,
//! approved or was refused what, and when the policy changed; newest first,
//! by campaign or by principal.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use muster_proto::v1::ListAuditEventsRequest;
use muster_proto::v1::campaign_service_server::CampaignService;
use serde::Deserialize;

use super::{Who, html, who};
use crate::console::session::Caller;
use crate::console::views::{segment, when};
use crate::console::{Console, PageError};

/// Events a page shows.
const PAGE_SIZE: u32 = 100;

/// The audit page's filters.
#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    campaign: String,
    #[serde(default)]
    principal: String,
    #[serde(default)]
    page: String,
}

/// One event of the trail.
pub struct EventLine {
    at: String,
    principal: String,
    via: String,
    peer: String,
    action: String,
    /// Refusals stand out; the action is always printed.
    class: &'static str,
    campaign_id: String,
    campaign_href: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    who: Option<Who>,
    csrf: String,
    campaign: String,
    principal: String,
    lines: Vec<EventLine>,
    next_href: Option<String>,
}

fn query_string(campaign: &str, principal: &str, page: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in [("campaign", campaign), ("principal", principal), ("page", page)] {
        if !value.is_empty() {
            query.append_pair(name, value);
        }
    }
    query.finish()
}

/// The audit trail, newest first, of one campaign or one principal if
/// asked.
pub async fn audit(
    State(console): State<Console>,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> Result<Response, PageError> {
    let campaign = query.campaign.trim().to_owned();
    let principal = query.principal.trim().to_owned();
    let here = format!("/console/audit?{}", query_string(&campaign, &principal, &query.page));
    let who = who(&console, &caller, &here).await?;
    let answer = console
        .api
        .list_audit_events(caller.request(ListAuditEventsRequest {
            campaign_id: campaign.clone(),
            principal: principal.clone(),
            page_size: PAGE_SIZE,
            page_token: query.page.clone(),
        }))
        .await
        .map_err(|s| PageError::from(s).at(&here))?
        .into_inner();
    let lines = answer
        .events
        .into_iter()
        .map(|e| EventLine {
            at: when(e.at.as_ref()),
            class: if e.action == "refused" { "failed" } else { "" },
            campaign_href: format!("/console/campaigns/{}", segment(&e.campaign_id)),
            principal: e.principal,
            via: e.via,
            peer: e.peer,
            action: e.action.replace('_', " "),
            campaign_id: e.campaign_id,
            detail: e.detail,
        })
        .collect();
    let next_href = (!answer.next_page_token.is_empty()).then(|| {
        format!(
            "/console/audit?{}",
            query_string(&campaign, &principal, &answer.next_page_token)
        )
    });
    html(&AuditPage {
        who: Some(who),
        csrf: caller.csrf(),
        campaign,
        principal,
        lines,
        next_href,
    })
}
