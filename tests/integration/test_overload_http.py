"""Beyond a deployment's bounded queue a client is told to retry, in the one error shape,
and the requests that were accepted still answer."""

from __future__ import annotations

import re
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from serve_app.front_door import FRONT_MAX_REQUESTS
from tests.fixtures.waiting import until
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


def test_beyond_its_requests_in_flight_the_proxy_refuses_at_once_and_health_answers(
    service: dict[str, object], client: httpx.Client
) -> None:
    """Requests held open by slow clients (headers sent, body never finished) fill the
    front door; the next request is refused by the proxy itself, in the one error shape,
    health probes still answer, and once the slow clients are gone requests are let in."""
    url = httpx.URL(str(service["url"]))
    head = (f"POST /v1/embed HTTP/1.1\r\nHost: {url.host}\r\nX-API-Key: {API_KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"texts\": [")
    held = [socket.create_connection((url.host, url.port)) for _ in range(FRONT_MAX_REQUESTS)]
    try:
        for connection in held:
            connection.sendall(head.encode())
        refused = until(lambda: client.get("/v1/models"), lambda r: r.status_code == 503,
                        60)
        error = refused.json()["error"]
        assert error["code"] == "overloaded" and error["request_id"], refused.text
        assert error["detail"] == {"in_flight": FRONT_MAX_REQUESTS}
        assert refused.headers["retry-after"] == "2"
        assert client.get("/readyz").status_code == 200
    finally:
        for connection in held:
            connection.close()
    until(lambda: client.get("/v1/models"), lambda r: r.status_code == 200, 60)



def complete(answer: bytes) -> bool:
    """Whether an HTTP answer's headers and its Content-Length of body have arrived."""
    head, separator, body = answer.partition(b"\r\n\r\n")
    if not separator:
        return False
    match = re.search(rb"^content-length:\s*(\d+)", head.lower(), re.M)
    return match is None or len(body) >= int(match.group(1))


def test_while_the_embedding_budget_is_full_a_request_is_refused_before_its_body_arrives(
    service: dict[str, object], client: httpx.Client
) -> None:
    """The /res app's text budget is one request of 64 texts. While such a request runs, a
    client that has sent only its headers and part of its body is refused at once: the
    front door did not wait to read what it would refuse."""
    url = httpx.URL(str(service["url"]))
    head = (f"POST /res/v1/embed HTTP/1.1\r\nHost: {url.host}\r\nX-API-Key: {API_KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"texts\": [")
    long_texts = [" ".join([text] * 40) for text in TEXTS]  # truncated to the model's limit

    def probe() -> bytes:
        """What the service answered a request whose body never finishes, within 0.5 s:
        its whole answer, which may arrive in more than one segment."""
        answer = b""
        with socket.create_connection((url.host, url.port), timeout=0.5) as connection:
            connection.sendall(head.encode())
            try:
                while not complete(answer):
                    chunk = connection.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
            except TimeoutError:
                pass  # nothing yet: let in, the service waits for the rest of the body
        return answer

    answers: list[bytes] = []
    with ThreadPoolExecutor(1) as pool:
        for _ in range(5):  # each full request holds the budget for a moment; probe within
            running = pool.submit(client.post, "/res/v1/embed", json={"texts": long_texts})
            while not running.done() and not any(b" 503 " in a for a in answers):
                answers.append(probe())
            assert running.result().status_code == 200
            if any(b" 503 " in a for a in answers):
                break
    [refused, *_] = [a for a in answers if b" 503 " in a]
    assert b"retry-after: 2" in refused.lower() and b'"code":"overloaded"' in refused
    assert b"held_texts" in refused  # the budget's refusal, not the request count's
    assert client.post("/res/v1/embed", json={"texts": TEXTS[:1]}).status_code == 200
