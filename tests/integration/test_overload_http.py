"""Beyond a deployment's bounded queue a client is told to retry, in the one error shape,
and the requests that were accepted still answer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.conftest import API_KEY, OVERLOAD_ONGOING, OVERLOAD_QUEUED

pytestmark = pytest.mark.integration
CONCURRENT = 24
TEXTS = [f"Brief Nummer {i} an das Amt in Hamburg über die Erbschaft" for i in range(64)]


def test_a_full_queue_answers_503_with_retry_after(service: dict[str, object]) -> None:
    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=str(service["url"]), headers={"X-API-Key": API_KEY},
                          timeout=120) as http:
            return http.post("/res/v1/embed", json={"texts": TEXTS})

    with ThreadPoolExecutor(CONCURRENT) as pool:
        responses = list(pool.map(post, range(CONCURRENT)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    refused = [r for r in responses if r.status_code == 503]
    assert len(refused) >= CONCURRENT - 2 * (OVERLOAD_ONGOING + OVERLOAD_QUEUED), statuses
    assert statuses.count(200) >= 1
    for response in refused:
        assert response.headers["retry-after"] == "2"
        assert response.json()["error"]["code"] == "overloaded"
        assert response.json()["error"]["request_id"]
