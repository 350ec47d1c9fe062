"""Does the layer-selection strategy matter? Tests over the finished trials of a study.

Input: one row per trial (``strategy``, ``init``, ``weight``, ``seed``, ``metric``, ``status``).
Seeds are paired across arms (same seed = same data order and, under random init, the same student
draw), so every test blocks on the seed within the init:

- ``strategy_test``: OLS ``metric ~ C(strategy) * C(init) + C(init):C(seed)`` over the matching
  strategies (``none`` excluded), type-II ANOVA (statsmodels): F, p and partial eta-squared for
  strategy, init and their interaction. The seed block is nested in the init: under random init a
  seed picks the student's weights and the data order, under copied init only the data order, so
  one seed effect shared by both inits would be the wrong block. Per init: ``within_init`` (the
  ANOVA ``metric ~ C(strategy) + C(seed)`` on that init's trials) and a Friedman test blocked by
  seed (complete designs only).
- ``pairwise``: each matching strategy against the reference, per init: paired t-test over seeds,
  Holm-corrected within the init.
- ``equivalence``: TOST of each strategy against the reference within +-margin at level ``alpha``:
  equivalent when TOST p < alpha, i.e. when the (1 - 2 alpha) interval of the paired difference lies
  inside the margin (``ci90`` holds that interval whatever its level; ``ci_level`` says which).
- ``matching_vs_none``: per init, the mean of the matching strategies minus ``none``, paired by seed:
  paired t (``ci95``, ``p``) and TOST within the same margin (``ci_tost``, ``tost_p``, ``equivalent``).
- ``cells``: n, mean, std and a 95% t interval per (strategy, init).
- ``verdict``: per init, the answers to "do the strategies differ?" and "does matching beat none?",
  each shown, refuted or undecided (see `verdict`), and the three top-level booleans.
- ``plan``: what this design could decide (`raykd.analysis.power.design_plan`).

Calibration (tests/test_analysis_stats.py, 20000 simulated null studies of 4 strategies x 2 inits x 3
seeds with init-specific seed effects, a noisier random init, per-seed random maps and one noisier arm):
the ANOVA strategy main effect rejects 6.7% at nominal 5%; its pooled
residual makes it liberal when arm variances differ a lot (8.9% with a 2-point random-map sd). The
per-init "differ" answer is wrong 3.9% / 4.6% (random / copied init), "better" 1.8% / 0.3%.

Whatever the design cannot support (one seed, one strategy, no ``none`` arm, incomplete blocks)
comes back as ``None`` with the reason in ``notes``; nothing raises on a small study.
Differences are oriented so that positive means better (``higher_is_better`` flips them).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from raykd.analysis.claims import (
    DEFAULT_MIN_SEEDS,
    PROPORTION_METRICS,
    holm,
    room,
    study_claims,
    test_sampling,
    verdict,
)
from raykd.analysis.power import claim_plan, design_plan
from raykd.tasks.metrics import points_per_unit

NONE = "none"
DEFAULT_ALPHA = 0.05


def split_trials(trials: Iterable[Mapping[str, Any]]) -> tuple[list[dict], list[dict]]:
    """(usable, excluded): usable trials finished with a finite metric; the rest say why not."""
    usable, excluded = [], []
    for trial in trials:
        row = dict(trial)
        value = row.get("metric")
        if row.get("status") != "finished":
            excluded.append({**row, "reason": row.get("status") or "no status"})
        elif value is None or not math.isfinite(float(value)):
            excluded.append({**row, "reason": "no test metric"})
        else:
            row["metric"] = float(value)
            usable.append(row)
    return usable, excluded


def select_weights(trials: list[dict], higher: bool = True) -> tuple[list[dict], dict[str, float]]:
    """One weight per (strategy, init): with a weight grid, the one with the best mean validation metric.

    Choosing on validation and testing on test keeps the comparison honest. Returns the trials of the
    chosen weights and the choice per cell (only cells that had more than one weight).
    """
    by_cell: dict[tuple[str, str], dict[float, list[dict]]] = {}
    for t in trials:
        by_cell.setdefault((t["strategy"], t["init"]), {}).setdefault(float(t.get("weight", 0.0)), []).append(t)
    kept, chosen = [], {}
    for cell, weights in by_cell.items():
        if len(weights) == 1:
            kept.extend(next(iter(weights.values())))
            continue

        def score(w: float, weights=weights) -> float:
            vals = [t.get("best_validation") for t in weights[w]]
            vals = [v for v in vals if v is not None and math.isfinite(v)]
            if not vals:
                return -math.inf
            return float(np.mean(vals)) * (1 if higher else -1)

        best = max(weights, key=score)
        chosen[f"{cell[0]}/{cell[1]}"] = best
        kept.extend(weights[best])
    return kept, chosen


def mean_ci(values: Iterable[float]) -> dict[str, Any]:
    """n, mean, std (ddof 1) and the 95% t interval of the mean (None below two values)."""
    x = np.asarray(list(values), dtype=float)
    d = paired_difference(x, 0.95)
    std = float(x.std(ddof=1)) if x.size >= 2 else None
    return {"n": d["n"], "mean": d["diff"], "std": std, "ci95": d["ci"]}


def cells_table(trials: list[dict]) -> list[dict[str, Any]]:
    cells: dict[tuple[str, str], list[dict]] = {}
    for t in trials:
        cells.setdefault((t["strategy"], t["init"]), []).append(t)
    out = []
    for (strategy, init), rows in cells.items():
        rows = sorted(rows, key=lambda r: r["seed"])
        weights = sorted({float(r.get("weight", 0.0)) for r in rows})
        out.append(
            {
                "strategy": strategy,
                "init": init,
                "weight": weights[0] if len(weights) == 1 else weights,
                **mean_ci(r["metric"] for r in rows),
                "seeds": [r["seed"] for r in rows],
                "values": [r["metric"] for r in rows],
            }
        )
    return out


def paired(trials: list[dict], init: str, a: str, b: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Metrics of strategies a and b under `init` on the seeds both have, in seed order."""
    va = {t["seed"]: t["metric"] for t in trials if t["init"] == init and t["strategy"] == a}
    vb = {t["seed"]: t["metric"] for t in trials if t["init"] == init and t["strategy"] == b}
    seeds = sorted(set(va) & set(vb))
    return np.array([va[s] for s in seeds]), np.array([vb[s] for s in seeds]), seeds


def ci_level(alpha: float) -> float:
    """Level of the interval that decides TOST at `alpha`: 1 - 2 alpha (0.90 at alpha 0.05, 0.98 at 0.01)."""
    return round(1.0 - 2.0 * alpha, 10)


def level_label(level: float) -> str:
    """0.9 -> '90%', 0.98 -> '98%'."""
    return f"{100 * level:.10g}%"


def paired_difference(diffs: np.ndarray, level: float = 0.95) -> dict[str, Any]:
    """Mean paired difference, its sd, its t interval and the two-sided one-sample t-test p (None when n < 2)."""
    from scipy import stats

    n = int(diffs.size)
    out: dict[str, Any] = {"n": n, "diff": float(diffs.mean()) if n else None, "sd": None, "ci": None, "p": None}
    if n < 2:
        return out
    std = float(diffs.std(ddof=1))
    out["sd"] = std
    if std == 0.0:
        out["ci"] = [out["diff"], out["diff"]]
        out["p"] = 1.0 if out["diff"] == 0.0 else 0.0
        return out
    se = std / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    out["ci"] = [out["diff"] - half, out["diff"] + half]
    out["p"] = float(2 * stats.t.sf(abs(out["diff"]) / se, n - 1))  # = scipy.stats.ttest_1samp(diffs, 0)
    return out


def tost_paired(diffs: np.ndarray, margin: float, alpha: float) -> dict[str, Any]:
    """TOST of paired differences within (-margin, +margin) at level alpha.

    p is the larger of the two one-sided t-test p values (H0: diff <= -margin, H0: diff >= +margin);
    ``ci`` is the (1 - 2 alpha) t interval; ``equivalent`` is p < alpha, which holds exactly when that
    interval lies inside the margin. Same p as statsmodels ``ttost_paired``.
    """
    from scipy import stats

    n = int(diffs.size)
    out: dict[str, Any] = {
        "n": n,
        "diff": float(diffs.mean()) if n else None,
        "sd": None,
        "ci": None,
        "ci_level": ci_level(alpha),
        "p": None,
        "equivalent": None,
    }
    if n < 2:
        return out
    mean, sd = out["diff"], float(diffs.std(ddof=1))
    out["sd"] = sd
    if sd == 0.0:
        inside = bool(-margin < mean < margin)
        out.update(ci=[mean, mean], p=0.0 if inside else 1.0, equivalent=inside)
        return out
    df, se = n - 1, sd / math.sqrt(n)
    half = float(stats.t.isf(alpha, df)) * se
    p_lower = float(stats.t.sf((mean + margin) / se, df))  # H0: diff <= -margin
    p_upper = float(stats.t.cdf((mean - margin) / se, df))  # H0: diff >= +margin
    out.update(ci=[mean - half, mean + half], p=max(p_lower, p_upper))
    out["equivalent"] = bool(out["p"] < alpha)
    return out


def _anova(rows: list[dict], formula: str):
    """(fitted OLS, type-II ANOVA table or None when no residual degrees of freedom are left)."""
    import pandas as pd
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm
    from statsmodels.tools.sm_exceptions import SingularMatrixWarning, ValueWarning

    frame = pd.DataFrame(
        {
            "metric": [t["metric"] for t in rows],
            "strategy": [t["strategy"] for t in rows],
            "init": [t["init"] for t in rows],
            "seed": [str(t["seed"]) for t in rows],
        }
    )
    with warnings.catch_warnings():
        # seeds that differ between inits (a failed seed under one init) leave empty C(init):C(seed) columns:
        # the fit is rank-deficient, df_resid counts the rank and the type-II strategy SS is still
        # SS(strategy | init, blocks); statsmodels warns about it
        warnings.simplefilter("ignore", SingularMatrixWarning)
        warnings.simplefilter("ignore", ValueWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # a perfect fit gives 0/0 F
        model = smf.ols(formula, frame).fit()
        if model.df_resid < 1:
            return model, None
        return model, anova_lm(model, typ=2)


def _effect(table, term: str) -> dict[str, Any] | None:
    """F, p, df and partial eta2 of one term; F and p are None when the residual variance is numerically zero
    (tied scores fit exactly: an F of 1e25 from a residual of 1e-30 is no evidence)."""
    if table is None or term not in table.index:
        return None
    ss_resid = float(table.loc["Residual", "sum_sq"])
    row = table.loc[term]
    ss = float(row["sum_sq"])
    f, p = float(row["F"]), float(row["PR(>F)"])
    if ss_resid <= 1e-12 * max(ss + ss_resid, 1e-300):
        f = p = math.nan
    return {
        "F": f if math.isfinite(f) else None,
        "p": p if math.isfinite(p) else None,
        "df": int(row["df"]),
        "partial_eta2": ss / (ss + ss_resid) if ss + ss_resid > 0 and math.isfinite(f) else None,
    }


def strategy_anova(trials: list[dict], notes: list[str]) -> dict[str, Any] | None:
    """Type-II ANOVA of metric ~ strategy * init + seed-within-init over the matching strategies."""
    rows = [t for t in trials if t["strategy"] != NONE]
    strategies = sorted({t["strategy"] for t in rows})
    inits = sorted({t["init"] for t in rows})
    seeds = sorted({t["seed"] for t in rows})
    if len(strategies) < 2:
        notes.append(f"strategy test: needs at least two matching strategies with finished trials, has {strategies}")
        return None
    terms = ["C(strategy)"]
    missing = [
        (s, i) for s in strategies for i in inits if not any(t["strategy"] == s and t["init"] == i for t in rows)
    ]
    if len(inits) > 1 and missing:
        terms = ["C(strategy) + C(init)"]
        notes.append(
            f"strategy test: no finished trial in cell(s) {missing}; the strategy x init interaction "
            "cannot be estimated, so the model is additive"
        )
    elif len(inits) > 1:
        terms = ["C(strategy) * C(init)"]
    else:
        notes.append(f"strategy test: a single init ({inits[0]}); no init or interaction terms")
    if len(seeds) > 1:
        # a seed is a block within its init: weights + data order under random init, data order under copied init
        terms.append("C(init):C(seed)" if len(inits) > 1 else "C(seed)")
    formula = "metric ~ " + " + ".join(terms)
    model, table = _anova(rows, formula)
    if table is None:
        notes.append(
            f"strategy test: {formula} leaves no residual degrees of freedom ({len(rows)} trials); "
            "more seeds are needed"
        )
        return {
            "test": "type-II ANOVA (OLS)",
            "formula": formula,
            "n": len(rows),
            "df_resid": 0,
            "strategy": None,
            "init": None,
            "interaction": None,
        }
    return {
        "test": "type-II ANOVA (OLS)",
        "formula": formula,
        "n": len(rows),
        "df_resid": int(model.df_resid),
        "strategy": _effect(table, "C(strategy)"),
        "init": _effect(table, "C(init)"),
        "interaction": _effect(table, "C(strategy):C(init)"),
    }


def anova_within_init(trials: list[dict], notes: list[str]) -> dict[str, Any]:
    """Per init: type-II ANOVA ``metric ~ C(strategy) + C(seed)`` over that init's matching strategies.

    Fitted per init, so each init's test uses its own residual variance (copied-init students are
    typically much less noisy than random-init ones; a pooled residual would make one init's test
    liberal and the other's conservative).
    """
    out: dict[str, Any] = {}
    rows = [t for t in trials if t["strategy"] != NONE]
    for init in sorted({t["init"] for t in rows}):
        here = [t for t in rows if t["init"] == init]
        strategies = sorted({t["strategy"] for t in here})
        seeds = sorted({t["seed"] for t in here})
        if len(strategies) < 2:
            out[init] = None
            continue
        formula = "metric ~ C(strategy)" + (" + C(seed)" if len(seeds) > 1 else "")
        model, table = _anova(here, formula)
        out[init] = {
            "test": "type-II ANOVA (OLS) within init",
            "formula": formula,
            "n": len(here),
            "df_resid": int(model.df_resid) if table is not None else 0,
            "strategy": _effect(table, "C(strategy)"),
        }
        if table is None:
            notes.append(f"strategy test within {init} init: {formula} leaves no residual degrees of freedom")
    return out


def friedman_per_init(trials: list[dict], notes: list[str]) -> dict[str, Any]:
    """Per init: Friedman test of strategy blocked by seed (Wilcoxon signed-rank for two strategies)."""
    from scipy import stats

    out: dict[str, Any] = {}
    rows = [t for t in trials if t["strategy"] != NONE]
    for init in sorted({t["init"] for t in rows}):
        table: dict[str, dict[int, float]] = {}
        for t in rows:
            if t["init"] == init:
                table.setdefault(t["strategy"], {})[t["seed"]] = t["metric"]
        strategies = sorted(table)
        seeds = sorted(set.intersection(*(set(v) for v in table.values())))
        if len(strategies) < 2 or len(seeds) < 2:
            notes.append(
                f"non-parametric check ({init}): needs two strategies on two common seeds, has "
                f"{len(strategies)} strategies, {len(seeds)} common seeds"
            )
            out[init] = None
            continue
        if any(set(v) != set(seeds) for v in table.values()):
            notes.append(
                f"non-parametric check ({init}): incomplete blocks; only the {len(seeds)} seeds every "
                "strategy finished are used"
            )
        samples = [[table[s][k] for k in seeds] for s in strategies]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if len(strategies) == 2:
                result = stats.wilcoxon(samples[0], samples[1], zero_method="zsplit")
                name = "Wilcoxon signed-rank (paired by seed)"
            else:
                result = stats.friedmanchisquare(*samples)
                name = "Friedman (blocked by seed)"
        p = float(result.pvalue)
        out[init] = {
            "test": name,
            "statistic": float(result.statistic),
            "p": p if math.isfinite(p) else None,
            "strategies": strategies,
            "seeds": seeds,
        }
    return out


def pairwise_and_equivalence(
    trials: list[dict], reference: str, margin: float, alpha: float, sign: float, notes: list[str]
) -> tuple[dict, dict]:
    """Each matching strategy vs the reference per init: Holm-corrected paired t and TOST within +-margin at alpha."""
    pairwise: dict[str, dict] = {}
    equivalence: dict[str, dict] = {}
    rows = [t for t in trials if t["strategy"] != NONE]
    for init in sorted({t["init"] for t in rows}):
        others = sorted({t["strategy"] for t in rows if t["init"] == init} - {reference})
        has_reference = any(t["init"] == init and t["strategy"] == reference for t in rows)
        if not has_reference or not others:
            notes.append(
                f"pairwise/equivalence ({init}): needs the reference {reference!r} and another matching "
                "strategy with finished trials"
            )
            continue
        comparisons, raw_p = {}, []
        eq = {}
        for strategy in others:
            a, b, seeds = paired(trials, init, strategy, reference)
            diffs = sign * (a - b)
            d95 = paired_difference(diffs, 0.95)
            comparisons[strategy] = {
                "diff": d95["diff"],
                "ci95": d95["ci"],
                "p": d95["p"],
                "n": d95["n"],
                "seeds": seeds,
            }
            raw_p.append(d95["p"])
            tost = tost_paired(diffs, margin, alpha)
            # "ci90" is the (1 - 2 alpha) interval whatever alpha is; "ci_level" says which
            eq[strategy] = {
                "diff": tost["diff"],
                "ci90": tost["ci"],
                "ci_level": tost["ci_level"],
                "p": tost["p"],
                "equivalent": tost["equivalent"],
                "n": tost["n"],
                "sd": tost["sd"],
            }
        testable = [i for i, p in enumerate(raw_p) if p is not None]
        if testable:
            for i, p_adj in zip(testable, holm(raw_p[i] for i in testable)):
                name = others[i]
                comparisons[name]["p_holm"] = float(p_adj)
                comparisons[name]["significant"] = bool(p_adj < alpha)
        for name in others:
            comparisons[name].setdefault("p_holm", None)
            comparisons[name].setdefault("significant", None)
        for name in others:
            eq[name]["reading"] = pair_reading(comparisons[name], eq[name])
        pairwise[init] = comparisons
        equivalence[init] = eq
        if any(c["p"] is None for c in comparisons.values()):
            notes.append(
                f"pairwise/equivalence ({init}): some strategies share fewer than two seeds with "
                f"{reference!r}; they are not tested"
            )
    return pairwise, equivalence


def pair_reading(pair: dict[str, Any], eq: dict[str, Any]) -> str:
    """One strategy against the reference, as a reader sees it: differs (Holm-corrected paired t), equivalent
    (TOST), both (a difference inside the margin), undecided, or not testable. A description, not a claim."""
    if pair.get("p") is None and eq.get("p") is None:
        return "not testable"
    if pair.get("significant") and eq.get("equivalent"):
        return "differs, within margin"
    if pair.get("significant"):
        return "differs"
    return "equivalent" if eq.get("equivalent") else "undecided"


def matching_vs_none(
    trials: list[dict], sign: float, notes: list[str], margin: float | None = None, alpha: float = DEFAULT_ALPHA
) -> dict[str, Any]:
    """Per init: mean over the matching strategies minus `none`, paired by seed (paired t and, given a margin,
    TOST at alpha: ``tost_p``, its (1 - 2 alpha) interval ``ci_tost`` and ``equivalent``); also per strategy."""
    out: dict[str, Any] = {}
    for init in sorted({t["init"] for t in trials}):
        here = [t for t in trials if t["init"] == init]
        none = {t["seed"]: t["metric"] for t in here if t["strategy"] == NONE}
        matching = sorted({t["strategy"] for t in here} - {NONE})
        if not none or not matching:
            notes.append(f"matching vs none ({init}): needs a 'none' arm and a matching strategy with finished trials")
            continue
        per_seed = {}
        for seed in sorted(none):
            values = [t["metric"] for t in here if t["seed"] == seed and t["strategy"] != NONE]
            if values:
                per_seed[seed] = sign * (float(np.mean(values)) - none[seed])
        diffs = np.array(list(per_seed.values()))
        summary = paired_difference(diffs, 0.95)
        tost = tost_paired(diffs, margin, alpha) if margin is not None else {}
        by_strategy = {}
        for strategy in matching:
            a, b, _ = paired(trials, init, strategy, NONE)
            d = paired_difference(sign * (a - b), 0.95)
            by_strategy[strategy] = {"diff": d["diff"], "ci95": d["ci"], "p": d["p"], "n": d["n"]}
        out[init] = {
            "diff": summary["diff"],
            "ci95": summary["ci"],
            "p": summary["p"],
            "n": summary["n"],
            "sd": summary["sd"],
            "significant": None if summary["p"] is None else bool(summary["p"] < alpha),
            "margin": margin,
            "ci_level": tost.get("ci_level"),
            "ci_tost": tost.get("ci"),
            "tost_p": tost.get("p"),
            "equivalent": tost.get("equivalent"),
            "seeds": sorted(per_seed),
            "by_strategy": by_strategy,
        }
        if summary["n"] < 2:
            notes.append(f"matching vs none ({init}): {summary['n']} paired seed(s); no test")
    return out


def _strategy_tests(usable: list[Mapping[str, Any]], notes: list[str]) -> dict[str, Any]:
    """Is the strategy a factor: the two-way ANOVA, the ANOVA within each init, and the rank test per init."""
    anova = strategy_anova(usable, notes) if usable else None
    if not usable:
        notes.append("no finished trials: nothing to test")
    empty = {"test": "type-II ANOVA (OLS)", "formula": None, "strategy": None, "init": None, "interaction": None}
    return {
        **(anova or empty),
        "within_init": anova_within_init(usable, notes) if usable else {},
        "nonparametric": friedman_per_init(usable, notes) if usable else {},
    }


def analyze_trials(trials: Iterable[Mapping[str, Any]], **settings: Any) -> dict[str, Any]:
    """Every test above on a study's trial rows, and the claims they decide; JSON-ready (the statistical half of
    ``summary.json``). Settings: see `_tests`."""
    result = _tests(trials, **settings)
    result["verdict"] = verdict(result, result["claims"])
    result["plan"] = design_plan(result)
    return result


EXCLUDED_KEYS = ("trial_id", "strategy", "init", "weight", "seed", "status", "reason")


def _reference(usable: list[dict], reference: str, notes: list[str]) -> str:
    """The reference strategy, or the first matching one (with a note) when it has no finished trial."""
    matching = sorted({t["strategy"] for t in usable} - {NONE})
    if reference not in matching and matching:
        notes.append(f"reference strategy {reference!r} has no finished trials; using {matching[0]!r}")
        return matching[0]
    return reference


def _tests(
    trials: Iterable[Mapping[str, Any]],
    *,
    metric: str = "metric",
    higher_is_better: bool = True,
    reference: str = "forward",
    margin: float = 0.01,
    alpha: float = DEFAULT_ALPHA,
    teacher_metric: float | None = None,
    min_room_margins: float = 2.0,
    min_seeds: int = DEFAULT_MIN_SEEDS,
    test_examples: int | None = None,
    look: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The tests and claims at `look` (`raykd.analysis.sequential.look`; default: a fixed design's one look)."""
    notes: list[str] = []
    usable, excluded = split_trials(trials)
    usable, chosen = select_weights(usable, higher_is_better)
    if chosen:
        notes.append(
            f"several hidden-loss weights per cell: each is represented by its best validation weight ({chosen})"
        )
    sign = 1.0 if higher_is_better else -1.0
    reference = _reference(usable, reference, notes)
    strategy_test = _strategy_tests(usable, notes)
    pairwise, equivalence = pairwise_and_equivalence(usable, reference, margin, alpha, sign, notes)
    versus_none = matching_vs_none(usable, sign, notes, margin, alpha)
    level = ci_level(alpha)
    scale = points_per_unit(metric)
    teacher_se, sd_floor = test_sampling(metric, teacher_metric, test_examples)
    if test_examples is None and metric in PROPORTION_METRICS:
        notes.append("test set size unknown: the teacher's sampling error and the tie floor are taken as 0")
    look = look or {"index": 1, "of": 1, "seeds": len({t["seed"] for t in usable}), "alpha": alpha, "planned": True}
    spaces = room(usable, teacher_metric, margin, min_room_margins, sign, alpha, teacher_se, scale)
    settings = {"margin": margin, "scale": scale, "look": look, "min_seeds": min_seeds, "sd_floor": sd_floor}
    return {
        "metric": metric,
        "higher_is_better": higher_is_better,
        "alpha": alpha,
        "n_trials": len(usable) + len(excluded),
        "n_used": len(usable),
        "excluded": [{k: e.get(k) for k in EXCLUDED_KEYS} for e in excluded],
        "chosen_weights": chosen,
        "cells": cells_table(usable),
        "strategy_test": strategy_test,
        "pairwise": {"reference": reference, "correction": "holm", "by_init": pairwise},
        "equivalence": {
            "reference": reference,
            "margin": margin,
            "alpha": alpha,
            "ci_level": level,
            "test": f"TOST (paired t, {level_label(level)} CI)",
            "by_init": equivalence,
        },
        "matching_vs_none": versus_none,
        "room": spaces,
        "claims": [{**c, "plan": claim_plan(c)} for c in study_claims(usable, sign=sign, room=spaces, **settings)],
        "rules": {"min_seeds": min_seeds, "sd_floor": sd_floor, "test_examples": test_examples},
        "notes": notes,
    }
