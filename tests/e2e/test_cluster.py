"""RAY_ADDRESS: the same script drives a separately started Ray cluster (a local `ray start --head`)."""

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.e2e.test_strategy_grid import ROOT, SCRIPT, SMOKE, runs_by_name

pytestmark = pytest.mark.slow


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster():
    temp_dir = tempfile.mkdtemp(prefix="raykd-cluster-")
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "raykd-test-token-0123456789abcdef"}
    ray = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--resources={\"tune_driver\": 100}",
                    f"--temp-dir={temp_dir}", f"--dashboard-port={free_port()}", "--disable-usage-stats"],
                   check=True, capture_output=True, env=env, timeout=120)
    try:
        yield {"address": f"127.0.0.1:{port}", "env": env}
    finally:
        # stop exactly this cluster: every process started under its temp dir
        subprocess.run(["pkill", "-9", "-f", temp_dir], capture_output=True)
        time.sleep(3)


def test_study_runs_on_an_existing_cluster(cluster, tmp_path):
    env = {**cluster["env"], "RAY_ADDRESS": cluster["address"]}
    result = subprocess.run([sys.executable, str(SCRIPT), "--config", str(SMOKE), "--output-dir", str(tmp_path),
                             "--set", "sweep.strategies=[forward]", "--set", "sweep.inits=[teacher]"],
                            capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "[raykd] done: 1 finished, 0 diverged, 0 failed" in result.stdout
    client, runs = runs_by_name(tmp_path / "smoke")
    assert runs["forward-teacher-w3-s0"].data.tags["raykd.status"] == "finished"
