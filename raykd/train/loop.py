"""The plain PyTorch distillation loop. No Ray, no MLflow: tests and benchmarks call it directly,
and the Ray Train worker wraps it (checkpointing, reporting) without living inside it.

One step: the frozen teacher and the student run on the same batch with hidden states; the
student is trained on w_ce*CE + w_kd*KD + w_hidden*hidden over the pairs of the layer maps.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raykd.families import Family, family_of
from raykd.losses import LossConfig, get_projections, hidden_loss, prediction_kd, total_loss
from raykd.strategies import LayerMap
from raykd.train.teacher_cache import CachedTeacher, model_inputs

LayerMaps = Mapping[str, LayerMap]
LayerMapsFn = Callable[[int], LayerMaps]  # epoch -> layer maps (RAIL re-draws them every epoch)
Batch = Mapping[str, torch.Tensor]


@dataclass
class StepResult:
    """One optimisation step: loss terms as floats, examples in the batch, wall seconds."""

    epoch: int
    step: int
    terms: dict[str, float]
    examples: int
    seconds: float

    @property
    def finite(self) -> bool:
        return all(math.isfinite(v) for v in self.terms.values())


@dataclass
class DistillResult:
    """What `distill` did: ``status`` is ``finished`` or ``diverged`` (a non-finite loss)."""

    status: str
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (or similar ``.module``) wrapper."""
    return getattr(model, "module", model)


def distill_loss(
    teacher: nn.Module | None,
    student: nn.Module,
    batch: Batch,
    layer_maps: LayerMaps,
    loss: LossConfig,
    *,
    final_norm: str = "as_returned",
    family: Family | None = None,
) -> dict[str, torch.Tensor]:
    """Loss terms of one batch: ``total``, ``ce``, ``kd``, ``hidden`` and ``hidden/<stack>``.

    The teacher runs under `torch.no_grad` and only when a term needs it (KD weight > 0, or a
    hidden weight > 0 with pairs to match).
    """
    family = family or family_of(unwrap(student))
    has_pairs = any(layer_maps.values())
    need_teacher = loss.kd > 0 or (loss.hidden > 0 and has_pairs)
    if need_teacher and teacher is None:
        raise ValueError("this loss needs a teacher (kd > 0, or hidden > 0 with layer pairs), got teacher=None")
    student_out, student_states = family.forward(student, model_inputs(batch), final_norm=final_norm)
    zero = student_out.logits.new_zeros((), dtype=torch.float32)
    ce = student_out.loss if student_out.loss is not None else zero
    kd, hidden, per_stack = zero, zero, {}
    if need_teacher:
        teacher_out, teacher_states = teacher_outputs(teacher, batch, family, final_norm)
        if loss.kd > 0:
            kd = prediction_kd(
                student_out.logits,
                teacher_out.logits,
                temperature=loss.temperature,
                mask=family.prediction_mask(batch, student_out.logits),
            )
        if loss.hidden > 0 and has_pairs:
            hidden, per_stack = hidden_loss(
                student_states,
                teacher_states,
                layer_maps,
                family.hidden_masks(batch),
                kind=loss.hidden_kind,
                norm=loss.hidden_norm,
                pair_reduction=loss.pair_reduction,
                projections=get_projections(unwrap(student)),
            )
    terms = {"total": total_loss(ce, kd, hidden, loss), "ce": ce, "kd": kd, "hidden": hidden}
    terms.update({f"hidden/{stack}": value for stack, value in per_stack.items()})
    return terms


@torch.no_grad()
def teacher_outputs(teacher, batch: Batch, family: Family, final_norm: str = "as_returned"):
    """(outputs, hidden stacks) of the frozen teacher: a live forward, or a lookup in a `CachedTeacher`."""
    if isinstance(teacher, CachedTeacher):
        return teacher.outputs(batch)
    return family.forward(teacher, model_inputs(batch), final_norm=final_norm)


def native_bf16(device: torch.device | str | None = None) -> bool:
    """Whether `device` computes bf16 natively: a CUDA GPU that supports it, or an x86 CPU with
    AVX512-BF16 or AMX (elsewhere CPU bf16 is emulated and slower than fp32)."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(setting: str, device: torch.device | str | None = None) -> str:
    """``auto`` -> ``bf16`` where the device computes it natively, else ``fp32``; others as given."""
    if setting not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {setting!r}")
    if setting == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return setting


def autocast(precision: str, device: torch.device | str | None):
    """The autocast context of a precision (``fp32``: none). Weights and optimiser state stay fp32."""
    device_type = torch.device(device or "cpu").type
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)  # resolve_precision allows fp32 and bf16 only


def distill_steps(
    teacher: nn.Module | None,
    student: nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    *,
    layer_maps: LayerMaps,
    loss: LossConfig,
    epoch: int = 0,
    scheduler: Any = None,
    grad_clip: float | None = 1.0,
    final_norm: str = "as_returned",
    device: torch.device | str | None = None,
    precision: str = "fp32",
) -> Iterator[StepResult]:
    """Train `student` over `batches` (one epoch), yielding a `StepResult` after every step.

    A step whose loss is not finite yields its terms without updating the weights, so the
    caller can stop the run as diverged with the last good weights intact.
    """
    family = family_of(unwrap(student))
    if isinstance(teacher, nn.Module):
        teacher.eval()
        teacher.requires_grad_(False)
    student.train()
    params = [p for p in student.parameters() if p.requires_grad]
    for step, batch in enumerate(batches):
        started = time.perf_counter()
        if device is not None:
            batch = {k: v.to(device) for k, v in batch.items()}
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, device):
            terms = distill_loss(teacher, student, batch, layer_maps, loss, final_norm=final_norm, family=family)
        total = terms["total"]
        finite = bool(torch.isfinite(total))
        if finite:
            total.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        yield StepResult(
            epoch=epoch,
            step=step,
            terms={k: float(v.detach()) for k, v in terms.items()},
            examples=int(batch["input_ids"].shape[0]),
            seconds=time.perf_counter() - started,
        )


def distill(
    teacher: nn.Module | None,
    student: nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    *,
    layer_maps: LayerMaps | LayerMapsFn,
    loss: LossConfig,
    epochs: int = 1,
    max_steps: int | None = None,
    scheduler: Any = None,
    grad_clip: float | None = 1.0,
    final_norm: str = "as_returned",
    device: torch.device | str | None = None,
    eval_fn: Callable[[nn.Module], Mapping[str, float]] | None = None,
    eval_every: int | None = None,
    on_step: Callable[[StepResult], None] | None = None,
    precision: str = "fp32",
) -> DistillResult:
    """Run distillation for `epochs` (or `max_steps`); evaluate with `eval_fn` every `eval_every`
    steps and at the end. `layer_maps` may be a function of the epoch (RAIL). Stops at the first
    non-finite loss with ``status="diverged"``.
    """
    result = DistillResult(status="finished", steps=0)

    def evaluate() -> None:
        student.eval()
        with torch.no_grad():
            metrics = dict(eval_fn(student))
        student.train()
        result.evals.append({"step": result.steps, **metrics})

    for epoch in range(epochs):
        maps = layer_maps(epoch) if callable(layer_maps) else layer_maps
        for step in distill_steps(
            teacher, student, batches, optimizer, layer_maps=maps, loss=loss, epoch=epoch,
            scheduler=scheduler, grad_clip=grad_clip, final_norm=final_norm, device=device, precision=precision,
        ):
            if on_step is not None:
                on_step(step)
            result.history.append({"epoch": epoch, "step": result.steps, **step.terms})
            if not step.finite:
                result.status = "diverged"
                return result
            result.steps += 1
            if eval_fn is not None and eval_every and result.steps % eval_every == 0:
                evaluate()
            if max_steps is not None and result.steps >= max_steps:
                break
        if max_steps is not None and result.steps >= max_steps:
            break
    if eval_fn is not None and (not result.evals or result.evals[-1]["step"] != result.steps):
        evaluate()
    return result


@torch.no_grad()
def evaluate_loss(
    teacher: nn.Module | None,
    student: nn.Module,
    batches: Iterable[Batch],
    *,
    layer_maps: LayerMaps,
    loss: LossConfig,
    final_norm: str = "as_returned",
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Example-weighted mean of every loss term over `batches` (an evaluation hook for `distill`)."""
    was_training = student.training
    student.eval()
    if teacher is not None:
        teacher.eval()
    sums: dict[str, float] = {}
    count = 0
    for batch in batches:
        if device is not None:
            batch = {k: v.to(device) for k, v in batch.items()}
        n = int(batch["input_ids"].shape[0])
        for key, value in distill_loss(teacher, student, batch, layer_maps, loss, final_norm=final_norm).items():
            sums[key] = sums.get(key, 0.0) + float(value) * n
        count += n
    student.train(was_training)
    return {key: value / max(count, 1) for key, value in sums.items()}


def finetune(
    model: nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    **kwargs: Any,
) -> DistillResult:
    """Plain supervised training (CE only, no teacher): the same loop as `distill`.

    Used to fine-tune teachers and to train no-KD student baselines.
    """
    kwargs.setdefault("layer_maps", {})
    return distill(None, model, batches, optimizer, loss=LossConfig(ce=1.0, kd=0.0, hidden=0.0), **kwargs)
