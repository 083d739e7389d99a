"""ALTO, PAGE-XML and hOCR: valid against the official schemas, faithful to the page model."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from serve_app.kernel.formats import ALTO_NS, PAGE_NS, XHTML_NS, to_alto, to_hocr, to_page_xml
from tests.fixtures.xsd import assert_valid

SEGMENTED = {  # a kraken page: polygons, baselines, regions
    "page": 2, "width": 1200, "height": 1600, "dpi": 300, "engine": "kraken",
    "lines": [
        {"text": "Liebe Mutter,", "bbox": (100.0, 200.0, 600.0, 260.0),
         "polygon": [(100, 200), (600, 205), (600, 260), (100, 255)],
         "baseline": [(100, 250), (600, 252)], "confidence": 0.91, "region": "r_a"},
        {"text": "wir sind gut angekommen.", "bbox": (100.0, 280.0, 900.0, 340.0),
         "polygon": [(100, 280), (900, 280), (900, 340), (100, 340)],
         "baseline": [(100, 330), (500, 331), (900, 333)], "confidence": 0.87,
         "region": "r_a"},
        {"text": "Dein Karl", "bbox": (700.0, 1400.0, 1000.0, 1460.0), "polygon": None,
         "baseline": [(700, 1450), (1000, 1450)], "confidence": 0.5, "region": "r_b"},
    ],
}
PLAIN = {  # a rapidocr or tesseract page: boxes only; an llm page has no confidence
    "page": 1, "width": 800, "height": 600, "dpi": 150, "engine": "tesseract",
    "lines": [{"text": "Königsberg, den 3. Mai", "bbox": (10.5, 20.0, 400.2, 50.0),
               "polygon": None, "confidence": None}],
}
EMPTY = {"page": 3, "width": 100, "height": 100, "dpi": 72, "engine": "rapidocr", "lines": []}


def _texts(root: etree._Element, path: str, ns: str) -> list[str]:
    return [element.text for element in root.iterfind(path, {"n": ns})]


def test_alto_is_valid_and_keeps_every_word_line_and_baseline() -> None:
    root = assert_valid("alto", to_alto([PLAIN, SEGMENTED, EMPTY], ["tesseract", "kraken"]))
    ns = {"a": ALTO_NS}
    pages = root.findall(".//a:Page", ns)
    assert [p.get("PHYSICAL_IMG_NR") for p in pages] == ["1", "2", "3"]
    assert pages[1].get("WIDTH") == "1200"
    lines = pages[1].findall(".//a:TextLine", ns)
    assert [" ".join(s.get("CONTENT") for s in line.findall("a:String", ns))
            for line in lines] == [line["text"] for line in SEGMENTED["lines"]]
    assert lines[1].get("BASELINE") == "100,330 500,331 900,333"
    assert len(pages[1].findall(".//a:TextBlock", ns)) == 2  # one per kraken region
    assert lines[0].find("a:String", ns).get("WC") == "0.9100"
    assert pages[0].find(".//a:String", ns).get("WC") is None  # no invented confidence


def test_engine_word_boxes_and_confidences_are_kept() -> None:
    """Tesseract's own word boxes, not estimated ones, reach ALTO and hOCR."""
    words = [{"text": "Königsberg,", "bbox": (10.5, 20.0, 190.0, 50.0), "confidence": 0.9},
             {"text": "den", "bbox": (200.0, 21.0, 240.0, 49.0), "confidence": 0.6}]
    page = {**PLAIN, "lines": [{**PLAIN["lines"][0], "text": "Königsberg, den",
                                "confidence": 0.75, "words": words}]}
    root = assert_valid("alto", to_alto([page], ["tesseract"]))
    strings = root.findall(".//a:String", {"a": ALTO_NS})
    assert [(s.get("CONTENT"), s.get("HPOS"), s.get("WIDTH"), s.get("WC")) for s in strings] == [
        ("Königsberg,", "10", "180", "0.9000"), ("den", "200", "40", "0.6000")]
    hocr = etree.fromstring(to_hocr([page], ["tesseract"]).encode())
    titles = [w.get("title") for w in hocr.iterfind(".//h:span[@class='ocrx_word']",
                                                     {"h": XHTML_NS})]
    assert titles == ["bbox 10 20 190 50; x_wconf 90", "bbox 200 21 240 49; x_wconf 60"]


def test_alto_word_boxes_stay_inside_their_line() -> None:
    root = assert_valid("alto", to_alto([SEGMENTED], ["kraken"]))
    ns = {"a": ALTO_NS}
    for line in root.iterfind(".//a:TextLine", ns):
        left = int(line.get("HPOS"))
        right = left + int(line.get("WIDTH"))
        for string in line.iterfind("a:String", ns):
            assert left <= int(string.get("HPOS"))
            assert int(string.get("HPOS")) + int(string.get("WIDTH")) <= right


def test_page_xml_is_valid_with_regions_lines_baselines_and_reading_order() -> None:
    root = assert_valid("page", to_page_xml(SEGMENTED, "letter-p2.png"))
    ns = {"n": PAGE_NS}
    page = root.find("n:Page", ns)
    assert page.get("imageFilename") == "letter-p2.png"
    assert [r.get("regionRef") for r in page.iterfind(".//n:RegionRefIndexed", ns)] == [
        "r1", "r2"]
    lines = page.findall(".//n:TextLine", ns)
    assert [line.find("n:TextEquiv/n:Unicode", ns).text for line in lines] == [
        line["text"] for line in SEGMENTED["lines"]]
    assert lines[0].find("n:Baseline", ns).get("points") == "100,250 600,252"
    assert lines[0].find("n:Coords", ns).get("points") == "100,200 600,205 600,260 100,255"
    assert lines[0].find("n:TextEquiv", ns).get("conf") == "0.9100"


@pytest.mark.parametrize("page", [PLAIN, EMPTY], ids=["boxes-only", "no-lines"])
def test_page_xml_is_valid_for_pages_without_geometry_or_text(page: dict[str, Any]) -> None:
    assert_valid("page", to_page_xml(page, "p.png"))


def test_hocr_is_xhtml_with_pages_lines_words_and_baselines() -> None:
    root = etree.fromstring(to_hocr([PLAIN, SEGMENTED], ["tesseract", "kraken"]).encode())
    ns = {"h": XHTML_NS}
    pages = root.findall(".//h:div[@class='ocr_page']", ns)
    assert [p.get("title") for p in pages] == [
        "bbox 0 0 800 600; ppageno 0; scan_res 150 150",
        "bbox 0 0 1200 1600; ppageno 1; scan_res 300 300"]
    lines = pages[1].findall(".//h:span[@class='ocr_line']", ns)
    assert lines[0].get("title") == "bbox 100 200 600 260; baseline 0.0040 -10"
    words = lines[1].findall("h:span[@class='ocrx_word']", ns)
    assert [w.text for w in words] == ["wir", "sind", "gut", "angekommen."]
    assert words[0].get("title").endswith("x_wconf 87")
    assert "x_wconf" not in pages[0].find(".//h:span[@class='ocrx_word']", ns).get("title")


line_text = st.text(max_size=40)  # any script, control characters included
boxes = st.tuples(*(st.floats(-50, 2000, allow_nan=False) for _ in range(4)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(line_text, boxes, st.none() | st.floats(0, 1)), max_size=6))
def test_any_engine_output_gives_valid_alto_and_page(raw: list[Any]) -> None:
    """Whatever text and boxes an engine returns (off-page, inverted, empty, any script),
    the documents stay valid."""
    page = {"page": 1, "width": 1000, "height": 800, "dpi": 300, "engine": "x",
            "lines": [{"text": text, "bbox": box, "polygon": None, "confidence": conf}
                      for text, box, conf in raw]}
    assert_valid("alto", to_alto([page], ["x"]))
    assert_valid("page", to_page_xml(page, "p.png"))
    etree.fromstring(to_hocr([page], ["x"]).encode())
