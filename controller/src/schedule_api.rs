//! The ScheduleService: store, read and delete schedules. A schedule's
//! campaign is checked when it is stored exactly as SubmitCampaign checks
//! one (spec, the caller's grants on all it reaches, the guardrails), and
//! again, as its owner, at every run time (see [`crate::scheduler`]).

use std::sync::Arc;

use muster_proto::v1::schedule_service_server::ScheduleService;
use muster_proto::v1::{
    AfterWindow, DeleteScheduleRequest, DeleteScheduleResponse, GetScheduleRequest, GetScheduleResponse,
    ListSchedulesRequest, ListSchedulesResponse, PutScheduleRequest, PutScheduleResponse, ScheduleSpec, WindowEnd,
};
use tonic::{Request, Response, Status};

use crate::Controller;
use crate::auth::{Auth, Principal};
use crate::campaign_api::{CampaignApi, Creation, FROM_CAMPAIGN_IN_SCHEDULE};
use crate::policy::Action;
use crate::schedules::Trigger;
use crate::store::campaigns::WindowRow;
use crate::store::records::now_ms;
use crate::store::schedules::{self, Owner, Put};

/// Most runs one GetSchedule returns.
const MAX_RUNS: u32 = 500;

/// The service.
pub struct ScheduleApi {
    ctl: Arc<Controller>,
    campaigns: CampaignApi,
}

impl ScheduleApi {
    /// Serves `ctl`'s schedules to the callers `auth` knows.
    pub fn new(ctl: Arc<Controller>, auth: Arc<Auth>) -> Self {
        Self {
            campaigns: CampaignApi::new(ctl.clone(), auth),
            ctl,
        }
    }
}

/// A schedule spec with its defaults filled in (the window's choices
/// spelled out when it has a window), or every error naming its field.
fn validated(spec: Option<ScheduleSpec>, defaults: &crate::validate::Defaults) -> Result<ScheduleSpec, Status> {
    let mut spec = spec.ok_or_else(|| crate::validate::refused("spec: is required"))?;
    let mut errors = crate::schedules::check(&spec, now_ms());
    if let Some(campaign) = spec.campaign.take() {
        match crate::validate::validate(campaign, defaults) {
            Ok(campaign) if campaign.targets.as_ref().is_some_and(|t| t.from_campaign.is_some()) => {
                errors.push(format!("campaign.{FROM_CAMPAIGN_IN_SCHEDULE}"));
            }
            Ok(campaign) => spec.campaign = Some(campaign),
            Err(invalid) => errors.extend(invalid.0.into_iter().map(|e| format!("campaign.{e}"))),
        }
    }
    if !errors.is_empty() {
        return Err(crate::validate::invalid_argument(&errors, "spec."));
    }
    if spec.window_seconds > 0 {
        if spec.on_window_end == WindowEnd::Unspecified as i32 {
            spec.on_window_end = WindowEnd::Finish as i32;
        }
        if spec.after_window == AfterWindow::Unspecified as i32 {
            spec.after_window = AfterWindow::End as i32;
        }
    }
    Ok(spec)
}

fn owner_of(principal: &Principal) -> Owner {
    Owner {
        name: principal.name.clone(),
        via: principal.via.to_owned(),
        arn: principal.arn.clone().unwrap_or_default(),
    }
}

fn check_name(name: &str) -> Result<(), Status> {
    if crate::validate::is_short_name(name) {
        Ok(())
    } else {
        Err(crate::validate::refused(format!(
            "name: '{}' must be {}",
            muster_common::domain::clip(name),
            crate::validate::SHORT_NAME_RULE
        )))
    }
}

#[tonic::async_trait]
impl ScheduleService for ScheduleApi {
    async fn put_schedule(
        &self,
        request: Request<PutScheduleRequest>,
    ) -> Result<Response<PutScheduleResponse>, Status> {
        let principal = self
            .campaigns
            .authorize(&request, "PutSchedule", Action::Submit)
            .await?;
        let PutScheduleRequest { spec, expected_version } = request.into_inner();
        let spec = validated(spec, &self.ctl.settings.defaults)?;
        // The campaign as a run would submit it: refused now, not at 2 am.
        let window = WindowRow {
            schedule: spec.name.clone(),
            ..Default::default()
        };
        self.campaigns
            .prepare(
                spec.campaign.clone(),
                &principal,
                Creation::scheduled("PutSchedule", window),
            )
            .await?;
        let trigger = Trigger::of(&spec).map_err(|e| crate::validate::invalid_argument(&[e], "spec."))?;
        let next = trigger.next_after(now_ms());
        let (owner, actor, stored) = (owner_of(&principal), principal.actor(), spec.clone());
        let put = self
            .ctl
            .store
            .write(move |txn| schedules::put(txn, &stored, i64::from(expected_version), next, (&owner, &actor)))
            .await?;
        let version = match put {
            Put::Stored(version) => version,
            Put::Exists(current) => {
                return Err(Status::already_exists(format!(
                    "name: schedule '{}' exists (version {current}); give expected_version {current} to store a new \
                     version of it",
                    spec.name
                )));
            }
            Put::Conflict(0) => {
                return Err(Status::not_found(format!(
                    "name: there is no schedule '{}' to replace; give expected_version 0 to create it",
                    spec.name
                )));
            }
            Put::Conflict(current) => {
                return Err(Status::failed_precondition(format!(
                    "expected_version: schedule '{}' is at version {current}, not {expected_version}; someone stored \
                     another version first: read it, then put yours with expected_version {current}",
                    spec.name
                )));
            }
        };
        tracing::info!(schedule = %spec.name, version, by = %principal.name, next_run = ?next.map(crate::schedules::shown), "schedule stored");
        let name = spec.name.clone();
        let schedule = self
            .ctl
            .store
            .read(move |conn| {
                let row = schedules::get(conn, &name, version)?;
                row.map(|row| schedules::to_proto(conn, &row)).transpose()
            })
            .await?
            .ok_or_else(|| Status::aborted("the schedule was deleted as it was stored; try again"))?;
        Ok(Response::new(PutScheduleResponse {
            schedule: Some(schedule),
        }))
    }

    async fn get_schedule(
        &self,
        request: Request<GetScheduleRequest>,
    ) -> Result<Response<GetScheduleResponse>, Status> {
        self.campaigns.authorize(&request, "GetSchedule", Action::Read).await?;
        let GetScheduleRequest { name, version, runs } = request.into_inner();
        check_name(&name)?;
        if runs > MAX_RUNS {
            return Err(crate::validate::refused(format!("runs: {runs}; at most {MAX_RUNS}")));
        }
        let limit = if runs == 0 { 20 } else { runs as usize };
        let found = self
            .ctl
            .store
            .read(move |conn| {
                let Some(row) = schedules::get(conn, &name, i64::from(version))? else {
                    return Ok(None);
                };
                Ok(Some((
                    schedules::to_proto(conn, &row)?,
                    schedules::runs(conn, &row.name, limit)?,
                )))
            })
            .await?;
        let (schedule, runs) =
            found.ok_or_else(|| Status::not_found("name: no schedule with that name and version"))?;
        Ok(Response::new(GetScheduleResponse {
            schedule: Some(schedule),
            runs,
        }))
    }

    async fn list_schedules(
        &self,
        request: Request<ListSchedulesRequest>,
    ) -> Result<Response<ListSchedulesResponse>, Status> {
        self.campaigns
            .authorize(&request, "ListSchedules", Action::Read)
            .await?;
        let schedules = self
            .ctl
            .store
            .read(|conn| {
                schedules::list(conn)?
                    .iter()
                    .map(|row| schedules::to_proto(conn, row))
                    .collect()
            })
            .await?;
        Ok(Response::new(ListSchedulesResponse { schedules }))
    }

    async fn delete_schedule(
        &self,
        request: Request<DeleteScheduleRequest>,
    ) -> Result<Response<DeleteScheduleResponse>, Status> {
        let principal = self
            .campaigns
            .authorize(&request, "DeleteSchedule", Action::Submit)
            .await?;
        let DeleteScheduleRequest { name, allow_missing } = request.into_inner();
        check_name(&name)?;
        let gone = || {
            if allow_missing {
                Ok(Response::new(DeleteScheduleResponse::default()))
            } else {
                Err(Status::not_found("name: no schedule with that name"))
            }
        };
        // Deleting stops runs on all the schedule reaches: its owner may,
        // and anyone who may submit its campaign (checked as storing it).
        let lookup = name.clone();
        let Some(row) = self
            .ctl
            .store
            .read(move |conn| schedules::get(conn, &lookup, 0))
            .await?
        else {
            return gone();
        };
        let window = WindowRow {
            schedule: name.clone(),
            ..Default::default()
        };
        if owner_of(&principal) != row.owner {
            self.campaigns
                .prepare(
                    row.spec.campaign.clone(),
                    &principal,
                    Creation::scheduled("DeleteSchedule", window),
                )
                .await?;
        }
        let actor = principal.actor();
        let Some(deleted) = self
            .ctl
            .store
            .write(move |txn| schedules::delete(txn, &name, &actor))
            .await?
        else {
            return gone();
        };
        tracing::info!(schedule = %row.name, by = %principal.name, cancelled = ?deleted, "schedule deleted");
        self.ctl.wake.notify_one();
        Ok(Response::new(DeleteScheduleResponse {
            cancelled_campaign_id: deleted.unwrap_or_default(),
            deleted: true,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_proto::v1::{CampaignSpec, CampaignTargets, Command, Script, TargetSelector, command};

    #[test]
    fn a_schedules_campaign_takes_no_ended_campaigns_targets() {
        let campaign = CampaignSpec {
            targets: Some(TargetSelector {
                from_campaign: Some(CampaignTargets {
                    campaign_id: "0190d3c4-0000-7000-8000-000000000001".into(),
                    non_compliant: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            command: Some(Command {
                kind: Some(command::Kind::Script(Script {
                    linux_lines: vec!["uptime".into()],
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = ScheduleSpec {
            name: "patch".into(),
            campaign: Some(campaign),
            cron: "0 2 * * TUE".into(),
            time_zone: "UTC".into(),
            ..Default::default()
        };
        let defaults = crate::validate::Defaults {
            role_name: "muster-execution".into(),
            api_calls_per_second: 10.0,
        };
        let refused = validated(Some(spec), &defaults).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert_eq!(refused.message(), format!("campaign.{FROM_CAMPAIGN_IN_SCHEDULE}"));
    }
}
