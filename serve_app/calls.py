"""A deployment's answer, within a deadline, in the one error shape.

Every call the ingress makes through a handle goes through `answer`: past the deadline
(DEPLOYMENT_CALL_TIMEOUT_S) the client gets 504 and the work behind it is cancelled in
the replica, freeing its slot; a deployment whose queue is full (max_queued_requests)
or whose replica died or restarts gives 503 with Retry-After. Serve's own handler for
its back-pressure error would answer in Serve's format, so it is caught here first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentResponse

from serve_app.kernel.errors import Overloaded, UpstreamTimeout

RETRY_AFTER_S = 2
UNAVAILABLE = (BackPressureError, DeploymentUnavailableError, RayActorError,
               ActorUnavailableError)


async def answer(response: DeploymentResponse, deadline_s: float, what: str) -> Any:
    """The result of a handle call; 504 past deadline_s, 503 when it cannot be served."""
    try:
        return await asyncio.wait_for(_result(response), deadline_s)
    except TimeoutError:
        response.cancel()
        raise UpstreamTimeout(f"{what} did not answer within {deadline_s:g} s "
                              "(DEPLOYMENT_CALL_TIMEOUT_S)", {"deadline_s": deadline_s}
                              ) from None
    except UNAVAILABLE as exc:
        raise Overloaded(f"{what} cannot take the request now "
                         f"({type(exc).__name__}): retry shortly",
                         headers={"Retry-After": str(RETRY_AFTER_S)}) from None


async def _result(response: DeploymentResponse) -> Any:
    return await response
