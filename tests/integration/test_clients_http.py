"""The clients people already use, unchanged, against the live graph: Cohere's official
Python client in its v1 and v2 forms, LangChain's OpenAIEmbeddings (the openai client
itself: tests/integration/test_text_http.py)."""

from __future__ import annotations

import cohere
import httpx
import numpy as np
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


def test_langchain_openai_embeddings_work_with_text_input(service: dict[str, object],
                                                          client: httpx.Client) -> None:
    from langchain_openai import OpenAIEmbeddings

    texts = ["Der Hund bellt.", "Sehr geehrter Herr Müller,", "The cat sleeps."]
    ours = [item["dense"] for item in client.post("/v1/embed", json={"texts": texts}
                                                  ).json()["data"]]
    # LangChain's default tokenizes with tiktoken (whose vocabulary it downloads) and
    # sends token ids; the deployed model has its own tokenizer, so text it must be.
    embeddings = OpenAIEmbeddings(model="text-embedding-3-small", api_key=API_KEY,
                                  base_url=f"{service['url']}/v1", max_retries=0,
                                  check_embedding_ctx_length=False, chunk_size=2)
    np.testing.assert_allclose(embeddings.embed_documents(texts), ours, atol=1e-6)
    np.testing.assert_allclose(embeddings.embed_query(texts[1]), ours[1], atol=1e-6)


def test_token_id_input_is_refused_with_the_setting_that_sends_text(
        client: httpx.Client) -> None:
    for tokens in ([[1820, 3290, 293]], [1820, 3290]):
        response = client.post("/v1/embeddings", json={"model": "x", "input": tokens})
        assert response.status_code == 422, response.text
        assert "check_embedding_ctx_length=False" in response.json()["error"]["message"]
