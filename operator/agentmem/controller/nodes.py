"""Asking memory nodes and routers how far they are: the operator's side of the
warm-up handshake.

The operator lists the pods (from its watch of them) and asks each one, at its
pod address, for ``/v1/status`` (nodes) or ``/readyz`` (routers). A StatefulSet
being Ready says little here: a node is ready for the partitions it owns, not for
those it is warming up. The same answers give the event lag shown in status.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol

from agentmem.model import naming


@dataclass(frozen=True)
class Credentials:
    """How the operator asks a cluster's pods: its bearer token, and the TLS context
    that trusts the cluster's CA (None: plain HTTP)."""

    token: str | None = None
    context: ssl.SSLContext | None = None


NO_CREDENTIALS = Credentials()


class Probe(Protocol):
    def get(
        self, address: str, path: str, credentials: Credentials = NO_CREDENTIALS
    ) -> dict[str, Any]:
        """The JSON a pod answers at ``<address>:<port><path>``; raises ProbeError
        when it does not answer."""
        ...


class ProbeError(RuntimeError):
    """A pod did not answer, or not with JSON; the message says how."""


class HttpProbe:
    def __init__(self, timeout: float = 2.0) -> None:
        self.timeout = timeout

    def get(
        self, address: str, path: str, credentials: Credentials = NO_CREDENTIALS
    ) -> dict[str, Any]:
        scheme = "https" if credentials.context is not None else "http"
        url = f"{scheme}://{address}:{naming.NODE_PORT}{path}"
        token = credentials.token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(
                request, timeout=self.timeout, context=credentials.context
            ) as response:
                data = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                data = json.loads(exc.read())
            except ValueError:
                raise ProbeError(f"{url} answered {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise ProbeError(f"{url} does not answer: {exc}") from None
        if not isinstance(data, dict):
            raise ProbeError(f"{url} answered {type(data).__name__}, not an object")
        return data


@dataclass(frozen=True)
class PodView:
    """A pod as the handshake sees it."""

    name: str
    address: str | None  # the pod IP, once it has one
    phase: str

    @classmethod
    def of(cls, pod: dict[str, Any]) -> PodView:
        status = pod.get("status") or {}
        return cls(pod["metadata"]["name"], status.get("podIP"), status.get("phase", "Pending"))


def warm_reasons(
    probe: Probe,
    pods: list[PodView],
    replicas: int,
    epoch: int,
    partitions: list[int],
    max_lag: int,
    credentials: Credentials = NO_CREDENTIALS,
) -> list[str]:
    """Why the replicas of one gaining shard are not ready for ``epoch`` (empty: they are).

    Every replica must have seen the pending block of ``epoch`` (or the epoch
    itself) and have applied each of ``partitions`` to within ``max_lag`` events
    of the log's end, from a state that is complete (phase serving).
    """
    reasons = []
    if len(pods) < replicas:
        reasons.append(f"{len(pods)} of {replicas} replicas exist")
    for pod in sorted(pods, key=lambda p: p.name):
        if pod.address is None or pod.phase != "Running":
            reasons.append(f"pod {pod.name} is {pod.phase}")
            continue
        try:
            status = probe.get(pod.address, "/v1/status", credentials)
        except ProbeError as exc:
            reasons.append(f"pod {pod.name}: {exc}")
            continue
        seen = max(status.get("epoch") or 0, status.get("pending_epoch") or 0)
        if seen < epoch:
            reasons.append(
                f"pod {pod.name} follows epoch {seen}, not yet the pending block of {epoch}"
            )
            continue
        states = status.get("partitions") or {}
        for p in partitions:
            state = states.get(str(p))
            if state is None:
                reasons.append(f"pod {pod.name} does not read partition {p} yet")
            elif state.get("phase") != "serving":
                why = state.get("reason") or state.get("phase")
                reasons.append(f"pod {pod.name}: partition {p} is {why}")
            elif state.get("high") is None:
                reasons.append(f"pod {pod.name}: partition {p}'s log end is not known yet")
            elif state["high"] - 1 - state["applied"] > max_lag:
                behind = state["high"] - 1 - state["applied"]
                reasons.append(f"pod {pod.name}: partition {p} is {behind} events behind")
    return reasons


def epoch_reasons(
    probe: Probe,
    pods: list[PodView],
    epoch: int,
    router: bool,
    credentials: Credentials = NO_CREDENTIALS,
) -> list[str]:
    """Which running pods do not follow ``epoch`` yet (pods that do not run are skipped:
    a pod that starts reads the current directory)."""
    reasons = []
    for pod in sorted(pods, key=lambda p: p.name):
        if pod.address is None or pod.phase != "Running":
            continue
        try:
            answer = probe.get(pod.address, "/readyz" if router else "/v1/status", credentials)
        except ProbeError as exc:
            reasons.append(f"pod {pod.name}: {exc}")
            continue
        if (answer.get("epoch") or 0) < epoch:
            reasons.append(f"pod {pod.name} follows epoch {answer.get('epoch')}, not {epoch}")
    return reasons


#: The steps of the event lag in status, largest first (seconds, text): status shows
#: the step the lag is in, so it changes when the lag crosses one, not whenever
#: it moves (each change is a write to the API server).
LAG_STEPS = ((3600.0, ">1h"), (600.0, ">10m"), (60.0, ">1m"), (10.0, ">10s"), (1.0, ">1s"))
CAUGHT_UP = "<1s"
LAG_UNKNOWN = "Unknown"


def lag_step(seconds: float) -> str:
    """The step of ``LAG_STEPS`` that ``seconds`` of lag is in."""
    return next((text for floor, text in LAG_STEPS if seconds > floor), CAUGHT_UP)


def event_lag(probe: Probe, pods: list[PodView], credentials: Credentials = NO_CREDENTIALS) -> str:
    """How far the memory nodes are behind the log: the step of the largest lag of a
    partition a node owns (the age of its oldest event not applied yet); Unknown
    when a running node does not answer, or none runs."""
    worst, answered = 0.0, False
    for pod in pods:
        if pod.address is None or pod.phase != "Running":
            continue
        try:
            status = probe.get(pod.address, "/v1/status", credentials)
        except ProbeError:
            return LAG_UNKNOWN
        answered = True
        for state in (status.get("partitions") or {}).values():
            if state.get("owned"):
                worst = max(worst, float(state.get("lag_seconds") or 0.0))
    return lag_step(worst) if answered else LAG_UNKNOWN
