"""muster-client: a Python client of muster's gRPC API.

    from muster import Client
    from muster.v1 import campaign_pb2, common_pb2

    client = Client("muster.example:7070", ca="ca.pem", token=open("token").read().strip())
    answer = client.submit(campaign_pb2.CampaignSpec(...))
    for event in client.watch(answer.campaign_id):
        ...

The messages are generated from the protos (muster/v1/*_pb2.py), so every
field of the API is there; `Client` adds what each caller would otherwise
write again: credentials, a client token on every submission with retries
that cannot start a second campaign, and a watch that subscribes again
after a dropped stream.
"""

from .client import DECISION_STATES, EXIT_CODES, TERMINAL_STATES, Client

__all__ = ["Client", "DECISION_STATES", "EXIT_CODES", "TERMINAL_STATES"]
