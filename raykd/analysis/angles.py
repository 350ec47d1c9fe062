"""Angle statistics: teacher layers seen from a student state (PAPER.md, "The angle analysis").

For a student state s (student layer k, one token) and the teacher states t_i, t_j of the same
token, the cosine of the angle at s is cos(t_i - s, t_j - s). Per student layer k this module
gives C_k[i, j], the mean of that cosine over valid (non-pad) tokens for every teacher layer pair,
a histogram of the per-token cosines over the pairs i < j, and the share of them that are acute
(cos > 0). With a width mismatch, s goes through the student's projection for layer k first.

A token where t_i equals s exactly (e.g. the embedding output of a teacher-initialised student,
whose embeddings are copied) has no direction t_i - s: such pairs are left out and counted as
``degenerate``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

HIST_EDGES = np.linspace(-1.0, 1.0, 41)
EPS = 1e-6


@dataclass
class AngleAccumulator:
    """Running sums for one student state against the T+1 teacher states of its stack."""

    n_teacher: int
    total: np.ndarray = field(init=False)
    count: np.ndarray = field(init=False)
    hist: np.ndarray = field(init=False)
    acute: int = 0
    pairs: int = 0
    tokens: int = 0
    degenerate: int = 0

    def __post_init__(self) -> None:
        self.total = np.zeros((self.n_teacher, self.n_teacher))
        self.count = np.zeros((self.n_teacher, self.n_teacher), dtype=np.int64)
        self.hist = np.zeros(len(HIST_EDGES) - 1, dtype=np.int64)

    def add(self, teacher: torch.Tensor, student: torch.Tensor) -> None:
        """teacher ``[tokens, T+1, width]`` and student ``[tokens, width]``, valid tokens only."""
        diff = (teacher.double() - student.double()[:, None, :])
        norm = diff.norm(dim=-1)  # [tokens, T+1]
        valid = norm > EPS * teacher.double().norm(dim=-1).clamp_min(1.0)
        unit = diff / norm.clamp_min(1e-30)[..., None]
        cos = (unit @ unit.transpose(1, 2)).clamp(-1.0, 1.0)  # [tokens, T+1, T+1]
        both = valid[:, :, None] & valid[:, None, :]
        self.total += torch.where(both, cos, torch.zeros_like(cos)).sum(0).numpy()
        self.count += both.sum(0).numpy()
        upper = torch.triu(torch.ones(self.n_teacher, self.n_teacher, dtype=torch.bool), diagonal=1)
        values = cos[both & upper].numpy()
        self.hist += np.histogram(values, bins=HIST_EDGES)[0]
        self.acute += int((values > 0).sum())
        self.pairs += int(values.size)
        self.tokens += int(teacher.shape[0])
        self.degenerate += int((~both & upper).sum())

    def result(self) -> dict[str, Any]:
        with np.errstate(invalid="ignore", divide="ignore"):
            matrix = np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan)
        return {"matrix": [[None if np.isnan(v) else round(float(v), 6) for v in row] for row in matrix],
                "acute_share": self.acute / self.pairs if self.pairs else None,
                "histogram": {"edges": HIST_EDGES.round(4).tolist(), "counts": self.hist.tolist()},
                "tokens": self.tokens, "pairs": self.pairs, "degenerate": self.degenerate}


def angle_matrix(teacher: np.ndarray | torch.Tensor, student: np.ndarray | torch.Tensor) -> dict[str, Any]:
    """Angle statistics of one student state: teacher ``[tokens, T+1, width]``, student ``[tokens, width]``."""
    acc = AngleAccumulator(int(teacher.shape[1]))
    acc.add(torch.as_tensor(teacher), torch.as_tensor(student))
    return acc.result()


@torch.no_grad()
def teacher_states(teacher, batches: Iterable[Mapping[str, torch.Tensor]], *, final_norm: str = "as_returned",
                   device: torch.device | str = "cpu") -> list[dict[str, Any]]:
    """Per batch: the valid-token teacher states of each stack, ``[tokens, T+1, width]`` (kept on CPU)."""
    from raykd.families import family_of

    family = family_of(teacher)
    out = []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        _, stacks = family.forward(teacher, batch, final_norm=final_norm)
        masks = family.hidden_masks(batch)
        out.append({"batch": {k: v.cpu() for k, v in batch.items()},
                    "states": {s: torch.stack(states, dim=2)[masks[s]].float().cpu() for s, states in stacks.items()}})
    return out


@torch.no_grad()
def student_angles(student, cached_teacher: list[dict[str, Any]], *, final_norm: str = "as_returned",
                   device: torch.device | str = "cpu") -> dict[str, dict[str, dict[str, Any]]]:
    """Angle statistics of every state of every stack of `student`: ``{stack: {k: stats}}``.

    States whose width differs from the teacher's and that have no projection (not matched in this
    trial) are reported with ``skipped`` and the reason.
    """
    from raykd.families import family_of
    from raykd.losses import get_projections, projection_key

    family = family_of(student)
    projections = get_projections(student)
    student.eval()
    accs: dict[str, dict[int, AngleAccumulator]] = {}
    skipped: dict[str, dict[int, str]] = {}
    for item in cached_teacher:
        batch = {k: v.to(device) for k, v in item["batch"].items()}
        _, stacks = family.forward(student, batch, final_norm=final_norm)
        masks = family.hidden_masks(batch)
        for stack, states in stacks.items():
            teacher = item["states"][stack]
            for k, state in enumerate(states):
                tokens = state[masks[stack]].float()
                if tokens.shape[-1] != teacher.shape[-1]:
                    key = projection_key(stack, k)
                    if projections is None or key not in projections.layers:
                        skipped.setdefault(stack, {})[k] = (f"width {tokens.shape[-1]} != teacher {teacher.shape[-1]} "
                                                            "and no trained projection for this state")
                        continue
                    tokens = projections(stack, k, tokens)
                accs.setdefault(stack, {}).setdefault(k, AngleAccumulator(teacher.shape[1])).add(teacher, tokens.cpu())
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for stack in sorted(set(accs) | set(skipped)):
        out[stack] = {str(k): a.result() for k, a in sorted(accs.get(stack, {}).items())}
        for k, reason in skipped.get(stack, {}).items():
            out[stack][str(k)] = {"skipped": reason}
    return out


def summarise(measurements: list[dict[str, Any]]) -> dict[str, Any]:
    """Average per (init, stack, student layer) over trials: matrix and acute share, at init and trained.

    ``measurements``: ``{"init", "strategy", "seed", "at_init": {stack: {k: stats}}, "trained": {...}}``.
    """
    out: dict[str, Any] = {}
    for init in sorted({m["init"] for m in measurements}):
        rows = [m for m in measurements if m["init"] == init]
        per_init: dict[str, Any] = {}
        for when in ("at_init", "trained"):
            for m in rows:
                for stack, layers in (m.get(when) or {}).items():
                    for k, stats in layers.items():
                        if "skipped" in stats or stats["acute_share"] is None:
                            continue
                        slot = per_init.setdefault(stack, {}).setdefault(k, {}).setdefault(when, {
                            "matrices": [], "acute": [], "by_strategy": {}, "hist": None})
                        slot["matrices"].append(np.array(stats["matrix"], dtype=float))
                        slot["acute"].append(stats["acute_share"])
                        slot["by_strategy"].setdefault(m["strategy"], []).append(stats["acute_share"])
                        counts = np.array(stats["histogram"]["counts"])
                        slot["hist"] = counts if slot["hist"] is None else slot["hist"] + counts
        for stack, layers in per_init.items():
            for k, whens in layers.items():
                for when, slot in whens.items():
                    with warnings.catch_warnings():  # all-None entries (degenerate pairs) stay None
                        warnings.simplefilter("ignore", RuntimeWarning)
                        matrix = np.nanmean(np.stack(slot["matrices"]), axis=0) if slot["matrices"] else None
                    whens[when] = {
                        "matrix": None if matrix is None else [[None if np.isnan(v) else round(float(v), 6) for v in r]
                                                               for r in matrix],
                        "acute_share": float(np.mean(slot["acute"])),
                        "acute_share_by_strategy": {s: float(np.mean(v)) for s, v in sorted(slot["by_strategy"].items())},
                        "histogram": {"edges": HIST_EDGES.round(4).tolist(), "counts": slot["hist"].tolist()},
                        "n": len(slot["acute"]),
                    }
        out[init] = per_init
    return out


def acute_share_overall(summary: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per init: the acute share averaged over stacks and student states, at init and trained."""
    out = {}
    for init, stacks in summary.items():
        shares: dict[str, list[float]] = {"at_init": [], "trained": []}
        for layers in stacks.values():
            for whens in layers.values():
                for when, values in shares.items():
                    if when in whens:
                        values.append(whens[when]["acute_share"])
        out[init] = {when: (float(np.mean(v)) if v else None) for when, v in shares.items()}
    return out
