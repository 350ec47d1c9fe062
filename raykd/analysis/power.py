"""What a design could decide: power and sample sizes for the paired tests of `raykd.analysis.stats`.

A study with a handful of seeds often ends "not significant, not shown equivalent". That sentence is
only useful next to what the design could have decided, so for every paired comparison (each
strategy against the reference, matching against ``none``, per init) the plan reports, in the
metric's units:

- ``equivalence_shown_within``: the smallest margin the current data show equivalence for (the
  larger absolute bound of the 1 - 2 alpha interval; any margin strictly above it is shown);
- ``equivalence_margin_80``: the smallest margin this design (n seeds, the observed sd of the paired
  differences) shows equivalence for with 80% power if the true difference were 0 (TOST);
- ``detectable_difference_80``: the smallest true difference the paired t-test detects with 80%
  power (two-sided; at alpha / m for the m Holm-corrected comparisons against the reference, the
  level of Holm's first step, so slightly conservative);
- ``seeds_to_detect_observed``: seeds that detect the observed difference with 80% power;
- ``seeds_for_equivalence``: seeds that show equivalence within the configured margin with 80%
  power if the true difference were the observed one (only when it lies inside the margin).

Both seed counts are capped at ``MAX_SEEDS``; beyond it, or where no number of seeds can do it (an
observed difference of exactly 0 cannot be detected; one outside the margin cannot be shown
equivalent), they are ``None`` with the reason in the matching ``*_note``.

Power of the paired t-test: the noncentral t (the same numbers as statsmodels ``TTestPower``),
computed as the normal probability of the mean given the sample sd, integrated over the sd's chi
distribution by Gauss-Legendre quadrature (scipy's noncentral t returns nan or wrong values far in
its tails, which the searches over effects and seeds reach). Power of TOST: the two one-sided tests
reject together when the (1 - 2 alpha) interval lies inside the margin, i.e. when
``|mean| < margin - t * s / sqrt(n)``; the same integral makes it exact, where the usual noncentral-t
shortcut (the sum of the two one-sided powers minus one) is only a lower bound that falls to 0 with
few seeds. tests/test_analysis_power.py checks both against simulation.

The non-parametric per-init test also has a floor: with n seeds a Friedman test (Wilcoxon for two
strategies) cannot return a p below the one of perfectly concordant ranks, computed here by running
the same scipy test on such ranks (Friedman with 4 strategies and 3 seeds: 0.029).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

POWER = 0.8
MAX_SEEDS = 1000
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(24)


# --- power of the paired tests -----------------------------------------------------------------------


def _chi_logpdf(x: np.ndarray, df: int) -> np.ndarray:
    from scipy import special

    return (df - 1) * np.log(x) - x * x / 2 - (df / 2 - 1) * math.log(2) - special.gammaln(df / 2)


_QUANTILES = (1e-12, 1e-8, 1e-5, 1e-3, 0.02, 0.2, 0.5, 0.8, 0.98, 1 - 1e-3, 1 - 1e-5, 1 - 1e-8, 1 - 1e-12)


def _over_sd(fn, sd: float, df: int, s_max: float = math.inf, breaks: tuple[float, ...] = ()) -> float:
    """E[fn(s) ; s < s_max] for the sample sd s of df + 1 normal draws with sd `sd`.

    Composite Gauss-Legendre over the chi distribution of s * sqrt(df) / sd, with panels between
    quantiles of that distribution and at `breaks` (values of s where fn changes fast).
    """
    from scipy import special

    to_chi = math.sqrt(df) / sd
    points = [math.sqrt(float(special.chdtri(df, 1 - q))) for q in _QUANTILES]
    lo, hi = points[0], min(points[-1], s_max * to_chi)
    points += [b * to_chi for b in breaks]
    points = sorted({lo, hi, *(x for x in points if lo < x < hi)})
    if hi <= lo:
        return 0.0
    a, b = np.array(points[:-1])[:, None], np.array(points[1:])[:, None]
    chi = (0.5 * (b - a) * _NODES + 0.5 * (b + a)).ravel()
    weights = (0.5 * (b - a) * _WEIGHTS).ravel() * np.exp(_chi_logpdf(chi, df))
    return float(np.sum(weights * fn(chi / to_chi)))


def t_power(diff: float, sd: float, n: int, alpha: float) -> float:
    """Power of the two-sided one-sample (paired) t-test at level alpha for a true mean difference `diff`.

    The noncentral t tail probabilities (what statsmodels ``TTestPower`` computes), written as the normal
    probability of the mean given the sample sd, integrated over the sd's chi distribution: scipy's
    noncentral t returns nan or wrong values far in its tails, which a search over effects or seeds hits.
    """
    from scipy import special

    if n < 2:
        return 0.0
    if sd == 0:
        return 1.0 if diff != 0 else 0.0
    df, root = n - 1, math.sqrt(n)
    crit = float(special.stdtrit(df, 1 - alpha / 2))
    se = sd / root

    def reject(s: np.ndarray) -> np.ndarray:  # |mean| > crit * s / sqrt(n)
        bound = crit * s / root
        return special.ndtr((diff - bound) / se) + special.ndtr((-bound - diff) / se)

    edge = abs(diff) * root / crit  # where the mean's rejection probability turns over
    return min(1.0, max(0.0, _over_sd(reject, sd, df, breaks=(edge / 2, edge, 2 * edge) if edge > 0 else ())))


def tost_power(diff: float, sd: float, n: int, margin: float, alpha: float) -> float:
    """Power of the paired TOST within +-margin at level alpha (equivalent iff the 1 - 2 alpha CI is inside).

    Exact: P(|mean| < margin - t s / sqrt(n)) integrated over the chi distribution of the sample sd s.
    """
    from scipy import special

    if n < 2 or margin <= 0:
        return 0.0
    if sd == 0:
        return 1.0 if abs(diff) < margin else 0.0
    df, root = n - 1, math.sqrt(n)
    crit = float(special.stdtrit(df, 1 - alpha))
    se = sd / root

    def inside(s: np.ndarray) -> np.ndarray:
        half = margin - crit * s / root  # |mean| must stay below this
        return np.clip(special.ndtr((half - diff) / se) - special.ndtr((-half - diff) / se), 0.0, 1.0)

    # the interval only fits inside the margin for s below margin * sqrt(n) / crit
    s_max = margin * root / crit
    edge = max(0.0, margin - abs(diff)) * root / crit  # where |mean| starts to leave the shrinking window
    return min(1.0, max(0.0, _over_sd(inside, sd, df, s_max, breaks=(edge / 2, edge) if edge > 0 else ())))


def tost_power_nct_bound(diff: float, sd: float, n: int, margin: float, alpha: float) -> float:
    """The noncentral-t shortcut for TOST power: P(lower test rejects) + P(upper test rejects) - 1.

    A lower bound of `tost_power` (tight when power is high, 0 with few seeds); kept to cross-check.
    """
    from scipy import stats

    if n < 2 or sd == 0:
        return tost_power(diff, sd, n, margin, alpha)
    df, root = n - 1, math.sqrt(n)
    crit = float(stats.t.isf(alpha, df))
    lower = stats.nct.sf(crit, df, (diff + margin) * root / sd)
    upper = stats.nct.cdf(-crit, df, (diff - margin) * root / sd)
    return float(max(0.0, lower + upper - 1.0))


# --- what a design can reach -------------------------------------------------------------------------


def _solve_increasing(fn, target: float, start: float) -> float | None:
    """The x > 0 with fn(x) = target for an increasing fn (None if it cannot be bracketed)."""
    from scipy.optimize import brentq

    lo, hi = 0.0, start
    for _ in range(200):
        if fn(hi) >= target:
            break
        lo, hi = hi, hi * 2
    else:
        return None
    return float(brentq(lambda x: fn(x) - target, lo, hi, xtol=1e-9 * hi, rtol=1e-9))


def detectable_difference(sd: float, n: int, alpha: float, power: float = POWER) -> float | None:
    """Smallest true difference the two-sided paired t-test detects with `power` (None below 2 seeds)."""
    if n < 2 or sd is None:
        return None
    if sd == 0:
        return 0.0
    return _solve_increasing(lambda d: t_power(d, sd, n, alpha), power, sd)


def equivalence_margin(sd: float, n: int, alpha: float, power: float = POWER, diff: float = 0.0) -> float | None:
    """Smallest margin TOST shows equivalence within, with `power`, if the true difference is `diff`."""
    if n < 2 or sd is None:
        return None
    if sd == 0:
        return abs(diff)
    extra = _solve_increasing(lambda m: tost_power(diff, sd, n, abs(diff) + m, alpha), power, sd)
    return None if extra is None else extra + abs(diff)


def _smallest_n(fn, power: float, max_seeds: int) -> int | None:
    """Smallest n in [2, max_seeds] with fn(n) >= power, for fn increasing in n (None if max_seeds is not enough)."""
    if fn(max_seeds) < power:
        return None
    lo, hi = 1, max_seeds  # fn(lo) < power (n = 1 decides nothing), fn(hi) >= power
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fn(mid) >= power:
            hi = mid
        else:
            lo = mid
    return hi


def seeds_to_detect(
    diff: float, sd: float, alpha: float, power: float = POWER, max_seeds: int = MAX_SEEDS
) -> tuple[int | None, str | None]:
    """(seeds, note): paired seeds that detect a true difference `diff` with `power` (two-sided t at alpha)."""
    if sd is None or diff is None:
        return None, "no estimate of the spread (fewer than two paired seeds)"
    if diff == 0:
        return None, "not reachable: the observed difference is 0"
    if sd == 0:
        return 2, None
    n = _smallest_n(lambda k: t_power(diff, sd, k, alpha), power, max_seeds)
    return (n, None) if n is not None else (None, f"> {max_seeds}")


def seeds_for_equivalence(
    diff: float, sd: float, margin: float, alpha: float, power: float = POWER, max_seeds: int = MAX_SEEDS
) -> tuple[int | None, str | None]:
    """(seeds, note): paired seeds that show equivalence within +-margin with `power` if the true difference is
    `diff`."""
    if sd is None or diff is None:
        return None, "no estimate of the spread (fewer than two paired seeds)"
    if abs(diff) >= margin:
        return None, "not reachable: the observed difference is outside the margin"
    if sd == 0:
        return 2, None
    n = _smallest_n(lambda k: tost_power(diff, sd, k, margin, alpha), power, max_seeds)
    return (n, None) if n is not None else (None, f"> {max_seeds}")


def nonparametric_min_p(strategies: int, seeds: int) -> float | None:
    """Smallest p the per-init non-parametric test can return: Friedman (Wilcoxon for two strategies) on
    perfectly concordant ranks, computed by the same scipy call `raykd.analysis.stats` makes."""
    from scipy import stats

    if strategies < 2 or seeds < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if strategies == 2:
            p = stats.wilcoxon(np.arange(1.0, seeds + 1), np.zeros(seeds), zero_method="zsplit").pvalue
        else:
            p = stats.friedmanchisquare(*[np.full(seeds, float(j)) for j in range(strategies)]).pvalue
    return float(p)


def nonparametric_seeds_needed(strategies: int, alpha: float, max_seeds: int = 100) -> int | None:
    """Fewest seeds with which the per-init non-parametric test can reach p < alpha at all."""
    for n in range(2, max_seeds + 1):
        p = nonparametric_min_p(strategies, n)
        if p is not None and p < alpha:
            return n
    return None


# --- the plan of a study ------------------------------------------------------------------------------


def sd_interval(sd: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The chi-square interval of a true sd from a sample sd of n paired differences: a plan that treats the
    observed sd as the truth is optimistic (8 seeds at sd 1.79 leave the true sd anywhere in [1.18, 3.64])."""
    from scipy.stats import chi2

    df = n - 1
    return (
        sd * math.sqrt(df / float(chi2.ppf(0.5 + level / 2, df))),
        sd * math.sqrt(df / float(chi2.ppf(0.5 - level / 2, df))),
    )


def proposed_looks(seeds_needed: int | None, min_seeds: int = 4, looks: int = 4) -> list[int] | None:
    """Evenly spaced looks from `min_seeds` to the seeds needed (at the sd's upper bound): a sequential plan
    stops early when the truth is kinder than that bound, and its last look still has the power asked."""
    if seeds_needed is None:
        return None
    top = max(seeds_needed, min_seeds)
    return sorted({round(min_seeds + (top - min_seeds) * k / (looks - 1)) for k in range(looks)})


def comparison_plan(
    label: str,
    diff: float | None,
    sd: float | None,
    n: int,
    ci: list[float] | None,
    answer: str,
    margin: float,
    alpha: float,
    test_alpha: float,
    power: float = POWER,
    max_seeds: int = MAX_SEEDS,
) -> dict[str, Any]:
    """Everything the plan says about one paired comparison (numbers in the metric's units)."""
    out: dict[str, Any] = {
        "comparison": label,
        "answer": answer,
        "n": n,
        "diff": diff,
        "sd": sd,
        "test_alpha": test_alpha,
        "equivalence_shown_within": None if ci is None else max(abs(ci[0]), abs(ci[1])),
        "equivalence_margin_80": None,
        "detectable_difference_80": None,
        "seeds_to_detect_observed": None,
        "seeds_to_detect_observed_note": None,
        "seeds_for_equivalence": None,
        "seeds_for_equivalence_note": None,
        "sd_ci95": None,
        "seeds_for_equivalence_at_sd_upper": None,
        "seeds_for_equivalence_at_sd_upper_note": None,
    }
    if n < 2 or sd is None or diff is None:
        reason = "fewer than two paired seeds"
        out["seeds_to_detect_observed_note"] = out["seeds_for_equivalence_note"] = reason
        return out
    lo, hi = sd_interval(sd, n)
    out["sd_ci95"] = [lo, hi]
    seeds, note = seeds_for_equivalence(diff, hi, margin, alpha, power, max_seeds)
    out["seeds_for_equivalence_at_sd_upper"], out["seeds_for_equivalence_at_sd_upper_note"] = seeds, note
    out["equivalence_margin_80"] = equivalence_margin(sd, n, alpha, power)
    out["detectable_difference_80"] = detectable_difference(sd, n, test_alpha, power)
    seeds, note = seeds_to_detect(diff, sd, test_alpha, power, max_seeds)
    out["seeds_to_detect_observed"], out["seeds_to_detect_observed_note"] = seeds, note
    seeds, note = seeds_for_equivalence(diff, sd, margin, alpha, power, max_seeds)
    out["seeds_for_equivalence"], out["seeds_for_equivalence_note"] = seeds, note
    return out


def pair_answer(significant: bool | None, equivalent: bool | None) -> str:
    """differ / equivalent / differ_within_margin / undecided / untestable for one strategy vs the reference."""
    if significant is None and equivalent is None:
        return "untestable"
    if significant and equivalent:
        return "differ_within_margin"
    if significant:
        return "differ"
    if equivalent:
        return "equivalent"
    return "undecided"


def design_plan(result: dict[str, Any], power: float = POWER, max_seeds: int = MAX_SEEDS) -> dict[str, Any]:
    """The ``plan`` of an `analyze_trials` result: what this design (seeds, observed spread) could decide."""
    alpha = result["alpha"]
    nonparametric = (result["strategy_test"] or {}).get("nonparametric") or {}
    inits = sorted(set(result["equivalence"]["by_init"]) | set(result["matching_vs_none"]) | set(nonparametric))
    out: dict[str, Any] = {
        "power": power,
        "alpha": alpha,
        "margin": result["equivalence"]["margin"],
        "reference": result["equivalence"]["reference"],
        "max_seeds": max_seeds,
        "by_init": {},
    }
    for init in inits:
        entry: dict[str, Any] = {}
        if nonparametric.get(init):
            entry["nonparametric"] = _nonparametric_plan(nonparametric[init], alpha)
        vs_ref = _vs_reference_plans(result, init, power, max_seeds)
        if vs_ref:
            entry["vs_reference"] = vs_ref
        mv = result["matching_vs_none"].get(init)
        if mv:
            by_verdict = (result.get("verdict") or {}).get("by_init") or {}
            answer = ((by_verdict.get(init) or {}).get("matching_beats_none") or {}).get("answer", "undecided")
            entry["matching_vs_none"] = comparison_plan(
                "matching vs none",
                mv.get("diff"),
                mv.get("sd"),
                mv.get("n") or 0,
                mv.get("ci_tost"),
                answer,
                out["margin"],
                alpha,
                alpha,
                power,
                max_seeds,
            )
        seeds = [c["n"] for c in vs_ref.values()]
        if "matching_vs_none" in entry:
            seeds.append(entry["matching_vs_none"]["n"])
        entry["n_seeds"] = max(seeds, default=0)
        comparisons = [*vs_ref.values(), *([entry["matching_vs_none"]] if "matching_vs_none" in entry else [])]
        needed = [c["seeds_for_equivalence_at_sd_upper"] for c in comparisons]
        entry["seeds_needed_at_sd_upper"] = max(needed) if needed and None not in needed else None
        entry["proposed_looks"] = proposed_looks(entry["seeds_needed_at_sd_upper"])
        out["by_init"][init] = entry
    return out


def _nonparametric_plan(npar: dict[str, Any], alpha: float) -> dict[str, Any]:
    """Whether the rank test (Friedman/Wilcoxon) can reach alpha at all with this many seeds."""
    k, n = len(npar["strategies"]), len(npar["seeds"])
    floor = nonparametric_min_p(k, n)
    return {
        "test": npar["test"],
        "strategies": k,
        "seeds": n,
        "min_p": floor,
        "can_reach_alpha": floor is not None and floor < alpha,
        "seeds_needed": nonparametric_seeds_needed(k, alpha),
    }


def _vs_reference_plans(result: dict[str, Any], init: str, power: float, max_seeds: int) -> dict[str, Any]:
    """Per strategy, the plan of its comparison with the reference (Holm's alpha / m for the difference)."""
    alpha, margin = result["alpha"], result["equivalence"]["margin"]
    reference = result["equivalence"]["reference"]
    eq = result["equivalence"]["by_init"].get(init) or {}
    pw = result["pairwise"]["by_init"].get(init) or {}
    m = max(1, len(eq))
    plans = {}
    for strategy, e in eq.items():
        answer = pair_answer(pw.get(strategy, {}).get("significant"), e.get("equivalent"))
        plans[strategy] = comparison_plan(
            f"{strategy} vs {reference}",
            e.get("diff"),
            e.get("sd"),
            e.get("n") or 0,
            e.get("ci90"),
            answer,
            margin,
            alpha,
            alpha / m,
            power,
            max_seeds,
        )
    return plans


# --- the plan as text ---------------------------------------------------------------------------------


def claim_plan(claim: dict[str, Any], power: float = POWER, max_seeds: int = MAX_SEEDS) -> dict[str, Any] | None:
    """What an undecided claim would take to be shown, planned on its own comparisons at its own level: the paired
    seeds at which every comparison the claim rests on reaches `power` (the binding one is the hardest), at the
    observed sd and at the upper end of the sd's 95% interval. None for a decided claim."""
    if claim["verdict"] != "undecided":
        return None
    level, margin, name = claim["look"]["alpha"], claim["margin"], claim["name"]
    needs: list[tuple[float, float, str, int | None, int | None]] = []
    for c in claim["comparisons"]:
        if c.get("sd") is None:
            return {"seeds": None, "note": f"{c['comparison']}: fewer than two paired seeds, nothing to plan from"}
        if name == "strategy_does_not_matter":
            gap = margin - abs(c["diff"])

            def seeds(sd: float, c=c) -> int | None:
                return seeds_for_equivalence(c["diff"], sd, margin, level, power, max_seeds)[0]
        else:
            gap = c["diff"] - (margin if name == "matching_beats_none_by_margin" else 0.0)

            def seeds(sd: float, gap=gap) -> int | None:
                return seeds_to_detect(gap, sd, 2 * level, power, max_seeds)[0] if gap > 0 else None

        if gap <= 0:
            return {
                "seeds": None,
                "binding": c["comparison"],
                "note": f"{c['comparison']}: more seeds cannot show it, the observed difference is "
                + (
                    "outside the margin"
                    if name == "strategy_does_not_matter"
                    else "not above " + ("the margin" if name == "matching_beats_none_by_margin" else "none")
                ),
            }
        needs.append((gap, c["sd"], c["comparison"], seeds(c["sd"]), seeds(sd_interval(c["sd"], c["n"])[1])))
    if not needs:
        return {"seeds": None, "note": "no comparison to plan from"}
    worst = max(needs, key=lambda x: (x[3] is None, x[3] or 0))
    upper = max(needs, key=lambda x: (x[4] is None, x[4] or 0))
    return {"seeds": worst[3], "binding": worst[2], "seeds_sd_upper": upper[4], "power": power, "level": level}
