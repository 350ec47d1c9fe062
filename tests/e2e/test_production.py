"""The production stack, run for real on this machine (servers in tests/servers.py, all on 127.0.0.1):

- the gpu overlay's RayJob entrypoint, read from the rendered manifest, submitted with `ray job submit` to a
  two-node Ray cluster (token auth, the dashboard's job API) whose nodes carry the pods' environment;
- Ray's storage and the trial checkpoints in S3 (moto's server, IAM authentication on), as ``--storage s3://...``
  with the credentials and endpoint in the environment;
- MLflow (mlflow/serve.py) on PostgreSQL (Debian's server), its artifacts in the same S3;
- the image's install step (k8s/Dockerfile's COPY and RUN lines) in a fresh virtualenv.

Kubernetes itself and a Docker engine do not run here: the pods are `ray start` nodes, the image a virtualenv.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.cluster import LocalCluster, free_port
from tests.mlflow_server import start_server, stop_server
from tests.servers import BUCKET, Postgres, S3Server, missing_production_packages
from tests.smoke_studies import ROOT, SCRIPT, SMOKE, seed_teacher

KUBECTL = shutil.which("kubectl")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.distributed,
    pytest.mark.skipif(missing_production_packages() is not None, reason=str(missing_production_packages())),
]
STUDY = {  # the smoke study, 4 trials long enough to be stopped mid-way (overrides of studies/configs/smoke.yaml)
    "sweep.strategies": ["forward", "none"],
    "sweep.inits": ["random"],
    "sweep.seeds": [0, 1],
    "distill.train.epochs": 3,
    "distill.train.eval_every": 4,
    "distill.train.log_every": 1,
}


class Stack:
    def __init__(self, folder: Path) -> None:
        try:
            self.s3 = S3Server(folder)
            self.postgres = Postgres()
            port = free_port()
            self.mlflow_uri = f"http://127.0.0.1:{port}"
            artifacts = f"s3://{BUCKET}/mlflow-artifacts"
            flags = ("--backend-store-uri", self.postgres.uri, "--artifacts-destination", artifacts)
            self.mlflow = start_server(folder, port, *flags, env=self.s3.env)
            venv = str(Path(sys.executable).parent)  # the entrypoint's `python` is the image's (here: this venv's)
            pod_env = {**self.s3.env, "MLFLOW_TRACKING_URI": self.mlflow_uri, "PATH": f"{venv}:{os.environ['PATH']}"}
            self.cluster = LocalCluster(head_cpus=1, env=pod_env)
            self.cluster.add_node(cpus=1)
            self.wait_for_job_api()
        except BaseException:  # no server or node outlives a stack that did not start
            self.stop()
            raise

    def wait_for_job_api(self, timeout: float = 120) -> None:
        """Until the head's job agent takes a submission (KubeRay also waits for the cluster before submitting)."""
        deadline, out = time.time() + timeout, ""
        while time.time() < deadline:
            probe = [self.cluster.ray, "job", "submit", "--address", self.cluster.dashboard, "--", "python", "-V"]
            result = subprocess.run(probe, capture_output=True, text=True, env=self.cluster.env, timeout=120)
            out = result.stdout + result.stderr
            if result.returncode == 0:
                return
            time.sleep(2)
        raise AssertionError(f"the job API did not take a submission in {timeout:g} s:\n{out[-3000:]}")

    def stop(self) -> None:
        """Stop what started (all of it, or what a failed start left), the cluster first."""
        for part in ("cluster", "mlflow", "postgres", "s3"):
            if not hasattr(self, part):
                continue
            try:
                stop_server(self.mlflow) if part == "mlflow" else getattr(self, part).stop()
            except Exception as error:  # noqa: BLE001 - stop the rest, then report
                print(f"stopping: {error}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("production"))
    try:
        yield stack
    finally:
        stack.stop()


def rendered_entrypoint(folders: dict[str, Path]) -> list[str]:
    """The gpu overlay's RayJob entrypoint with the pod's mounts (/app, /etc/raykd, /mnt/raykd) mapped to folders."""
    if KUBECTL is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed: the entrypoint is read from the manifest")
    rendered = subprocess.run(
        [KUBECTL, "kustomize", str(ROOT / "k8s" / "overlays" / "gpu")], capture_output=True, text=True, check=True
    ).stdout
    job = next(d for d in yaml.safe_load_all(rendered) if d["kind"] == "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    for mount, folder in folders.items():
        argv = [str(folder) + a.removeprefix(mount) if a.startswith(mount + "/") else a for a in argv]
    return argv


def smoke_config(path: Path, overrides: dict) -> None:
    """studies/configs/smoke.yaml with `overrides` (dotted keys), written where the ConfigMap would be mounted."""
    config = yaml.safe_load(SMOKE.read_text())
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))


class Submission:
    """`ray job submit` of `entrypoint` (the submitter pod's command), its streamed output collected by a thread."""

    def __init__(self, cluster: LocalCluster, entrypoint: list[str], submission_id: str) -> None:
        self.cluster, self.id = cluster, submission_id
        command = [cluster.ray, "job", "submit", "--address", cluster.dashboard, "--submission-id", submission_id]
        self.proc = subprocess.Popen(
            [*command, "--", *entrypoint], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cluster.env
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, predicate, what: str, timeout: float = 600) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return
            assert self.proc.poll() is None, f"the job ended before {what}:\n{self.text[-4000:]}"
            time.sleep(0.5)
        raise AssertionError(f"no {what} after {timeout:g} s:\n{self.text[-4000:]}")

    def finish(self, timeout: float = 900) -> int:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=30)
        return code

    def job(self, *args: str) -> str:
        result = subprocess.run(
            [self.cluster.ray, "job", *args, "--address", self.cluster.dashboard, self.id],
            capture_output=True,
            text=True,
            env=self.cluster.env,
            timeout=120,
        )
        return result.stdout + result.stderr


def test_the_rayjob_entrypoint_survives_restarts_stops_and_resumes_on_s3_and_postgres(stack, tmp_path, smoke_teacher):
    """Submitted as the RayJob submits it. While trials run (a checkpoint already in S3): the S3 server restarts
    (down 30 s), then PostgreSQL restarts, then the second node is lost while a trial there has a checkpoint it wrote
    (the trial resumes from it on another node); then `ray job stop`. Re-submitting the same entrypoint resumes the study:
    finished trials kept, the interrupted ones continued from their S3 checkpoints, one MLflow run per trial in
    PostgreSQL, the report's artifacts in S3 and the verdict in the job's log."""
    folders = {"/app": ROOT, "/etc/raykd": tmp_path / "etc", "/mnt/raykd": tmp_path / "mnt"}
    entrypoint = rendered_entrypoint(folders)
    config = Path(entrypoint[entrypoint.index("--config") + 1])
    output = Path(entrypoint[entrypoint.index("--output-dir") + 1])
    storage = entrypoint[entrypoint.index("--storage") + 1]
    prefix = storage.removeprefix(f"s3://{BUCKET}/") + "/smoke"
    smoke_config(config, STUDY)
    seed_teacher(smoke_teacher, output, "smoke", [f"{k}={json.dumps(v)}" for k, v in STUDY.items()])
    s3 = stack.s3

    first = Submission(stack.cluster, entrypoint, "raykd-study-1")
    first.wait_for(lambda: any(k.endswith("/COMPLETE") for k in s3.keys(f"{prefix}/checkpoints/")), "S3 checkpoint")
    s3.restart(down_s=30)  # longer than the S3 client's own retries (~6 s)
    stack.postgres.restart()
    # the second node is lost (SIGKILL of its raylet and workers) while a trial there has a checkpoint it wrote there
    # in S3: the trial continues from that checkpoint on another node (its run's tags say where each attempt ran and
    # where the checkpoint it resumed from was written)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(stack.mlflow_uri)  # PostgreSQL behind it
    second = stack.cluster.node_ids()[-1]

    def trial_tags() -> dict[str, dict]:
        experiment = client.get_experiment_by_name("smoke")
        runs = client.search_runs([experiment.experiment_id], "tags.`raykd.role` = 'trial'") if experiment else []
        return {r.info.run_name: r.data.tags for r in runs}

    def written_there(trial: str) -> bool:
        """The trial's newest committed checkpoint was written on the second node."""
        steps = sorted(
            (int(k.split("/")[-2].removeprefix("step-")), k.rsplit("/", 1)[0])
            for k in s3.keys(f"{prefix}/checkpoints/{trial}/")
            if k.endswith("/COMPLETE")
        )
        if not steps:
            return False
        state = s3.client().get_object(Bucket=BUCKET, Key=f"{steps[-1][1]}/state.json")["Body"].read()
        return json.loads(state).get("node") == second

    def running_there() -> str | None:
        return next(
            (
                n
                for n, t in trial_tags().items()
                if t.get("raykd.node") == second and "raykd.status" not in t and written_there(n)
            ),
            None,
        )

    first.wait_for(lambda: running_there() is not None, "a trial on the second node with a checkpoint written there")
    victim = running_there()
    assert stack.cluster.kill_node(len(stack.cluster.nodes) - 1) >= 2
    stack.cluster.add_node(cpus=1)  # the machine comes back (a new node)
    first.wait_for(
        lambda: trial_tags()[victim].get("raykd.checkpoint_node") == second != trial_tags()[victim]["raykd.node"],
        f"{victim} resumed on another node from the lost node's checkpoint",
    )
    first.wait_for(lambda: "[1/4 done" in first.text or "[2/4 done" in first.text, "finished trial")
    stopped = first.job("stop")
    first.finish(timeout=120)  # the submitter follows the job to its end
    log = first.text
    (tmp_path / "first.log").write_text(log)
    assert "was stopped" in first.job("status"), stopped
    # the outage was seen, and ridden out: by the trials' checkpoint writes (raykd's bounded retries, in the workers'
    # logs) and by Ray's own storage syncer (a warning in the study's log)
    workers = "".join(p.read_text() for p in Path(stack.cluster.temp_dir).glob("session_latest/logs/worker-*.err"))
    assert "UserWarning: checkpoint storage: " in workers and "Could not connect to server" in workers
    assert "Last sync command failed" in (output / "smoke" / "logs" / "ray_tune_mlflow.log").read_text()
    assert "[raykd] study smoke" in log and "== verdict" not in log  # the driver's output streamed to the submitter

    second = Submission(stack.cluster, entrypoint, "raykd-study-2")
    assert second.finish() == 0, second.text[-5000:]
    log = second.text
    (tmp_path / "second.log").write_text(log)
    assert "[raykd] resuming: " in log, log[-4000:]
    assert "[raykd] done: 4 finished, 0 diverged, 0 failed" in log, log[-4000:]
    assert "== verdict: smoke" in log  # the verdict block, in the job's log

    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    trials = [r for r in runs if r.data.tags.get("raykd.role") == "trial"]
    assert sorted(r.info.run_name for r in trials) == sorted(
        f"{s}-random-w{3 if s != 'none' else 0}-s{seed}" for s in ("forward", "none") for seed in (0, 1)
    )
    assert all(r.data.tags["raykd.status"] == "finished" for r in trials)
    assert any("raykd.resumed_from_step" in r.data.tags for r in trials), "no trial continued from its checkpoint"
    discarded = {
        r.info.run_name: r.data.tags["raykd.checkpoint_discarded"]
        for r in trials
        if "raykd.checkpoint_discarded" in r.data.tags
    }
    assert not discarded, discarded  # every checkpoint committed in S3 was whole, the outage's too
    for run in trials:  # nothing lost across the PostgreSQL restart: every step's loss is in the database
        steps = {m.step for m in client.get_metric_history(run.info.run_id, "train.total")}
        assert steps == set(range(1, int(run.data.metrics["steps"]) + 1)), (run.info.run_name, sorted(steps))
    keys = s3.keys(f"{prefix}/checkpoints/")
    assert {k.split("/")[3] for k in keys if k.endswith("/COMPLETE")} == {r.info.run_name for r in trials}
    assert s3.keys(f"{prefix}/ray/")  # Tune's and Train's storage
    assert not (output / "smoke" / "checkpoints").exists()  # nothing of it on the shared volume
    parent = next(r for r in runs if r.data.tags.get("raykd.role") == "study")
    artifacts = s3.keys("mlflow-artifacts/")
    assert any(parent.info.run_id in k and k.endswith("report/summary.json") for k in artifacts), artifacts[:20]
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "report") if a.path.endswith(".json")]


def test_storage_that_cannot_be_written_is_refused_before_anything_starts(stack, tmp_path):
    """Wrong credentials and a missing bucket: one clear error (exit 2) naming the storage and what to check, before
    the teacher stage or Ray starts."""
    for storage, env in (
        (f"s3://{BUCKET}/studies", {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}),
        ("s3://no-such-bucket/studies", {}),
    ):
        started = time.time()
        result = subprocess.run(
            [sys.executable, str(SCRIPT), "--config", str(SMOKE), "--output-dir", str(tmp_path), "--storage", storage],
            capture_output=True,
            text=True,
            env={**os.environ, **stack.s3.env, **env, "MLFLOW_TRACKING_URI": stack.mlflow_uri},
            timeout=300,
            cwd=ROOT,
        )
        assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
        assert f"--storage {storage!r} cannot be written" in result.stderr
        assert "AWS_ACCESS_KEY_ID" in result.stderr and "bucket exists" in result.stderr
        assert not (tmp_path / "smoke" / "teacher").exists() and time.time() - started < 120


def test_several_studies_at_once_on_one_postgres_server(stack, tmp_path, smoke_teacher):
    """Two studies submitted at once, both tracking to the PostgreSQL-backed server: both finish, each with its own
    experiment and one run per trial."""
    one_arm = {**STUDY, "sweep.strategies": ["forward"], "sweep.seeds": [0], "distill.train.epochs": 1}
    jobs = []
    for name in ("smoke-a", "smoke-b"):
        config, output = tmp_path / name / "study.yaml", tmp_path / name / "studies"
        smoke_config(config, {**one_arm, "name": name, "analysis.enabled": False})
        seed_teacher(smoke_teacher, output, name, [f"{k}={json.dumps(v)}" for k, v in one_arm.items()])
        command = ["python", str(SCRIPT), "--config", str(config), "--output-dir", str(output)]
        jobs.append(Submission(stack.cluster, command, f"raykd-{name}"))
    for job in jobs:
        assert job.finish() == 0, job.text[-4000:]
        assert "[raykd] done: 1 finished, 0 diverged, 0 failed" in job.text

    from mlflow.tracking import MlflowClient

    client = MlflowClient(stack.mlflow_uri)
    for name in ("smoke-a", "smoke-b"):
        experiment = client.get_experiment_by_name(name)
        roles = [r.data.tags.get("raykd.role") for r in client.search_runs([experiment.experiment_id])]
        assert roles.count("study") == 1 and roles.count("trial") == 1, roles


def test_the_images_install_step_installs_raykd_from_the_repos_own_files(tmp_path):
    """k8s/Dockerfile's COPY lines into a folder standing for /app, its RUN line in a fresh virtualenv (the image's
    Python, seeing the test environment's packages): raykd installs from those files alone with every pin met, the
    RUN line's own Ray check passes, and every /app path the manifests run is in the image."""
    dockerfile = (ROOT / "k8s" / "Dockerfile").read_text().replace("\\\n", " ")
    app = tmp_path / "app"
    args = {}
    for line in dockerfile.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ARG":
            key, _, default = rest.partition("=")
            args[key] = "".join(shlex.split(default))  # ARG X="" is the empty string
        elif word == "COPY":
            *sources, target = [p for p in shlex.split(rest) if not p.startswith("--")]
            for source in sources:  # into the folder `target/`, or as `target`
                destination = app / target / Path(source).name if target.endswith("/") else app / target
                destination.parent.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if (ROOT / source).is_dir() else shutil.copy)(ROOT / source, destination)
        elif word == "RUN":
            run = rest
    # download.pytorch.org is not reachable here: pip's own index serves the same pinned CPU torch
    args["TORCH_INDEX"] = "https://pypi.org/simple"
    for key, value in args.items():
        run = run.replace("${" + key + "}", value)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # the new venv sees this one's packages (installed by CI from the same constraints.txt), so pip checks every pin
    # against them and installs raykd itself from /app, in seconds instead of minutes of unpacking wheels
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'], end='')"
    inner = subprocess.check_output([str(venv / "bin" / "python"), "-c", purelib], text=True)
    (Path(inner) / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    result = subprocess.run(["bash", "-c", run], cwd=app, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    python = str(venv / "bin" / "python")
    shown = subprocess.run(
        [python, "-c", "import psycopg, boto3, mlflow, raykd, sys; print(raykd.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert shown.returncode == 0 and shown.stdout.startswith(str(venv)), shown.stderr[-2000:]  # installed, not linked
    for script in ("studies/strategy_grid.py", "mlflow/serve.py"):  # what the RayJob and MLflow's Deployment run
        assert (app / script).is_file()
    helped = subprocess.run(
        [python, "studies/strategy_grid.py", "--help"], cwd=app, capture_output=True, text=True, timeout=120
    )
    assert helped.returncode == 0 and "--storage" in helped.stdout


def test_an_upload_cut_off_by_a_storage_restart_is_redone_before_the_commit(stack, monkeypatch):
    """S3 goes away while a checkpoint's second file is uploading (open connections dropped): the upload is redone
    once it is back, and the committed checkpoint holds every file whole (pyarrow's copy_files dropped such errors: a
    checkpoint was committed without its weights, and the trial resumed from it started over)."""
    from pyarrow import fs

    from raykd.train.checkpoint import CheckpointStore

    for key, value in stack.s3.env.items():
        monkeypatch.setenv(key, value)
    outage = threading.Thread(target=lambda: (time.sleep(0.05), stack.s3.restart(8)))

    class CutOnTheSecondFile:
        """The store's real S3 file system; the server goes away as the second file starts uploading."""

        def __init__(self, real) -> None:
            self.real, self.opened = real, 0

        def __getattr__(self, name):
            return getattr(self.real, name)

        def open_output_stream(self, path, *args, **kwargs):
            self.opened += 1
            if self.opened == 2:
                outage.start()
            return self.real.open_output_stream(path, *args, **kwargs)

    real, _ = fs.FileSystem.from_uri(f"s3://{BUCKET}/cut")
    store = CheckpointStore(f"{BUCKET}/cut", "t", filesystem=CutOnTheSecondFile(real))
    sizes = {f"part{i}.bin": 20_000_000 + i for i in range(3)}

    def write(folder: Path) -> None:
        for name, size in sizes.items():
            (folder / name).write_bytes(os.urandom(size))

    with pytest.warns(UserWarning, match="checkpoint storage: upload failed"):
        store.save(4, write)
    outage.join()
    listed = stack.s3.client().list_objects_v2(Bucket=BUCKET, Prefix="cut/t/step-4/")["Contents"]
    assert {o["Key"].rsplit("/", 1)[1]: o["Size"] for o in listed if not o["Key"].endswith("/")} == {
        **sizes,
        "COMPLETE": 0,
    }


def test_storage_down_longer_than_the_retry_bound_fails_the_write_naming_it(stack, monkeypatch):
    """The bound: with RAYKD_STORAGE_RETRY_S=4 and the server down for 12 s, a checkpoint write gives up after ~4 s
    with one error naming the storage, the operation and the bound (the trial then fails and is retried)."""
    from raykd.train.checkpoint import CheckpointStore

    for key, value in stack.s3.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RAYKD_STORAGE_RETRY_S", "4")
    store = CheckpointStore(f"s3://{BUCKET}/bound", "t")
    down = threading.Thread(target=stack.s3.restart, args=(12,))
    down.start()
    time.sleep(0.5)
    started = time.time()
    with pytest.raises(OSError, match=r"checkpoint storage 'raykd/bound/t': .* failed for 4 s"):
        store.save(1, lambda folder: (folder / "x").write_text("x"))
    assert time.time() - started < 12
    down.join()
    assert store.save(2, lambda folder: (folder / "x").write_text("x")).endswith("step-2")  # back: it works again
