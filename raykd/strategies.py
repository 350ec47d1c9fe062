"""Layer-selection strategies: which teacher state each student state is matched to.

Index convention (per stack; Yu, Wen & Mou 2025, "Layer-Selection Strategy Doesn't Matter
(Much)"): 0 is the embedding output (`hidden_states[0]` in Hugging Face outputs), k is the
output of block k, k = 1..L. A strategy returns a *layer map*: a list of
``(student_index, teacher_index)`` pairs, ordered by student index. Layer maps are plain data:
losses take them as arguments, MLflow logs them, the analysis reads them back.

A strategy is a pure function ``fn(n_student, n_teacher, *, seed, match_embeddings, **options)``
registered in `STRATEGIES`; ``seed`` is a tuple of ints (entropy for NumPy's generator). Its registration
says what it needs: ``needs_s_le_t`` (student depth <= teacher depth), ``per_epoch`` (re-drawn every
epoch), ``constraint`` (a function ``(n_student, n_teacher, **options) -> message or None``). Configs are
checked against these before a study starts (`strategy_problem`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from raykd.registry import Registry

Pair = tuple[int, int]
LayerMap = list[Pair]

STRATEGIES: Registry = Registry("layer strategy")


def layer_map(
    name: str,
    n_student: int,
    n_teacher: int,
    *,
    seed: int | Sequence[int] = 0,
    match_embeddings: bool = True,
    **options: Any,
) -> LayerMap:
    """Resolve strategy `name` for a student of `n_student` blocks and a teacher of `n_teacher`.

    `match_embeddings=False` drops the embedding state (student index 0), as for decoder-only
    models. Strategy options (`target` for all_to_one, `epoch` for rail, `pairs` for custom) pass
    through. Raises `ValueError` for an unknown name, depths < 1, or S > T where the strategy
    needs S <= T.
    """
    fn = STRATEGIES.get(name)
    for label, depth in (("n_student", n_student), ("n_teacher", n_teacher)):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"{label} must be an integer >= 1, got {depth!r}")
    problem = strategy_problem(name, n_student, n_teacher, **options)
    if problem:
        raise ValueError(problem)
    seed_tuple = _seed_tuple(seed)
    pairs = fn(n_student, n_teacher, seed=seed_tuple, match_embeddings=match_embeddings, **options)
    pairs = [(int(s), int(t)) for s, t in pairs]
    _check_pairs(pairs, n_student, n_teacher, where=f"strategy {name!r}")
    if not match_embeddings and any(s == 0 for s, _ in pairs):
        raise ValueError(f"strategy {name!r} matched the embedding state with match_embeddings=False")
    return sorted(pairs)


def layer_maps(
    name: str,
    student_depths: Mapping[str, int],
    teacher_depths: Mapping[str, int],
    *,
    seed: int | Sequence[int] = 0,
    match_embeddings: bool = True,
    **options: Any,
) -> dict[str, LayerMap]:
    """One layer map per stack (encoder-decoder models match each stack independently).

    Stack i > 0 draws its randomness from ``(seed..., i)`` so that the encoder and decoder of
    a `random` run get independent permutations; a single-stack model gets exactly
    ``layer_map(name, ..., seed=seed)``. A `pairs` option may be a mapping stack -> pairs.
    """
    if set(student_depths) != set(teacher_depths):
        raise ValueError(f"student stacks {sorted(student_depths)} differ from teacher stacks {sorted(teacher_depths)}")
    maps = {}
    for i, stack in enumerate(student_depths):
        stack_options = dict(options)
        if isinstance(stack_options.get("pairs"), Mapping):
            stack_options["pairs"] = stack_options["pairs"].get(stack, [])
        stack_seed = _seed_tuple(seed) + ((i,) if i else ())
        maps[stack] = layer_map(
            name,
            student_depths[stack],
            teacher_depths[stack],
            seed=stack_seed,
            match_embeddings=match_embeddings,
            **stack_options,
        )
    return maps


def strategy_problem(name: str, n_student: int, n_teacher: int, **options: Any) -> str | None:
    """Why strategy `name` cannot map a student of `n_student` blocks onto `n_teacher`, or None."""
    meta = STRATEGIES.meta(name)
    if meta.get("needs_s_le_t") and n_student > n_teacher:
        return f"strategy {name!r} needs student depth <= teacher depth, got {n_student} > {n_teacher}"
    constraint = meta.get("constraint")
    return constraint(n_student, n_teacher, **options) if constraint else None


def is_per_epoch(name: str) -> bool:
    """True for strategies that re-draw their map every epoch (they take an `epoch` option)."""
    return bool(STRATEGIES.meta(name).get("per_epoch"))


def forward_targets(n_student: int, n_teacher: int) -> list[int]:
    """Teacher block ceil(k*T/S) for student block k = 1..S (12->3: [4, 8, 12])."""
    return [-(-k * n_teacher // n_student) for k in range(1, n_student + 1)]


def spread_targets(n_student: int, n_teacher: int) -> list[int]:
    """First..last teacher blocks evenly spaced, rounding half up (12->3: [1, 7, 12])."""
    if n_student == 1:
        return [n_teacher]
    step = (n_teacher - 1) / (n_student - 1)
    return [math.floor(1 + i * step + 0.5) for i in range(n_student)]


def _with_embedding(blocks: list[int], match_embeddings: bool, embedding_target: int = 0) -> LayerMap:
    pairs = [(k, t) for k, t in enumerate(blocks, start=1)]
    return ([(0, embedding_target)] if match_embeddings else []) + pairs


@STRATEGIES.register("forward", needs_s_le_t=True)
def forward(n_student, n_teacher, *, seed, match_embeddings, **_):
    """Student k -> teacher ceil(k*T/S); embeddings 0 -> 0."""
    return _with_embedding(forward_targets(n_student, n_teacher), match_embeddings)


# TinyBERT's "uniform" mapping (Jiao et al. 2020) is forward with embeddings.
STRATEGIES.add("uniform", forward, needs_s_le_t=True)


@STRATEGIES.register("reverse", needs_s_le_t=True)
def reverse(n_student, n_teacher, *, seed, match_embeddings, **_):
    """The forward targets in reverse order (12->3: S1->T12, S2->T8, S3->T4); embeddings 0 -> 0."""
    return _with_embedding(forward_targets(n_student, n_teacher)[::-1], match_embeddings)


def _dealt_permutations(n_student: int, n_teacher: int, *, deal: str = "distinct", **_) -> str | None:
    if deal not in RANDOM_DEALS:
        return f"random: option deal must be one of {RANDOM_DEALS}, got {deal!r}"
    if deal == "distinct" and math.factorial(n_student) <= 2:
        return (
            f"strategy 'random' (deal: distinct) needs at least 3 matched student blocks: with {n_student} "
            "every permutation of the forward targets is the forward or the reverse map"
        )
    return None


RANDOM_DEALS = ("distinct", "independent")


@STRATEGIES.register("random", needs_s_le_t=True, constraint=_dealt_permutations)
def random_permutation(n_student, n_teacher, *, seed, match_embeddings, deal="distinct", **_):
    """A permutation of the forward targets, fixed for the whole run; embeddings 0 -> 0.

    ``deal: distinct`` (default, a deliberate departure from the paper's independent draws): the
    permutations other than forward and reverse are dealt to seeds so that seeds 0..M-1 get M distinct
    ones (M = S! - 2), in a scrambled order, and further seeds cycle through them evenly; a random arm
    is then never a copy of another arm, and with 3 blocks (4 such permutations) 4 seeds use each once.
    The deal depends on the seed alone, so growing a study keeps every earlier trial's map.
    ``deal: independent``: a uniformly random permutation per seed (the paper's), which for small S
    often repeats or equals the forward or reverse map.
    """
    targets = forward_targets(n_student, n_teacher)
    if deal == "independent":
        order = np.random.default_rng(list(seed)).permutation(len(targets)).tolist()
    else:
        order = _permutation_for(seed, len(targets))
    return _with_embedding([targets[i] for i in order], match_embeddings)


def _permutation_for(seed: tuple[int, ...], n: int) -> list[int]:
    """The permutation of range(n) dealt to `seed` (``(trial seed, stack...)``): lexicographic ranks
    1..n!-2 (rank 0 is the identity, n!-1 the reversal) visited by an affine bijection of the seed."""
    count = math.factorial(n) - 2
    step = next(a for a in range(max(1, round(0.618 * count)), 2 * count + 2) if math.gcd(a, count) == 1)
    offset = sum((i + 1) * 7919 * v for i, v in enumerate(seed[1:]))  # other stacks: another deal
    rank = 1 + (step * seed[0] + offset) % count
    items, order = list(range(n)), []
    for position in range(n, 0, -1):
        index, rank = divmod(rank, math.factorial(position - 1))
        order.append(items.pop(index))
    return order


@STRATEGIES.register("all_to_one")
def all_to_one(n_student, n_teacher, *, seed, match_embeddings, target=None, **_):
    """Every student state, the embedding output included, -> teacher ceil(T/2) (or `target`)."""
    target = -(-n_teacher // 2) if target is None else target
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target <= n_teacher:
        raise ValueError(f"all_to_one target must be an integer in 0..{n_teacher}, got {target!r}")
    return _with_embedding([target] * n_student, match_embeddings, embedding_target=target)


@STRATEGIES.register("none")
def no_matching(n_student, n_teacher, *, seed, match_embeddings, **_):
    """No hidden-state pairs: only the ground-truth loss and prediction-level KD remain."""
    return []


@STRATEGIES.register("last", needs_s_le_t=True)
def last(n_student, n_teacher, *, seed, match_embeddings, **_):
    """PKD-last (Sun et al. 2019): student k -> teacher T-S+k; embeddings 0 -> 0."""
    return _with_embedding(list(range(n_teacher - n_student + 1, n_teacher + 1)), match_embeddings)


@STRATEGIES.register("rail", needs_s_le_t=True, per_epoch=True)
def rail(n_student, n_teacher, *, seed, match_embeddings, epoch=0, **_):
    """RAIL-KD (Haidar et al. 2022): S random teacher blocks kept in order, re-drawn every epoch."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"rail epoch must be an integer >= 0, got {epoch!r}")
    rng = np.random.default_rng([*seed, epoch])
    chosen = np.sort(rng.choice(np.arange(1, n_teacher + 1), size=n_student, replace=False))
    return _with_embedding(chosen.tolist(), match_embeddings)


@STRATEGIES.register("custom")
def custom(n_student, n_teacher, *, seed, match_embeddings, pairs=None, **_):
    """An explicit list of (student, teacher) pairs, validated against both depths."""
    if pairs is None:
        raise ValueError("strategy 'custom' needs a `pairs` option: a list of [student, teacher] pairs")
    parsed = []
    for pair in pairs:
        if (
            not isinstance(pair, (list, tuple))
            or len(pair) != 2
            or any(isinstance(i, bool) or not isinstance(i, int) for i in pair)
        ):
            raise ValueError(f"custom pair {pair!r} is not a [student, teacher] pair of integers")
        parsed.append((pair[0], pair[1]))
    _check_pairs(parsed, n_student, n_teacher, where="custom pairs")
    if len(set(parsed)) != len(parsed):
        raise ValueError(f"custom pairs contain duplicates: {parsed}")
    if not match_embeddings and any(s == 0 for s, _ in parsed):
        raise ValueError("custom pairs match student state 0 (embeddings) but match_embeddings=False")
    return parsed


def _check_pairs(pairs: LayerMap, n_student: int, n_teacher: int, *, where: str) -> None:
    for s, t in pairs:
        if not (0 <= s <= n_student and 0 <= t <= n_teacher):
            raise ValueError(
                f"{where}: pair ({s}, {t}) out of range; student indices are 0..{n_student}, "
                f"teacher indices 0..{n_teacher} (0 = embeddings)"
            )


def _seed_tuple(seed: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(seed, (int, np.integer)):
        items = (seed,)
    elif isinstance(seed, (list, tuple)):
        items = tuple(seed)
    else:
        items = ()
    if not items or any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0 for i in items):
        raise ValueError(f"seed must be a non-negative integer (or a sequence of them), got {seed!r}")
    return tuple(int(i) for i in items)
