"""Cold start and the whole graph's memory: the embedded default, every process of it.

    python bench/footprint.py

Serves config/local.yaml's application (every deployment, its models) on a private Ray
with the dashboard, as `ocr-graph serve` does on a laptop, and measures the time from
starting Ray to /readyz 200, twice on one DATA_DIR: a first start, on an empty one (the
Embedding loads the export of its encoder that `make setup` built beside the install, or,
where the install has none, exports it into the model cache), and a
restart, stopped and started again on what the first left (every start after an
install's first: a reboot, a redeploy, a container recreated on its volume). Then every
process of the restart's Ray (the GCS, the raylet, the dashboard and its agents, Serve's
controller and proxy, each replica, idle workers): the CPU seconds it used until /readyz,
which is where a start's time goes on 2 cores, and its memory. RSS
counts a shared page in every process that maps it (torch's libraries are mapped by
each replica); PSS splits it between them, which is what the machine really gives.

Where this script may make a memory cgroup (root, a cgroup filesystem), Ray starts in one
of its own and the report adds the cgroup's working set: usage less inactive file cache,
what `docker stats` shows and what a container's `mem_limit` or a Kubernetes memory limit
holds the graph to (docs/adr/009-memory-is-counted-once.md). Targets (issue 15): cold
start <= 30 s, the whole graph <= 4 GB. The driver (this script; `serve run`'s process on
a laptop) is not counted in memory, except in the cgroup its allocations while it starts
Ray; its CPU seconds are reported beside the graph's.
Written to docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_report  # noqa: E402
from tests.fixtures.cluster import deploy_config, local_default_args, local_serve  # noqa: E402

TARGET_MB = 4096
TARGET_S = 30
CGROUPS = Path("/sys/fs/cgroup")


class MemoryCgroup:
    """A memory cgroup (v1 or v2) below this process's own, which the processes it starts
    join: the kernel charges each page once, to the cgroup that first touched it."""

    def __init__(self, path: Path, version: int) -> None:
        self.path, self.version = path, version

    @classmethod
    def own(cls) -> MemoryCgroup | None:
        """This process's memory cgroup: v1's memory hierarchy, else v2's unified one."""
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        for line in lines:
            _, controllers, where = line.split(":", 2)
            if "memory" in controllers.split(","):
                return cls(CGROUPS / "memory" / where.lstrip("/"), 1)
        for line in lines:
            if line.startswith("0::") and (CGROUPS / "cgroup.controllers").exists():
                return cls(CGROUPS / line[3:].lstrip("/"), 2)
        return None

    @classmethod
    def make(cls) -> MemoryCgroup | None:
        """A new cgroup below this process's, or None where this machine allows none."""
        parent = cls.own()
        if parent is None:
            return None
        child = cls(parent.path / f"ocr-graph-footprint-{os.getpid()}", parent.version)
        try:
            child.path.mkdir()
        except OSError:
            return None
        if not (child.path / "memory.stat").exists():  # v2 without the memory controller
            child.remove()
            return None
        return child

    def working_set_mb(self) -> float:
        """Usage less inactive file cache (`docker stats`, the kubelet's working set)."""
        usage_file = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        usage = int((self.path / usage_file).read_text())
        stat = dict(line.split() for line in
                    (self.path / "memory.stat").read_text().splitlines())
        inactive = int(stat["total_inactive_file" if self.version == 1 else "inactive_file"])
        return (usage - inactive) / 2**20

    def join(self) -> None:
        """This process into the cgroup: what it starts from now on is charged here."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def leave(self) -> None:
        """This process back to its own cgroup; what it started stays here."""
        (self.path.parent / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self) -> None:
        """Once Ray's processes have left it (they exit after Ray's shutdown returns)."""
        deadline = time.monotonic() + 30
        while (self.path / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            self.path.rmdir()
        except OSError as error:  # a process of it still exiting: the kernel keeps it
            print(f"could not remove {self.path} ({error}); it holds no limit, rmdir it later")


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


Processes = dict[str, tuple[float, float, int, float]]


def cpu_seconds(process: object) -> float:
    """User and system CPU seconds a process has used since it started."""
    import psutil

    assert isinstance(process, psutil.Process)
    times = process.cpu_times()
    return times.user + times.system


def measure(data_dir: Path) -> tuple[float, Processes, float | None, float]:
    """A start on `data_dir`: (seconds to /readyz 200, {label: (RSS MB, PSS MB,
    processes, CPU seconds used by then)}, the cgroup's working set in MB or None where no
    cgroup could be made, the CPU seconds this driver used)."""
    started = time.perf_counter()
    import httpx
    import psutil
    import ray.serve  # noqa: F401 - imported before joining the cgroup: the driver's memory

    cgroup = MemoryCgroup.make()
    working_set = None
    try:
        if cgroup:
            cgroup.join()
        with local_serve({"DATA_DIR": str(data_dir)}, dashboard=True) as cluster:
            # As `ocr-graph serve` (`serve run config/local.yaml`) deploys it: Serve's
            # controller builds the app from the config, not this process.
            deploy_config(local_default_args())
            url = cluster.url
            if cgroup:
                cgroup.leave()
            assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
            cold = time.perf_counter() - started
            working_set = cgroup.working_set_mb() if cgroup else None
            driver = psutil.Process(os.getpid())
            driver_cpu = cpu_seconds(driver)
            totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0, 0.0])
            for process in driver.children(recursive=True):
                try:
                    memory = process.memory_full_info()
                    cpu = cpu_seconds(process)
                    name = label(process)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                totals[name][0] += memory.rss / 2**20
                totals[name][1] += memory.pss / 2**20
                totals[name][2] += 1
                totals[name][3] += cpu
    finally:
        if cgroup:
            with contextlib.suppress(OSError):
                cgroup.leave()
            cgroup.remove()
    processes = {name: (rss, pss, int(count), cpu)
                 for name, (rss, pss, count, cpu) in totals.items()}
    return cold, processes, working_set, driver_cpu


def start_afresh(data_dir: Path) -> tuple[float, Processes, float | None, float]:
    """`measure` in a new process: each start pays its driver's imports, as each
    `ocr-graph serve` does."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as executor:
        return executor.submit(measure, data_dir).result()


def main() -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="ocrg-footprint-"))
    try:
        first, _, first_working_set, _ = start_afresh(data_dir)
        exported_here = (data_dir / "models" / "onnx").exists()
        cold, processes, working_set, driver_cpu = start_afresh(data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    rss = sum(v[0] for v in processes.values())
    pss = sum(v[1] for v in processes.values())
    cpu = sum(v[3] for v in processes.values())
    rows = "\n".join(f"| {name} | {count} | {r:.0f} | {p:.0f} | {c:.1f} |"
                     for name, (r, p, count, c) in
                     sorted(processes.items(), key=lambda item: -item[1][1]))
    report = (
        "The embedded default (config/local.yaml: every deployment and its models), a "
        "private Ray with the dashboard, 2 cores.\n\n"
        "Cold start, from starting Ray to /readyz 200 (target <= 30 s): a restart on the "
        f"DATA_DIR an earlier start left **{cold:.1f} s** ({verdict(cold, TARGET_S)}); the first "
        f"start on an empty DATA_DIR, {FIRST_START[exported_here]}, "
        f"**{first:.1f} s** ({verdict(first, TARGET_S)}). The processes below are the "
        "restart's, with the CPU seconds each had used by /readyz: a start is CPU-bound, "
        f"{cpu:.0f} CPU s in these processes and {driver_cpu:.1f} in the driver (this "
        "script; `serve run`'s process) on 2 cores.\n\n"
        "| process | count | RSS MB | PSS MB | CPU s |\n|---|---|---|---|---|\n" + rows +
        f"\n| **all** | {sum(v[2] for v in processes.values())} | {rss:.0f} | **{pss:.0f}** "
        f"| {cpu:.0f} |\n\n"
        f"The whole graph: {pss:.0f} MB PSS, {rss:.0f} MB RSS (target <= {TARGET_MB} MB: "
        f"{verdict(pss, TARGET_MB)} by PSS, "
        f"{verdict(rss, TARGET_MB)} by RSS).\n"
    )
    if working_set is None:
        report += "\nNo memory cgroup could be made here: the working set is not measured.\n"
    else:
        report += (
            f"\nThe graph's memory cgroup (every page charged once, what a container's "
            f"memory limit holds it to): **{working_set:.0f} MB** working set (usage less "
            f"inactive file cache; target <= {TARGET_MB} MB: "
            f"{verdict(working_set, TARGET_MB)}; the first start's "
            f"{first_working_set or 0:.0f} MB).\n")
    print(report)
    write_report(report, "footprint")
    within = working_set <= TARGET_MB if working_set is not None else pss <= TARGET_MB
    return 0 if max(first, cold) <= TARGET_S and within else 1


# What the first start did with the Embedding's encoder, by whether it wrote an export.
FIRST_START = {
    False: "which loaded the export of the Embedding's encoder that `make setup` built "
           "beside the install (`ocr-graph models export --installed`) and wrote none",
    True: "which found no export beside the install and exported the Embedding's encoder "
          "into the DATA_DIR"}


def verdict(value: float, target: float) -> str:
    return "pass" if value <= target else "FAIL"


if __name__ == "__main__":
    sys.exit(main())
