"""Run a layer-selection strategy study: Ray Tune over strategy x init x weight x seed, MLflow tracking.

    python studies/strategy_grid.py                                  # the embedded default study
    python studies/strategy_grid.py --config studies/configs/smoke.yaml --output-dir /tmp/raykd
    RAY_ADDRESS=head:6379 python studies/strategy_grid.py --config ...          # on a Ray cluster
    MLFLOW_TRACKING_URI=http://mlflow:5000 python studies/strategy_grid.py ...  # to a tracking server

Re-running the same command resumes the study; --fresh starts it over. Exit code 2: bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent / "configs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIGS / "default.yaml"), help="study YAML (default: %(default)s)")
    parser.add_argument(
        "--output-dir",
        default="outputs",
        help="studies live in OUTPUT_DIR/<name>, a (shared) POSIX path (default: %(default)s)",
    )
    parser.add_argument(
        "--storage",
        metavar="URI",
        help="Ray's storage and the trial checkpoints on storage pyarrow understands (s3://, gs://, "
        "file://...) instead of the study folder",
    )
    parser.add_argument("--name", help="study name (overrides the config's)")
    parser.add_argument("--dry-run", action="store_true", help="validate, print the grid and layer maps, do not train")
    parser.add_argument("--fresh", action="store_true", help="delete an existing study of this name and start over")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set sweep.seeds=[0,1] (repeatable)",
    )
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--quiet", action="store_true", help="one line per stage, then the verdict")
    shown.add_argument(
        "--verbose",
        action="store_true",
        help="also show Ray's, Tune's and MLflow's own output (by default it goes to a log file in the study folder)",
    )
    args = parser.parse_args(argv)

    from raykd.config import ConfigError
    from raykd.validate import load_study_config

    overrides = list(args.set) + ([f"name={args.name}"] if args.name else [])
    try:
        config = load_study_config(args.config, overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        from raykd.plan import dry_run

        print(dry_run(config))
        return 0

    from raykd.console import Console
    from raykd.study import mlflow_ui_command, run_study
    from raykd.sweep import ResourceError
    from raykd.tracking import TrackingError, tracking_lost

    console = Console("quiet" if args.quiet else "verbose" if args.verbose else "normal")
    try:
        summary = run_study(config, args.output_dir, fresh=args.fresh, console=console, storage=args.storage)
    except (ConfigError, TrackingError, ResourceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        lost = tracking_lost(error)
        if lost is None:
            raise
        print(f"error: {lost}", file=sys.stderr)
        return 3
    counts = summary["counts"]
    console.line(
        f"[raykd] done: {counts['finished']} finished, {counts['diverged']} diverged, {counts['failed']} failed"
    )
    console.line(f"[raykd] results: {summary['results']['md']}")
    if summary.get("report"):
        console.line(f"[raykd] report: {summary['report']['paths']['report']} (and report.html)")
    console.line(f"[raykd] compare in MLflow: {mlflow_ui_command(summary['tracking_uri'], summary['experiment_id'])}")
    console.line(
        "[raykd] (other ways into the experiment open MLflow's GenAI overview until the sidebar's workflow switch "
        "is set to model training once: the browser remembers it)"
    )
    return 0 if counts["finished"] else 1


if __name__ == "__main__":
    sys.exit(main())
