#!/usr/bin/env bash
# The whole check, as CI runs it: formatting, clippy, and every test
# (unit, sandbox integration, whole-system) against the local AWS sandbox.
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$MUSTER_ROOT"

"$MUSTER_ROOT/deploy/local/venv.sh"

# The PostgreSQL half of the store's test matrix runs against a real server
# on loopback, started for this run and stopped when it ends.
pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/muster-test-pg.XXXXXX")"
stop_postgres() {
  "$MUSTER_ROOT/deploy/local/postgres.sh" stop "$pg_dir" || true
  rm -rf "$pg_dir"
}
trap stop_postgres EXIT
say "PostgreSQL for the tests"
MUSTER_TEST_POSTGRES_URL="$("$MUSTER_ROOT/deploy/local/postgres.sh" start "$pg_dir")"
export MUSTER_TEST_POSTGRES_URL

# The console's tests drive a real headless Chromium through chromedriver.
say "Chromium for the console's browser tests"
"$MUSTER_ROOT/deploy/local/browser.sh" install

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "shellcheck deploy/local deploy/release .ci"
"$MUSTER_VENV/bin/shellcheck" -x --source-path=SCRIPTDIR deploy/local/*.sh deploy/release/*.sh .ci/run

say "no module cycles"
python3 "$MUSTER_ROOT/deploy/local/module_cycles.py" common proto controller worker cli sim tests

say "cfn-lint deploy/cloudformation"
"$MUSTER_VENV/bin/cfn-lint" deploy/cloudformation/*.yaml

say "buf lint + breaking against the last release's API"
"$MUSTER_ROOT/deploy/local/buf.sh" check

# The whole-system tests run the real muster, muster-controller, muster-worker
# and muster-sim binaries, which cargo does not build for another crate's tests.
say "cargo build --bins"
cargo build --workspace --bins --locked

# The runner is cargo-nextest: per-test timeouts (.config/nextest.toml) and
# its summary. A machine without it gets it from crates.io once, into a
# cache next to the build cache.
if ! cargo nextest --version >/dev/null 2>&1; then
  tools="${MUSTER_TOOLS_DIR:-$HOME/.cache/muster-tools}"
  export PATH="$tools/bin:$PATH"
  if ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest from crates.io into $tools (once; a few minutes)"
    cargo install --locked --root "$tools" cargo-nextest --version 0.9.151
  fi
fi

# The CLI installs as the README says, and the installed one runs.
say "cargo install --path cli"
install_root="$(mktemp -d)"
cargo install --quiet --locked --debug --path cli --root "$install_root"
"$install_root/bin/muster" --version
rm -rf "$install_root"

# Two tests per core: a whole-system test spends most of its time waiting
# (on lease TTLs, polls, a process starting), so one per core leaves the
# machine about half idle. Measured on 2 cores: 4 at once use 1.1 cores and
# take 519 s where 2 at once took 879 s, each test as long as before.
threads="${MUSTER_TEST_THREADS:-$(($(nproc) * 2))}"
say "tests ($threads at once)"
start=$(date +%s)
cargo nextest run --workspace --locked --profile ci --test-threads "$threads"
# The whole-system tests again, with the controller on PostgreSQL (the
# store's own tests run on both engines in the run above). Selected with a
# filter rather than -p, which would build muster-tests again with other
# features (a minute). The move from SQLite to PostgreSQL uses both engines
# whatever MUSTER_TEST_STORE says, and ran above.
say "whole-system tests on PostgreSQL"
MUSTER_TEST_STORE=postgres cargo nextest run --workspace --locked --profile ci --test-threads "$threads" \
  -E 'package(muster-tests) - test(/moves_from_its_sqlite_store/)'
say "test suite wall time: $(($(date +%s) - start))s"

# Generated code lives in OUT_DIR; a build must never change tracked files.
if git -C "$MUSTER_ROOT" rev-parse --git-dir >/dev/null 2>&1; then
  dirty="$(git -C "$MUSTER_ROOT" status --porcelain --untracked-files=no)"
  [[ -z "$dirty" ]] || die "the build changed tracked files:
$dirty"
fi
