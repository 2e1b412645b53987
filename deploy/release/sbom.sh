#!/usr/bin/env bash
# CycloneDX SBOMs (JSON, spec 1.5) of muster's binaries: every crate each is
# built from, with versions, licenses and checksums, by cargo-cyclonedx
# (installed once from crates.io into the tools cache, pinned).
#
#   deploy/release/sbom.sh OUT_DIR VERSION
#
# Writes OUT_DIR/muster-VERSION-<crate>.cdx.json for the cli, controller and
# worker crates.
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../local/common.sh"
cd "$MUSTER_ROOT"

out="${1:?usage: sbom.sh OUT_DIR VERSION}"
version="${2:?usage: sbom.sh OUT_DIR VERSION}"
CYCLONEDX_VERSION=0.5.9
tools="${MUSTER_TOOLS_DIR:-$HOME/.cache/muster-tools}"
cyclonedx="$tools/bin/cargo-cyclonedx"
if ! [[ -x "$cyclonedx" ]] || [[ "$("$cyclonedx" cyclonedx --version)" != *"$CYCLONEDX_VERSION"* ]]; then
  say "installing cargo-cyclonedx $CYCLONEDX_VERSION from crates.io into $tools (once)"
  cargo install --quiet --locked --root "$tools" cargo-cyclonedx --version "$CYCLONEDX_VERSION"
fi
mkdir -p "$out"
# cargo-cyclonedx writes one per workspace member, next to its Cargo.toml.
name="muster-sbom-$$"
members=(cli common controller proto sim tests worker)
cleanup() {
  local member
  for member in "${members[@]}"; do rm -f "$member/$name.json"; done
}
trap cleanup EXIT
"$cyclonedx" cyclonedx --format json --spec-version 1.5 --no-build-deps --target all \
  --override-filename "$name" --quiet
for crate in cli controller worker; do
  mv "$crate/$name.json" "$out/muster-$version-$crate.cdx.json"
done
