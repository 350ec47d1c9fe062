"""The one reader (and naming) of a finished teacher stage's folder.

``<study dir>/teacher/<key>/`` (key: a hash of the task, the teacher config and the precision) holds
``model/`` (weights and tokenizer, `save_pretrained`), ``data/`` (the tokenized splits,
`datasets.save_to_disk`), ``info.json`` (task facts, family, depths, width, metric, baseline) and
``metrics.json``. Trials, the cache stage and the analysis all read it through `TeacherFolder`.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

from raykd.config import StudyConfig, config_hash


def teacher_key(config: StudyConfig) -> str:
    return config_hash(
        {
            "task": config.task.model_dump(mode="json"),
            "teacher": config.teacher.model_dump(mode="json"),
            "precision": config.compute.precision,
        }
    )


class TeacherFolder:
    """Read-only view of a teacher stage's output; every part is loaded on first use."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def of(cls, study_dir: str | Path, config: StudyConfig) -> TeacherFolder:
        return cls(Path(study_dir) / "teacher" / teacher_key(config))

    @property
    def complete(self) -> bool:
        return (self.path / "metrics.json").is_file()

    @cached_property
    def info(self) -> dict[str, Any]:
        return json.loads((self.path / "info.json").read_text())

    @cached_property
    def metrics(self) -> dict[str, float]:
        return json.loads((self.path / "metrics.json").read_text())

    @property
    def depths(self) -> dict[str, int]:
        return dict(self.info["depths"])

    @property
    def family(self):

        from raykd.families import FAMILIES

        return FAMILIES.get(self.info["family"])

    def task(self, config: StudyConfig):
        """The study's task with the facts the teacher stage resolved (label names, columns)."""
        from raykd.tasks import build_task

        task = build_task(config.task)
        task.restore(self.info)
        return task

    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path / "model")

    def model(self, task, device: str = "cpu"):
        """The fine-tuned teacher, frozen, in eval mode on `device`."""
        from raykd.models import auto_class

        return auto_class(task).from_pretrained(self.path / "model").to(device).eval().requires_grad_(False)

    def skeleton(self, task):
        """The teacher's modules on the meta device: its class and config, no weights (nothing allocated)."""
        import torch
        import transformers

        from raykd.models import auto_class

        config = transformers.AutoConfig.from_pretrained(self.path / "model")
        with torch.device("meta"):
            return auto_class(task).from_config(config).eval().requires_grad_(False)

    def data(self):
        """The tokenized splits (a `datasets.DatasetDict`, memory-mapped from disk)."""
        import datasets

        return datasets.load_from_disk(str(self.path / "data"))


def teacher_gain(info: dict[str, Any], metrics: dict[str, float], points_per_unit: float) -> float | None:
    """How far the teacher beats its task's trivial baseline on test, in metric points (None if unknown)."""
    metric, baseline = info.get("metric"), info.get("baseline") or {}
    if metric is None or metric not in baseline or f"test/{metric}" not in metrics:
        return None
    return (metrics[f"test/{metric}"] - baseline[metric]) * points_per_unit


def inputs_at_max_length_line(info: dict[str, Any]) -> str:
    counts = info.get("inputs_at_max_length") or {}
    return ", ".join(f"{split} {n}" for split, n in counts.items())
