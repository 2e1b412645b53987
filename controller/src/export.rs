//! Results export: when a campaign ends, every target goes to the results
//! bucket as JSON Lines (gzip), one record per target, under a partitioned
//! prefix that the Athena table in `deploy/athena/` reads:
//! `campaigns/dt=YYYY-MM-DD/campaign=<id>/targets.jsonl.gz`. Its audit trail
//! (who submitted, cancelled, was refused) goes next to it, under its own
//! prefix so the targets table never reads it:
//! `audit/dt=YYYY-MM-DD/campaign=<id>/audit.jsonl.gz`.

use std::io::Write as _;
use std::time::{Duration, Instant};

use crate::store::sql::params;
use flate2::Compression;
use flate2::write::GzEncoder;
use muster_proto::v1::{CampaignState, Target, TargetStatus, TimeoutKind};
use serde_json::{Value, json};

use crate::Controller;
use crate::store::campaigns::{self, CampaignRow};
use crate::store::leadership::Fence;
use crate::store::records::now_ms;
use crate::store::{StoreResult, targets};

/// Wait before retrying a failed export.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Targets read per page while exporting.
const PAGE: usize = 5_000;

/// The object key of a campaign's export.
pub fn key(campaign: &CampaignRow) -> String {
    format!("campaigns/{}/targets.jsonl.gz", partition(campaign))
}

/// The object key of a campaign's audit trail.
pub fn audit_key(campaign: &CampaignRow) -> String {
    format!("audit/{}/audit.jsonl.gz", partition(campaign))
}

fn partition(campaign: &CampaignRow) -> String {
    let finished = campaign.finished_ms.unwrap_or(campaign.created_ms);
    let date = chrono::DateTime::from_timestamp_millis(finished)
        .unwrap_or_default()
        .format("%Y-%m-%d");
    format!("dt={date}/campaign={}", campaign.id)
}

/// The audit trail of a campaign as gzip JSON Lines, oldest first.
async fn audit_body(ctl: &Controller, campaign: &CampaignRow) -> StoreResult<Vec<u8>> {
    let id = campaign.id.clone();
    let events = ctl
        .store
        .read(move |conn| crate::store::audit::of_campaign(conn, &id))
        .await?;
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    for event in events {
        let line = json!({
            "id": event.id,
            "at": rfc3339(&event.at),
            "principal": event.principal,
            "via": event.via,
            "peer": event.peer,
            "action": event.action,
            "campaign_id": event.campaign_id,
            "detail": event.detail,
        });
        writeln!(encoder, "{line}").map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))?;
    }
    encoder
        .finish()
        .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))
}

fn rfc3339(ts: &Option<prost_types::Timestamp>) -> Value {
    ts.as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map_or(Value::Null, |t| {
            json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        })
}

/// One JSON Lines record.
pub fn record(campaign: &CampaignRow, target: &Target) -> Value {
    let first = target.steps.first();
    json!({
        "campaign_id": campaign.id,
        "campaign_name": campaign.spec.name,
        "labels": campaign.spec.labels,
        "account_id": target.account_id,
        "region": target.region,
        "instance_id": target.instance_id,
        "name": target.name,
        "platform": targets::platform_name(target.platform),
        "status": TargetStatus::try_from(target.status).unwrap_or(TargetStatus::Unspecified).short_name(),
        "timeout_kind": match TimeoutKind::try_from(target.timeout_kind).unwrap_or(TimeoutKind::Unspecified) {
            TimeoutKind::Delivery => "delivery",
            TimeoutKind::Execution => "execution",
            TimeoutKind::Unspecified => "",
        },
        "exit_code": target.exit_code,
        "reason": target.reason,
        "command_id": target.command_id,
        "document_name": target.document_name,
        "ssm_status_details": target.ssm_status_details,
        "dispatched_at": rfc3339(&target.dispatched_at),
        "started_at": rfc3339(&target.started_at),
        "finished_at": rfc3339(&target.finished_at),
        "stdout": first.map(|s| s.stdout.as_str()).unwrap_or_default(),
        "stderr": first.map(|s| s.stderr.as_str()).unwrap_or_default(),
        "stdout_url": first.map(|s| s.stdout_url.as_str()).unwrap_or_default(),
        "stderr_url": first.map(|s| s.stderr_url.as_str()).unwrap_or_default(),
        "steps": target.steps.iter().map(|s| json!({
            "name": s.name,
            "status": s.status,
            "exit_code": s.exit_code,
            "stdout": s.stdout,
            "stderr": s.stderr,
            "stdout_truncated": s.stdout_truncated,
            "stderr_truncated": s.stderr_truncated,
            "stdout_url": s.stdout_url,
            "stderr_url": s.stderr_url,
        })).collect::<Vec<_>>(),
        "rerun_of": campaign.rerun_of,
        "stage": target.stage,
        "patch_state": target.patch_state.as_ref().map(|p| json!({
            "operation": p.operation,
            "operation_end_time": rfc3339(&p.operation_end_time),
            "installed": p.installed,
            "installed_other": p.installed_other,
            "installed_pending_reboot": p.installed_pending_reboot,
            "installed_rejected": p.installed_rejected,
            "missing": p.missing,
            "failed": p.failed,
            "not_applicable": p.not_applicable,
            "critical_non_compliant": p.critical_non_compliant,
            "security_non_compliant": p.security_non_compliant,
            "reboot_option": p.reboot_option,
            "baseline_id": p.baseline_id,
            "patch_group": p.patch_group,
        })),
    })
}

/// Builds the gzip JSON Lines body of a campaign.
pub async fn body(ctl: &Controller, campaign: &CampaignRow) -> StoreResult<(Vec<u8>, usize)> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    let mut cursor = None;
    let mut count = 0;
    loop {
        let id = campaign.id.clone();
        let after = cursor.clone();
        let (page, next) = ctl.store.read(move |conn| targets::all(conn, &id, after, PAGE)).await?;
        for target in &page {
            let mut line = record(campaign, target).to_string();
            line.push('\n');
            encoder
                .write_all(line.as_bytes())
                .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))?;
            count += 1;
        }
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let bytes = encoder
        .finish()
        .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))?;
    Ok((bytes, count))
}

/// Exports campaigns that ended and have not been exported yet.
pub async fn export_finished(ctl: &Controller, fence: &Fence) {
    let Some(bucket) = ctl.settings.results_bucket.clone() else {
        return;
    };
    let due = ctl
        .store
        .read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id FROM campaigns WHERE dry_run = 0 AND export_url = '' AND state IN (?1, ?2, ?3, ?4) ORDER BY finished_ms LIMIT 10",
            )?;
            let ids = stmt
                .query_map(
                    params![
                        CampaignState::Succeeded as i32,
                        CampaignState::CompletedWithErrors as i32,
                        CampaignState::Failed as i32,
                        CampaignState::Cancelled as i32
                    ],
                    |r| r.get::<_, String>(0),
                )?
                .collect::<StoreResult<Vec<_>>>()?;
            ids.into_iter()
                .map(|id| campaigns::get(conn, &id))
                .filter_map(|r| r.transpose())
                .collect::<StoreResult<Vec<_>>>()
        })
        .await;
    let Ok(due) = due else { return };
    for campaign in due {
        {
            let mut attempts = ctl.export_attempts.lock().expect("export attempts lock");
            if attempts.get(&campaign.id).is_some_and(|at| at.elapsed() < RETRY_AFTER) {
                continue;
            }
            attempts.insert(campaign.id.clone(), Instant::now());
        }
        let outcome = export(ctl, &bucket, &campaign).await;
        let id = campaign.id.clone();
        let recorded = match &outcome {
            Ok((url, count)) => {
                tracing::info!(campaign_id = %campaign.id, url, targets = count, "results exported");
                let url = url.clone();
                ctl.store
                    .write_fenced(fence, move |txn| {
                        txn.execute(
                            "UPDATE campaigns SET export_url = ?2, exported_ms = ?3, export_error = '' WHERE id = ?1",
                            params![id, url, now_ms()],
                        )?;
                        crate::store::records::event(txn, &id, "exported", &url)
                    })
                    .await
            }
            Err(error) => {
                tracing::warn!(campaign_id = %campaign.id, %error, "results export failed; will retry");
                let error = error.clone();
                ctl.store
                    .write_fenced(fence, move |txn| {
                        txn.execute(
                            "UPDATE campaigns SET export_error = ?2 WHERE id = ?1",
                            params![id, error],
                        )?;
                        Ok(())
                    })
                    .await
            }
        };
        if let Err(error) = recorded {
            tracing::warn!(%error, "cannot record the export");
        }
    }
}

async fn export(ctl: &Controller, bucket: &str, campaign: &CampaignRow) -> Result<(String, usize), String> {
    // The audit trail first: the targets' object is what marks the export
    // done, and both are written again whole on a retry.
    let audit = audit_body(ctl, campaign).await.map_err(|e| e.to_string())?;
    put_jsonl(ctl, bucket, &audit_key(campaign), audit).await?;
    let (bytes, count) = body(ctl, campaign).await.map_err(|e| e.to_string())?;
    let url = put_jsonl(ctl, bucket, &key(campaign), bytes).await?;
    Ok((url, count))
}

/// Writes gzip JSON Lines to `bucket`/`key`; its s3:// URL.
async fn put_jsonl(ctl: &Controller, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<String, String> {
    ctl.s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/x-ndjson")
        .content_encoding("gzip")
        .body(bytes.into())
        .send()
        .await
        .map_err(|e| format!("s3://{bucket}/{key}: {}", muster_common::retry::describe(&e)))?;
    Ok(format!("s3://{bucket}/{key}"))
}
