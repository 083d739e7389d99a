"""A model replica killed under load: requests in flight get 503 with Retry-After (never a
500), readiness says which deployment lost its replica, and the service answers again
once Serve has started a new one."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import ray

from tests.integration.conftest import API_KEY

pytestmark = pytest.mark.integration
TEXTS = [f"Brief Nummer {i} an das Amt in Hamburg über die Erbschaft" for i in range(32)]
RECOVERY_S = 30  # the bound for new requests to succeed after the kill


def embedding_replica() -> str:
    """The name of the tiny app's Embedding replica actor."""
    names = [actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
             if actor["name"].startswith("SERVE_REPLICA::tiny#Embedding#")]
    assert len(names) == 1, names
    return names[0]


def test_a_replica_killed_under_load_costs_503s_then_recovers(
        service: dict[str, object], anonymous: httpx.Client) -> None:
    victim = embedding_replica()
    assert anonymous.get("/tiny/readyz").json()["deployments"]["Embedding"]["running"] == 1

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=str(service["url"]), headers={"X-API-Key": API_KEY},
                          timeout=120) as http:
            return http.post("/tiny/v1/embed", json={"texts": TEXTS})

    with ThreadPoolExecutor(16) as pool:
        load = [pool.submit(post, i) for i in range(48)]
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        # Readiness from Serve's view of the replicas: the Embedding lost its only one.
        deadline = time.monotonic() + RECOVERY_S
        seen = None
        while time.monotonic() < deadline:
            ready = anonymous.get("/tiny/readyz")
            if ready.status_code == 503:
                seen = ready.json()["deployments"]["Embedding"]
                break
        assert seen is not None and seen["running"] == 0, seen
        responses = [future.result() for future in load]

    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {200, 503}, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"]
            assert response.json()["error"]["code"] == "overloaded"
    # New requests succeed within the bound, on a new replica.
    recovered = None
    while time.monotonic() < deadline:
        recovered = post(0)
        if recovered.status_code == 200:
            break
    assert recovered is not None and recovered.status_code == 200, recovered.text
    assert embedding_replica() != victim
    assert anonymous.get("/tiny/readyz").status_code == 200
