"""Cold start and the whole graph's memory: the embedded default, every process of it.

    python bench/footprint.py

Serves config/local.yaml's application (every deployment, its models) on a private Ray
with the dashboard, as `ocr-graph serve` does on a laptop, and measures the time from
starting Ray to /readyz 200, then every process of that Ray: the GCS, the raylet, the
dashboard and its agents, Serve's controller and proxy, each replica, idle workers. RSS
counts a shared page in every process that maps it (torch's libraries are mapped by
each replica); PSS splits it between them, which is what the machine really gives.
Targets (issue 15): cold start <= 30 s, the whole graph <= 4 GB. The driver (this
script; `serve run`'s process on a laptop) is not counted. Written to docs/benchmarks.md.
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_report  # noqa: E402
from tests.fixtures.cluster import local_default_args, running_app  # noqa: E402

TARGET_MB = 4096


def label(process: object) -> str:
    """A process by what it is for: Ray's title for workers, else its program's name."""
    import psutil

    assert isinstance(process, psutil.Process)
    command = process.cmdline() or [process.name()]
    first = command[0]
    if first.startswith("ray::"):
        title = first.split()[0].removeprefix("ray::")
        return title.replace("ServeReplica:bench:", "replica ")
    program = Path(first).name
    parent = process.parent()
    if any("multiprocessing" in part for part in command) and parent and (
            parent.cmdline()[:1] or [""])[0].startswith("ray::"):
        # A replica's own processes (the ingress's text-layer readers).
        return f"{label(parent)}: its processes"
    if program.startswith("python"):  # dashboard, agents, log monitor: their script
        scripts = [Path(part).stem for part in command[1:] if part.endswith(".py")]
        return scripts[0] if scripts else program
    return program


def measure() -> tuple[float, dict[str, tuple[float, float, int]]]:
    """(seconds to /readyz 200, {label: (RSS MB, PSS MB, processes)})."""
    import httpx
    import psutil

    started = time.perf_counter()
    with running_app(local_default_args(), dashboard=True) as (url, _key):
        assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
        cold = time.perf_counter() - started
        totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
        for process in psutil.Process(os.getpid()).children(recursive=True):
            try:
                memory = process.memory_full_info()
                name = label(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            totals[name][0] += memory.rss / 2**20
            totals[name][1] += memory.pss / 2**20
            totals[name][2] += 1
    return cold, {name: (rss, pss, int(count)) for name, (rss, pss, count) in totals.items()}


def main() -> int:
    cold, processes = measure()
    rss = sum(v[0] for v in processes.values())
    pss = sum(v[1] for v in processes.values())
    rows = "\n".join(f"| {name} | {count} | {r:.0f} | {p:.0f} |" for name, (r, p, count) in
                     sorted(processes.items(), key=lambda item: -item[1][1]))
    report = (
        "The embedded default (config/local.yaml: every deployment and its models), a "
        "private Ray with the dashboard, 2 cores.\n\n"
        f"Cold start, from starting Ray to /readyz 200: **{cold:.1f} s** (target <= 30 s: "
        f"{'pass' if cold <= 30 else 'FAIL'}).\n\n"
        "| process | count | RSS MB | PSS MB |\n|---|---|---|---|\n" + rows +
        f"\n| **all** | {sum(v[2] for v in processes.values())} | {rss:.0f} | **{pss:.0f}** |\n\n"
        f"The whole graph: {pss:.0f} MB PSS, {rss:.0f} MB RSS (target <= {TARGET_MB} MB: "
        f"{'pass' if pss <= TARGET_MB else 'FAIL'} by PSS, "
        f"{'pass' if rss <= TARGET_MB else 'FAIL'} by RSS).\n"
    )
    print(report)
    write_report(report, "footprint")
    return 0 if cold <= 30 and pss <= TARGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
