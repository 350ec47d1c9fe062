"""A real MLflow tracking server (mlflow/serve.py) on a free loopback port: helpers and a study over HTTP."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.cluster import free_port
from tests.mlflow_server import start_server, stop_server
from tests.smoke_studies import seed_teacher

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serve(tmp_path_factory.mktemp("mlflow-server"))


def serve(folder: Path, *flags: str, env: dict | None = None):
    """Start mlflow/serve.py on a free loopback port, yield once it answers, then stop its process group."""
    port = free_port()
    proc = start_server(folder, port, *flags, env=env)
    try:
        yield {"uri": f"http://127.0.0.1:{port}", "store": folder / "store", "proc": proc}
    finally:
        stop_server(proc, graceful=True)
    time.sleep(1)
    with socket.socket() as s:  # nothing listens on the port any more
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_tracking_helpers_over_http(server, tmp_path, monkeypatch):
    from raykd import tracking as tr

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["uri"])
    tr.check_reachable(server["uri"])
    uid = uuid.uuid4().hex
    tracking = tr.open_study(tmp_path / "study", "server-check", uid, {"a.b": 1, "sweep.seeds": [0, 1]})
    assert tracking.uri == server["uri"]
    run_id = tr.child_run(tracking, role="trial", key="t1", run_name="t1", tags={"raykd.strategy": "forward"})
    assert tr.child_run(tracking, role="trial", key="t1", run_name="t1") == run_id  # found again, not duplicated
    client = tracking.client()
    tr.log_metrics(client, run_id, {"train/total": 1.5}, 3, int(time.time() * 1000))
    client.log_dict(run_id, {"x": 1}, "layer_map.json")
    tr.finish(client, run_id, "finished")
    run = client.get_run(run_id)
    assert run.data.metrics["train.total"] == 1.5 and run.data.tags["raykd.status"] == "finished"
    assert run.info.status == "FINISHED"
    assert client.get_run(tracking.parent_run_id).data.params["sweep.seeds"] == "[0, 1]"
    # artifacts went through the server into its artifact store (no client-side storage access)
    stored = list((server["store"] / "mlartifacts").rglob("layer_map.json"))
    assert len(stored) == 1 and json.loads(stored[0].read_text()) == {"x": 1}
    # the server runs without MLflow's job runner (mlflow/serve.py): no huey consumers beside it
    import psutil

    tree = [p.cmdline() for p in psutil.Process(server["proc"].pid).children(recursive=True)]
    assert tree and not [c for c in tree if any("huey" in part for part in c)], tree


def test_study_tracks_to_the_server_and_analyze_reads_it(server, tmp_path, smoke_teacher):
    env = {**os.environ, "MLFLOW_TRACKING_URI": server["uri"]}
    one_at_a_time = ["--set", "compute.max_concurrent_trials=1"]
    seed_teacher(smoke_teacher, tmp_path, "smoke_http", one_at_a_time[1::2])  # its teacher run is logged (reused)
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "studies" / "strategy_grid.py"),
            "--config",
            str(ROOT / "studies" / "configs" / "smoke.yaml"),
            "--output-dir",
            str(tmp_path),
            "--name",
            "smoke_http",
            "--set",
            "sweep.strategies=[forward,none]",
            "--set",
            "sweep.inits=[random]",
            "--set",
            "sweep.seeds=[0]",
            *one_at_a_time,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"compare in MLflow: open {server['uri']}/#/experiments/" in result.stdout  # the server's page, no local ui
    study_dir = tmp_path / "smoke_http"
    assert not (study_dir / "mlflow.db").exists()  # nothing tracked locally
    client = MlflowClient(server["uri"])
    experiment = client.get_experiment_by_name("smoke_http")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {
        "smoke_http",
        "teacher",
        "forward-random-w3-s0",
        "none-random-w0-s0",
        "arm-forward-random-w3",  # one run per arm (n=1: its mean and the trial count)
        "arm-none-random-w0",
    }
    assert runs["arm-none-random-w0"].data.metrics["trials"] == 1
    teacher = runs["teacher"]  # the copied teacher folder still gets this study's teacher run, with its metrics
    assert teacher.data.tags["raykd.teacher_reused"] == "true" and "teacher.test.accuracy" in teacher.data.metrics
    trial = runs["forward-random-w3-s0"]
    assert trial.info.status == "FINISHED" and "test.accuracy" in trial.data.metrics
    assert len(client.get_metric_history(trial.info.run_id, "train.total")) >= 1
    parent = runs["smoke_http"]
    assert {"report/summary.json", "report/report.md"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id, "report")
    }
    again = subprocess.run(
        [
            sys.executable,
            str(ROOT / "studies" / "analyze.py"),
            "--study",
            str(study_dir),
            "--tracking-uri",
            server["uri"],
            "--no-mlflow-log",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((study_dir / "report" / "summary.json").read_text())
    assert summary["setup"]["tracking"] == server["uri"]
    assert [t["trial_id"] for t in summary["trials"]] == ["forward-random-w3-s0", "none-random-w0-s0"]


def test_basic_auth_server_refuses_anonymous_clients(tmp_path, monkeypatch):
    from raykd import tracking as tr

    credentials = {"MLFLOW_AUTH_ADMIN_USERNAME": "admin", "MLFLOW_AUTH_ADMIN_PASSWORD": "a-long-test-password"}
    running = serve(tmp_path, "--basic-auth", env=credentials)
    server = next(running)
    try:
        url = server["uri"] + "/api/2.0/mlflow/experiments/search?max_results=1"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 401
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server["uri"])
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", credentials["MLFLOW_AUTH_ADMIN_PASSWORD"])
        tracking = tr.open_study(tmp_path / "study", "auth-check", uuid.uuid4().hex, {"x": 1})
        assert MlflowClient(server["uri"]).get_run(tracking.parent_run_id).data.params == {"x": "1"}
    finally:
        next(running, None)  # teardown: stop the server's process group
