"""Distillation losses: hidden-state matching over a layer map, prediction KD, weighted total.

total = w_ce * CE + w_kd * KD + w_hidden * hidden  (the paper uses 1, 1, 3).

Hidden-state matching, per stack over the pairs ``(s, t)`` of its layer map, each step a registered
function (users add their own the same way they add a strategy):

1. normalisation of both states (`HIDDEN_NORMS`): ``none`` (released BERT/BART code), ``layer_zscore``
   (each matched state z-scored over its valid tokens and width, released T5), ``token_l2`` (each token
   vector L2-normalised, released Qwen3);
2. a per-position loss (`HIDDEN_KINDS`): ``mse`` gives the elementwise squared error ``e[b, i, d] =
   (s - t)^2``, ``cosine`` gives ``e[b, i] = 1 - cos(s, t)`` per token;
3. a reduction of ``e`` over the valid (non-pad) positions (`HIDDEN_REDUCTIONS`), with N the number of
   valid positions in the batch, B the batch size and D the width (1 for cosine):
   - ``element_mean``: sum(e over valid positions and width) / (N * D), the per-element mean, which is
     PyTorch's ``MSELoss`` as the released T5, BART and Qwen3 code uses it;
   - ``bert_released``: sum(e over valid positions and width) / (B * N), the released BERT code's scale
     (per token summed over the width, summed over tokens, divided by batch size x valid tokens) =
     ``element_mean * D / B``: at width 384 and batch 32 its weight 3 is about weight 36 of ``element_mean``;
4. pairs: ``pair_reduction`` ``mean`` (released BERT) or ``sum`` (released T5/BART); stacks are summed
   (encoder + decoder, as the paper does).

When widths differ, a trained `nn.Linear` per matched student state maps student states to the teacher
width (`Projections`, registered on the student so it is optimised and saved: the released BERT code
kept it unregistered, a bug not copied here).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from raykd.config import LossConfig, LossSettings
from raykd.registry import Registry
from raykd.strategies import LayerMap

HIDDEN_NORMS: Registry = Registry("hidden-state normalisation")
HIDDEN_KINDS: Registry = Registry("hidden-state loss")
HIDDEN_REDUCTIONS: Registry = Registry("hidden-loss reduction")
PAIR_REDUCTIONS = ("mean", "sum")
PROJECTION_ATTR = "raykd_projections"

__all__ = ["LossConfig", "Projections", "check_loss_settings", "hidden_loss", "prediction_kd", "total_loss"]


def check_loss_settings(settings: LossSettings, where: str = "distill.loss") -> None:
    """Raise a ValueError naming the field when a registry-backed name is unknown."""
    for field, registry in (
        ("hidden_kind", HIDDEN_KINDS),
        ("hidden_norm", HIDDEN_NORMS),
        ("hidden_reduction", HIDDEN_REDUCTIONS),
    ):
        name = getattr(settings, field)
        if name not in registry:
            raise ValueError(f"{where}.{field} must be one of {registry.names()}, got {name!r}")


# --- normalisations: fn(hidden [batch, seq, width], mask [batch, seq]) -> same shape ----------------


@HIDDEN_NORMS.register("none")
def _no_norm(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return hidden


@HIDDEN_NORMS.register("token_l2")
def _token_l2(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return F.normalize(hidden, dim=-1)


@HIDDEN_NORMS.register("layer_zscore")
def _layer_zscore(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = masked_mean(hidden, mask)
    var = masked_mean((hidden - mean) ** 2, mask)
    return (hidden - mean) / (var + 1e-6).sqrt()


# --- per-position losses: fn(student, teacher) -> [batch, seq, width] or [batch, seq] ---------------


@HIDDEN_KINDS.register("mse")
def _squared_error(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return (student - teacher) ** 2


@HIDDEN_KINDS.register("cosine")
def _cosine_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(student, teacher, dim=-1)


# --- reductions over valid positions: fn(values, mask [batch, seq]) -> scalar ------------------------


@HIDDEN_REDUCTIONS.register("element_mean")
def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values [batch, seq, ...]`` over the positions where ``mask [batch, seq]`` is true (and
    every trailing element): sum / (N * D). 0 when no position is valid."""
    mask = mask.to(values.dtype)
    while mask.dim() < values.dim():
        mask = mask.unsqueeze(-1)
    per_position = values[0, 0].numel() if values.dim() > 2 else 1
    return (values * mask).sum() / (mask.sum() * per_position).clamp_min(1.0)


@HIDDEN_REDUCTIONS.register("bert_released")
def _bert_released(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum over valid positions and width / (batch size * valid positions), the released BERT code."""
    weights = mask.to(values.dtype)
    while weights.dim() < values.dim():
        weights = weights.unsqueeze(-1)
    return (values * weights).sum() / (mask.shape[0] * mask.sum()).clamp_min(1).to(values.dtype)


def normalise_hidden(hidden: torch.Tensor, mask: torch.Tensor, norm: str) -> torch.Tensor:
    """Apply a registered normalisation (`HIDDEN_NORMS`) to ``hidden [batch, seq, width]``."""
    return HIDDEN_NORMS.get(norm)(hidden, mask)


def pair_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    mask: torch.Tensor,
    *,
    kind: str = "mse",
    reduction: str = "element_mean",
) -> torch.Tensor:
    """Loss between two ``[batch, seq, width]`` states over the valid positions of ``mask``."""
    return HIDDEN_REDUCTIONS.get(reduction)(HIDDEN_KINDS.get(kind)(student, teacher), mask)


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

    Returns None (and registers nothing) when the student already has the teacher's width. Their initial
    weights come from torch's global RNG (seed it first). The keys are recorded in
    ``student.config.raykd["projections"]`` so `load_student` rebuilds them.
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


def hidden_loss(
    student_states: Mapping[str, Sequence[torch.Tensor]],
    teacher_states: Mapping[str, Sequence[torch.Tensor]],
    layer_maps: Mapping[str, LayerMap],
    masks: Mapping[str, torch.Tensor],
    *,
    kind: str = "mse",
    norm: str = "none",
    reduction: str = "element_mean",
    pair_reduction: str = "mean",
    projections: Projections | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Hidden-state matching loss summed over stacks; also returns each stack's term.

    `student_states[stack][k]` is ``[batch, seq, student_width]`` (k = 0 embeddings, k = block k);
    teacher likewise. A stack with no pairs contributes 0. The steps are described in this module's
    docstring.
    """
    if pair_reduction not in PAIR_REDUCTIONS:
        raise ValueError(f"pair_reduction must be one of {PAIR_REDUCTIONS}, got {pair_reduction!r}")
    normalise, per_position, reduce = HIDDEN_NORMS.get(norm), HIDDEN_KINDS.get(kind), HIDDEN_REDUCTIONS.get(reduction)
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
            terms.append(reduce(per_position(normalise(student_hidden, mask), normalise(teacher_hidden, mask)), mask))
        stacked = torch.stack(terms)
        per_stack[stack] = stacked.mean() if pair_reduction == "mean" else stacked.sum()
    if not per_stack:
        first = next(iter(student_states.values()))[0]
        return first.new_zeros(()), {}
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


def total_loss(ce: torch.Tensor, kd: torch.Tensor, hidden: torch.Tensor, config: LossConfig) -> torch.Tensor:
    """w_ce * CE + w_kd * KD + w_hidden * hidden."""
    return config.ce * ce + config.kd * kd + config.hidden * hidden
