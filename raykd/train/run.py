"""One trial as one object with plain steps: set up, load or save a checkpoint, train, evaluate.

`TrialRun` knows nothing about Ray or MLflow: the Ray worker (`raykd.train.worker`) wraps it and adds
the Ray context, reporting, tracking and checkpoint handoff through hooks. Tests call it directly.

Seeding (every random draw of a trial comes from its seed, and its rank):
- the student's weights (random init) or fresh task head (teacher init): the trial seed (`build_student`);
- width projections: a stream derived from (seed, "projections");
- data order: the samplers' own generators, seeded by the trial seed and the epoch;
- dropout and anything else on torch's global RNG: reseeded from (seed, "train", rank) after setup.
So arms at the same seed see the same data in the same order with the same dropout masks, and a trial
run twice (or in a reused process after another trial) computes the same thing. Checkpoints save and
restore the global RNG streams (CPU and CUDA), so a resumed trial continues exactly.
"""

from __future__ import annotations

import itertools
import math
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from transformers.trainer_pt_utils import DistributedLengthGroupedSampler

from raykd.losses import LossConfig, attach_projections, projection_keys
from raykd.student import build_student, student_metadata
from raykd.tasks.data import column
from raykd.teacher_folder import TeacherFolder
from raykd.train import checkpoint as ckpt
from raykd.train.batches import INDEX, with_index
from raykd.train.frozen import LiveTeacher
from raykd.train.loop import LoopState, StepResult, autocast, distill, resolve_precision, unwrap
from raykd.train.optim import make_optimizer
from raykd.train.teacher_cache import CachedTeacher, why_not_served
from raykd.train.vocab import compact_word_embeddings
from raykd.trial import StudyContext, TrialSpec, maps_by_epoch, student_depths, total_steps

CURVE_POINTS = 8  # at most this many learning-curve points a trial, by default (`distill.curve.every` None)


def derived_seed(seed: int, purpose: str, rank: int = 0) -> int:
    """A 63-bit seed for one purpose of one trial (stable across processes and Python versions)."""
    return int(np.random.SeedSequence([seed, zlib.crc32(purpose.encode()), rank]).generate_state(2, np.uint64)[0] >> 1)


@dataclass
class TeacherArtifacts:
    """What every trial of a study reads and never changes: loaded once per process and device (a reused
    Tune actor runs many trials on one copy)."""

    folder: TeacherFolder
    task: Any
    tokenizer: Any
    data: Any  # DatasetDict of tokenized splits
    device: str
    caches: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, context: StudyContext, device: str) -> TeacherArtifacts:
        folder = TeacherFolder(context.teacher_dir)
        return cls(
            folder=folder,
            task=folder.task(context.config),
            tokenizer=folder.tokenizer(),
            data=folder.data(),
            device=device,
        )

    @cached_property
    def model(self) -> nn.Module:
        """The fine-tuned teacher's weights, loaded on first use: a trial whose teacher is the cache and whose
        student starts random never needs them (~90 MB per trial actor for MiniLM-L6)."""
        return self.folder.model(self.task, self.device)

    @cached_property
    def skeleton(self) -> nn.Module:
        """The teacher's modules without weights (the meta device), enough to build a random-init student."""
        return self.folder.skeleton(self.task)

    @cached_property
    def token_ids(self) -> list[int]:
        """Every token id the student can be shown: those of the tokenized splits and the tokenizer's special ids
        (padding among them)."""
        ids = set(self.tokenizer.all_special_ids)
        for split in self.data.values():
            if "input_ids" in split.column_names:
                ids.update(np.unique(np.fromiter(itertools.chain.from_iterable(column(split, "input_ids")), np.int64)))
        return sorted(int(i) for i in ids)

    @cached_property
    def indexed_train(self):
        """The training split with each example's row (for cache lookups)."""
        train = self.data["train"]
        return train.add_column(INDEX, list(range(len(train))))

    def cached_teacher(self, folder: str):

        if folder not in self.caches:
            self.caches[folder] = CachedTeacher(folder, self.folder.family, self.folder.depths)
        return self.caches[folder]


_ARTIFACTS: dict[tuple[str, str], TeacherArtifacts] = {}  # per process: read-only, shared by its trials


def teacher_artifacts(context: StudyContext, device: str) -> TeacherArtifacts:
    """The process's copy of the teacher stage's outputs (loaded on first use)."""
    key = (context.teacher_dir, device)
    if key not in _ARTIFACTS:
        _ARTIFACTS.clear()  # another study's teacher: drop it
        _ARTIFACTS[key] = TeacherArtifacts.load(context, device)
    return _ARTIFACTS[key]


class TrialRecipe(Protocol):
    """The contract between a trial and whatever runs it (`raykd.train.worker.train_trial`, the tests, a benchmark),
    in the order they are called:

    1. `setup` once: build the student, its data, optimiser and teacher source; seed every random stream.
    2. `load_checkpoint` when the trial's store has one (a resume): restore everything `save_checkpoint` wrote, or
       say why the checkpoint was discarded (the trial then starts over).
    3. `train` until it returns ``"finished"`` or ``"diverged"``, calling ``on_step`` after every optimisation step
       and ``on_eval`` at every evaluation (where the runner calls `validate` and `save_checkpoint`).
    4. `validate` and `test` on a finished trial, then a last `save_checkpoint` (``final``: weights only).

    `state` (a `LoopState`: step, epoch, position in the epoch) is what progress and checkpoints key on. `TrialRun`
    is the implementation; another kind of trial implements these and the runner is unchanged.
    """

    state: LoopState

    def setup(self, wrap: Callable[[nn.Module], nn.Module] | None = None) -> TrialRecipe: ...
    def load_checkpoint(self, folder: Path) -> str | None: ...
    def save_checkpoint(self, folder: Path, final: bool = False) -> None: ...
    def train(self, on_step: Callable | None = None, on_eval: Callable | None = None) -> str: ...
    def validate(self) -> dict[str, float]: ...
    def test(self) -> dict[str, float]: ...


class TrialRun(TrialRecipe):
    """One trial of a study: a random or copied-init student distilled from the study's teacher (`TrialRecipe`)."""

    def __init__(
        self,
        context: StudyContext,
        spec: TrialSpec,
        artifacts: TeacherArtifacts,
        *,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.context, self.spec, self.artifacts = context, spec, artifacts
        self.config = context.config
        self.rank, self.world, self.device = rank, world, artifacts.device
        self.task = artifacts.task
        self.metric, self.higher = self.task.metric, self.task.higher_is_better
        self.state = LoopState()
        self.best: float | None = None
        self.best_step: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.evaluated_at: int | None = None
        self.teacher_source = "live"
        self.node: str | None = None  # where this process runs (the runner's name for it), kept in checkpoints
        self.checkpoint_node: str | None = None  # where the checkpoint it resumed from was written

    # --- setup ------------------------------------------------------------------------------------
    def setup(self, wrap: Callable[[nn.Module], nn.Module] | None = None) -> TrialRun:
        """Build the student, its projections, layer maps, data, optimiser and teacher source; seed."""
        config, spec, art = self.config, self.spec, self.artifacts
        family = art.folder.family
        self.teacher_depths = art.folder.depths
        self.epochs = math.ceil(config.distill.train.epochs)
        student = build_student(
            art.model if spec.init == "teacher" else art.skeleton,
            depth=config.student.depth,
            width=config.student.width,
            init=spec.init,
            copy_rule=config.student.copy_rule,
            seed=spec.seed,
            copy_head=config.student.copy_head,
        )
        optimizer = config.distill.train.optimizer
        # only the word-embedding rows of the study's token ids train, where that is exact (`raykd.train.vocab`)
        compacted = compact_word_embeddings(student, art.token_ids, optimizer)
        self.embedding_rows = len(art.token_ids) if compacted else None  # None: all rows train
        self.student_depths = student_depths(config, self.teacher_depths)
        self.maps = maps_by_epoch(config, spec, self.student_depths, self.teacher_depths, family.kind, self.epochs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed(spec.seed, "projections"))
            attach_projections(student, projection_keys(self.maps.values()), family.width(art.skeleton.config))
        self.student = student.to(self.device)
        self.model = wrap(self.student) if wrap is not None else self.student
        self.teacher, train_data, collate = self._teacher_and_data()
        self.loader = self._loader(train_data, collate)
        self.steps = total_steps(config.distill.train, len(self.loader))
        self.optimizer, self.scheduler = make_optimizer(self.model.parameters(), config.distill.train, self.steps)
        self.loss = LossConfig(hidden=spec.weight, **config.distill.loss.model_dump())
        self.precision = resolve_precision(config.compute.precision, self.device)
        torch.manual_seed(derived_seed(spec.seed, "train", self.rank))  # dropout: paired across arms
        return self

    def _teacher_and_data(self):
        """(frozen teacher, training split, collator): the shared cache when it serves this trial, else live."""
        art, config = self.artifacts, self.config
        collate = art.task.collator(art.tokenizer)

        def live():
            return LiveTeacher(art.model, final_norm=config.distill.final_norm, family=art.folder.family)

        folder = self.context.teacher_cache
        if not folder:
            return live(), art.data["train"], collate
        cache = art.cached_teacher(folder)
        reason = why_not_served(
            cache, art.data["train"], self.maps, matches=self.spec.weight > 0, needs_logits=config.distill.loss.kd > 0
        )
        if reason is not None:
            warnings.warn(f"{reason}; running the teacher live", stacklevel=2)
            return live(), art.data["train"], collate
        self.teacher_source = "cache"
        return cache, art.indexed_train, with_index(collate)

    def _loader(self, train_data, collate) -> DataLoader:
        train, seed = self.config.distill.train, self.spec.seed
        if train.group_by_length:
            sampler = DistributedLengthGroupedSampler(
                train.batch_size,
                num_replicas=self.world,
                rank=self.rank,
                seed=seed,
                lengths=[len(ids) for ids in column(train_data, "input_ids")],
            )
        else:
            sampler = DistributedSampler(train_data, num_replicas=self.world, rank=self.rank, shuffle=True, seed=seed)
        # its own generator: creating an iterator (each epoch, and on resume) must not draw from the global RNG,
        # which carries the dropout stream a checkpoint restores
        return DataLoader(
            train_data,
            batch_size=max(1, train.batch_size // self.world),
            sampler=sampler,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(seed),
        )

    # --- checkpoints --------------------------------------------------------------------------------
    def checkpoint_state(self, final: bool = False) -> dict[str, Any]:
        return {
            **self.state.as_dict(),
            "best": self.best,
            "best_step": self.best_step,
            "evaluated_at": self.evaluated_at,
            "final": final,
            "node": self.node,
        }

    def save_checkpoint(self, folder: Path, final: bool = False) -> None:
        """This rank's part of a checkpoint (rank 0 writes the model; every rank its random streams)."""
        if self.rank == 0:
            ckpt.write_checkpoint(
                folder,
                student=self.student,
                best_weights=self.best_weights,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                state=self.checkpoint_state(final),
                rank=self.rank,
            )
        elif not final:
            ckpt.write_rank(folder, self.rank)

    def load_checkpoint(self, folder: Path) -> str | None:
        """Continue from `folder`; returns the reason when it is unreadable (the trial starts over)."""
        restored = ckpt.read_checkpoint(folder, self.student, rank=self.rank)
        if isinstance(restored, str):
            return restored
        state = restored.state
        self.state = LoopState(epoch=state["epoch"], step=state["step"], step_in_epoch=state["step_in_epoch"])
        self.best, self.best_step, self.evaluated_at = state["best"], state["best_step"], state.get("evaluated_at")
        self.best_weights = restored.best_weights
        self.checkpoint_node = state.get("node")
        if restored.optimizer is not None:
            self.optimizer.load_state_dict(restored.optimizer)
            self.scheduler.load_state_dict(restored.scheduler)
        if restored.rng is not None:
            ckpt.set_rng_state(restored.rng)
        return None

    # --- training and evaluation --------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.state.step >= self.steps

    def train(
        self, on_step: Callable[[StepResult], None] | None = None, on_eval: Callable[[LoopState], None] | None = None
    ) -> str:
        """Train from the current state to the end; returns ``finished`` or ``diverged``."""
        if self.done:
            return "finished"
        train = self.config.distill.train
        maps = self.maps
        result = distill(
            self.teacher,
            self.model,
            self.loader,
            self.optimizer,
            layer_maps=lambda e: maps.get(e, maps[0]),
            loss=self.loss,
            epochs=self.epochs,
            max_steps=self.steps,
            scheduler=self.scheduler,
            grad_clip=train.grad_clip,
            final_norm=self.config.distill.final_norm,
            device=self.device,
            precision=self.precision,
            eval_every=train.eval_every,
            eval_each_epoch=True,
            state=self.state,
            on_step=on_step,
            on_eval=on_eval,
            keep_history=False,
        )
        return result.status

    def evaluate(self, split: str) -> dict[str, float]:
        """The task's metrics of the current weights on a split."""
        return self._evaluate(self.artifacts.data[split])

    def _evaluate(self, dataset) -> dict[str, float]:
        with autocast(self.precision, self.device):
            return self.task.evaluate(unwrap(self.model), self.artifacts.tokenizer, dataset, device=self.device)

    def validate(self) -> dict[str, float]:
        """Validation metrics now (once per step), keeping the best weights; {} if already validated here."""
        if self.evaluated_at == self.state.step:
            return {}
        self.evaluated_at = self.state.step
        scores = self.evaluate("validation")
        value = scores[self.metric]
        if self.best is None or (value > self.best if self.higher else value < self.best):
            self.best, self.best_step = value, self.state.step
            self.best_weights = {k: v.detach().cpu().clone() for k, v in unwrap(self.model).state_dict().items()}
        return scores

    @property
    def curve_every(self) -> int:
        """Steps between learning-curve points (`distill.curve`; 0: none)."""
        every = self.config.distill.curve.every
        return math.ceil(self.steps / CURVE_POINTS) if every is None else every

    @cached_property
    def _curve_subset(self):
        """`distill.curve.examples` validation examples spread evenly (a split sorted by label stays mixed)."""
        data = self.artifacts.data["validation"]
        n = min(self.config.distill.curve.examples, len(data))
        return data.select(sorted({round(i * (len(data) - 1) / max(n - 1, 1)) for i in range(n)}))

    def curve(self) -> dict[str, float]:
        """The validation metrics on the learning-curve subset, every random stream as it was before (the trial
        trains exactly as without a curve)."""
        streams = ckpt.rng_state()
        try:
            return self._evaluate(self._curve_subset)
        finally:
            ckpt.set_rng_state(streams)

    def test(self) -> dict[str, float]:
        """Test metrics of the best-on-validation weights (loaded into the student)."""
        if self.best_weights is not None:
            unwrap(self.model).load_state_dict(self.best_weights)
        return self.evaluate("test")

    def params(self) -> dict[str, Any]:
        """What this trial is, for tracking."""
        return {
            "trial.strategy": self.spec.strategy,
            "trial.init": self.spec.init,
            "trial.weight": self.spec.weight,
            "trial.seed": self.spec.seed,
            "trial.layer_map": self.maps[0],
            "trial.copied_layers": student_metadata(self.student).get("copied_layers", {}),
            "trial.copied_head": student_metadata(self.student).get("copied_head"),
            "teacher.depths_loaded": self.teacher_depths,
            "world_size": self.world,
            "trial.precision": self.precision,
            "trial.teacher": self.teacher_source,
            "trial.embedding_rows_trained": self.embedding_rows or "all",
        }
