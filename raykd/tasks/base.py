"""The task interface: load splits, tokenize with the teacher's tokenizer, collate with dynamic
padding, evaluate a model. The training loop stays task-agnostic: it sees model inputs only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader

from raykd.config import SPLITS, TaskConfig
from raykd.lazy import lazy_module
from raykd.tasks.data import DataError, column, describe, load_splits
from raykd.tasks.metrics import load_metric

datasets = lazy_module("datasets")

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


class Task:
    """Base class; subclasses set the class attributes and implement the hooks below."""

    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]  # every metric `evaluate` reports
    default_metric: ClassVar[str]
    auto_model: ClassVar[str]  # the transformers Auto class for models of this task
    sequence_level_logits: ClassVar[bool] = False  # one logits row per example (else one per target token)

    def __init__(self, config: TaskConfig) -> None:
        self.config = config
        self.metric = config.metric or self.default_metric
        self.higher_is_better = True
        self.info: dict[str, Any] = {}  # facts resolved while loading (label names, columns), for logging
        self._metric_modules: dict[str, Any] = {}

    # --- data -------------------------------------------------------------------------------------
    def load(self) -> datasets.DatasetDict:
        """Raw splits with the task's standard columns, validated (errors name split and column)."""
        splits = load_splits(self.config.data, stratify_column=self.stratify_column())
        out = datasets.DatasetDict({split: self.standardise(splits, split) for split in SPLITS})
        self.info["split_sizes"] = {split: len(out[split]) for split in SPLITS}
        self.info["split_fingerprints"] = {split: fingerprint(out[split]) for split in SPLITS}
        return out

    def stratify_column(self) -> str | None:
        return None

    def restore(self, info: dict[str, Any]) -> None:
        """Take the facts `load` found (e.g. in a Ray worker that reads the teacher stage's cache)."""
        self.info = dict(info)

    def standardise(self, splits: datasets.DatasetDict, split: str) -> datasets.Dataset:
        raise NotImplementedError

    def tokenize(self, splits: datasets.DatasetDict, tokenizer) -> datasets.DatasetDict:
        raise NotImplementedError

    def padder(self, tokenizer):
        """The transformers collator that pads this task's features (sequence labels with -100)."""
        from transformers import DataCollatorForSeq2Seq

        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, return_tensors="pt")

    def collator(self, tokenizer):
        """Pads model inputs per batch and drops non-tensor columns (references, prompt ids)."""
        pad = self.padder(tokenizer)

        def collate(features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
            return dict(pad([{k: f[k] for k in MODEL_INPUTS if k in f} for f in features]))

        return collate

    def dataloader(
        self,
        dataset: datasets.Dataset,
        tokenizer,
        *,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        group_by_length: bool = False,
    ) -> DataLoader:
        # always its own generator: iterating must not draw from the global RNG (dropout streams, checkpoints)
        generator = torch.Generator().manual_seed(seed)
        if group_by_length:  # similar lengths per batch (less padding), still randomised
            from transformers.trainer_pt_utils import LengthGroupedSampler

            sampler = LengthGroupedSampler(
                batch_size, lengths=[len(ids) for ids in column(dataset, "input_ids")], generator=generator
            )
            return DataLoader(
                dataset,
                batch_size=batch_size,
                sampler=sampler,
                collate_fn=self.collator(tokenizer),
                generator=torch.Generator().manual_seed(seed),
            )
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=self.collator(tokenizer)
        )

    def input_length_limit(self) -> int:
        """The longest input (in tokens) the tokenized data can hold; longer texts are truncated to it."""
        return self.config.max_source_length

    # --- models and metrics ---------------------------------------------------------------------
    def model_kwargs(self) -> dict[str, Any]:
        """Extra kwargs for building this task's model head (e.g. num_labels)."""
        return {}

    def evaluate(self, model, tokenizer, dataset: datasets.Dataset, *, device=None) -> dict[str, float]:
        raise NotImplementedError

    def trivial_baseline(self, data: datasets.DatasetDict, tokenizer, split: str = "test") -> dict[str, Any]:
        """The best trivial predictor's metrics on `split` (a teacher must beat it to be worth distilling):
        ``{"name": what it predicts, <metric>: value, ...}``."""
        raise NotImplementedError

    def compute(self, name: str, **kwargs) -> dict[str, Any]:
        if name not in self._metric_modules:
            self._metric_modules[name] = load_metric(name)
        return self._metric_modules[name].compute(**kwargs)

    # --- helpers --------------------------------------------------------------------------------
    def require_columns(self, dataset: datasets.Dataset, split: str, columns: Mapping[str, str]) -> None:
        for role, name in columns.items():
            if name not in dataset.column_names:
                raise DataError(
                    f"{describe(self.config.data)} split {split!r} has no column {name!r} (the {role} column); "
                    f"its columns are {dataset.column_names}; map another with task.data.columns.{role}"
                )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_metric_modules"] = {}  # evaluate modules hold file locks: reload after pickling
        return state


def fingerprint(dataset: datasets.Dataset) -> str:
    """A short hash of a split's content and order: equal fingerprints = the same examples."""
    digest = hashlib.sha256()
    for row in dataset.to_list():
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


@contextmanager
def eval_mode(model: torch.nn.Module):
    """Evaluate `model` in eval mode, then restore whatever mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def model_device(model: torch.nn.Module, device=None) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device
