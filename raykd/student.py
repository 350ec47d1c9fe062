"""Build a student from its teacher: depth per stack, optional width, random or copied init.

Initialisations (Yu, Wen & Mou 2025; docs/paper.md):
- ``random``: fresh weights from the teacher's config with S blocks per stack (and optionally
  another width), drawn from `seed`;
- ``teacher``: the teacher's non-block weights (embeddings, pooler, final norm) plus S teacher blocks
  chosen by a copy rule: ``matched`` (the forward set, 12->3 = [4, 8, 12], as the released BERT and
  BART code), ``spread`` (first..last evenly, 12->3 = [1, 7, 12], as the released T5 code) or an
  explicit list of teacher block indices. The task head (weights outside the base model) is copied or
  drawn fresh from `seed` (`copy_head`); by default a sequence classifier's head is drawn fresh, as the
  released BERT code does (a copied fine-tuned head starts the student at the teacher's accuracy and
  leaves nothing to distil), and LM heads are copied.
The copied set is independent of the matching strategy; both are recorded. What was built is
written to ``student.config.raykd`` (it travels with the config to MLflow and to checkpoints).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors.torch import load_model, save_model
from torch import nn

from raykd.config import INITS
from raykd.families import Family, family_of
from raykd.losses import attach_projections
from raykd.strategies import forward_targets, spread_targets

COPY_RULES = ("matched", "spread")
CopyRule = str | Sequence[int] | Mapping[str, Any]


def build_student(
    teacher: nn.Module,
    *,
    depth: int | Mapping[str, int],
    width: int | None = None,
    init: str = "random",
    copy_rule: CopyRule = "matched",
    seed: int = 0,
    copy_head: bool | None = None,
) -> nn.Module:
    """A student of the teacher's class with `depth` blocks per stack.

    `depth` is one int for every stack or a mapping stack -> blocks (encoder and decoder of a
    seq2seq model separately). Heads and FFN scale with `width` at a fixed head size.
    """
    family = family_of(teacher)
    if init not in INITS:
        raise ValueError(f"student init must be one of {INITS}, got {init!r}")
    teacher_depths = family.depths(teacher.config)
    depths = _resolve_depths(depth, teacher_depths)
    teacher_width = family.width(teacher.config)
    if width is not None and width != teacher_width and init == "teacher":
        raise ValueError(
            f"a student of width {width} cannot copy teacher blocks of width {teacher_width}; "
            "use init='random' or keep the teacher's width"
        )
    copied = (
        {s: copied_layers(copy_rule, depths[s], teacher_depths[s], stack=s) for s in depths}
        if init == "teacher"
        else {}
    )
    # Per-layer config lists (e.g. Qwen3 layer_types) follow the teacher blocks the student
    # blocks stand for: the copied ones, else the forward targets.
    stand_for = {s: copied.get(s) or forward_targets(depths[s], teacher_depths[s]) for s in depths}
    config = student_config(teacher.config, depths, width=width, stand_for=stand_for)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = type(teacher)(config)
    head_copied = None
    if init == "teacher":
        head_copied = default_copy_head(teacher) if copy_head is None else copy_head
        _copy_from_teacher(student, teacher, family, copied, copy_head=head_copied)
    student.config.raykd = {
        "init": init,
        "seed": seed,
        "depths": depths,
        "width": family.width(config),
        "teacher_depths": teacher_depths,
        "teacher_width": teacher_width,
        "copy_rule": (copy_rule if isinstance(copy_rule, str) else "explicit") if init == "teacher" else None,
        "copied_layers": copied,
        "copied_head": head_copied,
        "head": head_keys(student),
        "teacher": getattr(teacher.config, "name_or_path", "") or teacher.config.model_type,
    }
    return student


def student_config(
    teacher_config: Any,
    depths: Mapping[str, int],
    *,
    width: int | None = None,
    stand_for: Mapping[str, Sequence[int]] | None = None,
) -> Any:
    """The teacher's config with `depths` blocks per stack and, optionally, another width."""
    family = family_of(teacher_config)
    config = copy.deepcopy(teacher_config)
    for stack, key in family.depth_keys.items():
        if stack == "decoder" and family.kind == "decoder" and isinstance(getattr(config, "layer_types", None), list):
            teacher_types = list(config.layer_types)
            config.layer_types = (
                [teacher_types[t - 1] for t in stand_for[stack]] if stand_for else teacher_types[: depths[stack]]
            )
        setattr(config, key, depths[stack])
    if width is not None and width != family.width(config):
        _resize_width(config, family, width)
    return config


def copied_layers(rule: CopyRule, n_student: int, n_teacher: int, *, stack: str = "encoder") -> list[int]:
    """Teacher blocks (1-based) a teacher-initialised student copies into its blocks 1..S."""
    if isinstance(rule, Mapping):
        if stack not in rule:
            raise ValueError(f"copy rule has no entry for stack {stack!r}: {dict(rule)}")
        rule = rule[stack]
    if isinstance(rule, str):
        if rule not in COPY_RULES:
            raise ValueError(f"copy rule must be one of {COPY_RULES} or a list of teacher blocks, got {rule!r}")
        if n_student > n_teacher:
            raise ValueError(f"cannot copy {n_student} blocks from a teacher stack of {n_teacher}")
        return forward_targets(n_student, n_teacher) if rule == "matched" else spread_targets(n_student, n_teacher)
    layers = list(rule)
    if len(layers) != n_student or any(
        isinstance(i, bool) or not isinstance(i, int) or not 1 <= i <= n_teacher for i in layers
    ):
        raise ValueError(
            f"explicit copy list for {stack} must hold {n_student} teacher blocks in 1..{n_teacher}, got {layers}"
        )
    return layers


def default_copy_head(model: nn.Module) -> bool:
    """The paper's choice per head type: a sequence classifier's head is not copied, LM heads are."""
    return "ForSequenceClassification" not in type(model).__name__


def head_keys(model: nn.Module) -> list[str]:
    """State-dict prefixes of the task head: the weights outside the base model (e.g. ``classifier``)."""
    base = model.base_model
    if base is model:
        return []
    base_names = {f"{n}." for n, m in model.named_children() if m is base}
    return sorted({k.split(".")[0] for k in model.state_dict() if not any(k.startswith(b) for b in base_names)})


def save_student(student: nn.Module, directory: str | Path) -> Path:
    """Write config.json (with the raykd metadata) and model.safetensors, projections included."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    student.config.architectures = [type(student).__name__]
    student.config.save_pretrained(directory)
    save_model(student, str(directory / "model.safetensors"))
    return directory


def load_student(directory: str | Path) -> nn.Module:
    """Rebuild a student written by `save_student` (weights-only safetensors, no code executed)."""

    directory = Path(directory)
    config = transformers.AutoConfig.from_pretrained(directory)
    cls = getattr(transformers, config.architectures[0])
    model = cls(config)
    meta = getattr(config, "raykd", None) or {}
    if meta.get("projections"):
        attach_projections(model, meta["projections"]["keys"], meta["projections"]["teacher_width"])
    load_model(model, str(directory / "model.safetensors"), strict=True)
    return model


def student_metadata(student: nn.Module) -> dict[str, Any]:
    """The raykd metadata of a student, JSON-ready (for MLflow params and artifacts)."""
    return json.loads(json.dumps(getattr(student.config, "raykd", {}) or {}))


def _resolve_depths(depth: int | Mapping[str, int], teacher_depths: Mapping[str, int]) -> dict[str, int]:
    depths = dict(depth) if isinstance(depth, Mapping) else dict.fromkeys(teacher_depths, depth)
    if set(depths) != set(teacher_depths):
        raise ValueError(f"student depth names stacks {sorted(depths)}; this model has {sorted(teacher_depths)}")
    for stack, d in depths.items():
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"student depth for {stack} must be an integer >= 1, got {d!r}")
    return {s: depths[s] for s in teacher_depths}


def _resize_width(config: Any, family: Family, width: int) -> None:
    keys = family.width_keys
    old = getattr(config, keys.width)
    ratio = width / old
    explicit_head_dim = getattr(config, keys.head_dim, None) if keys.head_dim else None
    for head_key in keys.heads:
        heads = getattr(config, head_key)
        head_dim = explicit_head_dim or old // heads
        new_heads = width // head_dim if explicit_head_dim is None else max(1, round(heads * ratio))
        if explicit_head_dim is None and width % head_dim:
            raise ValueError(
                f"student width {width} is not a multiple of the teacher's head size {head_dim} "
                f"({head_key}={heads}); choose a width divisible by {head_dim}"
            )
        setattr(config, head_key, new_heads)
    for kv_key in keys.kv_heads:
        heads = getattr(config, keys.heads[0])
        kv = max(1, round(getattr(config, kv_key) * ratio))
        while heads % kv:
            kv -= 1
        setattr(config, kv_key, kv)
    if keys.head_dim and explicit_head_dim is None and keys.heads:
        setattr(config, keys.head_dim, old // getattr(config, keys.heads[0]))
    for ffn_key in keys.ffn:
        if getattr(config, ffn_key, None) is not None:
            setattr(config, ffn_key, max(1, round(getattr(config, ffn_key) * ratio)))
    setattr(config, keys.width, width)


def _copy_from_teacher(
    student: nn.Module, teacher: nn.Module, family: Family, copied: Mapping[str, list[int]], *, copy_head: bool = True
) -> None:
    """Load teacher weights into `student`: non-block weights as they are, block k <- copied[k-1]; the task
    head too when `copy_head`, else the student keeps its own freshly drawn head.

    A block parameter that exists only in some blocks (T5's relative attention bias, held by
    block 1 and shared by all) is taken from the teacher block at the student's own index.
    """
    teacher_state = teacher.state_dict()
    prefixes = family.block_prefixes(student)
    fresh = tuple(f"{h}." for h in head_keys(student)) if not copy_head else ()
    new_state = {}
    for key, value in student.state_dict().items():
        if fresh and key.startswith(fresh):
            new_state[key] = value
            continue
        source = key
        for stack, prefix in prefixes.items():
            if key.startswith(prefix):
                index, rest = key[len(prefix) :].split(".", 1)
                source = f"{prefix}{copied[stack][int(index)] - 1}.{rest}"
                if source not in teacher_state:
                    source = key
                break
        if source not in teacher_state:
            raise ValueError(f"teacher has no weight {source!r} to copy into student {key!r}")
        if teacher_state[source].shape != value.shape:
            raise ValueError(
                f"shape mismatch copying {source} {tuple(teacher_state[source].shape)} -> {key} {tuple(value.shape)}"
            )
        new_state[key] = teacher_state[source].detach().clone()
    student.load_state_dict(new_state, strict=True)
