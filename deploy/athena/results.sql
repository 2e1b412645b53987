-- The Athena tables of muster, for creating by hand. hub.yaml creates the
-- same database and tables as Glue resources; use one or the other.
-- Replace MUSTER-RESULTS-BUCKET and MUSTER-OUTPUT-BUCKET.

CREATE DATABASE IF NOT EXISTS muster;

-- muster.campaign_targets: the results exports, one JSON line per target,
-- written by the controller when a campaign ends to
--   s3://<results bucket>/campaigns/dt=YYYY-MM-DD/campaign=<id>/targets.jsonl.gz
-- Partition projection: no MSCK REPAIR, no crawler.

CREATE EXTERNAL TABLE IF NOT EXISTS muster.campaign_targets (
  campaign_id        string,
  campaign_name      string,
  labels             map<string,string>,
  account_id         string,
  region             string,
  instance_id        string,
  name               string,
  platform           string,
  status             string,   -- success, failed, timed_out, cancelled, undeliverable, terminated, skipped, error
  timeout_kind       string,   -- delivery, execution or empty
  exit_code          int,
  reason             string,
  command_id         string,
  document_name      string,
  ssm_status_details string,
  dispatched_at      string,   -- RFC 3339; from_iso8601_timestamp() to compare
  started_at         string,
  finished_at        string,
  stdout             string,   -- first step, kept prefix
  stderr             string,
  stdout_url         string,   -- where the rest is: s3:// or cloudwatch://
  stderr_url         string,
  steps array<struct<
    name:string, status:string, exit_code:int,
    stdout:string, stderr:string,
    stdout_truncated:boolean, stderr_truncated:boolean,
    stdout_url:string, stderr_url:string>>,
  rerun_of           string,   -- the campaign this one reruns, or empty
  stage              string,   -- its wave, in a staged campaign
  patch_state struct<          -- after a patch document; null otherwise
    operation:string, operation_end_time:string,
    installed:int, installed_other:int, installed_pending_reboot:int,
    installed_rejected:int, missing:int, failed:int, not_applicable:int,
    critical_non_compliant:int, security_non_compliant:int,
    reboot_option:string, baseline_id:string, patch_group:string>
)
PARTITIONED BY (dt string, campaign string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://MUSTER-RESULTS-BUCKET/campaigns/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2024-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'projection.campaign.type' = 'injected',
  'storage.location.template' = 's3://MUSTER-RESULTS-BUCKET/campaigns/dt=${dt}/campaign=${campaign}/'
);

-- Which instances failed the last patch run, by account:
-- SELECT account_id, region, instance_id, exit_code, reason
-- FROM muster.campaign_targets
-- WHERE dt >= '2026-11-01' AND campaign = '<campaign id>' AND status IN ('failed', 'timed_out')
-- ORDER BY account_id, region;

-- Which instances a patch run left non-compliant, and why, those missing
-- critical patches first:
-- SELECT account_id, region, instance_id, patch_state.critical_non_compliant,
--        patch_state.missing, patch_state.failed, patch_state.installed_pending_reboot
-- FROM muster.campaign_targets
-- WHERE dt >= '2026-11-01' AND campaign = '<campaign id>'
--   AND patch_state.missing + patch_state.failed
--       + patch_state.installed_pending_reboot + patch_state.installed_rejected > 0
-- ORDER BY patch_state.critical_non_compliant DESC, account_id, region;
--
-- (To run the install on exactly those: muster submit --from-campaign
-- <campaign id> --non-compliant --document AWS-RunPatchBaseline
-- --param Operation=Install.)

-- muster.command_output: the raw lines SSM wrote to the output bucket, at
--   s3://<output bucket>/muster/<campaign>/<command id>/<instance id>/<plugin>/<step>/stdout|stderr
-- "$path" says which instance and stream each line came from.
CREATE EXTERNAL TABLE IF NOT EXISTS muster.command_output (
  line string
)
PARTITIONED BY (campaign string)
ROW FORMAT SERDE 'org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe'
LOCATION 's3://MUSTER-OUTPUT-BUCKET/muster/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.campaign.type' = 'injected',
  'storage.location.template' = 's3://MUSTER-OUTPUT-BUCKET/muster/${campaign}/'
);

-- Which instances printed an error, and the line:
-- SELECT regexp_extract("$path", '/(m?i-[0-9a-f]+)/', 1) AS instance_id, line
-- FROM muster.command_output
-- WHERE campaign = '<campaign id>' AND "$path" LIKE '%/stderr'
--   AND lower(line) LIKE '%error%';
