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


RAY_PROCESS_MARKS = ("ray::", "gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py", "runtime_env")


def ray_processes() -> set[int]:
    """PIDs of Ray processes on this machine (from /proc)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(mark in cmd for mark in RAY_PROCESS_MARKS):
                out.add(int(entry.name))
    return out


@pytest.fixture
def cluster():
    before = ray_processes()
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
        # Stop exactly this cluster: the Ray processes that appeared since it started (tests run one at a
        # time; `ray stop` would stop every Ray on the machine, and Ray renames its processes, so their
        # command lines no longer show the temp dir).
        for pid in ray_processes() - before:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        time.sleep(2)
        assert not (ray_processes() - before), "processes of the test cluster survived"


def test_study_runs_on_an_existing_cluster(cluster, tmp_path):
    env = {**cluster["env"], "RAY_ADDRESS": cluster["address"]}
    result = subprocess.run([sys.executable, str(SCRIPT), "--config", str(SMOKE), "--output-dir", str(tmp_path),
                             "--set", "sweep.strategies=[forward]", "--set", "sweep.inits=[teacher]", "--set", "sweep.seeds=[0]"],
                            capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "[raykd] done: 1 finished, 0 diverged, 0 failed" in result.stdout
    client, runs = runs_by_name(tmp_path / "smoke")
    assert runs["forward-teacher-w3-s0"].data.tags["raykd.status"] == "finished"
    # the analysis actor ran on that cluster too (a partial report: one strategy, one seed)
    assert (tmp_path / "smoke" / "report" / "summary.json").is_file() and "== verdict: smoke" in result.stdout
