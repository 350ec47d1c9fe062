"""The frozen teacher as the training loop sees it: one object, one method.

``teacher.outputs(batch) -> (outputs, stacks)``: the prediction outputs (``.logits``) and the hidden
states per stack (``{stack: [state 0, ..., state T]}``, ``[batch, seq, width]`` each) that a batch
needs. `LiveTeacher` runs the model; `raykd.train.teacher_cache.CachedTeacher` reads the same things
from the study's shared cache (layers it does not hold are None). The loop never needs to know which.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from raykd.families import Family, family_of
from raykd.train.batches import Batch, model_inputs


class FrozenTeacher(Protocol):
    def outputs(self, batch: Batch) -> tuple[Any, dict[str, list[torch.Tensor | None]]]: ...


class LiveTeacher:
    """A frozen Hugging Face model run under `torch.no_grad` in eval mode."""

    def __init__(self, model: nn.Module, *, final_norm: str = "as_returned", family: Family | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.family = family or family_of(model)
        self.final_norm = final_norm

    @torch.no_grad()
    def outputs(self, batch: Batch):
        return self.family.forward(self.model, model_inputs(batch), final_norm=self.final_norm)


def as_teacher(teacher: nn.Module | FrozenTeacher | None, final_norm: str = "as_returned") -> FrozenTeacher | None:
    """A `FrozenTeacher` for a model (wrapped live), a teacher object (as is) or None."""
    if teacher is None or not isinstance(teacher, nn.Module):
        return teacher
    return LiveTeacher(teacher, final_norm=final_norm)
