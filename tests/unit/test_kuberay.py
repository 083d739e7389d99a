"""deploy/kuberay/rayservice.yaml runs the same application as serve_config.yaml, in a
serve config Ray itself accepts, with autoscaling where it belongs and secrets by ref."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serve_app.app import build_app
from serve_app.front_door import NODE_ENV

ROOT = Path(__file__).resolve().parents[1].parent


def rayservice() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "deploy" / "kuberay" / "rayservice.yaml").read_text())


def serve_config_v2() -> dict[str, Any]:
    return yaml.safe_load(rayservice()["spec"]["serveConfigV2"])


def without_options(args: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in args.items() if key != "deployment_options"}


def test_the_serve_config_is_serve_config_yaml_s_application() -> None:
    ours = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"][0]
    theirs = serve_config_v2()["applications"][0]
    for key in ("name", "route_prefix", "import_path"):
        assert theirs[key] == ours[key]
    assert without_options(theirs["args"]) == without_options(ours["args"])
    assert set(theirs["args"]["deployment_options"]) == set(ours["args"]["deployment_options"])


def test_ray_accepts_the_serve_config_and_the_app_builds(clean_env: pytest.MonkeyPatch
                                                          ) -> None:
    ServeDeploySchema.model_validate(serve_config_v2())
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    args = serve_config_v2()["applications"][0]["args"]
    # As on a CPU-only head node (serve_config.yaml says to set it there).
    build_app({**args, "gpu_total_mb": 24576})


def test_the_ingress_and_ocr_autoscale_and_the_gpu_group_asks_for_a_gpu() -> None:
    options = serve_config_v2()["applications"][0]["args"]["deployment_options"]
    for name in ("Ingress", "OCR"):
        scaling = options[name]["autoscaling_config"]
        assert scaling["max_replicas"] > scaling["min_replicas"] >= 1
        assert "num_replicas" not in options[name]
    cluster = rayservice()["spec"]["rayClusterConfig"]
    [gpu] = [group for group in cluster["workerGroupSpecs"] if group["groupName"] == "gpu"]
    [container] = gpu["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["rayStartParams"]["num-gpus"] == "1"
    head = cluster["headGroupSpec"]["template"]["spec"]
    for spec in (head, gpu["template"]["spec"]):
        assert spec["securityContext"]["runAsUser"] == 1000
        [main] = spec["containers"]
        [key] = [e for e in main["env"] if e["name"] == "OCR_SIDECAR_API_KEY"]
        assert "secretKeyRef" in key["valueFrom"] and "value" not in key
        given = {e["name"]: e.get("value") for e in main["env"]}
        # every node starts Ray with HAProxy and the proxy's front door
        assert {name: given.get(name) for name in NODE_ENV} == NODE_ENV
        mounts = {m["mountPath"] for m in main["volumeMounts"]}
        assert {"/models", "/data/state"} <= mounts
