"""Documents: type by magic bytes, text layer vs render, page selections, limits."""

from __future__ import annotations

import pytest

from serve_app.kernel.documents import Document, parse_pages, sniff
from serve_app.kernel.errors import (
    CorruptDocument,
    EncryptedDocument,
    InvalidInput,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from tests.fixtures.documents import (
    REAL_PAGE,
    corrupt_pdf,
    encrypted_pdf,
    scan_png,
    scanned_pdf,
    text_pdf,
)


def test_born_digital_page_comes_from_its_text_layer() -> None:
    with Document(text_pdf(), 10**8) as doc:
        page = doc.page(1, dpi=144)
    assert page.image is None and page.text_lines is not None
    assert next(line["text"] for line in page.text_lines) == "INVOICE NUMBER 4711"
    x0, y0, x1, y1 = page.text_lines[0]["bbox"]
    assert 0 < x0 < x1 <= page.width and 0 < y0 < y1 <= page.height  # page pixels at 144 dpi


def test_force_ocr_renders_a_born_digital_page() -> None:
    with Document(text_pdf(), 10**8) as doc:
        page = doc.page(1, dpi=100, force_ocr=True)
    assert page.text_lines is None and page.image is not None
    assert page.image.shape == (page.height, page.width, 3)


def test_scanned_pdf_page_is_rendered_at_the_asked_dpi() -> None:
    with Document(scanned_pdf(), 10**8) as doc:
        page = doc.page(1, dpi=72)
    assert page.image is not None and (page.width, page.height) == (595, 842)


def test_image_keeps_its_own_resolution() -> None:
    with Document(scan_png(dpi=200), 10**8) as doc:
        page = doc.page(1, dpi=72)
    assert page.image is not None and page.width == 1445


def test_real_tiff_scan_opens_at_native_size() -> None:
    with Document(REAL_PAGE.read_bytes(), 10**8) as doc:
        page = doc.page(1, dpi=300)
    assert (page.width, page.height) == (1457, 2084)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"hello, this is text", UnsupportedMediaType),
        (b"PK\x03\x04zipfile", UnsupportedMediaType),
        (b"", UnsupportedMediaType),
        (corrupt_pdf(), CorruptDocument),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, CorruptDocument),
        (encrypted_pdf(), EncryptedDocument),
    ],
    ids=["text", "zip", "empty", "corrupt-pdf", "truncated-png", "encrypted"],
)
def test_bad_documents_are_refused_with_their_reason(data: bytes, error: type) -> None:
    with pytest.raises(error), Document(data, 10**8) as doc:
        doc.page(1, dpi=72)


def test_a_pdf_named_like_an_image_is_still_a_pdf() -> None:
    assert sniff(text_pdf()) == "pdf"
    assert sniff(scan_png()) == "png"


def test_pixel_limit_stops_decompression_bombs_before_rendering() -> None:
    with Document(scanned_pdf(), max_page_pixels=1_000_000) as doc, pytest.raises(
        PayloadTooLarge, match="pixels"
    ):
        doc.page(1, dpi=300)
    with Document(scan_png(), max_page_pixels=1000) as doc, pytest.raises(PayloadTooLarge):
        doc.page(1, dpi=72)


@pytest.mark.parametrize(
    ("spec", "count", "expected"),
    [
        (None, 3, [1, 2, 3]),
        ("all", 2, [1, 2]),
        ("1-3,7", 10, [1, 2, 3, 7]),
        ("2, 2, 1", 3, [2, 1]),
        ("5", 5, [5]),
    ],
)
def test_page_selections(spec: str | None, count: int, expected: list[int]) -> None:
    assert parse_pages(spec, count, max_pages=50) == (expected, [])


def test_pages_past_the_end_are_left_out_and_named() -> None:
    assert parse_pages("1-2", 1, max_pages=50) == ([1], [2])
    assert parse_pages("3,1,9", 3, max_pages=50) == ([3, 1], [9])
    assert parse_pages("2-99999", 2, max_pages=50).missing[-1] == 1002  # listed, bounded
    with pytest.raises(InvalidInput, match="none of the pages '4-5'"):
        parse_pages("4-5", 3, max_pages=50)


@pytest.mark.parametrize("spec", ["0", "4", "3-1", "a", "1-", "1,,2", "-2", "1-2-3"])
def test_bad_page_selections_name_the_field(spec: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_pages(spec, 3, max_pages=50)
    assert caught.value.detail["field"] == "pages"


def test_too_many_pages_is_413() -> None:
    with pytest.raises(PayloadTooLarge, match="at most 2"):
        parse_pages("1-3", 3, max_pages=2)


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "TIFF"])
def test_images_reach_the_engines_with_their_own_pixels(kind: str) -> None:
    import io

    import numpy as np
    from PIL import Image

    source = Image.open(io.BytesIO(scan_png(dpi=150))).convert("L")
    buffer = io.BytesIO()
    source.save(buffer, format=kind, dpi=(150, 150))
    data = buffer.getvalue()
    with Document(data, 10**8) as doc:
        page = doc.page(1, dpi=300)
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert page.image is not None and np.array_equal(page.image, decoded)
    assert (page.width, page.height, page.dpi) == (source.width, source.height, 150)


def test_the_real_scan_keeps_its_pixels_and_resolution() -> None:
    import numpy as np
    from PIL import Image

    with Document(REAL_PAGE.read_bytes(), 10**8) as doc:
        page = doc.page(1, dpi=300)
    original = np.asarray(Image.open(REAL_PAGE).convert("RGB"))
    assert page.image is not None and np.array_equal(page.image, original)


def test_a_pdf_that_wraps_a_scan_yields_the_embedded_image_itself() -> None:
    import io

    import numpy as np
    import pymupdf
    from PIL import Image

    scan = Image.open(io.BytesIO(scan_png(dpi=150))).convert("RGB")
    png = io.BytesIO()
    scan.save(png, format="PNG")
    doc = pymupdf.open()
    page = doc.new_page(width=scan.width * 72 / 150, height=scan.height * 72 / 150)
    page.insert_image(page.rect, stream=png.getvalue())
    with Document(doc.tobytes(), 10**8) as opened:
        read = opened.page(1, dpi=300)
    assert (read.width, read.height, read.dpi, read.pixels) == (
        scan.width, scan.height, 150, "original")
    assert read.image is not None and np.array_equal(read.image, np.asarray(scan))
    with Document(scanned_pdf(), 10**8) as partial:  # an image on part of a page
        assert partial.page(1, dpi=100).pixels == "rendered"


def test_rendering_scans_one_after_another_does_not_pile_up_memory() -> None:
    """MuPDF's process-wide store kept every decoded scan until 256 MB (plus the
    allocator's share): the ingress grew by 750 MB in a 10-minute soak."""
    import psutil

    data = scanned_pdf()
    process = psutil.Process()
    with Document(data, 10**8) as doc:  # allocator and caches warmed once
        doc.page(1, 200)
    start = process.memory_info().rss
    for _ in range(120):
        with Document(data, 10**8) as doc:
            assert doc.page(1, 200).image is not None
    assert process.memory_info().rss - start < 150 * 2**20
