"""The rerank clients people already use, unchanged, against the live graph: Cohere's
official Python client in its v1 and v2 forms."""

from __future__ import annotations

import cohere
import httpx
import pytest

from tests.integration.conftest import API_KEY

pytestmark = pytest.mark.integration
DOCUMENTS = ["Kaufvertrag über ein Grundstück, 1923", "Testament der Großmutter, 1951",
             "Rechnung des Schreiners"]


def test_cohere_v1_client_reranks(service: dict[str, object]) -> None:
    client = cohere.Client(api_key=API_KEY, base_url=str(service["url"]))
    answer = client.rerank(model="rerank-multilingual-v3.0", query="Testament",
                           documents=DOCUMENTS, top_n=2)
    assert len(answer.results) == 2
    assert {r.index for r in answer.results} <= {0, 1, 2}
    scores = [r.relevance_score for r in answer.results]
    assert scores == sorted(scores, reverse=True)


def test_cohere_v2_client_reranks(service: dict[str, object]) -> None:
    client = cohere.ClientV2(api_key=API_KEY, base_url=str(service["url"]))
    answer = client.rerank(model="rerank-v3.5", query="Testament", documents=DOCUMENTS)
    assert sorted(r.index for r in answer.results) == [0, 1, 2]
    assert answer.results[0].relevance_score >= answer.results[-1].relevance_score
    assert answer.id


def test_v1_rerank_names_the_answering_model_and_each_document_by_its_own_index(
        client: httpx.Client) -> None:
    response = client.post("/v1/rerank", json={"query": "q", "model": "whatever",
                                               "documents": [{"text": "a"}, "b"]})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "embedding-similarity"
    too_long = client.post("/v1/rerank", json={"query": "q",
                                               "documents": ["a", "x" * 5000]})
    assert too_long.status_code == 413
    assert too_long.json()["error"]["detail"]["field"] == "documents.1"


def test_v2_rerank_needs_the_key(anonymous: httpx.Client) -> None:
    response = anonymous.post("/v2/rerank", json={"model": "m", "query": "q",
                                                 "documents": ["a"]})
    assert response.status_code == 401
