#!/usr/bin/env bash
# The API's checks with buf (https://buf.build): lint the muster.v1 protos and
# check them against the last release's (proto/releases/<version>), so a
# change that breaks a client of that release (a field removed, renumbered or
# retyped, a renamed message or method) fails CI.
#
#   deploy/local/buf.sh check     # lint + breaking
#
# buf comes as a pinned release from the npm registry (the @bufbuild/buf-*
# package of this platform, checked against its SHA-256), into the venv; no
# node or npm is needed.
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BUF_VERSION=1.75.0
# The last release of the API: the breaking-change check's baseline.
RELEASED="proto/releases/v0.1.0"

install_buf() {
  local buf="$MUSTER_VENV/bin/buf"
  if [[ -x "$buf" ]] && [[ "$("$buf" --version 2>/dev/null)" == "$BUF_VERSION" ]]; then
    echo "$buf"
    return
  fi
  local platform sha256
  case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) platform=linux-x64 sha256=98b19d4b2b46130e083157490c54dfdcb8ea771e53204d3c6a06a2b12edd0503 ;;
    Linux-aarch64) platform=linux-aarch64 sha256=ea5b4981ad7199a482609c3f1f7230767e095c4a5a7e96ae74a21225a1fc75dc ;;
    *) die "buf.sh: no pinned buf for $(uname -s)-$(uname -m); install buf $BUF_VERSION and put it in $MUSTER_VENV/bin" ;;
  esac
  local url="https://registry.npmjs.org/@bufbuild/buf-$platform/-/buf-$platform-$BUF_VERSION.tgz"
  local dir
  dir="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$dir'" RETURN
  say "installing buf $BUF_VERSION from the npm registry" >&2
  "$MUSTER_VENV/bin/python" - "$url" "$dir/buf.tgz" <<'PY'
import sys, urllib.request
urllib.request.urlretrieve(sys.argv[1], sys.argv[2])
PY
  echo "$sha256  $dir/buf.tgz" | sha256sum --check --quiet - || die "buf.sh: $url does not match its pinned SHA-256"
  tar -xzf "$dir/buf.tgz" -C "$dir" package/bin/buf
  install -m 0755 "$dir/package/bin/buf" "$buf"
  echo "$buf"
}

case "${1:-check}" in
  check)
    cd "$MUSTER_ROOT"
    "$MUSTER_ROOT/deploy/local/venv.sh"
    buf="$(install_buf)"
    "$buf" lint
    "$buf" breaking --against "$RELEASED"
    echo "buf: muster.v1 lints clean and breaks nothing of $RELEASED"
    ;;
  *) die "usage: buf.sh check" ;;
esac
