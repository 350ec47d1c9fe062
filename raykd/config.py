"""Typed study configuration: one YAML file -> `StudyConfig`, validated before anything starts.

Errors name the field and what is allowed (`ConfigError`, a `ValueError`). Unknown keys are
refused. Registry-backed fields (strategies, tasks, model families, built-in datasets) are
checked against their registries, so a user's registered additions validate too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from raykd.losses import HIDDEN_KINDS, HIDDEN_NORMS, PAIR_REDUCTIONS
from raykd.student import INITS

SPLITS = ("train", "validation", "test")


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
        if self.builtin is not None:
            from raykd.corpora import BUILTIN_DATASETS

            BUILTIN_DATASETS.get(self.builtin)
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

    @field_validator("type")
    @classmethod
    def _known_task(cls, value: str) -> str:
        from raykd.tasks import TASKS

        TASKS.get(value)
        return value

    @model_validator(mode="after")
    def _known_metric(self) -> TaskConfig:
        from raykd.tasks import TASKS

        task_cls = TASKS.get(self.type)
        if self.metric is not None and self.metric not in task_cls.metrics:
            raise ValueError(f"metric {self.metric!r} is not one of {self.type}'s metrics {list(task_cls.metrics)}")
        return self


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

    @model_validator(mode="after")
    def _source_fields(self) -> TeacherConfig:
        if self.source == "config":
            if not self.model or "model_type" not in self.model:
                raise ValueError("source 'config' needs model: {model_type: <family>, ...config fields}")
            from raykd.families import FAMILIES

            FAMILIES.get(self.model["model_type"])
        elif not self.name:
            raise ValueError(f"source {self.source!r} needs a name (hub id, folder or package)")
        if self.source == "path" and not Path(self.name).exists():
            raise ValueError(f"teacher folder {self.name!r} does not exist")
        if self.source == "package":
            from raykd.models import PACKAGED_MODELS

            PACKAGED_MODELS.get(self.name)
        if self.tokenizer.source == "train" and self.source != "config":
            raise ValueError("tokenizer.source 'train' is only for teachers built from config")
        return self


class StudentConfig(_Strict):
    depth: int | dict[str, int] = 3
    width: int | None = Field(default=None, ge=8)
    copy_rule: Literal["matched", "spread"] | list[int] | dict[str, Any] = "matched"

    @field_validator("depth")
    @classmethod
    def _positive_depth(cls, value):
        for stack, depth in (value.items() if isinstance(value, dict) else [("depth", value)]):
            if depth < 1:
                raise ValueError(f"student depth ({stack}) must be >= 1, got {depth}")
        return value


class LossSettings(_Strict):
    ce: float = Field(default=1.0, ge=0)
    kd: float = Field(default=1.0, ge=0)
    temperature: float = Field(default=1.0, gt=0)
    hidden_kind: str = "mse"
    hidden_norm: str = "none"
    pair_reduction: str = "mean"

    @model_validator(mode="after")
    def _allowed(self) -> LossSettings:
        for name, allowed in (("hidden_kind", HIDDEN_KINDS), ("hidden_norm", HIDDEN_NORMS),
                              ("pair_reduction", PAIR_REDUCTIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        return self


class DistillConfig(_Strict):
    loss: LossSettings = Field(default_factory=LossSettings)
    final_norm: Literal["as_returned", "pre_norm"] = "as_returned"
    match_embeddings: bool | None = None  # None: True, except for decoder-only models
    train: TrainConfig = Field(default_factory=TrainConfig)


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


class SweepConfig(_Strict):
    strategies: list[str] = Field(default_factory=lambda: ["forward", "reverse", "all_to_one", "random", "none"])
    inits: list[str] = Field(default_factory=lambda: list(INITS))
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    weights: list[float] = Field(default_factory=lambda: [3.0])
    weight_search: WeightSearch = Field(default_factory=WeightSearch)
    strategy_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, value: list[str]) -> list[str]:
        from raykd.strategies import STRATEGIES

        if not value:
            raise ValueError("needs at least one strategy")
        for name in value:
            STRATEGIES.get(name)
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
        if not value or any(not w >= 0 for w in value):
            raise ValueError(f"hidden-loss weights must be a non-empty list of numbers >= 0, got {value}")
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
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=0.0, ge=0)  # < 1 packs several trials on one GPU
    max_concurrent_trials: int | None = Field(default=None, ge=1)  # None: what the cluster fits now; set it on autoscaling clusters
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
    seeds: list[int] | None = None  # one trial per (strategy, init) cell at each of these seeds; None: the first seed


class AnalysisConfig(_Strict):
    """The post-hoc analysis. Not part of the study's identity: changing it never invalidates trials."""

    enabled: bool = True  # run the analysis actor at the end of the study
    reference: str = "forward"  # pairwise and equivalence tests compare every strategy with this one
    margin_points: float = Field(default=1.0, gt=0)  # equivalence margin in metric points (accuracy 1.0 = 1%)
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
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
        """The config fields that define the study's trials (everything but `analysis`)."""
        return self.model_dump(mode="json", exclude={"analysis"})

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", value):
            raise ValueError("study name must be 1-100 characters of letters, digits, '_', '.', '-'")
        return value

    @model_validator(mode="after")
    def _shapes(self) -> StudyConfig:
        """Shapes checkable without downloads: depths and widths of a teacher built from config."""
        if self.teacher.source == "config":
            from raykd.families import FAMILIES

            family = FAMILIES.get(self.teacher.model["model_type"])
            for key in family.depth_keys.values():
                raw = self.teacher.model.get(key, 1)  # a missing field is reported below
                if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
                    raise ValueError(f"teacher.model.{key} must be a whole number >= 1, got {raw!r}")
            try:
                teacher_depths = family.depths(_Attrs(self.teacher.model))
            except AttributeError as missing:
                raise ValueError(f"teacher.model lacks the depth field {missing.name!r} of {family.name}") from None
            name = family.name
        elif self.teacher.depths:
            bad = {s: d for s, d in self.teacher.depths.items() if d < 1}
            if bad:
                raise ValueError(f"teacher.depths must be >= 1 per stack, got {bad}")
            teacher_depths, name = self.teacher.depths, f"teacher.depths {self.teacher.depths}"
        else:
            return self
        depth = self.student.depth
        student_depths = depth if isinstance(depth, dict) else {s: depth for s in teacher_depths}
        if set(student_depths) != set(teacher_depths):
            raise ValueError(f"student.depth names stacks {sorted(student_depths)}; {name} has {sorted(teacher_depths)}")
        for stack, d in student_depths.items():
            if d > teacher_depths[stack] and (set(self.sweep.strategies) - {"all_to_one", "none", "custom"}
                                              or "teacher" in self.sweep.inits):
                raise ValueError(f"student.depth ({stack}) {d} exceeds the teacher's {teacher_depths[stack]} blocks")
        return self


class _Attrs:
    def __init__(self, mapping: dict[str, Any]) -> None:
        self.__dict__.update(mapping)

    def __getattr__(self, name: str) -> Any:
        error = AttributeError(name)
        error.name = name
        raise error


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
        raise ConfigError(f"override {override!r}: the value is not valid YAML ({str(error).splitlines()[0]})") from None


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
    return f"{loc or '<top>'}: {message}" + ("" if error["type"] in ("missing",) else f" (got {shown})")
