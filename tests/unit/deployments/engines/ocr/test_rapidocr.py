"""rapidocr reads a page per core: never more pages at once than the replica has cores
(each holds its own working memory), and what it reads is the page's text."""

from __future__ import annotations

import asyncio
import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deployments.engines.ocr.rapidocr import RapidOcrEngine, usable_cores
from deployments.models import load_catalog
from serve_app.kernel.settings import Settings
from tests.fixtures.documents import scan_png
from tests.fixtures.waiting import until


@pytest.fixture(scope="module")
def engine() -> RapidOcrEngine:
    return RapidOcrEngine(load_catalog()["rapidocr"], Settings(OCR_SIDECAR_API_KEY="k"), "cpu")


def test_a_scan_is_read_into_lines_in_reading_order(engine: RapidOcrEngine) -> None:
    page = np.asarray(Image.open(io.BytesIO(scan_png())).convert("RGB"))
    lines = asyncio.run(engine.recognize(page, {}))
    words = " ".join(line["text"] for line in lines).upper()
    assert words.index("INVOICE") < words.index("HAMBURG") < words.index("TOTAL")


def test_no_more_pages_run_at_once_than_the_replica_has_cores(
        engine: RapidOcrEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    cores = usable_cores()
    running = 0
    lock, release = threading.Lock(), threading.Event()

    def read(image: np.ndarray) -> list:
        nonlocal running
        with lock:
            running += 1
        release.wait(30)  # a page's work, until the test has looked
        with lock:
            running -= 1
        return []

    monkeypatch.setattr(engine, "_recognize", read)

    async def many() -> None:
        pages = [asyncio.create_task(engine.recognize(np.zeros((8, 8, 3), np.uint8), {}))
                 for _ in range(3 * cores)]
        await asyncio.to_thread(until, lambda: running, lambda count: count >= cores, 30)
        at_once, queued = running, len(engine._pages_at_once._waiters or ())
        release.set()
        await asyncio.gather(*pages)
        assert (at_once, queued) == (cores, 2 * cores)

    asyncio.run(many())


@pytest.mark.parametrize(("cpu_max", "expected"), [
    ("100000 100000\n", 1), ("50000 100000\n", 1), ("max 100000\n", None), (None, None)])
def test_a_containers_cpu_quota_bounds_the_pages_read_at_once(
        tmp_path: Path, cpu_max: str | None, expected: int | None) -> None:
    quota = tmp_path / "cpu.max"
    if cpu_max is not None:
        quota.write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    assert usable_cores(quota) == (expected if expected is not None else affinity)
