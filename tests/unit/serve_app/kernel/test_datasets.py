"""What an extracted training archive holds that kraken can train on."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

import pytest

from serve_app.kernel.datasets import scan_dataset, too_few
from serve_app.kernel.errors import InvalidInput
from tests.fixtures.training import line_zip, page_with_xml, page_zip


def _extract(archive: bytes, target: Path) -> Path:
    zipfile.ZipFile(io.BytesIO(archive)).extractall(target)
    return target


def test_line_images_with_text_count_as_lines(tmp_path: Path) -> None:
    root = _extract(line_zip(6), tmp_path)
    (root / "lines" / "l000.gt.txt").write_text("  \n")  # an empty transcription
    (root / "lines" / "l001.gt.txt").unlink()  # a line without one
    dataset = scan_dataset(root, "train")
    assert (dataset.format, dataset.samples) == ("path", 4)
    assert dataset.files[0] == "lines/l002.png"
    assert any("l000.gt.txt: empty" in reason for reason in dataset.skipped)
    assert any("l001.png: no .gt.txt" in reason for reason in dataset.skipped)
    refusal = too_few(dataset, 5)
    assert isinstance(refusal, InvalidInput)
    assert "holds 4 usable training lines; at least 5" in refusal.message
    assert too_few(dataset, 4) is None


def test_pages_count_lines_for_train_and_pages_for_segtrain(tmp_path: Path) -> None:
    root = _extract(page_zip(3, lines=4), tmp_path)
    assert (scan_dataset(root, "segtrain").samples, scan_dataset(root, "train").samples) == (
        3, 12)
    assert scan_dataset(root, "segtrain").format == "xml"
    assert scan_dataset(root, "train").files == tuple(f"pages/page{i:02d}.xml" for i in range(3))


def test_pages_whose_image_is_missing_or_outside_are_skipped(tmp_path: Path) -> None:
    image, xml = page_with_xml("../secret.png", random.Random(1))
    (tmp_path / "escape.xml").write_text(xml)
    (tmp_path.parent / "secret.png").write_bytes(image)
    _, missing = page_with_xml("absent.png", random.Random(2))
    (tmp_path / "missing.xml").write_text(missing)
    (tmp_path / "broken.xml").write_text("<PcGts><Page")
    dataset = scan_dataset(tmp_path, "segtrain")
    assert dataset.samples == 0 and len(dataset.skipped) == 3
    assert too_few(dataset, 1) is not None


def test_alto_with_baselines(tmp_path: Path) -> None:
    (tmp_path / "p.png").write_bytes(b"image")
    (tmp_path / "p.xml").write_text(
        '<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#"><Description>'
        "<sourceImageInformation><fileName>p.png</fileName></sourceImageInformation>"
        "</Description><Layout><Page><PrintSpace><TextBlock>"
        '<TextLine BASELINE="10,50 300,50"><String CONTENT="Liebe"/></TextLine>'
        '<TextLine BASELINE="10,90 300,90"><String CONTENT=""/></TextLine>'
        "</TextBlock></PrintSpace></Page></Layout></alto>")
    assert scan_dataset(tmp_path, "train").samples == 1
    assert scan_dataset(tmp_path, "segtrain").samples == 1


def test_a_mix_of_lines_and_pages_is_refused(tmp_path: Path) -> None:
    _extract(line_zip(2), tmp_path)
    _extract(page_zip(1), tmp_path)
    with pytest.raises(InvalidInput, match="mixes line images"):
        scan_dataset(tmp_path, "train")
    assert scan_dataset(tmp_path, "segtrain").samples == 1  # segtrain ignores line images
