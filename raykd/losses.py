"""Distillation losses: hidden-state matching over a layer map, prediction KD, weighted total.

total = w_ce * CE + w_kd * KD + w_hidden * hidden  (the paper uses 1, 1, 3).

Hidden-state matching (per stack, over the pairs of its layer map; stacks summed, as the paper
sums encoder and decoder losses):
- ``mse``: squared error, mean over valid (non-pad) tokens and width, then over pairs
  (``pair_reduction="mean"``, the released BERT code) or summed (``"sum"``, the released T5 code);
- ``cosine``: 1 - cos(student, teacher) per valid token, mean over tokens;
- normalisation before either: ``none`` (released BERT/BART), ``layer_zscore`` (each matched
  state z-scored over its valid tokens and width, released T5), ``token_l2`` (each token vector
  L2-normalised, released Qwen3).
When widths differ, a trained `nn.Linear` per matched student state maps student states to the
teacher width (`Projections`, registered on the student so it is optimised and saved: the
released BERT code kept it unregistered, a bug not copied here).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from raykd.strategies import LayerMap

HIDDEN_NORMS = ("none", "layer_zscore", "token_l2")
HIDDEN_KINDS = ("mse", "cosine")
PAIR_REDUCTIONS = ("mean", "sum")
PROJECTION_ATTR = "raykd_projections"


@dataclass(frozen=True)
class LossConfig:
    """Weights and options of the distillation objective."""

    ce: float = 1.0
    kd: float = 1.0
    hidden: float = 3.0
    temperature: float = 1.0
    hidden_kind: str = "mse"
    hidden_norm: str = "none"
    pair_reduction: str = "mean"

    def __post_init__(self) -> None:
        for name in ("ce", "kd", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"loss weight {name} must be a number >= 0, got {value!r}")
        if not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        for name, allowed in (
            ("hidden_kind", HIDDEN_KINDS),
            ("hidden_norm", HIDDEN_NORMS),
            ("pair_reduction", PAIR_REDUCTIONS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


class Projections(nn.Module):
    """Trainable ``Linear(student_width, teacher_width)`` per matched student state.

    Keys are ``"<stack>_<student index>"`` (e.g. ``"encoder_2"``).
    """

    def __init__(self, keys: Iterable[str], student_width: int, teacher_width: int) -> None:
        super().__init__()
        self.layers = nn.ModuleDict({key: nn.Linear(student_width, teacher_width) for key in sorted(set(keys))})

    def forward(self, stack: str, index: int, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: ``[batch, seq, student_width]`` -> ``[batch, seq, teacher_width]``."""
        return self.layers[projection_key(stack, index)](hidden)


def projection_key(stack: str, index: int) -> str:
    return f"{stack}_{index}"


def projection_keys(layer_maps: Mapping[str, LayerMap] | Iterable[Mapping[str, LayerMap]]) -> list[str]:
    """Keys of every student state matched in one set of layer maps, or in several (e.g. RAIL epochs)."""
    all_maps = [layer_maps] if isinstance(layer_maps, Mapping) else list(layer_maps)
    return sorted({projection_key(stack, s) for maps in all_maps for stack, pairs in maps.items() for s, _ in pairs})


def attach_projections(student: nn.Module, keys: Sequence[str], teacher_width: int) -> Projections | None:
    """Register projections on `student` (as ``student.raykd_projections``) when widths differ.

    Returns None (and registers nothing) when the student already has the teacher's width.
    The keys are recorded in ``student.config.raykd["projections"]`` so `load_student` rebuilds them.
    """
    student_width = student.get_input_embeddings().embedding_dim
    if student_width == teacher_width or not keys:
        return None
    projections = Projections(keys, student_width, teacher_width)
    student.add_module(PROJECTION_ATTR, projections)
    meta = dict(getattr(student.config, "raykd", None) or {})
    meta["projections"] = {"keys": sorted(set(keys)), "teacher_width": teacher_width}
    student.config.raykd = meta
    return projections


def get_projections(student: nn.Module) -> Projections | None:
    return getattr(student, PROJECTION_ATTR, None)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values [batch, seq, ...]`` over the positions where ``mask [batch, seq]`` is true."""
    mask = mask.to(values.dtype)
    while mask.dim() < values.dim():
        mask = mask.unsqueeze(-1)
    per_position = values[0, 0].numel() if values.dim() > 2 else 1
    return (values * mask).sum() / (mask.sum() * per_position).clamp_min(1.0)


def normalise_hidden(hidden: torch.Tensor, mask: torch.Tensor, norm: str) -> torch.Tensor:
    """Apply a `HIDDEN_NORMS` normalisation to ``hidden [batch, seq, width]``."""
    if norm == "none":
        return hidden
    if norm == "token_l2":
        return F.normalize(hidden, dim=-1)
    if norm == "layer_zscore":
        mean = masked_mean(hidden, mask)
        var = masked_mean((hidden - mean) ** 2, mask)
        return (hidden - mean) / (var + 1e-6).sqrt()
    raise ValueError(f"hidden_norm must be one of {HIDDEN_NORMS}, got {norm!r}")


def pair_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, *, kind: str = "mse") -> torch.Tensor:
    """Loss between two ``[batch, seq, width]`` states over the valid positions of ``mask``."""
    if kind == "mse":
        return masked_mean((student - teacher) ** 2, mask)
    if kind == "cosine":
        return masked_mean(1.0 - F.cosine_similarity(student, teacher, dim=-1), mask)
    raise ValueError(f"hidden_kind must be one of {HIDDEN_KINDS}, got {kind!r}")


def hidden_loss(
    student_states: Mapping[str, Sequence[torch.Tensor]],
    teacher_states: Mapping[str, Sequence[torch.Tensor]],
    layer_maps: Mapping[str, LayerMap],
    masks: Mapping[str, torch.Tensor],
    *,
    kind: str = "mse",
    norm: str = "none",
    pair_reduction: str = "mean",
    projections: Projections | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Hidden-state matching loss summed over stacks; also returns each stack's term.

    `student_states[stack][k]` is ``[batch, seq, student_width]`` (k = 0 embeddings, k = block k);
    teacher likewise. A stack with no pairs contributes 0.
    """
    per_stack: dict[str, torch.Tensor] = {}
    for stack, pairs in layer_maps.items():
        if not pairs:
            continue
        mask = masks[stack]
        terms = []
        for s, t in pairs:
            student_hidden = student_states[stack][s]
            if projections is not None:
                student_hidden = projections(stack, s, student_hidden)
            teacher_hidden = teacher_states[stack][t].to(student_hidden.dtype)
            terms.append(
                pair_loss(
                    normalise_hidden(student_hidden, mask, norm),
                    normalise_hidden(teacher_hidden, mask, norm),
                    mask,
                    kind=kind,
                )
            )
        stacked = torch.stack(terms)
        per_stack[stack] = stacked.mean() if pair_reduction == "mean" else stacked.sum()
    if not per_stack:
        return _zero_like(student_states), {}
    return torch.stack(list(per_stack.values())).sum(), per_stack


def prediction_kd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened outputs, scaled by temperature^2.

    Sequence level: logits ``[batch, classes]``, mean over the batch. Token level: logits
    ``[batch, seq, vocab]`` with ``mask [batch, seq]`` of the target positions, mean over them.
    Computed in float32.
    """
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="none").sum(-1)
    kl = kl.mean() if mask is None else masked_mean(kl, mask)
    return kl * temperature**2


def total_loss(
    ce: torch.Tensor, kd: torch.Tensor, hidden: torch.Tensor, config: LossConfig
) -> torch.Tensor:
    """w_ce * CE + w_kd * KD + w_hidden * hidden."""
    return config.ce * ce + config.kd * kd + config.hidden * hidden


def _zero_like(states: Mapping[str, Sequence[torch.Tensor]]) -> torch.Tensor:
    first = next(iter(states.values()))[0]
    return first.new_zeros(())
