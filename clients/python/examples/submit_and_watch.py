"""Submits a campaign and watches it to its end, as `muster submit --watch`
does: progress as it comes, then each account and region, and the CLI's
exit code (0 succeeded, 2 completed with errors, 3 failed, 4 cancelled).

    python submit_and_watch.py --address 127.0.0.1:7070 --ca .sandbox/tls/ca.pem \\
        --token-file .sandbox/tls/operator.token --server-name localhost \\
        --account 111111111111 --region us-east-1 --linux "uptime"
"""

import argparse
import sys

from muster import EXIT_CODES, Client
from muster.v1 import campaign_pb2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="the controller's CampaignService, host:port")
    parser.add_argument("--ca", help="CA certificate (PEM) of the controller's certificate")
    parser.add_argument("--token-file", required=True, help="file holding a bearer token")
    parser.add_argument("--server-name", help="name in the controller's certificate, if not the host")
    parser.add_argument("--account", action="append", required=True, help="a target account (repeat)")
    parser.add_argument("--region", action="append", required=True, help="a region (repeat)")
    parser.add_argument("--linux", action="append", required=True, help="a line of shell (repeat)")
    parser.add_argument("--name", default="python example")
    args = parser.parse_args()

    with open(args.token_file) as f:
        token = f.read().strip()
    spec = campaign_pb2.CampaignSpec(
        name=args.name,
        targets=campaign_pb2.TargetSelector(account_ids=args.account, regions=args.region),
        command=campaign_pb2.Command(script=campaign_pb2.Script(linux_lines=args.linux)),
    )
    with Client(args.address, ca=args.ca, token=token, server_name=args.server_name) as client:
        answer = client.submit(spec)
        print(f"campaign {answer.campaign_id}", flush=True)
        for event in client.watch(answer.campaign_id):
            kind = event.WhichOneof("event")
            if kind == "state":
                state = campaign_pb2.CampaignState.Name(event.state.state)
                print(f"state {state} {event.state.reason}", flush=True)
            elif kind == "progress":
                c = event.progress.counters
                print(f"progress {c.success + c.failed + c.timed_out + c.skipped}/{c.total}", flush=True)
        campaign = client.get(answer.campaign_id)
    for scope in campaign.scopes:
        c = scope.counters
        print(f"scope {scope.account_id} {scope.region}: {c.success} ok, {c.failed} failed, {c.total} targets")
    c = campaign.counters
    print(f"{campaign_pb2.CampaignState.Name(campaign.state)}: {c.success} of {c.total} targets succeeded")
    return EXIT_CODES.get(campaign.state, 1)


if __name__ == "__main__":
    sys.exit(main())
