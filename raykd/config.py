"""Typed study configuration: one YAML file -> `StudyConfig`, the schema of every study.

This module is a leaf (pydantic and yaml only): it checks types, ranges and shapes that need nothing
else. Names that refer to registries (strategies, tasks, metrics, model families, corpora, packaged
models, losses) and files on disk are checked by `raykd.validate.validate`, which the entry scripts run
before Ray starts. Errors name the field and what is allowed (`ConfigError`, a `ValueError`); unknown
keys are refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SPLITS = ("train", "validation", "test")
INITS = ("random", "teacher")  # student initialisations (raykd.student)
PAIR_REDUCTIONS = ("mean", "sum")


class ConfigError(ValueError):
    """A study config that cannot run; the message names each bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- data and task -------------------------------------------------------------------------------


class HubData(_Strict):
    """A dataset on the Hugging Face Hub: `load_dataset(id, config, split=...)` per split."""

    id: str
    config: str | None = None
    revision: str | None = None
    splits: dict[Literal["train", "validation", "test"], str] = Field(
        default_factory=lambda: {"train": "train", "validation": "validation", "test": "test"}
    )


class FileData(_Strict):
    """Local files per split (csv / json / jsonl / parquet), format from the extension unless given."""

    train: str | None = None
    validation: str | None = None
    test: str | None = None
    format: Literal["csv", "json", "parquet"] | None = None
    encoding: str = "utf-8"

    @model_validator(mode="after")
    def _some_split(self) -> FileData:
        if not any((self.train, self.validation, self.test)):
            raise ValueError("give at least one of train / validation / test")
        return self


class SplitCarve(_Strict):
    """Carve missing validation/test splits out of train: a fraction (0..1) or a count."""

    validation: float | None = Field(default=None, gt=0)
    test: float | None = Field(default=None, gt=0)
    seed: int = Field(default=0, ge=0)
    stratify: bool = True


class DataConfig(_Strict):
    hub: HubData | None = None
    files: FileData | None = None
    builtin: str | None = None
    builtin_options: dict[str, Any] = Field(default_factory=dict)
    split: SplitCarve | None = None
    max_examples: dict[Literal["train", "validation", "test"], int] = Field(default_factory=dict)
    columns: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        given = [k for k in ("hub", "files", "builtin") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one data source of hub / files / builtin, got {given or 'none'}")
        for split, n in self.max_examples.items():
            if n < 1:
                raise ValueError(f"max_examples.{split} must be >= 1, got {n}")
        return self


class TaskConfig(_Strict):
    type: str
    data: DataConfig
    metric: str | None = None  # the study's metric; each task has a default
    # classification
    label_names: list[str] | None = None
    max_length: int = Field(default=128, ge=8)
    # seq2seq and causal_lm
    source_lang: str | None = None
    target_lang: str | None = None
    prefix: str = ""
    prompt_template: str = "{source}"
    completion_template: str = "{target}"
    max_source_length: int = Field(default=128, ge=4)
    max_target_length: int = Field(default=128, ge=4)
    num_beams: int = Field(default=4, ge=1)
    max_new_tokens: int = Field(default=64, ge=1)
    eval_batch_size: int = Field(default=64, ge=1)


# --- models ----------------------------------------------------------------------------------------


class TokenizerConfig(_Strict):
    """`teacher`: the teacher's own tokenizer; `train`: train one on the train split (from-scratch teachers)."""

    source: Literal["teacher", "train"] = "teacher"
    kind: Literal["bpe", "unigram", "wordpiece"] = "unigram"
    vocab_size: int = Field(default=8000, ge=100)


class TrainConfig(_Strict):
    """Optimisation settings shared by the teacher fine-tuning and the student distillation."""

    optimizer: Literal["adamw", "adafactor"] = "adamw"
    lr: float = Field(default=5e-5, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=32, ge=1)
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    grad_clip: float | None = Field(default=1.0, gt=0)
    eval_every: int | None = Field(default=None, ge=1)  # steps between validations (None: every epoch end)
    log_every: int = Field(default=10, ge=1)  # steps between logged metrics
    group_by_length: bool = False  # batches of similar lengths (less padding), randomised per epoch


class TeacherConfig(_Strict):
    """Where the teacher comes from: a hub id, a local folder, a packaged model, or a config."""

    source: Literal["hub", "path", "package", "config"]
    name: str | None = None
    model: dict[str, Any] | None = None  # source=config: {"model_type": "t5", <config fields>}
    finetuned: bool = False
    trust_remote_code: bool = False
    # Blocks per stack the teacher is expected to have (hub/path/package teachers): lets the config
    # check student depths offline; compared with the real model when it loads.
    depths: dict[str, int] | None = None
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    # Every random draw of the teacher stage (a new task head, from-config weights, data order, dropout)
    # comes from this seed: two fresh runs of a study get the same teacher.
    seed: int = Field(default=0, ge=0)
    # A teacher must beat its task's trivial baseline (majority class; copying the source or an empty output
    # for generation) by this many metric points, else the study stops before the sweep: there is nothing
    # to distil. `allow_weak: true` runs it anyway (the report then says so).
    min_gain_points: float = Field(default=2.0, ge=0)
    allow_weak: bool = False

    @model_validator(mode="after")
    def _source_fields(self) -> TeacherConfig:
        if self.source == "config":
            if not self.model or "model_type" not in self.model:
                raise ValueError("source 'config' needs model: {model_type: <family>, ...config fields}")
        elif not self.name:
            raise ValueError(f"source {self.source!r} needs a name (hub id, folder or package)")
        if self.tokenizer.source == "train" and self.source != "config":
            raise ValueError("tokenizer.source 'train' is only for teachers built from config")
        if self.depths is not None:
            bad = {s: d for s, d in self.depths.items() if d < 1}
            if bad:
                raise ValueError(f"teacher.depths must be >= 1 per stack, got {bad}")
        return self


class StudentConfig(_Strict):
    depth: int | dict[str, int] = 3
    width: int | None = Field(default=None, ge=8)
    copy_rule: Literal["matched", "spread"] | list[int] | dict[str, Any] = "matched"
    # Teacher init: copy the teacher's task head too? None follows the paper per head type: a sequence
    # classifier's head (fine-tuned on the task) is drawn fresh from the trial seed, as the released BERT
    # code does (a copied head starts the student at the teacher's accuracy); LM heads are copied.
    copy_head: bool | None = None

    @field_validator("depth")
    @classmethod
    def _positive_depth(cls, value):
        for stack, depth in value.items() if isinstance(value, dict) else [("depth", value)]:
            if depth < 1:
                raise ValueError(f"student depth ({stack}) must be >= 1, got {depth}")
        return value


class LossSettings(_Strict):
    """How the distillation objective is computed (raykd.losses documents each option's formula).

    The hidden-loss names are registry entries, checked by `raykd.validate`."""

    ce: float = Field(default=1.0, ge=0)
    kd: float = Field(default=1.0, ge=0)
    temperature: float = Field(default=1.0, gt=0)
    hidden_kind: str = "mse"
    hidden_norm: str = "none"
    hidden_reduction: str = "element_mean"  # bert_released: the released BERT code's scale
    pair_reduction: Literal["mean", "sum"] = "mean"


class LossConfig(LossSettings):
    """The loss of one trial: the study's settings plus the trial's hidden-loss weight."""

    hidden: float = Field(default=3.0, ge=0)

    @field_validator("ce", "kd", "hidden", mode="before")
    @classmethod
    def _number(cls, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"loss weights must be numbers >= 0, got {value!r}")
        return value


class CurveConfig(_Strict):
    """Learning curves: the validation metrics every `every` steps on `examples` validation examples spread evenly
    over the split, logged as ``val_curve.<metric>`` (every random stream left as it was; the best and final
    numbers stay on the whole split, at `train.eval_every`)."""

    every: int | None = Field(default=None, ge=0)  # steps between points; None: 8 points a trial; 0: no curve
    examples: int = Field(default=40, ge=1)  # 8 points of 40: ~3% of a default trial (benchmarks/learning_curve.py)


class DistillConfig(_Strict):
    loss: LossSettings = Field(default_factory=LossSettings)
    final_norm: Literal["as_returned", "pre_norm"] = "as_returned"
    match_embeddings: bool | None = None  # None: True, except for decoder-only models
    train: TrainConfig = Field(default_factory=TrainConfig)
    curve: CurveConfig = Field(default_factory=CurveConfig)


class WeightSearch(_Strict):
    """How the hidden-loss weight is chosen: the `sweep.weights` grid, or Optuna (TPE) per
    (strategy, init) cell on the validation metric at one seed, then the best weight on every seed."""

    method: Literal["grid", "optuna"] = "grid"
    trials_per_cell: int = Field(default=8, ge=2)
    low: float = Field(default=0.1, gt=0)
    high: float = Field(default=10.0, gt=0)
    log: bool = True
    seed: int | None = Field(default=None, ge=0)  # the data/init seed of tuning trials (default: first of seeds)
    sampler_seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _range(self) -> WeightSearch:
        if self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be greater than low ({self.low})")
        return self


class SequentialConfig(_Strict):
    """A group-sequential study (raykd.analysis.sequential): run the first look's seeds, analyse, stop when every
    claim is decided, else add the next look's seeds; each look decides at the level its alpha spending allows."""

    looks: list[int]  # cumulative seed counts, increasing; the last is the most the study will run
    spending: Literal["obrien_fleming", "pocock"] = "obrien_fleming"

    @field_validator("looks")
    @classmethod
    def _increasing(cls, value: list[int]) -> list[int]:
        if len(value) < 2 or value[0] < 2 or sorted(set(value)) != value:
            raise ValueError(f"looks must be at least two increasing seed counts, the first >= 2, got {value}")
        return value


class SweepConfig(_Strict):
    strategies: list[str] = Field(default_factory=lambda: ["forward", "reverse", "all_to_one", "random", "none"])
    inits: list[str] = Field(default_factory=lambda: list(INITS))
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    weights: list[float] = Field(default_factory=lambda: [3.0])
    weight_search: WeightSearch = Field(default_factory=WeightSearch)
    strategy_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    sequential: SequentialConfig | None = None  # planned looks; seeds = the first `looks[-1]` of `seeds`

    @model_validator(mode="after")
    def _looks_fit_seeds(self) -> SweepConfig:
        if self.sequential and self.sequential.looks[-1] > len(self.seeds):
            raise ValueError(
                f"sweep.sequential.looks ends at {self.sequential.looks[-1]} seeds but sweep.seeds lists "
                f"{len(self.seeds)}: list at least as many seeds as the last look"
            )
        return self

    @field_validator("strategies")
    @classmethod
    def _some_strategies(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one strategy")
        return _unique(value)

    @field_validator("inits")
    @classmethod
    def _known_inits(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if v not in INITS]
        if bad or not value:
            raise ValueError(f"inits must be a non-empty list of {list(INITS)}, got {value}")
        return _unique(value)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if not value or any(s < 0 for s in value):
            raise ValueError(f"seeds must be a non-empty list of integers >= 0, got {value}")
        return _unique(value)

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 <= w < float("inf") for w in value):
            raise ValueError(f"hidden-loss weights must be a non-empty list of finite numbers >= 0, got {value}")
        return _unique(value)


class TeacherCacheConfig(_Strict):
    """The shared teacher cache (raykd.train.teacher_cache): the teacher's outputs on the training split,
    computed once per study; trials read them instead of running the teacher."""

    enabled: bool = True
    dtype: Literal["fp16", "bf16"] = "fp16"
    budget_gb: float = Field(default=4.0, ge=0)  # larger caches fall back to live teacher forwards


class ComputeConfig(_Strict):
    """Resources of one trial (a Ray Train run) and of the study."""

    num_workers: int = Field(default=1, ge=1)  # DDP workers per trial
    # One-worker trials run in-process in reused Tune actors (Ray Train local mode). `isolate_trials` gives each
    # its own Ray Train worker group instead: fresh processes per trial, ~14 s of start-up and teardown each.
    isolate_trials: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=0.0, ge=0)  # < 1 packs several trials on one GPU
    max_concurrent_trials: int | None = Field(
        default=None, ge=1
    )  # None: what the cluster fits now; set it on autoscaling clusters
    teacher_cpus: float | None = Field(default=None, gt=0)  # teacher stage; None: the cluster's CPUs, at most 8
    max_failures: int = Field(default=1, ge=0)  # worker-group restarts from the last checkpoint
    trial_retries: int = Field(default=0, ge=0)  # Tune-level retries of a failed trial
    # Mixed precision of student steps, evaluation and the teacher stage (weights stay fp32). auto: bf16
    # where the device computes it natively (Ampere+ GPUs; CPUs with AVX512-BF16 or AMX), else fp32.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    teacher_cache: TeacherCacheConfig = Field(default_factory=lambda: TeacherCacheConfig())

    @model_validator(mode="after")
    def _gpu_fraction(self) -> ComputeConfig:
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            raise ValueError(f"gpus_per_worker above 1 must be a whole number, got {self.gpus_per_worker}")
        if 0 < self.gpus_per_worker < 1 and self.num_workers > 1:
            raise ValueError("a fractional gpus_per_worker (GPU sharing) needs num_workers: 1")
        return self


class AngleConfig(_Strict):
    """Which students the angle statistics measure, on how many validation examples."""

    enabled: bool = True
    examples: int = Field(default=256, ge=1)  # validation examples (all their valid tokens)
    batch_size: int = Field(default=32, ge=1)
    # one trial per (strategy, init) cell at each of these seeds; None: the first 3 (the test against the null needs 3)
    seeds: list[int] | None = None
    null_seeds: int = Field(default=5, ge=0)  # seeds of each null baseline (random point, other token); 0: none


class AnalysisConfig(_Strict):
    """The post-hoc analysis. Not part of the study's identity: changing it never invalidates trials."""

    enabled: bool = True  # run the analysis actor at the end of the study
    reference: str = "forward"  # pairwise and equivalence tests compare every strategy with this one
    margin_points: float = Field(default=1.0, gt=0)  # equivalence margin in metric points (accuracy 1.0 = 1%)
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    # An equivalence is a finding only when the arms had room to differ: teacher minus the `none` arm at least
    # this many margins (else equivalence-based answers are reported as undecided, with the reason).
    min_room_margins: float = Field(default=2.0, ge=0)
    # No claim is decided on fewer paired seeds than this (t-tests on 2-3 seeds decide on noise and ties).
    min_seeds: int = Field(default=4, ge=2)
    angles: AngleConfig = Field(default_factory=AngleConfig)


class StudyConfig(_Strict):
    name: str
    task: TaskConfig
    teacher: TeacherConfig
    student: StudentConfig = Field(default_factory=StudentConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)

    def identity(self) -> dict[str, Any]:
        """The config fields that define what a finished trial means: a change here invalidates the study.

        Left out: the analysis (re-run it with other settings at will), the grid's lists (strategies,
        inits, seeds, weights: a study can grow, running only its new trials), operational settings
        (concurrency, retries, the cache's size budget) that change how trials run, not what they compute, and the
        learning curve (`distill.curve`), which leaves the training untouched.
        """
        return self.model_dump(
            mode="json",
            exclude={
                "analysis": True,
                "sweep": set(GRID_FIELDS),
                "compute": set(OPERATIONAL_COMPUTE),
                "distill": {"curve"},  # what is logged beside training, not what it computes
            },
        )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", value):
            raise ValueError("study name must be 1-100 characters of letters, digits, '_', '.', '-'")
        return value

    @model_validator(mode="after")
    def _student_stacks(self) -> StudyConfig:
        """Student stacks against the declared teacher depths (the model family's are checked in validate)."""
        if (
            self.teacher.depths
            and isinstance(self.student.depth, dict)
            and set(self.student.depth) != set(self.teacher.depths)
        ):
            raise ValueError(
                f"student.depth names stacks {sorted(self.student.depth)}; teacher.depths has "
                f"{sorted(self.teacher.depths)}"
            )
        return self


GRID_FIELDS = ("strategies", "inits", "seeds", "weights", "sequential")
OPERATIONAL_COMPUTE = ("max_concurrent_trials", "max_failures", "trial_retries", "teacher_cpus", "isolate_trials")


def _unique(values: list) -> list:
    duplicates = sorted({v for v in values if values.count(v) > 1}, key=str)
    if duplicates:
        raise ValueError(f"duplicate entries {duplicates}")
    return values


def parse_config(data: dict[str, Any], *, source: str = "config") -> StudyConfig:
    """Validate a config mapping; raise `ConfigError` naming every bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a study config must be a mapping, got {type(data).__name__}")
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source}: " + "; ".join(_describe(e) for e in error.errors())) from None


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """Read a YAML study config (safe loader: no tags that run code), apply ``key=value`` overrides."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    data = data if data is not None else {}
    for override in overrides:
        apply_override(data, override)
    return parse_config(data, source=str(path))


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in a nested mapping; the value is parsed as YAML (``sweep.seeds=[0,1]``)."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} is not key=value")
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a mapping")
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ConfigError(
            f"override {override!r}: the value is not valid YAML ({str(error).splitlines()[0]})"
        ) from None


def config_hash(data: Any) -> str:
    """A short stable hash of a config (or part of one), for caches and for spotting changes."""
    import hashlib
    import json

    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def flatten(config: StudyConfig | dict[str, Any]) -> dict[str, Any]:
    """Every field of a config (or of its dumped mapping) as ``a.b.c -> value`` (for MLflow params)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = value

    walk("", config.model_dump(mode="json") if isinstance(config, BaseModel) else config)
    return out


def _describe(error: dict[str, Any]) -> str:
    loc = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-after"))
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    shown = repr(error.get("input"))
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{loc or '<top>'}: {message}" + ("" if error["type"] == "missing" else f" (got {shown})")
