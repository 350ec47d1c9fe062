"""A real MLflow tracking server for the tests: mlflow/serve.py on a loopback port, in its own process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_server(
    folder: Path, port: int, *flags: str, env: dict | None = None, timeout: float = 240
) -> subprocess.Popen:
    """mlflow/serve.py over the store in `folder` (or the one `flags` name with ``--backend-store-uri``) on `port`;
    returns once /health answers (its log: a new ``server-*.log`` in `folder`, so a restarted server keeps the
    earlier one's)."""
    log_path = folder / f"server-{time.time_ns()}.log"
    with open(log_path, "w") as log:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "mlflow" / "serve.py"),
                *([] if "--backend-store-uri" in flags else ["--local", str(folder / "store")]),
                "--port",
                str(port),
                "--workers",
                "1",
                *flags,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=folder,
            env={**os.environ, **(env or {})},
        )
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise AssertionError("the MLflow server exited:\n" + log_path.read_text()[-3000:])
    stop_server(proc)
    raise AssertionError(f"the MLflow server did not answer /health in {timeout:g} s")


def stop_server(proc: subprocess.Popen, *, graceful: bool = False) -> None:
    """Stop exactly the process group the test started (server and its workers): SIGKILL, the server going away
    without a goodbye; `graceful`: SIGTERM first, SIGKILL after 30 s."""
    if graceful:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            pass
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
