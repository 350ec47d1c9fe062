"""The Ray side of a trial: a thin wrapper around `raykd.train.run.TrialRun`.

`train_trial` is a Ray Train training function. A single-worker trial runs it through Ray Train's local
mode (``ScalingConfig(num_workers=0)``) inside its reused Tune actor, reporting with ``ray.tune.report``;
a multi-worker (DDP) trial runs it on every rank of a worker group, reporting with ``ray.train.report``.
All it adds to the trial: the Ray context (rank, world, device, DDP wrapping), reports at each
evaluation, checkpoints handed to the trial's `CheckpointStore`, MLflow logging on rank 0, and the step hook
of `raykd.hooks` when one is injected.
"""

from __future__ import annotations

import time
from typing import Any

import ray
import torch

from raykd import hooks as injected
from raykd.console import trial_progress
from raykd.devices import default_device, release_freed_memory, use_assigned_cpus
from raykd.tracking import TrialLog
from raykd.train.checkpoint import CheckpointStore
from raykd.train.loop import LoopState, StepResult
from raykd.train.run import TrialRun, teacher_artifacts
from raykd.trial import StudyContext, TrialSpec


class LocalSession:
    """One process, one rank: a trial run by Ray Train's local mode inside a Tune trial."""

    rank, world = 0, 1

    def __init__(self) -> None:
        self.device = default_device()

    def report(self, metrics: dict[str, Any]) -> None:
        from ray import tune

        tune.report(metrics)

    def barrier(self) -> None:
        pass

    wrap = None


class DistributedSession:
    """One rank of a Ray Train worker group (DDP over torch.distributed)."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = str(ray.train.torch.get_device())

    def report(self, metrics: dict[str, Any]) -> None:
        import ray.train

        ray.train.report(metrics)

    def barrier(self) -> None:
        torch.distributed.barrier()

    def wrap(self, student):
        import ray.train.torch

        return ray.train.torch.prepare_model(student, parallel_strategy_kwargs={"find_unused_parameters": True})


def train_trial(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Run one trial to its end (from its last checkpoint, if any); returns the final report."""
    entered = time.perf_counter()
    context: StudyContext = loop_config["context"]
    spec = TrialSpec(**loop_config["trial"])
    session = LocalSession() if loop_config.get("local") else DistributedSession()
    use_assigned_cpus(context.config.compute.cpus_per_worker)
    trial = TrialRun(
        context, spec, teacher_artifacts(context, session.device), rank=session.rank, world=session.world
    ).setup(wrap=session.wrap)
    trial.node = ray.get_runtime_context().get_node_id()
    hooks = TrialHooks(trial, session, CheckpointStore(context.checkpoints, spec.trial_id), loop_config.get("run_id"))
    setup_s = time.perf_counter() - entered
    status = trial.train(on_step=hooks.on_step, on_eval=hooks.on_eval)
    final: dict[str, Any] = {"status": status, "final": True}
    if status == "finished":
        final.update({f"validation/{k}": v for k, v in trial.validate().items()})
        final.update({f"test/{k}": v for k, v in trial.test().items()})
    hooks.checkpoint(final=True)
    if session.world > 1:
        ranks = ranks_report(trial)
        if hooks.log is not None:
            hooks.log.params({"ddp.ranks": ranks})
    final.update(
        {
            "steps": trial.state.step,
            "time/worker_s": time.perf_counter() - entered,
            "time/setup_s": setup_s,
            "teacher_source": trial.teacher_source,
        }
    )
    return hooks.report(final)


class TrialHooks:
    """What the Ray side adds to a trial: resume from the last checkpoint, MLflow logging (rank 0), reports and
    checkpoints at each evaluation, and the injected step hook (`raykd.hooks`)."""

    def __init__(self, trial: TrialRun, session, store: CheckpointStore, run_id: str | None) -> None:
        self.trial, self.session, self.store = trial, session, store
        context, spec = trial.context, trial.spec
        latest = store.latest()
        discarded = None
        if latest is not None:
            with store.open(latest) as folder:
                discarded = trial.load_checkpoint(folder)
        self.log = None
        if session.rank == 0 and context.tracking is not None:
            self.log = TrialLog(context.tracking, run_id)
            self.log.start(
                context,
                trial,
                resumed_from=None if latest is None or discarded else trial.state.step,
                discarded=discarded,
            )
        self.injected = injected.step_hook(context.study_dir, spec.trial_id, session.rank, trial.student)
        self.started, self.examples = time.perf_counter(), 0
        self.log_every = context.config.distill.train.log_every
        self.progress = trial_progress(context.study_dir, spec.trial_id) if session.rank == 0 else None
        self.resumed_at = trial.state.step  # past a resume, the steps before this one took no time in this sweep
        self.write_progress()

    def on_step(self, result: StepResult) -> None:
        trial = self.trial
        if self.injected is not None:
            self.injected(trial.state.step)
        self.examples += result.examples * self.session.world
        if trial.state.step % self.log_every == 0:
            self.write_progress()
        if self.log is not None and trial.state.step % self.log_every == 0 and result.finite:
            elapsed = time.perf_counter() - self.started
            self.log.step(
                trial.state.step, result.terms, trial.scheduler.get_last_lr()[0], self.examples / max(elapsed, 1e-9)
            )
            self.started, self.examples = time.perf_counter(), 0
        every = trial.curve_every
        if self.log is not None and every and trial.state.step % every == 0 and result.finite:
            began = time.perf_counter()
            self.log.metrics(trial.state.step, {f"val_curve/{k}": v for k, v in trial.curve().items()})
            self.started += time.perf_counter() - began  # examples/s counts training time only

    def write_progress(self) -> None:
        """Rank 0: the step, for the sweep's live line between evaluations (`raykd.console.Progress`)."""
        if self.progress is not None:
            self.progress.write("trial", step=self.trial.state.step, start=self.resumed_at, steps=self.trial.steps)

    def on_eval(self, state: LoopState) -> None:
        scores = self.trial.validate()
        self.checkpoint()
        release_freed_memory()  # what the evaluation and the checkpoint's serialisation freed
        self.report({"status": "running", "final": False, **{f"validation/{k}": v for k, v in scores.items()}})

    def checkpoint(self, final: bool = False) -> None:
        trial, session = self.trial, self.session
        self.store.save(
            trial.state.step,
            lambda folder: trial.save_checkpoint(folder, final),
            rank=session.rank,
            world=session.world,
            barrier=session.barrier,
        )

    def report(self, metrics: dict[str, Any]) -> dict[str, Any]:
        trial = self.trial
        metrics = {
            **metrics,
            "epoch": trial.state.epoch,
            "step": trial.state.step,
            "best_validation": trial.best,
            "best_step": trial.best_step,
        }
        if self.log is not None:
            self.log.metrics(trial.state.step, metrics)
        self.session.report(metrics)
        return metrics


def ranks_report(trial: TrialRun) -> list[dict[str, Any]]:
    """What each rank of a DDP trial did, gathered on every rank: its shard of the training split (size and a
    hash of its epoch-0 example order), where its teacher outputs came from, and a checksum of its weights (DDP
    keeps the replicas identical)."""
    import hashlib

    trial.loader.sampler.set_epoch(0)
    order = list(trial.loader.sampler)
    mine = {
        "rank": trial.rank,
        "node": ray.get_runtime_context().get_node_id(),
        "examples": len(order),
        "shard_hash": hashlib.sha256(str(order).encode()).hexdigest()[:12],
        "teacher": trial.teacher_source,
        "weights_sum": float(sum(p.detach().double().sum() for p in trial.student.parameters())),
    }
    gathered: list[Any] = [None] * trial.world
    torch.distributed.all_gather_object(gathered, mine)
    return gathered
