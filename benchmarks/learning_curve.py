"""Benchmark: what the learning curve (`distill.curve`) costs a default trial.

A default trial trains 250 steps and, with the default curve, evaluates 40 validation examples (spread over the
split) every 32 steps (7 points).
Here the default study's real trial (`benchmarks/steps.py`'s `Setup`, 1 torch thread as a
default worker has) runs whole (every step, then its full validation and test, as `raykd.train.worker` does) with
the default curve and without one, the two alternating in one process, ``--repeats`` times each; medians. The
target: at most 5% more time. Trial-to-trial noise here is a few percent, so the curve's own seconds are timed too
(``curve_cost``: their median over the median trial without a curve).

    python benchmarks/learning_curve.py --workdir /tmp/raykd-bench     # ~10 min; the teacher stage on first use
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from steps import Setup

ROOT = Path(__file__).resolve().parents[1]


def trial_seconds(s: Setup, curve: bool) -> tuple[float, list[float], float]:
    """Seconds of one whole trial (its steps with or without the curve, then validation and test), its points and
    the seconds its curve took."""
    run = s.trial(cached=True)
    every, points = run.curve_every, []

    spent = [0.0]

    def on_step(result) -> None:
        if curve and run.state.step % every == 0:
            began = time.perf_counter()
            points.append(run.curve()[run.metric])
            spent[0] += time.perf_counter() - began

    started = time.perf_counter()
    run.train(on_step=on_step)
    run.validate()
    run.test()
    return time.perf_counter() - started, points, spent[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "studies" / "configs" / "default.yaml"))
    parser.add_argument("--workdir", default="/tmp/raykd-bench")
    parser.add_argument("--steps", type=int, default=None, help="cap the trial's steps (default: all of them)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "learning_curve.json"))
    args = parser.parse_args()

    s = Setup(args.config, args.workdir, args.steps, threads=1)
    runs: dict[str, list[float]] = {"without": [], "with": []}
    points: list[float] = []
    curve_s: list[float] = []
    for _ in range(args.repeats):
        runs["without"].append(trial_seconds(s, False)[0])
        seconds, points, spent = trial_seconds(s, True)
        runs["with"].append(seconds)
        curve_s.append(spent)
    without, with_curve = statistics.median(runs["without"]), statistics.median(runs["with"])
    run = s.trial(cached=True)
    result = {
        "benchmark": "learning_curve",
        "config": str(Path(args.config).relative_to(ROOT)),
        "steps": run.steps,
        "curve_every": run.curve_every,
        "curve_examples": s.config.distill.curve.examples,
        "threads": 1,
        "seconds": runs,
        "median_without_s": round(without, 2),
        "median_with_s": round(with_curve, 2),
        "cost": round(with_curve / without - 1, 4),
        "curve_s": curve_s,  # the curve's own seconds in each run with it: its cost without the runs' noise
        "curve_cost": round(statistics.median(curve_s) / without, 4),
        "target": 0.05,
        "points": points,
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median_without_s", "median_with_s", "cost", "curve_cost", "target")}))


if __name__ == "__main__":
    main()
