"""Analyse a finished study: strategy tests, equivalence, matching vs none, angle statistics, report.

    python studies/analyze.py --study outputs/minilm6_to_3l_tweets
    python studies/analyze.py --study DIR --set analysis.margin_points=0.5 --set analysis.angles.examples=128
    python studies/analyze.py --study DIR --plan        # what the design could decide, and seeds per question
    MLFLOW_TRACKING_URI=http://mlflow:5000 python studies/analyze.py --study DIR   # remote tracking

Writes DIR/report/{summary.json,report.md,*.png}, logs them to the study's parent MLflow run and
prints the verdict. Exit code 2: bad input (no such study, nothing finished to analyse).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="the study folder (<output dir>/<study name>)")
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

    from raykd.analysis.actor import AnalysisError, analyze_study
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


def plan(study: str, overrides: list[str], tracking_uri: str | None) -> str:
    """The plan lines of a study: from its summary.json when no setting changes, else from a fresh analysis."""
    import json
    from pathlib import Path

    from raykd.analysis.power import plan_lines

    saved = Path(study) / "report" / "summary.json"
    if saved.is_file() and not overrides:
        summary = json.loads(saved.read_text())
    else:
        from raykd.analysis.actor import analyze_study

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
