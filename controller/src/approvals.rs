//! Approvals: a campaign that a policy rule names (recorded when it was
//! submitted, see [`crate::policy::ApprovalRule`]) waits after discovery in
//! PENDING_APPROVAL, so that the approver sees what it would run on, until a
//! principal with the approve action other than its submitter approves it,
//! someone rejects it, or the request expires. Every decision is one write
//! with its audit record.

use muster_proto::v1::{CampaignState, TargetStatus};

use crate::store::audit::Actor;
use crate::store::campaigns::{self, CampaignRow};
use crate::store::sql::Sql;
use crate::store::stages::Decision;
use crate::store::{StoreResult, targets};

/// Whether `campaign`, with `eligible` targets, must wait for an approval.
pub fn needed(campaign: &CampaignRow, eligible: u64) -> bool {
    let approval = &campaign.approval;
    !approval.rule.is_empty()
        && approval.decided_by.is_empty()
        && eligible > 0
        && eligible >= approval.min_targets.max(0) as u64
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Moves a discovered campaign to PENDING_APPROVAL until its rule's
/// expiry.
pub fn request(conn: &dyn Sql, campaign: &CampaignRow, now_ms: i64) -> StoreResult<Option<(CampaignState, String)>> {
    let approval = &campaign.approval;
    let deadline = now_ms + approval.expires_s.max(1) * 1000;
    let reason = format!(
        "waits for an approval under policy rule '{}' (it reaches {}): an approver other than {} approves it \
         (muster approve {}) or rejects it, by {}",
        approval.rule,
        approval.reason,
        campaign.submitted_by,
        campaign.id,
        rfc3339(deadline)
    );
    campaigns::request_approval(conn, campaign, deadline, &reason)?;
    Ok(Some((CampaignState::PendingApproval, reason)))
}

/// Ends a campaign whose approval request expired undecided: FAILED, its
/// targets TERMINATED.
pub fn expire(conn: &dyn Sql, campaign: &CampaignRow, now_ms: i64) -> StoreResult<Option<(CampaignState, String)>> {
    let Some(deadline) = campaign.approval.deadline_ms else {
        return Ok(None);
    };
    if now_ms < deadline {
        return Ok(None);
    }
    let reason = format!(
        "the approval under policy rule '{}' was not given by {}",
        campaign.approval.rule,
        rfc3339(deadline)
    );
    targets::end_pending(
        conn,
        &campaign.id,
        TargetStatus::Terminated,
        &format!("not run: {reason}"),
    )?;
    campaigns::set_state(conn, &campaign.id, CampaignState::Failed, &reason)?;
    Ok(Some((CampaignState::Failed, reason)))
}

/// What an approver's decision did, or why it was not taken.
fn decided_before(campaign: &CampaignRow, approving: bool) -> Option<Decision> {
    let approval = &campaign.approval;
    if approval.decided_by.is_empty() {
        return (campaign.state != CampaignState::PendingApproval).then(|| {
            Decision::Refused(format!(
                "the campaign is {}; only a campaign pending approval is approved or rejected",
                campaign.state.short_name()
            ))
        });
    }
    Some(if approval.approved == approving {
        Decision::AlreadyDone
    } else {
        Decision::Refused(format!(
            "already {} by {}",
            if approval.approved { "approved" } else { "rejected" },
            approval.decided_by
        ))
    })
}

/// Approves `campaign`; on [`Decision::Done`] the caller starts it
/// (`reconcile::begin`) in the same write. Its submitter may not approve it.
pub fn approve(conn: &dyn Sql, campaign: &CampaignRow, actor: &Actor, reason: &str) -> StoreResult<Decision> {
    if let Some(decision) = decided_before(campaign, true) {
        return Ok(decision);
    }
    if actor.principal == campaign.submitted_by {
        return Ok(Decision::NotAllowed(format!(
            "approval: {} submitted this campaign; another approver must approve it",
            actor.principal
        )));
    }
    crate::store::audit::record(
        conn,
        actor,
        "approved",
        &campaign.id,
        &serde_json::json!({"rule": campaign.approval.rule, "reason": reason}).to_string(),
    )?;
    campaigns::decide_approval(conn, &campaign.id, &actor.principal, true)?;
    Ok(Decision::Done)
}

/// Rejects `campaign`: it ends CANCELLED and runs nothing.
pub fn reject(conn: &dyn Sql, campaign: &CampaignRow, actor: &Actor, reason: &str) -> StoreResult<Decision> {
    if let Some(decision) = decided_before(campaign, false) {
        return Ok(decision);
    }
    crate::store::audit::record(
        conn,
        actor,
        "rejected",
        &campaign.id,
        &serde_json::json!({"rule": campaign.approval.rule, "reason": reason}).to_string(),
    )?;
    campaigns::decide_approval(conn, &campaign.id, &actor.principal, false)?;
    let why = format!("approval rejected by {}: {reason}", actor.principal);
    targets::end_pending(conn, &campaign.id, TargetStatus::Cancelled, &format!("not run: {why}"))?;
    campaigns::set_state(conn, &campaign.id, CampaignState::Cancelled, &why)?;
    Ok(Decision::Done)
}
