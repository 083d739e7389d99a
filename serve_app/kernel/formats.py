"""ALTO v4, PAGE-XML 2019 and hOCR from the one page model every engine returns.

The page model is the JSON page of /v1/ocr: width, height, dpi, engine and lines with
text, bbox, an optional polygon and baseline, an optional confidence and region. Lines
are grouped into blocks by their region (kraken's segmentation names one); lines without
one share a block per page. Where an engine gives word boxes (tesseract, kraken) ALTO and hOCR
use them; the others give geometry per line, and word boxes are placed by character
position along the line's box, which is what search highlighting needs and those
formats require.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from serve_app import __version__

ALTO_NS = "http://www.loc.gov/standards/alto/ns-v4#"
ALTO_SCHEMA = "http://www.loc.gov/standards/alto/v4/alto-4-4.xsd"
PAGE_NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
PAGE_SCHEMA = f"{PAGE_NS}/pagecontent.xsd"
XHTML_NS = "http://www.w3.org/1999/xhtml"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
CREATOR = f"ocr-graph {__version__}"

Box = tuple[float, float, float, float]
Page = dict[str, Any]
# Characters XML 1.0 cannot carry at all (control characters, lone surrogates, ...).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """Text as XML can hold it: an engine's stray control characters are dropped."""
    return _NOT_XML.sub("", text)


def _clamp_box(box: Sequence[float], page: Page) -> tuple[int, int, int, int]:
    """Integer pixel box inside the page, at least one pixel wide and high."""
    width, height = page["width"], page["height"]
    x0 = min(max(round(box[0]), 0), width - 1)
    y0 = min(max(round(box[1]), 0), height - 1)
    x1 = min(max(round(box[2]), x0 + 1), width)
    y1 = min(max(round(box[3]), y0 + 1), height)
    return x0, y0, x1, y1


def _points(points: Iterable[Sequence[float]], page: Page) -> str:
    """"x,y x,y ..." in non-negative integer pixels inside the page (PAGE and ALTO)."""
    width, height = page["width"], page["height"]
    return " ".join(f"{min(max(round(x), 0), width)},{min(max(round(y), 0), height)}"
                    for x, y in points)


def _outline(line: dict[str, Any], page: Page) -> str:
    """The line's polygon, or its box as a rectangle when the engine gives none."""
    polygon = line.get("polygon")
    if polygon and len(polygon) >= 3:
        return _points(polygon, page)
    x0, y0, x1, y1 = _clamp_box(line["bbox"], page)
    return _points([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], page)


def _blocks(page: Page) -> list[tuple[Box, list[dict[str, Any]]]]:
    """Lines grouped by region in reading order, each group with the box around it."""
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for line in page["lines"]:
        groups.setdefault(line.get("region"), []).append(line)
    blocks = []
    for lines in groups.values():
        boxes = [line["bbox"] for line in lines]
        blocks.append(((min(b[0] for b in boxes), min(b[1] for b in boxes),
                        max(b[2] for b in boxes), max(b[3] for b in boxes)), lines))
    return blocks


Word = tuple[str, tuple[int, int, int, int], float | None]


def _words(line: dict[str, Any], page: Page) -> list[Word]:
    """The line's words with box and confidence: the engine's where it gives them
    (tesseract), else boxes placed by character offset along the line and the line's
    confidence."""
    if line.get("words"):
        return [(_xml_text(word["text"]), _clamp_box(word["bbox"], page),
                 word.get("confidence")) for word in line["words"]]
    confidence = line.get("confidence")
    text = _xml_text(line["text"])
    x0, y0, x1, y1 = _clamp_box(line["bbox"], page)
    per_char = (x1 - x0) / max(len(text), 1)
    words, offset = [], 0
    for word in text.split():
        start = text.index(word, offset)
        offset = start + len(word)
        left = x0 + round(start * per_char)
        right = max(x0 + round(offset * per_char), left + 1)
        words.append((word, (left, y0, min(right, x1), y1), confidence))
    # A detected line without text keeps its place (ALTO needs a String in every line).
    return words or [("", (x0, y0, x1, y1), confidence)]


def _xml(root: ET.Element) -> str:
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


# ---- ALTO v4 ---------------------------------------------------------------------------


def to_alto(pages: list[Page], engine_names: Iterable[str]) -> str:
    """One ALTO 4.4 document with a Page per page (MeasurementUnit pixel)."""
    ET.register_namespace("", ALTO_NS)
    q = f"{{{ALTO_NS}}}"
    root = ET.Element(f"{q}alto", {f"{{{XSI_NS}}}schemaLocation": f"{ALTO_NS} {ALTO_SCHEMA}"})
    description = ET.SubElement(root, f"{q}Description")
    ET.SubElement(description, f"{q}MeasurementUnit").text = "pixel"
    processing = ET.SubElement(description, f"{q}Processing", ID="processing_1")
    ET.SubElement(processing, f"{q}processingStepDescription").text = (
        "engines: " + ", ".join(sorted(set(engine_names))))
    software = ET.SubElement(processing, f"{q}processingSoftware")
    ET.SubElement(software, f"{q}softwareName").text = "ocr-graph"
    ET.SubElement(software, f"{q}softwareVersion").text = __version__
    layout = ET.SubElement(root, f"{q}Layout")
    for page in pages:
        number = page["page"]
        alto_page = ET.SubElement(layout, f"{q}Page", ID=f"page_{number}",
                                  PHYSICAL_IMG_NR=str(number), WIDTH=str(page["width"]),
                                  HEIGHT=str(page["height"]))
        space = ET.SubElement(alto_page, f"{q}PrintSpace", _alto_box(
            (0, 0, page["width"], page["height"]), page))
        for b, (box, lines) in enumerate(_blocks(page), 1):
            block = ET.SubElement(space, f"{q}TextBlock", ID=f"p{number}_b{b}",
                                  **_alto_box(box, page))
            for n, line in enumerate(lines, 1):
                line_id = f"p{number}_b{b}_l{n}"
                attributes = {"ID": line_id, **_alto_box(line["bbox"], page)}
                if line.get("baseline") and len(line["baseline"]) >= 2:
                    attributes["BASELINE"] = _points(line["baseline"], page)
                text_line = ET.SubElement(block, f"{q}TextLine", attributes)
                shape = ET.SubElement(text_line, f"{q}Shape")
                ET.SubElement(shape, f"{q}Polygon", POINTS=_outline(line, page))
                for w, (word, word_box, confidence) in enumerate(_words(line, page), 1):
                    if w > 1:
                        ET.SubElement(text_line, f"{q}SP")
                    string = {"ID": f"{line_id}_w{w}", "CONTENT": word,
                              **_alto_box(word_box, page)}
                    if confidence is not None:
                        string["WC"] = f"{confidence:.4f}"
                    ET.SubElement(text_line, f"{q}String", string)
    return _xml(root)


def _alto_box(box: Sequence[float], page: Page) -> dict[str, str]:
    x0, y0, x1, y1 = _clamp_box(box, page)
    return {"HPOS": str(x0), "VPOS": str(y0), "WIDTH": str(x1 - x0), "HEIGHT": str(y1 - y0)}


# ---- PAGE-XML 2019 ---------------------------------------------------------------------


def to_page_xml(page: Page, image_name: str) -> str:
    """One PAGE-XML 2019-07-15 document for one page (PAGE holds a page per file)."""
    ET.register_namespace("", PAGE_NS)
    q = f"{{{PAGE_NS}}}"
    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    root = ET.Element(f"{q}PcGts", {f"{{{XSI_NS}}}schemaLocation": f"{PAGE_NS} {PAGE_SCHEMA}"})
    metadata = ET.SubElement(root, f"{q}Metadata")
    ET.SubElement(metadata, f"{q}Creator").text = f"{CREATOR} ({page['engine']})"
    ET.SubElement(metadata, f"{q}Created").text = now
    ET.SubElement(metadata, f"{q}LastChange").text = now
    page_element = ET.SubElement(root, f"{q}Page", imageFilename=_xml_text(image_name),
                                 imageWidth=str(page["width"]), imageHeight=str(page["height"]))
    blocks = _blocks(page)
    if blocks:
        order = ET.SubElement(ET.SubElement(page_element, f"{q}ReadingOrder"),
                              f"{q}OrderedGroup", id="reading_order")
        for b in range(1, len(blocks) + 1):
            ET.SubElement(order, f"{q}RegionRefIndexed", index=str(b - 1), regionRef=f"r{b}")
    for b, (box, lines) in enumerate(blocks, 1):
        region = ET.SubElement(page_element, f"{q}TextRegion", id=f"r{b}")
        x0, y0, x1, y1 = _clamp_box(box, page)
        ET.SubElement(region, f"{q}Coords",
                      points=_points([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], page))
        for n, line in enumerate(lines, 1):
            text_line = ET.SubElement(region, f"{q}TextLine", id=f"r{b}_l{n}")
            ET.SubElement(text_line, f"{q}Coords", points=_outline(line, page))
            if line.get("baseline") and len(line["baseline"]) >= 2:
                ET.SubElement(text_line, f"{q}Baseline", points=_points(line["baseline"], page))
            _text_equiv(text_line, q, line["text"], line.get("confidence"))
        _text_equiv(region, q, "\n".join(line["text"] for line in lines), None)
    return _xml(root)


def _text_equiv(parent: ET.Element, q: str, text: str, confidence: float | None) -> None:
    equiv = ET.SubElement(parent, f"{q}TextEquiv",
                          {} if confidence is None else {"conf": f"{confidence:.4f}"})
    ET.SubElement(equiv, f"{q}Unicode").text = _xml_text(text)


# ---- hOCR ------------------------------------------------------------------------------


def to_hocr(pages: list[Page], engine_names: Iterable[str]) -> str:
    """One hOCR 1.2 XHTML document with an ocr_page per page."""
    ET.register_namespace("", XHTML_NS)
    q = f"{{{XHTML_NS}}}"
    html = ET.Element(f"{q}html")
    head = ET.SubElement(html, f"{q}head")
    ET.SubElement(head, f"{q}title").text = "ocr-graph"
    ET.SubElement(head, f"{q}meta", {"http-equiv": "Content-Type",
                                     "content": "text/html;charset=utf-8"})
    ET.SubElement(head, f"{q}meta", name="ocr-system",
                  content=f"{CREATOR} ({', '.join(sorted(set(engine_names)))})")
    ET.SubElement(head, f"{q}meta", name="ocr-capabilities",
                  content="ocr_page ocr_carea ocr_par ocr_line ocrx_word ocrp_wconf")
    body = ET.SubElement(html, f"{q}body")
    for page in pages:
        number = page["page"]
        page_div = ET.SubElement(body, f"{q}div", {
            "class": "ocr_page", "id": f"page_{number}",
            "title": f"bbox 0 0 {page['width']} {page['height']}; ppageno {number - 1}; "
                     f"scan_res {page['dpi']} {page['dpi']}"})
        for b, (box, lines) in enumerate(_blocks(page), 1):
            title = _hocr_bbox(box, page)
            area = ET.SubElement(page_div, f"{q}div", {"class": "ocr_carea",
                                                       "id": f"block_{number}_{b}",
                                                       "title": title})
            paragraph = ET.SubElement(area, f"{q}p", {"class": "ocr_par",
                                                     "id": f"par_{number}_{b}", "title": title})
            for n, line in enumerate(lines, 1):
                _hocr_line(paragraph, q, line, page, f"{number}_{b}_{n}")
    doctype = ('<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" '
               '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n')
    declaration, _, rest = _xml(html).partition("\n")
    return f"{declaration}\n{doctype}{rest}"


def _hocr_bbox(box: Sequence[float], page: Page) -> str:
    return "bbox {} {} {} {}".format(*_clamp_box(box, page))


def _hocr_line(parent: ET.Element, q: str, line: dict[str, Any], page: Page, key: str) -> None:
    title = _hocr_bbox(line["bbox"], page)
    baseline = line.get("baseline")
    if baseline and len(baseline) >= 2:
        # hOCR's baseline: slope and offset from the box's bottom-left corner.
        x0, _, _, y1 = _clamp_box(line["bbox"], page)
        (bx0, by0), (bx1, by1) = baseline[0], baseline[-1]
        slope = (by1 - by0) / (bx1 - bx0) if bx1 != bx0 else 0.0
        offset = by0 - slope * (bx0 - x0) - y1
        title += f"; baseline {slope:.4f} {offset:.0f}"
    span = ET.SubElement(parent, f"{q}span", {"class": "ocr_line", "id": f"line_{key}",
                                              "title": title})
    for w, (word, box, confidence) in enumerate(_words(line, page), 1):
        word_title = "bbox {} {} {} {}".format(*box)
        if confidence is not None:
            word_title += f"; x_wconf {round(confidence * 100)}"
        ET.SubElement(span, f"{q}span", {"class": "ocrx_word", "id": f"word_{key}_{w}",
                                         "title": word_title}).text = word
