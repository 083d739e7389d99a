"""Training through HTTP alone: real ketos train and segtrain runs to done, progress as
server-sent events, activation and rollback seen by OCR and segmentation, and every
refusal (token, 409, too few samples, unsafe archives) leaving nothing on disk."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.documents import scanned_pdf
from tests.fixtures.training import line_zip, page_zip
from tests.integration.conftest import TRAINING_MIN_SAMPLES, TRAINING_TOKEN

pytestmark = pytest.mark.integration
TOKEN = {"X-Training-Token": TRAINING_TOKEN}
MAX_POLLS = 600  # GET requests while waiting for a restarted Trainer (each one answers)


def _submit(client: httpx.Client, route: str, archive: bytes, options: dict[str, Any],
            headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post(route, headers=TOKEN if headers is None else headers,
                       files={"file": ("corrections.zip", archive, "application/zip")},
                       data={"options": json.dumps(options)})


def _events(client: httpx.Client, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every server-sent event of a job, until its last one."""
    events, name = [], None
    with client.stream("GET", f"/v1/train/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: ") and name:
                events.append((name, json.loads(line[len("data: "):])))
    return events


def _datasets(service: dict[str, object]) -> list[Path]:
    folder = Path(str(service["data_dir"])) / "state" / "training" / "datasets"
    return sorted(folder.iterdir()) if folder.exists() else []


def _page() -> dict[str, tuple[str, bytes, str]]:
    """A scanned A4 page as an upload. blla scales every page to 1800 px high: the short
    strip of `scan_png` became 5,800 px wide, a minute a page on 2 cores, and these tests'
    five segmentations of it were a third of the suite's time."""
    return {"file": ("letter.pdf", scanned_pdf(), "application/pdf")}


def _ocr_kraken(client: httpx.Client) -> dict[str, Any]:
    response = client.post("/v1/ocr/upload", files=_page(),
                           data={"options": json.dumps({"engine": "kraken"})})
    assert response.status_code == 200, response.text
    return response.json()["pages"][0]


def test_recognition_trains_to_done_activates_and_rolls_back(
        client: httpx.Client, service: dict[str, object]) -> None:
    accepted = _submit(client, "/v1/train", line_zip(30), {"epochs": 2, "name": "archive-rec"})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    assert accepted.json()["status"] == "queued"
    assert accepted.headers["location"] == f"/v1/train/jobs/{job_id}"

    second = _submit(client, "/v1/train", line_zip(30), {"epochs": 1})
    assert second.status_code == 409, second.text
    assert job_id in second.json()["error"]["message"]

    events = _events(client, job_id)
    assert [name for name, _ in events] == ["epoch", "epoch", "done"]
    assert [data["epoch"] for name, data in events if name == "epoch"] == [1, 2]
    job = client.get(f"/v1/train/jobs/{job_id}").json()
    assert job == events[-1][1]
    assert (job["status"], job["kind"], job["epochs_done"], job["progress"]) == (
        "done", "train", 2, 1.0)
    assert job["samples"] == 30 and job["error"] is None
    assert job["accuracy"] is not None and job["cer"] == pytest.approx(1 - job["accuracy"])
    assert job["best_checkpoint"].startswith("checkpoint_")
    assert job["model"] == {"name": "archive-rec", "version": 2}
    assert _datasets(service) == []

    versions = client.get("/v1/models/archive-rec/versions").json()
    assert versions["active"] == 1  # a trained model waits for its activation
    assert [v["version"] for v in versions["versions"]] == [1, 2]
    assert _ocr_kraken(client)["model_version"] == 1

    activated = client.post("/v1/models/archive-rec/activate", json={"version": 2},
                            headers=TOKEN)
    assert activated.status_code == 200, activated.text
    assert activated.json()["active"] is True and activated.json()["job_id"] == job_id
    page = _ocr_kraken(client)
    assert (page["engine"], page["model"], page["model_version"]) == ("kraken", "archive-rec", 2)

    rolled_back = client.post("/v1/models/archive-rec/activate", json={"version": 1},
                              headers=TOKEN)
    assert rolled_back.status_code == 200
    assert _ocr_kraken(client)["model_version"] == 1
    models = {m["deployment"]: m for m in client.get("/v1/models").json()}
    assert models["OCR"]["trained_models"] == [{"name": "archive-rec", "version": 1}]


def test_segmentation_trains_on_pages_and_segment_uses_the_activated_model(
        client: httpx.Client) -> None:
    accepted = _submit(client, "/v1/segtrain", page_zip(5), {"epochs": 1})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    events = _events(client, job_id)
    assert [name for name, _ in events] == ["epoch", "done"]
    job = events[-1][1]
    assert (job["kind"], job["samples"], job["base_model"]) == ("segtrain", 5, "blla")
    assert job["cer"] == pytest.approx(1 - job["accuracy"])
    assert job["model"] == {"name": "archive-seg", "version": 1}

    before = client.post("/v1/segment/upload", files=_page())
    assert before.json()["pages"][0]["model_version"] is None  # kraken's bundled blla
    assert client.post("/v1/models/archive-seg/activate", json={"version": 1},
                       headers=TOKEN).status_code == 200
    after = client.post("/v1/segment/upload", files=_page())
    assert after.status_code == 200, after.text
    assert (after.json()["pages"][0]["model"], after.json()["pages"][0]["model_version"]) == (
        "archive-seg", 1)


@pytest.mark.parametrize(("headers", "status"), [({}, 401), ({"X-Training-Token": "no"}, 401)])
def test_training_needs_its_token(client: httpx.Client, service: dict[str, object],
                                  headers: dict[str, str], status: int) -> None:
    response = _submit(client, "/v1/train", line_zip(TRAINING_MIN_SAMPLES), {}, headers)
    assert response.status_code == status
    assert TRAINING_TOKEN not in response.text
    assert client.post("/v1/models/archive-rec/activate", json={"version": 1},
                       headers=headers).status_code == status
    assert _datasets(service) == []


def test_training_is_off_without_a_token_configured(client: httpx.Client) -> None:
    response = _submit(client, "/tiny/v1/train", line_zip(TRAINING_MIN_SAMPLES), {})
    assert response.status_code == 503
    assert "X-Training-Token" in response.json()["error"]["message"]


def test_too_few_samples_is_422_naming_the_count(client: httpx.Client,
                                                 service: dict[str, object]) -> None:
    response = _submit(client, "/v1/train", line_zip(TRAINING_MIN_SAMPLES - 1), {})
    assert response.status_code == 422
    error = response.json()["error"]
    assert f"holds {TRAINING_MIN_SAMPLES - 1} usable training lines" in error["message"]
    assert error["detail"]["samples"] == TRAINING_MIN_SAMPLES - 1
    pages = _submit(client, "/v1/segtrain", line_zip(TRAINING_MIN_SAMPLES), {})
    assert pages.status_code == 422 and "holds 0 usable training pages" in pages.text
    assert _datasets(service) == []


def _zip(entries: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


@pytest.mark.parametrize(("archive", "status"), [
    (_zip({"../../escaped.gt.txt": b"x", "a.png": b"x"}), 422),  # ZIP slip
    (_zip({"lines/a.gt.txt": b"x"}, symlink="lines/a.png"), 422),  # a symlink entry
    (_zip({"bomb.gt.txt": b"0" * (20 * 1024 * 1024)}), 413),  # expands 20000-fold
    (_zip({"inner.zip": line_zip(5)}), 422),  # nested archive
    (b"PK\x03\x04 not really a zip", 415),
])
def test_unsafe_archives_are_refused_and_leave_nothing(
        client: httpx.Client, service: dict[str, object], archive: bytes, status: int) -> None:
    response = _submit(client, "/v1/train", archive, {})
    assert response.status_code == status, response.text
    assert _datasets(service) == []
    assert not (Path(str(service["data_dir"])).parent / "escaped.gt.txt").exists()


def test_a_killed_trainer_fails_its_job_and_keeps_the_list(
        client: httpx.Client, service: dict[str, object]) -> None:
    import ray
    from ray import serve

    before = {job["job_id"] for job in client.get("/v1/train/jobs").json()}
    assert before  # the trainings of the tests above
    accepted = _submit(client, "/v1/train", line_zip(30), {"epochs": 50, "name": "killed"})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    with client.stream("GET", f"/v1/train/jobs/{job_id}/events") as stream:
        next(line for line in stream.iter_lines() if line == "event: epoch")  # ketos runs
    trainer = serve.get_deployment_handle("Trainer", "main")
    actor = trainer.describe.remote().result()["actor"]
    ray.kill(ray.get_actor(actor, namespace="serve"), no_restart=True)

    for _ in range(MAX_POLLS):  # each GET waits for the restarted replica or answers
        job = client.get(f"/v1/train/jobs/{job_id}")
        if job.status_code == 200 and job.json()["status"] == "failed":
            break
    assert job.json()["status"] == "failed"
    assert job.json()["error"] == "interrupted by restart"
    assert before | {job_id} <= {j["job_id"] for j in client.get("/v1/train/jobs").json()}
    models = Path(str(service["data_dir"])) / "state" / "models"
    assert not list(models.rglob("*.partial")) and not (models / "killed").exists()
    assert _datasets(service) == []
