"""Angle statistics: teacher layers seen from a student state (Yu, Wen & Mou 2025; docs/paper.md, "Angles").

For a student state s (student layer k, one token) and the teacher states t_i, t_j of the same
token, the cosine of the angle at s is cos(t_i - s, t_j - s). Per student layer k this module
gives C_k[i, j], the mean of that cosine over valid (non-pad) tokens for every teacher layer pair,
a histogram of the per-token cosines over the pairs i < j, and the share of them that are acute
(cos > 0). With a width mismatch, s goes through the student's projection for layer k first.

A token where t_i equals s exactly (e.g. the embedding output of a teacher-initialised student,
whose embeddings are copied) has no direction t_i - s: such pairs are left out and counted as
``degenerate``.

Null baselines. Seen from almost any point, high-dimensional teacher states can look "in the same
direction" (for random points in width 384 the mean cosine is about 0.5 and nearly every angle is
acute), so each statistic comes with the same statistic for student states that carry no information
about the teacher, computed the same way over several seeds (`NULLS`):
- ``random_point``: each token's student state replaced by a random direction of the same norm;
- ``other_token``: each token's student state replaced by another token's state of the same student
  (a seeded derangement of the batch's valid tokens): the student's geometry, unmatched to the token.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from raykd.families import family_of
from raykd.losses import get_projections, projection_key

HIST_EDGES = np.linspace(-1.0, 1.0, 41)
EPS = 1e-6
NULLS = ("random_point", "other_token")


def null_state(kind: str, student: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A null replacement for student states ``[tokens, width]`` (see the module docstring)."""
    if kind == "random_point":
        direction = torch.randn(student.shape, generator=generator, dtype=student.dtype)
        return direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12) * student.norm(dim=-1, keepdim=True)
    if kind == "other_token":
        n = student.shape[0]
        if n < 2:
            return student.clone()
        shift = int(torch.randint(1, n, (1,), generator=generator))
        order = torch.randperm(n, generator=generator)
        moved = torch.empty_like(order)
        moved[order] = order[(torch.arange(n) + shift) % n]  # every token takes another token's state
        return student[moved]
    raise ValueError(f"null baseline must be one of {NULLS}, got {kind!r}")


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

    def add(self, teacher: torch.Tensor, student: torch.Tensor, gram: torch.Tensor | None = None) -> None:
        """teacher ``[tokens, T+1, width]`` and student ``[tokens, width]``, valid tokens only; `gram` (optional)
        is the teacher's ``[tokens, T+1, T+1]`` float64 Gram matrix, shared by every student state measured
        against the same teacher states."""
        add_states([self], teacher, student[None], gram)

    def result(self) -> dict[str, Any]:
        with np.errstate(invalid="ignore", divide="ignore"):
            matrix = np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan)
        return {
            "matrix": [[None if np.isnan(v) else round(float(v), 6) for v in row] for row in matrix],
            "acute_share": self.acute / self.pairs if self.pairs else None,
            "histogram": {"edges": HIST_EDGES.round(4).tolist(), "counts": self.hist.tolist()},
            "tokens": self.tokens,
            "pairs": self.pairs,
            "degenerate": self.degenerate,
        }


def add_states(
    accs: list[AngleAccumulator], teacher: torch.Tensor, students: torch.Tensor, gram: torch.Tensor | None = None
) -> None:
    """Add ``students[i]`` (``[K, tokens, width]``) to ``accs[i]``, all against the same teacher states ``[tokens,
    T+1, width]`` and their float64 Gram matrix `gram` (computed here when not given).

    <t_i - s, t_j - s> = <t_i, t_j> - <t_i, s> - <t_j, s> + <s, s>: with the teacher's Gram matrix computed once,
    each student state costs one [tokens, T+1] product instead of T+1 differences and a [tokens, T+1, T+1] product
    over the width; the K states (a student state and its null replacements) go through in one batch, converted to
    float64 once with the teacher states (float64 keeps the subtraction exact enough to tell t_i == s apart)."""
    t, st = teacher.double(), students.double()
    gram = t @ t.transpose(1, 2) if gram is None else gram
    n_teacher = t.shape[1]
    ts = torch.einsum("nvw,knw->knv", t, st)  # [K, tokens, T+1]
    inner = gram[None] - ts[..., :, None] - ts[..., None, :] + (st * st).sum(-1)[..., None, None]
    sq = torch.diagonal(inner, dim1=-2, dim2=-1).clamp_min(0.0)  # |t_i - s|^2
    norm = sq.sqrt()
    valid = norm > EPS * torch.diagonal(gram, dim1=-2, dim2=-1).sqrt().clamp_min(1.0)[None]
    cos = (inner / (norm[..., :, None] * norm[..., None, :]).clamp_min(1e-300)).clamp(-1.0, 1.0)
    both = valid[..., :, None] & valid[..., None, :]
    totals = torch.where(both, cos, torch.zeros_like(cos)).sum(1).numpy()
    counts = both.sum(1).numpy()
    upper = torch.triu(torch.ones(n_teacher, n_teacher, dtype=torch.bool), diagonal=1)
    pairs = both & upper
    degenerate = (~both & upper).sum((1, 2, 3)).tolist()
    for i, acc in enumerate(accs):
        values = cos[i][pairs[i]].numpy()
        acc.total += totals[i]
        acc.count += counts[i]
        acc.hist += np.histogram(values, bins=HIST_EDGES)[0]
        acc.acute += int((values > 0).sum())
        acc.pairs += int(values.size)
        acc.tokens += int(t.shape[0])
        acc.degenerate += int(degenerate[i])


def angle_matrix(teacher: np.ndarray | torch.Tensor, student: np.ndarray | torch.Tensor) -> dict[str, Any]:
    """Angle statistics of one student state: teacher ``[tokens, T+1, width]``, student ``[tokens, width]``."""
    acc = AngleAccumulator(int(teacher.shape[1]))
    acc.add(torch.as_tensor(teacher), torch.as_tensor(student))
    return acc.result()


@torch.no_grad()
def teacher_states(
    teacher,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    final_norm: str = "as_returned",
    device: torch.device | str = "cpu",
) -> list[dict[str, Any]]:
    """Per batch: the valid-token teacher states of each stack, ``[tokens, T+1, width]`` (kept on CPU)."""

    family = family_of(teacher)
    out = []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        _, stacks = family.forward(teacher, batch, final_norm=final_norm)
        masks = family.hidden_masks(batch)
        states = {s: torch.stack(states, dim=2)[masks[s]].float().cpu() for s, states in stacks.items()}
        out.append(
            {
                "batch": {k: v.cpu() for k, v in batch.items()},
                "states": states,  # float32: a large teacher's states in float64 would double this analysis' memory
                "gram": {s: t.double() @ t.double().transpose(1, 2) for s, t in states.items()},
            }
        )
    return out


@torch.no_grad()
def student_angles(
    student,
    cached_teacher: list[dict[str, Any]],
    *,
    final_norm: str = "as_returned",
    device: torch.device | str = "cpu",
    null_seeds: int = 0,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Angle statistics of every state of every stack of `student`: ``{stack: {k: stats}}``; with
    `null_seeds`, each stats entry also has ``null: {kind: [stats per seed]}`` (`NULLS`).

    States whose width differs from the teacher's and that have no projection (not matched in this
    trial) are reported with ``skipped`` and the reason.
    """

    family = family_of(student)
    projections = get_projections(student)
    student.eval()
    accs: dict[str, dict[int, AngleAccumulator]] = {}
    nulls: dict[tuple[str, int], dict[str, list[AngleAccumulator]]] = {}
    generators = {
        (kind, j): torch.Generator().manual_seed(1000 * i + j)
        for i, kind in enumerate(NULLS)
        for j in range(null_seeds)
    }
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
                        why = f"width {tokens.shape[-1]} != teacher {teacher.shape[-1]}, no trained projection for it"
                        skipped.setdefault(stack, {})[k] = why
                        continue
                    tokens = projections(stack, k, tokens)
                tokens = tokens.cpu()
                gram = item.get("gram", {}).get(stack)
                acc = accs.setdefault(stack, {}).setdefault(k, AngleAccumulator(teacher.shape[1]))
                per_kind = nulls.setdefault(
                    (stack, k),
                    {kind: [AngleAccumulator(teacher.shape[1]) for _ in range(null_seeds)] for kind in NULLS},
                )
                targets, states = [acc], [tokens]
                for (kind, j), generator in generators.items():
                    targets.append(per_kind[kind][j])
                    states.append(null_state(kind, tokens, generator))
                add_states(targets, teacher, torch.stack(states), gram)
    return _angle_results(accs, nulls, skipped, null_seeds)


def _angle_results(accs, nulls, skipped, null_seeds: int) -> dict[str, dict[str, dict[str, Any]]]:
    """`student_angles`' answer from its accumulators: ``{stack: {k: stats (+ null), or {"skipped": why}}}``."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for stack in sorted(set(accs) | set(skipped)):
        out[stack] = {}
        for k, acc in sorted(accs.get(stack, {}).items()):
            out[stack][str(k)] = acc.result()
            if null_seeds:
                out[stack][str(k)]["null"] = {
                    kind: [a.result() for a in runs] for kind, runs in nulls[(stack, k)].items()
                }
        for k, reason in skipped.get(stack, {}).items():
            out[stack][str(k)] = {"skipped": reason}
    return out


def interval(values: list[float]) -> dict[str, Any]:
    """Mean and 95% t interval of values (None below two)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return {"mean": None, "ci95": None, "n": 0}
    if x.size < 2 or float(x.std(ddof=1)) == 0.0:
        return {"mean": float(x.mean()), "ci95": [float(x.mean())] * 2 if x.size > 1 else None, "n": int(x.size)}
    half = float(stats.t.ppf(0.975, x.size - 1)) * float(x.std(ddof=1)) / np.sqrt(x.size)
    return {"mean": float(x.mean()), "ci95": [float(x.mean()) - half, float(x.mean()) + half], "n": int(x.size)}


def summarise(measurements: list[dict[str, Any]]) -> dict[str, Any]:
    """Average per (init, stack, student layer) over trials: matrix and acute share, at init and trained.

    ``measurements``: ``{"init", "strategy", "seed", "at_init": {stack: {k: stats}}, "trained": {...}}``.
    """
    out: dict[str, Any] = {}
    for init in sorted({m["init"] for m in measurements}):
        per_init: dict[str, Any] = {}
        for m in (m for m in measurements if m["init"] == init):
            for when in ("at_init", "trained"):
                for stack, layers in (m.get(when) or {}).items():
                    for k, stats in layers.items():
                        if "skipped" not in stats and stats["acute_share"] is not None:
                            slot = per_init.setdefault(stack, {}).setdefault(k, {}).setdefault(when, _empty_slot())
                            _add_measurement(slot, stats, m["strategy"])
        for layers in per_init.values():
            for whens in layers.values():
                for when, slot in whens.items():
                    whens[when] = _slot_summary(slot)
        out[init] = per_init
    return out


def _empty_slot() -> dict[str, Any]:
    return {"matrices": [], "acute": [], "mean_cos": [], "by_strategy": {}, "hist": None, "null": {}}


def _add_measurement(slot: dict[str, Any], stats: dict[str, Any], strategy: str) -> None:
    """One trained (or at-init) student's statistics of one layer, and its null baselines, into `slot`."""
    for kind, runs in (stats.get("null") or {}).items():
        null = slot["null"].setdefault(kind, {"acute": [], "matrices": [], "mean_cos": []})
        for run in runs:
            if run["acute_share"] is not None:
                null["acute"].append(run["acute_share"])
                null["matrices"].append(np.array(run["matrix"], dtype=float))
                null["mean_cos"].append(_mean_cos(run))
    slot["matrices"].append(np.array(stats["matrix"], dtype=float))
    slot["mean_cos"].append(_mean_cos(stats))
    slot["acute"].append(stats["acute_share"])
    slot["by_strategy"].setdefault(strategy, []).append(stats["acute_share"])
    counts = np.array(stats["histogram"]["counts"])
    slot["hist"] = counts if slot["hist"] is None else slot["hist"] + counts


def _slot_summary(slot: dict[str, Any]) -> dict[str, Any]:
    """The means over the students in `slot` (NaN entries of degenerate pairs ignored; all-NaN stays None)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        matrix = np.nanmean(np.stack(slot["matrices"]), axis=0) if slot["matrices"] else None
    return {
        "matrix": None
        if matrix is None
        else [[None if np.isnan(v) else round(float(v), 6) for v in r] for r in matrix],
        "acute_share": float(np.mean(slot["acute"])),
        "acute_share_ci95": interval(slot["acute"])["ci95"],
        "mean_cos": float(np.nanmean(slot["mean_cos"])) if slot["mean_cos"] else None,
        "null": {
            kind: {
                "acute_share": interval(null["acute"]),
                "mean_cos": interval(null["mean_cos"]),
                "matrix": _mean_matrix(null["matrices"]),
            }
            for kind, null in slot["null"].items()
            if null["acute"]
        },
        "acute_share_by_strategy": {s: float(np.mean(v)) for s, v in sorted(slot["by_strategy"].items())},
        "histogram": {"edges": HIST_EDGES.round(4).tolist(), "counts": slot["hist"].tolist()},
        "n": len(slot["acute"]),
    }


def _mean_cos(stats: Mapping[str, Any]) -> float:
    """The mean cosine over teacher layer pairs i < j (diagonal excluded) of one stats entry."""
    matrix = np.array([[np.nan if v is None else v for v in row] for row in stats["matrix"]], dtype=float)
    upper = matrix[np.triu_indices(len(matrix), k=1)]
    return float(np.nanmean(upper)) if np.isfinite(upper).any() else float("nan")


def _mean_matrix(matrices: list[np.ndarray]) -> list[list[float | None]] | None:
    if not matrices:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        matrix = np.nanmean(np.stack(matrices), axis=0)
    return [[None if np.isnan(v) else round(float(v), 6) for v in row] for row in matrix]


def acute_share_overall(summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per init: the acute share averaged over stacks and student states, at init and trained, and under
    ``null`` the same average of each null baseline's mean (with the range over states)."""
    out = {}
    for init, stacks in summary.items():
        shares: dict[str, list[float]] = {"at_init": [], "trained": []}
        nulls: dict[str, dict[str, list[float]]] = {"at_init": {}, "trained": {}}
        for layers in stacks.values():
            for whens in layers.values():
                for when, values in shares.items():
                    if when in whens:
                        values.append(whens[when]["acute_share"])
                        for kind, null in (whens[when].get("null") or {}).items():
                            if null["acute_share"]["mean"] is not None:
                                nulls[when].setdefault(kind, []).append(null["acute_share"]["mean"])
        out[init] = {when: (float(np.mean(v)) if v else None) for when, v in shares.items()}
        out[init]["null"] = {
            when: {
                kind: {"mean": float(np.mean(v)), "range": [float(min(v)), float(max(v))]}
                for kind, v in per_kind.items()
            }
            for when, per_kind in nulls.items()
        }
    return out


MIN_ANGLE_SEEDS = 3


def null_contrast(measurements: list[dict[str, Any]], kind: str = "random_point") -> dict[str, Any]:
    """Does a student see the teacher's layers at more acute angles than a point that is no student would?

    Per init, stack and moment (at init, trained): each student's mean cosine over teacher layer pairs and its
    student states, minus the same for its `kind` null (averaged over the null's seeds), then averaged per seed
    (students of one seed share a start) and tested across seeds: mean, 95% t interval and the one-sample t
    p-value. With fewer than `MIN_ANGLE_SEEDS` seeds the contrast is reported untested. The acute share is
    saturated (near 100% for trained students and the null alike), so it is shown only beside this test.
    """
    from scipy import stats

    per_seed: dict[tuple[str, str, str], dict[int, list[float]]] = {}
    for m in measurements:
        for when in ("at_init", "trained"):
            for stack, layers in (m.get(when) or {}).items():
                gaps = []
                for entry in layers.values():
                    runs = [r for r in (entry.get("null") or {}).get(kind, []) if r.get("acute_share") is not None]
                    if "skipped" in entry or not runs:
                        continue
                    gaps.append(_mean_cos(entry) - float(np.nanmean([_mean_cos(r) for r in runs])))
                if gaps and np.isfinite(gaps).any():
                    key = (m["init"], stack, when)
                    per_seed.setdefault(key, {}).setdefault(m["seed"], []).append(float(np.nanmean(gaps)))
    out: dict[str, Any] = {}
    for (init, stack, when), seeds in sorted(per_seed.items()):
        values = [float(np.mean(v)) for _, v in sorted(seeds.items())]
        entry = {**interval(values), "seeds": sorted(seeds), "null": kind, "p": None, "tested": False}
        if len(values) >= MIN_ANGLE_SEEDS and float(np.std(values, ddof=1)) > 0:
            entry.update(p=float(stats.ttest_1samp(values, 0.0).pvalue), tested=True)
        out.setdefault(init, {}).setdefault(stack, {})[when] = entry
    return out
