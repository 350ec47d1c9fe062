"""MLflow tracking: one experiment per study, a parent run, the teacher run and one child run per
trial, all found again by tags so retries and restores never duplicate a run.

Local studies track to ``sqlite:///<study dir>/mlflow.db`` with artifacts in ``<study dir>/mlartifacts``
(absolute URIs: Ray moves workers into trial folders). ``MLFLOW_TRACKING_URI`` points everything at a
tracking server instead. Logging goes through `MlflowClient` with explicit run ids (no global active
run), so the driver and the rank-0 worker can log to the same run from different processes.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from raykd.analysis.text import points
from raykd.config import flatten
from raykd.student import student_metadata

STUDY_UID = "raykd.study_uid"
ROLE = "raykd.role"  # study | teacher | trial | arm
TRIAL_ID = "raykd.trial_id"
STATUS = "raykd.status"  # finished | diverged | failed
ERROR = "raykd.error"  # why a trial failed (first line)
PARENT = "raykd.parent_run"  # trial and teacher runs point at the study's run; not nested in MLflow's table
NOTE = "mlflow.note.content"  # a run's or experiment's description (MLflow renders it as markdown)
# A study is classic model development. MLflow 3.17's UI does not read this tag: it opens an experiment on the GenAI
# overview or on the runs table by the browser's workflow switch (localStorage `mlflow.workflowType`, GenAI until the
# user flips it), which the `workflowType` URL parameter overrides (`comparison_url`). Nothing server-side sets it.
EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    NOTE: "A raykd study: one run per trial (strategy, init, hidden-loss weight, seed), the teacher's run "
    "and the study's run, whose description holds the verdict and whose artifact "
    "`report/report.html` is the full report. The view `raykd-compare` (the link the study "
    "prints) groups the trials by strategy and init with the mean test metric per group; the view "
    "`raykd-arms` lists one run per arm with its mean, sd and 95% CI in points.",
}
MAX_PARAM = 6000  # MLflow's limit on a param value


class TrackingError(RuntimeError):
    """The tracking store cannot be reached or used."""


@dataclass(frozen=True)
class Tracking:
    """Where a study logs (picklable: passed to Ray trial drivers and workers)."""

    uri: str
    experiment_id: str
    study_uid: str
    parent_run_id: str

    def client(self) -> MlflowClient:
        return open_client(self.uri)


def run_outcome(run, metric: str) -> dict[str, Any]:
    """How a trial's MLflow run says it ended: ``status`` (its raykd.status tag; None without one), the test
    `metric` (finished trials only), ``best_validation``, ``steps`` and ``error``."""
    tags, metrics = (run.data.tags, run.data.metrics) if run is not None else ({}, {})
    status = tags.get(STATUS)
    return {
        "status": status,
        "metric": metrics.get(f"test.{metric}") if status == "finished" else None,
        "best_validation": metrics.get("best_validation"),
        "steps": metrics.get("steps"),
        "error": tags.get(ERROR),
    }


def tracking_uri(study_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{study_dir.resolve() / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (TrackingError) when an HTTP tracking server does not answer its health check."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            if response.status != 200:
                raise TrackingError(f"MLflow tracking server {uri} answered {response.status} to /health")
    except (urllib.error.URLError, OSError) as error:
        raise TrackingError(f"MLflow tracking server {uri} is unreachable: {error}") from None


def tracking_lost(error: BaseException) -> str | None:
    """If `error` happened because the remote tracking server went away (it does not answer now), the
    message to show; else None. Local stores (sqlite) never go away this way."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        check_reachable(uri)
    except TrackingError:
        return (
            f"the MLflow tracking server {uri} went away during the study ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200] if str(error) else ''}). Finished trials, checkpoints and "
            f"everything logged so far are kept; re-run the same command once the server is back and the "
            f"study resumes where it stopped"
        )
    return None


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (None for other stores)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def open_client(uri: str) -> MlflowClient:
    """A client whose store is ready. A new sqlite store creates its schema on first use, and two processes that
    do that at the same moment race in MLflow's migrations (alembic fails in one of them); a file lock beside
    the database makes the first use one at a time."""
    database = sqlite_path(uri)
    if database is None:
        return MlflowClient(tracking_uri=uri)
    from filelock import FileLock

    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(database) + ".lock"):
        return MlflowClient(tracking_uri=uri)  # the client's store creates (or migrates) the schema, under the lock


def open_study(study_dir: Path, name: str, study_uid: str, config_params: Mapping[str, Any]) -> Tracking:
    """Create (or find) the study's experiment and parent run."""
    uri = tracking_uri(study_dir)
    client = open_client(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        artifacts = None if uri.startswith(("http://", "https://")) else (study_dir.resolve() / "mlartifacts").as_uri()
        experiment_id = client.create_experiment(name, artifact_location=artifacts, tags=EXPERIMENT_TAGS)
    else:
        experiment_id = experiment.experiment_id
        for key, value in EXPERIMENT_TAGS.items():
            if experiment.tags.get(key) != value:
                client.set_experiment_tag(experiment_id, key, value)
    parent = find_run(client, experiment_id, {STUDY_UID: study_uid, ROLE: "study"})
    if parent is None:
        parent = client.create_run(experiment_id, run_name=name, tags={STUDY_UID: study_uid, ROLE: "study"}).info.run_id
        log_params(client, parent, config_params)
    else:
        client.update_run(parent, status="RUNNING")
    return Tracking(uri=uri, experiment_id=experiment_id, study_uid=study_uid, parent_run_id=parent)


def ended_result(tracking: Tracking, key: str) -> dict[str, Any] | None:
    """The final result of a trial whose run already ended (finished or diverged), as its worker reported
    it (metric names with '/'); None when it has not ended. Lets a re-run study skip ended trials even when
    Tune's own state missed their end (a driver killed right after a trial ended)."""
    client = tracking.client()
    run_id = find_run(client, tracking.experiment_id, {STUDY_UID: tracking.study_uid, ROLE: "trial", TRIAL_ID: key})
    if run_id is None:
        return None
    run = client.get_run(run_id)
    status = run.data.tags.get(STATUS)
    if status not in ("finished", "diverged"):
        return None
    history = client.get_metric_history(run_id, "best_validation")
    result = {
        k.replace(".", "/", 1) if k.startswith(("test.", "validation.")) else k: v for k, v in run.data.metrics.items()
    }
    result.update(
        {"status": status, "step": max((m.step for m in history), default=0), "final": True, "already_ended": True}
    )
    return result


def child_run(tracking: Tracking, *, role: str, key: str, run_name: str, tags: Mapping[str, str] = ()) -> str:
    """The run of a teacher or trial (`key`), created on first use and found again afterwards."""
    client = tracking.client()
    wanted = {STUDY_UID: tracking.study_uid, ROLE: role, TRIAL_ID: key}
    run_id = find_run(client, tracking.experiment_id, wanted)
    if run_id is None:
        run_id = client.create_run(
            tracking.experiment_id, run_name=run_name, tags={**wanted, PARENT: tracking.parent_run_id, **dict(tags)}
        ).info.run_id
    else:
        client.update_run(run_id, status="RUNNING")
    return run_id


def _tag_query(tags: Mapping[str, str]) -> str:
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())


def study_runs(client: MlflowClient, experiment_id: str, study_uid: str, role: str) -> list:
    """Every run of one role (trial, teacher) of a study."""
    return client.search_runs(
        [experiment_id], filter_string=_tag_query({STUDY_UID: study_uid, ROLE: role}), max_results=5000
    )


def find_run(client: MlflowClient, experiment_id: str, tags: Mapping[str, str]) -> str | None:
    query = _tag_query(tags)
    runs = client.search_runs([experiment_id], filter_string=query, max_results=2)
    if len(runs) > 1:
        raise TrackingError(f"more than one run has tags {dict(tags)}: {[r.info.run_id for r in runs]}")
    return runs[0].info.run_id if runs else None


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Log params (values JSON-encoded when not scalar), skipping ones the run already has."""
    existing = client.get_run(run_id).data.params
    batch = []
    for key, value in params.items():
        text = value if isinstance(value, str) else json.dumps(value)
        text = text[: MAX_PARAM - 3] + "..." if len(text) > MAX_PARAM else text
        if key not in existing:
            batch.append(Param(key, text))
    for start in range(0, len(batch), 100):
        client.log_batch(run_id, params=batch[start : start + 100])


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int, timestamp_ms: int) -> None:
    batch = [Metric(k.replace("/", "."), float(v), timestamp_ms, step) for k, v in metrics.items()]
    if batch:
        client.log_batch(run_id, metrics=batch)


def set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> None:
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


COMPARISON_VIEW = "raykd-compare"  # the shared view a study's printed URL opens: arms compared (grouped)
RUNS_VIEW = "raykd-runs"  # the same, one mark per trial, with the parallel-coordinates chart
ARMS_VIEW = "raykd-arms"  # one row per arm (`log_arms`): the group rows, rounded as the report rounds them
# the one section of a view's chart tab, holding raykd's cards (`_card`)
SECTION = {
    "uuid": "raykd",
    "name": "raykd: the arms compared",
    "display": True,
    "isReordered": True,
    "deleted": False,
    "isGenerated": False,
}
ARM_STATS = ("points.mean", "points.sd", "points.ci95_low", "points.ci95_high", "trials")
SHARED_VIEW = "mlflow.sharedViewState."  # MLflow 3's UI keeps a shared runs-table view in this experiment tag
ARM_PARAMS = ("trial.strategy", "trial.init", "trial.weight", "trial.seed")
LOSS_TERMS = ("total", "ce", "kd", "hidden")
# what every trial logs beside its curves: not charted (`raykd.train.worker`)
BOOKKEEPING = (
    "best_step",
    "best_validation",
    "steps",
    "time.setup_s",
    "time.worker_s",
    "train.lr",
    "train.examples_per_s",
)


def _card(kind: str, key: str, **fields: Any) -> dict[str, Any]:
    """One chart of MLflow 3's chart view (its `RunsChartsCardConfig`), in raykd's one section."""
    return {
        "uuid": f"{kind.lower()}-{key}",
        "type": kind,
        "metricSectionId": "raykd",
        "isGenerated": False,
        "deleted": False,
        "runsCountToCompare": 100,
        "displayName": key,
        "metricKey": key,
        **fields,
    }


def _line(key: str) -> dict[str, Any]:
    """`key` over training steps (grouped: the group's mean with a min-max band)."""
    return _card(
        "LINE",
        key,
        selectedMetricKeys=[key],
        xAxisKey="step",
        selectedXAxisMetricKey="",
        useGlobalXaxisKey=False,
        lineSmoothness=0,
        useGlobalLineSmoothing=False,
        scaleType="linear",
        xAxisScaleType="linear",
        range={"xMin": None, "xMax": None, "yMin": None, "yMax": None},
        yAxisKey="metric",
        yAxisExpressions=[],
        ignoreOutliers=False,
    )


def comparison_charts(metric: str, *, grouped: bool, logged: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The chart view's cards: the test metric per arm (a bar), the validation learning curve and the loss terms over
    steps, and, one line per trial (`grouped` False; MLflow draws it for single runs only), the arm's parameters
    against the test metric in parallel coordinates. Every other metric (`BOOKKEEPING`, the task's other metrics,
    and whatever else `logged` names) gets a deleted card: the UI charts any metric without a card by itself."""
    shown = [f"test.{metric}", f"val_curve.{metric}", *(f"train.{t}" for t in LOSS_TERMS)]
    cards = [_card("BAR", shown[0]), *(_line(k) for k in shown[1:])]
    if not grouped:
        parallel = _card("PARALLEL", "parallel", selectedParams=list(ARM_PARAMS), selectedMetrics=[shown[0]])
        cards.append({**parallel, "displayName": "Parallel coordinates", "metricKey": None, "showAllRuns": False})
    hidden = (set(BOOKKEEPING) | {f"validation.{metric}"} | set(logged)) - set(shown)
    return cards + [{**_card("BAR", k), "uuid": f"hidden-{k}", "deleted": True} for k in sorted(hidden)]


def share_comparison_view(client: MlflowClient, experiment_id: str, metric: str, logged: Iterable[str] = ()) -> str:
    """Store the study's two shared views of its runs (MLflow's "shared view", an experiment tag): trial runs
    only, grouped by strategy and init with the mean per group, the arm and the test and best validation metric as
    columns, best first; the chart tab with `comparison_charts`, by arm (`COMPARISON_VIEW`) or by trial
    (`RUNS_VIEW`). `logged`: metric keys the runs logged, to keep out of the charts (the study writes the views
    again with them at its end, its analyses' keys included). Returns the key the printed
    URL names (``viewStateShareKey``)."""
    for key, grouped in ((COMPARISON_VIEW, True), (RUNS_VIEW, False)):
        state = {
            "selectedColumns": [f"params.`{p}`" for p in ARM_PARAMS]
            + [f"metrics.`test.{metric}`", "metrics.`best_validation`"],
            "groupBy": {
                "aggregateFunction": "average",
                "groupByKeys": [
                    {"mode": "param", "groupByData": "trial.strategy"},
                    {"mode": "param", "groupByData": "trial.init"},
                ],
            },
            "runsHiddenMode": "SHOW_ALL",
            "searchFilter": f"tags.`{ROLE}` = 'trial'",
            "orderByKey": f"metrics.`test.{metric}`",
            "orderByAsc": False,
            "compareRunCharts": comparison_charts(metric, grouped=grouped, logged=logged),
            "compareRunSections": [SECTION],
            "isAccordionReordered": True,
            "useGroupedValuesInCharts": grouped,
            "hideEmptyCharts": False,
            "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
        }
        client.set_experiment_tag(experiment_id, SHARED_VIEW + key, json.dumps(state))
    arms = {
        "selectedColumns": [f"params.`{p}`" for p in ARM_PARAMS[:3]] + [f"metrics.`{k}`" for k in ARM_STATS],
        "groupBy": None,
        "runsHiddenMode": "SHOW_ALL",
        "searchFilter": f"tags.`{ROLE}` = 'arm'",
        "orderByKey": "metrics.`points.mean`",
        "orderByAsc": False,
        "compareRunCharts": [_card("BAR", "points.mean")]
        + [{**_card("BAR", k), "uuid": f"hidden-{k}", "deleted": True} for k in sorted(set(logged) - {"points.mean"})],
        "compareRunSections": [{**SECTION, "name": "raykd: the arms' mean test metric, in points"}],
        "isAccordionReordered": True,
    }
    client.set_experiment_tag(experiment_id, SHARED_VIEW + ARMS_VIEW, json.dumps(arms))
    return COMPARISON_VIEW


def log_arms(tracking: Tracking, summary: Mapping[str, Any]) -> None:
    """One run per arm of the analysis (`summary["cells"]`: strategy, init, weight), tagged ``arm``, with its
    trials' test metric as the report writes it, in points (`raykd.analysis.text.points`): `ARM_STATS`. MLflow's
    grouped rows print the UI's own unrounded average ("0.5449999… (average)", no spread); the view `ARMS_VIEW`
    lists these instead. Written again at each study end; an arm that is no longer a cell is deleted."""
    client, scale = tracking.client(), summary["points_per_unit"]
    kept = set()
    for cell in summary["cells"]:
        key = f"arm-{cell['strategy']}-{cell['init']}-w{cell['weight']:g}"
        run_id = child_run(tracking, role="arm", key=key, run_name=key)
        kept.add(run_id)
        log_params(
            client,
            run_id,
            {"trial.strategy": cell["strategy"], "trial.init": cell["init"], "trial.weight": cell["weight"]},
        )
        low, high = cell["ci95"] or (None, None)
        stats = dict(zip(ARM_STATS[:4], (cell["mean"], cell["std"], low, high), strict=True))  # then "trials"
        values = {k: float(points(v, scale, signed=False)) for k, v in stats.items() if v is not None}
        log_metrics(client, run_id, {**values, "trials": cell["n"]}, 0, int(time.time() * 1000))
        finish(client, run_id, "finished")
    for run in study_runs(client, tracking.experiment_id, tracking.study_uid, "arm"):
        if run.info.run_id not in kept:
            client.delete_run(run.info.run_id)


def logged_metric_keys(client: MlflowClient, experiment_id: str) -> set[str]:
    """Every metric key the experiment's runs logged (the study run's and the teacher's too: the chart view offers
    every key it sees)."""
    return {k for run in client.search_runs([experiment_id], max_results=5000) for k in run.data.metrics}


def comparison_url(base: str, experiment_id: str, view: str = COMPARISON_VIEW, mode: str = "CHART") -> str:
    """The page of a study's runs in one of its shared views (`share_comparison_view`): the chart tab, or
    ``mode="TABLE"`` for the runs table."""
    return (
        f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={view}"
        f"&compareRunsMode={mode}&workflowType=machine_learning"
    )


def describe(client: MlflowClient, run_id: str, markdown: str) -> None:
    """Set a run's description (MLflow shows it, rendered as markdown, on the run's page)."""
    set_tags(client, run_id, {NOTE: markdown[:50000]})


def finish(client: MlflowClient, run_id: str, status: str, error: BaseException | str | None = None) -> None:
    """Tag the raykd status and close the run (diverged trials end FINISHED with status=diverged)."""
    tags = {STATUS: status}
    if error is not None:
        tags[ERROR] = (str(error).strip().splitlines() or [type(error).__name__])[0][:500]
    set_tags(client, run_id, tags)
    client.set_terminated(run_id, status="FAILED" if status == "failed" else "FINISHED")


class TrialLog:
    """What rank 0 of a trial logs to the trial's MLflow run (found or created by the trial driver)."""

    def __init__(self, tracking: Tracking, run_id: str) -> None:
        self.client, self.run_id = tracking.client(), run_id

    def start(self, context, trial, *, resumed_from: int | None, discarded: str | None) -> None:
        """Params (every config field flattened, the trial's arm and maps, versions) and resume tags."""

        log_params(self.client, self.run_id, {**flatten(context.config), **trial.params(), **context.versions})
        if discarded is not None:
            set_tags(self.client, self.run_id, {"raykd.checkpoint_discarded": discarded[:5000]})
        if trial.node is not None:  # where this attempt runs (a resumed one: also where its checkpoint was written)
            set_tags(self.client, self.run_id, {"raykd.node": trial.node})
        if resumed_from is not None:
            tags = {"raykd.resumed_from_step": str(resumed_from)}
            if trial.checkpoint_node is not None:
                tags["raykd.checkpoint_node"] = trial.checkpoint_node
            set_tags(self.client, self.run_id, tags)
        else:
            self.client.log_dict(
                self.run_id,
                {
                    "layer_maps": {str(e): m for e, m in trial.maps.items()},
                    "student": student_metadata(trial.student),
                    "trial": trial.spec.as_dict(),
                },
                "layer_map.json",
            )

    def params(self, params: Mapping[str, Any]) -> None:
        log_params(self.client, self.run_id, params)

    def step(self, step: int, terms: Mapping[str, float], lr: float, examples_per_s: float) -> None:
        log_metrics(
            self.client,
            self.run_id,
            {**{f"train/{k}": v for k, v in terms.items()}, "train/lr": lr, "train/examples_per_s": examples_per_s},
            step,
            _now_ms(),
        )

    def metrics(self, step: int, report: Mapping[str, Any]) -> None:
        """The numbers of a report (validation, test, best, timings)."""
        numbers = {
            k: v
            for k, v in report.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step")
        }
        log_metrics(self.client, self.run_id, numbers, step, _now_ms())


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
