"""Training data in an extracted archive: what kraken can train on, and how much of it.

Recognition (`train`): line images (png, jpg, tif) each with a `.gt.txt` of the same stem
that holds its text, or page images with PAGE-XML or ALTO whose lines carry text and a
baseline. Segmentation (`segtrain`): page images with PAGE-XML or ALTO whose lines carry
baselines. The ingress scans an upload before a job exists, so too little data is a 422
that names what was found; the Trainer hands the same file list to ketos.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from serve_app.kernel.errors import InvalidInput

Kind = Literal["train", "segtrain"]
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})
MAX_REASONS = 5  # skipped files named in an error, at most


@dataclass(frozen=True)
class Dataset:
    """Usable training data under `root`: `files` (relative) are what ketos is given, line
    images for format "path", XML files for format "xml"; `samples` counts lines for
    `train` and pages for `segtrain`."""

    kind: Kind
    root: Path
    format: Literal["path", "xml"]
    files: tuple[str, ...]
    samples: int
    skipped: tuple[str, ...] = ()


def scan_dataset(root: Path, kind: Kind) -> Dataset:
    """What in `root` kraken can train `kind` on; 422 when the archive holds none of it or
    mixes line images with pages."""
    skipped: list[str] = []
    lines = _line_pairs(root, skipped) if kind == "train" else []
    pages = _xml_pages(root, kind, skipped)
    if lines and pages:
        raise InvalidInput("the archive mixes line images (.gt.txt) with PAGE/ALTO pages: "
                           "send one kind of training data per archive")
    if lines:
        return Dataset(kind, root, "path", tuple(lines), len(lines), tuple(skipped))
    return Dataset(kind, root, "xml", tuple(name for name, _ in pages),
                   sum(count for _, count in pages) if kind == "train" else len(pages),
                   tuple(skipped))


def _files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file() and not path.is_symlink())


def _line_pairs(root: Path, skipped: list[str]) -> list[str]:
    """Line images whose .gt.txt holds text."""
    found = []
    for path in _files(root):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        text_file = path.with_name(path.name[: -len(path.suffix)] + ".gt.txt")
        if not text_file.is_file():
            if any(root.rglob("*.gt.txt")):  # a line set with a gap, not a page set
                skipped.append(f"{path.relative_to(root)}: no .gt.txt beside it")
            continue
        if not text_file.read_text(encoding="utf-8", errors="replace").strip():
            skipped.append(f"{text_file.relative_to(root)}: empty")
            continue
        found.append(str(path.relative_to(root)))
    return found


def _xml_pages(root: Path, kind: Kind, skipped: list[str]) -> list[tuple[str, int]]:
    """(XML file, usable lines) per usable page."""
    pages = []
    for path in _files(root):
        if path.suffix.lower() != ".xml":
            continue
        name = str(path.relative_to(root))
        try:
            image, lines = _read_page(path)
        except (ET.ParseError, ValueError) as exc:
            skipped.append(f"{name}: {exc}")
            continue
        image_path = (path.parent / image).resolve() if image else None
        if image_path is None or not image_path.is_relative_to(root.resolve()) or (
                not image_path.is_file()):
            skipped.append(f"{name}: its image {image!r} is not in the archive")
            continue
        usable = sum(1 for text, has_baseline in lines
                     if has_baseline and (kind == "segtrain" or text.strip()))
        if not usable:
            what = "baselines" if kind == "segtrain" else "lines with text and a baseline"
            skipped.append(f"{name}: no {what}")
            continue
        pages.append((name, usable))
    return pages


def _read_page(path: Path) -> tuple[str | None, list[tuple[str, bool]]]:
    """(image file name, [(line text, has a baseline)]) of a PAGE-XML or ALTO file."""
    root = ET.parse(path).getroot()
    namespace = root.tag[1:].split("}")[0] if root.tag.startswith("{") else ""
    q = f"{{{namespace}}}" if namespace else ""
    if root.tag.endswith("PcGts"):
        page = root.find(f"{q}Page")
        if page is None:
            raise ValueError("PAGE-XML without a Page element")
        lines = []
        for line in page.iter(f"{q}TextLine"):
            baseline = line.find(f"{q}Baseline")
            unicode = line.find(f"{q}TextEquiv/{q}Unicode")
            lines.append(((unicode.text or "") if unicode is not None else "",
                          baseline is not None and bool(baseline.get("points"))))
        return page.get("imageFilename"), lines
    if root.tag.endswith("alto"):
        source = root.find(f"{q}Description/{q}sourceImageInformation/{q}fileName")
        lines = [(" ".join(s.get("CONTENT", "") for s in line.iter(f"{q}String")),
                  bool(line.get("BASELINE")))
                 for line in root.iter(f"{q}TextLine")]
        return (source.text.strip() if source is not None and source.text else None), lines
    raise ValueError("neither PAGE-XML nor ALTO")


def too_few(dataset: Dataset, minimum: int) -> InvalidInput | None:
    """The 422 for a dataset below `minimum` samples, naming what was found."""
    if dataset.samples >= minimum:
        return None
    unit = "lines" if dataset.kind == "train" else "pages"
    message = (f"the archive holds {dataset.samples} usable training {unit}; at least "
               f"{minimum} are needed (TRAINING_MIN_SAMPLES)")
    if dataset.skipped:
        message += "; skipped: " + "; ".join(dataset.skipped[:MAX_REASONS])
    return InvalidInput(message, {"samples": dataset.samples, "minimum": minimum,
                                  "skipped": list(dataset.skipped[:MAX_REASONS])})
