"""The Client: a channel to the controller's CampaignService and the calls
most programs make."""

import time
import uuid
from typing import Iterator, Optional

import grpc

from muster.v1 import campaign_pb2, campaign_pb2_grpc, schedule_pb2_grpc

_STATE = campaign_pb2.CampaignState

#: States a campaign never leaves.
TERMINAL_STATES = frozenset(
    {
        _STATE.CAMPAIGN_STATE_SUCCEEDED,
        _STATE.CAMPAIGN_STATE_COMPLETED_WITH_ERRORS,
        _STATE.CAMPAIGN_STATE_FAILED,
        _STATE.CAMPAIGN_STATE_CANCELLED,
        _STATE.CAMPAIGN_STATE_PLANNED,
    }
)

#: States where a campaign waits on a person: an approval, a manual gate,
#: a stage paused on its errors. `watch(until_decision=True)` stops there.
DECISION_STATES = frozenset(
    {
        _STATE.CAMPAIGN_STATE_PENDING_APPROVAL,
        _STATE.CAMPAIGN_STATE_AWAITING_PROMOTION,
        _STATE.CAMPAIGN_STATE_PAUSED,
    }
)

#: The `muster` CLI's exit code for each way a campaign ends.
EXIT_CODES = {
    _STATE.CAMPAIGN_STATE_SUCCEEDED: 0,
    _STATE.CAMPAIGN_STATE_PLANNED: 0,
    _STATE.CAMPAIGN_STATE_COMPLETED_WITH_ERRORS: 2,
    _STATE.CAMPAIGN_STATE_FAILED: 3,
    _STATE.CAMPAIGN_STATE_CANCELLED: 4,
}

# Failures after which a call may be asked again: the controller was not
# reached, or its answer did not come back.
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# Failures after which a watch subscribes again: the stream broke on the way.
_RESUMABLE = _RETRYABLE + (
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ABORTED,
)


class Client:
    """A client of one controller.

    address: "host:port" of the CampaignService. ca: the CA certificate
    (PEM file) the controller's certificate chains to; without it the
    channel is plaintext (the sandbox without TLS only). token: a bearer
    token (`muster-controller new-token`). server_name: the name to expect
    in the controller's certificate when it differs from the host.
    """

    def __init__(
        self,
        address: str,
        *,
        ca: Optional[str] = None,
        token: Optional[str] = None,
        server_name: Optional[str] = None,
    ):
        # Keepalives find a connection a load balancer dropped while a
        # watch waited for events.
        options = [("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000)]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if ca:
            with open(ca, "rb") as pem:
                credentials = grpc.ssl_channel_credentials(pem.read())
            self._channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self.campaigns = campaign_pb2_grpc.CampaignServiceStub(self._channel)
        #: The ScheduleService, on the same channel: call it with
        #: `metadata=client.metadata`.
        self.schedules = schedule_pb2_grpc.ScheduleServiceStub(self._channel)
        self._metadata = [("authorization", f"Bearer {token}")] if token else []

    @property
    def metadata(self) -> list:
        """The call metadata (the bearer token), for calls made on the stubs
        (`client.campaigns`, `client.schedules`) directly."""
        return list(self._metadata)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def submit(
        self, spec: campaign_pb2.CampaignSpec, *, tries: int = 5, timeout: float = 60
    ) -> campaign_pb2.SubmitCampaignResponse:
        """Submits a campaign. The spec gets a client token when it has
        none, so asking again after an answer was lost (up to `tries` times)
        answers with the campaign already made, never a second one."""
        if not spec.client_token:
            spec = _with_token(spec)
        request = campaign_pb2.SubmitCampaignRequest(spec=spec)
        return self._until_answered(self.campaigns.SubmitCampaign, request, tries, timeout)

    def get(
        self,
        campaign_id: str,
        *,
        view: "campaign_pb2.CampaignView" = campaign_pb2.CAMPAIGN_VIEW_FULL,
        timeout: float = 30,
    ) -> campaign_pb2.Campaign:
        """One campaign, with its counters; in the full view (the default)
        with the row of each account and region (`scopes`) and its reruns.
        `view=campaign_pb2.CAMPAIGN_VIEW_BASIC` leaves those out: cheaper for
        a tool that polls a large campaign for its state."""
        request = campaign_pb2.GetCampaignRequest(campaign_id=campaign_id, view=view)
        return self.campaigns.GetCampaign(request, metadata=self._metadata, timeout=timeout).campaign

    def watch(
        self,
        campaign_id: str,
        *,
        include_targets: bool = False,
        until_decision: bool = False,
        reconnect_for: float = 120,
    ) -> Iterator[campaign_pb2.WatchCampaignResponse]:
        """The campaign's events until it ends: a snapshot first, then state
        changes, progress and (with include_targets) targets ending. With
        until_decision, also until it waits on a person (DECISION_STATES),
        as `muster watch --until-decision` does: the last event is the one
        that says so. A dropped stream is subscribed to again (for up to
        `reconnect_for` seconds without an answer); its new snapshot brings
        the view back to where the campaign is."""
        request = campaign_pb2.WatchCampaignRequest(campaign_id=campaign_id, include_targets=include_targets)
        lost_since = None
        backoff = 0.25
        while True:
            try:
                for event in self.campaigns.WatchCampaign(request, metadata=self._metadata):
                    kind = event.WhichOneof("event")
                    if kind == "snapshot":
                        lost_since, backoff = None, 0.25
                    yield event
                    state = None
                    if kind == "snapshot":
                        state = event.snapshot.state
                    elif kind == "state":
                        state = event.state.state
                    if state in TERMINAL_STATES or (until_decision and state in DECISION_STATES):
                        return
            except grpc.RpcError as error:
                if error.code() not in _RESUMABLE:
                    raise
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > reconnect_for:
                raise TimeoutError(f"the watch of {campaign_id} lost the controller for {reconnect_for:.0f}s")
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _until_answered(self, call, request, tries: int, timeout: float):
        for attempt in range(1, tries + 1):
            try:
                return call(request, metadata=self._metadata, timeout=timeout)
            except grpc.RpcError as error:
                if error.code() not in _RETRYABLE or attempt == tries:
                    raise
                time.sleep(2 ** (attempt - 1))
        raise AssertionError("unreachable")


def _with_token(spec: campaign_pb2.CampaignSpec) -> campaign_pb2.CampaignSpec:
    """A copy of `spec` with a fresh client token (the caller's stays as it was)."""
    copy = campaign_pb2.CampaignSpec()
    copy.CopyFrom(spec)
    copy.client_token = str(uuid.uuid4())
    return copy
