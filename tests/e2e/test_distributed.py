"""Distributed for real: a two-node Ray cluster on this machine (two raylets, one CPU each), studies joining it
through RAY_ADDRESS with the output folder as the storage both nodes share.

- a DDP trial whose two workers run on the two nodes, against the same global batch on one worker; in the same
  study, a non-finite loss on one rank of another trial stops every rank at the same step (agreed by an
  all-reduce): `diverged`;
- a node lost mid-trial: the trial is retried from its last checkpoint on what remains;
- every request fits on one node, and one that never could fails at once, saying what was asked and what the
  nodes have.
"""

import json
import subprocess
import sys
import time

import pytest

from tests import faults
from tests.cluster import LocalCluster
from tests.e2e.test_strategy_grid import runs_by_name
from tests.smoke_studies import ROOT, SCRIPT, SMOKE, seed_teacher, set_items

pytestmark = [pytest.mark.slow, pytest.mark.distributed]
ONE_ARM = [
    "--set",
    "sweep.strategies=[forward]",
    "--set",
    "sweep.inits=[random]",
    "--set",
    "sweep.seeds=[0]",
    "--set",
    "analysis.enabled=false",
    "--set",
    "distill.train.eval_every=4",
    "--set",
    "distill.train.log_every=1",
]


@pytest.fixture(scope="module")
def cluster():
    cluster = LocalCluster(head_cpus=1)
    try:
        cluster.add_node(cpus=1)
        yield cluster
    finally:
        cluster.stop()


def study(cluster, out, *args, env=None, timeout=900, teacher=None):
    """The smoke study joined to `cluster`; `teacher`: start from the session's smoke teacher (tests/smoke_studies.py)."""
    if teacher is not None:
        seed_teacher(teacher, out, "smoke", set_items(args))
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(SMOKE), "--output-dir", str(out), *args],
        capture_output=True,
        text=True,
        env={**cluster.env, **(env or {})},
        timeout=timeout,
        cwd=ROOT,
    )


def history(client, run, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


def test_ddp_trials_on_two_nodes_against_one_worker_and_a_non_finite_loss_on_one_rank(cluster, tmp_path, smoke_teacher):
    """Two DDP trials, one after the other: seed 0 trains normally; in seed 1, rank 1's weights turn NaN after step 3
    (tests/faults.py, RAYKD_TEST_NAN_AT_STEP), so only rank 1's loss at step 4 is not finite."""
    storage = f"file://{tmp_path / 'storage'}"  # Ray's storage and the checkpoints on "remote" storage
    started = time.time()
    ddp = study(
        cluster,
        tmp_path / "ddp",
        *ONE_ARM,
        "--set",
        "sweep.seeds=[0,1]",
        "--set",
        "compute.num_workers=2",
        "--set",
        "compute.cpus_per_worker=1",
        "--storage",
        storage,
        teacher=smoke_teacher,
        env={**faults.ENABLE, "RAYKD_TEST_NAN_AT_STEP": "forward-random-w3-s1:3:1"},
    )
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    assert "[raykd] done: 1 finished, 1 diverged, 0 failed" in ddp.stdout, ddp.stdout[-3000:]
    assert time.time() - started < 400  # not a collective timeout (30 min): both ranks stopped together
    assert list((tmp_path / "storage" / "smoke" / "checkpoints" / "forward-random-w3-s0").glob("step-*/COMPLETE"))
    assert (tmp_path / "storage" / "smoke" / "ray" / "sweep").is_dir()
    assert not (tmp_path / "ddp" / "smoke" / "checkpoints").exists()
    assert "2 worker(s) x (1 CPU) per trial, a Ray Train worker group each" in ddp.stdout
    client, runs = runs_by_name(tmp_path / "ddp" / "smoke")
    trial = runs["forward-random-w3-s0"]
    assert trial.data.tags["raykd.status"] == "finished" and trial.data.params["world_size"] == "2"
    ranks = json.loads(trial.data.params["ddp.ranks"])
    assert [r["rank"] for r in ranks] == [0, 1]
    assert len({r["node"] for r in ranks}) == 2  # one worker per node
    assert ranks[0]["shard_hash"] != ranks[1]["shard_hash"]  # each rank trained on its own shard ...
    assert ranks[0]["examples"] == ranks[1]["examples"] == 200  # ... half of the 400 training examples each
    assert ranks[0]["weights_sum"] == ranks[1]["weights_sum"]  # and DDP kept the replicas identical
    assert [r["teacher"] for r in ranks] == ["cache", "cache"]  # both read the shared teacher cache

    diverged = runs["forward-random-w3-s1"]
    assert diverged.data.tags["raykd.status"] == "diverged"
    assert (
        len(json.loads(diverged.data.params["ddp.ranks"])) == 2
    )  # both ranks reached the end (a hung one never reports)
    assert diverged.data.metrics["steps"] == 4  # step 4 was the first non-finite one, on rank 1 only

    # the same global batch (32) on one worker; its analysis actor runs on the cluster too (a partial report)
    single = study(cluster, tmp_path / "one", *ONE_ARM, "--set", "analysis.enabled=true", teacher=smoke_teacher)
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
    assert (tmp_path / "one" / "smoke" / "report" / "summary.json").is_file() and "== verdict: smoke" in single.stdout
    one_client, one_runs = runs_by_name(tmp_path / "one" / "smoke")
    reference = one_runs["forward-random-w3-s0"]
    assert reference.data.params["world_size"] == "1"
    ddp_loss = history(client, trial, "train.total")
    one_loss = history(one_client, reference, "train.total")
    assert [s for s, _ in ddp_loss] == [s for s, _ in one_loss] and len(one_loss) == 13
    # the same data, order-averaged gradients of the same global batch: curves agree closely (dropout masks and
    # the order of float reductions differ between one process and two)
    assert ddp_loss[0][1] == pytest.approx(one_loss[0][1], rel=0.05)
    assert sum(v for _, v in ddp_loss) == pytest.approx(sum(v for _, v in one_loss), rel=0.05)
    assert abs(trial.data.metrics["test.accuracy"] - reference.data.metrics["test.accuracy"]) <= 0.05


def test_a_lost_node_is_survived(cluster, tmp_path, smoke_teacher):
    """Two one-worker trials at a time, one per node. The second node is killed (SIGKILL of its raylet and workers)
    once a trial there has a checkpoint: that trial is retried from its last checkpoint on the head, and the study
    finishes with one MLflow run per trial and every logged step. (A driver stopped while trials run on a cluster,
    and the same entrypoint resuming it: tests/e2e/test_production.py, through the job API.)"""
    longer = [
        "--set",
        "sweep.strategies=[forward,none]",
        "--set",
        "sweep.inits=[random]",
        "--set",
        "sweep.seeds=[0,1]",
        "--set",
        "analysis.enabled=false",
        "--set",
        "distill.train.epochs=3",
        "--set",
        "distill.train.eval_every=4",
        "--set",
        "distill.train.log_every=1",
        "--set",
        "compute.max_failures=2",
    ]
    seed_teacher(smoke_teacher, tmp_path / "a", "smoke", set_items(longer))
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--config", str(SMOKE), "--output-dir", str(tmp_path / "a"), *longer],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cluster.env,
        cwd=ROOT,
    )
    checkpoints = tmp_path / "a" / "smoke" / "checkpoints"
    deadline = time.time() + 600
    while time.time() < deadline and not (checkpoints.is_dir() and len(list(checkpoints.glob("*/step-*"))) >= 2):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.5)
    assert cluster.kill_node(0) >= 2  # the second node: its raylet and its workers
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    assert "[raykd] done: 4 finished, 0 diverged, 0 failed" in out
    client, runs = runs_by_name(tmp_path / "a" / "smoke")
    trials = {n: r for n, r in runs.items() if r.data.tags.get("raykd.role") == "trial"}
    assert len(trials) == 4 and all(r.data.tags["raykd.status"] == "finished" for r in trials.values())
    resumed = [n for n, r in trials.items() if "raykd.resumed_from_step" in r.data.tags]
    assert resumed, "no trial was retried from a checkpoint after the node died"
    for run in trials.values():  # every logged step kept (a resumed trial logs again what it trained again)
        steps = {s for s, _ in history(client, run, "train.total")}
        assert steps == set(range(1, int(run.data.metrics["steps"]) + 1)), sorted(steps)
    cluster.add_node(cpus=1)  # the machine is back, for the tests after this one


def test_a_study_folder_on_remote_storage_is_refused_naming_what_needs_posix(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(SMOKE), "--output-dir", "s3://bucket/studies"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 2 and "must be a (shared) POSIX path" in result.stderr and "--storage" in result.stderr


def test_requests_fit_on_one_node_or_fail_at_once(cluster, tmp_path):
    """Every node has 1 CPU (the cluster has 2): a 2-CPU worker could never be scheduled. It fails before anything
    runs, naming what was asked and what the nodes have, instead of waiting forever."""
    started = time.time()
    result = study(cluster, tmp_path, *ONE_ARM, "--set", "compute.cpus_per_worker=2", timeout=300)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "a trial needs 1 worker(s) of 2 CPU each, each on one node; the cluster has node 0: 1 CPU" in result.stderr
    assert result.stderr.count("error:") == 1 and time.time() - started < 240
    assert not (tmp_path / "smoke" / "teacher").exists() or not any((tmp_path / "smoke" / "teacher").iterdir())
