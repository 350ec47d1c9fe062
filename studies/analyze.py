"""Analyse a finished study: strategy tests, equivalence, matching vs none, angle statistics, report.

    python studies/analyze.py --study outputs/minilm6_to_3l_tweets
    python studies/analyze.py --study DIR --set analysis.margin_points=0.5 --set analysis.angles.examples=128
    python studies/analyze.py --study DIR --plan        # what the design could decide, and seeds per question
    python studies/analyze.py --trials results.csv --metric accuracy --margin-points 2 --teacher 0.699 \
        --test-examples 1000                            # any results table: no Ray, no MLflow
    MLFLOW_TRACKING_URI=http://mlflow:5000 python studies/analyze.py --study DIR   # remote tracking

Writes DIR/report/{summary.json,report.md,*.png}, logs them to the study's parent MLflow run and
prints the verdict. With --trials: the same report from a plain table (columns strategy, init, weight, seed,
status, metric), written beside it (<table>_report/); a table inside a study folder takes that study's settings,
so it reproduces the study's verdict. Exit code 2: bad input (no such study or table, nothing to analyse).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--study", help="the study folder (<output dir>/<study name>)")
    source.add_argument("--trials", help="a results table (CSV with the columns of a study's results/trials.csv)")
    table = parser.add_argument_group("with --trials (default: the study's settings when the table is in one)")
    table.add_argument("--metric", help="the metric's name (accuracy, sacrebleu, ...): sets its points per unit")
    table.add_argument("--lower-is-better", action="store_true", help="a smaller metric is better")
    table.add_argument("--margin-points", type=float, help="equivalence margin in metric points")
    table.add_argument("--alpha", type=float, help="level of the claims (default 0.05)")
    table.add_argument("--reference", help="the strategy each other is compared with (default forward)")
    table.add_argument("--teacher", type=float, help="the teacher's test metric (metric units): the room gate")
    table.add_argument("--test-examples", type=int, help="test set size: the teacher's sampling error, tie floor")
    table.add_argument("--min-room-margins", type=float, help="room a below-the-margin claim needs (margins)")
    table.add_argument("--min-seeds", type=int, help="fewest paired seeds a claim is decided on (default 4)")
    table.add_argument("--output", help="report folder (default: <table stem>_report beside the table)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an analysis setting, e.g. --set analysis.reference=reverse (repeatable)",
    )
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the study's mlflow.db)"
    )
    parser.add_argument("--no-mlflow-log", action="store_true", help="write the report files only")
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print the power plan only: per question, what this design could decide and how many "
        "seeds would decide it (from the saved report when there is one, else analyses first)",
    )
    args = parser.parse_args(argv)
    bad = [s for s in args.set if not s.startswith("analysis.")]
    if bad:
        print(f"error: --set here changes analysis settings only (analysis.*), got {bad}", file=sys.stderr)
        return 2

    if args.trials:
        return _table(args)
    from raykd.analysis.pipeline import AnalysisError, analyze_study
    from raykd.tracking import TrackingError

    try:
        if args.plan:
            print(plan(args.study, args.set, args.tracking_uri))
            return 0
        analyze_study(
            args.study, overrides=args.set, tracking_uri=args.tracking_uri, log_to_mlflow=not args.no_mlflow_log
        )
    except (AnalysisError, TrackingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _table(args: argparse.Namespace) -> int:
    """--trials: the claims and report of a plain results table (no Ray, no MLflow)."""
    from raykd.analysis.table import TableError, analyze_table

    bad = [name for name in ("margin_points", "alpha", "teacher") if (v := getattr(args, name)) is not None and v <= 0]
    if args.alpha is not None and not 0 < args.alpha < 0.5:
        bad.append("alpha (0 < alpha < 0.5)")
    if bad:
        print(f"error: {', '.join(bad)} must be positive", file=sys.stderr)
        return 2
    try:
        analyze_table(
            args.trials,
            args.output,
            metric=args.metric,
            higher_is_better=not args.lower_is_better,
            margin_points=args.margin_points,
            alpha=args.alpha,
            reference=args.reference,
            teacher=args.teacher,
            test_examples=args.test_examples,
            min_room_margins=args.min_room_margins,
            min_seeds=args.min_seeds,
        )
    except TableError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def plan(study: str, overrides: list[str], tracking_uri: str | None) -> str:
    """The plan lines of a study: from its summary.json when no setting changes, else from a fresh analysis."""
    import json
    from pathlib import Path

    from raykd.analysis.views import plan_lines

    saved = Path(study) / "report" / "summary.json"
    if saved.is_file() and not overrides:
        summary = json.loads(saved.read_text())
    else:
        from raykd.analysis.pipeline import analyze_study

        summary = analyze_study(
            study,
            overrides=overrides + ["analysis.angles.enabled=false"],
            tracking_uri=tracking_uri,
            log_to_mlflow=False,
            quiet=True,
            write=False,
        )["summary"]
    head = (
        f"== plan: {summary['study']} (alpha {summary['alpha']:g}, margin +-"
        f"{summary['equivalence']['margin_points']:g} points, 80% power) =="
    )
    return "\n".join([head, *plan_lines(summary, summary["points_per_unit"])])


if __name__ == "__main__":
    sys.exit(main())
