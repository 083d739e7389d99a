"""Every bad input gets its status and the one error body, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.fixtures.documents import corrupt_pdf, encrypted_pdf, text_pdf
from tests.integration.conftest import API_KEY, MAX_PAGES

pytestmark = pytest.mark.integration


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file()}


@pytest.fixture
def unchanged(service: dict[str, object]):  # type: ignore[no-untyped-def]
    """Asserts after the test that no file under DATA_DIR was added or changed."""
    root = Path(str(service["data_dir"]))
    before = _files(root)
    yield
    assert _files(root) == before


def _error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"code", "message", "detail", "request_id"}
    assert API_KEY not in response.text
    return error


@pytest.mark.parametrize("key", [None, "", "wrong-key", API_KEY + "x", API_KEY[:-1]])
def test_missing_or_wrong_key_is_401(anonymous: httpx.Client, key: str | None, unchanged) -> None:
    headers = {} if key is None else {"X-API-Key": key}
    for method, path in (("POST", "/v1/embed"), ("GET", "/v1/capacity"), ("POST", "/v1/ocr")):
        response = anonymous.request(method, path, headers=headers, json={"texts": ["x"]})
        _error(response, 401)


def test_key_is_checked_before_the_body(anonymous: httpx.Client) -> None:
    response = anonymous.post("/v1/embed", content=b"{not json", headers={"X-API-Key": "no"})
    _error(response, 401)


def test_unknown_route_is_404(client: httpx.Client) -> None:
    assert _error(client.get("/v1/nothing-here"), 404)["code"] == "not_found"


def test_malformed_json_is_422(client: httpx.Client, unchanged) -> None:
    response = client.post("/v1/embed", content=b'{"texts": [',
                           headers={"Content-Type": "application/json"})
    _error(response, 422)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/embed", {"texts": "not a list"}, "body.texts"),
        ("/v1/embed", {"texts": [1, 2]}, "body.texts.0"),
        ("/v1/embed", {"texts": []}, "body.texts"),
        ("/v1/embed", {"texts": ["a"], "max_length": "long"}, "body.max_length"),
        ("/v1/embed", {"texts": ["a"], "unknown": 1}, "body.unknown"),
        ("/v1/rerank", {"query": "q"}, "body.documents"),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, "body.top_n"),
        ("/v1/ocr", {"source": {}}, "body.source.PathSource.path"),
        ("/v1/ocr", {"source": {"path": "a.pdf"}, "dpi": 5000}, "body.dpi"),
        ("/v1/ocr", {"source": {"path": "a.pdf"}, "formats": ["docx"]}, "body.formats.0"),
        ("/v1/ocr", {"source": {"path": "a.pdf"}, "engine": "magic"}, "body.engine"),
    ],
)
def test_wrong_field_types_are_422_naming_the_field(
    client: httpx.Client, path: str, body: dict[str, object], field: str, unchanged
) -> None:
    error = _error(client.post(path, json=body), 422)
    assert any(item["field"] == field for item in error["detail"]), error


def test_non_document_is_415_whatever_its_name(client: httpx.Client, upload, unchanged) -> None:
    response = client.post("/v1/ocr/upload",
                           files={"file": ("invoice.pdf", b"just text, no PDF", "application/pdf")})
    assert _error(response, 415)["code"] == "unsupported_media_type"


def test_non_document_by_path_is_415(client: httpx.Client, upload) -> None:
    path = upload("bad/notes.pdf", b"MZ\x90\x00 an executable")
    _error(client.post("/v1/ocr", json={"source": {"path": path}}), 415)


def test_corrupt_pdf_is_422(client: httpx.Client, upload) -> None:
    path = upload("bad/corrupt.pdf", corrupt_pdf())
    assert _error(client.post("/v1/ocr", json={"source": {"path": path}}), 422)["code"] == (
        "corrupt_document")


def test_encrypted_pdf_is_422_with_what_to_do(client: httpx.Client, upload) -> None:
    path = upload("bad/encrypted.pdf", encrypted_pdf())
    error = _error(client.post("/v1/segment", json={"source": {"path": path}}), 422)
    assert error["code"] == "encrypted_document" and "unencrypted" in error["message"]


@pytest.mark.parametrize("path", ["../secret.pdf", "/etc/passwd", "a/../../b.pdf"])
def test_path_outside_the_upload_base_is_403(client: httpx.Client, path: str, unchanged
                                             ) -> None:
    _error(client.post("/v1/ocr", json={"source": {"path": path}}), 403)


def test_missing_file_is_404(client: httpx.Client, unchanged) -> None:
    _error(client.post("/v1/ocr", json={"source": {"path": "no/such.pdf"}}), 404)


def test_url_host_not_on_the_allowlist_is_403(client: httpx.Client, unchanged) -> None:
    response = client.post("/v1/ocr", json={"source": {"url": "http://127.0.0.1:1/a.pdf"}})
    _error(response, 403)


def test_too_many_pages_is_413(client: httpx.Client, upload) -> None:
    path = upload("bad/long.pdf", text_pdf(pages=MAX_PAGES + 1))
    _error(client.post("/v1/ocr", json={"source": {"path": path}}), 413)


def test_page_outside_the_document_is_422(client: httpx.Client, upload) -> None:
    path = upload("bad/short.pdf", text_pdf(pages=1))
    error = _error(client.post("/v1/ocr", json={"source": {"path": path}, "pages": "2"}), 422)
    assert error["detail"]["page_count"] == 1


def test_engine_that_is_not_deployed_is_422(client: httpx.Client, upload) -> None:
    """The tiny app's OCR holds tesseract only."""
    path = upload("bad/engine.pdf", text_pdf())
    error = _error(client.post("/tiny/v1/ocr", json={"source": {"path": path},
                                                     "engine": "surya"}), 422)
    assert error["detail"]["available"] == ["auto", "tesseract"]


def test_empty_upload_is_422(client: httpx.Client, unchanged) -> None:
    response = client.post("/v1/ocr/upload", files={"file": ("a.pdf", b"", "application/pdf")})
    _error(response, 422)


def test_bad_upload_options_are_422(client: httpx.Client) -> None:
    response = client.post("/v1/ocr/upload", files={"file": ("a.pdf", text_pdf())},
                           data={"options": '{"dpi": "high"}'})
    error = _error(response, 422)
    assert error["detail"][0]["field"] == "options.dpi"


def test_too_many_texts_is_413(client: httpx.Client) -> None:
    _error(client.post("/v1/embed", json={"texts": ["a"] * 65}), 413)  # the test limit: 64


def test_request_id_is_returned_and_in_the_error(client: httpx.Client) -> None:
    response = client.post("/v1/ocr", json={"source": {"path": "no/such.pdf"}},
                           headers={"X-Request-ID": "trace-abc-123"})
    assert response.headers["x-request-id"] == "trace-abc-123"
    assert response.json()["error"]["request_id"] == "trace-abc-123"


def test_declared_oversized_body_is_413_before_reading(client: httpx.Client, unchanged) -> None:
    body = b"x" * (5 * 1024 * 1024)  # the test service allows 4 MiB
    response = client.post("/v1/ocr/upload", content=body,
                           headers={"Content-Type": "application/octet-stream"})
    _error(response, 413)


def test_chunked_oversized_body_is_413_while_streaming(client: httpx.Client, unchanged) -> None:
    def chunks():  # no Content-Length: the limit must be counted as bytes arrive
        for _ in range(6):
            yield b"x" * (1024 * 1024)

    response = client.post("/v1/embed", content=chunks(),
                           headers={"Content-Type": "application/json"})
    _error(response, 413)


def test_oversized_file_by_path_is_413(client: httpx.Client, upload) -> None:
    path = upload("bad/huge.pdf", b"%PDF-1.7\n" + b"0" * (5 * 1024 * 1024))
    _error(client.post("/v1/ocr", json={"source": {"path": path}}), 413)
