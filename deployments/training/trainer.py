"""The Trainer deployment: one kraken training at a time, in a ketos subprocess.

The replica keeps answering while ketos runs: the job's progress is read from ketos's own
output line by line and stored at once. ketos is started in its own process group and dies
with the replica (PR_SET_PDEATHSIG), so a killed replica leaves no orphan; the next
replica marks the job failed ("interrupted by restart") and removes what it left behind.
A finished run's best weights become the next version of the job's model name in
STATE_DIR/models (written whole, not active until POST /v1/models/{name}/activate).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.replica import ControllerAnswer, own_gpu
from deployments.trained_models import TrainedModels, check_name
from deployments.training import bases, ketos
from deployments.training.jobs import JobStore
from serve_app.kernel.datasets import Dataset
from serve_app.kernel.errors import Conflict, InvalidInput
from serve_app.kernel.settings import Settings

logger = logging.getLogger("ray.serve")

DEPLOYMENT = "Trainer"
DEFAULT_NAMES = {"train": "archive-rec", "segtrain": "archive-seg"}
WORK_PREFIX = "ocrg-train-"
OUTPUT_TAIL = 40  # lines of ketos output kept for a failed job's error
WATCH_TIMEOUT_S = 15.0
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the replica that started it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@serve.deployment(name=DEPLOYMENT, num_replicas=1, max_ongoing_requests=64,
                  health_check_period_s=10)
class Trainer:
    """Runs training jobs; answers their state, the trained models' versions, activation."""

    def __init__(self, settings: Settings, residency: DeploymentHandle | None = None):
        settings.ensure_dirs()
        self.settings = settings
        self.jobs = JobStore(settings.training_dir / "jobs.db")
        self.models = TrainedModels(settings.trained_models_dir)
        interrupted = self.jobs.fail_unfinished("interrupted by restart")
        if interrupted:
            logger.warning("training jobs %s were interrupted by a restart", sorted(interrupted))
        self._remove_leftovers([Path(p) for p in interrupted.values() if p])
        gpu = own_gpu()
        self.placement = ControllerAnswer(
            "the Trainer's placement",
            (lambda: residency.placement.remote(DEPLOYMENT, gpu)) if residency else None,
            "cpu", settings.residency_poll_s)
        self.changed = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None

    def _remove_leftovers(self, datasets: list[Path]) -> None:
        """Work dirs, datasets and partial model files of runs a stop cut off."""
        assert self.settings.tmp_dir is not None
        for path in [*self.settings.tmp_dir.glob(f"{WORK_PREFIX}*"), *datasets]:
            shutil.rmtree(path, ignore_errors=True)
        for path in self.models.remove_partials():
            logger.warning("removed a partial model file: %s", path)

    # ---- jobs ---------------------------------------------------------------------------

    async def submit(self, dataset: Dataset, options: dict[str, Any]) -> dict[str, Any]:
        """Queue a job on an extracted dataset (the Trainer owns it from here on); 409 when
        a job is queued or running, 422 for options that cannot work."""
        try:
            name = check_name(options.get("name") or DEFAULT_NAMES[dataset.kind])
            epochs = int(options.get("epochs") or 1)
            if not 1 <= epochs <= self.settings.training_max_epochs:
                raise InvalidInput(f"epochs must be 1-{self.settings.training_max_epochs}",
                                   {"field": "options.epochs"})
            base_model = options.get("base_model")
            if base_model is None and dataset.kind == "segtrain":
                base_model = bases.BUNDLED_BLLA  # blla from scratch needs far more pages
            bases.resolve_base(dataset.kind, base_model, self.models)
            running = self.jobs.unfinished()
            if running is not None:
                raise Conflict(f"training job {running['job_id']} is {running['status']}: one "
                               "training at a time; follow it at /v1/train/jobs/"
                               f"{running['job_id']} and submit again when it has finished",
                               {"job_id": running["job_id"]})
        except BaseException:
            shutil.rmtree(dataset.root, ignore_errors=True)
            raise
        job_id = self.jobs.create(dataset.kind, name, epochs, dataset.samples, base_model,
                                  str(dataset.root))
        self.task = asyncio.get_running_loop().create_task(
            self._run(job_id, dataset, name, epochs, base_model))
        logger.info("training job %s queued: %s %s, %d samples, %d epochs", job_id,
                    dataset.kind, name, dataset.samples, epochs)
        job = self.jobs.get(job_id)
        assert job is not None
        return job

    async def job(self, job_id: str) -> dict[str, Any] | None:
        return self.jobs.get(job_id)

    async def running(self) -> dict[str, Any] | None:
        """The job that is queued or running, if one is."""
        return self.jobs.unfinished()

    async def recent(self, limit: int = 10) -> list[dict[str, Any]]:
        return self.jobs.recent(limit)

    async def watch(self, job_id: str, after_epoch: int) -> dict[str, Any] | None:
        """The job and its epochs after `after_epoch`, as soon as there are new ones or the
        job has finished (or after WATCH_TIMEOUT_S with nothing new)."""

        def news() -> dict[str, Any] | None:
            job = self.jobs.get(job_id)
            if job is None:
                return {"job": None, "epochs": []}
            epochs = self.jobs.epochs(job_id, after_epoch)
            if epochs or job["status"] in ("done", "failed"):
                return {"job": job, "epochs": epochs}
            return None

        async with self.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait_for(news), WATCH_TIMEOUT_S)
        return news() or {"job": self.jobs.get(job_id), "epochs": []}

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def _device(self) -> str:
        """cuda:0 (the GPU Ray gave this replica) when the controller places training on
        the GPU and CUDA works here; else cpu."""
        if await self.placement.get() != "gpu":
            return "cpu"
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"

    async def _run(self, job_id: str, dataset: Dataset, name: str, epochs: int,
                   base_model: str | None) -> None:
        assert self.settings.tmp_dir is not None
        work = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{job_id}-", dir=self.settings.tmp_dir))
        output = work / "checkpoints"
        try:
            device = await self._device()
            base = await asyncio.to_thread(self._base, dataset.kind, base_model)
            ketos.write_manifest(dataset, output)
            self.jobs.update(job_id, status="running", device=device, started_at=time.time())
            await self._notify()
            args = ketos.command(dataset.kind, dataset, epochs, output, device,
                                 self.settings.training_threads, base)
            returncode, best, tail, yielded = await self._ketos(job_id, dataset.kind, args,
                                                                work, device)
            while yielded:  # the LLM needed the GPU: go on from the checkpoint on the CPU
                resume = output / "checkpoint_abort.ckpt"
                resume = resume if resume.is_file() else ketos.best_checkpoint(output)
                if resume is None:
                    raise RuntimeError("training left the GPU for the LLM before its first "
                                       "checkpoint; submit it again")
                device = "cpu"
                self.jobs.update(job_id, device=device)
                logger.info("training job %s yields the GPU to the LLM: resuming from %s on "
                            "the CPU", job_id, resume.name)
                args = ketos.command(dataset.kind, dataset, epochs, output, device,
                                     self.settings.training_threads, resume=resume)
                returncode, best, tail, yielded = await self._ketos(job_id, dataset.kind, args,
                                                                    work, device)
            if returncode != 0:
                raise RuntimeError(f"ketos {dataset.kind} exited with {returncode}: "
                                   + " | ".join(tail)[-1500:])
            weights = best.weights if best and best.weights.is_file() else None
            if weights is None:
                raise RuntimeError("ketos finished without a model: " + " | ".join(tail)[-800:])
            job = self.jobs.get(job_id) or {}
            version = await asyncio.to_thread(self.models.publish, name, weights, {
                "kind": dataset.kind, "job_id": job_id, "accuracy": job.get("accuracy"),
                "base_model": base_model, "samples": dataset.samples})
            self.jobs.update(job_id, status="done", model_version=version.version,
                             best_checkpoint=best.checkpoint.name if best else None,
                             finished_at=time.time())
            logger.info("training job %s done: %s version %d", job_id, name, version.version)
        except Exception as exc:  # any failure ends the job failed, with its reason
            logger.warning("training job %s failed: %s", job_id, exc)
            self.jobs.update(job_id, status="failed", error=str(exc)[:2000],
                             finished_at=time.time())
        finally:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(dataset.root, ignore_errors=True)
            await self._notify()

    def _base(self, kind: str, base_model: str | None) -> Path | None:
        base = bases.resolve_base(kind, base_model, self.models)
        if base is not None and kind == "segtrain":
            base = bases.at_most(base, self.settings.segtrain_max_height,
                                 self.settings.trained_models_dir / ".bases")
        return base

    async def _yield_when_evicted(self, process: asyncio.subprocess.Process,
                                  device: str) -> bool:
        """While ketos runs on the GPU: when the controller places training on the CPU,
        interrupt it (Lightning writes checkpoint_abort.ckpt) and say so."""
        if device == "cpu":
            return False
        while process.returncode is None:
            await asyncio.sleep(self.settings.residency_poll_s)  # the controller's period
            if process.returncode is None and await self.placement.get() != "gpu":
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGINT)
                return True
        return False

    async def _ketos(self, job_id: str, kind: str, args: list[str], work: Path,
                     device: str = "cpu"
                     ) -> tuple[int, ketos.BestModel | None, list[str], bool]:
        """Run ketos, storing each epoch it reports; (exit code, best model, last lines,
        whether it was interrupted to give the GPU to the LLM)."""
        # Ray sets the replica's OMP_NUM_THREADS from its num_cpus (often 1); ketos gets
        # its own TRAINING_THREADS, or torch would train on one core.
        threads = str(self.settings.training_threads)
        env = {**os.environ, "COLUMNS": "512", "NO_COLOR": "1", "TERM": "dumb",
               "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        process = await asyncio.create_subprocess_exec(
            *args, cwd=work, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent, start_new_session=True)
        tail: deque[str] = deque(maxlen=OUTPUT_TAIL)
        best: ketos.BestModel | None = None
        seen = self.jobs.get(job_id)["epochs_done"] if self.jobs.get(job_id) else 0
        buffer = b""
        assert process.stdout is not None
        evicted = asyncio.get_running_loop().create_task(
            self._yield_when_evicted(process, device))
        try:
            while chunk := await process.stdout.read(65536):
                buffer += chunk
                *lines, buffer = re.split(rb"[\r\n]", buffer)
                for raw in lines:
                    line = _ANSI.sub("", raw.decode("utf-8", errors="replace")).rstrip()
                    if not line.strip():
                        continue
                    tail.append(line)
                    report = ketos.parse_epoch(line, kind)  # type: ignore[arg-type]
                    if report is not None and report.epoch > seen:
                        seen = report.epoch
                        self.jobs.add_epoch(job_id, report.epoch, report.accuracy)
                        await self._notify()
                    best = ketos.parse_best(line) or best
            returncode = await process.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            evicted.cancel()
            raise
        yielded = evicted.done() and not evicted.cancelled() and evicted.result()
        evicted.cancel()
        return returncode, best, list(tail), bool(yielded) and returncode != 0

    # ---- trained models -----------------------------------------------------------------

    async def versions(self, name: str) -> list[dict[str, Any]]:
        return [v.describe() for v in self.models.versions(name)]

    async def activate(self, name: str, version: int) -> dict[str, Any]:
        return self.models.activate(name, version).describe()

    def describe(self) -> dict[str, Any]:
        """For /readyz: the job store answers; which job runs, in which actor."""
        import ray

        running = self.jobs.unfinished()
        return {"deployment": DEPLOYMENT, "running": running["job_id"] if running else None,
                "actor": ray.get_runtime_context().get_actor_name()}


# The training registry: engine name of a `kind: training` catalog entry -> deployment.
ENGINES = {"ketos": Trainer}
