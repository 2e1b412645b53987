//! CampaignService: what people and their tools call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_proto::PatchChoice;
use muster_proto::v1::campaign_service_server::CampaignService;
use muster_proto::v1::{
    ApproveCampaignRequest, ApproveCampaignResponse, RejectCampaignRequest, RejectCampaignResponse,
};
use muster_proto::v1::{
    Campaign, CampaignState, CampaignView, CancelCampaignRequest, CancelCampaignResponse, GetCampaignRequest,
    GetCampaignResponse, GetTargetRequest, GetTargetResponse, ListAuditEventsRequest, ListAuditEventsResponse,
    ListCampaignsRequest, ListCampaignsResponse, ListTargetsRequest, ListTargetsResponse, PlanCampaignRequest,
    PlanCampaignResponse, PromoteCampaignRequest, PromoteCampaignResponse, RerunCampaignRequest, RerunCampaignResponse,
    ResumeCampaignRequest, ResumeCampaignResponse, RoleGrant, SubmitCampaignRequest, SubmitCampaignResponse,
    TargetStatus, WatchCampaignRequest, WatchCampaignResponse, WhoAmIRequest, WhoAmIResponse, watch_campaign_response,
};
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::Controller;
use crate::auth::{Auth, Principal};
use crate::policy::Action;
use crate::store::campaigns::{self, CampaignRow, Detail};
use crate::store::stages;
use crate::store::targets::{self, TargetFilter};
use crate::store::{Sql, StoreResult};
use crate::validate;

mod access;
mod create;
mod paging;
use access::{check_id, footprint_of};
pub(crate) use create::{Creation, FROM_CAMPAIGN_IN_SCHEDULE};
use create::{check_patch_choice, rerun_spec, rerun_statuses};
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
            return Err(validate::refused("reason: at most 1024 characters"));
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
            Some(stages::Decision::UnknownStage) => Err(validate::refused(format!(
                "stage: the campaign has no stage named '{stage}'"
            ))),
            Some(stages::Decision::Refused(why)) => Err(Status::failed_precondition(why)),
            Some(stages::Decision::NotAllowed(why)) => {
                self.audit_refusal(principal, method, id, &why).await;
                Err(Status::permission_denied(why))
            }
        }
    }
}

impl CampaignApi {
    async fn campaign(&self, id: &str, detail: Detail) -> Result<Campaign, Status> {
        let id = id.to_owned();
        self.ctl
            .store
            .read(move |conn| {
                let row = campaigns::get(conn, &id)?;
                row.map(|row| campaigns::to_proto(conn, &row, detail)).transpose()
            })
            .await?
            .ok_or_else(|| Status::not_found("no campaign with that id"))
    }

    /// Campaign `id` read to `detail`, authorized as GetCampaign: GetCampaign
    /// itself reads it whole; console pages read less (a redraw of the
    /// stages needs no scopes).
    pub(crate) async fn read_campaign<T>(
        &self,
        request: &Request<T>,
        id: &str,
        detail: Detail,
    ) -> Result<Campaign, Status> {
        self.authorize_on(request, "GetCampaign", Action::Read, id).await?;
        self.campaign(id, detail).await
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
        let campaign = self.campaign(&id, Detail::Full).await?;
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
            return Err(validate::refused(format!(
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
            let campaign = self.campaign(&id, Detail::Full).await?;
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
        let detail = match CampaignView::try_from(request.get_ref().view) {
            Ok(CampaignView::Basic) => Detail::Stages,
            Ok(CampaignView::Full | CampaignView::Unspecified) => Detail::Full,
            Err(_) => {
                return Err(validate::refused(format!(
                    "view: {} is not a campaign view (CAMPAIGN_VIEW_BASIC or CAMPAIGN_VIEW_FULL)",
                    request.get_ref().view
                )));
            }
        };
        let id = &request.get_ref().campaign_id;
        Ok(Response::new(GetCampaignResponse {
            campaign: Some(self.read_campaign(&request, id, detail).await?),
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
                            campaigns.push(campaigns::to_proto(conn, row, Detail::Summary)?);
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
        let patch = PatchChoice::of(request.non_compliant, request.critical);
        let filter = TargetFilter {
            statuses: request.statuses,
            accounts: request.account_ids,
            regions: request.regions,
            instances: request.instance_ids,
            patch,
        };
        let id = request.campaign_id.clone();
        let with_output = request.include_output;
        let follow = request.follow_reruns;
        let (targets, next) = self
            .ctl
            .store
            .read(move |conn| {
                let Some(row) = campaigns::get(conn, &id)? else {
                    return Ok(Err(Status::not_found("no campaign with that id")));
                };
                if let Err(refused) = check_patch_choice("", patch, &row) {
                    return Ok(Err(refused));
                }
                // A rerun reaches no further than the campaign it reruns,
                // so Read on the first covers the whole chain.
                let (targets, next) = if follow {
                    let chain = campaigns::rerun_chain(conn, &id)?;
                    targets::list_latest(conn, &chain, &filter, page_size, cursor, with_output)?
                } else {
                    targets::list(conn, &id, &filter, page_size, cursor, with_output)?
                };
                Ok(Ok((targets, next)))
            })
            .await??;
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
        let first = self.campaign(&id, Detail::Full).await?;
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
                        match api.campaign(&id, Detail::Full).await {
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
                    if let Ok(c) = api.campaign(&id, Detail::Full).await {
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
            return Err(validate::refused("reason: at most 1024 characters"));
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
                // which this wakes. (Workers waiting in AwaitCommands heard
                // it at the commit: the cancel told the store's wake-up.)
                self.ctl.wake.notify_one();
            }
            Some(false) => {}
        }
        Ok(Response::new(CancelCampaignResponse {
            campaign: Some(self.campaign(&request.campaign_id, Detail::Full).await?),
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
        let request = request.into_inner();
        let statuses = rerun_statuses(&request.statuses)?;
        let (row, first) = self.with_footprint(&id).await?;
        self.permit("RerunCampaign", &principal, Action::Read, &first, &id)
            .await?;
        access::check_ended("campaign_id", &row, "submit its spec instead", "a campaign is rerun")?;
        let wanted = statuses.clone();
        let limit = validate::MAX_INSTANCE_IDS;
        let (selection, submitted_external_id) = self
            .ctl
            .store
            .read(move |conn| {
                let selection = targets::selection(
                    conn,
                    &id,
                    targets::Choice {
                        statuses: &wanted,
                        ..Default::default()
                    },
                    limit,
                )?;
                let external_id = campaigns::submitted_external_id(conn, &id)?;
                Ok((selection, external_id))
            })
            .await?;
        let id = row.id.as_str();
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
            campaign: Some(self.campaign(&new_id, Detail::Full).await?),
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
            return Err(validate::refused("stage: is required (the stage's name)"));
        }
        let method = ("PromoteCampaign", &principal);
        self.decide(method, &id, &request.stage, &request.reason, stages::promote)
            .await?;
        Ok(Response::new(PromoteCampaignResponse {
            campaign: Some(self.campaign(&id, Detail::Full).await?),
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
            return Err(validate::refused("stage: is required (the stage's name)"));
        }
        let method = ("ResumeCampaign", &principal);
        self.decide(method, &id, &request.stage, &request.reason, stages::resume)
            .await?;
        Ok(Response::new(ResumeCampaignResponse {
            campaign: Some(self.campaign(&id, Detail::Full).await?),
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
            campaign: Some(self.campaign(&id, Detail::Full).await?),
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
            return Err(validate::refused("reason: is required: the submitter reads why"));
        }
        let reject = |conn: &dyn Sql, row: &CampaignRow, _: &str, actor: &crate::store::audit::Actor, reason: &str| {
            crate::approvals::reject(conn, row, actor, reason)
        };
        self.decide(("RejectCampaign", &principal), &id, "", &reason, reject)
            .await?;
        Ok(Response::new(RejectCampaignResponse {
            campaign: Some(self.campaign(&id, Detail::Full).await?),
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
                    .map_err(|_| validate::refused("page_token: not a token from a previous ListAuditEvents"))?,
            )
        };
        if !request.campaign_id.is_empty() {
            check_id("campaign_id", &request.campaign_id)?;
        }
        if request.principal.chars().count() > 128 {
            return Err(validate::refused("principal: at most 128 characters"));
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
