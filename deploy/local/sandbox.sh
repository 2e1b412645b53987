#!/usr/bin/env bash
# The local AWS sandbox: moto and muster-sim on loopback, and a seeded fleet.
#
#   deploy/local/sandbox.sh up [--fleet small|large|FILE] [--exec-mode real|simulated]
#   deploy/local/sandbox.sh down
#   deploy/local/sandbox.sh status
#   deploy/local/sandbox.sh env        # exports for the aws CLI and SDKs
#
# Every command is idempotent: `up` reuses what is already running and seeds
# only what is missing; `down` stops the processes by their own PIDs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SIM_URL="http://127.0.0.1:$MUSTER_SIM_PORT"
MOTO_URL="http://127.0.0.1:$MUSTER_MOTO_PORT"
# moto uses one core and milliseconds per EC2 instance: the sim spreads the
# accounts over this many moto processes (ports MUSTER_MOTO_PORT and up).
MOTO_SHARDS="${MUSTER_MOTO_SHARDS:-2}"

moto_urls() {
  local i urls=()
  for ((i = 0; i < MOTO_SHARDS; i++)); do urls+=("http://127.0.0.1:$((MUSTER_MOTO_PORT + i))"); done
  (IFS=,; echo "${urls[*]}")
}

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

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
  local fleet=small exec_mode=simulated
  while (($#)); do
    case "$1" in
      --fleet) fleet="${2:?--fleet needs a value}"; shift 2 ;;
      --exec-mode) exec_mode="${2:?--exec-mode needs a value}"; shift 2 ;;
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
      MOTO_AMIS_PATH="$MUSTER_ROOT/deploy/local/moto-amis.json" \
        start_process "$name" "$MUSTER_VENV/bin/moto_server" -H 127.0.0.1 -p "$port"
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
  say "sandbox up: AWS endpoint $SIM_URL; fleet state in $MUSTER_SANDBOX_DIR/fleet-state.json"
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
export AWS_ACCESS_KEY_ID=AKIAMUSTERSANDBOXUSER
export AWS_SECRET_ACCESS_KEY=muster-sandbox
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
ENV
}

down() {
  local pidfile
  stop_process sim
  for pidfile in "$MUSTER_SANDBOX_DIR"/pids/moto*.pid; do
    [[ -e "$pidfile" ]] && stop_process "$(basename "$pidfile" .pid)"
  done
  return 0
}

status() {
  local name url ok=0 i names=()
  for ((i = 0; i < MOTO_SHARDS; i++)); do names+=("moto$i"); done
  names+=(sim)
  for name in "${names[@]}"; do
    case "$name" in
      moto*) url="http://127.0.0.1:$((MUSTER_MOTO_PORT + ${name#moto}))/moto-api/" ;;
      sim) url="$SIM_URL/_sim/health" ;;
    esac
    if pid_alive "$name" && http_ok "$url"; then
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
