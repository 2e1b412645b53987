//! Waves in the store: each target's stage (`targets.stage`), assigned once
//! discovery has ended, and where the campaign's current stage is
//! (`campaigns.stage_index`, `stage_phase`, `stage_until_ms`,
//! `stage_errors_accepted`).

use std::collections::BTreeMap;

use crate::store::sql::{Sql, params};
use muster_proto::v1::{StagePhase, StageStatus, StatusCounters, TargetStatus, TimeoutKind};

use super::StoreResult;
use super::campaigns::{CampaignRow, status_counters};
use super::records::timestamp;

/// The stage of targets that never run: not eligible at discovery, or in
/// no stage.
pub const NO_STAGE: i64 = -1;

/// Gives every PENDING target of `campaign` its stage (as
/// [`crate::waves::assign`] decides), the others [`NO_STAGE`]; returns how
/// many targets each stage took and how many no stage took (still PENDING,
/// with stage [`NO_STAGE`], for the caller to end).
pub fn assign(conn: &dyn Sql, campaign: &CampaignRow) -> StoreResult<(Vec<u64>, u64)> {
    let mut stmt = conn.prepare_cached(
        "SELECT account_id, region, instance_id, tags FROM targets WHERE campaign_id = ?1 AND pending
         ORDER BY account_id, region, instance_id",
    )?;
    let rows = stmt
        .query_map(params![campaign.id], |r| {
            Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get::<_, String>(3)?))
        })?
        .collect::<StoreResult<Vec<(crate::waves::Key, String)>>>()?;
    let tags: Vec<crate::waves::Tags> = rows
        .iter()
        .map(|(_, json)| serde_json::from_str(json).unwrap_or_default())
        .collect();
    let keys: Vec<crate::waves::Key> = rows.into_iter().map(|(key, _)| key).collect();
    conn.prepare_cached("UPDATE targets SET stage = ?2 WHERE campaign_id = ?1")?
        .execute(params![campaign.id, NO_STAGE])?;
    let assigned = crate::waves::assign(&campaign.spec.stages, &keys, &tags);
    let mut sizes = vec![0_u64; campaign.spec.stages.len()];
    let mut left_out = 0;
    let mut update = conn.prepare_cached(
        "UPDATE targets SET stage = ?5 WHERE campaign_id = ?1 AND account_id = ?2 AND region = ?3 AND instance_id = ?4",
    )?;
    for ((account, region, instance), stage) in keys.iter().zip(assigned) {
        match stage {
            Some(index) => {
                sizes[index] += 1;
                update.execute(params![campaign.id, account, region, instance, index as i64])?;
            }
            None => left_out += 1,
        }
    }
    Ok((sizes, left_out))
}

/// Where the current stage is now.
pub fn set_phase(
    conn: &dyn Sql,
    campaign_id: &str,
    index: usize,
    phase: StagePhase,
    until_ms: Option<i64>,
    errors_accepted: u64,
) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE campaigns SET stage_index = ?2, stage_phase = ?3, stage_until_ms = ?4, stage_errors_accepted = ?5
         WHERE id = ?1",
    )?
    .execute(params![
        campaign_id,
        index as i64,
        phase as i32,
        until_ms,
        errors_accepted as i64
    ])?;
    Ok(())
}

/// One stage's targets by status, and its errors as SSM counts them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageCounts {
    /// Targets by status.
    pub counters: StatusCounters,
    /// FAILED targets and execution timeouts.
    pub errors: u64,
}

/// Each stage's counts (stages that have no target are absent).
pub fn counts(conn: &dyn Sql, campaign_id: &str) -> StoreResult<BTreeMap<i64, StageCounts>> {
    let mut stmt = conn.prepare_cached(
        "SELECT stage, status, timeout_kind, COUNT(*) FROM targets WHERE campaign_id = ?1 AND stage >= 0
         GROUP BY stage, status, timeout_kind",
    )?;
    let mut raw: BTreeMap<i64, Vec<(i32, i64)>> = BTreeMap::new();
    let mut errors: BTreeMap<i64, u64> = BTreeMap::new();
    let rows = stmt.query_map([campaign_id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i32>(1)?,
            r.get::<_, i32>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for row in rows {
        let (stage, status, timeout, count) = row?;
        raw.entry(stage).or_default().push((status, count));
        let status = TargetStatus::try_from(status).unwrap_or(TargetStatus::Unspecified);
        let timeout = TimeoutKind::try_from(timeout).unwrap_or(TimeoutKind::Unspecified);
        if status.counts_as_error(timeout) {
            *errors.entry(stage).or_default() += count.max(0) as u64;
        }
    }
    Ok(raw
        .into_iter()
        .map(|(stage, counts)| {
            let counts = StageCounts {
                counters: status_counters(counts),
                errors: errors.get(&stage).copied().unwrap_or(0),
            };
            (stage, counts)
        })
        .collect())
}

/// The API's view of each stage of `campaign` (none before its stages were
/// assigned).
pub fn statuses(conn: &dyn Sql, campaign: &CampaignRow) -> StoreResult<Vec<StageStatus>> {
    if campaign.spec.stages.is_empty() || campaign.stage_phase == StagePhase::Unspecified {
        return Ok(Vec::new());
    }
    let counts = counts(conn, &campaign.id)?;
    let current = campaign.stage_index.max(0) as usize;
    let ended = campaign.state.is_terminal();
    Ok(campaign
        .spec
        .stages
        .iter()
        .enumerate()
        .map(|(index, stage)| {
            let counts = counts.get(&(index as i64)).cloned().unwrap_or_default();
            let (concurrency, threshold) = crate::waves::limits(&campaign.spec, stage, counts.counters.total);
            let phase = match index.cmp(&current) {
                std::cmp::Ordering::Less => StagePhase::Passed,
                std::cmp::Ordering::Equal => campaign.stage_phase,
                std::cmp::Ordering::Greater if ended => StagePhase::NotRun,
                std::cmp::Ordering::Greater => StagePhase::Waiting,
            };
            let accepted = if index == current {
                campaign.stage_errors_accepted.max(0) as u64
            } else {
                0
            };
            StageStatus {
                name: stage.name.clone(),
                phase: phase as i32,
                counters: Some(counts.counters),
                errors: counts.errors.saturating_sub(accepted),
                error_threshold: threshold,
                concurrency_limit: concurrency,
                bake_until: (phase == StagePhase::Baking)
                    .then_some(campaign.stage_until_ms)
                    .flatten()
                    .map(timestamp),
            }
        })
        .collect())
}

/// Starts stage `index` of `campaign` (RUNNING, its limits recorded on the
/// campaign), or ends the campaign's waves when there is none: then the
/// caller finishes it. Returns the reason it recorded.
pub fn start(conn: &dyn Sql, campaign: &CampaignRow, index: usize, why: &str) -> StoreResult<Option<String>> {
    let Some(stage) = campaign.spec.stages.get(index) else {
        return Ok(None);
    };
    let size = counts(conn, &campaign.id)?
        .get(&(index as i64))
        .map_or(0, |c| c.counters.total);
    let (concurrency, threshold) = crate::waves::limits(&campaign.spec, stage, size);
    set_phase(conn, &campaign.id, index, StagePhase::Running, None, 0)?;
    conn.prepare_cached("UPDATE campaigns SET concurrency_limit = ?2, error_threshold = ?3 WHERE id = ?1")?
        .execute(params![campaign.id, concurrency as i64, threshold.map(|t| t as i64)])?;
    let limit = threshold.map_or("no max_errors".to_owned(), |t| format!("max_errors {t}"));
    let reason = format!(
        "{why}stage {} of {} '{}' started: {size} targets, at most {concurrency} at once, {limit}",
        index + 1,
        campaign.spec.stages.len(),
        stage.name
    );
    super::campaigns::set_state(conn, &campaign.id, muster_proto::v1::CampaignState::Running, &reason)?;
    Ok(Some(reason))
}

/// What an operator's promote or resume did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Done now.
    Done,
    /// Already done before (asked again): nothing changed.
    AlreadyDone,
    /// Not possible: why, for FAILED_PRECONDITION.
    Refused(String),
    /// Not this caller: why, for PERMISSION_DENIED.
    NotAllowed(String),
    /// No stage of that name.
    UnknownStage,
}

/// Where `stage` stands against the campaign's current stage.
fn position(campaign: &CampaignRow, stage: &str) -> Option<std::cmp::Ordering> {
    let index = campaign.spec.stages.iter().position(|s| s.name == stage)?;
    Some(index.cmp(&(campaign.stage_index.max(0) as usize)))
}

/// Promotes `stage`, the current one, AWAITING_PROMOTION: the next stage
/// starts. Recorded in the audit trail.
pub fn promote(
    conn: &dyn Sql,
    campaign: &CampaignRow,
    stage: &str,
    actor: &super::audit::Actor,
    reason: &str,
) -> StoreResult<Decision> {
    use muster_proto::v1::CampaignState;
    let Some(position) = position(campaign, stage) else {
        return Ok(Decision::UnknownStage);
    };
    let awaiting = campaign.state == CampaignState::AwaitingPromotion;
    match position {
        std::cmp::Ordering::Less => return Ok(Decision::AlreadyDone),
        std::cmp::Ordering::Greater => {
            return Ok(Decision::Refused(format!(
                "stage '{stage}' has not run yet; only the stage that ended and awaits promotion can be promoted"
            )));
        }
        std::cmp::Ordering::Equal if !awaiting => {
            return Ok(Decision::Refused(format!(
                "stage '{stage}' is not awaiting promotion: the campaign is {}",
                campaign.state.short_name()
            )));
        }
        std::cmp::Ordering::Equal => {}
    }
    super::audit::record(
        conn,
        actor,
        "promoted",
        &campaign.id,
        &serde_json::json!({"stage": stage, "reason": reason}).to_string(),
    )?;
    let index = campaign.stage_index.max(0) as usize;
    set_phase(conn, &campaign.id, index, StagePhase::Passed, None, 0)?;
    let why = format!("stage '{stage}' promoted by {}: {reason}; ", actor.principal);
    if start(conn, campaign, index + 1, &why)?.is_none() {
        return Ok(Decision::Refused("the last stage has no stage after it".into()));
    }
    Ok(Decision::Done)
}

/// Resumes `stage`, the current one, PAUSED on its errors: the errors so
/// far are accepted and its max_errors counts from here. Recorded in the
/// audit trail.
pub fn resume(
    conn: &dyn Sql,
    campaign: &CampaignRow,
    stage: &str,
    actor: &super::audit::Actor,
    reason: &str,
) -> StoreResult<Decision> {
    use muster_proto::v1::CampaignState;
    let Some(position) = position(campaign, stage) else {
        return Ok(Decision::UnknownStage);
    };
    let paused = campaign.state == CampaignState::Paused;
    match position {
        std::cmp::Ordering::Less => return Ok(Decision::AlreadyDone),
        std::cmp::Ordering::Equal if paused => {}
        std::cmp::Ordering::Equal if campaign.stage_phase == StagePhase::Running && !campaign.state.is_terminal() => {
            return Ok(Decision::AlreadyDone);
        }
        _ => {
            return Ok(Decision::Refused(format!(
                "stage '{stage}' is not paused: the campaign is {}",
                campaign.state.short_name()
            )));
        }
    }
    let index = campaign.stage_index.max(0) as usize;
    let errors = counts(conn, &campaign.id)?.get(&(index as i64)).map_or(0, |c| c.errors);
    super::audit::record(
        conn,
        actor,
        "resumed",
        &campaign.id,
        &serde_json::json!({"stage": stage, "reason": reason, "errors_accepted": errors}).to_string(),
    )?;
    set_phase(conn, &campaign.id, index, StagePhase::Running, None, errors)?;
    super::campaigns::set_state(
        conn,
        &campaign.id,
        CampaignState::Running,
        &format!(
            "stage '{stage}' resumed by {} past {errors} error{}: {reason}",
            actor.principal,
            if errors == 1 { "" } else { "s" }
        ),
    )?;
    Ok(Decision::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::audit::Actor;
    use crate::store::campaigns::{self, NewCampaign};
    use crate::store::targets;
    use crate::store::testing::store_matrix;
    use muster_proto::v1::{CampaignState, Stage, StageGate};

    fn staged(conn: &dyn Sql) -> CampaignRow {
        let mut new = NewCampaign::for_test("c", 3);
        new.spec.stages = vec![
            Stage {
                name: "canary".into(),
                share: "1".into(),
                max_errors: "0".into(),
                gate: StageGate::Manual as i32,
                ..Default::default()
            },
            Stage {
                name: "rest".into(),
                ..Default::default()
            },
        ];
        campaigns::insert(conn, &new).unwrap();
        for (n, status) in [
            (1, TargetStatus::Pending),
            (2, TargetStatus::Pending),
            (3, TargetStatus::Skipped),
        ] {
            conn.execute(
                "INSERT INTO targets (campaign_id, account_id, region, instance_id, status) VALUES ('c', '111111111111', 'us-east-1', ?1, ?2)",
                params![format!("i-{n}"), status as i32],
            )
            .unwrap();
        }
        campaigns::get(conn, "c").unwrap().unwrap()
    }

    fn actor() -> Actor {
        Actor {
            principal: "alice".into(),
            ..Default::default()
        }
    }

    store_matrix! {
        fn stages_are_assigned_started_promoted_and_resumed_once(conn) {
            let campaign = staged(&conn);
            assert_eq!(assign(&conn, &campaign).unwrap(), (vec![1, 1], 0));
            let pending = targets::pending_by_scope(&conn, "c", Some(0), targets::Window::ALL).unwrap();
            assert_eq!(pending[0].2, 1, "the canary's one target");
            assert_eq!(targets::pending_by_scope(&conn, "c", None, targets::Window::ALL).unwrap()[0].2, 2);
            let reason = start(&conn, &campaign, 0, "").unwrap().unwrap();
            assert!(reason.starts_with("stage 1 of 2 'canary' started: 1 targets, at most 50 at once, max_errors 0"), "{reason}");
            let campaign = campaigns::get(&conn, "c").unwrap().unwrap();
            let shown = statuses(&conn, &campaign).unwrap();
            assert_eq!(shown.len(), 2);
            assert_eq!((shown[0].phase, shown[1].phase), (StagePhase::Running as i32, StagePhase::Waiting as i32));
            assert_eq!(shown[0].counters.unwrap().total, 1, "the skipped target is in no stage");

            // The canary's target fails: one error; the campaign pauses.
            conn.execute("UPDATE targets SET status = ?1 WHERE campaign_id = 'c' AND stage = 0", params![TargetStatus::Failed as i32]).unwrap();
            assert_eq!(counts(&conn, "c").unwrap()[&0].errors, 1);
            set_phase(&conn, "c", 0, StagePhase::Paused, None, 0).unwrap();
            campaigns::set_state(&conn, "c", CampaignState::Paused, "paused").unwrap();
            let campaign = campaigns::get(&conn, "c").unwrap().unwrap();
            assert_eq!(promote(&conn, &campaign, "canary", &actor(), "x").unwrap(), Decision::Refused("stage 'canary' is not awaiting promotion: the campaign is paused".into()));
            assert_eq!(resume(&conn, &campaign, "nope", &actor(), "x").unwrap(), Decision::UnknownStage);
            assert_eq!(resume(&conn, &campaign, "canary", &actor(), "known").unwrap(), Decision::Done);
            let campaign = campaigns::get(&conn, "c").unwrap().unwrap();
            assert_eq!((campaign.state, campaign.stage_errors_accepted), (CampaignState::Running, 1));
            assert_eq!(statuses(&conn, &campaign).unwrap()[0].errors, 0, "accepted errors no longer count");
            assert_eq!(resume(&conn, &campaign, "canary", &actor(), "again").unwrap(), Decision::AlreadyDone);

            set_phase(&conn, "c", 0, StagePhase::AwaitingPromotion, None, 1).unwrap();
            campaigns::set_state(&conn, "c", CampaignState::AwaitingPromotion, "waiting").unwrap();
            let campaign = campaigns::get(&conn, "c").unwrap().unwrap();
            assert_eq!(promote(&conn, &campaign, "canary", &actor(), "fine").unwrap(), Decision::Done);
            let campaign = campaigns::get(&conn, "c").unwrap().unwrap();
            assert_eq!((campaign.state, campaign.stage_index, campaign.stage_phase), (CampaignState::Running, 1, StagePhase::Running));
            assert!(campaign.state_reason.starts_with("stage 'canary' promoted by alice: fine; stage 2 of 2 'rest' started"), "{}", campaign.state_reason);
            assert_eq!(promote(&conn, &campaign, "canary", &actor(), "again").unwrap(), Decision::AlreadyDone);
            assert!(matches!(promote(&conn, &campaign, "rest", &actor(), "x").unwrap(), Decision::Refused(_)));
            let audit: i64 = conn
                .query_row("SELECT COUNT(*) FROM audit WHERE campaign_id = 'c' AND action IN ('promoted', 'resumed')", (), |r| r.get(0))
                .unwrap();
            assert_eq!(audit, 2, "one record per decision made");
        }

        fn a_campaign_is_read_to_the_detail_asked(conn) {
            use campaigns::Detail;
            let campaign = staged(&conn);
            assign(&conn, &campaign).unwrap();
            start(&conn, &campaign, 0, "").unwrap();
            let campaign = campaigns::get(&conn, "c").unwrap().unwrap();
            let read = |detail| campaigns::to_proto(&conn, &campaign, detail).unwrap();
            let (summary, stages, full) = (read(Detail::Summary), read(Detail::Stages), read(Detail::Full));
            assert_eq!(full.scopes.len(), 1);
            assert_eq!(full.stages.len(), 2);
            assert_eq!(stages.stages, full.stages, "the rollout's redraw sees the stages GetCampaign shows");
            assert!(stages.scopes.is_empty() && summary.scopes.is_empty() && summary.stages.is_empty());
            assert_eq!((summary.counters, stages.counters), (full.counters, full.counters), "counters at every detail");
        }
    }
}
