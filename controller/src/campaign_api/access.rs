//! Who may call, and on what: the caller of a request, its grants over a
//! campaign's footprint, the approval the policy asks, and refusals kept in
//! the audit trail.

use tonic::{Request, Status};

use super::CampaignApi;
use crate::auth::Principal;
use crate::policy::{Action, Footprint};
use crate::signin::AwsIdentity;
use crate::store::campaigns::{self, CampaignRow};
use crate::store::{Sql, StoreResult};

impl CampaignApi {
    /// The caller of `request`, if its roles allow `action` on the campaign
    /// `id` and one of them holds the whole campaign; NOT_FOUND for no
    /// such campaign.
    pub(super) async fn authorize_on<T>(
        &self,
        request: &Request<T>,
        method: &str,
        action: Action,
        id: &str,
    ) -> Result<Principal, Status> {
        let principal = self.authorize(request, method, action).await?;
        check_id("campaign_id", id)?;
        let footprint = self.footprint(id).await?;
        self.permit(method, &principal, action, &footprint, id).await?;
        Ok(principal)
    }

    /// The caller of `request`, if one of its roles allows `action`; a known
    /// caller refused goes into the audit trail.
    pub(crate) async fn authorize<T>(
        &self,
        request: &Request<T>,
        method: &str,
        action: Action,
    ) -> Result<Principal, Status> {
        let aws = self.sign_in(request, method).await?;
        let refused = match self.auth.authorize(request, aws.as_ref(), method, action) {
            Ok(principal) => return Ok(principal),
            Err(status) => status,
        };
        if refused.code() == tonic::Code::PermissionDenied
            && let Ok(principal) = self.auth.identify(request, aws.as_ref())
        {
            self.audit_refusal(&principal, method, "", refused.message()).await;
        }
        Err(refused)
    }

    /// The AWS identity that signed the request's sign-in token, verified
    /// (counted, and logged when refused); none without such a token.
    pub(super) async fn sign_in<T>(&self, request: &Request<T>, method: &str) -> Result<Option<AwsIdentity>, Status> {
        let Some((verdict, outcome)) = self.auth.aws_identity(request).await else {
            return Ok(None);
        };
        self.ctl.metrics.signed_in(outcome.as_str());
        match verdict {
            Ok(identity) => Ok(Some(identity)),
            Err(error) => {
                let peer = crate::auth::peer_of(request);
                tracing::warn!(method, peer, reason = %error, "call refused: AWS sign-in failed");
                Err(error.into())
            }
        }
    }

    /// Records a refused call of a known caller (best effort: the refusal
    /// stands either way).
    pub(super) async fn audit_refusal(&self, principal: &Principal, method: &str, campaign_id: &str, message: &str) {
        let actor = principal.actor();
        let campaign_id = campaign_id.to_owned();
        let detail = serde_json::json!({"method": method, "message": message}).to_string();
        let recorded = self
            .ctl
            .store
            .write(move |txn| crate::store::audit::record(txn, &actor, "refused", &campaign_id, &detail))
            .await;
        if let Err(error) = recorded {
            tracing::warn!(%error, "cannot record a refused call in the audit trail");
        }
    }

    /// Whether one of `principal`'s grants that allows `action` holds all of
    /// `footprint`; PERMISSION_DENIED naming its scope when none does.
    pub(super) async fn permit(
        &self,
        method: &str,
        principal: &Principal,
        action: Action,
        footprint: &Footprint,
        campaign_id: &str,
    ) -> Result<(), Status> {
        let members = self
            .ctl
            .ou_members
            .of(&self.ctl.organizations, "policy.grants.ous", &principal.ous(action))
            .await?;
        if let Err(message) = principal.permit(action, footprint, &members) {
            self.audit_refusal(principal, method, campaign_id, &message).await;
            return Err(self.auth.out_of_scope(method, principal, message));
        }
        Ok(())
    }

    /// The approval the policy asks of a campaign reaching `footprint`: the
    /// first rule it reaches into; none when no rule names it.
    pub(super) async fn approval_for(&self, footprint: &Footprint) -> Result<campaigns::ApprovalRow, Status> {
        let rules = self.auth.approval_rules();
        if rules.is_empty() {
            return Ok(Default::default());
        }
        let ous: std::collections::BTreeSet<String> = rules.iter().flat_map(|r| r.scope.ous.iter().cloned()).collect();
        let members = self
            .ctl
            .ou_members
            .of(&self.ctl.organizations, "policy.approvals.ous", &ous)
            .await?;
        Ok(rules
            .into_iter()
            .find_map(|rule| {
                let reason = rule.scope.touches(footprint, &members)?;
                Some(campaigns::ApprovalRow {
                    rule: rule.name,
                    reason,
                    min_targets: i64::try_from(rule.min_targets).unwrap_or(i64::MAX),
                    expires_s: rule.expires_s as i64,
                    ..Default::default()
                })
            })
            .unwrap_or_default())
    }

    /// Where a stored campaign reaches.
    pub(super) async fn footprint(&self, id: &str) -> Result<Footprint, Status> {
        Ok(self.with_footprint(id).await?.1)
    }

    /// A stored campaign and where it reaches, in one read.
    pub(super) async fn with_footprint(&self, id: &str) -> Result<(CampaignRow, Footprint), Status> {
        let id = id.to_owned();
        self.ctl
            .store
            .read(move |conn| {
                let Some(row) = campaigns::get(conn, &id)? else {
                    return Ok(None);
                };
                let footprint = footprint_of(conn, &row)?;
                Ok(Some((row, footprint)))
            })
            .await?
            .ok_or_else(|| Status::not_found("no campaign with that id"))
    }
}

/// Refuses to build on `row` unless it ran and has ended, as a rerun and a
/// campaign taking its targets need: `field` names where its id was given,
/// `plan` says what to do with a plan instead, `ended` what waits for the
/// end ("a campaign is rerun").
pub(super) fn check_ended(field: &str, row: &CampaignRow, plan: &str, ended: &str) -> Result<(), Status> {
    let id = &row.id;
    if row.dry_run {
        return Err(Status::failed_precondition(format!(
            "{field}: {id} is a plan and ran nothing; {plan}"
        )));
    }
    if !row.state.is_terminal() {
        return Err(Status::failed_precondition(format!(
            "{field}: {id} is {}; {ended} once it has ended (cancel it to end it now)",
            row.state.short_name()
        )));
    }
    Ok(())
}

/// Where a stored campaign reaches: what a grant must hold.
pub(super) fn footprint_of(conn: &dyn Sql, row: &CampaignRow) -> StoreResult<Footprint> {
    let (accounts, regions) = campaigns::reach(conn, &row.id)?;
    Ok(Footprint {
        accounts,
        regions,
        documents: crate::guardrails::documents(&row.spec).into_iter().collect(),
    })
}

pub(super) fn check_id(field: &str, id: &str) -> Result<(), Status> {
    if uuid::Uuid::parse_str(id).is_ok() && id.len() == 36 {
        Ok(())
    } else {
        Err(crate::validate::refused(format!(
            "{field}: '{}' is not a campaign id (a UUID)",
            muster_common::domain::clip(id)
        )))
    }
}
