"""Benchmark: what starting raykd's MLflow tracking server costs, with MLflow 3's job runner (its default) and
without it (what `mlflow/serve.py` starts unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION says otherwise).

Each start is `mlflow/serve.py --local` on a fresh store and a free loopback port, the two variants alternating,
``--repeats`` times each, in the same run. Per start: seconds until ``/health`` answers, the processes of its tree,
and the CPU seconds the tree used from launch until ``--settle`` seconds after it answered (sampled every 0.3 s).

    python benchmarks/mlflow_server.py                 # results/mlflow_server.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"job_runner": "true", "no_job_runner": "false"}  # the first is MLflow's default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(job_execution: str, settle: float, timeout: float = 120) -> dict:
    """One server start: seconds to /health, processes in its tree, CPU seconds until `settle` s after /health."""
    folder, port = Path(tempfile.mkdtemp(prefix="raykd-bench-mlflow-")), free_port()
    command = [sys.executable, str(ROOT / "mlflow" / "serve.py"), "--local", str(folder / "store")]
    command += ["--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": job_execution}
    started = time.time()
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    cpu: dict[int, float] = {}
    ready = None
    try:
        while time.time() - started < timeout and (ready is None or time.time() - started < ready + settle):
            root = psutil.Process(proc.pid)
            for p in [root, *root.children(recursive=True)]:
                try:
                    times = p.cpu_times()
                    cpu[p.pid] = times.user + times.system + times.children_user + times.children_system
                except psutil.Error:
                    pass
            if ready is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                        ready = time.time() - started if response.status == 200 else None
                except OSError:
                    pass
            time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if ready is None:
        raise RuntimeError(f"the server ({job_execution=}) did not answer /health within {timeout} s")
    return {"ready_s": round(ready, 1), "processes": len(cpu), "cpu_s": round(sum(cpu.values()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settle", type=float, default=8.0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mlflow_server.json"))
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, value in VARIANTS.items():
            runs[name].append(start(value, args.settle))
            print(name, runs[name][-1], flush=True)
    out = {
        "benchmark": "mlflow_server",
        "command": "python benchmarks/mlflow_server.py" + (f" --repeats {args.repeats}" if args.repeats != 3 else ""),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settle_s": args.settle,
        "median": {
            name: {key: statistics.median(r[key] for r in rs) for key in ("ready_s", "processes", "cpu_s")}
            for name, rs in runs.items()
        },
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["median"]))


if __name__ == "__main__":
    main()
