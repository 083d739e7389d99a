"""PyMuPDF: open and validate a PDF or image, read its text layer, render its pages.

Everything a client uploads passes through here first, so every failure mode of
a document (wrong type, corrupt, encrypted, too many pages, too many pixels)
becomes a ServiceError with the right status before a model sees a byte.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from PIL import Image

from serve_app.kernel.errors import (
    CorruptDocument,
    EncryptedDocument,
    InvalidInput,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from serve_app.kernel.pages import Line

# PyMuPDF 2 imports its layout analysis (onnxruntime, networkx) and pymupdf4llm whenever
# they are installed, and its own requirements install them: 0.45 s and 60 MB more in
# every process that reads a document, for features we never call. Marked absent here,
# they are skipped as PyMuPDF skips them when they are not installed.
for _optional in ("pymupdf.layout", "pymupdf4llm"):
    sys.modules.setdefault(_optional, None)  # type: ignore[arg-type]
import pymupdf  # noqa: E402

# Magic bytes decide the type; a client's filename or content type never does.
_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
)
# A page with at least this many visible characters in its text layer is born-digital.
BORN_DIGITAL_MIN_CHARS = 16
# An image covering this share of a PDF page makes it a scanned page.
SCAN_COVERAGE = 0.95
# Missing pages named in a response, at most (a selection like "1-99999" of a scan).
MAX_MISSING_LISTED = 1000


def sniff(data: bytes) -> str:
    """The document type from its first bytes: 'pdf', 'png', 'jpeg', 'tiff', ..."""
    if b"%PDF-" in data[:1024]:
        return "pdf"
    for magic, kind in _IMAGE_MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    raise UnsupportedMediaType(
        "not a PDF or an image: send a PDF, PNG, JPEG, TIFF, GIF, BMP or WebP file",
        detail={"first_bytes": data[:8].hex()},
    )


class Selection(NamedTuple):
    """The selected pages that exist, in the order asked, and the ones that do not."""

    pages: list[int]
    missing: list[int]


def parse_pages(spec: str | None, page_count: int, max_pages: int) -> Selection:
    """1-based page numbers for a selection like "1-3,7" (None or "all": every page).

    Pages past the end are left out and listed as missing, so "1-2" of a one-page scan
    reads its page; only a selection in which no page exists is refused."""
    if spec is None or spec.strip().lower() in ("", "all"):
        asked = list(range(1, page_count + 1))
    else:
        asked = []
        for part in spec.split(","):
            part = part.strip()
            try:
                if "-" in part:
                    first_text, last_text = part.split("-", 1)
                    first, last = int(first_text), int(last_text)
                else:
                    first = last = int(part)
            except ValueError:
                raise InvalidInput(
                    f"invalid page selection {spec!r}: use numbers and ranges like '1-3,7'",
                    detail={"field": "pages"},
                ) from None
            if first < 1 or first > last:
                raise InvalidInput(
                    f"page range {part!r} is not a range of pages: pages count from 1",
                    detail={"field": "pages", "page_count": page_count},
                )
            asked.extend(range(first, min(last, page_count + MAX_MISSING_LISTED) + 1))
        asked = list(dict.fromkeys(asked))
    pages = [number for number in asked if number <= page_count]
    missing = [number for number in asked if number > page_count]
    if not pages:
        raise InvalidInput(
            f"none of the pages {spec!r} is in the document: it has pages 1-{page_count}",
            detail={"field": "pages", "page_count": page_count},
        )
    if len(pages) > max_pages:
        raise PayloadTooLarge(
            f"{len(pages)} pages selected; at most {max_pages} per request",
            detail={"max_pages": max_pages},
        )
    return Selection(pages, missing)


@dataclass
class Page:
    """One selected page: either its text layer or its pixels (for a model)."""

    number: int
    width: int
    height: int
    dpi: int
    text_lines: list[Line] | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    # "original": the file's own pixels (an image, or a PDF page's embedded scan);
    # "rendered": a PDF page drawn at the request's dpi.
    pixels: str = "original"


class Document:
    """An opened, validated PDF or image; use as a context manager. Like the PyMuPDF
    document it wraps, it is not thread-safe: one thread at a time."""

    def __init__(self, data: bytes, max_page_pixels: int):
        self.kind = sniff(data)
        self._data = data
        self.max_page_pixels = max_page_pixels
        try:
            self._doc = pymupdf.open(stream=data, filetype=self.kind)
        except Exception as exc:  # MuPDF raises several types for unreadable input
            raise CorruptDocument(
                f"the {self.kind.upper()} file could not be read: {exc}",
                detail={"type": self.kind},
            ) from None
        if self._doc.needs_pass or self._doc.is_encrypted:
            self._doc.close()
            raise EncryptedDocument(
                "the PDF is encrypted or password-protected: send an unencrypted copy",
            )
        self.page_count: int = self._doc.page_count
        if self.page_count < 1:
            self._doc.close()
            raise CorruptDocument(f"the {self.kind.upper()} file has no pages")

    def __enter__(self) -> Document:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._doc.close()
        # MuPDF keeps decoded images in one process-wide store of up to 256 MB, which
        # nothing asks for again once their document is closed: the soak saw the ingress
        # grow by 750 MB in 10 minutes of one-page scans (docs/soak.md). Empty it.
        pymupdf.TOOLS.store_shrink(100)

    def page(self, number: int, dpi: int, force_ocr: bool = False) -> Page:
        """Text layer for born-digital PDF pages, else the page rendered to RGB pixels."""
        try:
            if self.kind == "pdf":
                return self._pdf_page(number, dpi, force_ocr)
            return self._image_page(number)
        except (PayloadTooLarge, InvalidInput):
            raise
        except Image.DecompressionBombError as exc:
            raise PayloadTooLarge(f"page {number} is a decompression bomb: {exc}") from None
        except Exception as exc:
            raise CorruptDocument(f"page {number} could not be read: {exc}") from None

    def text_page(self, number: int, dpi: int) -> Page | None:
        """The page from its text layer if it is born-digital, else None (it needs its
        pixels read: Document.page with force_ocr)."""
        try:
            return self._text_page(number, dpi)
        except Exception as exc:
            raise CorruptDocument(f"page {number} could not be read: {exc}") from None

    def _text_page(self, number: int, dpi: int) -> Page | None:
        if self.kind != "pdf":
            return None
        page = self._doc[number - 1]
        scale = dpi / 72.0
        lines = _text_layer(page, scale)
        if sum(len(line["text"].replace(" ", "")) for line in lines) < BORN_DIGITAL_MIN_CHARS:
            return None
        width, height = round(page.rect.width * scale), round(page.rect.height * scale)
        return Page(number, width, height, dpi, text_lines=lines)

    def _pdf_page(self, number: int, dpi: int, force_ocr: bool) -> Page:
        if not force_ocr and (text := self._text_page(number, dpi)) is not None:
            return text
        page = self._doc[number - 1]
        scale = dpi / 72.0
        width, height = round(page.rect.width * scale), round(page.rect.height * scale)
        scan = self._embedded_scan(page, number)
        if scan is not None:
            return scan
        self._check_pixels(number, width, height)
        pix = page.get_pixmap(matrix=pymupdf.Matrix(scale, scale), alpha=False)
        return Page(number, pix.width, pix.height, dpi, image=_rgb_array(pix), pixels="rendered")

    def _embedded_scan(self, page: pymupdf.Page, number: int) -> Page | None:
        """A scanned page (one upright image covering the page, as scanners write PDFs):
        the image's own pixels at its own resolution, as OCRmyPDF reads them, instead of
        a render at `dpi` that would resample the scan."""
        infos = page.get_image_info(xrefs=True)
        if len(infos) != 1 or page.rotation:
            return None
        info = infos[0]
        a, b, c, d, _, _ = info["transform"]
        covered = pymupdf.Rect(info["bbox"]) & page.rect
        if not info.get("xref") or b or c or a <= 0 or d <= 0 or (
                covered.get_area() < SCAN_COVERAGE * page.rect.get_area()):
            return None
        width, height = int(info["width"]), int(info["height"])
        self._check_pixels(number, width, height)
        pix = pymupdf.Pixmap(self._doc, info["xref"])
        if (pix.width, pix.height) != (width, height):
            return None
        dpi = round(width / (page.rect.width / 72.0))
        return Page(number, width, height, dpi, image=_rgb_array(pix), pixels="original")

    def _image_page(self, number: int) -> Page:
        """The image's own pixels, decoded by PIL: never resampled by a re-render, which
        blurs a scan and costs OCR accuracy. The DPI comes from the file's metadata."""
        with Image.open(io.BytesIO(self._data)) as image:
            image.seek(number - 1)  # the header tells the size before anything is decoded
            width, height = image.size
            self._check_pixels(number, width, height)
            dpi = _metadata_dpi(image.info.get("dpi"))
            pixels = _rgb(image)
        if dpi is None:  # no metadata: what PyMuPDF assumes for the image
            dpi = round(72 * width / self._doc[number - 1].rect.width)
        return Page(number, width, height, dpi, image=pixels)

    def _check_pixels(self, number: int, width: int, height: int) -> None:
        if width * height > self.max_page_pixels:
            raise PayloadTooLarge(
                f"page {number} would be {width}x{height} pixels; at most "
                f"{self.max_page_pixels} pixels per page (lower dpi or split the scan)",
                detail={"page": number, "width": width, "height": height},
            )


def blank_pdf() -> bytes:
    """A PDF of one empty page: what a text-layer process reads to warm up."""
    with pymupdf.open() as doc:
        doc.new_page()
        return doc.tobytes()


def text_pages(data: bytes, numbers: list[int], dpi: int, max_page_pixels: int
               ) -> list[Page | None]:
    """Document.text_page of each of `numbers`, on a document of its own: what a worker
    process runs (serve_app/text_layers.py)."""
    with Document(data, max_page_pixels) as doc:
        return [doc.text_page(number, dpi) for number in numbers]


def _text_layer(page: pymupdf.Page, scale: float) -> list[Line]:
    """The page's text lines in reading order, in page pixels at `scale` (plain dicts:
    they cross from the text-layer processes by pickle, and out as JSON, as they are)."""
    lines: list[Line] = []
    for block in page.get_text("dict", sort=True)["blocks"]:
        for line in block.get("lines", ()):
            text = "".join(span["text"] for span in line["spans"]).strip()
            if text:
                x0, y0, x1, y1 = line["bbox"]
                lines.append({"text": text, "bbox": (round(x0 * scale, 1), round(y0 * scale, 1),
                                                     round(x1 * scale, 1), round(y1 * scale, 1)),
                              "confidence": 1.0})
    return lines


def _metadata_dpi(value: object) -> int | None:
    """The horizontal DPI a file declares (PIL's info["dpi"]), if it is plausible."""
    try:
        dpi = round(float(value[0]))  # type: ignore[index]
    except (TypeError, ValueError, IndexError):
        return None
    return dpi if 10 <= dpi <= 10_000 else None


def _rgb(image: Image.Image) -> np.ndarray:
    """8-bit RGB from any PIL mode: 16-bit greys scaled, transparency on white."""
    if image.mode.startswith("I"):  # 16/32-bit greys: PIL's convert would clip them
        image = image.point(lambda value: value * (1 / 256)).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in
                                                 image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB")).copy()


def _rgb_array(pix: pymupdf.Pixmap) -> np.ndarray:
    if pix.alpha:
        pix = pymupdf.Pixmap(pix, 0)
    if pix.n != 3:
        pix = pymupdf.Pixmap(pymupdf.csRGB, pix)
    array = np.frombuffer(pix.samples, dtype=np.uint8).reshape(pix.height, pix.width, pix.n)
    return array.copy()
