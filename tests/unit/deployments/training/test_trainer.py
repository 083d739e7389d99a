"""Training yields the GPU: a run on the GPU is interrupted when the controller places
training on the CPU (real process group, real SIGINT)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

from deployments.training.trainer import Trainer

# A stand-in for ketos that, like Lightning, exits 1 on SIGINT after writing its checkpoint.
KETOS = """
import pathlib, signal, sys, time
def stop(*_):
    pathlib.Path(sys.argv[1], "checkpoint_abort.ckpt").write_text("state")
    sys.exit(1)
signal.signal(signal.SIGINT, stop)
print("stage 0/9 val_accuracy: 0.5", flush=True)
time.sleep(60)
"""


class Placement:
    def __init__(self, answer: str):
        self.answer = answer

    async def get(self) -> str:
        return self.answer


def _trainer(answer: str) -> Trainer:
    trainer = object.__new__(Trainer.func_or_class)
    trainer.settings = SimpleNamespace(residency_poll_s=0.01)
    trainer.placement = Placement(answer)
    return trainer


def _run(trainer: Trainer, device: str, work: Path) -> tuple[bool, int]:
    async def run() -> tuple[bool, int]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", KETOS, str(work), stdout=asyncio.subprocess.PIPE,
            start_new_session=True)
        assert process.stdout is not None
        await process.stdout.readline()  # it runs and has set its handler
        watcher = asyncio.create_task(trainer._yield_when_evicted(process, device))
        if device == "cpu":
            process.send_signal(signal.SIGTERM)
        code = await process.wait()
        return await watcher, code

    return asyncio.run(run())


def test_a_gpu_run_is_interrupted_when_the_llm_needs_the_gpu(tmp_path: Path) -> None:
    assert _run(_trainer("cpu"), "cuda:0", tmp_path) == (True, 1)
    assert (tmp_path / "checkpoint_abort.ckpt").read_text() == "state"  # resumable


def test_a_cpu_run_is_never_interrupted(tmp_path: Path) -> None:
    yielded, _ = _run(_trainer("cpu"), "cpu", tmp_path)
    assert yielded is False and not (tmp_path / "checkpoint_abort.ckpt").exists()
