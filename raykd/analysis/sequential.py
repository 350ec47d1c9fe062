"""Group-sequential studies: looks planned before the study runs, and the level each look may decide at.

A study that adds seeds until its claims are decided, testing at alpha each time, decides wrongly more often
than alpha (simulated in docs/claims.md: 'add 2 seeds until equivalent, 4 to 10' shows false equivalence at
about twice the nominal rate). The cure is the Lan-DeMets alpha-spending function: the plan fixes the looks
(seed counts n_1 < ... < n_K) and a spending function alpha(t) of the information fraction t = n_k / n_K; look
k may spend alpha(t_k) in all. Its one-sided nominal level a_k is the one whose boundary c_k = z_{1-a_k}
makes P(Z_1 < c_1, ..., Z_{k-1} < c_{k-1}, Z_k >= c_k) = alpha(t_k) - alpha(t_{k-1}) for the canonical
joint normal statistics (corr(Z_j, Z_k) = sqrt(t_j / t_k)). Each one-sided test of `raykd.analysis.claims`
then compares its p-value with a_k (the nominal p-value approach; with t statistics on few seeds it is an
approximation, checked by simulation in tests/test_analysis_sequential.py).

Spending functions: ``obrien_fleming`` (alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)): almost nothing early,
close to alpha at the end) and ``pocock`` (alpha ln(1 + (e - 1) t): even spending, usable early looks).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from raykd.analysis.claims import all_decided

SPENDING = ("obrien_fleming", "pocock")


def spent(kind: str, alpha: float, t: float) -> float:
    """alpha(t): the one-sided level spent by information fraction t (0 < t <= 1)."""
    from scipy.stats import norm

    if kind == "obrien_fleming":
        return float(2 - 2 * norm.cdf(norm.isf(alpha / 2) / math.sqrt(t)))
    if kind == "pocock":
        return float(alpha * math.log(1 + (math.e - 1) * t))
    raise ValueError(f"unknown spending function {kind!r}; allowed: {', '.join(SPENDING)}")


def _no_crossing(limits: list[float], cov: np.ndarray) -> float:
    """P(Z_j < limits[j] for every j) for the first len(limits) canonical statistics."""
    from scipy.stats import multivariate_normal, norm

    m = len(limits)
    if m == 1:
        return float(norm.cdf(limits[0]))
    return float(
        multivariate_normal.cdf(np.array(limits), mean=np.zeros(m), cov=cov[:m, :m], abseps=1e-6, releps=1e-6, rng=0)
    )


@lru_cache(maxsize=64)
def nominal_levels(looks: tuple[int, ...], alpha: float, kind: str = "obrien_fleming") -> tuple[float, ...]:
    """One-sided nominal level a_k of each look (see the module docstring); one look gives (alpha,)."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    fractions = [n / looks[-1] for n in looks]
    cov = np.array([[math.sqrt(min(a, b) / max(a, b)) for b in fractions] for a in fractions])
    bounds: list[float] = []
    total = 0.0
    for t in fractions:
        increment = spent(kind, alpha, t) - total
        total += increment
        if not bounds:
            bounds.append(float(norm.isf(increment)))
            continue
        stay = _no_crossing(bounds, cov)  # no crossing before this look

        def crossing_here(c: float, stay=stay, prior=tuple(bounds), increment=increment) -> float:
            return stay - _no_crossing([*prior, c], cov) - increment

        bounds.append(float(brentq(crossing_here, 0.0, 10.0, xtol=1e-6)))
    return tuple(float(norm.sf(c)) for c in bounds)


def plan_of(sequential: Any, seeds: int) -> dict[str, Any]:
    """The study's plan: its sequential looks (config ``sweep.sequential``) or one look at all its seeds."""
    if sequential is None:
        return {"looks": [seeds], "spending": None}
    return {"looks": list(sequential.looks), "spending": sequential.spending}


def look(plan: dict[str, Any], seeds: int, alpha: float, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Where an analysis of `seeds` paired seeds stands in the plan: its index, level and whether it was planned.

    A seed count the plan does not list (a study grown by hand beyond its plan, or analysed before its first
    look) is an unplanned look: decided at the full alpha and labelled exploratory. So is any look after one
    that was already unplanned.
    """
    looks = plan["looks"]
    earlier_unplanned = any(not h.get("planned", True) for h in history or [] if h.get("seeds") != seeds)
    if seeds in looks and not earlier_unplanned:
        k = looks.index(seeds)
        levels = (
            nominal_levels(tuple(looks), alpha, plan["spending"] or "obrien_fleming") if len(looks) > 1 else (alpha,)
        )
        spent_so_far = spent(plan["spending"], alpha, seeds / looks[-1]) if len(looks) > 1 else alpha
        return {
            "index": k + 1,
            "of": len(looks),
            "seeds": seeds,
            "alpha": levels[k],
            "alpha_spent": spent_so_far,
            "planned": True,
        }
    return {"index": None, "of": len(looks), "seeds": seeds, "alpha": alpha, "alpha_spent": None, "planned": False}


def record(history: list[dict[str, Any]], this: dict[str, Any]) -> list[dict[str, Any]]:
    """The looks so far with `this` one: a re-analysis of the same seed count replaces its entry."""
    return [h for h in history if h.get("seeds") != this["seeds"]] + [this]


def record_of(summary: dict[str, Any], look: dict[str, Any], history: list[dict], plan: dict) -> dict:
    """The ``sequential`` block of summary.json: the plan and every look so far, this one included."""

    this = {
        "seeds": look["seeds"],
        "trials": len(summary["trials"]) - len(summary["excluded"]),
        "alpha_spent": look["alpha_spent"],
        "alpha": look["alpha"],
        "planned": look["planned"],
        "decided": all_decided(summary["claims"]),
    }
    looks = record(history, this)
    return {"planned": all(h["planned"] for h in looks), "plan": plan, "looks": looks}


# --- calibration by simulation ----------------------------------------------------------------------------


def simulate(
    *,
    true_diff: float,
    sd: float,
    margin: float,
    looks: tuple[int, ...],
    alpha: float,
    rule: str,
    reps: int,
    seed: int = 0,
) -> dict[str, float]:
    """Rates of one paired comparison's decisions over `reps` simulated studies (normal differences).

    rule: ``fixed`` (one look at the last seed count, alpha), ``naive`` (every look at alpha, stop at the
    first decision), ``sequential`` (every look at its nominal level from O'Brien-Fleming spending).
    Returns the share of studies that ever showed equivalence (TOST within +-margin), ever showed a
    difference (two-sided paired t at the same level), and the mean seeds used (a study stops at its
    first decision, either kind).
    """
    from scipy import special

    rng = np.random.default_rng(seed)
    x = rng.normal(true_diff, sd, size=(reps, looks[-1]))
    if rule == "fixed":
        looks, levels = (looks[-1],), (alpha,)
    elif rule == "naive":
        levels = (alpha,) * len(looks)
    else:
        levels = nominal_levels(tuple(looks), alpha)
    open_ = np.ones(reps, bool)
    equivalent, different, seeds_used = np.zeros(reps, bool), np.zeros(reps, bool), np.full(reps, looks[-1])
    for n, level in zip(looks, levels):
        mean, s = x[:, :n].mean(1), x[:, :n].std(1, ddof=1)
        se = s / math.sqrt(n)
        t_crit = float(special.stdtrit(n - 1, 1 - level))
        eq = open_ & (mean - t_crit * se > -margin) & (mean + t_crit * se < margin)
        t2 = float(special.stdtrit(n - 1, 1 - level / 2))
        diff = open_ & (np.abs(mean) > t2 * se)
        equivalent |= eq
        different |= diff
        stop = open_ & (eq | diff)
        seeds_used[stop] = n
        open_ &= ~stop
    return {
        "equivalence": float(equivalent.mean()),
        "difference": float(different.mean()),
        "mean_seeds": float(seeds_used.mean()),
    }
