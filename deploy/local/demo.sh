#!/usr/bin/env bash
# The muster demo: brings the local sandbox up (moto + muster-sim as AWS, a
# seeded fleet of 3 accounts x 2 regions, the controller and two workers),
# then runs a real campaign across every account and region, with live
# progress and a result table at the end. Run it again any time: it reuses
# what is running and starts a new campaign.
set -euo pipefail
# shellcheck source=deploy/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$MUSTER_ROOT"

"$MUSTER_ROOT/deploy/local/sandbox.sh" up --fleet small --exec-mode real
# shellcheck source=/dev/null  # written by sandbox.sh up
source "$MUSTER_SANDBOX_DIR/env"
muster="$MUSTER_BIN_DIR/muster"
accounts="$(python3 -c "import json; print(','.join(a['id'] for a in json.load(open('$MUSTER_SANDBOX_DIR/fleet-state.json'))['accounts']))")"

say "submitting a campaign to every instance of 3 accounts x 2 regions"
# submit prints the campaign's id (its notes go to stderr); watch follows it.
# The script lines are single-quoted on purpose: they run on the instances.
# shellcheck disable=SC2016
campaign="$("$muster" submit \
  --name "demo $(date -u +%H:%M:%S)" \
  --account "$accounts" --region us-east-1,eu-west-1 \
  --linux 'echo "kernel: $(uname -sr)"' \
  --linux 'echo "uptime: $(cut -d" " -f1 /proc/uptime)s"' \
  --linux 'df -h / | tail -1' \
  --windows 'Get-ComputerInfo | Select-Object OsName' \
  --max-concurrency 50% --batch-size 10 \
  --s3-bucket muster-sandbox-output --s3-prefix demo)"
say "watch it in a browser too: $MUSTER_CONTROLLER/console/campaigns/$campaign"
say "  sign in with the sandbox operator's token: $(cat "$MUSTER_TOKEN_FILE")"
say "  (the sandbox's own CA signed that certificate: your browser asks once; the CA is $MUSTER_TLS_CA)"
set +e
"$muster" watch "$campaign"
code=$?
set -e

say "results of campaign $campaign"
"$muster" results "$campaign"
instance="$("$muster" results "$campaign" --status success -o csv | awk -F, '$5 == "linux" && !found { print $3; found = 1 }')"
if [[ -n "$instance" ]]; then
  say "one target's full output"
  "$muster" results "$campaign" --instance "$instance"
fi
say "done (watch exit code $code: 0 succeeded, 2 completed with errors, 3 failed, 4 cancelled)"
say "more: muster --help; the console: $MUSTER_CONTROLLER/console/; sandbox: deploy/local/sandbox.sh status|down"
