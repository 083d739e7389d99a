"""The one thread of a replica process that runs its torch models.

torch runs an operator's parallel regions on OpenMP (libgomp), which keeps a team of
worker threads for each Python thread that calls into torch. While all teams' threads
number no more than the CPUs, a worker spins briefly after a region and takes the next one
at once; with more, libgomp throttles the spin and its workers sleep between regions, to be
woken for every one. A replica that built its model on its event loop and ran forwards in
`asyncio.to_thread`'s threads had two teams on two cores: its forwards ran 9-17% slower
(docs/benchmarks.md, embeddings against infinity-emb). So loading, warm-up, moves and every
forward of a torch model run here, one at a time, in the order they were asked for.

Work that is not torch (tokenizing, rapidocr's onnxruntime, tesseract) keeps its own
threads; the Embedding's encoder on ONNX Runtime (engines/embedding/onnx_encoder.py) runs
here, as the torch forward it replaces did.

The thread carries the OS name `ocrg-model`, and so do the OpenMP workers torch starts from
it (a thread starts with its creator's name): `top -H` and per-thread CPU show the model's
share of a replica apart from its request handling (bench/embed_gap.py counts it so).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

Params = ParamSpec("Params")
Result = TypeVar("Result")

_state = threading.local()
_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
OS_THREAD_NAME = "ocrg-model"


def _mark_model_thread() -> None:
    _state.is_model_thread = True
    with contextlib.suppress(OSError):  # Linux; elsewhere it keeps its inherited name
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text(OS_THREAD_NAME)


def _model_executor() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model",
                                           initializer=_mark_model_thread)
        return _executor


def on_model_thread() -> bool:
    return getattr(_state, "is_model_thread", False)


def call_on_model_thread(fn: Callable[Params, Result], *args: Params.args,
                         **kwargs: Params.kwargs) -> Result:
    """`fn(...)` on the model thread, waiting for it (a replica's synchronous start); run
    directly when already there, which would otherwise wait for itself."""
    if on_model_thread():
        return fn(*args, **kwargs)
    return _model_executor().submit(fn, *args, **kwargs).result()


async def run_on_model_thread(fn: Callable[Params, Result], *args: Params.args,
                              **kwargs: Params.kwargs) -> Result:
    """`await` `fn(...)` on the model thread, as `asyncio.to_thread` would on any thread.
    A cancelled caller stops waiting; work that has started runs to its end."""
    return await asyncio.get_running_loop().run_in_executor(
        _model_executor(), functools.partial(fn, *args, **kwargs))
