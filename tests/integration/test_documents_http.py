"""OCR and segmentation through HTTP on the embedded default models."""

from __future__ import annotations

import json

import httpx
import pytest

from serve_app.kernel.formats import ALTO_NS, PAGE_NS, XHTML_NS
from tests.fixtures.documents import LINES, mixed_pdf, scan_png, scanned_pdf, text_pdf
from tests.fixtures.xsd import assert_valid
from tests.integration.conftest import MAX_PAGES

NS = {"a": ALTO_NS, "p": PAGE_NS, "h": XHTML_NS}

pytestmark = pytest.mark.integration


def _words(text: str) -> set[str]:
    return set(text.upper().replace("\n", " ").split())


def test_born_digital_pdf_comes_from_the_text_layer(client: httpx.Client, upload) -> None:
    path = upload("docs/born-digital.pdf", text_pdf(pages=2))
    response = client.post("/v1/ocr", json={"source": {"path": path}, "pages": "2",
                                            "formats": ["json", "text"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["page_count"] == 2
    [page] = body["pages"]
    assert page["page"] == 2 and page["source"] == "text-layer"
    assert [line["text"] for line in page["lines"]] == LINES
    assert "polygon" not in page["lines"][0]  # fields without a value are left out
    assert body["text"] == "\n".join(LINES)


def test_a_long_pdf_keeps_its_page_order_when_processes_read_its_text_layers(
        client: httpx.Client) -> None:
    # Long enough for the ingress's text-layer processes; page 5 is a scan.
    response = client.post("/v1/ocr/upload",
                           files={"file": ("long.pdf", mixed_pdf(MAX_PAGES, scanned={5}))},
                           data={"options": json.dumps({"dpi": 100})})
    assert response.status_code == 200, response.text
    pages = response.json()["pages"]
    assert [page["page"] for page in pages] == list(range(1, MAX_PAGES + 1))
    assert [page["lines"][0]["text"] for page in pages if page["page"] != 5] == [
        f"page {number}" for number in range(1, MAX_PAGES + 1) if number != 5]
    assert {page["source"] for page in pages if page["page"] != 5} == {"text-layer"}
    assert pages[4]["source"] == "ocr" and "HAMBURG" in _words(pages[4]["text"])


def test_scanned_pdf_is_ocred_by_rapidocr(client: httpx.Client, upload) -> None:
    path = upload("docs/scanned.pdf", scanned_pdf())
    response = client.post("/v1/ocr", json={"source": {"path": path}, "dpi": 150})
    assert response.status_code == 200, response.text
    [page] = response.json()["pages"]
    assert page["source"] == "ocr" and page["engine"] == "rapidocr"
    assert {"INVOICE", "HAMBURG", "HARBOUR", "EURO"} <= _words(page["text"])
    line = page["lines"][0]
    assert len(line["polygon"]) == 4 and 0 < line["confidence"] <= 1
    x0, y0, x1, y1 = line["bbox"]
    assert 0 <= x0 < x1 <= page["width"] and 0 <= y0 < y1 <= page["height"]


def test_tesseract_reads_a_scan_and_auto_picks_it_for_german(client: httpx.Client, upload
                                                              ) -> None:
    path = upload("docs/tesseract.pdf", scanned_pdf())
    asked = client.post("/v1/ocr", json={"source": {"path": path}, "engine": "tesseract",
                                         "languages": ["eng"], "dpi": 150})
    assert asked.status_code == 200, asked.text
    [page] = asked.json()["pages"]
    assert page["engine"] == "tesseract"
    assert {"INVOICE", "HAMBURG", "HARBOUR"} <= _words(page["text"])
    assert all(0 <= line["confidence"] <= 1 for line in page["lines"])
    auto = client.post("/v1/ocr", json={"source": {"path": path}, "languages": ["deu"],
                                        "dpi": 150})
    assert auto.json()["pages"][0]["engine"] == "tesseract"
    plain = client.post("/v1/ocr", json={"source": {"path": path}, "dpi": 150})
    assert plain.json()["pages"][0]["engine"] == "rapidocr"
    unknown = client.post("/v1/ocr", json={"source": {"path": path}, "engine": "tesseract",
                                           "languages": ["klingon"]})
    assert unknown.status_code == 422 and "installed" in unknown.json()["error"]["message"]


def test_force_ocr_reads_a_born_digital_page_from_its_pixels(client: httpx.Client, upload
                                                              ) -> None:
    path = upload("docs/forced.pdf", text_pdf())
    response = client.post("/v1/ocr", json={"source": {"path": path}, "force_ocr": True,
                                            "dpi": 150, "formats": ["text"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "pages" not in body
    assert {"INVOICE", "4711"} <= _words(body["text"])


def test_uploaded_image_is_ocred(client: httpx.Client) -> None:
    response = client.post(
        "/v1/ocr/upload",
        files={"file": ("letter.png", scan_png(), "image/png")},
        data={"options": json.dumps({"formats": ["text"]})},
    )
    assert response.status_code == 200, response.text
    assert {"TOTAL", "AMOUNT", "250"} <= _words(response.json()["text"])


def test_segmentation_finds_every_text_line(client: httpx.Client, upload) -> None:
    path = upload("docs/lines.pdf", scanned_pdf())
    response = client.post("/v1/segment", json={"source": {"path": path}, "dpi": 150})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "kraken-blla"
    [page] = body["pages"]
    assert len(page["lines"]) == len(LINES)
    for line in page["lines"]:
        assert len(line["baseline"]) >= 2 and len(line["boundary"]) >= 3
    # Lines come top to bottom, as on the page.
    tops = [line["bbox"][1] for line in page["lines"]]
    assert tops == sorted(tops)
    assert page["regions"] and page["regions"][0]["type"]


def test_segmentation_of_an_upload(client: httpx.Client) -> None:
    response = client.post("/v1/segment/upload",
                           files={"file": ("scan.pdf", scanned_pdf(), "application/pdf")},
                           data={"options": '{"dpi": 150}'})
    assert response.status_code == 200, response.text
    assert len(response.json()["pages"][0]["lines"]) == len(LINES)


def test_kraken_recognises_the_lines_that_segmentation_finds(client: httpx.Client, upload
                                                             ) -> None:
    """engine=kraken: blla baselines, then kraken recognition (a random-weight model here,
    so its text is noise; geometry and the path through both deployments are real)."""
    path = upload("docs/letter.pdf", scanned_pdf())
    response = client.post("/v1/ocr", json={"source": {"path": path}, "engine": "kraken",
                                            "dpi": 150, "formats": ["json", "alto", "page"]})
    assert response.status_code == 200, response.text
    body = response.json()
    [page] = body["pages"]
    assert page["engine"] == "kraken" and page["source"] == "ocr"
    assert len(page["lines"]) == len(LINES)
    for line in page["lines"]:
        assert len(line["baseline"]) >= 2 and len(line["polygon"]) >= 3 and line["region"]
        assert line["confidence"] is None or 0 <= line["confidence"] <= 1
    alto = assert_valid("alto", body["alto"])
    assert len(alto.findall(".//a:TextLine", NS)) == len(LINES)
    assert all(line.get("BASELINE") for line in alto.iterfind(".//a:TextLine", NS))
    [page_xml] = body["page_xml"]
    root = assert_valid("page", page_xml)
    assert len(root.findall(".//p:Baseline", NS)) == len(LINES)


def test_surya_reads_every_page_of_a_scan(client: httpx.Client, upload) -> None:
    """engine=surya: detection and recognition in the OCR replica, the document's pages
    batched into surya's calls (random-weight checkpoints: one line per page, noise)."""
    import pymupdf

    scans = pymupdf.open(stream=scanned_pdf(), filetype="pdf")
    for _ in range(2):
        scans.insert_pdf(pymupdf.open(stream=scanned_pdf(), filetype="pdf"))
    path = upload("docs/surya.pdf", scans.tobytes(deflate=True, garbage=3))
    response = client.post("/v1/ocr", json={"source": {"path": path}, "engine": "surya",
                                            "dpi": 100, "formats": ["json", "alto"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [page["engine"] for page in body["pages"]] == ["surya"] * 3
    for page in body["pages"]:
        for line in page["lines"]:
            x0, y0, x1, y1 = line["bbox"]
            assert 0 <= x0 < x1 <= page["width"] and 0 <= y0 < y1 <= page["height"]
            assert 0 <= line["confidence"] <= 1
    assert len(assert_valid("alto", body["alto"]).findall(".//a:Page", NS)) == 3


def test_every_format_from_one_request(client: httpx.Client, upload) -> None:
    """A born-digital page and a scanned one: ALTO and hOCR hold both, PAGE-XML one file
    each, and every format carries the same text as the JSON pages."""
    import pymupdf

    merged = pymupdf.open(stream=text_pdf(), filetype="pdf")
    merged.insert_pdf(pymupdf.open(stream=scanned_pdf(), filetype="pdf"))
    path = upload("docs/mixed.pdf", merged.tobytes())
    response = client.post("/v1/ocr", json={"source": {"path": path}, "dpi": 150,
                                            "formats": ["json", "text", "alto", "page", "hocr"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [page["source"] for page in body["pages"]] == ["text-layer", "ocr"]
    json_words = [page["text"].split() for page in body["pages"]]

    alto = assert_valid("alto", body["alto"])
    alto_pages = alto.findall(".//a:Page", NS)
    assert [[s.get("CONTENT") for s in p.iterfind(".//a:String", NS)]
            for p in alto_pages] == json_words
    assert len(body["page_xml"]) == 2
    for number, (document, page) in enumerate(zip(body["page_xml"], body["pages"],
                                                  strict=True), 1):
        root = assert_valid("page", document)
        assert root.find(".//p:Page", NS).get("imageFilename") == (
            f"mixed.pdf#page={number}")
        assert [u.text for u in root.iterfind(
            ".//p:TextLine/p:TextEquiv/p:Unicode", NS)] == [
            line["text"] for line in page["lines"]]
    from lxml import etree

    hocr = etree.fromstring(body["hocr"].encode())
    pages = hocr.findall(".//h:div[@class='ocr_page']", NS)
    assert [[w.text for w in p.iterfind(".//h:span[@class='ocrx_word']", NS)]
            for p in pages] == json_words


def test_cli_ocrs_a_folder_through_the_service(service: dict[str, object], tmp_path) -> None:
    import subprocess
    import sys

    from tests.integration.conftest import API_KEY

    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    (inbox / "a.pdf").write_bytes(text_pdf())
    (inbox / "b.png").write_bytes(scan_png())
    (inbox / "notes.txt").write_text("not a document")
    done = subprocess.run(
        [sys.executable, "-m", "serve_app.cli", "ocr", str(inbox), "--out", str(out),
         "--url", str(service["url"]), "--key", API_KEY, "--dpi", "150"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "2/2" in done.stderr  # the progress bar reached the end
    assert (out / "a.txt").read_text().splitlines() == LINES
    assert "HAMBURG" in (out / "b.txt").read_text().upper()
    assert json.loads((out / "b.json").read_text())["pages"][0]["source"] == "ocr"


def test_pages_past_the_end_are_named_not_refused(client: httpx.Client, upload) -> None:
    path = upload("docs/two-pages.pdf", text_pdf(pages=2))
    response = client.post("/v1/ocr", json={"source": {"path": path}, "pages": "2-4"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [page["page"] for page in body["pages"]] == [2]
    assert body["missing_pages"] == [3, 4]
    whole = client.post("/v1/ocr", json={"source": {"path": path}}).json()
    assert "missing_pages" not in whole and len(whole["pages"]) == 2
    none = client.post("/v1/ocr", json={"source": {"path": path}, "pages": "3-4"})
    assert none.status_code == 422 and "none of the pages" in none.json()["error"]["message"]


def test_auto_reads_a_real_fraktur_scan_with_the_ensemble_better_than_any_engine_alone(
        client: httpx.Client) -> None:
    """Nothing but the file: auto finds Fraktur on the page and the vote of tesseract
    Fraktur, tesseract frk and rapidocr beats each of them run directly on the original."""
    from tests.fixtures.documents import REAL_PAGE, REAL_PAGE_TRUTH
    from tests.fixtures.ocr_truth import cer, ground_truth, rapidocr_on_file, tesseract_on_file

    response = client.post("/v1/ocr/upload", files={"file": (REAL_PAGE.name,
                                                              REAL_PAGE.read_bytes())},
                           data={"options": json.dumps({"engine": "auto"})})
    assert response.status_code == 200, response.text
    [page] = response.json()["pages"]
    assert page["engine"] == "ensemble"
    assert "Fraktur" in page["engine_reason"]
    assert (page["width"], page["height"]) == (1457, 2084)  # the scan's own pixels
    assert page["pixels"] == "original"
    reference, _ = ground_truth(REAL_PAGE_TRUTH)
    direct = {"tesseract Fraktur": cer(tesseract_on_file(REAL_PAGE, "Fraktur"), reference),
              "tesseract frk": cer(tesseract_on_file(REAL_PAGE, "frk"), reference),
              "rapidocr": cer(rapidocr_on_file(REAL_PAGE), reference)}
    combined = cer(page["text"], reference)
    assert all(combined < single for single in direct.values()), (combined, direct)
