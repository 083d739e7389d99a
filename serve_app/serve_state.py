"""Serve's view of one application, as its controller reports it, read cheaply.

`serve.status()` is the public way to it, but it validates every deployment's config again
in the caller, cloudpickling each one's request router: about 110 ms of CPU a call on two
cores, where fetching the controller's details takes 2 ms. `/readyz` is polled by probes
and load balancers while the graph starts and under load, and a readiness probe must not
take CPU from the work it watches; so both it and the cluster fixture's wait read the
details as the controller sends them (the dict `serve.status()` builds its answer from).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DeploymentState:
    """A deployment's status and its replicas counted by state (RUNNING, STARTING, ...)."""

    status: str
    replicas: dict[str, int]
    message: str


@dataclass(frozen=True)
class ApplicationState:
    status: str
    message: str
    deployments: dict[str, DeploymentState]


def application_state(app_name: str) -> ApplicationState | None:
    """The application as Serve's controller sees it now, or None if it is not deployed.
    Blocks on the controller: from async code, call it in a thread."""
    from ray.serve.context import _get_global_client  # what serve.status() asks

    details = _get_global_client().get_serve_details()
    return parse_application(details, app_name)


def parse_application(details: dict[str, Any], app_name: str) -> ApplicationState | None:
    """`app_name` out of the controller's instance details (ServeInstanceDetails' shape)."""
    app = (details.get("applications") or {}).get(app_name)
    if app is None:
        return None
    deployments = {
        name: DeploymentState(
            status=_name(deployment.get("status", "UNKNOWN")),
            replicas=dict(Counter(_name(replica["state"])
                                  for replica in deployment.get("replicas") or [])),
            message=deployment.get("message") or "")
        for name, deployment in (app.get("deployments") or {}).items()}
    return ApplicationState(status=_name(app.get("status", "UNKNOWN")),
                            message=app.get("message") or "", deployments=deployments)


def _name(state: Any) -> str:
    """A Serve status enum (or the plain string the details may hold) as its name."""
    return str(getattr(state, "value", state))
