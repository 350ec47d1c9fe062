"""Batches as the loop sees them: model inputs plus, optionally, each example's row in its split.

A batch that carries ``raykd_index`` lets a cached teacher look its outputs up by example (correct
under any shuffling, length grouping, DDP sharding or resume); models never see that key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

INDEX = "raykd_index"  # the batch key that carries each example's row in the training split
Batch = Mapping[str, torch.Tensor]


def with_index(collate: Callable[[list[Mapping[str, Any]]], dict[str, torch.Tensor]]):
    """Wrap a collator so batches also carry ``raykd_index`` (examples need a ``raykd_index`` column)."""

    def collate_indexed(features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = collate(features)
        batch[INDEX] = torch.tensor([int(f[INDEX]) for f in features], dtype=torch.long)
        return batch

    return collate_indexed


def model_inputs(batch: Batch) -> dict[str, torch.Tensor]:
    """The batch without the index column (what a model's forward takes)."""
    return {k: v for k, v in batch.items() if k != INDEX}


def to_device(batch: Batch, device: torch.device | str | None) -> dict[str, torch.Tensor]:
    return dict(batch) if device is None else {k: v.to(device) for k, v in batch.items()}
