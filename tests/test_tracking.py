"""MLflow tracking helpers that need no Ray: the store's first use, the comparison view, descriptions."""

import json
import multiprocessing
from pathlib import Path

from raykd import tracking as tr


def _first_use(uris: list[str], barrier, results, name: str) -> None:
    """For each new store in turn: wait for the others, then open it and create an experiment."""
    import mlflow  # noqa: F401  (imported before the barrier: the processes then reach the store together)

    for uri in uris:
        try:
            barrier.wait(timeout=120)
            client = tr.open_client(uri)
            client.create_experiment(name)
            results.put(("ok", name))
        except Exception as error:  # noqa: BLE001 - reported to the test
            results.put(("error", f"{type(error).__name__}: {error}"))


def test_processes_that_open_a_new_sqlite_store_at_once_all_start(tmp_path):
    """Two studies started at the same moment against one new sqlite store raced on MLflow's schema creation
    (alembic: "No such constraint"); the first use is now serialised by a file lock. Four processes, released by a
    barrier at the same instant, three fresh stores in a row: every one starts."""
    context = multiprocessing.get_context("spawn")
    uris = [f"sqlite:///{tmp_path / f'round{round_}' / 'mlflow.db'}" for round_ in range(3)]
    barrier, results = context.Barrier(4), context.Queue()
    procs = [context.Process(target=_first_use, args=(uris, barrier, results, f"study{i}")) for i in range(4)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=240) for _ in range(len(procs) * len(uris))]
    for proc in procs:
        proc.join(timeout=60)
    assert [o for o in outcomes if o[0] != "ok"] == [], outcomes
    for uri in uris:
        names = {e.name for e in tr.open_client(uri).search_experiments()}
        assert {f"study{i}" for i in range(4)} <= names


def test_comparison_view_is_a_shared_view_of_the_trials_grouped_by_arm(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = tr.open_study(tmp_path, "s", "uid", {"a": 1})
    client = tracking.client()
    key = tr.share_comparison_view(client, tracking.experiment_id, "accuracy")
    experiment = client.get_experiment(tracking.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # opens on runs, not GenAI
    state = json.loads(experiment.tags[tr.SHARED_VIEW + key])
    assert state["searchFilter"] == "tags.`raykd.role` = 'trial'"
    assert [k["groupByData"] for k in state["groupBy"]["groupByKeys"]] == ["trial.strategy", "trial.init"]
    assert "metrics.`test.accuracy`" in state["selectedColumns"] and state["orderByKey"] == "metrics.`test.accuracy`"
    url = tr.comparison_url("http://127.0.0.1:5000", tracking.experiment_id)
    assert url.endswith(
        f"/#/experiments/{tracking.experiment_id}/runs?viewStateShareKey={key}&compareRunsMode=CHART"
        "&workflowType=machine_learning"
    )
    # the chart tab: the comparison, nothing else (MLflow charts any metric without a card, so the rest are deleted)
    cards = {c["metricKey"]: c for c in state["compareRunCharts"]}
    shown = {k: c["type"] for k, c in cards.items() if not c["deleted"]}
    assert shown == {
        "test.accuracy": "BAR",
        "val_curve.accuracy": "LINE",
        **{f"train.{t}": "LINE" for t in ("total", "ce", "kd", "hidden")},
    }
    assert state["useGroupedValuesInCharts"] and {c["metricSectionId"] for c in cards.values()} == {"raykd"}
    assert {"time.setup_s", "best_step", "train.lr", "validation.accuracy"} <= {
        k for k, c in cards.items() if c["deleted"]
    }
    # at the study's end it is written again with what the trials logged: a task's other metrics are not charted
    tr.share_comparison_view(
        client, tracking.experiment_id, "accuracy", logged={"test.f1_macro", "train.hidden.encoder"}
    )
    views = client.get_experiment(tracking.experiment_id).tags
    per_trial = json.loads(views[tr.SHARED_VIEW + tr.RUNS_VIEW])
    assert not per_trial["useGroupedValuesInCharts"]
    hidden = {c["metricKey"] for c in per_trial["compareRunCharts"] if c["deleted"]}
    assert {"test.f1_macro", "train.hidden.encoder"} <= hidden and "test.accuracy" not in hidden
    (parallel,) = [c for c in per_trial["compareRunCharts"] if c["type"] == "PARALLEL"]
    assert parallel["selectedParams"] == list(tr.ARM_PARAMS) and parallel["selectedMetrics"] == ["test.accuracy"]
    assert tracking.uri == uri and Path(tr.sqlite_path(uri)) == tmp_path / "mlflow.db"


def test_a_teacher_folder_found_complete_gives_the_study_its_teacher_run_once(tmp_path, smoke_teacher):
    """A copied teacher folder (another study's, same teacher) skips fine-tuning, but this study still gets its
    teacher run with the folder's metrics (the analysis reads them from it); a second call adds nothing."""
    import shutil

    from raykd.train.teacher import prepare_teacher
    from raykd.validate import load_study_config
    from tests.smoke_studies import SMOKE

    config = load_study_config(SMOKE)
    folder = tmp_path / "teacher" / smoke_teacher.name
    shutil.copytree(smoke_teacher, folder)
    tracking = tr.open_study(tmp_path, "smoke", "uid-1", {})
    metrics = json.loads((folder / "metrics.json").read_text())
    for _ in range(2):
        assert prepare_teacher(config, str(folder), tracking) == metrics
    client = tracking.client()
    runs = tr.study_runs(client, tracking.experiment_id, "uid-1", "teacher")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["raykd.teacher_reused"] == "true"
    assert runs[0].data.metrics["teacher.test.accuracy"] == metrics["test/accuracy"]


def test_arm_runs_hold_the_report_numbers_and_follow_the_cells(tmp_path):
    """One run per cell, its stats in points as the report rounds them (a cell of one trial: no sd, no CI); written
    again, an arm that is no longer a cell is deleted."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("arms")
    study = client.create_run(experiment, tags={tr.ROLE: "study"}).info.run_id
    tracking = tr.Tracking(uri, experiment, "uid", study)
    cells = [
        {
            "strategy": "forward",
            "init": "random",
            "weight": 3.0,
            "n": 2,
            "mean": 0.5449,
            "std": 0.01234,
            "ci95": [0.44, 0.6551],
        },
        {"strategy": "none", "init": "random", "weight": 0.0, "n": 1, "mean": 0.48, "std": None, "ci95": None},
    ]
    tr.log_arms(tracking, {"points_per_unit": 100, "cells": cells})
    arms = {r.info.run_name: r for r in client.search_runs([experiment], "tags.`raykd.role` = 'arm'")}
    assert arms["arm-forward-random-w3"].data.metrics == {
        "points.mean": 54.49,
        "points.sd": 1.23,
        "points.ci95_low": 44.0,
        "points.ci95_high": 65.51,
        "trials": 2,
    }
    assert arms["arm-none-random-w0"].data.metrics == {"points.mean": 48.0, "trials": 1}
    assert arms["arm-none-random-w0"].data.params["trial.strategy"] == "none"

    tr.log_arms(tracking, {"points_per_unit": 100, "cells": cells[:1]})
    again = [r.info.run_name for r in client.search_runs([experiment], "tags.`raykd.role` = 'arm'")]
    assert again == ["arm-forward-random-w3"]
