"""Start the application on a private local Ray cluster for a benchmark, and stop it."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def running_app(args: dict[str, Any], num_cpus: int = 2) -> Iterator[tuple[str, str]]:
    """(base URL, API key) of build_app(args) served on 127.0.0.1; all state in a temp dir."""
    import ray
    from ray import serve

    from serve_app.app import build_app

    work = Path(tempfile.mkdtemp(prefix="ocrg-bench-"))
    key = os.urandom(16).hex()
    os.environ.update({"RAY_AUTH_MODE": "disabled", "OCR_SIDECAR_API_KEY": key,
                       "DATA_DIR": str(work / "data")})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray.init(num_cpus=num_cpus, _temp_dir=str(work / "ray"), include_dashboard=False,
             log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(args), name="bench", route_prefix="/")
        yield f"http://127.0.0.1:{port}", key
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
