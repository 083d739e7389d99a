"""Long PDFs' text layers read by worker processes: the same pages the render thread
reads, the pages without a text layer left to it, and a dead process survived."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve_app import text_layers
from serve_app.budget import document_bytes
from serve_app.kernel.documents import Document, text_pages
from serve_app.kernel.errors import Overloaded, UpstreamTimeout
from serve_app.text_layers import MIN_PAGES_PER_RUN, TextLayerReaders, runs
from tests.fixtures.documents import mixed_pdf
from tests.fixtures.stuck import never_returns
from tests.fixtures.waiting import until

MAX_PIXELS = 60_000_000


def unlimited(size: int) -> None:
    """A byte budget with room for anything."""
ROOT = Path(__file__).resolve().parents[3]


def test_a_long_selection_is_split_into_one_contiguous_run_per_process() -> None:
    numbers = [5, *range(10, 60), 3]
    split = runs(numbers, processes=3)
    assert [len(run) for run in split] == [18, 17, 17]
    assert [number for run in split for number in run] == numbers


def test_a_selection_too_short_for_two_runs_stays_on_the_render_thread() -> None:
    assert runs(list(range(1, 2 * MIN_PAGES_PER_RUN)), processes=4) == []
    assert len(runs(list(range(1, 2 * MIN_PAGES_PER_RUN + 1)), processes=4)) == 2
    assert runs(list(range(1, 200)), processes=1) == []
    pool = TextLayerReaders(processes=2, deadline_s=120)
    short = mixed_pdf(3, set())
    assert asyncio.run(pool.read(short, [1, 2, 3], 100, MAX_PIXELS, unlimited)) is None
    assert pool._pool is None  # no process started for it


def test_a_document_whose_copies_do_not_fit_the_byte_budget_stays_on_the_render_thread(
        ) -> None:
    data = mixed_pdf(2 * MIN_PAGES_PER_RUN, scanned=set())
    budget = document_bytes(3 * len(data) - 1)  # the document and one copy, not two
    readers = TextLayerReaders(processes=2, deadline_s=120)
    with budget.hold() as charge:
        charge(len(data))
        found = asyncio.run(readers.read(data, list(range(1, 2 * MIN_PAGES_PER_RUN + 1)), 100,
                                         MAX_PIXELS, charge))
        assert budget.held == len(data)
    assert found is None and readers._pool is None


def test_a_host_without_processes_reads_text_layers_on_the_render_thread(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def no_semaphores(*_: object, **__: object) -> None:
        raise OSError(38, "Function not implemented")  # what SemLock says without /dev/shm

    monkeypatch.setattr(text_layers, "ProcessPoolExecutor", no_semaphores)
    readers = TextLayerReaders(processes=2, deadline_s=120)
    data = mixed_pdf(2 * MIN_PAGES_PER_RUN, scanned=set())
    found = asyncio.run(readers.read(data, list(range(1, 2 * MIN_PAGES_PER_RUN + 1)), 100,
                                     MAX_PIXELS, unlimited))
    assert found is None and readers.processes == 0
    assert "OCR_TEXT_LAYER_PROCESSES=0" in caplog.text


@pytest.fixture
def readers() -> Iterator[TextLayerReaders]:
    pool = TextLayerReaders(processes=2, deadline_s=120)
    yield pool
    pool.close()


def test_the_processes_return_the_born_digital_pages_as_the_render_thread_reads_them(
        readers: TextLayerReaders) -> None:
    data = mixed_pdf(40, scanned={7, 33})
    numbers = list(range(40, 0, -1))
    found = asyncio.run(readers.read(data, numbers, 100, MAX_PIXELS, unlimited))
    assert found is not None
    assert sorted(found) == [n for n in range(1, 41) if n not in (7, 33)]
    with Document(data, MAX_PIXELS) as doc:
        for number, page in found.items():
            assert page == doc.page(number, 100)
    assert found[12].text_lines[0]["text"] == "page 12"


def test_a_dead_process_answers_503_and_the_next_document_gets_new_processes(
        readers: TextLayerReaders) -> None:
    data = mixed_pdf(2 * MIN_PAGES_PER_RUN, scanned=set())
    numbers = list(range(1, 2 * MIN_PAGES_PER_RUN + 1))

    async def scenario() -> None:
        assert await readers.read(data, numbers, 100, MAX_PIXELS, unlimited)
        assert readers._pool is not None
        victim = next(iter(readers._pool._processes))
        os.kill(victim, signal.SIGKILL)
        readers._pool._processes[victim].join(30)  # dead before the next document comes
        with pytest.raises(Overloaded) as refused:
            await readers.read(data, numbers, 100, MAX_PIXELS, unlimited)
        assert refused.value.headers["Retry-After"]
        found = await readers.read(data, numbers, 100, MAX_PIXELS, unlimited)
        assert found is not None and sorted(found) == numbers
        assert victim not in readers._pool._processes

    asyncio.run(scenario())


READERS_OF_A_RAY_WORKER = """
import ray  # what a Ray worker's __main__ has imported when the ingress starts its readers
from serve_app.text_layers import TextLayerReaders

readers = TextLayerReaders(processes=2, deadline_s=120)
readers.start()
readers._pool.submit(int).result()
for pid in readers._pool._processes:
    with open(f"/proc/{pid}/maps") as maps:
        mapped = maps.read()
    print(pid, [name for name in ("_raylet", "onnxruntime") if name in mapped])
readers.close()
"""


def test_the_readers_load_what_reading_needs_not_ray_nor_onnxruntime(tmp_path: Path
                                                                       ) -> None:
    # A spawned process re-imports its parent's __main__ script: in a Ray worker that is
    # all of Ray, 200 MB in every reader. PyMuPDF 2 would load its layout analysis's
    # onnxruntime, which we never call.
    script = tmp_path / "worker_main.py"
    script.write_text(READERS_OF_A_RAY_WORKER)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    answers = [line.split(maxsplit=1)[1] for line in done.stdout.splitlines()]
    assert answers == ["[]", "[]"], done.stdout


def test_readers_past_their_deadline_are_stopped_with_504_and_new_ones_read_on() -> None:
    readers = TextLayerReaders(processes=2, deadline_s=2, read_pages=never_returns)
    data = mixed_pdf(2 * MIN_PAGES_PER_RUN, scanned=set())
    numbers = list(range(1, 2 * MIN_PAGES_PER_RUN + 1))

    async def scenario() -> None:
        readers.start()
        assert readers._pool is not None
        stuck = list(readers._pool._processes.values())
        with pytest.raises(UpstreamTimeout) as late:
            await readers.read(data, numbers, 100, MAX_PIXELS, unlimited)
        assert late.value.status == 504 and late.value.detail == {"deadline_s": 2}
        for process in stuck:  # the pool's own thread may reap it first: ask until told
            code = await asyncio.to_thread(until, lambda p=process: p.exitcode,
                                           lambda code: code is not None, 30)
            assert code == -signal.SIGKILL
        readers.read_pages = text_pages
        found = await readers.read(data, numbers, 100, MAX_PIXELS, unlimited)
        assert found is not None and sorted(found) == numbers

    try:
        asyncio.run(scenario())
    finally:
        readers.close()
