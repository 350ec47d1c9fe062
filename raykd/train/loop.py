"""The plain PyTorch distillation loop. No Ray, no MLflow: tests and benchmarks call it directly, the
teacher stage fine-tunes with it, and a study's trial (`raykd.train.run`) runs through it with hooks.

One step: the frozen teacher (live or cached, `raykd.train.frozen`) and the student see the same batch;
the student is trained on w_ce*CE + w_kd*KD + w_hidden*hidden over the pairs of the layer maps.

`distill` owns the epoch/step bookkeeping (`LoopState`), so resuming is handing it the state a
checkpoint saved: it skips the batches of the current epoch already trained on and goes on exactly.
What differs between jobs (logging, validation, checkpoints, fault injection in tests) comes in as hooks.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from raykd.devices import native_bf16
from raykd.families import Family, family_of
from raykd.losses import LossConfig, get_projections, hidden_loss, prediction_kd, total_loss
from raykd.strategies import LayerMap
from raykd.train.batches import Batch, model_inputs, to_device
from raykd.train.frozen import FrozenTeacher, as_teacher

LayerMaps = Mapping[str, LayerMap]
LayerMapsFn = Callable[[int], LayerMaps]  # epoch -> layer maps (RAIL re-draws them every epoch)
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class StepResult:
    """One optimisation step: loss terms as floats, examples in the batch, wall seconds."""

    epoch: int
    step: int
    terms: dict[str, float]
    examples: int
    seconds: float
    finite: bool = True  # agreed across ranks: a non-finite loss on any rank makes every rank skip the step


@dataclass
class LoopState:
    """Where a run is: what a checkpoint saves and a resumed run starts from."""

    epoch: int = 0
    step: int = 0  # optimisation steps done
    step_in_epoch: int = 0  # batches of the current epoch already trained on

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


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
    teacher: nn.Module | FrozenTeacher | None,
    student: nn.Module,
    batch: Batch,
    layer_maps: LayerMaps,
    loss: LossConfig,
    *,
    final_norm: str = "as_returned",
    family: Family | None = None,
) -> dict[str, torch.Tensor]:
    """Loss terms of one batch: ``total``, ``ce``, ``kd``, ``hidden`` and ``hidden/<stack>``.

    The teacher is asked for its outputs only when a term needs them (KD weight > 0, or a hidden
    weight > 0 with pairs to match).
    """
    family = family or family_of(unwrap(student))
    has_pairs = any(layer_maps.values())
    need_teacher = loss.kd > 0 or (loss.hidden > 0 and has_pairs)
    teacher = as_teacher(teacher, final_norm)
    if need_teacher and teacher is None:
        raise ValueError("this loss needs a teacher (kd > 0, or hidden > 0 with layer pairs), got teacher=None")
    student_out, student_states = family.forward(student, model_inputs(batch), final_norm=final_norm)
    zero = student_out.logits.new_zeros((), dtype=torch.float32)
    ce = student_out.loss if student_out.loss is not None else zero
    kd, hidden, per_stack = zero, zero, {}
    if need_teacher:
        teacher_out, teacher_states = teacher.outputs(batch)
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
                reduction=loss.hidden_reduction,
                pair_reduction=loss.pair_reduction,
                projections=get_projections(unwrap(student)),
            )
    terms = {"total": total_loss(ce, kd, hidden, loss), "ce": ce, "kd": kd, "hidden": hidden}
    terms.update({f"hidden/{stack}": value for stack, value in per_stack.items()})
    return terms


def resolve_precision(setting: str, device: torch.device | str | None = None) -> str:
    """``auto`` -> ``bf16`` where the device computes it natively, else ``fp32``; others as given."""
    if setting not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {setting!r}")
    if setting == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return setting


def autocast(precision: str, device: torch.device | str | None):
    """The autocast context of a precision (``fp32``: none). Weights and optimiser state stay fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device or "cpu").type, dtype=torch.bfloat16)


def agree_finite(finite: bool, device: torch.device | str | None) -> bool:
    """True only if the loss is finite on every rank (one all-reduce when torch.distributed runs with more
    than one rank), so that all ranks skip a bad step together instead of one waiting in DDP's all-reduce."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return finite
    flag = torch.tensor([1.0 if finite else 0.0], device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)


def distill_steps(
    teacher: nn.Module | FrozenTeacher | None,
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
    """Train `student` over `batches`, yielding a `StepResult` after every step.

    A step whose loss is not finite (on any rank) yields its terms without updating the weights, so the
    caller can stop the run as diverged with the last good weights intact.
    """
    family = family_of(unwrap(student))
    teacher = as_teacher(teacher, final_norm)
    student.train()
    params = [p for p in student.parameters() if p.requires_grad]
    for step, batch in enumerate(batches):
        started = time.perf_counter()
        batch = to_device(batch, device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, device):
            terms = distill_loss(teacher, student, batch, layer_maps, loss, final_norm=final_norm, family=family)
        total = terms["total"]
        finite = agree_finite(bool(torch.isfinite(total)), device)
        if finite:
            total.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        values = {k: float(v.detach()) for k, v in terms.items()}
        yield StepResult(
            epoch=epoch,
            step=step,
            terms=values,
            examples=int(batch["input_ids"].shape[0]),
            seconds=time.perf_counter() - started,
            finite=finite and all(map(math.isfinite, values.values())),
        )


def distill(
    # long: the signature is the loop's whole public surface (20 keyword options); the body is ~35 lines
    teacher: nn.Module | FrozenTeacher | None,
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
    precision: str = "fp32",
    eval_fn: Callable[[nn.Module], Mapping[str, float]] | None = None,
    eval_every: int | None = None,
    eval_each_epoch: bool = False,
    state: LoopState | None = None,
    on_step: Callable[[StepResult], None] | None = None,
    on_eval: Callable[[LoopState], None] | None = None,
    keep_history: bool = True,
) -> DistillResult:
    """Train for `epochs` (or `max_steps`), from `state` (a resumed run) or the start.

    Evaluation points: every `eval_every` steps and, with `eval_each_epoch`, every epoch end, except
    after the last step (the caller evaluates the end itself). At each point `on_eval(state)` runs and
    `eval_fn(student)` is recorded in ``evals``; `eval_fn` also runs once after the last step. `batches`
    may be a DataLoader (its sampler's ``set_epoch`` is called per epoch) and `layer_maps` a function of
    the epoch (RAIL). Stops at the first non-finite loss with ``status="diverged"``. `on_step` sees
    every step (a hook may raise to stop the run).
    """
    state = state or LoopState()
    run = _Run(student, state, eval_fn, on_eval, on_step, keep_history)
    limit = max_steps if max_steps is not None else math.inf
    for epoch in range(state.epoch, epochs):
        if state.step >= limit:
            break
        sampler = getattr(batches, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        steps = distill_steps(
            teacher,
            student,
            itertools.islice(batches, state.step_in_epoch, None),
            optimizer,
            layer_maps=layer_maps(epoch) if callable(layer_maps) else layer_maps,
            loss=loss,
            epoch=epoch,
            scheduler=scheduler,
            grad_clip=grad_clip,
            final_norm=final_norm,
            device=device,
            precision=precision,
        )
        outcome = run.epoch(steps, limit, eval_every)
        if outcome == "diverged":
            return run.result
        if outcome == "limit":
            break
        state.epoch, state.step_in_epoch = epoch + 1, 0
        if eval_each_epoch and state.step < limit and state.epoch < epochs:
            run.evaluate()
    if eval_fn is not None and (not run.result.evals or run.result.evals[-1]["step"] != state.step):
        run.evaluate(point=False)  # the end is the caller's to handle; only record eval_fn here
    return run.result


class _Run:
    """`distill`'s bookkeeping: the state, the result, and the hooks at each step and evaluation point."""

    def __init__(self, student, state: LoopState, eval_fn, on_eval, on_step, keep_history: bool) -> None:
        self.student, self.state, self.eval_fn, self.on_eval, self.on_step = student, state, eval_fn, on_eval, on_step
        self.keep_history = keep_history
        self.result = DistillResult(status="finished", steps=state.step)

    def epoch(self, steps: Iterator[StepResult], limit: float, eval_every: int | None) -> str:
        """Run one epoch's steps: ``diverged``, ``limit`` (the step limit reached) or ``exhausted``."""
        state, result = self.state, self.result
        for step in steps:
            state.step += 1
            state.step_in_epoch += 1
            result.steps = state.step
            if self.keep_history:
                result.history.append({"epoch": step.epoch, "step": state.step - 1, **step.terms})
            if self.on_step is not None:
                self.on_step(step)
            if not step.finite:
                result.status, result.steps = "diverged", state.step - 1
                return "diverged"
            if state.step >= limit:
                return "limit"
            if eval_every and state.step % eval_every == 0:
                self.evaluate()
        return "exhausted"

    def evaluate(self, point: bool = True) -> None:
        """An evaluation point (`on_eval`), and `eval_fn` recorded in the result."""
        if point and self.on_eval is not None:
            self.on_eval(self.state)
        if self.eval_fn is not None:
            self.student.eval()
            with torch.no_grad():
                metrics = dict(self.eval_fn(self.student))
            self.student.train()
            self.result.evals.append({"step": self.state.step, **metrics})


@torch.no_grad()
def evaluate_loss(
    teacher: nn.Module | FrozenTeacher | None,
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
    sums: dict[str, float] = {}
    count = 0
    for batch in batches:
        batch = to_device(batch, device)
        n = int(batch["input_ids"].shape[0])
        for key, value in distill_loss(teacher, student, batch, layer_maps, loss, final_norm=final_norm).items():
            sums[key] = sums.get(key, 0.0) + float(value) * n
        count += n
    student.train(was_training)
    return {key: value / max(count, 1) for key, value in sums.items()}


def finetune(
    model: nn.Module, batches: Iterable[Batch], optimizer: torch.optim.Optimizer, **kwargs: Any
) -> DistillResult:
    """Plain supervised training (CE only, no teacher): the same loop as `distill`.

    Used to fine-tune teachers and to train no-KD student baselines.
    """
    kwargs.setdefault("layer_maps", {})
    return distill(None, model, batches, optimizer, loss=LossConfig(ce=1.0, kd=0.0, hidden=0.0), **kwargs)
