"""Re-analysis of a plain results table: the claims, report and ``summary.json`` of any study, with no Ray and no
MLflow. The table has the columns of a study's ``results/trials.csv`` (``strategy``, ``init``, ``weight``,
``seed``, ``status``, ``metric``; ``best_validation`` optional), so results from other code, the paper's own
tables included, can be judged by the same rules:

    python studies/analyze.py --trials results.csv --metric accuracy --margin-points 2 --teacher 0.699 \
        --test-examples 1000 --output report/

When the table sits in a raykd study (``<study>/results/trials.csv``), every setting defaults to that study's:
its config's analysis section, its teacher's test metric and test set size, and its plan and earlier looks,
so the re-analysis reproduces the study's own verdict.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import yaml

from raykd.analysis import sequential
from raykd.analysis.report import build_summary, write_report
from raykd.analysis.stats import analyze_trials
from raykd.analysis.views import compact_verdict
from raykd.tasks.metrics import points_per_unit

REQUIRED = ("strategy", "init", "weight", "seed", "status", "metric")
STATUSES = ("finished", "diverged", "failed", "unfinished")


class TableError(ValueError):
    """The results table cannot be read: names the file, the row and what is allowed."""


def _number(value: str, column: str, line: int, path: Path, kind=float) -> Any:
    try:
        out = kind(float(value)) if kind is int else float(value)
    except ValueError:
        raise TableError(f"{path}, line {line}: column {column!r} must be a number, got {value!r}") from None
    if kind is int and float(value) != out:
        raise TableError(f"{path}, line {line}: column {column!r} must be an integer, got {value!r}")
    return out


def read_trials(path: str | Path) -> list[dict[str, Any]]:
    """The trial rows of a CSV table (one clear TableError for a missing column or a malformed value)."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"results table {str(path)!r} does not exist")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise TableError(
                f"{path} lacks column(s) {missing}; a results table needs {list(REQUIRED)} "
                f"(best_validation optional), has {reader.fieldnames}"
            )
        rows = []
        for line, raw in enumerate(reader, start=2):
            status = (raw["status"] or "").strip()
            if status not in STATUSES:
                raise TableError(f"{path}, line {line}: status must be one of {list(STATUSES)}, got {status!r}")
            metric = raw["metric"].strip()
            value = _number(metric, "metric", line, path) if metric else None
            if status == "finished" and (value is None or not math.isfinite(value)):
                raise TableError(f"{path}, line {line}: a finished trial needs a finite metric, got {metric!r}")
            best = (raw.get("best_validation") or "").strip()
            rows.append(
                {
                    "trial_id": raw.get("trial_id") or f"row{line}",
                    "strategy": raw["strategy"].strip(),
                    "init": raw["init"].strip(),
                    "weight": _number(raw["weight"], "weight", line, path),
                    "seed": _number(raw["seed"], "seed", line, path, int),
                    "status": status,
                    "metric": value,
                    "best_validation": _number(best, "best_validation", line, path) if best else None,
                }
            )
    if not rows:
        raise TableError(f"{path} has no rows")
    return rows


def study_defaults(table: Path) -> dict[str, Any]:
    """The settings of the raykd study that holds `table` (``<study>/results/trials.csv``), or {} when it is not
    in one: the analysis section, the metric, the teacher's test metric and test set size, the plan and looks."""
    root = table.resolve().parent.parent
    if not (root / "config.yaml").is_file() or not (root / "study.json").is_file():
        return {}
    config = yaml.safe_load((root / "config.yaml").read_text()) or {}
    analysis = config.get("analysis") or {}
    out: dict[str, Any] = {
        k: analysis[k]
        for k in ("margin_points", "alpha", "reference", "min_room_margins", "min_seeds")
        if k in analysis
    }
    out["study"] = config.get("name")
    looks = json.loads((root / "looks.json").read_text()) if (root / "looks.json").is_file() else {}
    out["plan"], out["history"] = looks.get("plan"), looks.get("looks") or []
    for teacher in sorted((root / "teacher").glob("*/info.json")):
        info = json.loads(teacher.read_text())
        metrics_file = teacher.parent / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        out["metric"] = info.get("metric")
        out["teacher"] = metrics.get(f"test/{info.get('metric')}")
        out["test_examples"] = (info.get("split_sizes") or {}).get("test")
    return out


def analyze_table(
    path: str | Path,
    output: str | Path | None = None,
    *,
    metric: str | None = None,
    higher_is_better: bool = True,
    quiet: bool = False,
    **settings: Any,
) -> dict[str, Any]:
    """The claims, ``summary.json``, ``report.md`` and figures of a results table (see the module docstring).

    `settings` (margin_points, alpha, reference, min_room_margins, min_seeds, teacher, test_examples, study)
    override the study's or the defaults. Writes to `output` (default ``<stem>_report/`` beside the table).
    """
    path = Path(path)
    trials = read_trials(path)
    s = {"margin_points": 1.0, "alpha": 0.05, "reference": "forward", "min_room_margins": 2.0, "min_seeds": 4}
    s.update({k: v for k, v in [*study_defaults(path).items(), *settings.items()] if v is not None})
    metric = metric or s.get("metric") or "accuracy"
    seeds = len({t["seed"] for t in trials if t["status"] == "finished"})
    plan = s.get("plan") or sequential.plan_of(None, seeds)
    look = sequential.look(plan, seeds, s["alpha"], s.get("history"))
    scale = points_per_unit(metric)
    stats = analyze_trials(
        trials,
        metric=metric,
        higher_is_better=higher_is_better,
        reference=s["reference"],
        margin=s["margin_points"] / scale,
        alpha=s["alpha"],
        teacher_metric=s.get("teacher"),
        min_room_margins=s["min_room_margins"],
        min_seeds=s["min_seeds"],
        test_examples=s.get("test_examples"),
        look=look,
    )
    teacher = {} if s.get("teacher") is None else {f"test/{metric}": s["teacher"]}
    summary = build_summary(
        study=s.get("study") or path.stem,
        metric=metric,
        higher_is_better=higher_is_better,
        teacher=teacher,
        trials=trials,
        stats=stats,
        angles=None,
        angle_notes=["angles: not measured (a results table holds no students)"],
        margin_points=s["margin_points"],
        setup={"source": str(path)},
    )
    summary["sequential"] = sequential.record_of(summary, look, s.get("history") or [], plan)
    folder = Path(output) if output else path.resolve().parent / f"{path.stem}_report"
    paths = write_report(summary, folder)
    if not quiet:
        print(compact_verdict(summary), flush=True)
        print(f"[raykd] report: {paths['report']}", flush=True)
    return {"summary": summary, "paths": {k: str(v) for k, v in paths.items()}}


def load_study(study_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """(trials as a pandas DataFrame, the summary as a dict) of a finished study folder, for your own plots:

        import raykd
        trials, summary = raykd.load_study("outputs/minilm6_to_3l_tweets")
        trials[trials.status == "finished"].groupby("strategy").metric.describe()
        [(c["name"], c["verdict"]) for c in summary["claims"]]

    The trials are ``results/trials.csv`` (one row per trial: arm, seed, status, test metric, best validation); the
    summary is ``report/summary.json`` (docs/outputs.md), or {} when the study has not been analysed.
    """
    import pandas as pd

    root = Path(study_dir)
    table = root / "results" / "trials.csv"
    if not table.is_file():
        raise TableError(f"{root} is not a study folder with results: {table} does not exist")
    summary_file = root / "report" / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    return pd.DataFrame(read_trials(table)), summary
