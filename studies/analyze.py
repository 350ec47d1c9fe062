"""Analyse a finished study: strategy tests, equivalence, matching vs none, angle statistics, report.

    python studies/analyze.py --study outputs/minilm6_to_3l_tweets
    python studies/analyze.py --study DIR --set analysis.margin_points=0.5 --set analysis.angles.examples=128
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
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an analysis setting, e.g. --set analysis.reference=reverse (repeatable)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the study's mlflow.db)")
    parser.add_argument("--no-mlflow-log", action="store_true", help="write the report files only")
    args = parser.parse_args(argv)
    bad = [s for s in args.set if not s.startswith("analysis.")]
    if bad:
        print(f"error: --set here changes analysis settings only (analysis.*), got {bad}", file=sys.stderr)
        return 2

    from raykd.analysis.actor import AnalysisError, analyze_study
    from raykd.tracking import TrackingError

    try:
        analyze_study(args.study, overrides=args.set, tracking_uri=args.tracking_uri,
                      log_to_mlflow=not args.no_mlflow_log)
    except (AnalysisError, TrackingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
