"""A study's trials as data: the grid, one trial's spec, its layer maps, and what every trial shares.

One trial = one (strategy, student init, hidden-loss weight, seed). Seeds are paired across arms: the
same seed gives the same student draw (random init) or head draw (teacher init), the same data order
and the same dropout masks in every arm, so arms differ only in what they match.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from raykd.config import StudyConfig, TrainConfig
from raykd.strategies import is_per_epoch, layer_maps

if TYPE_CHECKING:
    from raykd.tracking import Tracking

NONE = "none"  # the strategy without hidden-state matching: it runs once per (init, seed), weight 0
TUNE_PREFIX = "tune-"  # trial ids of the Optuna weight-search phase


def trial_id(strategy: str, init: str, weight: float, seed: int) -> str:
    return f"{strategy}-{init}-w{weight:g}-s{seed}"


@dataclass(frozen=True)
class TrialSpec:
    """What makes one trial: its arm (strategy, init, weight) and its seed."""

    trial_id: str
    strategy: str
    init: str
    weight: float
    seed: int
    phase: str = "grid"  # or "tune" (a weight-search trial)

    @classmethod
    def of(cls, strategy: str, init: str, weight: float, seed: int, **kwargs: Any) -> TrialSpec:
        return cls(trial_id(strategy, init, weight, seed), strategy, init, float(weight), int(seed), **kwargs)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def tags(self) -> dict[str, str]:
        """The arm as tags of the trial's MLflow run (`arm_of` reads them back)."""
        return {f"raykd.{k}": f"{v:g}" if k == "weight" else str(v) for k, v in self.arm().items()}

    def arm(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "init": self.init, "weight": self.weight, "seed": self.seed}


def arm_of(tags: dict[str, str]) -> dict[str, Any]:
    """A trial's arm (strategy, init, weight, seed) from its MLflow run's tags (`TrialSpec.tags`); a missing tag reads
    as None, nan or -1."""
    return {
        "strategy": tags.get("raykd.strategy"),
        "init": tags.get("raykd.init"),
        "weight": float(tags.get("raykd.weight", "nan")),
        "seed": int(tags.get("raykd.seed", -1)),
    }


def total_steps(train: TrainConfig, batches_per_epoch: int) -> int:
    """Optimisation steps of a run: epochs (may be fractional) x batches, capped by max_steps."""
    steps = max(1, math.ceil(train.epochs * batches_per_epoch))
    return min(steps, train.max_steps) if train.max_steps else steps


def steps_per_trial(config: StudyConfig, train_examples: int) -> int:
    """A trial's optimisation steps before its data loads: each of the `compute.num_workers` ranks takes its share of
    the training split in batches of `batch_size // num_workers` (what `raykd.train.run.TrialRun` builds)."""
    world = config.compute.num_workers
    per_rank = math.ceil(train_examples / world)
    return total_steps(config.distill.train, math.ceil(per_rank / max(1, config.distill.train.batch_size // world)))


def trial_grid(config: StudyConfig, chosen: dict[tuple[str, str], float | None] | None = None) -> list[TrialSpec]:
    """Every trial of the study. `none` has no hidden loss, so it runs once per (init, seed), weight 0.

    `chosen` (from the Optuna phase) replaces the weight grid by one tuned weight per (strategy, init)
    cell; a cell whose tuning found no weight (every tuning trial failed) is left out.
    """
    trials = []
    for strategy in config.sweep.strategies:
        for init in config.sweep.inits:
            if strategy == NONE:
                weights = [0.0]
            elif chosen is not None:
                weights = [] if chosen.get((strategy, init)) is None else [chosen[(strategy, init)]]
            else:
                weights = config.sweep.weights
            trials += [TrialSpec.of(strategy, init, w, seed) for w in weights for seed in config.sweep.seeds]
    return trials


def student_depths(config: StudyConfig, teacher_depths: dict[str, int]) -> dict[str, int]:
    """Student blocks per stack: `student.depth` as given per stack, or the one number for every stack."""
    depth = config.student.depth
    return dict(depth) if isinstance(depth, dict) else dict.fromkeys(teacher_depths, depth)


def match_embeddings(config: StudyConfig, kind: str) -> bool:
    """Whether embedding outputs are matched: the config's choice, else yes except for decoder-only models."""
    choice = config.distill.match_embeddings
    return kind != "decoder" if choice is None else choice


def trial_layer_maps(
    config: StudyConfig,
    strategy: str,
    seed: int,
    students: dict[str, int],
    teachers: dict[str, int],
    kind: str,
    epoch: int = 0,
) -> dict[str, list[tuple[int, int]]]:
    """The layer maps of a trial at an epoch (fixed for every strategy but the per-epoch ones)."""
    options = dict(config.sweep.strategy_options.get(strategy, {}))
    if is_per_epoch(strategy):
        options["epoch"] = epoch
    return layer_maps(
        strategy, students, teachers, seed=seed, match_embeddings=match_embeddings(config, kind), **options
    )


def maps_by_epoch(
    config: StudyConfig, spec: TrialSpec, students: dict[str, int], teachers: dict[str, int], kind: str, epochs: int
) -> dict[int, dict[str, list[tuple[int, int]]]]:
    """Every epoch's layer maps of a trial (one entry unless the strategy re-draws per epoch)."""
    n = epochs if is_per_epoch(spec.strategy) else 1
    return {e: trial_layer_maps(config, spec.strategy, spec.seed, students, teachers, kind, e) for e in range(n)}


@dataclass(frozen=True)
class StudyContext:
    """What every trial of a study shares (picklable: handed to Ray trial drivers and workers once)."""

    config: StudyConfig
    study_dir: str
    teacher_dir: str
    checkpoints: str  # trial checkpoints live in <checkpoints>/<trial id>/ (a path or a storage URI)
    teacher_cache: str | None = None
    tracking: Tracking | None = None
    versions: dict[str, str] = field(default_factory=dict)
    ray_storage: str | None = None  # Ray Tune's and Train's storage (default: <study dir>/ray)
