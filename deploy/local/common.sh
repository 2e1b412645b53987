# shellcheck shell=bash
# Shared settings of the deploy/local scripts. Sourced, not run.

MUSTER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export MUSTER_ROOT
export MUSTER_VENV="${MUSTER_VENV:-$MUSTER_ROOT/.venv}"
export MUSTER_SANDBOX_DIR="${MUSTER_SANDBOX_DIR:-$MUSTER_ROOT/.sandbox}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muster-target}"
export MUSTER_MOTO_PORT="${MUSTER_MOTO_PORT:-4567}"
export MUSTER_SIM_PORT="${MUSTER_SIM_PORT:-4566}"
export MUSTER_BIN_DIR="${MUSTER_BIN_DIR:-$CARGO_TARGET_DIR/debug}"

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# http_ok URL: exit 0 when URL answers 2xx within 2 seconds.
http_ok() {
  python3 - "$1" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        sys.exit(0 if 200 <= r.status < 300 else 1)
except Exception:
    sys.exit(1)
PY
}

# wait_http NAME URL SECONDS: wait until URL answers, or fail naming NAME
# (at once when NAME's recorded process has exited).
wait_http() {
  local name="$1" url="$2" seconds="$3" i
  for ((i = 0; i < seconds * 5; i++)); do
    http_ok "$url" && return 0
    if [[ -f "$MUSTER_SANDBOX_DIR/pids/$name.pid" ]] && ! pid_alive "$name"; then
      die "$name exited (log: $MUSTER_SANDBOX_DIR/logs/$name.log)"
    fi
    sleep 0.2
  done
  die "$name did not become healthy at $url within ${seconds}s (log: $MUSTER_SANDBOX_DIR/logs/$name.log)"
}

# pid_alive NAME: the process recorded for NAME is running.
pid_alive() {
  local file="$MUSTER_SANDBOX_DIR/pids/$1.pid"
  [[ -f "$file" ]] && kill -0 "$(cat "$file")" 2>/dev/null
}

# start_process NAME CMD...: run CMD in the background, recording its PID.
start_process() {
  local name="$1"; shift
  mkdir -p "$MUSTER_SANDBOX_DIR/pids" "$MUSTER_SANDBOX_DIR/logs"
  nohup "$@" >"$MUSTER_SANDBOX_DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$MUSTER_SANDBOX_DIR/pids/$name.pid"
}

# signal_process NAME: send the recorded process TERM, without waiting.
signal_process() {
  local file="$MUSTER_SANDBOX_DIR/pids/$1.pid"
  [[ -f "$file" ]] && kill -TERM "$(cat "$file")" 2>/dev/null
  return 0
}

# stop_process NAME [SECONDS]: stop the recorded process by its own PID: TERM,
# then KILL if it still runs after SECONDS (default 5). Give a process its
# graceful stop: a worker hands its leases back within --shutdown-grace.
stop_process() {
  local name="$1" grace="${2:-5}" file="$MUSTER_SANDBOX_DIR/pids/$1.pid" pid i
  [[ -f "$file" ]] || return 0
  pid="$(cat "$file")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
      say "killed $name (pid $pid): still running ${grace}s after TERM"
    else
      say "stopped $name (pid $pid)"
    fi
  fi
  rm -f "$file"
}
