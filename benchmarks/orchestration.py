"""Benchmarks 4 and 6: orchestration overhead per trial, and study wall time vs number of trials.

Runs the smoke study (tiny from-config BERT on real tweets) as a child process, fresh, with one
strategy and N seeds (= N trials) for each N in ``--trials``, and reads the MLflow store it wrote. Each
study runs twice in the same benchmark: trials in-process in reused Tune actors (Ray Train local mode, the
default) and ``compute.isolate_trials=true`` (a Ray Train worker group per trial: the baseline).

- overhead per trial, two ways:
  - *run*: the trial's MLflow run duration (the trial driver opens it when Tune starts the trial and closes
    it when its `TorchTrainer` returns) minus ``time.worker_s`` (from entering the training function to
    its final report): controller, worker processes, backend setup, teardown, MLflow calls; median over trials;
  - *sweep*: (sweep wall x concurrency - sum of ``time.worker_s``) / trials: everything a trial costs beyond its
    training function, actor start-up and imports included, averaged over the study.
- scaling: the sweep's wall time against N (least-squares line; a per-trial cost that grows with N
  shows as a later trial costing more than an earlier one), and the teacher stage's share of the total.
"""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procmem import run_sampled

ROOT = Path(__file__).resolve().parent.parent


def study(n: int, output_dir: Path, steps: int, isolate: bool = False) -> dict:
    seeds = "[" + ",".join(str(i) for i in range(n)) + "]"
    cmd = [
        sys.executable,
        str(ROOT / "studies" / "strategy_grid.py"),
        "--config",
        str(ROOT / "studies" / "configs" / "smoke.yaml"),
        "--output-dir",
        str(output_dir),
        "--fresh",
        "--set",
        "sweep.strategies=[forward]",
        "--set",
        "sweep.inits=[random]",
        "--set",
        f"sweep.seeds={seeds}",
        "--set",
        "analysis.enabled=false",
        "--set",
        f"distill.train.max_steps={steps}",
        "--set",
        f"compute.isolate_trials={str(isolate).lower()}",
    ]
    run = run_sampled(cmd, echo=False)
    if run.returncode != 0:
        tail = "\n".join(line for _, line in run.lines[-30:])
        raise RuntimeError(f"study with {n} trials failed ({run.returncode}):\n{tail}")
    stamp = {}
    for seconds, line in run.lines:
        for key, pattern in (
            ("teacher_done", r"^\[raykd\] teacher: "),
            ("sweep_start", r"^\[raykd\] sweep: "),
            ("sweep_done", r"^\[raykd\] mean test"),
        ):
            if re.match(pattern, line) and key not in stamp:
                stamp[key] = seconds
    text = "\n".join(t for _, t in run.lines)
    teacher_s = float(re.search(r"\[raykd\] teacher: .*?\((\d+) s with its cache", text).group(1))
    concurrency = int(re.search(r"(\d+) trial\(s\) at once", text).group(1))
    trials = trial_times(output_dir / "smoke" / "mlflow.db")
    sweep_s = stamp["sweep_done"] - stamp["sweep_start"]
    worker_total = sum(t["worker_s"] for t in trials if t["worker_s"] is not None)
    return {
        "trials": n,
        "isolated": isolate,
        "wall_s": round(run.seconds, 1),
        "sweep_s": round(sweep_s, 1),
        "concurrency": concurrency,
        "teacher_stage_s": teacher_s,
        "teacher_share": round(teacher_s / run.seconds, 3),
        "sweep_overhead_per_trial_s": round((sweep_s * min(concurrency, n) - worker_total) / n, 2),
        "per_trial": trials,
        "peak_pss_gb": round(run.peak_pss_bytes / 1e9, 2),
    }


def trial_times(db: Path) -> list[dict]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("smoke")
    rows = []
    for run in client.search_runs([experiment.experiment_id], filter_string="tags.`raykd.role` = 'trial'"):
        wall = (run.info.end_time - run.info.start_time) / 1000
        worker = run.data.metrics.get("time.worker_s")
        rows.append(
            {
                "trial": run.info.run_name,
                "start": run.info.start_time / 1000,
                "wall_s": round(wall, 2),
                "worker_s": None if worker is None else round(worker, 2),
                "overhead_s": None if worker is None else round(wall - worker, 2),
            }
        )
    return sorted(rows, key=lambda r: r["start"])


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def overhead(studies: list[dict], target: float) -> dict:
    runs = [t["overhead_s"] for s in studies for t in s["per_trial"] if t["overhead_s"] is not None]
    sweep = [s["sweep_overhead_per_trial_s"] for s in studies]
    return {
        "run_median_s": round(statistics.median(runs), 2),
        "run_min_s": min(runs),
        "run_max_s": max(runs),
        "trials": len(runs),
        "sweep_per_trial_s": sweep,
        "sweep_median_s": round(statistics.median(sweep), 2),
        "median_worker_s": round(statistics.median(t["worker_s"] for s in studies for t in s["per_trial"]), 2),
        "target_s": target,
        "met": statistics.median(runs) <= target and statistics.median(sweep) <= target,
    }


def run(*, trials: list[int], output_dir: str, steps: int, baseline_trials: int = 4) -> dict:
    baseline = [study(baseline_trials, Path(output_dir) / f"isolated-n{baseline_trials}", steps, isolate=True)]
    studies = [study(n, Path(output_dir) / f"n{n}", steps) for n in trials]
    largest = max(studies, key=lambda s: s["trials"])
    half = len(largest["per_trial"]) // 2
    early = [t["wall_s"] for t in largest["per_trial"][:half]]
    late = [t["wall_s"] for t in largest["per_trial"][half:]]
    slope, intercept = fit_line([s["trials"] for s in studies], [s["sweep_s"] for s in studies])
    predicted = [intercept + slope * s["trials"] for s in studies]
    worst = max(abs(p - s["sweep_s"]) / s["sweep_s"] for p, s in zip(predicted, studies))
    return {
        "overhead": overhead(studies, 1.0),
        "baseline_isolated": overhead(baseline, 1.0),
        "scaling": {
            "sweep_s_per_trial": round(slope, 2),
            "sweep_intercept_s": round(intercept, 1),
            "worst_relative_deviation_from_line": round(worst, 3),
            "largest_study_early_vs_late_trial_wall_s": [
                round(statistics.median(early), 2),
                round(statistics.median(late), 2),
            ],
            "teacher_share": {s["trials"]: s["teacher_share"] for s in studies},
        },
        "studies": studies + baseline,
    }
