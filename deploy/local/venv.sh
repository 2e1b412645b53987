#!/usr/bin/env bash
# Creates the sandbox's Python virtualenv (.venv) with the pinned moto[server]
# and aws CLI. Idempotent: does nothing when the venv already matches
# requirements.txt.
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

requirements="$MUSTER_ROOT/deploy/local/requirements.txt"
stamp="$MUSTER_VENV/.muster-requirements"
if [[ -x "$MUSTER_VENV/bin/moto_server" && -f "$stamp" ]] && cmp -s "$requirements" "$stamp"; then
  exit 0
fi
command -v python3 >/dev/null || die "python3 is needed for the sandbox (moto)"
say "creating Python virtualenv $MUSTER_VENV (moto, aws CLI, cfn-lint, shellcheck)"
python3 -m venv "$MUSTER_VENV"
"$MUSTER_VENV/bin/python" -m pip install --quiet --upgrade pip
"$MUSTER_VENV/bin/python" -m pip install --quiet -r "$requirements"
cp "$requirements" "$stamp"
