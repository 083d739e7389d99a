"""The page model: what every OCR engine, the text layer and segmentation return.

Engines build `Line`s, the pipeline wraps them in an `OcrPage`, the formats write
ALTO, PAGE-XML and hOCR from those pages, and the HTTP schemas use the very same
types, so a field means one thing everywhere. They are TypedDicts: plain dicts at
run time, which Ray pickles and orjson writes without a conversion step.
"""

from __future__ import annotations

from typing import (
    Annotated,
    Literal,
    NotRequired,  # pydantic needs these before 3.12
)

from pydantic import Field
from typing_extensions import TypedDict

Point = tuple[float, float]
Box = tuple[float, float, float, float]
Confidence = Annotated[float | None, Field(ge=0.0, le=1.0)]


class Word(TypedDict):
    """A word with its own box: tesseract's words, kraken's from its character cuts."""

    text: str
    bbox: Box
    confidence: NotRequired[Confidence]


class Line(TypedDict):
    """One text line in page pixels."""

    text: str
    bbox: Annotated[Box, Field(description="x0, y0, x1, y1 in page pixels")]
    polygon: NotRequired[list[Point] | None]
    baseline: NotRequired[Annotated[list[Point] | None,
                                    Field(description="kraken: the line's baseline.")]]
    region: NotRequired[Annotated[str | None,
                                  Field(description="kraken: the id of the line's region.")]]
    words: NotRequired[Annotated[list[Word] | None, Field(
        description="tesseract and kraken: each word's box and confidence.")]]
    confidence: NotRequired[Annotated[Confidence, Field(
        description="Absent where the engine gives none (llm).")]]


class OcrPage(TypedDict):
    """One page of /v1/ocr: its text layer or an engine's lines."""

    page: Annotated[int, Field(description="1-based page number")]
    width: int
    height: int
    dpi: int
    source: Literal["text-layer", "ocr"]
    engine: Annotated[str, Field(
        description="What produced the text: 'text-layer' or the OCR engine.")]
    text: str
    lines: list[Line]
    timing_ms: float
    model: NotRequired[Annotated[str, Field(
        description="The trained model that read the page (engines serving one: kraken).")]]
    model_version: NotRequired[Annotated[int | None, Field(
        description="Its version (GET /v1/models/{name}/versions).")]]
    engine_reason: NotRequired[Annotated[str, Field(
        description="engine=auto: why this engine read the page.")]]
    pixels: NotRequired[Annotated[Literal["original", "rendered"], Field(
        description="original: the engine read the file's own pixels (an image, or the "
        "scan embedded in a PDF page); rendered: a PDF page drawn at `dpi`.")]]


class BaselineLine(TypedDict):
    """A line kraken's segmenter found: its baseline and boundary polygon."""

    baseline: list[Point]
    boundary: list[Point]
    bbox: Box
    region: NotRequired[str | None]


class Region(TypedDict):
    id: str
    type: str
    boundary: list[Point]


class Segmentation(TypedDict):
    """What the segmenter finds on one page."""

    lines: list[BaselineLine]
    regions: list[Region]


class SegmentPage(TypedDict):
    """One page of /v1/segment."""

    page: int
    width: int
    height: int
    lines: list[BaselineLine]
    regions: list[Region]
    timing_ms: float
    model: NotRequired[Annotated[str, Field(
        description="The model that segmented the page: a trained one, or the catalog's.")]]
    model_version: NotRequired[Annotated[int | None, Field(
        description="The trained model's version; null for a model that was not trained "
        "here.")]]


def page_text(lines: list[Line]) -> str:
    """A page's text: its lines in reading order, one per row."""
    return "\n".join(line["text"] for line in lines)
