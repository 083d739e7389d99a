"""`ocr-graph serve` hands `serve run` the environment the service needs: the API key and
the proxy's front door, without overriding what the operator set."""

from __future__ import annotations

from typing import Any

import pytest

from serve_app import cli
from serve_app.front_door import CALLBACK, CALLBACK_ENV


def served(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], dict[str, str]]:
    seen: dict[str, Any] = {}

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        seen.update(argv=argv, env=env)

    monkeypatch.setattr(cli.os, "execve", execve)
    assert cli.main(["serve", "config/local.yaml"]) == 0
    return seen["argv"], seen["env"]


def test_serve_runs_the_config_with_the_key_and_the_front_door(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.delenv(CALLBACK_ENV, raising=False)
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k" * 32)
    argv, env = served(clean_env)
    assert argv[1:] == ["run", "config/local.yaml"]
    assert env[CALLBACK_ENV] == CALLBACK and env["OCR_SIDECAR_API_KEY"] == "k" * 32


def test_an_operators_own_proxy_callback_is_kept(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(CALLBACK_ENV, "site.proxy:middlewares")
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k" * 32)
    assert served(clean_env)[1][CALLBACK_ENV] == "site.proxy:middlewares"
