import pytest

from raykd.config import load_config
from raykd.sweep import ResourceError, chosen_weights, plan_resources
from raykd.trial import trial_grid
from raykd.weight_search import CellwiseOptuna, tuning_cells

SMOKE = "studies/configs/smoke.yaml"


def test_trial_grid_pairs_seeds_and_runs_none_once_per_cell():
    config = load_config(SMOKE, ["sweep.seeds=[0,1]", "sweep.weights=[1,3]"])
    grid = trial_grid(config)
    ids = [t.trial_id for t in grid]
    assert len(ids) == len(set(ids)) == (2 * 2 * 2 * 2) + 2 * 2  # forward, all_to_one x inits x weights x seeds; none
    assert "none-random-w0-s1" in ids and "forward-teacher-w1-s0" in ids
    assert {t.seed for t in grid} == {0, 1}
    tuned = trial_grid(
        config,
        {
            ("forward", "random"): 2.5,
            ("forward", "teacher"): None,
            ("all_to_one", "random"): 0.7,
            ("all_to_one", "teacher"): 1.0,
        },
    )
    assert "forward-random-w2.5-s1" in [t.trial_id for t in tuned]
    assert not [t for t in tuned if (t.strategy, t.init) == ("forward", "teacher")]  # no weight found


def test_plan_resources_fits_the_cluster():
    config = load_config(SMOKE)
    two_cores = plan_resources(config, {"CPU": 2, "tune_driver": 1000}, n_trials=6)
    assert two_cores.max_concurrent == 2 and two_cores.driver == {"CPU": 0, "tune_driver": 1}
    assert two_cores.local and two_cores.trial == {"CPU": 1.0}  # the trial runs inside its Tune actor
    capped = plan_resources(load_config(SMOKE, ["compute.max_concurrent_trials=1"]), {"CPU": 16}, n_trials=6)
    assert capped.max_concurrent == 1 and capped.driver == {"CPU": 0.01}  # no tune_driver resource
    gpu = plan_resources(load_config(SMOKE, ["compute.gpus_per_worker=0.25"]), {"CPU": 16, "GPU": 1}, n_trials=10)
    assert gpu.max_concurrent == 4  # four trials share one GPU
    with pytest.raises(
        ResourceError,
        match=r"a trial needs 1 worker\(s\) of 1 CPU and 1 GPU each, each on one node; "
        "the cluster has node 0: 8 CPU, 0 GPU",
    ):
        plan_resources(load_config(SMOKE, ["compute.gpus_per_worker=1"]), {"CPU": 8}, n_trials=1)
    # every worker must fit on one node: two 1-CPU nodes hold two 1-CPU workers, never one 2-CPU worker
    nodes = [{"CPU": 1}, {"CPU": 1}]
    ddp = plan_resources(load_config(SMOKE, ["compute.num_workers=2"]), {"CPU": 2, "tune_driver": 1000}, 4, nodes=nodes)
    assert ddp.max_concurrent == 1 and not ddp.local and ddp.trial == {"CPU": 0, "tune_driver": 1}
    with pytest.raises(
        ResourceError, match="2 CPU each, each on one node; the cluster has node 0: 1 CPU, 0 GPU; node 1"
    ):
        plan_resources(load_config(SMOKE, ["compute.cpus_per_worker=2"]), {"CPU": 2}, 4, nodes=nodes)
    # an explicit cap is trusted: an autoscaling cluster shows no GPU worker yet, Tune queues until one comes
    scaling = plan_resources(
        load_config(SMOKE, ["compute.gpus_per_worker=0.5", "compute.max_concurrent_trials=8"]),
        {"CPU": 0, "tune_driver": 1000},
        n_trials=30,
    )
    assert scaling.max_concurrent == 8 and scaling.driver == {"CPU": 0, "tune_driver": 1}


def test_cellwise_optuna_round_robin_tell_and_restore(tmp_path):
    config = load_config(
        SMOKE,
        [
            "sweep.weight_search.method=optuna",
            "sweep.weight_search.trials_per_cell=4",
            "sweep.weight_search.low=0.5",
            "sweep.weight_search.high=8",
        ],
    )
    searcher = CellwiseOptuna(config)
    assert tuning_cells(config) == [
        ("forward", "random"),
        ("forward", "teacher"),
        ("all_to_one", "random"),
        ("all_to_one", "teacher"),
    ]
    suggested = []
    while (cfg := searcher.suggest(f"t{len(suggested)}")) != CellwiseOptuna.FINISHED:
        suggested.append((f"t{len(suggested)}", cfg["trial"]))
    assert len(suggested) == 16
    assert [t["strategy"] + "/" + t["init"] for _, t in suggested[:4]] == [f"{s}/{i}" for s, i in searcher.cells]
    assert all(0.5 <= t["weight"] <= 8 and t["seed"] == 0 and t["trial_id"].startswith("tune-") for _, t in suggested)
    for trial_id, t in suggested[:-1]:  # the value peaks where the weight is closest to 2
        searcher.on_trial_complete(trial_id, {"status": "finished", "best_validation": -abs(t["weight"] - 2)})
    searcher.on_trial_complete(suggested[-1][0], {"status": "diverged"})  # told as failed
    chosen = searcher.chosen_weights()
    for cell, weight in chosen.items():
        done = [t for _, t in suggested[:-1] if (t["strategy"], t["init"]) == cell]
        assert weight == min(done, key=lambda t: abs(t["weight"] - 2))["weight"]
    searcher.save(str(tmp_path / "s.pkl"))
    restored = CellwiseOptuna(config)
    restored.restore(str(tmp_path / "s.pkl"))
    assert restored.chosen_weights() == chosen and restored.suggest("x") == CellwiseOptuna.FINISHED


def test_chosen_weights_from_results_rows():
    rows = [
        {"strategy": "forward", "init": "random", "weight": w, "status": s, "best_validation": v}
        for w, s, v in [(1.0, "finished", 0.5), (2.0, "finished", 0.7), (3.0, "diverged", None)]
    ]
    assert chosen_weights(rows, [("forward", "random"), ("forward", "teacher")]) == {
        ("forward", "random"): 2.0,
        ("forward", "teacher"): None,
    }
    assert chosen_weights(rows, [("forward", "random")], higher_is_better=False) == {("forward", "random"): 1.0}


def test_weight_search_config_validated():
    from raykd.config import ConfigError

    with pytest.raises(ConfigError, match=r"high \(0.1\) must be greater than low \(1.0\)"):
        load_config(SMOKE, ["sweep.weight_search.low=1.0", "sweep.weight_search.high=0.1"])
    with pytest.raises(ConfigError, match="sweep.weight_search.method: Input should be 'grid' or 'optuna'"):
        load_config(SMOKE, ["sweep.weight_search.method=random"])


def test_cell_means_line_counts_finished_trials_only():
    from raykd.study import cell_means

    rows = [
        {"status": "finished", "metric": 0.5, "strategy": "forward", "init": "random"},
        {"status": "finished", "metric": 0.7, "strategy": "forward", "init": "random"},
        {"status": "diverged", "metric": None, "strategy": "reverse", "init": "random"},
    ]
    assert cell_means(rows, "accuracy") == "mean test accuracy per cell: forward/random 0.6 (n=2)"
    assert cell_means(rows[2:], "accuracy") == "no finished trial"


def test_settings_the_workers_on_a_cluster_must_see_travel_with_the_job():
    """A cluster's workers inherit their raylet's environment, not the driver's: offline switches, MLflow's
    retry settings and credentials, S3's credentials and endpoint and raykd's own switches travel in the job's
    runtime_env; paths do not."""
    from raykd.cluster import forwarded_env

    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": "/home/me/.cache/hf",
        "PATH": "/usr/bin",
        "RAYKD_TEST_NAN_AT_STEP": "t:3:1",
        "RAYKD_HOOKS": "/repo/tests/faults.py",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_TRACKING_PASSWORD": "secret",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "AWS_ENDPOINT_URL": "http://s3:9000",
        "AWS_SECRET_ACCESS_KEY": "s3-secret",
    }
    assert forwarded_env(env) == {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "RAYKD_TEST_NAN_AT_STEP": "t:3:1",
        "RAYKD_HOOKS": "/repo/tests/faults.py",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_TRACKING_PASSWORD": "secret",
        "AWS_ENDPOINT_URL": "http://s3:9000",
        "AWS_SECRET_ACCESS_KEY": "s3-secret",
    }


def test_a_rerun_with_the_same_grid_reads_the_teacher_stage_record_instead_of_running_it(tmp_path):
    """stage.json answers for this study and grid only, and only while the folder and cache it names exist."""
    from raykd.study import StageRecord
    from raykd.trial import trial_grid
    from raykd.validate import load_study_config
    from tests.smoke_studies import SMOKE

    config = load_study_config(SMOKE)
    grid = trial_grid(config)
    folder, cache = tmp_path / "teacher", tmp_path / "teacher" / "cache" / "abc"
    cache.mkdir(parents=True)
    out = {"metrics": {"test/accuracy": 0.57}, "cache": {"path": str(cache), "plan": "p", "reason": "built in 4 s"}}
    record = StageRecord(folder, config, grid, "uid-1")
    assert record.read() is None  # nothing recorded yet
    record.write(out)
    assert record.read() is None  # the teacher stage's folder is not complete (no metrics.json)
    (folder / "metrics.json").write_text("{}")
    assert record.read() is None  # ... nor its cache
    (cache / "index.json").write_text("{}")
    assert record.read() == {**out, "cache": {**out["cache"], "reason": "reused"}}
    assert StageRecord(folder, config, grid[:-1], "uid-1").read() is None  # another grid
    assert StageRecord(folder, config, grid, "uid-2").read() is None  # another study (a copied teacher folder)
    other = load_study_config(SMOKE, ["distill.loss.kd=0"])
    assert StageRecord(folder, other, trial_grid(other), "uid-1").read() is None  # other distillation settings


def test_the_sweep_eta_counts_the_running_trials_progress():
    """4 trials of 100 steps, 100 s each, two at a time (the default study's shape): the ETA the user reads when
    the first trial ends is not the double that ended trials alone give, and falls between completions."""
    import io
    import time
    from types import SimpleNamespace

    from raykd.console import Console, Progress

    out = io.StringIO()
    progress = Progress(4, "accuracy", console=Console(stream=out, every_s=0.0), steps=100)

    def trial(i):
        spec = {"trial_id": f"forward-random-w3-s{i}", "strategy": "forward", "init": "random"}
        return SimpleNamespace(trial_id=str(i), config={"trial": spec}, last_result={})

    a, b = trial(0), trial(1)
    for t in (a, b):
        progress.callback.on_trial_start(0, [], t)
    assert progress.eta_s() is None  # nothing measured yet: no ETA rather than a guess

    def at(seconds):
        progress.started = time.time() - seconds

    at(50)
    for t in (a, b):
        progress.result(t, {"step": 50, "validation/accuracy": 0.6})
    assert progress.eta_s() == pytest.approx(150, rel=0.05)  # 3 trials' worth of work left at 50 s a half
    at(100)
    a.last_result = {"status": "finished", "test/accuracy": 0.7}
    progress.done(a, failed=False)
    true_left = 100  # b ends now, c and d take 100 s side by side
    assert progress.eta_s() < 2 * true_left  # ended trials alone would say 300 s
    assert "ETA 2.8 min" in out.getvalue().splitlines()[-1]  # 100 s / 1.5 trials x 2.5 trials left
    at(140)
    c = trial(2)
    progress.callback.on_trial_start(0, [], c)
    progress.result(c, {"step": 50})
    assert progress.eta_s() < 2.8 * 60


def test_the_live_line_moves_with_the_trials_progress_files(tmp_path):
    """Between evaluations the live line reads each running trial's step from the file its rank 0 writes; the
    file goes when the trial ends."""
    import io
    from types import SimpleNamespace

    from raykd.console import Console, Progress, trial_progress

    out = io.StringIO()
    progress = Progress(2, "accuracy", console=Console(stream=out, every_s=0.0), steps=250, study_dir=tmp_path)
    progress.poll_s = 0.0
    spec = {"trial_id": "forward-random-w3-s0", "strategy": "forward", "init": "random"}
    trial = SimpleNamespace(trial_id="a", config={"trial": spec}, last_result={})
    progress.callback.on_trial_start(0, [], trial)
    progress.callback.on_step_end(0, [trial])
    assert out.getvalue() == ""  # nothing written yet: nothing to say
    file = trial_progress(tmp_path, spec["trial_id"])
    file.write("trial", step=40, steps=250)
    progress.callback.on_step_end(1, [trial])
    assert out.getvalue().splitlines()[-1].endswith("running: forward-random-w3-s0 step 40/250")
    progress.poll_s = 3600.0
    file.write("trial", step=50, steps=250)
    progress.callback.on_step_end(2, [trial])
    assert "step 50/250" not in out.getvalue()  # polled at most every poll_s
    progress.result(trial, {"step": 45, "validation/accuracy": 0.6})  # a report reads the files as of now
    assert out.getvalue().splitlines()[-1].endswith("running: forward-random-w3-s0 step 50/250, val 0.6")
    trial.last_result = {"status": "finished", "test/accuracy": 0.7}
    progress.done(trial, failed=False)
    assert file.read() is None and not file.path.exists()


def test_the_eta_after_a_resume_counts_only_the_steps_run_now_and_old_progress_is_ignored(tmp_path):
    """12 trials, 2 ended before; two trials resumed from checkpoints at step 210 of 250 and ran 10 steps in 20 s
    here: the ETA is what is left at that pace (~34 min), not the minutes that counting the 210 steps run before
    would give. Files from an earlier driver, older than the sweep, or malformed change nothing and stop nothing."""
    import json
    import time
    from types import SimpleNamespace

    from raykd.console import Console, Progress, trial_progress, trial_progress_dir

    stale = trial_progress(tmp_path, "forward-random-w3-s9")
    stale.write("trial", step=240, start=0, steps=250)
    progress = Progress(12, "accuracy", already_done=2, console=Console(every_s=0.0), steps=250, study_dir=tmp_path)
    progress.poll_s = 0.0
    assert not list(trial_progress_dir(tmp_path).glob("*.json"))  # the killed driver's files are gone

    trials = []
    for seed in (0, 1):
        spec = {"trial_id": f"forward-random-w3-s{seed}", "strategy": "forward", "init": "random"}
        trials.append(SimpleNamespace(trial_id=str(seed), config={"trial": spec}, last_result={}))
        progress.callback.on_trial_start(0, [], trials[-1])
        trial_progress(tmp_path, spec["trial_id"]).write("trial", step=220, start=210, steps=250)
    progress.started = time.time() - 20
    progress.poll()
    assert [e["step"] for e in progress.running.values()] == [220, 220]
    # left, two at a time at 10 steps per 20 s each: the two trials' last 30 steps (60 s), then 8 trials of 250
    # steps (4 pairs of 500 s); counting the 210 steps run before as done here would say ~1.6 min
    assert progress.eta_s() == pytest.approx(30 * 2 + 8 / 2 * 500, rel=0.02)

    first = trial_progress(tmp_path, "forward-random-w3-s0")
    first.path.write_text(json.dumps({"stage": "trial", "time": progress.started - 60, "step": 249}))
    for text in ("[1, 2]", '{"time": 1e12, "step": "many"}', "{not json"):
        progress.poll()
        trial_progress(tmp_path, "forward-random-w3-s1").path.write_text(text)
    progress.poll()
    assert [e["step"] for e in progress.running.values()] == [220, 220]  # an older attempt's step is not this one's

    progress.callback.on_trial_start(0, [], trials[0])  # Tune retries the trial: its old file goes
    assert progress.running["0"]["step"] == 0 and not first.path.exists()
