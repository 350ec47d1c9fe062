"""The real entry script on the smoke config, through real Ray (started by the script) and MLflow."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.cluster import free_port
from tests.smoke_studies import ANALYZE, ROOT, SCRIPT, SMOKE, seed_teacher, set_items

SMALL = [
    "--set",
    "sweep.strategies=[forward,none]",
    "--set",
    "sweep.seeds=[0]",
    "--set",
    "distill.train.eval_every=4",
    "--set",
    "analysis.enabled=false",
]  # studies that do not look at the report skip the analysis stage
ONE_AT_A_TIME = ["--set", "compute.max_concurrent_trials=1"]  # tiny trials: one actor's start-up, not two at once
FULL = ["--set", "distill.train.eval_every=4", "--set", "distill.train.log_every=2"]  # the whole smoke grid: 3 x 2 x 2

pytestmark = pytest.mark.slow


def run(*args, env=None, timeout=600, teacher: Path | None = None):
    """The entry script on the smoke config; `teacher`: start from the session's smoke teacher (tests/smoke_studies.py)."""
    if teacher is not None:
        out = Path(args[args.index("--output-dir") + 1])
        seed_teacher(teacher, out, args[args.index("--name") + 1] if "--name" in args else "smoke", set_items(args))
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(SMOKE), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=ROOT,
    )


def analyze(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, str(ANALYZE), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=ROOT,
    )


def wait_for_orphans(seconds: float = 8.0):
    """After SIGKILLing a driver's process group (driver, GCS, raylet), its Ray workers notice their raylet
    is gone and exit; give them a moment. No `ray stop`: it would stop every Ray on the machine."""
    time.sleep(seconds)


def runs_by_name(study_dir: Path, name="smoke"):
    client = MlflowClient(f"sqlite:///{study_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=200)
    names = [r.info.run_name for r in runs]
    assert len(names) == len(set(names)), f"duplicate MLflow runs: {sorted(names)}"
    return client, {r.info.run_name: r for r in runs}


def trial_metrics(study_dir: Path, name="smoke") -> dict:
    """Per trial run: its test metrics and its logged training-loss curve (read from the sqlite file)."""
    client, runs = runs_by_name(study_dir, name)
    return {
        n: {
            "test": {k: v for k, v in r.data.metrics.items() if k.startswith("test.")},
            "curve": [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, "train.total")],
            "end": r.info.end_time,
        }
        for n, r in runs.items()
        if r.data.tags.get("raykd.role") == "trial"
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The smoke study grown the way a researcher grows one: seed 0 first, then the config's seeds [0, 1]."""
    out = tmp_path_factory.mktemp("smoke")
    first = run(
        "--output-dir", str(out), *FULL, *ONE_AT_A_TIME, "--set", "sweep.seeds=[0]", "--set", "analysis.enabled=false"
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    before = trial_metrics(out / "smoke")
    started = time.time()
    result = run("--output-dir", str(out), *FULL)
    return {
        "out": out,
        "dir": out / "smoke",
        "result": result,
        "seconds": time.time() - started,
        "first": first,
        "before": before,
    }


def test_growing_the_study_runs_only_the_new_trials(study):
    first, grown = study["first"].stdout, study["result"].stdout
    assert "[raykd] done: 6 finished, 0 diverged, 0 failed" in first
    assert study["result"].returncode == 0, study["result"].stderr[-3000:]
    assert "[raykd] resuming: 6 of 12 trials already ended; running 6" in grown
    assert "[raykd] done: 12 finished, 0 diverged, 0 failed" in grown
    assert "teacher cache:" in grown and "reused" in grown.split("teacher cache:")[1].splitlines()[0]
    after = trial_metrics(study["dir"])
    assert sorted(study["before"]) == sorted(n for n in after if n.endswith("-s0"))
    for name, seen in study["before"].items():  # the first run's trials were kept, not re-run
        assert after[name] == seen, name
    _, runs = runs_by_name(study["dir"])
    assert sum(r.data.tags.get("raykd.role") == "teacher" for r in runs.values()) == 1
    # every trial wrote its step for the live line between evaluations (the folder exists only once one did),
    # and the sweep removed each file when its trial ended
    trial_progress = study["dir"] / "progress" / "trials"
    assert trial_progress.is_dir() and not [p for p in trial_progress.iterdir() if not p.name.startswith(".")]


def test_two_fresh_studies_give_identical_teachers_and_trials(study, tmp_path, smoke_teacher):
    """Every random draw comes from the teacher seed and each trial's seed: a second fresh study (other
    processes, other packing of trials into reused actors: two at once here, one at a time there) reproduces the
    first one exactly; so does the teacher stage run in this very process (the session's smoke teacher)."""
    again = run("--output-dir", str(tmp_path), *FULL, "--set", "sweep.seeds=[0]", "--set", "analysis.enabled=false")
    assert again.returncode == 0, again.stderr[-3000:]
    teacher_line = next(line for line in again.stdout.splitlines() if line.startswith("[raykd] teacher: test"))
    assert teacher_line.split(" (")[0] in study["first"].stdout
    teachers = [
        tmp_path / "smoke" / "teacher" / smoke_teacher.name,
        study["dir"] / "teacher" / smoke_teacher.name,
        smoke_teacher,
    ]
    assert len({(t / "metrics.json").read_text() for t in teachers}) == 1
    repeated = trial_metrics(tmp_path / "smoke")
    for name, seen in study["before"].items():
        assert repeated[name]["test"] == seen["test"], name
        assert repeated[name]["curve"] == seen["curve"] and len(seen["curve"]) >= 5, name


def test_smoke_study_end_to_end(study):
    result = study["result"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[raykd] done: 12 finished, 0 diverged, 0 failed" in result.stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{study['dir'] / 'mlflow.db'}" in result.stdout
    assert "/runs?viewStateShareKey=raykd-compare&compareRunsMode=CHART&workflowType=machine_learning" in result.stdout
    from raykd.strategies import layer_map

    table = json.loads((study["dir"] / "results" / "trials.json").read_text())
    assert table["metric"] == "accuracy"
    assert sorted(r["trial_id"] for r in table["trials"]) == sorted(
        f"{s}-{i}-w{0 if s == 'none' else 3}-s{seed}"
        for s in ("forward", "all_to_one", "none")
        for i in ("random", "teacher")
        for seed in (0, 1)
    )
    assert all(r["status"] == "finished" and 0 <= r["metric"] <= 1 for r in table["trials"])

    client, runs = runs_by_name(study["dir"])
    parent = runs["smoke"]
    assert parent.info.status == "FINISHED" and parent.data.tags["raykd.role"] == "study"
    assert parent.data.params["sweep.strategies"] == '["forward", "all_to_one", "none"]'
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "results")} >= {
        "results/trials.csv",
        "results/trials.md",
    }
    teacher = runs["teacher"]
    assert teacher.info.status == "FINISHED" and "teacher.test.accuracy" in teacher.data.metrics
    assert teacher.data.tags["raykd.parent_run"] == parent.info.run_id
    # one run per arm, its trials' test accuracy as the report writes it (points, 2 decimals); written again as the
    # study grew from one seed to two
    summary = json.loads((study["dir"] / "report" / "summary.json").read_text())
    assert len(summary["cells"]) == sum(r.data.tags.get("raykd.role") == "arm" for r in runs.values()) == 6
    for cell in summary["cells"]:
        arm = runs[f"arm-{cell['strategy']}-{cell['init']}-w{cell['weight']:g}"]
        assert arm.data.params["trial.strategy"] == cell["strategy"] and arm.data.params["trial.init"] == cell["init"]
        assert arm.data.metrics == {
            "points.mean": float(f"{100 * cell['mean']:.2f}"),
            "points.sd": float(f"{100 * cell['std']:.2f}"),
            "points.ci95_low": float(f"{100 * cell['ci95'][0]:.2f}"),
            "points.ci95_high": float(f"{100 * cell['ci95'][1]:.2f}"),
            "trials": 2,
        }
    for row in table["trials"]:
        trial = runs[row["trial_id"]]
        assert trial.info.status == "FINISHED" and trial.data.tags["raykd.status"] == "finished"
        assert trial.data.tags["raykd.parent_run"] == parent.info.run_id  # a flat runs table: not nested
        assert trial.data.tags["raykd.strategy"] == row["strategy"] and trial.data.tags["raykd.init"] == row["init"]
        params = trial.data.params
        assert params["trial.seed"] == str(row["seed"]) and params["version.ray"] and params["git.commit"]
        assert params["task.type"] == "classification"  # every config field, flattened
        expected = layer_map(row["strategy"], 2, 4, seed=row["seed"], match_embeddings=True)
        assert params["trial.layer_map"] == json.dumps({"encoder": [list(p) for p in expected]})
        assert params["trial.copied_layers"] == ('{"encoder": [2, 4]}' if row["init"] == "teacher" else "{}")
        assert params["trial.copied_head"] == ("false" if row["init"] == "teacher" else "null")  # a fresh classifier
        metrics = trial.data.metrics
        assert metrics["test.accuracy"] == pytest.approx(row["metric"])
        assert {
            "validation.accuracy",
            "train.total",
            "train.ce",
            "train.kd",
            "train.lr",
            "train.examples_per_s",
        } <= set(metrics)
        assert ("train.hidden.encoder" in metrics) == (row["strategy"] != "none")
        assert len(client.get_metric_history(trial.info.run_id, "validation.accuracy")) >= 3  # steps 4, 8, 12, end
        steps = int(metrics["steps"])  # the learning curve: at most 8 points a trial
        every = -(-steps // 8)
        curve = client.get_metric_history(trial.info.run_id, "val_curve.accuracy")
        assert [m.step for m in curve] == list(range(every, steps + 1, every))
        assert [a.path for a in client.list_artifacts(trial.info.run_id)] == ["layer_map.json"]


def test_smoke_study_report(study):
    """The analysis stage: every section with numbers, figures that open, summary.json, logged to MLflow."""

    import matplotlib.image

    assert study["result"].returncode == 0, study["result"].stderr[-3000:]
    stdout = study["result"].stdout
    assert "== verdict: smoke (test accuracy; 12 of 12 trials; alpha 0.05, margin +-1 points) ==" in stdout
    # two seeds decide no claim (docs/claims.md), and each line says so
    assert "'the layer-selection strategy does not matter' (random init, margin +-1 points): UNDECIDED" in stdout
    assert "not decided: 2 paired seed(s) where the rules need at least 4" in stdout
    assert "[raykd] report: " in stdout
    report = study["dir"] / "report"
    summary = json.loads((report / "summary.json").read_text())
    assert summary["study"] == "smoke" and summary["metric"] == "accuracy" and summary["higher_is_better"] is True
    assert 0 < summary["teacher"]["metric"] <= 1
    assert len(summary["trials"]) == 12 and len(summary["cells"]) == 6
    assert all(c["n"] == 2 and c["ci95"] is not None for c in summary["cells"])
    test = summary["strategy_test"]
    assert test["formula"] == "metric ~ C(strategy) * C(init) + C(init):C(seed)" and test["df_resid"] == 2
    for term in ("strategy", "init", "interaction"):
        assert 0 <= test[term]["p"] <= 1 and 0 <= test[term]["partial_eta2"] <= 1
    assert set(test["nonparametric"]) == {"random", "teacher"}
    eq = summary["equivalence"]["by_init"]
    assert set(eq) == {"random", "teacher"} and set(eq["random"]) == {"all_to_one"}
    assert eq["random"]["all_to_one"]["ci90"] is not None and eq["random"]["all_to_one"]["equivalent"] in (True, False)
    for init in ("random", "teacher"):
        v = summary["matching_vs_none"][init]
        assert v["n"] == 2 and v["ci95"] is not None and 0 <= v["p"] <= 1
    angles = summary["angles"]
    assert set(angles) == {"random", "teacher"}
    for init in angles:
        layers = angles[init]["encoder"]
        assert set(layers) == {"0", "1", "2"}
        for k in ("1", "2"):
            for when in ("at_init", "trained"):
                entry = layers[k][when]
                assert 0 <= entry["acute_share"] <= 1 and len(entry["matrix"]) == 5  # teacher states 0..4
                assert entry["n"] == 6  # forward, all_to_one, none at seeds 0 and 1 (the first 3 seeds: 2 here)
    for init in ("random", "teacher"):  # 2 seeds: the contrast with the null is reported, not tested (needs 3)
        trained = summary["angle_test"][init]["encoder"]["trained"]
        assert trained["seeds"] == [0, 1] and not trained["tested"] and trained["p"] is None
    verdict = summary["verdict"]
    assert set(verdict) >= {"strategy_significant", "strategies_equivalent", "matching_beats_none", "text", "by_init"}
    assert all(
        verdict[k] in (True, False, None)
        for k in ("strategy_significant", "strategies_equivalent", "matching_beats_none")
    )
    for init in ("random", "teacher"):  # per init, each question is shown, refuted or undecided
        for answer in verdict["by_init"][init].values():
            assert answer["claim_status"] in ("shown", "refuted", "undecided")
    assert summary["plan"]["by_init"]["random"]["n_seeds"] == 2
    assert {(c["name"], c["init"]) for c in summary["claims"]} == {
        (name, init)
        for name in ("strategy_does_not_matter", "matching_beats_none", "matching_beats_none_by_margin")
        for init in ("random", "teacher")
    }
    assert all(c["verdict"] == "undecided" and c["look"]["planned"] for c in summary["claims"])
    assert summary["sequential"]["planned"] and summary["sequential"]["looks"][-1]["seeds"] == 2
    assert json.loads((study["dir"] / "looks.json").read_text())["looks"] == summary["sequential"]["looks"]
    # the study's own results table, re-analysed with no Ray and no MLflow, reproduces its claims
    table = study["dir"] / "results" / "trials.csv"
    again = subprocess.run([sys.executable, str(ANALYZE), "--trials", str(table)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    redone = json.loads((study["dir"] / "results" / "trials_report" / "summary.json").read_text())
    for before, after in zip(summary["claims"], redone["claims"], strict=True):
        assert {k: before[k] for k in ("name", "init", "verdict", "decided_by", "comparisons", "look")} == {
            k: after[k] for k in ("name", "init", "verdict", "decided_by", "comparisons", "look")
        }
    assert redone["room"] == summary["room"]
    text = (report / "report.md").read_text()
    for heading in (
        "## Verdict",
        "## Setup",
        "## Strategy x init",
        "## Is the strategy a significant factor?",
        "## Each strategy against forward",
        "## Matching vs no matching",
        "## Claims",
        "## Angles: teacher layers seen from the student",
    ):
        assert heading in text
    assert "n/a" not in text.split("## Angles")[0]  # every number before the angle section is there
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert pngs == [
        "angles_random_encoder.png",
        "angles_teacher_encoder.png",
        "forest.png",
        "hist_random_encoder.png",
        "hist_teacher_encoder.png",
        "learning_curves.png",
        "matching_vs_none.png",
        "metric_by_cell.png",
    ]
    html = (report / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(pngs) and "## Verdict" not in html and "<h2>Verdict</h2>" in html
    for name in pngs:
        assert matplotlib.image.imread(report / name).shape[0] > 200
    client, runs = runs_by_name(study["dir"])
    parent = runs["smoke"]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/summary.json", "report/report.md", "report/metric_by_cell.png"} <= logged
    assert parent.data.tags["raykd.verdict"] == verdict["text"]
    assert "analysis.strategy_p" in parent.data.metrics


def test_analyze_standalone_with_other_settings_and_bad_input(study, tmp_path):
    result = analyze(
        "--study",
        str(study["dir"]),
        "--set",
        "analysis.reference=all_to_one",
        "--set",
        "analysis.angles.enabled=false",
        "--no-mlflow-log",
    )
    assert result.returncode == 0, result.stderr[-3000:]

    summary = json.loads((study["dir"] / "report" / "summary.json").read_text())
    assert summary["equivalence"]["reference"] == "all_to_one" and summary["angles"] is None
    assert "angles: disabled" in " ".join(summary["notes"])
    missing = analyze("--study", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    not_a_study = analyze("--study", str(tmp_path))
    assert not_a_study.returncode == 2 and "is not a raykd study folder" in not_a_study.stderr
    wrong = analyze("--study", str(study["dir"]), "--set", "sweep.seeds=[0]")
    assert wrong.returncode == 2 and "analysis settings only" in wrong.stderr
    plan = analyze("--study", str(study["dir"]), "--plan")  # from the saved summary: instant, writes nothing
    assert plan.returncode == 0 and plan.stdout.startswith(
        "== plan: smoke (alpha 0.05, margin +-1 points, 80% power) =="
    )
    assert "seeds" in plan.stdout and "with 2 seeds and the observed sd" in plan.stdout


def test_a_teacher_that_barely_beats_its_trivial_baseline_stops_the_study(tmp_path, smoke_teacher):
    """Nothing to distil: the study stops after the teacher stage with one message (exit 2), before any trial;
    the teacher stage's work is kept, so allowing it later goes straight on."""
    result = run("--output-dir", str(tmp_path), *SMALL, "--set", "teacher.min_gain_points=50", teacher=smoke_teacher)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "the trivial baseline (majority class" in result.stderr and "teacher.allow_weak: true" in result.stderr
    assert result.stderr.count("error:") == 1 and "[raykd] sweep:" not in result.stdout
    assert not (tmp_path / "smoke" / "checkpoints").exists()
    assert list((tmp_path / "smoke" / "teacher").glob("*/metrics.json"))  # the teacher stage is kept


def test_changed_config_is_refused(study):
    result = run("--output-dir", str(study["out"]), *FULL, "--set", "distill.train.lr=0.5")
    assert result.returncode == 2
    assert "was started with another config (changed: distill.train.lr)" in result.stderr
    assert "--fresh" in result.stderr


@pytest.mark.parametrize(
    "args, env, message",
    [  # the real CLI in a fresh process; the full table of bad configs is tests/reliability/test_bad_input.py
        (["--set", "sweep.strategies=[forward,fwd]"], None, "unknown layer strategy 'fwd'"),
        ([], "tracking", "is unreachable"),
    ],
)
def test_bad_input_exits_2_before_ray_starts(tmp_path, args, env, message):
    extra_env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"} if env == "tracking" else None
    started = time.time()
    result = run("--output-dir", str(tmp_path), *args, env=extra_env, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert result.stderr.count("error:") == 1  # one clear message
    assert not (tmp_path / "smoke" / "ray").exists()  # nothing started
    assert time.time() - started < 60


def test_dry_run_prints_grid_and_maps(tmp_path):
    result = run("--output-dir", str(tmp_path), "--dry-run", timeout=120)
    assert result.returncode == 0, result.stderr
    assert (
        "12 trials" in result.stdout
        and "all_to_one (every seed): {'encoder': [(0, 2), (1, 2), (2, 2)]}" in result.stdout
    )
    assert "teacher init copies blocks {'encoder': [2, 4]} (copy_rule matched); task head by head type" in result.stdout
    seeds = run(
        "--output-dir",
        str(tmp_path),
        "--dry-run",
        "--set",
        "sweep.strategies=[random]",
        "--set",
        "student.depth=3",
        "--set",
        "sweep.seeds=[0,1,2,3,4]",
        timeout=120,
    )
    assert "random (per seed):" in seeds.stdout and "seed 4: {'encoder'" in seeds.stdout  # every seed's map
    assert (
        "random: 5 seeds share the 4 permutations other than forward and reverse, each used 1-2 times" in seeds.stdout
    )
    assert "12 trials x 13 steps = 156 student steps" in result.stdout
    assert not (tmp_path / "smoke").exists()


def test_divergence_is_recorded_and_excluded_then_fresh_starts_over(tmp_path, smoke_teacher):
    """(Worker deaths, retries, checkpoints and resumes: tests/reliability/test_faults.py.)"""
    diverged = run(
        "--output-dir",
        str(tmp_path / "d"),
        "--set",
        "sweep.strategies=[forward]",
        "--set",
        "sweep.seeds=[0]",
        "--set",
        "sweep.inits=[random]",
        "--set",
        "distill.train.lr=1.0e+12",
        "--set",
        "distill.train.grad_clip=null",
        "--set",
        "distill.loss.kd=0",
        teacher=smoke_teacher,
    )
    assert "1 diverged" in diverged.stdout, diverged.stdout[-2000:] + diverged.stderr[-2000:]
    assert diverged.returncode == 1  # no trial finished
    _client, runs = runs_by_name(tmp_path / "d" / "smoke")
    assert runs["forward-random-w3-s0"].data.tags["raykd.status"] == "diverged"

    rows = json.loads((tmp_path / "d" / "smoke" / "results" / "trials.json").read_text())["trials"]
    assert rows[0]["status"] == "diverged" and rows[0]["metric"] is None
    nothing = analyze("--study", str(tmp_path / "d" / "smoke"))  # no finished trial: a clear refusal
    assert nothing.returncode == 2 and "none finished (diverged)" in nothing.stderr, nothing.stderr

    # the same study folder with a changed config: refused (exit 2), then --fresh starts a new study
    uid = (tmp_path / "d" / "smoke" / "study.json").read_text()
    changed = [
        "--set",
        "sweep.strategies=[none]",
        "--set",
        "sweep.inits=[random]",
        "--set",
        "sweep.seeds=[0]",
        "--set",
        "analysis.enabled=false",
        "--set",
        "distill.train.lr=0.002",
    ]
    refused = run("--output-dir", str(tmp_path / "d"), *changed)
    assert refused.returncode == 2 and "was started with another config" in refused.stderr
    fresh = run("--output-dir", str(tmp_path / "d"), *changed, "--fresh")  # (fine-tunes its teacher again: --fresh)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert (tmp_path / "d" / "smoke" / "study.json").read_text() != uid  # a new study
    # (read from files: this process's MLflow client caches its sqlite engine, which still sees the deleted db)
    assert "lr: 0.002" in (tmp_path / "d" / "smoke" / "config.yaml").read_text()
    rows = json.loads((tmp_path / "d" / "smoke" / "results" / "trials.json").read_text())["trials"]
    assert [(r["trial_id"], r["status"]) for r in rows] == [("none-random-w0-s0", "finished")]


def test_optuna_weight_search_then_seeds(tmp_path, smoke_teacher):
    result = run(
        "--output-dir",
        str(tmp_path),
        "--set",
        "sweep.strategies=[forward,none]",
        "--set",
        "sweep.inits=[random]",
        "--set",
        "sweep.seeds=[0]",
        "--set",
        "sweep.weight_search.method=optuna",
        "--set",
        "sweep.weight_search.trials_per_cell=2",
        *ONE_AT_A_TIME,
        teacher=smoke_teacher,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    study_dir = tmp_path / "smoke"
    tuning = json.loads((study_dir / "results" / "weight_search" / "trials.json").read_text())["trials"]
    assert len(tuning) == 2 and all(r["seed"] == 0 and r["trial_id"].startswith("tune-forward-random") for r in tuning)
    best = max(tuning, key=lambda r: r["best_validation"])
    chosen = json.loads((study_dir / "results" / "chosen_weights.json").read_text())
    assert chosen == {"forward/random": best["weight"]}
    rows = json.loads((study_dir / "results" / "trials.json").read_text())["trials"]
    assert sorted((r["strategy"], r["weight"], r["seed"]) for r in rows) == [
        ("forward", best["weight"], 0),
        ("none", 0.0, 0),
    ]
    _client, runs = runs_by_name(study_dir)
    assert len([n for n in runs if n.startswith("tune-")]) == 2  # tuning trials are tracked too
    summary = json.loads((study_dir / "report" / "summary.json").read_text())  # ... but not analysed
    assert sorted(t["trial_id"] for t in summary["trials"]) == sorted(r["trial_id"] for r in rows)


def _browser():
    """Headless Debian Chromium through its chromedriver (Selenium; nothing downloads a browser); None if absent."""
    import shutil

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1700,4000",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(arg)
    options.binary_location = chromium
    return webdriver.Chrome(service=Service(driver), options=options)


def _wait_for_url(browser, part, timeout=30):
    deadline = time.time() + timeout
    while part not in browser.current_url:
        assert time.time() < deadline, f"{part!r} not in {browser.current_url}"
        time.sleep(0.5)


def _wait_for_text(browser, texts, timeout=60):
    from selenium.webdriver.common.by import By

    deadline, body = time.time() + timeout, ""
    while time.time() < deadline:
        body = browser.find_element(By.TAG_NAME, "body").text
        if all(t in body for t in texts):
            return body
        time.sleep(1)
    missing = [t for t in texts if t not in body]
    raise AssertionError(f"the page never showed {missing}; it shows:\n{body[:3000]}")


CARD = '[data-testid="experiment-view-compare-runs-card"]'
SCREENSHOTS = ROOT / "test-artifacts" / "mlflow-ui"  # what the browser saw (CI keeps the folder; git ignores it)


def _chart_cards(browser, cards: int, plots: int = 6, timeout: float = 90) -> dict:
    """The chart tab's cards by title, once `cards` are there and `plots` of them have drawn (the bar and line charts
    are Plotly's; MLflow renders only the cards in view: the window is tall enough for all of them)."""
    from selenium.webdriver.common.by import By

    deadline = time.time() + timeout
    while (
        len(browser.find_elements(By.CSS_SELECTOR, CARD)) < cards
        or len(browser.find_elements(By.CSS_SELECTOR, f"{CARD} .js-plotly-plot")) < plots
    ):
        assert time.time() < deadline, (
            f"fewer than {cards} charts drawn:\n{browser.find_element(By.TAG_NAME, 'body').text}"
        )
        time.sleep(1)
    time.sleep(2)  # the last traces
    return {c.find_element(By.CSS_SELECTOR, "h4").text: c for c in browser.find_elements(By.CSS_SELECTOR, CARD)}


def _screenshot(browser, name: str) -> None:
    """What a user sees on a laptop-sized window, into test-artifacts/mlflow-ui/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = browser.get_window_size()
    browser.set_window_size(1600, 1300)
    time.sleep(2)
    assert browser.save_screenshot(str(SCREENSHOTS / name)) and (SCREENSHOTS / name).stat().st_size > 20_000
    browser.set_window_size(size["width"], size["height"])


def test_a_user_opens_the_printed_mlflow_page_in_a_real_browser(study, tmp_path):
    """`mlflow ui` on the finished smoke study, driven by a real headless Chromium: the plain experiment address
    lands on the runs once the workflow switch is set; the link the study prints opens the chart tab with the arms
    compared (test accuracy per arm, the loss terms and the validation curve over steps, no bookkeeping metric),
    its table tab every trial grouped by strategy and init, the per-trial view the parallel-coordinates chart; the
    study run's page shows the verdict; its report.html renders in MLflow's artifact viewer. Screenshots of the views
    go to test-artifacts/mlflow-ui/."""
    import re

    from selenium.webdriver.common.by import By

    browser = _browser()
    if browser is None:
        pytest.skip(
            "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; "
            ".ci/run installs them)"
        )
    port = free_port()
    ui = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "ui",
            "--backend-store-uri",
            f"sqlite:///{study['dir'] / 'mlflow.db'}",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=tmp_path,
    )
    try:
        import urllib.request

        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert time.time() < deadline and ui.poll() is None, "mlflow ui did not start"
                time.sleep(0.5)
        browser.get(f"http://127.0.0.1:{port}/")  # MLflow's assistant panel would open on first visit, narrowing
        browser.execute_script(
            "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
            "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true')"
        )
        _, runs = runs_by_name(study["dir"])
        trials = sorted(n for n, r in runs.items() if r.data.tags.get("raykd.role") == "trial")
        assert len(trials) == 12
        # the plain address of the experiment: MLflow 3.17 chooses the page by the browser's workflow switch, not by
        # anything raykd can set on the server (README, "MLflow"); a fresh browser lands on the GenAI overview, and
        # one click on the switch, as the study's console says, makes every way in land on the runs
        plain = f"http://127.0.0.1:{port}/#/experiments/{runs['smoke'].info.experiment_id}"
        browser.get(plain)
        _wait_for_text(browser, ["Model training", "Traces"])
        _wait_for_url(browser, "/overview")
        assert "workflowType=genai" in browser.current_url
        assert "other ways into the experiment open MLflow's GenAI overview" in study["result"].stdout
        switch = browser.find_element(By.XPATH, "//*[@role='button'][.//*[normalize-space(text())='Model training']]")
        browser.execute_script("arguments[0].click()", switch)  # (a GenAI pop-up covers it for a real click)
        browser.get("about:blank")
        browser.get(plain)
        _wait_for_text(browser, ["Run Name", *trials])  # the default runs table (the printed link adds the view)
        _wait_for_url(browser, "/runs")
        assert "workflowType=machine_learning" in browser.current_url

        printed = re.search(r"then open (http://\S+)", study["result"].stdout).group(1)
        printed = printed.replace("127.0.0.1:5000", f"127.0.0.1:{port}")
        # the printed link: the chart tab of the comparison view, the arms compared and nothing else charted
        browser.get(printed)
        charts = _chart_cards(browser, 6)
        assert set(charts) == {
            "test.accuracy",
            "val_curve.accuracy",
            "train.total",
            "train.ce",
            "train.kd",
            "train.hidden",
        }
        assert charts["test.accuracy"].find_elements(By.CSS_SELECTOR, "g.barlayer .trace.bars")  # a bar per arm
        for key in ("train.total", "val_curve.accuracy"):  # curves over steps, one per arm
            assert charts[key].find_elements(By.CSS_SELECTOR, "g.scatterlayer .trace.scatter")
            assert "Step" in charts[key].find_element(By.CSS_SELECTOR, ".xtitle").text
        assert len(charts["test.accuracy"].find_elements(By.CSS_SELECTOR, "g.barlayer g.point")) == 6, charts[
            "test.accuracy"
        ].text
        _screenshot(browser, "mlflow_charts_by_arm.png")

        table = printed.replace("compareRunsMode=CHART", "compareRunsMode=TABLE")
        browser.get(table)
        body = _wait_for_text(browser, ["trial.strategy", "trial.init", "trial.seed", "test.accuracy", *trials])
        assert "/runs" in browser.current_url and "overview" not in browser.current_url
        groups = re.findall(r"Group: trial\.strategy: (\w+), trial\.init: (\w+)", body)
        assert sorted(groups) == sorted(
            (s, i) for s in ("forward", "all_to_one", "none") for i in ("random", "teacher")
        )
        assert "Traces" not in body.split("Runs")[0] or "No data" not in body  # not the GenAI overview
        _screenshot(browser, "mlflow_runs_table.png")

        # the arms, a row each: the group rows as the report rounds them (MLflow's own group rows print 0.5449999...)
        summary = json.loads((study["dir"] / "report" / "summary.json").read_text())
        arms = re.search(r"the arms, a row each: (http://\S+)\)", study["result"].stdout).group(1)
        browser.get(arms.replace("127.0.0.1:5000", f"127.0.0.1:{port}"))
        means = {
            f"arm-{c['strategy']}-{c['init']}-w{c['weight']:g}": format(
                float(format(100 * c["mean"], ".2f")), "g"
            )  # as the UI prints 48.00: 48
            for c in summary["cells"]
        }
        body = _wait_for_text(browser, ["points.mean", "points.sd", "points.ci95_low", *means, *means.values()])
        assert not re.search(r"\d\.\d{5,}", body), body  # no unrounded number anywhere in the table
        assert not set(trials) & set(re.findall(r"[\w-]+-s\d", body))  # arms only, no trial row
        _screenshot(browser, "mlflow_arms_table.png")

        # the per-trial view: the arm's parameters against the test metric, one line per trial
        browser.get(printed.replace("raykd-compare", "raykd-runs"))
        charts = _chart_cards(browser, 7)
        deadline = time.time() + 30
        while not charts["Parallel Coordinates"].find_elements(By.CSS_SELECTOR, "g.dimension text.label"):
            assert time.time() < deadline, "the parallel-coordinates chart drew no axes"
            time.sleep(1)
        axes = [e.text for e in charts["Parallel Coordinates"].find_elements(By.CSS_SELECTOR, "g.dimension text.label")]
        assert axes == ["trial.strategy", "trial.init", "trial.weight", "trial.seed", "test.accuracy"]
        _screenshot(browser, "mlflow_charts_by_trial.png")

        parent = runs["smoke"]
        run_page = f"http://127.0.0.1:{port}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
        browser.get(run_page + "?workflowType=machine_learning")
        _wait_for_text(
            browser, ["smoke: does the layer-selection strategy matter?", "(random init, margin +-1 points)"]
        )

        browser.get(f"{run_page}/artifacts/report/report.html?workflowType=machine_learning")
        deadline = time.time() + 60
        while not browser.find_elements(By.TAG_NAME, "iframe"):
            assert time.time() < deadline, "the artifact viewer showed no rendered HTML"
            time.sleep(1)
        browser.switch_to.frame(browser.find_elements(By.TAG_NAME, "iframe")[0])
        report = _wait_for_text(browser, ["Study report: smoke", "Verdict", "Matching vs no matching"])
        images = browser.find_elements(By.TAG_NAME, "img")
        assert len(images) == 8 and all(img.get_attribute("naturalWidth") not in ("0", None) for img in images)
        assert "== verdict: smoke" in report
    finally:
        browser.quit()
        os.killpg(ui.pid, signal.SIGKILL)
        ui.wait()


def test_sequential_looks_grow_the_study_and_label_an_unplanned_look(study):
    """Last in this file (it grows the shared study): the study, analysed once at its 2 seeds (its plan), is run
    again with sweep.sequential looks [2, 3]. Look 1 finds its trials done and its claims open (2 seeds < 4), so
    look 2 runs seed 2's six trials only; 3 seeds were never in the plan the first analysis fixed, so that look
    is recorded as unplanned and every verdict says exploratory."""

    grown = run(
        "--output-dir",
        str(study["out"]),
        *FULL,
        "--set",
        "sweep.seeds=[0,1,2]",
        "--set",
        "sweep.sequential.looks=[2,3]",
    )
    assert grown.returncode == 0, grown.stdout[-3000:] + grown.stderr[-3000:]
    out = grown.stdout
    assert "look 1 of 2: seeds [0, 1]" in out and "resuming: 12 of 12 trials already ended; running 0" in out
    assert "look 1: claims still open; adding seeds up to 3" in out and "look 2 of 2: seeds [0, 1, 2]" in out
    assert "resuming: 12 of 18 trials already ended; running 6" in out
    assert "an unplanned look at 3 seeds: verdicts exploratory" in out and "(exploratory: unplanned look)" in out
    looks = json.loads((study["dir"] / "looks.json").read_text())
    assert looks["plan"]["looks"] == [2] and [(x["seeds"], x["planned"]) for x in looks["looks"]] == [
        (2, True),
        (3, False),
    ]
    summary = json.loads((study["dir"] / "report" / "summary.json").read_text())
    assert summary["sequential"]["planned"] is False and all(c["exploratory"] for c in summary["claims"])
    # angles: the 12 students of seeds 0-1 were measured by the first analysis and are reused; only seed 2's 6 are new
    assert any("6 measured now, 12 read back from angles.json" in note for note in summary["notes"])
    assert len(json.loads((study["dir"] / "angles.json").read_text())["students"]) == 18
    assert summary["angles"] and summary["angle_test"]
