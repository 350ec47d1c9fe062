"""The sweep: Ray Tune over strategy x init x hidden-loss weight x seed, one Ray Train run per trial.

Each trial is a Tune function trainable (the trial driver) that finds or creates the trial's MLflow
run and fits a `TorchTrainer` over `raykd.train.worker.train_trial` (Ray 2.60's supported pattern:
Tune cannot take a Train V2 trainer directly). Trial and Train run names are deterministic, under one
storage path, so a restored study finds every trial's checkpoints. Drivers hold no CPU (they sit on a
custom ``tune_driver`` resource when the cluster has one), so small machines do not deadlock.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raykd.config import StudyConfig

DRIVER_RESOURCE = "tune_driver"
TUNE_PREFIX = "tune-"  # trial ids of the Optuna weight-search phase
CELL_KEYS = ("strategy", "init")


def trial_id(strategy: str, init: str, weight: float, seed: int) -> str:
    return f"{strategy}-{init}-w{weight:g}-s{seed}"


def trial_grid(config: StudyConfig, chosen: dict[tuple[str, str], float | None] | None = None) -> list[dict[str, Any]]:
    """Every trial of the study. `none` has no hidden loss, so it runs once per (init, seed), weight 0.

    `chosen` (from the Optuna phase) replaces the weight grid by one tuned weight per (strategy, init)
    cell; a cell whose tuning found no weight (every tuning trial failed) is left out.
    """
    trials = []
    for strategy in config.sweep.strategies:
        for init in config.sweep.inits:
            if strategy == "none":
                weights = [0.0]
            elif chosen is not None:
                weights = [] if chosen.get((strategy, init)) is None else [chosen[(strategy, init)]]
            else:
                weights = config.sweep.weights
            for weight in weights:
                for seed in config.sweep.seeds:
                    trials.append({"trial_id": trial_id(strategy, init, weight, seed), "strategy": strategy,
                                   "init": init, "weight": weight, "seed": seed})
    return trials


@dataclass(frozen=True)
class Resources:
    """Per trial: Train workers and what each holds; per study: how many trials run at once."""

    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    max_concurrent: int
    driver: dict[str, float]

    def describe(self) -> str:
        gpu = f", {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else ""
        return (f"{self.num_workers} worker(s) x ({self.cpus_per_worker:g} CPU{gpu}) per trial, "
                f"{self.max_concurrent} trial(s) at once")


def plan_resources(config: StudyConfig, cluster: dict[str, float], n_trials: int) -> Resources:
    """Trial concurrency from the cluster's totals, or `compute.max_concurrent_trials` when set.

    An explicit cap is trusted as is: an autoscaling cluster (KubeRay with workers from 0) shows only
    the nodes that are up now, and Tune queues trials until the autoscaler adds the rest.
    """
    compute = config.compute
    per_trial_cpu = compute.num_workers * compute.cpus_per_worker
    fits = int(cluster.get("CPU", 1) // per_trial_cpu) if per_trial_cpu else n_trials
    if compute.gpus_per_worker:
        fits = min(fits, int(cluster.get("GPU", 0) // (compute.num_workers * compute.gpus_per_worker)))
    driver = {"CPU": 0, DRIVER_RESOURCE: 1} if cluster.get(DRIVER_RESOURCE, 0) >= 1 else {"CPU": 0.01}
    if compute.max_concurrent_trials:
        return Resources(compute.num_workers, compute.cpus_per_worker, compute.gpus_per_worker,
                         max(1, min(compute.max_concurrent_trials, n_trials)), driver)
    if fits < 1:
        raise ValueError(f"one trial needs {per_trial_cpu:g} CPU and {compute.num_workers * compute.gpus_per_worker:g} GPU; "
                         f"the cluster has {cluster.get('CPU', 0):g} CPU and {cluster.get('GPU', 0):g} GPU")
    concurrent = max(1, min(fits, n_trials))
    return Resources(compute.num_workers, compute.cpus_per_worker, compute.gpus_per_worker, concurrent, driver)


def run_trial(params: dict[str, Any]) -> None:
    """Tune function trainable: one trial = one Ray Train run, tracked in one MLflow run."""
    import ray.train
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.train.torch import TorchTrainer

    from raykd import tracking as tr
    from raykd.train.worker import train_trial

    study, trial = params["study"], params["trial"]
    config = StudyConfig.model_validate(study["config"])
    compute = config.compute
    tracking = tr.Tracking(**study["tracking"]) if study.get("tracking") else None
    run_id = None
    if tracking is not None:
        ended = tr.ended_result(tracking, trial["trial_id"])
        if ended is not None:  # ended in an earlier run of the study: report it, do not train again
            from ray import tune

            tune.report(ended)
            return
        run_id = tr.child_run(tracking, role="trial", key=trial["trial_id"], run_name=trial["trial_id"],
                              tags={"raykd.strategy": trial["strategy"], "raykd.init": trial["init"],
                                    "raykd.weight": f"{trial['weight']:g}", "raykd.seed": str(trial["seed"])})
    resources = {"CPU": compute.cpus_per_worker}
    if compute.gpus_per_worker:
        resources["GPU"] = compute.gpus_per_worker
    trainer = TorchTrainer(
        train_trial,
        train_loop_config={**study, "trial": trial, "run_id": run_id},
        scaling_config=ray.train.ScalingConfig(num_workers=compute.num_workers, use_gpu=bool(compute.gpus_per_worker),
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=trial["trial_id"],
            storage_path=study["train_storage"],
            failure_config=ray.train.FailureConfig(max_failures=compute.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()],
        ),
    )
    try:
        result = trainer.fit()
    except Exception:
        if tracking is not None:
            tr.finish(tracking.client(), run_id, "failed")
        raise
    if tracking is not None:
        status = result.metrics.get("status", "failed") if result.metrics else "failed"
        tr.finish(tracking.client(), run_id, status)


class Progress:
    """A compact live view: one line per finished trial with counts, the best per cell, and an ETA."""

    def __init__(self, n_trials: int, metric: str, higher: bool, already_done: int = 0) -> None:
        from ray.tune import Callback

        outer = self

        class _Callback(Callback):
            def on_trial_start(self, iteration, trials, trial, **info):
                outer.running.add(trial.trial_id)

            def on_trial_complete(self, iteration, trials, trial, **info):
                outer.done(trial, failed=False)

            def on_trial_error(self, iteration, trials, trial, **info):
                outer.done(trial, failed=True)

        self.callback = _Callback()
        self.n, self.metric, self.higher = n_trials, metric, higher
        self.finished, self.failed, self.running = already_done, 0, set()  # earlier runs' trials count as done
        self.best: dict[tuple, float] = {}
        self.started = time.time()
        self.timed = 0

    def done(self, trial, *, failed: bool) -> None:
        self.running.discard(trial.trial_id)
        spec = trial.config["trial"]
        result = trial.last_result or {}
        value = result.get(f"test/{self.metric}")
        status = "failed" if failed else result.get("status", "failed")
        if failed or status != "finished":
            self.failed += 1
        else:
            self.finished += 1
            self.timed += 1
            cell = (spec["strategy"], spec["init"])
            if value is not None and (cell not in self.best or (value > self.best[cell]) == self.higher):
                self.best[cell] = value
        total_done = self.finished + self.failed
        per_trial = (time.time() - self.started) / max(self.timed, 1)
        eta = per_trial * (self.n - total_done)
        shown = "-" if value is None else f"{value:.4g}"
        print(f"[{total_done}/{self.n} done, {len(self.running)} running, {self.failed} failed/diverged, "
              f"ETA {eta / 60:.1f} min] {spec['trial_id']}: {status}, test {self.metric} {shown}", flush=True)
        if total_done % 5 == 0 and total_done < self.n:
            print(f"    {self.summary()}", flush=True)

    def summary(self) -> str:
        cells = ", ".join(f"{s}/{i} {v:.4g}" for (s, i), v in sorted(self.best.items()))
        return f"best test {self.metric} per cell: {cells}" if cells else "no finished trial"


def results_table(grid, metric: str) -> list[dict[str, Any]]:
    """One row per trial from a Tune ResultGrid: the trial spec, status, test and validation metric."""
    rows = []
    for result in grid:
        spec = result.config["trial"]
        metrics = result.metrics or {}
        status = "failed" if result.error is not None else metrics.get("status", "failed")
        rows.append({**{k: spec[k] for k in ("trial_id", "strategy", "init", "weight", "seed")},
                     "status": status,
                     "metric": metrics.get(f"test/{metric}") if status == "finished" else None,
                     "best_validation": metrics.get("best_validation"),
                     "steps": metrics.get("step"),
                     "error": (str(result.error).splitlines()[0][:300] if result.error is not None else None)})
    return sorted(rows, key=lambda r: (r["strategy"], r["init"], r["weight"], r["seed"]))


def chosen_weights(rows: list[dict[str, Any]], cells, higher: bool = True) -> dict[tuple[str, str], float | None]:
    """Per cell, the weight of the tuning trial with the best validation metric."""
    out: dict[tuple[str, str], float | None] = {}
    for cell in cells:
        done = [r for r in rows if (r["strategy"], r["init"]) == tuple(cell) and r["status"] == "finished"
                and r["best_validation"] is not None]
        best = (max if higher else min)(done, key=lambda r: r["best_validation"]) if done else None
        out[tuple(cell)] = None if best is None else best["weight"]
    return out


def write_results(rows: list[dict[str, Any]], folder: Path, metric: str) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "trials.json", "csv": folder / "trials.csv", "md": folder / "trials.md"}
    paths["json"].write_text(json.dumps({"metric": metric, "trials": rows}, indent=2))
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial_id"])
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"| strategy | init | weight | seed | status | test {metric} | best validation |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        value = "" if r["metric"] is None else f"{r['metric']:.4f}"
        best = "" if r["best_validation"] is None else f"{r['best_validation']:.4f}"
        lines.append(f"| {r['strategy']} | {r['init']} | {r['weight']:g} | {r['seed']} | {r['status']} | {value} | {best} |")
    paths["md"].write_text("\n".join(lines) + "\n")
    return paths


def estimate(config: StudyConfig, n_trials: int, train_examples: int | None) -> str:
    """Work estimate for --dry-run: optimisation steps per trial and in all."""
    if train_examples is None:
        return f"{n_trials} trials; steps per trial known once the data is loaded"
    batches = math.ceil(train_examples / config.distill.train.batch_size)
    steps = min(math.ceil(config.distill.train.epochs * batches), config.distill.train.max_steps or 10**12)
    return f"{n_trials} trials x {steps} steps = {n_trials * steps} student steps (+ teacher stage)"
