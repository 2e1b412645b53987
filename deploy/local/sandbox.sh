#!/usr/bin/env bash
# The local sandbox: moto and muster-sim as the AWS endpoint, a seeded fleet
# (Organization, accounts, roles, instances, queue, buckets), and muster
# itself: the controller and two workers. All on loopback.
#
#   deploy/local/sandbox.sh up [--fleet small|large|FILE] [--exec-mode real|simulated] [--workers N]
#   deploy/local/sandbox.sh down
#   deploy/local/sandbox.sh status
#   deploy/local/sandbox.sh env        # exports for the aws CLI and muster
#
# Every command is idempotent: `up` reuses what is already running and seeds
# only what is missing; `down` stops the processes by their own PIDs.
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SIM_URL="http://127.0.0.1:$MUSTER_SIM_PORT"
# moto uses one core and milliseconds per EC2 instance: the sim spreads the
# accounts over this many moto processes (ports MUSTER_MOTO_PORT and up).
MOTO_SHARDS="${MUSTER_MOTO_SHARDS:-2}"

moto_urls() {
  local i urls=()
  for ((i = 0; i < MOTO_SHARDS; i++)); do urls+=("http://127.0.0.1:$((MUSTER_MOTO_PORT + i))"); done
  (IFS=,; echo "${urls[*]}")
}

CONTROLLER_PORT="${MUSTER_CONTROLLER_PORT:-7070}"
WORKER_API_PORT="${MUSTER_WORKER_API_PORT:-7071}"
# /metrics, /healthz, /readyz: the controller on this port, worker i on
# WORKER_METRICS_BASE + i.
METRICS_PORT="${MUSTER_METRICS_PORT:-9101}"
WORKER_METRICS_BASE="${MUSTER_WORKER_METRICS_BASE:-9110}"
HUB_KEY=AKIAMUSTERSANDBOXHUB
HUB_SECRET=muster-sandbox

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

# tcp_ok PORT: something listens on 127.0.0.1:PORT.
tcp_ok() {
  python3 -c "import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(s.connect_ex(('127.0.0.1', int(sys.argv[1]))))" "$1"
}

wait_tcp() {
  local name="$1" port="$2" seconds="$3" i
  for ((i = 0; i < seconds * 5; i++)); do
    tcp_ok "$port" && return 0
    pid_alive "$name" || die "$name exited (log: $MUSTER_SANDBOX_DIR/logs/$name.log)"
    sleep 0.2
  done
  die "$name did not listen on port $port within ${seconds}s (log: $MUSTER_SANDBOX_DIR/logs/$name.log)"
}

state_field() {
  python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$MUSTER_SANDBOX_DIR/fleet-state.json" "$1"
}

people_role() {
  python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['people_roles'][sys.argv[2]])" \
    "$MUSTER_SANDBOX_DIR/fleet-state.json" "$1"
}

fleet_file() {
  case "$1" in
    small|large) echo "$MUSTER_ROOT/deploy/local/fleet-$1.toml" ;;
    *) [[ -f "$1" ]] || die "--fleet $1: no such fleet (small, large, or a file)"; echo "$1" ;;
  esac
}

build() {
  say "building muster (cargo build; the first build takes several minutes)"
  (cd "$MUSTER_ROOT" && cargo build --quiet --bins)
}

up() {
  local fleet=small exec_mode=simulated workers=2
  while (($#)); do
    case "$1" in
      --fleet) fleet="${2:?--fleet needs a value}"; shift 2 ;;
      --exec-mode) exec_mode="${2:?--exec-mode needs a value}"; shift 2 ;;
      --workers) workers="${2:?--workers needs a value}"; shift 2 ;;
      -h|--help) usage ;;
      *) die "up: unknown option $1" ;;
    esac
  done
  "$MUSTER_ROOT/deploy/local/venv.sh"
  build
  mkdir -p "$MUSTER_SANDBOX_DIR"

  local i port name
  for ((i = 0; i < MOTO_SHARDS; i++)); do
    port=$((MUSTER_MOTO_PORT + i)); name="moto$i"
    if pid_alive "$name" && http_ok "http://127.0.0.1:$port/moto-api/"; then
      say "moto already running on port $port"
    else
      say "starting moto on port $port"
      # A two-AMI catalogue: moto scans its whole catalogue for every launch.
      # moto_server.py is moto_server with the sandbox's fidelity fixes.
      MOTO_AMIS_PATH="$MUSTER_ROOT/deploy/local/moto-amis.json" \
        start_process "$name" "$MUSTER_VENV/bin/python" "$MUSTER_ROOT/deploy/local/moto_server.py" -H 127.0.0.1 -p "$port"
    fi
  done
  for ((i = 0; i < MOTO_SHARDS; i++)); do
    wait_http "moto$i" "http://127.0.0.1:$((MUSTER_MOTO_PORT + i))/moto-api/" 30
  done

  if pid_alive sim && http_ok "$SIM_URL/_sim/health"; then
    say "muster-sim already running on $SIM_URL"
    curl_patch_exec_mode "$exec_mode"
  else
    say "starting muster-sim on $SIM_URL ($exec_mode commands)"
    start_process sim "$MUSTER_BIN_DIR/muster-sim" serve \
      --listen "127.0.0.1:$MUSTER_SIM_PORT" --moto-url "$(moto_urls)" \
      --config "$MUSTER_ROOT/deploy/local/sim.toml" --exec-mode "$exec_mode" \
      --scratch-dir "$MUSTER_SANDBOX_DIR/scratch"
    wait_http sim "$SIM_URL/_sim/health" 30
  fi

  say "seeding the $fleet fleet"
  "$MUSTER_BIN_DIR/muster-sim" seed --fleet "$(fleet_file "$fleet")" --endpoint "$SIM_URL" \
    --template "$MUSTER_ROOT/deploy/cloudformation/target-account.yaml" \
    --out "$MUSTER_SANDBOX_DIR/fleet-state.json"
  write_env
  start_muster "$workers"
  say "sandbox up: AWS endpoint $SIM_URL, controller 127.0.0.1:$CONTROLLER_PORT (console https://127.0.0.1:$CONTROLLER_PORT/console/, token in $TLS_DIR/operator.token; metrics http://127.0.0.1:$METRICS_PORT/metrics, workers from port $((WORKER_METRICS_BASE + 1))); fleet state in $MUSTER_SANDBOX_DIR/fleet-state.json"
}

# TLS on, as in production: a development CA and certificates (controller,
# operator), a worker CA that issues each worker its own certificate
# (spiffe://muster/worker/<name>), API tokens, and the policy that gives each
# of them a role (the controller is given only the tokens' SHA-256). Made once
# per sandbox; a worker's certificate when it first starts.
TLS_DIR="$MUSTER_SANDBOX_DIR/tls"
make_credentials() {
  local name
  if [[ ! -f "$TLS_DIR/worker-ca.pem" ]]; then
    rm -f "$TLS_DIR/ca.pem"
    "$MUSTER_BIN_DIR/muster-sim" dev-certs --dir "$TLS_DIR"
  fi
  for name in operator viewer approver dev-operator; do
    if [[ ! -f "$TLS_DIR/$name.token" ]]; then
      (umask 077 && python3 -c 'import secrets; print("mst_" + secrets.token_urlsafe(32))' >"$TLS_DIR/$name.token")
    fi
  done
  write_policy
}

# The sandbox's policy shows every role: operator (plan, submit, cancel and
# read output anywhere), viewer (read), approver, the admin certificate, and
# dev-operator, an operator only in one of the fleet's OUs; and people who
# sign in with their AWS identity (muster --aws-signin): the seeded
# AWSReservedSSO_* roles stand in for IAM Identity Center's. Edit
# .sandbox/tls/policy.toml and the controller applies it within seconds.
# The policy names the fleet's OUs and accounts, which a new moto (after
# `down`) seeds afresh: it is kept while it names this fleet's Organization
# and written again, the old one kept beside it, when it does not.
write_policy() {
  local org
  org="$(state_field organization_id)"
  if [[ -f "$TLS_DIR/policy.toml" ]]; then
    grep -qxF "# fleet: $org" "$TLS_DIR/policy.toml" && return
    mv "$TLS_DIR/policy.toml" "$TLS_DIR/policy.toml.old"
    say "the fleet was seeded again (Organization $org): policy.toml written for it, the old one kept as policy.toml.old"
  fi
  hash() { "$MUSTER_BIN_DIR/muster-controller" hash-token <"$TLS_DIR/$1.token"; }
  python3 - "$MUSTER_SANDBOX_DIR/fleet-state.json" "$TLS_DIR/policy.toml" \
    "$(hash operator)" "$(hash viewer)" "$(hash approver)" "$(hash dev-operator)" <<'PY'
import json, sys
state = json.load(open(sys.argv[1]))
ops, viewer, approver, dev = sys.argv[3:7]
# The deepest OU, so the scope is narrower than the whole fleet.
first_ou = max(state.get("ous", {}).items(), key=lambda kv: (kv[0].count("/"), kv[0]), default=None)
lines = ["# Who may call the controller, and what each may do where.",
         "# The sandbox writes it again when it seeds a new fleet (this line names it):",
         f"# fleet: {state['organization_id']}", ""]
for name, sha in [("operator", ops), ("viewer", viewer), ("approver", approver), ("dev-operator", dev)]:
    lines += ["[[tokens]]", f'name = "{name}"', f'sha256 = "{sha}"', ""]
lines += ["[[clients]]", 'name = "muster-admin"', ""]
for role, who in [("operator", "operator"), ("viewer", "viewer"), ("approver", "approver"), ("admin", "muster-admin")]:
    lines += ["[[grants]]", f'principals = ["{who}"]', f'role = "{role}"', ""]
if first_ou:
    lines += [f"# An operator only in the OU {first_ou[0]}.", "[[grants]]", 'principals = ["dev-operator"]',
              'role = "operator"', f'ous = ["{first_ou[1]}"]', ""]
hub = state["hub_account"]
lines += ["# People signing in with their AWS identity (muster --aws-signin), by the",
          "# role their session is of: * stands for any text within one ARN field."]
for permission_set, role in [("PatchOperators", "operator"), ("ReadOnly", "viewer")]:
    pattern = f"arn:aws:sts::{hub}:assumed-role/AWSReservedSSO_{permission_set}_*/*"
    lines += ["[[grants]]", f'principals = ["{pattern}"]', f'role = "{role}"', ""]
lines += ["# Campaigns that wait for a second person (muster approve ID), e.g. those",
          "# reaching the first account of the fleet; uncomment to try it.",
          "# [[approvals]]", '# name = "first-account"', f'# accounts = ["{state["accounts"][0]["id"]}"]',
          '# expires = "1h"', ""]
with open(sys.argv[2], "w") as out:
    out.write("\n".join(lines))
PY
}

# The controller's store holds campaigns of the fleet it ran against: their
# accounts, tasks and queue. A new moto (after `down`) seeds a new fleet,
# where those campaigns could only fail; the controller then starts on a
# new store, the old one kept as controller.old.
store_for_this_fleet() {
  local org mark="$MUSTER_SANDBOX_DIR/controller.fleet"
  org="$(state_field organization_id)"
  if [[ -d "$MUSTER_SANDBOX_DIR/controller" && -f "$mark" && "$(cat "$mark")" != "$org" ]]; then
    rm -rf "$MUSTER_SANDBOX_DIR/controller.old"
    mv "$MUSTER_SANDBOX_DIR/controller" "$MUSTER_SANDBOX_DIR/controller.old"
    say "the fleet was seeded again (Organization $org): the controller starts on a new store, the old one kept as controller.old"
  fi
  echo "$org" >"$mark"
}

# The controller acts with the hub account's keys; workers take the hub's
# worker role through an AWS profile, as they would outside ECS.
start_muster() {
  local workers="$1" i queue dlq events results
  make_credentials
  queue="$(state_field queue_url)"
  dlq="$(state_field dlq_url)"
  events="$(state_field command_events_queue_url)"
  results="$(state_field results_bucket)"
  cat >"$MUSTER_SANDBOX_DIR/aws-config" <<CFG
[profile hub]
aws_access_key_id = $HUB_KEY
aws_secret_access_key = $HUB_SECRET
region = us-east-1

[profile worker]
role_arn = $(state_field worker_role_arn)
source_profile = hub
role_session_name = muster-worker
region = us-east-1

# People, as IAM Identity Center would sign them in: AWS_PROFILE=patch-operator muster --aws-signin whoami
[profile patch-operator]
role_arn = $(people_role PatchOperators)
source_profile = hub
role_session_name = alice@example.com
region = us-east-1

[profile read-only]
role_arn = $(people_role ReadOnly)
source_profile = hub
role_session_name = bob@example.com
region = us-east-1
CFG
  if pid_alive controller && tcp_ok "$CONTROLLER_PORT"; then
    say "controller already running on 127.0.0.1:$CONTROLLER_PORT"
  else
    store_for_this_fleet
    say "starting the controller on 127.0.0.1:$CONTROLLER_PORT"
    AWS_CONFIG_FILE="$MUSTER_SANDBOX_DIR/aws-config" AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_PROFILE=hub \
    AWS_ENDPOINT_URL="$SIM_URL" AWS_EC2_METADATA_DISABLED=true \
    MUSTER_EXTERNAL_ID="$(state_field external_id)" \
      start_process controller "$MUSTER_BIN_DIR/muster-controller" \
        --listen "127.0.0.1:$CONTROLLER_PORT" --worker-listen "127.0.0.1:$WORKER_API_PORT" \
        --data-dir "$MUSTER_SANDBOX_DIR/controller" --queue-url "$queue" --dead-letter-queue-url "$dlq" \
        ${events:+--command-events-queue-url "$events"} \
        --results-bucket "$results" --tls-cert "$TLS_DIR/controller.pem" --tls-key "$TLS_DIR/controller.key" \
        --worker-ca "$TLS_DIR/worker-ca.pem" --client-ca "$TLS_DIR/ca.pem" --policy "$TLS_DIR/policy.toml" \
        --signin-server-id muster-sandbox --metrics-listen "127.0.0.1:$METRICS_PORT" --event-bus default
    wait_tcp controller "$CONTROLLER_PORT" 30
  fi
  for ((i = 1; i <= workers; i++)); do
    if pid_alive "worker$i"; then
      say "worker $i already running"
      continue
    fi
    say "starting worker $i"
    "$MUSTER_BIN_DIR/muster-sim" dev-certs --dir "$TLS_DIR" --worker "sandbox-worker-$i"
    AWS_CONFIG_FILE="$MUSTER_SANDBOX_DIR/aws-config" AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_PROFILE=worker \
    AWS_ENDPOINT_URL="$SIM_URL" AWS_EC2_METADATA_DISABLED=true MUSTER_TLS_CA="$TLS_DIR/ca.pem" \
    MUSTER_TLS_CERT="$TLS_DIR/workers/sandbox-worker-$i.pem" MUSTER_TLS_KEY="$TLS_DIR/workers/sandbox-worker-$i.key" \
      start_process "worker$i" "$MUSTER_BIN_DIR/muster-worker" \
        --controller "https://127.0.0.1:$WORKER_API_PORT" --queue-url "$queue" \
        --metrics-listen "127.0.0.1:$((WORKER_METRICS_BASE + i))"
  done
  # Ready: its queue answers (/readyz on its metrics port).
  for ((i = 1; i <= workers; i++)); do
    wait_http "worker$i" "http://127.0.0.1:$((WORKER_METRICS_BASE + i))/readyz" 30
  done
}

curl_patch_exec_mode() {
  python3 - "$SIM_URL/_sim/config" "$1" <<'PY'
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1], data=json.dumps({"exec_mode": sys.argv[2]}).encode(), method="PATCH")
urllib.request.urlopen(req, timeout=5).read()
PY
}

write_env() {
  cat >"$MUSTER_SANDBOX_DIR/env" <<ENV
export AWS_ENDPOINT_URL=$SIM_URL
export AWS_CONFIG_FILE=$MUSTER_SANDBOX_DIR/aws-config
export AWS_SHARED_CREDENTIALS_FILE=/dev/null
export AWS_PROFILE=hub
export AWS_EC2_METADATA_DISABLED=true
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export PATH="$MUSTER_BIN_DIR:\$PATH"
export MUSTER_CONTROLLER=https://127.0.0.1:$CONTROLLER_PORT
export MUSTER_TLS_CA=$TLS_DIR/ca.pem
export MUSTER_TOKEN_FILE=$TLS_DIR/operator.token
export MUSTER_SERVER_ID=muster-sandbox
export MUSTER_EXTERNAL_ID=$(state_field external_id)
ENV
}

# A worker's graceful stop: its --shutdown-grace (30 s) for running tasks,
# then up to 30 s handing the rest back and 5 s for its last queue deletes
# (muster_worker::stop_budget); KILL only after that.
WORKER_STOP_SECONDS=70

down() {
  local pidfile
  # All workers stop at once, each handing back its leases before the
  # controller goes.
  for pidfile in "$MUSTER_SANDBOX_DIR"/pids/worker*.pid; do
    [[ -e "$pidfile" ]] && signal_process "$(basename "$pidfile" .pid)"
  done
  for pidfile in "$MUSTER_SANDBOX_DIR"/pids/worker*.pid; do
    [[ -e "$pidfile" ]] && stop_process "$(basename "$pidfile" .pid)" "$WORKER_STOP_SECONDS"
  done
  stop_process controller
  stop_process sim
  for pidfile in "$MUSTER_SANDBOX_DIR"/pids/moto*.pid; do
    [[ -e "$pidfile" ]] && stop_process "$(basename "$pidfile" .pid)"
  done
  return 0
}

status() {
  local name url ok=0 i names=() pidfile
  for ((i = 0; i < MOTO_SHARDS; i++)); do names+=("moto$i"); done
  names+=(sim controller)
  for pidfile in "$MUSTER_SANDBOX_DIR"/pids/worker*.pid; do
    [[ -e "$pidfile" ]] && names+=("$(basename "$pidfile" .pid)")
  done
  for name in "${names[@]}"; do
    case "$name" in
      moto*) url="http://127.0.0.1:$((MUSTER_MOTO_PORT + ${name#moto}))/moto-api/" ;;
      sim) url="$SIM_URL/_sim/health" ;;
      controller) url="tcp:$CONTROLLER_PORT" ;;
      *) url="pid" ;;
    esac
    local healthy=false
    case "$url" in
      tcp:*) pid_alive "$name" && tcp_ok "${url#tcp:}" && healthy=true ;;
      pid) pid_alive "$name" && healthy=true ;;
      *) pid_alive "$name" && http_ok "$url" && healthy=true ;;
    esac
    if $healthy; then
      printf '%-6s running (pid %s) %s\n' "$name" "$(cat "$MUSTER_SANDBOX_DIR/pids/$name.pid")" "$url"
    else
      printf '%-6s down\n' "$name"; ok=1
    fi
  done
  return "$ok"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  status) status ;;
  env) [[ -f "$MUSTER_SANDBOX_DIR/env" ]] || die "the sandbox is not up"; cat "$MUSTER_SANDBOX_DIR/env" ;;
  -h|--help|help) usage ;;
  *) usage 2 ;;
esac
