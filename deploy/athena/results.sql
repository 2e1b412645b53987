-- Athena table over muster's results exports: one JSON line per target,
-- written by the controller when a campaign ends to
--   s3://<results bucket>/campaigns/dt=YYYY-MM-DD/campaign=<id>/targets.jsonl.gz
-- Partition projection: no MSCK REPAIR, no crawler. Replace the bucket name.

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
    stdout_url:string, stderr_url:string>>
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
