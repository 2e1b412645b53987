#!/usr/bin/env bash
# Release archives of muster's binaries (muster, muster-controller,
# muster-worker) for Linux on x86_64 and aarch64, with shell completions, the
# man page, README, LICENSE and CHANGELOG, CycloneDX SBOMs of what they are
# built from (deploy/release/sbom.sh), and SHA256SUMS.
#
#   deploy/release/build.sh [--out DIR] [TARGET...]
#
# TARGET defaults to x86_64-unknown-linux-gnu and aarch64-unknown-linux-gnu.
# Cross-compiling needs the target's Rust standard library (`rustup target
# add TARGET`) and a C cross toolchain for it (Debian: gcc-aarch64-linux-gnu
# for aarch64 on an x86_64 host); each binary's ELF header is checked against
# its target before it is packed.
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../local/common.sh"
cd "$MUSTER_ROOT"

out="$MUSTER_ROOT/dist"
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    -*) die "release: unknown option $1 (--out DIR, then targets)" ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu)
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
[[ -n "$version" ]] || die "release: no workspace version in Cargo.toml"
bins=(muster muster-controller muster-worker)
target_dir="${CARGO_TARGET_DIR:-$MUSTER_ROOT/target}"
host="$(rustc -vV | sed -n 's/^host: //p')"
mkdir -p "$out"

# The ELF machine each target's binaries must have (e_machine).
machine_of() {
  case "$1" in
    x86_64-*) echo 62 ;;
    aarch64-*) echo 183 ;;
    *) die "release: no ELF machine known for $1" ;;
  esac
}

elf_machine() {
  python3 -c 'import struct,sys; h=open(sys.argv[1],"rb").read(20); print(struct.unpack("<H", h[18:20])[0] if h[:4]==b"\x7fELF" else -1)' "$1"
}

# A C cross toolchain for `target` when it is not the host's.
cross_env() {
  local target="$1"
  [[ "$target" == "$host" ]] && return
  local gnu="${target%%-*}-linux-gnu"
  command -v "$gnu-gcc" >/dev/null ||
    die "release: cross-compiling to $target needs $gnu-gcc (Debian: apt-get install gcc-${gnu//_/-})"
  local upper="${target//-/_}"
  export "CARGO_TARGET_${upper^^}_LINKER=$gnu-gcc" "CC_${upper}=$gnu-gcc" "AR_${upper}=$gnu-ar"
}

# The strip that understands `target`'s binaries.
strip_for() {
  local gnu="${1%%-*}-linux-gnu"
  if [[ "$1" != "$host" ]] && command -v "$gnu-strip" >/dev/null; then echo "$gnu-strip"; else echo strip; fi
}

say "building the host's muster for completions and the man page"
cargo build --release --locked --bin muster
host_muster="$target_dir/release/muster"

for target in "${targets[@]}"; do
  rustup target list --installed 2>/dev/null | grep -qx "$target" ||
    die "release: no Rust standard library for $target (rustup target add $target)"
  say "building ${bins[*]} $version for $target"
  if [[ "$target" == "$host" ]]; then
    # The host's own build (target/release), shared with the steps above.
    cargo build --release --locked "${bins[@]/#/--bin=}"
    built="$target_dir/release"
  else
    (cross_env "$target" && cargo build --release --locked --target "$target" "${bins[@]/#/--bin=}")
    built="$target_dir/$target/release"
  fi
  name="muster-$version-$target"
  stage="$(mktemp -d)/$name"
  mkdir -p "$stage/completions"
  want="$(machine_of "$target")"
  for bin in "${bins[@]}"; do
    path="$built/$bin"
    got="$(elf_machine "$path")"
    [[ "$got" == "$want" ]] || die "release: $path is ELF machine $got, not $want for $target"
    install -m 0755 "$path" "$stage/$bin"
    # The release profile keeps line tables for the sandbox's profiling;
    # shipped binaries keep their symbols (backtraces) but not those.
    "$(strip_for "$target")" --strip-debug "$stage/$bin"
  done
  for shell in bash zsh fish; do
    "$host_muster" completions "$shell" >"$stage/completions/muster.$shell"
  done
  "$host_muster" man >"$stage/muster.1"
  cp README.md LICENSE CHANGELOG.md "$stage/"
  tar -C "$(dirname "$stage")" -czf "$out/$name.tar.gz" "$name"
  rm -rf "$(dirname "$stage")"
  say "packed $out/$name.tar.gz"
done

say "SBOM (CycloneDX) of the binaries' dependencies"
"$MUSTER_ROOT/deploy/release/sbom.sh" "$out" "$version"

(cd "$out" && sha256sum ./*.tar.gz ./*.cdx.json | sed 's| \./| |' >SHA256SUMS)
say "release $version in $out:"
cat "$out/SHA256SUMS"
