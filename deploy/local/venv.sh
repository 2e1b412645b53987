#!/usr/bin/env bash
# Creates the sandbox's Python virtualenv (.venv) with the pinned moto[server],
# aws CLI and linters, and muster-client (clients/python) built from this
# checkout's protos. Idempotent: does nothing when the venv already matches
# requirements.txt and the client's sources.
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

requirements="$MUSTER_ROOT/deploy/local/requirements.txt"
stamp="$MUSTER_VENV/.muster-requirements"
if ! [[ -x "$MUSTER_VENV/bin/moto_server" && -f "$stamp" ]] || ! cmp -s "$requirements" "$stamp"; then
  command -v python3 >/dev/null || die "python3 is needed for the sandbox (moto)"
  say "creating Python virtualenv $MUSTER_VENV (moto, aws CLI, cfn-lint, shellcheck)"
  python3 -m venv "$MUSTER_VENV"
  "$MUSTER_VENV/bin/python" -m pip install --quiet --upgrade pip
  "$MUSTER_VENV/bin/python" -m pip install --quiet -r "$requirements"
  cp "$requirements" "$stamp"
  rm -f "$MUSTER_VENV/.muster-client"
fi

# muster-client, rebuilt when its sources or the protos change.
client="$MUSTER_ROOT/clients/python"
client_stamp="$MUSTER_VENV/.muster-client"
fingerprint="$(cd "$MUSTER_ROOT" && find clients/python proto/proto -type f \
  \( -name '*.py' -o -name '*.toml' -o -name '*.proto' \) -not -path '*/build/*' | LC_ALL=C sort |
  xargs sha256sum | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$client_stamp" 2>/dev/null)" != "$fingerprint" ]]; then
  say "installing muster-client (clients/python) into $MUSTER_VENV"
  "$MUSTER_VENV/bin/python" -m pip install --quiet --force-reinstall --no-deps "$client"
  echo "$fingerprint" >"$client_stamp"
fi
