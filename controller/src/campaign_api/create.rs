//! Making a campaign: checked, expanded, permitted, past the guardrails,
//! and stored once per client token; and what a rerun takes of the first.

use muster_proto::PatchChoice;
use muster_proto::v1::{CampaignSpec, RerunCampaignRequest, ScopeSelector, TargetSelector, TargetStatus};
use prost::Message as _;
use sha2::Digest as _;
use tonic::Status;

use super::CampaignApi;
use crate::auth::Principal;
use crate::expand;
use crate::policy::{Action, Footprint};
use crate::store::campaigns::{self, Inserted, NewCampaign};
use crate::store::targets;
use crate::validate;

/// Why a campaign is being made: the method and action the caller's grant
/// must allow on its footprint, and what it is.
pub(crate) struct Creation {
    method: &'static str,
    action: Action,
    dry_run: bool,
    rerun_of: String,
    window: Option<campaigns::WindowRow>,
}

impl Creation {
    pub(super) const SUBMIT: Self = Self {
        method: "SubmitCampaign",
        action: Action::Submit,
        dry_run: false,
        rerun_of: String::new(),
        window: None,
    };
    pub(super) const PLAN: Self = Self {
        method: "PlanCampaign",
        action: Action::Plan,
        dry_run: true,
        rerun_of: String::new(),
        window: None,
    };

    /// A run of a schedule, with its maintenance window; `method` is the
    /// call the check stands for (PutSchedule, or the scheduler's run).
    pub(crate) fn scheduled(method: &'static str, window: campaigns::WindowRow) -> Self {
        Self {
            method,
            action: Action::Submit,
            dry_run: false,
            rerun_of: String::new(),
            window: Some(window),
        }
    }

    pub(super) fn rerun(of: &str) -> Self {
        Self {
            method: "RerunCampaign",
            action: Action::Submit,
            dry_run: false,
            rerun_of: of.to_owned(),
            window: None,
        }
    }
}

/// The statuses a rerun takes: the request's (terminal ones only), or the
/// failures by default.
pub(super) fn rerun_statuses(asked: &[i32]) -> Result<Vec<i32>, Status> {
    if asked.is_empty() {
        return Ok([
            TargetStatus::Failed,
            TargetStatus::TimedOut,
            TargetStatus::Undeliverable,
            TargetStatus::Error,
        ]
        .map(|s| s as i32)
        .to_vec());
    }
    let errors = validate::end_statuses("statuses", asked);
    if !errors.is_empty() {
        return Err(validate::invalid_argument(&errors, ""));
    }
    let mut statuses = asked.to_vec();
    statuses.sort_unstable();
    statuses.dedup();
    Ok(statuses)
}

/// Refuses a choice by patch state of a campaign that ran no patch
/// document: none of its targets has a patch state, so the choice would be
/// empty for a reason the caller should hear. The refusal names the
/// choice's field after `at` ("targets.from_campaign.", or "").
pub(super) fn check_patch_choice(at: &str, patch: PatchChoice, row: &campaigns::CampaignRow) -> Result<(), Status> {
    let Some(field) = patch.field().filter(|_| !campaigns::runs_patches(&row.spec)) else {
        return Ok(());
    };
    Err(Status::failed_precondition(format!(
        "{at}{field}: {} ran no patch document ({}), so no target of it has a patch state",
        row.id,
        muster_proto::PATCH_DOCUMENTS.join(", ")
    )))
}

/// Why a schedule's campaign may not take an earlier campaign's targets.
pub(crate) const FROM_CAMPAIGN_IN_SCHEDULE: &str = "targets.from_campaign: a schedule's runs choose their targets \
    each time they start, and an ended campaign's stay as they were; target accounts, OUs and regions instead";

/// A rerun's name: the one asked for, else the first campaign's with
/// " (rerun)" (once, however many reruns deep), else "rerun of <id>".
pub(super) fn rerun_name(first: &str, request: &RerunCampaignRequest) -> String {
    const SUFFIX: &str = " (rerun)";
    if !request.name.is_empty() {
        return request.name.clone();
    }
    if first.trim().is_empty() {
        return format!("rerun of {}", request.campaign_id);
    }
    if first.ends_with(SUFFIX) {
        return first.to_owned();
    }
    let mut name: String = first.chars().take(128 - SUFFIX.len()).collect();
    name.push_str(SUFFIX);
    name
}

/// The spec of a rerun: the first campaign's, over exactly `selection`
/// (instances by scope; none for a scope rerun whole), with its tags and
/// platforms kept.
pub(super) fn rerun_spec(
    first: &CampaignSpec,
    selection: std::collections::BTreeMap<(String, String), Vec<String>>,
    request: &RerunCampaignRequest,
    submitted_external_id: String,
) -> CampaignSpec {
    let mut spec = campaigns::shown_spec(first);
    let kept = spec.targets.take().unwrap_or_default();
    spec.targets = Some(TargetSelector {
        tags: kept.tags,
        platforms: kept.platforms,
        scopes: selection
            .into_iter()
            .map(|((account_id, region), instance_ids)| ScopeSelector {
                account_id,
                region,
                instance_ids,
            })
            .collect(),
        ..Default::default()
    });
    spec.name = rerun_name(&first.name, request);
    spec.client_token = request.client_token.clone();
    spec.confirm_large = request.confirm_large;
    if let Some(access) = spec.access.as_mut() {
        access.external_id = submitted_external_id;
    }
    spec
}

impl CampaignApi {
    /// Fills each stage's `ou_account_ids` with the accounts its OUs hold
    /// now: stages are assigned from them once discovery ends.
    async fn resolve_stage_ous(&self, spec: &mut CampaignSpec) -> Result<(), Status> {
        for (i, stage) in spec.stages.iter_mut().enumerate() {
            if stage.ous.is_empty() {
                continue;
            }
            let ous: std::collections::BTreeSet<String> = stage.ous.iter().cloned().collect();
            let members = self
                .ctl
                .ou_members
                .of(&self.ctl.organizations, &format!("stages[{i}].ous"), &ous)
                .await?;
            let accounts: std::collections::BTreeSet<String> = members.into_values().flatten().collect();
            stage.ou_account_ids = accounts.into_iter().collect();
        }
        Ok(())
    }

    /// Validates, expands and stores a campaign (or finds it by client token).
    pub(crate) async fn create(
        &self,
        spec: Option<CampaignSpec>,
        principal: &Principal,
        how: Creation,
    ) -> Result<(String, bool), Status> {
        let new = match self.prepare(spec, principal, how).await? {
            Prepared::Found(earlier) => return created_or_found(earlier),
            Prepared::New(new) => new,
        };
        let (by, sha, dry_run, scopes) = (
            new.submitted_by.clone(),
            new.spec_sha256.clone(),
            new.dry_run,
            new.scopes.len(),
        );
        let inserted = self.ctl.store.write(move |txn| campaigns::insert(txn, &new)).await?;
        if let Inserted::Created(id) = &inserted {
            tracing::info!(campaign_id = %id, by, spec_sha256 = sha, dry_run, scopes, "campaign stored");
            self.ctl.wake.notify_one();
        }
        created_or_found(inserted)
    }

    /// Everything SubmitCampaign checks of a campaign (the spec, the
    /// caller's grants on all it reaches, the guardrails), without storing
    /// it: the campaign to insert, or the one its client token names.
    pub(crate) async fn prepare(
        &self,
        spec: Option<CampaignSpec>,
        principal: &Principal,
        how: Creation,
    ) -> Result<Prepared, Status> {
        let Creation {
            method,
            action,
            dry_run,
            rerun_of,
            window,
        } = how;
        let by = principal.name.clone();
        let spec = spec.ok_or_else(|| validate::refused("spec: is required"))?;
        let mut spec =
            validate::validate(spec, &self.ctl.settings.defaults).map_err(|invalid| invalid.into_status("spec."))?;
        let submitted_external_id = self.take_external_id(&mut spec, &by, dry_run)?;
        let encoded = spec.encode_to_vec();
        let sha = hex::encode(sha2::Sha256::digest(&encoded));
        // A repeated client token is answered before any other work (no
        // Organizations calls, no guardrail that changed since): a client
        // that lost the first answer gets the first campaign, never a second.
        let (token, who, digest) = (spec.client_token.clone(), by.clone(), sha.clone());
        let earlier = self
            .ctl
            .store
            .read(move |conn| campaigns::by_client_token(conn, &who, &token, &digest))
            .await?;
        if let Some(earlier) = earlier {
            return Ok(Prepared::Found(earlier));
        }
        let refused = |status: Status| {
            tracing::warn!(
                by,
                spec_sha256 = sha,
                dry_run,
                reason = status.message(),
                "campaign refused by a guardrail"
            );
            status
        };
        if window.is_some() && spec.targets.as_ref().is_some_and(|t| t.from_campaign.is_some()) {
            return Err(validate::refused(FROM_CAMPAIGN_IN_SCHEDULE));
        }
        self.take_targets(method, principal, &mut spec).await?;
        let expansion = expand::expand(&self.ctl.organizations, &self.ctl.ec2, &spec).await?;
        // The caller's scope must hold all of it.
        let footprint = Footprint {
            accounts: expansion.accounts.iter().cloned().collect(),
            regions: expansion.regions.iter().cloned().collect(),
            documents: crate::guardrails::documents(&spec).into_iter().collect(),
        };
        self.permit(method, principal, action, &footprint, "").await?;
        let approval = self.approval_for(&footprint).await?;
        self.resolve_stage_ous(&mut spec).await?;
        self.guardrails(&spec, &expansion.accounts).await.map_err(refused)?;
        let external_id_refs = self
            .external_id_refs(&expansion.accounts, !submitted_external_id.is_empty())
            .await?;
        Ok(Prepared::New(Box::new(NewCampaign {
            id: uuid::Uuid::now_v7().to_string(),
            submitted_by: by,
            spec,
            spec_sha256: sha,
            dry_run,
            scopes: expansion.scopes(),
            max_attempts: self.ctl.settings.max_attempts,
            external_id_refs,
            submitted_external_id,
            actor: principal.actor(),
            rerun_of,
            approval,
            window: window.unwrap_or_default(),
        })))
    }

    /// Chooses the targets of the campaign `spec.targets.from_campaign`
    /// names (which the caller must be able to read, and which must have
    /// ended) as exact scopes; nothing for any other spec.
    async fn take_targets(&self, method: &str, principal: &Principal, spec: &mut CampaignSpec) -> Result<(), Status> {
        let Some(targets) = spec.targets.as_mut() else {
            return Ok(());
        };
        let Some(from) = targets.from_campaign.clone() else {
            return Ok(());
        };
        const FIELD: &str = "targets.from_campaign";
        let id = from.campaign_id.clone();
        let (row, footprint) = self.with_footprint(&id).await.map_err(|refused| match refused.code() {
            tonic::Code::NotFound => Status::not_found(format!("{FIELD}.campaign_id: no campaign {id}")),
            _ => refused,
        })?;
        self.permit(method, principal, Action::Read, &footprint, &id)
            .await
            .map_err(|refused| Status::new(refused.code(), format!("{FIELD}.campaign_id: {}", refused.message())))?;
        let field = format!("{FIELD}.campaign_id");
        super::access::check_ended(&field, &row, "it has no targets to take", "its targets are taken")?;
        let patch = PatchChoice::of(from.non_compliant, from.critical);
        check_patch_choice(&format!("{FIELD}."), patch, &row)?;
        let limit = validate::MAX_INSTANCE_IDS;
        let (read, statuses) = (id.clone(), from.statuses.clone());
        let selection = self
            .ctl
            .store
            .read(move |conn| {
                let choice = targets::Choice {
                    statuses: &statuses,
                    patch,
                    follow_reruns: from.follow_reruns,
                };
                targets::selection(conn, &read, choice, limit)
            })
            .await?;
        let which = from.in_words();
        let taken: usize = selection.values().map(|ids| ids.len().max(1)).sum();
        if taken == 0 {
            let none = if from.statuses.is_empty() && patch == PatchChoice::Any {
                "no targets".to_owned()
            } else {
                format!("no target that is {which}")
            };
            return Err(Status::failed_precondition(format!(
                "{FIELD}: {id} has {none}; there is nothing to run"
            )));
        }
        if taken > limit {
            return Err(Status::failed_precondition(format!(
                "{FIELD}: {id} has more than {limit} targets that are {which}, more than one campaign may name; \
                 choose fewer (statuses, non_compliant, critical), or target its accounts and regions"
            )));
        }
        tracing::info!(from_campaign = %id, which, targets = taken, "targets taken from an earlier campaign");
        targets.scopes = selection
            .into_iter()
            .map(|((account_id, region), instance_ids)| ScopeSelector {
                account_id,
                region,
                instance_ids,
            })
            .collect();
        Ok(())
    }

    /// Takes the ExternalId out of `spec` before anything is hashed, stored
    /// or logged (it is the controller's secret); refuses one given unless
    /// the configuration allows it.
    pub(super) fn take_external_id(&self, spec: &mut CampaignSpec, by: &str, dry_run: bool) -> Result<String, Status> {
        let submitted = spec
            .access
            .as_mut()
            .map(|access| std::mem::take(&mut access.external_id))
            .unwrap_or_default();
        if !submitted.is_empty() && !self.ctl.settings.external_ids.allow_submitted {
            tracing::warn!(by, dry_run, "campaign refused: it carries an ExternalId");
            return Err(Status::permission_denied(
                "access.external_id: the controller keeps the target accounts' ExternalIds (its [access] \
                 configuration); a submitter may not give one unless access.allow_submitted_external_id is set",
            ));
        }
        Ok(submitted)
    }

    /// The guardrails' verdict on `spec` over `accounts`: its document,
    /// role and rates, and the accounts (and OUs) it may reach.
    pub(super) async fn guardrails(&self, spec: &CampaignSpec, accounts: &[String]) -> Result<(), Status> {
        let rails = &self.ctl.settings.guardrails;
        let first_account = accounts.first().map(String::as_str).unwrap_or("000000000000");
        rails.check_spec(spec, &validate::role_arn(spec, first_account))?;
        if rails.limits_accounts() {
            let mut allowed =
                expand::accounts_in_ous(&self.ctl.organizations, "guardrails.allowed_ous", &rails.allowed_ous).await?;
            allowed.extend(rails.allowed_accounts.iter().cloned());
            rails.check_accounts(accounts, &allowed)?;
        }
        Ok(())
    }

    /// Which ExternalId each account is assumed with: a reference to the
    /// controller's own (by account or OU), or to the submitted one.
    pub(super) async fn external_id_refs(
        &self,
        accounts: &[String],
        submitted: bool,
    ) -> Result<std::collections::BTreeMap<String, String>, Status> {
        if submitted {
            return Ok(accounts
                .iter()
                .map(|account| (account.clone(), crate::access::SUBMITTED_REF.to_owned()))
                .collect());
        }
        let external_ids = &self.ctl.settings.external_ids;
        let members = self
            .ctl
            .ou_members
            .of(&self.ctl.organizations, "access.external_ids", &external_ids.ous())
            .await?;
        Ok(external_ids.refs(accounts, &members))
    }
}

/// A campaign checked and ready to store, or the one its client token
/// already names.
pub(crate) enum Prepared {
    /// Stored before (or its token reused).
    Found(Inserted),
    /// To insert.
    New(Box<NewCampaign>),
}

/// The campaign id of an insert, and whether it is new.
pub(super) fn created_or_found(outcome: Inserted) -> Result<(String, bool), Status> {
    match outcome {
        Inserted::Created(id) => Ok((id, true)),
        Inserted::Existing(id) => Ok((id, false)),
        Inserted::TokenReused(id) => Err(Status::already_exists(format!(
            "spec.client_token: already used by campaign {id} with a different spec; choose a new token for a new campaign"
        ))),
        Inserted::RerunInProgress(id) => Err(Status::failed_precondition(format!(
            "campaign_id: its rerun {id} has not ended; wait for it (or cancel it) before rerunning again, \
             so that no target runs twice"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rerun_is_named_after_the_first_campaign_once() {
        let asked = |name: &str| RerunCampaignRequest {
            campaign_id: "01a2".into(),
            name: name.into(),
            ..Default::default()
        };
        assert_eq!(rerun_name("patch", &asked("")), "patch (rerun)");
        assert_eq!(rerun_name("patch (rerun)", &asked("")), "patch (rerun)");
        assert_eq!(rerun_name("", &asked("")), "rerun of 01a2");
        assert_eq!(rerun_name("patch", &asked("retry")), "retry");
        let long = "x".repeat(128);
        assert_eq!(rerun_name(&long, &asked("")).chars().count(), 128);
    }
}
