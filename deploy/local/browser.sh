#!/usr/bin/env bash
# A headless Chromium and its WebDriver for the console's browser tests.
#
#   browser.sh install    installs Debian's chromium and chromium-driver if
#                         absent, and prints where they are
#
# The tests start chromedriver themselves (MUSTER_CHROMEDRIVER and
# MUSTER_CHROMIUM override the paths printed here).
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

install() {
  if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    return 0
  fi
  command -v apt-get >/dev/null ||
    die "the console's browser tests need Chromium and chromedriver: install them and run again"
  local sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  say "installing Chromium and chromedriver (Debian packages chromium, chromium-driver)"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null ||
    { $sudo apt-get update -q >/dev/null &&
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; } ||
    die "could not install Chromium with apt-get"
  command -v chromedriver >/dev/null || die "chromium-driver installed, but chromedriver is not on PATH"
}

case "${1:-}" in
  install)
    install
    echo "$(command -v chromium) $(command -v chromedriver)"
    ;;
  *) die "usage: browser.sh install" ;;
esac
