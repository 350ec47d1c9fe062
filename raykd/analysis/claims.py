"""The study's claims, each decided shown / refuted / undecided by named tests of its margin.

A claim is data: a statement fixed before the study runs (with its margin and level), the paired comparisons
it rests on, and the rule that turns their tests into a verdict. Per init (docs/claims.md has the truth
table, each cell tested in tests/test_analysis_claims.py):

- ``strategy_does_not_matter``: every pair of matching strategies lies within +-margin.
  Shown when TOST shows every pair equivalent (an intersection-union test: each pair at the look's level).
  Refuted when the two-sided (1 - level) interval of some pair lies entirely beyond the margin (two one-sided
  t-tests against +margin and -margin, Holm over the pairs). "The strategies differ significantly" (ANOVA,
  Friedman) is a fact reported beside, never the verdict.
- ``matching_beats_none``: every matching strategy scores above ``none``. Shown when a one-sided paired t-test
  shows each one above (intersection-union); refuted when one is shown below (one-sided, Holm).
- ``matching_beats_none_by_margin``: every matching strategy gains more than the margin over ``none`` (the size
  the paper reports). Shown when each gain is shown above the margin; refuted when one is shown below it.

Every rule is monotone: a larger gain (or a smaller spread between strategies) never lowers a verdict, since
each p-value moves one way with its difference and Holm's adjusted p-values are monotone in the raw ones.
Shown and refuted exclude each other (the same comparison would need both one-sided p-values below 1/2).

Three guards keep a verdict from resting on too little:
- fewer than ``min_seeds`` paired seeds in any comparison: undecided (t-tests on 2-3 seeds decide on noise);
- a paired sd below ``sd_floor`` (one test example's worth, 1/N, on a test set of N: the metric is discrete,
  and tied scores give a zero sd that no test may read as certainty) is raised to the floor;
- a verdict that rests on a difference being *smaller* than the margin (strategy shown not to matter, gain
  shown below the margin) needs room: the teacher minus ``none`` at least ``min_room_margins`` margins by a
  one-sided lower confidence bound that includes the teacher's own sampling error (`room` below).

Beside each verdict: the same rule on exact sign-flip permutation p-values (a check that assumes symmetry,
not normality, and respects ties: with n seeds no permutation p goes below 2^-n), and the seeds whose removal
alone changes the verdict (leave one seed out).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from raykd.analysis.text import p_is

NONE = "none"
SHOWN, REFUTED, UNDECIDED = "shown", "refuted", "undecided"
STRATEGY = "strategy_does_not_matter"
BEATS = "matching_beats_none"
BY_MARGIN = "matching_beats_none_by_margin"
STATEMENTS = {
    STRATEGY: "the layer-selection strategy does not matter",
    BEATS: "matching beats no matching",
    BY_MARGIN: "matching beats no matching by more than the margin",
}
DEFAULT_MIN_SEEDS = 4
PERMUTATION_EXACT_UP_TO = 16  # seeds; beyond it, a fixed-seed Monte Carlo of sign flips


@dataclass(frozen=True)
class Comparison:
    """One paired comparison: ``a`` minus ``b`` per seed, oriented so that positive means better."""

    a: str
    b: str
    seeds: tuple[int, ...]
    diffs: np.ndarray  # [n] in metric units
    sd_floor: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.a} - {self.b}"

    @property
    def n(self) -> int:
        return int(self.diffs.size)

    @property
    def mean(self) -> float:
        return float(self.diffs.mean())

    @property
    def sd(self) -> float:
        """The sample sd, raised to the floor (ties in a discrete metric are not certainty); a rounding-level sd of
        identical differences counts as 0, which no test reads as evidence."""
        if self.n < 2:
            return math.nan
        sd = float(self.diffs.std(ddof=1))
        return max(sd if sd > 1e-9 * max(1.0, abs(self.mean)) else 0.0, self.sd_floor)

    def without(self, seed: int) -> Comparison:
        keep = [i for i, s in enumerate(self.seeds) if s != seed]
        return Comparison(self.a, self.b, tuple(self.seeds[i] for i in keep), self.diffs[keep], self.sd_floor)


def t_above(c: Comparison, bound: float) -> float:
    """One-sided paired t p-value for H1: true difference > bound."""
    from scipy import special

    if c.n < 2 or not c.sd > 0:
        return 1.0
    return float(special.stdtr(c.n - 1, -(c.mean - bound) / (c.sd / math.sqrt(c.n))))


def t_below(c: Comparison, bound: float) -> float:
    """One-sided paired t p-value for H1: true difference < bound."""
    from scipy import special

    if c.n < 2 or not c.sd > 0:
        return 1.0
    return float(special.stdtr(c.n - 1, (c.mean - bound) / (c.sd / math.sqrt(c.n))))


def _sign_matrix(n: int) -> np.ndarray:
    if n <= PERMUTATION_EXACT_UP_TO:
        return np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    return np.random.default_rng(0).choice((1.0, -1.0), size=(20000, n))


def perm_above(c: Comparison, bound: float) -> float:
    """Sign-flip permutation p-value for H1: true difference > bound (the mean of diffs - bound under every
    sign pattern; exact up to 16 seeds). Ties to the observed mean count against H1, so p >= 2^-n."""
    if c.n < 1:
        return 1.0
    x = c.diffs - bound
    flipped = _sign_matrix(c.n) @ np.abs(x) / c.n
    return float(np.mean(flipped >= x.mean() - 1e-12 * (1 + abs(x).max())))


def perm_below(c: Comparison, bound: float) -> float:
    flipped = Comparison(c.a, c.b, c.seeds, -c.diffs, c.sd_floor)
    return perm_above(flipped, -bound)


@dataclass(frozen=True)
class Tests:
    """The pair of one-sided tests a rule uses (t by default; the permutation check swaps them in)."""

    name: str
    above: Callable[[Comparison, float], float]
    below: Callable[[Comparison, float], float]


T_TESTS = Tests("paired t", t_above, t_below)
PERMUTATION = Tests("sign-flip permutation", perm_above, perm_below)


def holm(pvalues: Iterable[float]) -> list[float]:
    """Holm step-down adjusted p-values (the same numbers as statsmodels ``multipletests(method="holm")``)."""
    p = np.asarray(list(pvalues), dtype=float)
    if p.size == 0:
        return []
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((p.size - np.arange(p.size)) * p[order]))
    out = np.empty(p.size)
    out[order] = adjusted
    return out.tolist()


# --- the rules ------------------------------------------------------------------------------------------


def _worst(values: list[float], labels: list[str], pick=max) -> tuple[float, str]:
    i = values.index(pick(values))
    return values[i], labels[i]


def _outcome(level: float, refute: tuple[float, str], show: tuple[float, str], open_: str, gated: str) -> dict:
    """Refuted when the refuting test's p is below the level, else shown when the showing test's is, else undecided;
    ``smaller_than_margin`` marks the verdict (`gated`) that rests on a difference being smaller than the margin."""
    verdict, by = (
        (REFUTED, refute[1]) if refute[0] < level else (SHOWN, show[1]) if show[0] < level else (UNDECIDED, open_)
    )
    return {"verdict": verdict, "by": by, "smaller_than_margin": verdict == gated}


def rule_strategy(comps: list[Comparison], margin: float, level: float, tests: Tests) -> dict[str, Any]:
    """Every pair within +-margin (TOST each) vs some pair beyond it (two-sided, Holm over the pairs)."""
    labels = [c.label for c in comps]
    tost = [max(tests.above(c, -margin), tests.below(c, margin)) for c in comps]
    beyond = holm([min(1.0, 2 * min(tests.above(c, margin), tests.below(c, -margin))) for c in comps])
    p_beyond, which = _worst(beyond, labels, min)
    p_tost, widest = _worst(tost, labels, max)
    refute = f"{tests.name}: {which} lies beyond the margin (two one-sided tests, Holm over {len(comps)} pairs, "
    show = f"TOST ({tests.name}) of all {len(comps)} pairs within the margin (largest {p_is(p_tost)} < {level:.3g}, "
    open_ = (
        f"{tests.name}: no pair shown beyond the margin (smallest Holm {p_is(p_beyond)}) and not every pair "
        f"shown within it (TOST {p_is(p_tost)} for {widest}; level {level:.3g})"
    )
    refuted = (p_beyond, refute + f"{p_is(p_beyond)} < {level:.3g})")
    return _outcome(level, refuted, (p_tost, show + f"{widest})"), open_, gated=SHOWN)


def rule_above(comps: list[Comparison], bound: float, level: float, tests: Tests, what: str) -> dict[str, Any]:
    """Every comparison above `bound` (one-sided each, intersection-union) vs one shown below it (Holm)."""
    labels = [c.label for c in comps]
    p_below, low = _worst(holm([tests.below(c, bound) for c in comps]), labels, min)
    p_above, weakest = _worst([tests.above(c, bound) for c in comps], labels, max)
    refute = f"one-sided {tests.name}: {low} is below {what} (Holm over {len(comps)}, {p_is(p_below)} < {level:.3g})"
    show = (
        f"one-sided {tests.name}: every matching strategy above {what} (largest {p_is(p_above)} < {level:.3g}, "
        f"{weakest})"
    )
    open_ = (
        f"one-sided {tests.name}: {weakest} not shown above {what} ({p_is(p_above)}) and none shown below "
        f"it (smallest Holm {p_is(p_below)}; level {level:.3g})"
    )
    return _outcome(level, (p_below, refute), (p_above, show), open_, gated=REFUTED if bound > 0 else "")


def _rule(name: str, comps: list[Comparison], margin: float, level: float, tests: Tests) -> dict[str, Any]:
    if name == STRATEGY:
        return rule_strategy(comps, margin, level, tests)
    bound = 0.0 if name == BEATS else margin
    return rule_above(comps, bound, level, tests, "none" if name == BEATS else "none + the margin")


# --- the claims of a study ------------------------------------------------------------------------------


def comparisons(trials: list[dict], init: str, name: str, sign: float, sd_floor: float) -> list[Comparison]:
    """The paired comparisons a claim rests on under `init` (seeds every two arms share)."""
    table: dict[str, dict[int, float]] = {}
    for t in trials:
        if t["init"] == init:
            table.setdefault(t["strategy"], {})[t["seed"]] = t["metric"]
    matching = sorted(s for s in table if s != NONE)
    if name == STRATEGY:
        pairs = list(itertools.combinations(matching, 2))
    else:
        pairs = [(s, NONE) for s in matching] if NONE in table else []
    out = []
    for a, b in pairs:
        seeds = tuple(sorted(set(table[a]) & set(table[b])))
        diffs = sign * np.array([table[a][s] - table[b][s] for s in seeds], dtype=float)
        out.append(Comparison(a, b, seeds, diffs, sd_floor))
    return out


def decide(
    name: str,
    comps: list[Comparison],
    *,
    margin: float,
    level: float,
    min_seeds: int,
    room_ok: bool | None,
    room_reason: str = "",
    tests: Tests = T_TESTS,
) -> dict[str, Any]:
    """The verdict of one claim: the rule, then the seed minimum and the room gate."""
    if not comps:
        return {
            "verdict": UNDECIDED,
            "by": "not testable: no comparison (needs two matching strategies, or a none arm)",
        }
    fewest = min(c.n for c in comps)
    if fewest < max(2, min_seeds):
        return {
            "verdict": UNDECIDED,
            "by": f"not decided: {fewest} paired seed(s) where the rules need at least {max(2, min_seeds)}",
        }
    out = _rule(name, comps, margin, level, tests)
    if out.pop("smaller_than_margin") and out["verdict"] != UNDECIDED and room_ok is not True:
        out = {
            "verdict": UNDECIDED,
            "by": f"{out['by']}; not a finding: {room_reason or 'the room the arms had is unknown'}",
            "gated": True,
        }
    return out


def fragile_seeds(name: str, comps: list[Comparison], verdict: str, **kwargs: Any) -> list[int]:
    """Seeds whose removal alone changes the verdict (the seed minimum is not applied here: every seed of a
    minimal design would count)."""
    seeds = sorted({s for c in comps for s in c.seeds})
    kwargs = {**kwargs, "min_seeds": 2}
    return [s for s in seeds if decide(name, [c.without(s) for c in comps], **kwargs)["verdict"] != verdict]


def study_claims(
    trials: list[dict],
    *,
    sign: float,
    margin: float,
    scale: float,
    look: dict[str, Any],
    min_seeds: int = DEFAULT_MIN_SEEDS,
    sd_floor: float = 0.0,
    room: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every claim under every init of the (usable, one-weight-per-cell) trials, decided at the look's level."""
    out = []
    for init in sorted({t["init"] for t in trials}):
        space = (room or {}).get(init) or {}
        for name in (STRATEGY, BEATS, BY_MARGIN):
            comps = comparisons(trials, init, name, sign, sd_floor)
            kwargs = {
                "margin": margin,
                "level": look["alpha"],
                "min_seeds": min_seeds,
                "room_ok": space.get("enough"),
                "room_reason": space.get("reason", ""),
            }
            decided = decide(name, comps, **kwargs)
            check = decide(name, comps, tests=PERMUTATION, **kwargs)
            out.append(
                {
                    "name": name,
                    "init": init,
                    "statement": STATEMENTS[name],
                    "verdict": decided["verdict"],
                    "decided_by": decided["by"],
                    "margin": margin,
                    "margin_points": margin * scale,
                    "look": look,
                    "exploratory": not look.get("planned", True),
                    "gated": bool(decided.get("gated")),
                    "comparisons": [_comparison_row(c, margin, look["alpha"]) for c in comps],
                    "permutation_check": {"verdict": check["verdict"], "by": check["by"]},
                    "fragile_seeds": fragile_seeds(name, comps, decided["verdict"], **kwargs) if comps else [],
                }
            )
    return out


def _comparison_row(c: Comparison, margin: float, level: float) -> dict[str, Any]:
    from scipy import special

    row: dict[str, Any] = {"comparison": c.label, "n": c.n, "seeds": list(c.seeds), "diff": c.mean if c.n else None}
    if c.n >= 2:
        half = float(special.stdtrit(c.n - 1, 1 - level)) * c.sd / math.sqrt(c.n)
        row.update(sd=c.sd, ci=[c.mean - half, c.mean + half], ci_level=1 - 2 * level)
        row.update(p_within=max(t_above(c, -margin), t_below(c, margin)), p_above_zero=t_above(c, 0.0))
    return row


# --- the views ------------------------------------------------------------------------------------------


def claim_line(claim: dict[str, Any]) -> str:
    """One claim as every view prints it: statement, margin, init, verdict, the test that decided it, and the
    robustness notes that qualify it."""
    margin = f"+-{claim['margin_points']:g} points"
    words = claim["verdict"].upper() + (" (exploratory: unplanned look)" if claim.get("exploratory") else "")
    line = f"'{claim['statement']}' ({claim['init']} init, margin {margin}): {words} -- {claim['decided_by']}"
    check = claim.get("permutation_check") or {}
    if check and check.get("verdict") != claim["verdict"]:
        line += f" [permutation check: {check['verdict']}]"
    if claim.get("fragile_seeds") and claim["verdict"] != UNDECIDED:
        seeds = ", ".join(str(s) for s in claim["fragile_seeds"])
        line += f" [a single seed decides it: without seed {seeds} it is not {claim['verdict']}]"
    return line


def verdict_flags(claims: list[dict[str, Any]]) -> dict[str, bool | None]:
    """The booleans old readers of summary.json know (True shown, False refuted, None undecided or mixed)."""

    def by_init(name: str) -> dict[str, str]:
        return {c["init"]: c["verdict"] for c in claims if c["name"] == name}

    strategy, beats = by_init(STRATEGY), by_init(BEATS)
    equivalent = None
    if REFUTED in strategy.values():
        equivalent = False
    elif strategy and all(v == SHOWN for v in strategy.values()):
        equivalent = True
    matching = None
    if SHOWN in beats.values() and REFUTED not in beats.values():
        matching = True
    elif REFUTED in beats.values() and SHOWN not in beats.values():
        matching = False
    return {"strategies_equivalent": equivalent, "matching_beats_none": matching}


def all_decided(claims: list[dict[str, Any]]) -> bool:
    return bool(claims) and all(c["verdict"] != UNDECIDED for c in claims)


# --- the room the arms had (the gate of every "smaller than the margin" verdict) ------------------------------

PROPORTION_METRICS = ("accuracy", "exact_match")  # a share of test examples: binomial sampling error


def test_sampling(metric: str, value: float | None, test_examples: int | None) -> tuple[float, float]:
    """(teacher_se, sd_floor) in metric units: the binomial sd of a score of `value` on `test_examples` examples,
    and one example's worth (1/N), for metrics that are a share of test examples; (0, 0) otherwise."""
    if metric not in PROPORTION_METRICS or not test_examples or value is None:
        return 0.0, 0.0
    return math.sqrt(max(value * (1 - value), 0.0) / test_examples), 1.0 / test_examples


def room(
    trials: list[dict],
    teacher_metric: float | None,
    margin: float,
    min_room_margins: float,
    sign: float,
    alpha: float = 0.05,
    teacher_se: float = 0.0,
    scale: float = 100.0,
) -> dict[str, Any]:
    """Per init: the room the arms had to differ, and the share of it each matching strategy closed.

    The room is the teacher's metric minus the `none` arm's mean (the worst cell's mean when there is no `none`
    arm), in metric units. A claim that rests on a difference being smaller than the margin says something only
    when the room is large next to it, so ``enough`` asks the one-sided (1 - alpha) lower confidence bound of the
    room, which includes the teacher's own sampling error `teacher_se` (its score is one draw of a finite test
    set) and the none arm's error over seeds, to reach `min_room_margins` x the margin. ``closed``: per matching
    strategy, its paired gain over `none` as a share of the room, with a 95% delta-method interval.
    """
    from scipy.stats import norm

    out: dict[str, Any] = {}
    if teacher_metric is None:
        return out
    for init in sorted({t["init"] for t in trials}):
        cells: dict[str, dict[int, float]] = {}
        for t in trials:
            if t["init"] == init:
                cells.setdefault(t["strategy"], {})[t["seed"]] = t["metric"]
        means = {strategy: float(np.mean(list(v.values()))) for strategy, v in cells.items()}
        against = NONE if NONE in means else min(means, key=lambda k: sign * means[k])
        floor = np.array(list(cells[against].values()))
        gap = sign * (teacher_metric - means[against])
        floor_var = float(floor.var(ddof=1)) / floor.size if floor.size > 1 else 0.0
        se = math.sqrt(teacher_se**2 + floor_var)
        lower = gap - float(norm.isf(alpha)) * se
        needed = min_room_margins * margin
        entry = {
            "teacher": teacher_metric,
            "teacher_se": teacher_se,
            "against": against,
            "floor": means[against],
            "room": gap,
            "room_se": se,
            "room_lower": lower,
            "min_room": needed,
            "enough": bool(lower >= needed),
            # a share of a room that may be nothing is no number (its interval runs to +-10,000%)
            "closed": _closed(cells, against, gap, teacher_se, sign) if against == NONE and lower > 0 else {},
        }
        if not entry["enough"]:
            entry["reason"] = (
                f"the room (teacher minus {against}) is {gap * scale:.2f} points, its {100 * (1 - alpha):g}% lower "
                f"bound {lower * scale:.2f} (teacher's sampling error {teacher_se * scale:.2f} included), below "
                f"{needed * scale:g} points ({min_room_margins:g} x the margin)"
            )
        out[init] = entry
    return out


def _closed(cells: dict[str, dict[int, float]], none: str, gap: float, teacher_se: float, sign: float) -> dict:
    """Each matching strategy's paired gain over `none` as a share of the room, with a 95% delta-method interval."""
    out = {}
    for strategy in sorted(set(cells) - {none}):
        seeds = sorted(set(cells[strategy]) & set(cells[none]))
        if len(seeds) < 2 or gap <= 0:
            continue
        s = np.array([cells[strategy][k] for k in seeds])
        b = np.array([cells[none][k] for k in seeds])
        n, d = len(seeds), sign * (s - b)
        share = float(d.mean()) / gap
        var_d, var_g = float(d.var(ddof=1)) / n, teacher_se**2 + float(b.var(ddof=1)) / n
        cov = (float(b.var(ddof=1)) - sign * float(np.cov(s, b)[0, 1]) * sign) / n
        var = (var_d + share**2 * var_g - 2 * share * cov) / gap**2
        half = 1.959964 * math.sqrt(max(var, 0.0))
        out[strategy] = {"share": share, "ci95": [share - half, share + half], "n": n}
    return out


# --- the verdict, as old readers of summary.json know it ----------------------------------------------------

ANSWERS = {  # claim verdict -> the answer to each question
    "strategies_differ": {"shown": "equivalent", "refuted": "differ", "undecided": "undecided"},
    "matching_beats_none": {"shown": "better", "refuted": "worse", "undecided": "undecided"},
}
QUESTIONS = {
    "strategies_differ": ("strategy_does_not_matter", "do the matching strategies differ?"),
    "matching_beats_none": ("matching_beats_none", "does matching beat no matching?"),
}


def verdict(result: dict[str, Any], claims: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``verdict`` block: the strategy main effect (a fact, not a verdict), the booleans derived from the
    claims, per init the two questions' answers, and the text (one line per claim)."""
    effect = (result["strategy_test"] or {}).get("strategy")
    significant = None if not effect or effect.get("p") is None else bool(effect["p"] < result["alpha"])
    by_init: dict[str, dict[str, Any]] = {}
    for claim in claims:
        for key, (name, question) in QUESTIONS.items():
            if claim["name"] != name:
                continue
            testable = bool(claim["comparisons"])
            by_init.setdefault(claim["init"], {})[key] = {
                "question": question,
                "answer": ANSWERS[key][claim["verdict"]] if testable else "untestable",
                "claim": claim["statement"],
                "claim_status": claim["verdict"],
                "basis": [{"test": claim["decided_by"], "p": None}],
                **({"no_room": claim["decided_by"].split("not a finding: ")[-1]} if claim["gated"] else {}),
            }
    fact = (
        "the strategy main effect could not be tested"
        if significant is None
        else f"the strategy main effect is {'' if significant else 'not '}significant (ANOVA p="
        f"{effect['p']:.3g}; a fact beside the verdict, not the verdict)"
    )
    text = ". ".join([fact[0].upper() + fact[1:]] + [claim_line(c) for c in claims]) + "."
    return {"strategy_significant": significant, **verdict_flags(claims), "text": text, "by_init": by_init}
