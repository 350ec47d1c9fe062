"""Faults a study survives, on the smoke config through the real entry script, real Ray and real MLflow.

Every kill is a SIGKILL of the study's whole process group (driver, Ray's GCS and raylet): what a
node loss or an OOM kill does. No `ray stop`: it would stop every Ray on the machine.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests import faults
from tests.cluster import free_port
from tests.mlflow_server import start_server, stop_server
from tests.smoke_studies import ROOT, SCRIPT, SMOKE, seed_teacher, set_items

# 4 trials (2 strategies x 2 seeds) of 39 steps, checkpoints every 4 steps, a small angle measurement
SMALL = [
    "--set",
    "sweep.strategies=[forward,none]",
    "--set",
    "sweep.inits=[random]",
    "--set",
    "sweep.seeds=[0,1]",
    "--set",
    "distill.train.eval_every=4",
    "--set",
    "distill.train.epochs=3",
    "--set",
    "compute.max_concurrent_trials=1",
    "--set",
    "analysis.angles.examples=32",
]

pytestmark = [pytest.mark.slow, pytest.mark.reliability]


def command(out: Path, *args: str) -> list[str]:
    return [sys.executable, str(SCRIPT), "--config", str(SMOKE), "--output-dir", str(out), *args]


def start(out: Path, *args: str, env=None, teacher: Path | None = None) -> subprocess.Popen:
    """The study in its own process group; `teacher`: start from the session's smoke teacher (tests/smoke_studies.py)."""
    if teacher is not None:
        seed_teacher(teacher, out, args[args.index("--name") + 1] if "--name" in args else "smoke", set_items(args))
    return subprocess.Popen(
        command(out, *args),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def kill_when(proc: subprocess.Popen, marker: str, *, then=None, timeout: float = 300) -> list[str]:
    """Read the study's output until a line contains `marker`, run `then()`, SIGKILL the process group."""
    lines, deadline = [], time.time() + timeout
    try:
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                raise AssertionError(f"the study ended before {marker!r}:\n" + "".join(lines[-40:]))
            lines.append(line)
            if marker in line:
                if then is not None:
                    then()
                return lines
        raise AssertionError(f"no {marker!r} within {timeout} s:\n" + "".join(lines[-40:]))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(3)  # its Ray workers notice that their raylet is gone and exit


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def trial_runs(uri: str, name: str) -> dict:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    names = [r.info.run_name for r in runs]
    assert len(names) == len(set(names)), f"duplicate MLflow runs: {sorted(names)}"
    return {r.info.run_name: r for r in runs}


def counted(summary: dict) -> dict:
    return {
        "trials": sorted((t["trial_id"], t["status"]) for t in summary["trials"]),
        "excluded": summary["excluded"],
        "cells": sorted((c["strategy"], c["init"], c["n"], tuple(c["seeds"])) for c in summary["cells"]),
    }


def test_killed_at_every_stage_the_same_command_goes_on(tmp_path):
    """SIGKILL during the teacher stage, between trials while another trial is mid-way, and during the analysis; each
    time the same command goes on, to one MLflow run per trial. (Two studies at once on one store:
    tests/e2e/test_production.py; the sqlite schema race: tests/test_tracking.py.)"""
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {"MLFLOW_TRACKING_URI": uri}
    chain = ["--name", "chain", *SMALL]
    chain_dir = tmp_path / "chain"

    # 1. during the teacher's fine-tuning (held open for 30 s by the test switch: the smoke teacher trains in seconds)
    kill_when(
        start(tmp_path, *chain, env={**env, **faults.ENABLE, "RAYKD_TEST_PAUSE": "teacher fine-tuning:30"}),
        "[teacher fine-tuning] step 0/",
    )
    teacher_dirs = list((chain_dir / "teacher").glob("*"))
    assert not any((d / "metrics.json").is_file() for d in teacher_dirs), "the teacher stage had already finished"

    # 2. between trials and mid-trial at once: once the first trial has ended and the second has a checkpoint
    def second_trial_checkpointed():
        deadline = time.time() + 120
        while time.time() < deadline:
            folder = chain_dir / "checkpoints"
            started = [d for d in folder.iterdir() if any(d.glob("step-*"))] if folder.is_dir() else []
            if len(started) >= 2:
                return
            time.sleep(0.3)
        raise AssertionError("the second trial wrote no checkpoint")

    kill_when(start(tmp_path, *chain, env=env), "[1/4 done", then=second_trial_checkpointed)
    runs = trial_runs(uri, "chain")
    ended_first = {
        n: r.info.end_time
        for n, r in runs.items()
        if r.data.tags.get("raykd.role") == "trial" and r.data.tags.get("raykd.status") == "finished"
    }
    assert len(ended_first) == 1
    train_dirs = {d.name for d in (chain_dir / "checkpoints").iterdir() if any(d.glob("step-*"))}
    interrupted = sorted(train_dirs - set(ended_first))
    assert len(interrupted) == 1, (train_dirs, ended_first)

    # 4. during the analysis (held open for 20 s by the test switch, so the kill lands inside it on any machine)
    lines = kill_when(
        start(tmp_path, *chain, env={**env, **faults.ENABLE, "RAYKD_TEST_PAUSE": "analysis:20"}),
        "[raykd] mean test",
        then=lambda: time.sleep(3),
    )
    assert any("resuming: 1 of 4 trials already ended; running 3" in line for line in lines)
    assert not (chain_dir / "report" / "summary.json").exists(), "the analysis had already finished"

    out = finish(start(tmp_path, *chain, env=env))
    assert (
        "[raykd] resuming: 4 of 4 trials already ended; running 0" in out
        and "[raykd] done: 4 finished, 0 diverged, 0 failed" in out
    )

    runs = trial_runs(uri, "chain")  # exactly one run per trial, no duplicates
    trials = {n: r for n, r in runs.items() if r.data.tags.get("raykd.role") == "trial"}
    assert len(trials) == 4 and all(r.data.tags["raykd.status"] == "finished" for r in trials.values())
    for name, end_time in ended_first.items():
        assert trials[name].info.end_time == end_time  # finished trials were not re-run
    assert int(trials[interrupted[0]].data.tags["raykd.resumed_from_step"]) >= 4  # from its last checkpoint
    assert runs["chain"].info.status == "FINISHED"
    assert len([r for r in runs.values() if r.data.tags.get("raykd.role") == "teacher"]) == 1
    assert [d.name for d in (chain_dir / "teacher").iterdir()] == [
        runs["teacher"].data.tags["raykd.trial_id"][len("teacher-") :]
    ]

    summary = json.loads((chain_dir / "report" / "summary.json").read_text())  # every trial counted once
    assert counted(summary) == {
        "trials": sorted((t, "finished") for t in trials),
        "excluded": [],
        "cells": [("forward", "random", 2, (0, 1)), ("none", "random", 2, (0, 1))],
    }


def test_worker_deaths_retried_from_checkpoint_beyond_retries_failed_and_a_truncated_checkpoint_restarts(
    tmp_path, smoke_teacher
):
    """Fault injection through the test-only switch (RAYKD_TEST_FAIL_AT_STEP, tests/faults.py):

    - forward-random-s0 dies at step 2 on every attempt: retried once (compute.max_failures=1), then failed;
    - none-random-s1 dies once at step 6: retried from its step-4 checkpoint, then finishes;
    - none-random-s0 dies once at step 6, and while it dies its step-4 checkpoint is truncated: the restarted
      worker detects it, warns, and trains that trial from the start instead of crashing.
    The study goes on; the analysis reports what it can (one matching strategy) and lists the failure."""
    import threading

    env = {
        **faults.ENABLE,
        "RAYKD_TEST_FAIL_AT_STEP": "forward-random-w3-s0:2:always,none-random-w0-s1:6,none-random-w0-s0:6",
    }
    proc = start(
        tmp_path,
        "--set",
        "sweep.strategies=[forward,none]",
        "--set",
        "sweep.inits=[random]",
        "--set",
        "sweep.seeds=[0,1]",
        "--set",
        "compute.max_failures=1",
        "--set",
        "distill.train.eval_every=4",
        "--set",
        "analysis.angles.examples=32",
        env=env,
        teacher=smoke_teacher,
    )
    study = tmp_path / "smoke"
    truncated = []

    def truncate_while_it_dies():  # the worker sleeps a few seconds between its marker and its death
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:
            if (study / "faults" / "none-random-w0-s0").exists():
                for model_file in (study / "checkpoints" / "none-random-w0-s0").glob(
                    "step-*/student/model.safetensors"
                ):
                    data = model_file.read_bytes()
                    model_file.write_bytes(data[: len(data) // 3])
                    truncated.append(model_file)
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=truncate_while_it_dies)
    watcher.start()
    out, _ = proc.communicate(timeout=600)
    watcher.join()
    assert proc.returncode == 0, out[-4000:]
    assert truncated, "the checkpoint to truncate was not there"
    assert "[raykd] done: 3 finished, 0 diverged, 1 failed" in out
    rows = {r["trial_id"]: r for r in json.loads((study / "results" / "trials.json").read_text())["trials"]}
    assert rows["forward-random-w3-s0"]["status"] == "failed" and rows["forward-random-w3-s0"]["error"]
    runs = trial_runs(f"sqlite:///{study / 'mlflow.db'}", "smoke")
    assert runs["forward-random-w3-s0"].data.tags["raykd.status"] == "failed"
    assert len(list((study / "faults").glob("forward-random-w3-s0.*"))) == 2  # the attempt and its one retry died
    resumed = runs["none-random-w0-s1"].data.tags
    assert resumed["raykd.status"] == "finished" and resumed["raykd.resumed_from_step"] == "4"
    restarted = runs["none-random-w0-s0"].data.tags
    assert restarted["raykd.status"] == "finished" and "is unreadable" in restarted["raykd.checkpoint_discarded"]
    assert runs["forward-random-w3-s1"].data.tags["raykd.status"] == "finished"
    assert runs["smoke"].info.status == "FINISHED"
    summary = json.loads((study / "report" / "summary.json").read_text())
    assert any(e["trial_id"] == "forward-random-w3-s0" for e in summary["excluded"])
    report = (study / "report" / "report.md").read_text()
    assert "Not testable (see Notes)" in report and "needs at least two matching strategies" in report


def test_tracking_server_outage_short_is_ridden_out_long_fails_clearly_and_resumes(tmp_path, smoke_teacher):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {"MLFLOW_TRACKING_URI": uri}
    longer = [
        "--set",
        "sweep.strategies=[forward,none]",
        "--set",
        "sweep.inits=[random]",
        "--set",
        "sweep.seeds=[0]",
        "--set",
        "distill.train.epochs=3",
        "--set",
        "distill.train.log_every=2",
        "--set",
        "analysis.enabled=false",
        "--set",
        "compute.max_concurrent_trials=1",
    ]
    server = start_server(tmp_path, port)
    try:
        # A short outage while the trials train: MLflow's client retries, nothing is lost, nothing fails.
        proc = start(tmp_path / "a", *longer, env=env, teacher=smoke_teacher)
        lines, deadline = [], time.time() + 300
        while time.time() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "[raykd] sweep:" in line or not line:
                break
        time.sleep(4)
        stop_server(server)
        time.sleep(8)
        server = start_server(tmp_path, port)
        out = "".join(lines) + finish(proc)
        assert "[raykd] done: 2 finished, 0 diverged, 0 failed" in out
        client = MlflowClient(uri)
        runs = trial_runs(uri, "smoke")
        for name in ("forward-random-w3-s0", "none-random-w0-s0"):
            steps = sorted(m.step for m in client.get_metric_history(runs[name].info.run_id, "train.ce"))
            assert steps == list(range(2, 39 + 1, 2)), (name, steps)  # 39 steps (3 epochs x 13), every 2nd logged
            assert runs[name].data.tags["raykd.status"] == "finished"
            assert "test.accuracy" in runs[name].data.metrics

        # A server that stays away: the study stops with one clear message ...
        stop_server(server)
        quick = {
            **env,
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
        }
        server = start_server(tmp_path, port)
        one = [*longer, "--set", "sweep.strategies=[none]"]  # one trial is enough to lose the server under
        proc = start(tmp_path / "b", "--name", "smoke_b", *one, env=quick, teacher=smoke_teacher)
        lines = []
        while True:
            line = proc.stdout.readline()
            lines.append(line)
            if "[raykd] sweep:" in line or not line:
                break
        stop_server(server)
        out = "".join(lines) + proc.communicate(timeout=600)[0]
        assert proc.returncode == 3, out[-4000:]
        assert f"error: the MLflow tracking server {uri} went away" in out and "re-run the same command" in out
        assert out.count("error:") == 1
        # ... and the same command completes the study once the server is back
        server = start_server(tmp_path, port)
        out = finish(start(tmp_path / "b", "--name", "smoke_b", *one, env=env))
        assert "[raykd] done: 1 finished, 0 diverged, 0 failed" in out
        runs = trial_runs(uri, "smoke_b")  # asserts: one run per trial, no duplicates
        trials = [r for r in runs.values() if r.data.tags.get("raykd.role") == "trial"]
        assert len(trials) == 1 and all(r.data.tags["raykd.status"] == "finished" for r in trials)
        assert runs["smoke_b"].info.status == "FINISHED"
    finally:
        stop_server(server)
