#!/usr/bin/env bash
# What limits result ingest on PostgreSQL, measured without muster: pgbench
# runs the controller's write shape (one UPDATE of 64 consecutive targets of
# a scope per transaction, the status always changing, ~400 bytes of step
# output) against a 100,000-target table, for each index layout and number
# of concurrent writers. Prints rows/s per case; compare within one run.
#
#   deploy/local/bench_pg_updates.sh postgres://USER@HOST:PORT/DB [seconds]
#
# Layouts:
#   today    - the schema's indexes: targets_pending holds status
#   partial  - targets_pending only over pending rows (WHERE status = 1)
#   nostatus - no index on status, fillfactor 80 (updates can be HOT)
#   pending  - the schema's layout since V14: a generated column
#              pending = (status = 1), the index only over pending rows,
#              fillfactor 80 (a result leaves pending unchanged: HOT)
#
# It works in a schema of its own (muster_bench), dropped at the end; it
# never touches muster's tables.
set -euo pipefail
url="${1:?usage: $0 POSTGRES_URL [seconds per case]}"
seconds="${2:-10}"
export PGOPTIONS="-c client_min_messages=warning"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"; psql -q "$url" -c "DROP SCHEMA IF EXISTS muster_bench CASCADE" >/dev/null 2>&1 || true' EXIT

steps="$(printf 'ab%.0s' $(seq 1 200))"
cat >"$dir/update.pgb" <<SQL
\set s random(0, 19)
\set o random(0, 77)
UPDATE muster_bench.targets SET status = 9 - status, finished_ms = :o, reason = 'exit code 0',
    steps = decode('$steps', 'hex')
 WHERE campaign_id = 'c' AND account_id = 'a' || lpad(:s::text, 2, '0') AND region = 'us-east-1'
   AND instance_id >= 'i' || lpad(:s::text, 2, '0') || lpad((:o * 64)::text, 6, '0')
   AND instance_id < 'i' || lpad(:s::text, 2, '0') || lpad((:o * 64 + 64)::text, 6, '0');
SQL

setup() {
  local layout="$1" with="" index=""
  case "$layout" in
    today) index="CREATE INDEX targets_pending ON muster_bench.targets (campaign_id, status, account_id, region, platform, instance_id);" ;;
    partial) index="CREATE INDEX targets_pending ON muster_bench.targets (campaign_id, account_id, region, platform, instance_id) WHERE status = 1;" ;;
    nostatus) with="WITH (fillfactor = 80)" ;;
    pending)
      with="WITH (fillfactor = 80)"
      index="CREATE INDEX targets_pending ON muster_bench.targets (campaign_id, account_id, region, platform, instance_id) WHERE pending;"
      ;;
  esac
  psql -q -v ON_ERROR_STOP=1 "$url" >/dev/null <<SQL
DROP SCHEMA IF EXISTS muster_bench CASCADE;
CREATE SCHEMA muster_bench;
CREATE TABLE muster_bench.targets (
    campaign_id TEXT COLLATE "C" NOT NULL, account_id TEXT COLLATE "C" NOT NULL, region TEXT COLLATE "C" NOT NULL,
    instance_id TEXT COLLATE "C" NOT NULL, name TEXT COLLATE "C" NOT NULL DEFAULT '', platform BIGINT NOT NULL DEFAULT 0,
    ping BIGINT NOT NULL DEFAULT 0, status BIGINT NOT NULL, timeout_kind BIGINT NOT NULL DEFAULT 0, exit_code BIGINT,
    reason TEXT COLLATE "C" NOT NULL DEFAULT '', task_id TEXT COLLATE "C", command_id TEXT COLLATE "C" NOT NULL DEFAULT '',
    document_name TEXT COLLATE "C" NOT NULL DEFAULT '', ssm_status_details TEXT COLLATE "C" NOT NULL DEFAULT '',
    dispatched_ms BIGINT, started_ms BIGINT, finished_ms BIGINT, steps BYTEA, stage INTEGER NOT NULL DEFAULT 0,
    tags TEXT COLLATE "C" NOT NULL DEFAULT '', pending BOOLEAN GENERATED ALWAYS AS (status = 1) STORED,
    PRIMARY KEY (campaign_id, account_id, region, instance_id)
) $with;
INSERT INTO muster_bench.targets (campaign_id, account_id, region, instance_id, name, status, task_id, dispatched_ms)
SELECT 'c', 'a' || lpad((g / 5000)::text, 2, '0'), 'us-east-1',
       'i' || lpad((g / 5000)::text, 2, '0') || lpad((g % 5000)::text, 6, '0'), 'web-' || g, 6, 'task-' || (g / 50), 1
  FROM generate_series(0, 99999) g;
$index
CREATE INDEX targets_task ON muster_bench.targets (task_id) WHERE task_id IS NOT NULL;
VACUUM ANALYZE muster_bench.targets;
SQL
}

echo "fsync=$(psql -At "$url" -c 'SHOW fsync'), synchronous_commit=$(psql -At "$url" -c 'SHOW synchronous_commit'), ${seconds}s per case"
printf '%-9s %7s %12s %10s\n' layout writers rows/s hot%
for _ in 1 2; do
  for layout in today partial nostatus pending; do
    for writers in 1 2; do
      setup "$layout"
      psql -q "$url" -c "SELECT pg_stat_reset()" >/dev/null
      tps="$(pgbench -n -M prepared -c "$writers" -j "$writers" -T "$seconds" -f "$dir/update.pgb" "$url" 2>/dev/null |
        awk '/^tps/ {print $3; exit}')"
      sleep 1
      hot="$(psql -At "$url" -c "SELECT round(100.0 * n_tup_hot_upd / greatest(n_tup_upd, 1)) FROM pg_stat_user_tables WHERE schemaname = 'muster_bench'")"
      printf '%-9s %7s %12.0f %9s%%\n' "$layout" "$writers" "$(awk -v t="$tps" 'BEGIN {print t * 64}')" "$hot"
    done
  done
done
