"""Embeddings and rerank through HTTP: MiniLM by default, BGE-M3 and a cross-encoder on tiny
random XLM-R models that load through the real FlagEmbedding classes."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.integration


def test_similar_sentences_are_closer_than_unrelated_ones(client: httpx.Client) -> None:
    texts = ["The cat sleeps on the sofa.", "A cat is napping on the couch.",
             "Quarterly tax report for the harbour authority."]
    response = client.post("/v1/embed", json={"texts": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "all-minilm-l6-v2"
    vectors = np.array([item["dense"] for item in body["data"]])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    assert body["usage"]["total_tokens"] == sum(item["tokens"] for item in body["data"])


def test_concurrent_requests_each_get_their_own_vectors(client: httpx.Client) -> None:
    """Requests batched together by @serve.batch must not swap results."""
    import concurrent.futures

    texts = [f"Brief Nummer {i} aus dem Archiv" for i in range(12)]
    single = {t: client.post("/v1/embed", json={"texts": [t]}).json()["data"][0]["dense"]
              for t in texts[:3]}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda t: client.post("/v1/embed", json={"texts": [t, t[::-1]]}),
                                texts))
    for text, answer in zip(texts[:3], answers[:3], strict=True):
        np.testing.assert_allclose(answer.json()["data"][0]["dense"], single[text], atol=1e-5)


def test_sparse_output_needs_bge_m3(client: httpx.Client) -> None:
    response = client.post("/v1/embed", json={"texts": ["x"], "return_sparse": True})
    assert response.status_code == 422
    assert "bge-m3" in response.json()["error"]["message"]


def test_rerank_by_embedding_similarity_orders_by_relevance(client: httpx.Client) -> None:
    documents = ["Recipe for apple pie with cinnamon.", "The dog barked at the postman.",
                 "Puppies need training and walks every day."]
    response = client.post("/v1/rerank", json={"query": "dog training", "documents": documents,
                                               "top_n": 2, "return_documents": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["method"] == "embedding-similarity"
    assert [r["index"] for r in body["results"]] == [2, 1]
    assert body["results"][0]["document"] == documents[2]
    scores = [r["relevance_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)


def test_bge_m3_dense_sparse_and_colbert_in_one_call(client: httpx.Client) -> None:
    texts = ["Der Hund bellt im Garten.", "Hallo"]
    response = client.post("/tiny/v1/embed", json={
        "texts": texts, "return_dense": True, "return_sparse": True, "return_colbert": True})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    for text, item in zip(texts, data, strict=True):
        assert len(item["dense"]) == 32
        assert len(item["colbert"]) == item["tokens"] - 1  # no vector for the CLS token
        assert all(len(vector) == 32 for vector in item["colbert"])
        assert item["sparse"] and all(token in text for token in item["sparse"])


def test_bge_m3_reports_truncation(client: httpx.Client) -> None:
    response = client.post("/tiny/v1/embed", json={"texts": ["Hallo", "Hallo Welt " * 50],
                                                    "max_length": 16})
    data = response.json()["data"]
    assert [item["truncated"] for item in data] == [False, True]
    assert data[1]["tokens"] == 16


def test_cross_encoder_rerank_through_flagreranker(client: httpx.Client) -> None:
    documents = ["eins", "zwei", "drei", "vier"]
    response = client.post("/tiny/v1/rerank", json={"query": "zwei", "documents": documents})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["method"] == "cross-encoder" and body["model"] == "tiny-reranker"
    assert sorted(r["index"] for r in body["results"]) == [0, 1, 2, 3]
    scores = [r["relevance_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)


def test_an_application_without_ocr_says_so(client: httpx.Client, upload) -> None:
    response = client.post("/res/v1/ocr", json={"source": {"path": "nothing.pdf"}})
    assert response.status_code == 503
    assert "OCR deployment is not part of this application" in response.json()["error"]["message"]


def test_the_openai_client_works_unchanged(service: dict[str, object], client: httpx.Client
                                           ) -> None:
    import base64

    import openai

    from tests.integration.conftest import API_KEY

    texts = ["Der Hund bellt.", "The cat sleeps."]
    embedded = client.post("/v1/embed", json={"texts": texts}).json()["data"]
    ours = [item["dense"] for item in embedded]
    sdk = openai.OpenAI(base_url=f"{service['url']}/v1", api_key=API_KEY, max_retries=0)
    # Unasked, the client requests base64 and decodes it itself; asked, it hands it over.
    for encoding in (openai.NOT_GIVEN, "float", "base64"):
        answer = sdk.embeddings.create(model="text-embedding-3-small", input=texts,
                                       encoding_format=encoding)
        assert answer.model == "all-minilm-l6-v2"
        assert [d.index for d in answer.data] == [0, 1]
        vectors = [np.frombuffer(base64.b64decode(d.embedding), dtype="<f4")
                   if isinstance(d.embedding, str) else d.embedding for d in answer.data]
        np.testing.assert_allclose(vectors, ours, atol=1e-6)
        assert answer.usage.total_tokens > 0
    single = sdk.embeddings.create(model="x", input="Der Hund bellt.")
    np.testing.assert_allclose(single.data[0].embedding, ours[0], atol=1e-6)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{service['url']}/v1", api_key="wrong",
                      max_retries=0).embeddings.create(model="x", input="a")
    with pytest.raises(openai.UnprocessableEntityError, match="dimensions"):
        sdk.embeddings.create(model="x", input="a", dimensions=8)
