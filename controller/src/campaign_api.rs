//! CampaignService: what people and their tools call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_proto::v1::campaign_service_server::CampaignService;
use muster_proto::v1::{
    ApproveCampaignRequest, ApproveCampaignResponse, RejectCampaignRequest, RejectCampaignResponse,
};
use muster_proto::v1::{
    Campaign, CampaignSpec, CampaignState, CancelCampaignRequest, CancelCampaignResponse, GetCampaignRequest,
    GetCampaignResponse, GetTargetRequest, GetTargetResponse, ListAuditEventsRequest, ListAuditEventsResponse,
    ListCampaignsRequest, ListCampaignsResponse, ListTargetsRequest, ListTargetsResponse, PlanCampaignRequest,
    PlanCampaignResponse, PromoteCampaignRequest, PromoteCampaignResponse, RerunCampaignRequest, RerunCampaignResponse,
    ResumeCampaignRequest, ResumeCampaignResponse, RoleGrant, ScopeSelector, SubmitCampaignRequest,
    SubmitCampaignResponse, TargetSelector, TargetStatus, WatchCampaignRequest, WatchCampaignResponse, WhoAmIRequest,
    WhoAmIResponse, watch_campaign_response,
};
use prost::Message as _;
use sha2::Digest as _;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::Controller;
use crate::auth::{Auth, Principal};
use crate::expand::{self};
use crate::policy::{Action, Footprint};
use crate::signin::AwsIdentity;
use crate::store::campaigns::{self, CampaignRow, Inserted, NewCampaign};
use crate::store::stages;
use crate::store::targets::{self, TargetFilter};
use crate::store::{Sql, StoreResult};
use crate::validate;

mod paging;
use paging::{CampaignQuery, campaign_query, target_page, within_page_bytes};

/// The service.
#[derive(Clone)]
pub struct CampaignApi {
    ctl: Arc<Controller>,
    auth: Arc<Auth>,
}

impl CampaignApi {
    /// Serves `ctl` to the callers `auth` knows.
    pub fn new(ctl: Arc<Controller>, auth: Arc<Auth>) -> Self {
        Self { ctl, auth }
    }

    /// The caller of `request`, if its roles allow `action` on the campaign
    /// `id` and one of them holds the whole campaign; NOT_FOUND for no
    /// such campaign.
    async fn authorize_on<T>(
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
    async fn sign_in<T>(&self, request: &Request<T>, method: &str) -> Result<Option<AwsIdentity>, Status> {
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
    async fn audit_refusal(&self, principal: &Principal, method: &str, campaign_id: &str, message: &str) {
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
    async fn permit(
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

    /// An operator's decision on the current stage of campaign `id` (a
    /// promote or a resume), made in one write with its audit record.
    async fn decide(
        &self,
        (method, principal): (&str, &Principal),
        id: &str,
        stage: &str,
        reason: &str,
        decide: fn(&dyn Sql, &CampaignRow, &str, &crate::store::audit::Actor, &str) -> StoreResult<stages::Decision>,
    ) -> Result<(), Status> {
        if reason.chars().count() > 1024 {
            return Err(Status::invalid_argument("reason: at most 1024 characters"));
        }
        let reason = if reason.is_empty() { "no reason given" } else { reason }.to_owned();
        let (key, stage_name, actor) = (id.to_owned(), stage.to_owned(), principal.actor());
        let decision = self
            .ctl
            .store
            .write(move |txn| {
                let Some(row) = campaigns::get(txn, &key)? else {
                    return Ok(None);
                };
                decide(txn, &row, &stage_name, &actor, &reason).map(Some)
            })
            .await?;
        match decision {
            None => Err(Status::not_found("no campaign with that id")),
            Some(stages::Decision::Done) => {
                tracing::info!(campaign_id = %id, stage, by = %principal.name, "stage decided");
                self.ctl.wake.notify_one();
                Ok(())
            }
            Some(stages::Decision::AlreadyDone) => Ok(()),
            Some(stages::Decision::UnknownStage) => Err(Status::invalid_argument(format!(
                "stage: the campaign has no stage named '{stage}'"
            ))),
            Some(stages::Decision::Refused(why)) => Err(Status::failed_precondition(why)),
            Some(stages::Decision::NotAllowed(why)) => {
                self.audit_refusal(principal, method, id, &why).await;
                Err(Status::permission_denied(why))
            }
        }
    }

    /// The approval the policy asks of a campaign reaching `footprint`: the
    /// first rule it reaches into; none when no rule names it.
    async fn approval_for(&self, footprint: &Footprint) -> Result<campaigns::ApprovalRow, Status> {
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

    /// Where a stored campaign reaches.
    async fn footprint(&self, id: &str) -> Result<Footprint, Status> {
        let id = id.to_owned();
        self.ctl
            .store
            .read(move |conn| {
                let Some(row) = campaigns::get(conn, &id)? else {
                    return Ok(None);
                };
                footprint_of(conn, &row).map(Some)
            })
            .await?
            .ok_or_else(|| Status::not_found("no campaign with that id"))
    }
}

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
    const SUBMIT: Self = Self {
        method: "SubmitCampaign",
        action: Action::Submit,
        dry_run: false,
        rerun_of: String::new(),
        window: None,
    };
    const PLAN: Self = Self {
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

    fn rerun(of: &str) -> Self {
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
fn rerun_statuses(asked: &[i32]) -> Result<Vec<i32>, Status> {
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
    let mut statuses = Vec::new();
    for (i, status) in asked.iter().enumerate() {
        match TargetStatus::try_from(*status) {
            Ok(s) if s.is_terminal() => statuses.push(*status),
            Ok(s) => {
                return Err(Status::invalid_argument(format!(
                    "statuses[{i}]: {} is not a status a target ends in",
                    s.short_name()
                )));
            }
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "statuses[{i}]: {status} is not a target status"
                )));
            }
        }
    }
    statuses.sort_unstable();
    statuses.dedup();
    Ok(statuses)
}

/// A rerun's name: the one asked for, else the first campaign's with
/// " (rerun)" (once, however many reruns deep), else "rerun of <id>".
fn rerun_name(first: &str, request: &RerunCampaignRequest) -> String {
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
fn rerun_spec(
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

/// Where a stored campaign reaches: what a grant must hold.
fn footprint_of(conn: &dyn Sql, row: &CampaignRow) -> StoreResult<Footprint> {
    let (accounts, regions) = campaigns::reach(conn, &row.id)?;
    Ok(Footprint {
        accounts,
        regions,
        documents: crate::guardrails::documents(&row.spec).into_iter().collect(),
    })
}

fn check_id(field: &str, id: &str) -> Result<(), Status> {
    if uuid::Uuid::parse_str(id).is_ok() && id.len() == 36 {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "{field}: '{}' is not a campaign id (a UUID)",
            muster_common::domain::clip(id)
        )))
    }
}

impl CampaignApi {
    async fn campaign(&self, id: &str, with_scopes: bool) -> Result<Campaign, Status> {
        let id = id.to_owned();
        self.ctl
            .store
            .read(move |conn| {
                let row = campaigns::get(conn, &id)?;
                row.map(|row| campaigns::to_proto(conn, &row, with_scopes)).transpose()
            })
            .await?
            .ok_or_else(|| Status::not_found("no campaign with that id"))
    }

    /// A campaign without its scopes, authorized as GetCampaign is: what a
    /// console page under a campaign needs to name it (GetCampaign would
    /// read every scope).
    pub(crate) async fn campaign_heading(&self, request: Request<GetCampaignRequest>) -> Result<Campaign, Status> {
        let id = request.get_ref().campaign_id.clone();
        self.authorize_on(&request, "GetCampaign", Action::Read, &id).await?;
        self.campaign(&id, false).await
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
        let spec = spec.ok_or_else(|| Status::invalid_argument("spec: is required"))?;
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

    /// Takes the ExternalId out of `spec` before anything is hashed, stored
    /// or logged (it is the controller's secret); refuses one given unless
    /// the configuration allows it.
    fn take_external_id(&self, spec: &mut CampaignSpec, by: &str, dry_run: bool) -> Result<String, Status> {
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
    async fn guardrails(&self, spec: &CampaignSpec, accounts: &[String]) -> Result<(), Status> {
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
    async fn external_id_refs(
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
fn created_or_found(outcome: Inserted) -> Result<(String, bool), Status> {
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

#[tonic::async_trait]
impl CampaignService for CampaignApi {
    async fn submit_campaign(
        &self,
        request: Request<SubmitCampaignRequest>,
    ) -> Result<Response<SubmitCampaignResponse>, Status> {
        let principal = self.authorize(&request, "SubmitCampaign", Action::Submit).await?;
        let (id, created) = self
            .create(request.into_inner().spec, &principal, Creation::SUBMIT)
            .await?;
        let campaign = self.campaign(&id, true).await?;
        Ok(Response::new(SubmitCampaignResponse {
            campaign_id: id,
            created,
            campaign: Some(campaign),
        }))
    }

    async fn plan_campaign(
        &self,
        request: Request<PlanCampaignRequest>,
    ) -> Result<Response<PlanCampaignResponse>, Status> {
        let principal = self.authorize(&request, "PlanCampaign", Action::Plan).await?;
        let request = request.into_inner();
        if request.wait_seconds > 600 {
            return Err(Status::invalid_argument(format!(
                "wait_seconds: {}; at most 600",
                request.wait_seconds
            )));
        }
        let wait = Duration::from_secs(u64::from(if request.wait_seconds == 0 {
            60
        } else {
            request.wait_seconds
        }));
        let (id, _) = self.create(request.spec, &principal, Creation::PLAN).await?;
        let deadline = Instant::now() + wait;
        loop {
            let campaign = self.campaign(&id, true).await?;
            let complete = CampaignState::try_from(campaign.state).is_ok_and(CampaignState::is_terminal);
            if complete || Instant::now() >= deadline {
                return Ok(Response::new(PlanCampaignResponse {
                    campaign_id: id,
                    complete,
                    campaign: Some(campaign),
                }));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn get_campaign(
        &self,
        request: Request<GetCampaignRequest>,
    ) -> Result<Response<GetCampaignResponse>, Status> {
        let id = request.get_ref().campaign_id.clone();
        self.authorize_on(&request, "GetCampaign", Action::Read, &id).await?;
        Ok(Response::new(GetCampaignResponse {
            campaign: Some(self.campaign(&id, true).await?),
        }))
    }

    async fn list_campaigns(
        &self,
        request: Request<ListCampaignsRequest>,
    ) -> Result<Response<ListCampaignsResponse>, Status> {
        let principal = self.authorize(&request, "ListCampaigns", Action::Read).await?;
        let request = request.into_inner();
        let CampaignQuery {
            page_size,
            cursor,
            states,
        } = campaign_query(&request)?;
        let include_plans = request.include_plans;
        // A caller sees only the campaigns its scope holds whole: pages are
        // filled from further rows, reading at most MAX_SCANNED per call (a
        // page may then be short; go on while there is a next token).
        let unlimited = principal
            .grants
            .iter()
            .any(|g| g.role.allows(Action::Read) && g.scope.is_unlimited());
        let members = if unlimited {
            Default::default()
        } else {
            self.ctl
                .ou_members
                .of(
                    &self.ctl.organizations,
                    "policy.grants.ous",
                    &principal.ous(Action::Read),
                )
                .await?
        };
        const MAX_SCANNED: usize = 2_000;
        let (campaigns, next) = self
            .ctl
            .store
            .read(move |conn| {
                let mut campaigns = Vec::with_capacity(page_size);
                let (mut cursor, mut scanned) = (cursor, 0);
                loop {
                    let wanted = page_size - campaigns.len();
                    let (rows, next) = campaigns::list(conn, &states, include_plans, wanted, cursor)?;
                    scanned += rows.len();
                    for row in &rows {
                        if unlimited
                            || principal
                                .permit(Action::Read, &footprint_of(conn, row)?, &members)
                                .is_ok()
                        {
                            campaigns.push(campaigns::to_proto(conn, row, false)?);
                        }
                    }
                    cursor = next;
                    if campaigns.len() == page_size || cursor.is_none() || scanned >= MAX_SCANNED {
                        return Ok((campaigns, cursor));
                    }
                }
            })
            .await?;
        Ok(Response::new(ListCampaignsResponse {
            campaigns,
            next_page_token: next.map(|(ms, id)| format!("{ms}:{id}")).unwrap_or_default(),
        }))
    }

    async fn list_targets(
        &self,
        request: Request<ListTargetsRequest>,
    ) -> Result<Response<ListTargetsResponse>, Status> {
        let action = if request.get_ref().include_output {
            Action::ReadOutput
        } else {
            Action::Read
        };
        let id = request.get_ref().campaign_id.clone();
        self.authorize_on(&request, "ListTargets", action, &id).await?;
        let request = request.into_inner();
        let (page_size, cursor) = target_page(&request)?;
        let filter = TargetFilter {
            statuses: request.statuses,
            accounts: request.account_ids,
            regions: request.regions,
            instances: request.instance_ids,
        };
        let id = request.campaign_id.clone();
        let with_output = request.include_output;
        let follow = request.follow_reruns;
        let (exists, targets, next) = self
            .ctl
            .store
            .read(move |conn| {
                let exists = campaigns::get(conn, &id)?.is_some();
                // A rerun reaches no further than the campaign it reruns,
                // so Read on the first covers the whole chain.
                let (targets, next) = if follow {
                    let chain = campaigns::rerun_chain(conn, &id)?;
                    targets::list_latest(conn, &chain, &filter, page_size, cursor, with_output)?
                } else {
                    targets::list(conn, &id, &filter, page_size, cursor, with_output)?
                };
                Ok((exists, targets, next))
            })
            .await?;
        if !exists {
            return Err(Status::not_found("no campaign with that id"));
        }
        let (targets, next) = within_page_bytes(targets, next);
        Ok(Response::new(ListTargetsResponse {
            targets,
            next_page_token: next.map(|(a, r, i)| format!("{a}:{r}:{i}")).unwrap_or_default(),
        }))
    }

    async fn get_target(&self, request: Request<GetTargetRequest>) -> Result<Response<GetTargetResponse>, Status> {
        let id = request.get_ref().campaign_id.clone();
        self.authorize_on(&request, "GetTarget", Action::ReadOutput, &id)
            .await?;
        let request = request.into_inner();
        let id = request.campaign_id.clone();
        let instance = request.instance_id.clone();
        let mut found = self
            .ctl
            .store
            .read(move |conn| targets::find_instance(conn, &id, &instance))
            .await?;
        found.retain(|t| {
            (request.account_id.is_empty() || t.account_id == request.account_id)
                && (request.region.is_empty() || t.region == request.region)
        });
        match found.len() {
            0 => Err(Status::not_found(format!(
                "instance_id: no target {} in this campaign",
                request.instance_id
            ))),
            1 => Ok(Response::new(GetTargetResponse { target: found.pop() })),
            n => Err(Status::failed_precondition(format!(
                "instance_id: {} is in {n} (account, region) scopes; give account_id and region",
                request.instance_id
            ))),
        }
    }

    type WatchCampaignStream = ReceiverStream<Result<WatchCampaignResponse, Status>>;

    async fn watch_campaign(
        &self,
        request: Request<WatchCampaignRequest>,
    ) -> Result<Response<Self::WatchCampaignStream>, Status> {
        let id = request.get_ref().campaign_id.clone();
        self.authorize_on(&request, "WatchCampaign", Action::Read, &id).await?;
        let request = request.into_inner();
        let id = request.campaign_id.clone();
        // Subscribe before the snapshot, so nothing falls between them.
        let mut subscription = self.ctl.watchers.subscribe(&id, request.include_targets);
        let first = self.campaign(&id, true).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let api = CampaignApi {
            ctl: self.ctl.clone(),
            auth: self.auth.clone(),
        };
        tokio::spawn(async move {
            let snapshot = |c: Campaign| WatchCampaignResponse {
                event: Some(watch_campaign_response::Event::Snapshot(c)),
            };
            let done = CampaignState::try_from(first.state).is_ok_and(CampaignState::is_terminal);
            if tx.send(Ok(snapshot(first))).await.is_err() || done {
                return;
            }
            loop {
                // A watcher that went away ends here, even while only
                // events it does not want arrive.
                let received = tokio::select! {
                    received = subscription.recv() => received,
                    () = tx.closed() => return,
                };
                let event = match received {
                    Ok(event) => event,
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(campaign_id = %id, missed, "watcher fell behind; sending a snapshot");
                        match api.campaign(&id, true).await {
                            Ok(c) => {
                                let done = CampaignState::try_from(c.state).is_ok_and(CampaignState::is_terminal);
                                if tx.send(Ok(snapshot(c))).await.is_err() || done {
                                    return;
                                }
                                continue;
                            }
                            Err(status) => {
                                let _ = tx.send(Err(status)).await;
                                return;
                            }
                        }
                    }
                    Err(RecvError::Closed) => return,
                };
                if matches!(event.event, Some(watch_campaign_response::Event::Target(_))) && !request.include_targets {
                    continue;
                }
                let terminal = matches!(&event.event, Some(watch_campaign_response::Event::State(s))
                    if CampaignState::try_from(s.state).is_ok_and(CampaignState::is_terminal));
                if tx.send(Ok((*event).clone())).await.is_err() {
                    return;
                }
                if terminal {
                    // The last word: the campaign as it ended.
                    if let Ok(c) = api.campaign(&id, true).await {
                        let _ = tx.send(Ok(snapshot(c))).await;
                    }
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn cancel_campaign(
        &self,
        request: Request<CancelCampaignRequest>,
    ) -> Result<Response<CancelCampaignResponse>, Status> {
        let id = request.get_ref().campaign_id.clone();
        let principal = self
            .authorize_on(&request, "CancelCampaign", Action::Cancel, &id)
            .await?;
        let (by, actor) = (principal.name.clone(), principal.actor());
        let request = request.into_inner();
        if request.reason.chars().count() > 1024 {
            return Err(Status::invalid_argument("reason: at most 1024 characters"));
        }
        let id = request.campaign_id.clone();
        let reason = if request.reason.is_empty() {
            "no reason given".to_owned()
        } else {
            request.reason
        };
        let why = reason.clone();
        let found = self
            .ctl
            .store
            .write(move |txn| {
                if campaigns::get(txn, &id)?.is_none() {
                    return Ok(None);
                }
                campaigns::request_cancel(txn, &id, &actor, &why).map(Some)
            })
            .await?;
        match found {
            None => return Err(Status::not_found("no campaign with that id")),
            Some(true) => {
                tracing::info!(campaign_id = %request.campaign_id, by, reason, "campaign cancel requested");
                // Watchers hear CANCELLING from the reconcile loop's feed,
                // which this wakes.
                self.ctl.wake.notify_one();
            }
            Some(false) => {}
        }
        Ok(Response::new(CancelCampaignResponse {
            campaign: Some(self.campaign(&request.campaign_id, true).await?),
        }))
    }

    async fn rerun_campaign(
        &self,
        request: Request<RerunCampaignRequest>,
    ) -> Result<Response<RerunCampaignResponse>, Status> {
        // A role that may submit, which may read the first campaign; the
        // rerun's own targets are checked against Submit as it is made.
        let principal = self.authorize(&request, "RerunCampaign", Action::Submit).await?;
        let id = request.get_ref().campaign_id.clone();
        check_id("campaign_id", &id)?;
        let first = self.footprint(&id).await?;
        self.permit("RerunCampaign", &principal, Action::Read, &first, &id)
            .await?;
        let request = request.into_inner();
        let statuses = rerun_statuses(&request.statuses)?;
        let wanted = statuses.clone();
        let limit = validate::MAX_INSTANCE_IDS;
        let (row, selection, submitted_external_id) = self
            .ctl
            .store
            .read(move |conn| {
                let row = campaigns::get(conn, &id)?;
                let selection = targets::rerun_selection(conn, &id, &wanted, limit)?;
                let external_id = campaigns::submitted_external_id(conn, &id)?;
                Ok((row, selection, external_id))
            })
            .await?;
        let row = row.ok_or_else(|| Status::not_found("no campaign with that id"))?;
        let id = row.id.as_str();
        if row.dry_run {
            return Err(Status::failed_precondition(format!(
                "campaign_id: {id} is a plan and ran nothing; submit its spec instead"
            )));
        }
        if !row.state.is_terminal() {
            return Err(Status::failed_precondition(format!(
                "campaign_id: {id} is {}; a campaign is rerun once it has ended (cancel it to end it now)",
                row.state.short_name()
            )));
        }
        let names = statuses
            .iter()
            .map(|s| TargetStatus::try_from(*s).map_or("?", TargetStatus::short_name))
            .collect::<Vec<_>>()
            .join(",");
        let covered: usize = selection.values().map(|ids| ids.len().max(1)).sum();
        if covered == 0 {
            return Err(Status::failed_precondition(format!(
                "statuses: no target of {id} ended {names}; nothing to rerun"
            )));
        }
        if covered > limit {
            return Err(Status::failed_precondition(format!(
                "statuses: more than {limit} targets of {id} ended {names}, more than one campaign may name; \
                 rerun fewer statuses, or submit the first campaign's spec again"
            )));
        }
        let spec = rerun_spec(&row.spec, selection, &request, submitted_external_id);
        let (new_id, created) = self.create(Some(spec), &principal, Creation::rerun(&row.id)).await?;
        if created {
            tracing::info!(campaign_id = %new_id, rerun_of = %row.id, statuses = names, targets = covered, "rerun stored");
        }
        Ok(Response::new(RerunCampaignResponse {
            campaign: Some(self.campaign(&new_id, true).await?),
            campaign_id: new_id,
            created,
            rerun_targets: covered as u64,
        }))
    }

    async fn promote_campaign(
        &self,
        request: Request<PromoteCampaignRequest>,
    ) -> Result<Response<PromoteCampaignResponse>, Status> {
        let id = request.get_ref().campaign_id.clone();
        let principal = self
            .authorize_on(&request, "PromoteCampaign", Action::Approve, &id)
            .await?;
        let request = request.into_inner();
        if request.stage.is_empty() {
            return Err(Status::invalid_argument("stage: is required (the stage's name)"));
        }
        let method = ("PromoteCampaign", &principal);
        self.decide(method, &id, &request.stage, &request.reason, stages::promote)
            .await?;
        Ok(Response::new(PromoteCampaignResponse {
            campaign: Some(self.campaign(&id, true).await?),
        }))
    }

    async fn resume_campaign(
        &self,
        request: Request<ResumeCampaignRequest>,
    ) -> Result<Response<ResumeCampaignResponse>, Status> {
        let id = request.get_ref().campaign_id.clone();
        let principal = self
            .authorize_on(&request, "ResumeCampaign", Action::Approve, &id)
            .await?;
        let request = request.into_inner();
        if request.stage.is_empty() {
            return Err(Status::invalid_argument("stage: is required (the stage's name)"));
        }
        let method = ("ResumeCampaign", &principal);
        self.decide(method, &id, &request.stage, &request.reason, stages::resume)
            .await?;
        Ok(Response::new(ResumeCampaignResponse {
            campaign: Some(self.campaign(&id, true).await?),
        }))
    }

    async fn approve_campaign(
        &self,
        request: Request<ApproveCampaignRequest>,
    ) -> Result<Response<ApproveCampaignResponse>, Status> {
        let id = request.get_ref().campaign_id.clone();
        let principal = self
            .authorize_on(&request, "ApproveCampaign", Action::Approve, &id)
            .await?;
        let reason = request.into_inner().reason;
        // The decision and the start are one write: an approved campaign
        // never waits for the reconcile loop to begin.
        let approve = |conn: &dyn Sql, row: &CampaignRow, _: &str, actor: &crate::store::audit::Actor, reason: &str| {
            let decision = crate::approvals::approve(conn, row, actor, reason)?;
            if matches!(decision, crate::store::stages::Decision::Done) {
                crate::reconcile::begin(conn, &row.id, &format!("approved by {}: {reason}; ", actor.principal))?;
            }
            Ok(decision)
        };
        self.decide(("ApproveCampaign", &principal), &id, "", &reason, approve)
            .await?;
        Ok(Response::new(ApproveCampaignResponse {
            campaign: Some(self.campaign(&id, true).await?),
        }))
    }

    async fn reject_campaign(
        &self,
        request: Request<RejectCampaignRequest>,
    ) -> Result<Response<RejectCampaignResponse>, Status> {
        let id = request.get_ref().campaign_id.clone();
        let principal = self
            .authorize_on(&request, "RejectCampaign", Action::Approve, &id)
            .await?;
        let reason = request.into_inner().reason;
        if reason.trim().is_empty() {
            return Err(Status::invalid_argument("reason: is required: the submitter reads why"));
        }
        let reject = |conn: &dyn Sql, row: &CampaignRow, _: &str, actor: &crate::store::audit::Actor, reason: &str| {
            crate::approvals::reject(conn, row, actor, reason)
        };
        self.decide(("RejectCampaign", &principal), &id, "", &reason, reject)
            .await?;
        Ok(Response::new(RejectCampaignResponse {
            campaign: Some(self.campaign(&id, true).await?),
        }))
    }

    async fn who_am_i(&self, request: Request<WhoAmIRequest>) -> Result<Response<WhoAmIResponse>, Status> {
        let aws = self.sign_in(&request, "WhoAmI").await?;
        let principal = self
            .auth
            .identify(&request, aws.as_ref())
            .map_err(Status::unauthenticated)?;
        let grants = principal
            .grants
            .iter()
            .map(|g| RoleGrant {
                role: g.role.to_string(),
                accounts: g.scope.accounts.iter().cloned().collect(),
                ous: g.scope.ous.iter().cloned().collect(),
                regions: g.scope.regions.iter().cloned().collect(),
                documents: g.scope.documents.clone(),
            })
            .collect();
        Ok(Response::new(WhoAmIResponse {
            name: principal.name,
            via: principal.via.to_owned(),
            aws_arn: principal.arn.unwrap_or_default(),
            grants,
            peer: principal.peer,
        }))
    }

    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        self.authorize(&request, "ListAuditEvents", Action::Admin).await?;
        let request = request.into_inner();
        let page_size = paging::page_size(request.page_size, 100, 1_000)?;
        let before = if request.page_token.is_empty() {
            None
        } else {
            Some(
                request
                    .page_token
                    .parse::<i64>()
                    .map_err(|_| Status::invalid_argument("page_token: not a token from a previous ListAuditEvents"))?,
            )
        };
        if !request.campaign_id.is_empty() {
            check_id("campaign_id", &request.campaign_id)?;
        }
        if request.principal.chars().count() > 128 {
            return Err(Status::invalid_argument("principal: at most 128 characters"));
        }
        let filter = crate::store::audit::AuditFilter {
            campaign_id: Some(request.campaign_id).filter(|c| !c.is_empty()),
            principal: Some(request.principal).filter(|p| !p.is_empty()),
        };
        let (events, next) = self
            .ctl
            .store
            .read(move |conn| crate::store::audit::list(conn, &filter, page_size, before))
            .await?;
        Ok(Response::new(ListAuditEventsResponse {
            events,
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
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
