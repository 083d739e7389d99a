"""A benchmark's own cluster, stopped while a baseline runs in the benchmark's process.

SIGSTOP to every process the run started (Ray's, Serve's replicas, HAProxy), SIGCONT
after: the baseline gets the machine as a user without us has it, with no idle cluster
beside it (an idle cluster cost a bare forward 3-12%, bench/embed_gap.py), and it can run
right before the service it is compared with instead of minutes earlier, in a VM whose
speed drifts within a run. A stop misses at most one of a replica's health checks, and
Serve replaces a replica after three missed in a row.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from typing import Any


def started_processes(besides: Collection[int] = ()) -> list[Any]:
    """Every process of this run's cluster (psutil processes): Ray's, its workers and
    HAProxy, all started from this process; not this process's own multiprocessing
    helpers (a pool's workers, its resource tracker), which a baseline may be using, nor
    the process trees of the children in `besides` (a peer server the baseline is)."""
    import psutil

    found = []
    for child in psutil.Process(os.getpid()).children():
        try:
            if child.pid in besides or any("multiprocessing" in part
                                           for part in child.cmdline()):
                continue
            found += [child, *child.children(recursive=True)]
        except psutil.Error:  # ended since it was listed
            continue
    return found


def _signal_each(processes: list[Any], signum: int) -> None:
    """`signum` to every process still there: one that ended since it was listed (a Ray
    worker exits) must not leave the ones after it stopped for good."""
    import psutil

    for process in processes:
        with suppress(psutil.NoSuchProcess):
            process.send_signal(signum)


def process_tree(pid: int) -> list[Any]:
    """The process `pid` and every process below it."""
    import psutil

    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


@contextmanager
def cluster_stopped(besides: Collection[int] = ()) -> Iterator[None]:
    """The block runs with the cluster's processes (`started_processes`) stopped."""
    with stopped(started_processes(besides)):
        yield


@contextmanager
def stopped(processes: list[Any]) -> Iterator[None]:
    """The block runs with `processes` stopped; each gets SIGCONT after, however it ends."""
    _signal_each(processes, signal.SIGSTOP)
    try:
        yield
    finally:
        _signal_each(processes, signal.SIGCONT)
