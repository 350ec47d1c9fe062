"""The sweep: Ray Tune over strategy x init x hidden-loss weight x seed, one trial per Tune trial.

Each trial is a Tune function trainable (`run_trial`, the trial driver) that finds or creates the trial's
MLflow run and fits a `TorchTrainer` over `raykd.train.worker.train_trial`:

- one worker (the default, and small trials packed on a GPU): Ray Train's local mode
  (``ScalingConfig(num_workers=0)``) runs the trial inside the Tune actor, which holds the trial's CPUs
  and GPU share; Tune reuses actors across trials (``reuse_actors=True``), so imports, the teacher's
  outputs and data are loaded once per actor, not once per trial;
- several workers (DDP): a worker group of that size; the driver itself holds no CPU (a custom
  ``tune_driver`` resource), so small clusters do not deadlock.

Trials checkpoint into their own `CheckpointStore`, and MLflow is the record of which trials ended: a
study run again (resumed, or grown to more seeds, strategies or inits) fits only the trials that have not
ended, each from its last checkpoint.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raykd.config import StudyConfig
from raykd.storage import delete_dir, join
from raykd.trial import StudyContext, TrialSpec, steps_per_trial

DRIVER_RESOURCE = "tune_driver"
CELL_KEYS = ("strategy", "init")


class ResourceError(ValueError):
    """A trial asks for more than any node of the cluster has: it could never be scheduled."""


@dataclass(frozen=True)
class Resources:
    """Per trial: Train workers and what each holds; per study: how many trials run at once."""

    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    max_concurrent: int
    driver: dict[str, float]
    isolate: bool = False

    @property
    def local(self) -> bool:
        """One worker: the trial runs inside its Tune actor (Ray Train local mode), unless trials are isolated."""
        return self.num_workers == 1 and not self.isolate

    @property
    def trial(self) -> dict[str, float]:
        """What the Tune actor of one trial holds."""
        if not self.local:
            return self.driver
        return {"CPU": self.cpus_per_worker, **({"GPU": self.gpus_per_worker} if self.gpus_per_worker else {})}

    def describe(self) -> str:
        gpu = f", {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else ""
        how = "in-process (local mode, reused actors)" if self.local else "a Ray Train worker group each"
        return (
            f"{self.num_workers} worker(s) x ({self.cpus_per_worker:g} CPU{gpu}) per trial, {how}, "
            f"{self.max_concurrent} trial(s) at once"
        )


def plan_resources(
    config: StudyConfig, cluster: dict[str, float], n_trials: int, nodes: list[dict[str, float]] | None = None
) -> Resources:
    """Trial concurrency from the cluster (or `compute.max_concurrent_trials` when set).

    A worker must fit on one node: a request no node can hold would wait forever, so it fails here,
    saying what was asked and what the nodes have. An explicit cap is trusted as is: an autoscaling
    cluster (KubeRay with workers from 0) shows only the nodes that are up now.
    """
    compute = config.compute
    nodes = nodes if nodes is not None else [cluster]
    per_worker = {
        "CPU": compute.cpus_per_worker,
        **({"GPU": compute.gpus_per_worker} if compute.gpus_per_worker else {}),
    }
    fits_per_node = [min(int(node.get(k, 0) // v) for k, v in per_worker.items()) for node in nodes]
    driver = {"CPU": 0, DRIVER_RESOURCE: 1} if cluster.get(DRIVER_RESOURCE, 0) >= 1 else {"CPU": 0.01}
    if compute.max_concurrent_trials:
        return Resources(
            compute.num_workers,
            compute.cpus_per_worker,
            compute.gpus_per_worker,
            max(1, min(compute.max_concurrent_trials, n_trials)),
            driver,
            compute.isolate_trials,
        )
    workers = sum(fits_per_node)
    if max(fits_per_node, default=0) < 1 or workers < compute.num_workers:
        have = "; ".join(
            f"node {i}: {node.get('CPU', 0):g} CPU, {node.get('GPU', 0):g} GPU" for i, node in enumerate(nodes)
        )
        raise ResourceError(
            f"a trial needs {compute.num_workers} worker(s) of {compute.cpus_per_worker:g} CPU"
            f"{f' and {compute.gpus_per_worker:g} GPU' if compute.gpus_per_worker else ''} each, "
            f"each on one node; the cluster has {have} (set compute.cpus_per_worker / "
            "gpus_per_worker / num_workers to fit, or compute.max_concurrent_trials on an "
            "autoscaling cluster)"
        )
    concurrent = max(1, min(workers // compute.num_workers, n_trials))
    return Resources(
        compute.num_workers,
        compute.cpus_per_worker,
        compute.gpus_per_worker,
        concurrent,
        driver,
        compute.isolate_trials,
    )


def _trainer(spec: TrialSpec, context: StudyContext, resources: Resources, loop_config: dict[str, Any]):
    """The trial's `TorchTrainer`: Ray Train's local mode in this process for one worker, else a worker group
    (DDP) reporting to Tune through `TuneReportCallback`."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from raykd.train.worker import train_trial

    if resources.local:
        return TorchTrainer(
            train_trial, train_loop_config=loop_config, scaling_config=ray.train.ScalingConfig(num_workers=0)
        )
    from ray.tune.integration.ray_train import TuneReportCallback

    compute = context.config.compute
    per_worker = {
        "CPU": compute.cpus_per_worker,
        **({"GPU": compute.gpus_per_worker} if compute.gpus_per_worker else {}),
    }
    return TorchTrainer(
        train_trial,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=compute.num_workers, use_gpu=bool(compute.gpus_per_worker), resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            name=spec.trial_id,
            storage_path=join(context.ray_storage or Path(context.study_dir) / "ray", "train"),
            failure_config=ray.train.FailureConfig(max_failures=compute.max_failures),
            callbacks=[TuneReportCallback()],
        ),
    )


def run_trial(params: dict[str, Any], context: StudyContext, resources: Resources) -> None:
    """Tune function trainable: one trial = one Ray Train run (local mode or a worker group), one MLflow run."""
    from ray import tune

    from raykd import tracking as tr
    from raykd.devices import release_freed_memory

    spec = TrialSpec(**params["trial"])
    tracking, run_id = context.tracking, None
    if tracking is not None:
        ended = tr.ended_result(tracking, spec.trial_id)
        if ended is not None:  # ended in an earlier run of the study: report it, do not train again
            tune.report(ended)
            return
        run_id = tr.child_run(
            tracking,
            role="trial",
            key=spec.trial_id,
            run_name=spec.trial_id,
            tags=spec.tags(),
        )
    loop_config = {"context": context, "trial": spec.as_dict(), "run_id": run_id, "local": resources.local}
    trainer = _trainer(spec, context, resources, loop_config)
    try:
        result = trainer.fit()
    except Exception as error:
        if tracking is not None:
            tr.finish(tracking.client(), run_id, "failed", error=error)
        raise
    finally:
        release_freed_memory()  # the reused actor starts the next trial from the same footprint
    final = result.return_value  # rank 0's final report (Ray Train's `metrics` are only those of Ray checkpoints)
    if tracking is not None:
        tr.finish(tracking.client(), run_id, (final or {}).get("status", "failed"))


def fit(
    storage: Path | str,
    name: str,
    config: StudyConfig,
    context: StudyContext,
    resources: Resources,
    callbacks: list,
    *,
    trials: list[TrialSpec] | None = None,
    search_alg=None,
    num_samples: int = 1,
    restore: bool = False,
):
    """One Tune run of trial drivers over `trials` (or what `search_alg` suggests).

    A grid run starts afresh each time (its trials resume from their own checkpoints); `restore` continues
    an interrupted searcher-driven run (the Optuna phase, whose state lives in Tune's experiment).
    """
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, context=context, resources=resources), resources.trial
    )
    path = join(storage, name)
    if restore and tune.Tuner.can_restore(path):
        return tune.Tuner.restore(path, trainable=trainable, resume_errored=True).fit()
    delete_dir(path)
    compute = config.compute
    retries = compute.trial_retries + (compute.max_failures if resources.local else 0)
    param_space = {"trial": tune.grid_search([t.as_dict() for t in trials])} if trials is not None else {}
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            max_concurrent_trials=resources.max_concurrent,
            search_alg=search_alg,
            num_samples=num_samples,
            reuse_actors=resources.local,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(storage),
            verbose=0,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=retries),
        ),
    ).fit()


def _trial_name(trial) -> str:
    return trial.config["trial"]["trial_id"]


def results_table(
    runs: dict[str, Any], grid: list[TrialSpec], metric: str, errors: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """One row per grid trial from its MLflow run (``runs``: trial id -> run): status, test and validation metric."""
    from raykd import tracking as tr

    errors = errors or {}
    rows = []
    for spec in grid:
        row = {"trial_id": spec.trial_id, **spec.arm(), **tr.run_outcome(runs.get(spec.trial_id), metric)}
        row["status"] = row["status"] or ("failed" if spec.trial_id in errors else "unfinished")
        row["error"] = errors.get(spec.trial_id) or row["error"]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["strategy"], r["init"], r["weight"], r["seed"]))


def chosen_weights(
    rows: list[dict[str, Any]], cells, *, higher_is_better: bool = True
) -> dict[tuple[str, str], float | None]:
    """Per cell, the weight of the tuning trial with the best validation metric."""
    out: dict[tuple[str, str], float | None] = {}
    for cell in cells:
        done = [
            r
            for r in rows
            if (r["strategy"], r["init"]) == tuple(cell)
            and r["status"] == "finished"
            and r["best_validation"] is not None
        ]
        best = (max if higher_is_better else min)(done, key=lambda r: r["best_validation"]) if done else None
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
    lines = [
        f"| strategy | init | weight | seed | status | test {metric} | best validation |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        value = "" if r["metric"] is None else f"{r['metric']:.4f}"
        best = "" if r["best_validation"] is None else f"{r['best_validation']:.4f}"
        lines.append(
            f"| {r['strategy']} | {r['init']} | {r['weight']:g} | {r['seed']} | {r['status']} | {value} | {best} |"
        )
    paths["md"].write_text("\n".join(lines) + "\n")
    return paths


def estimate(config: StudyConfig, n_trials: int, train_examples: int | None) -> str:
    """Work estimate for --dry-run: optimisation steps per trial and in all."""
    if train_examples is None:
        return f"{n_trials} trials; steps per trial known once the data is loaded"
    steps = steps_per_trial(config, train_examples)
    return f"{n_trials} trials x {steps} steps = {n_trials * steps} student steps (+ teacher stage)"
