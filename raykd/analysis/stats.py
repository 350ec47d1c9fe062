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
the ANOVA strategy main effect rejects 6.7% at nominal 5% (the old shared seed block: 2.1%); its pooled
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

NONE = "none"
DEFAULT_ALPHA = 0.05
# Metric points per unit of the metric as stored: accuracy/F1/exact match and ROUGE F-measures are
# fractions (0..1, as `evaluate` returns them; 100 is also the default for unlisted metrics); BLEU
# and chrF are already in points.
POINTS_PER_UNIT = {"sacrebleu": 1.0, "chrf": 1.0, "rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0, "rougeLsum": 100.0}


def points_per_unit(metric: str) -> float:
    return POINTS_PER_UNIT.get(metric, 100.0)


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


def holm(pvalues: Iterable[float]) -> list[float]:
    """Holm step-down adjusted p values (statsmodels ``multipletests(method="holm")`` gives the same numbers
    but runs a full ``gc.collect()`` on every call, which dominates a simulation of many studies)."""
    p = np.asarray(list(pvalues), dtype=float)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((p.size - np.arange(p.size)) * p[order]))
    out = np.empty(p.size)
    out[order] = adjusted
    return out.tolist()


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
    if table is None or term not in table.index:
        return None
    ss_resid = float(table.loc["Residual", "sum_sq"])
    row = table.loc[term]
    ss = float(row["sum_sq"])
    f, p = float(row["F"]), float(row["PR(>F)"])
    return {
        "F": f if math.isfinite(f) else None,
        "p": p if math.isfinite(p) else None,
        "df": int(row["df"]),
        "partial_eta2": ss / (ss + ss_resid) if ss + ss_resid > 0 else None,
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
        pairwise[init] = comparisons
        equivalence[init] = eq
        if any(c["p"] is None for c in comparisons.values()):
            notes.append(
                f"pairwise/equivalence ({init}): some strategies share fewer than two seeds with "
                f"{reference!r}; they are not tested"
            )
    return pairwise, equivalence


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


def room(
    trials: list[dict], teacher_metric: float | None, margin: float, min_room_margins: float, sign: float
) -> dict[str, Any]:
    """Per init: how much room the arms had to differ, the teacher's metric minus the `none` arm's mean (the gap
    matching could close; the worst matching cell's mean when there is no `none` arm), in metric units. An
    equivalence margin says something only against that room: below `min_room_margins` x the margin,
    equivalence-based answers are not findings (`verdict` marks them undecided)."""
    out: dict[str, Any] = {}
    if teacher_metric is None:
        return out
    for init in sorted({t["init"] for t in trials}):
        cells: dict[str, list[float]] = {}
        for t in trials:
            if t["init"] == init:
                cells.setdefault(t["strategy"], []).append(t["metric"])
        means = {strategy: float(np.mean(v)) for strategy, v in cells.items()}
        if NONE in means:
            against, floor = NONE, means[NONE]
        else:
            against = min(means, key=lambda k: sign * means[k])
            floor = means[against]
        gap = sign * (teacher_metric - floor)
        out[init] = {
            "teacher": teacher_metric,
            "against": against,
            "floor": floor,
            "room": gap,
            "min_room": min_room_margins * margin,
            "enough": bool(gap >= min_room_margins * margin),
        }
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


def analyze_trials(
    trials: Iterable[Mapping[str, Any]],
    *,
    metric: str = "metric",
    higher_is_better: bool = True,
    reference: str = "forward",
    margin: float = 0.01,
    alpha: float = DEFAULT_ALPHA,
    teacher_metric: float | None = None,
    min_room_margins: float = 2.0,
) -> dict[str, Any]:
    """Every test above on a study's trial rows; JSON-ready (the statistical half of ``summary.json``)."""
    from raykd.analysis.power import design_plan

    notes: list[str] = []
    usable, excluded = split_trials(trials)
    usable, chosen = select_weights(usable, higher_is_better)
    if chosen:
        notes.append(
            "several hidden-loss weights per cell: each cell is represented by the weight with the best "
            f"mean validation metric ({chosen})"
        )
    sign = 1.0 if higher_is_better else -1.0
    matching = sorted({t["strategy"] for t in usable} - {NONE})
    if reference not in matching and matching:
        notes.append(f"reference strategy {reference!r} has no finished trials; using {matching[0]!r}")
        reference = matching[0]
    strategy_test = _strategy_tests(usable, notes)
    pairwise, equivalence = pairwise_and_equivalence(usable, reference, margin, alpha, sign, notes)
    versus_none = matching_vs_none(usable, sign, notes, margin, alpha)
    level = ci_level(alpha)
    result = {
        "metric": metric,
        "higher_is_better": higher_is_better,
        "alpha": alpha,
        "n_trials": len(usable) + len(excluded),
        "n_used": len(usable),
        "excluded": [
            {k: e.get(k) for k in ("trial_id", "strategy", "init", "weight", "seed", "status", "reason")}
            for e in excluded
        ],
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
        "room": room(usable, teacher_metric, margin, min_room_margins, sign),
        "notes": notes,
    }
    result["verdict"] = verdict(result, alpha)
    result["plan"] = design_plan(result)
    return result


# --- the verdict ---------------------------------------------------------------------------------------

CLAIM_STRATEGIES = "the layer-selection strategy does not matter"
CLAIM_MATCHING = "matching beats no matching"
# answer -> status of the paper's claim. A difference inside the margin is treated as no difference that
# matters (the margin is the smallest difference that does): the claim "does not matter" holds and
# "matching beats none" does not.
STRATEGY_CLAIM = {
    "differ": "refuted",
    "differ_within_margin": "shown",
    "equivalent": "shown",
    "undecided": "undecided",
    "untestable": "undecided",
}
MATCHING_CLAIM = {
    "better": "shown",
    "better_within_margin": "refuted",
    "worse": "refuted",
    "worse_within_margin": "refuted",
    "equivalent": "refuted",
    "undecided": "undecided",
    "untestable": "undecided",
}


def _p(p: float | None) -> str:
    return "n/a" if p is None else (f"{p:.3g}" if p >= 1e-4 else "<1e-4")


def _pe(p: float | None, name: str = "p") -> str:
    """'p=0.031' or 'p<1e-4'."""
    text = _p(p)
    return f"{name}{text}" if text.startswith("<") else f"{name}={text}"


def strategies_answer(result: dict[str, Any], init: str, alpha: float) -> dict[str, Any]:
    """Do the matching strategies differ under `init`?

    Answers differ | equivalent | differ_within_margin | undecided | untestable.

    A difference is shown when one of the init's difference tests -- the within-init ANOVA, the Friedman
    test and the paired t of each strategy against the reference -- is significant after Holm
    correction over all of them (``p_adjusted``). Taking whichever of them is significant on its own
    would reject a true null about 9% of the time at alpha 0.05 (simulated: 4 strategies x 3 seeds);
    Holm over the family keeps it at or below alpha. Equivalence is shown when TOST shows every
    strategy equivalent to the reference within the margin (an intersection-union test: level alpha
    without correction).
    """
    test = result["strategy_test"] or {}
    reference = result["equivalence"]["reference"]
    difference = []
    within = (test.get("within_init") or {}).get(init)
    if within and within.get("strategy") and within["strategy"].get("p") is not None:
        difference.append(
            {"test": f"ANOVA within init ({within['formula']})", "p": within["strategy"]["p"], "kind": "difference"}
        )
    npar = (test.get("nonparametric") or {}).get(init)
    if npar and npar.get("p") is not None:
        difference.append({"test": npar["test"], "p": npar["p"], "kind": "difference"})
    for strategy, c in (result["pairwise"]["by_init"].get(init) or {}).items():
        if c.get("p") is not None:
            difference.append({"test": f"paired t {strategy} vs {reference}", "p": c["p"], "kind": "difference"})
    for d, p_adjusted in zip(difference, holm(d["p"] for d in difference)):
        d["p_adjusted"] = p_adjusted  # Holm over every difference test of this init
    eq = result["equivalence"]["by_init"].get(init) or {}
    tost_ps = [e["p"] for e in eq.values()]
    equivalence = None
    if eq and all(p is not None for p in tost_ps):
        equivalence = {
            "test": f"TOST of every strategy vs {reference} (largest p)",
            "p": max(tost_ps),
            "kind": "equivalence",
        }
    elif any(p is not None for p in tost_ps):
        equivalence = {"test": f"TOST vs {reference} (not every strategy testable)", "p": None, "kind": "equivalence"}
    shown_difference = [d for d in difference if d["p_adjusted"] < alpha]
    shown_equivalence = bool(eq) and all(e["equivalent"] is True for e in eq.values())
    if shown_difference and shown_equivalence:
        answer, basis = "differ_within_margin", shown_difference + [equivalence]
    elif shown_difference:
        answer, basis = "differ", shown_difference
    elif shown_equivalence:
        answer, basis = "equivalent", [equivalence]
    elif difference or equivalence:
        answer, basis = "undecided", difference + ([equivalence] if equivalence else [])
    else:
        answer, basis = "untestable", []
    return {
        "question": "do the matching strategies differ?",
        "answer": answer,
        "basis": basis,
        "claim": CLAIM_STRATEGIES,
        "claim_status": STRATEGY_CLAIM[answer],
    }


def matching_answer(result: dict[str, Any], init: str, alpha: float) -> dict[str, Any]:
    """Does matching beat none under `init`?

    Answers better | worse | equivalent | better_within_margin | worse_within_margin | undecided | untestable.
    """
    v = result["matching_vs_none"].get(init)
    question = "does matching beat no matching?"
    if not v or v["p"] is None:
        return {
            "question": question,
            "answer": "untestable",
            "basis": [],
            "claim": CLAIM_MATCHING,
            "claim_status": "undecided",
        }
    t = {"test": "paired t, mean of the matching strategies minus none", "p": v["p"], "kind": "difference"}
    e = {"test": "TOST of matching minus none", "p": v.get("tost_p"), "kind": "equivalence"}
    significant, equivalent = v["p"] < alpha, v.get("equivalent") is True
    if significant and v["diff"] > 0:
        answer, basis = ("better_within_margin", [t, e]) if equivalent else ("better", [t])
    elif significant:
        answer, basis = ("worse_within_margin", [t, e]) if equivalent else ("worse", [t])
    elif equivalent:
        answer, basis = "equivalent", [e]
    else:
        answer, basis = "undecided", [t] + ([e] if e["p"] is not None else [])
    return {
        "question": question,
        "answer": answer,
        "basis": basis,
        "claim": CLAIM_MATCHING,
        "claim_status": MATCHING_CLAIM[answer],
    }


def verdict(result: dict[str, Any], alpha: float) -> dict[str, Any]:
    """Per init, the two questions answered shown / refuted / undecided; three top-level booleans and the text.

    ``strategy_significant``: the ANOVA strategy main effect at alpha (None when untestable).
    ``strategies_equivalent``: True = equivalence shown under every init tested; False = a difference
    (beyond the margin) shown under some init; None = undecided or untestable.
    ``matching_beats_none``: True = shown under some init and refuted under none; False = refuted under
    some init and shown under none; None = undecided or mixed (``by_init`` says which).
    """
    effect = (result["strategy_test"] or {}).get("strategy")
    significant = None if not effect or effect.get("p") is None else bool(effect["p"] < alpha)
    inits = sorted(
        set(result["equivalence"]["by_init"])
        | set(result["pairwise"]["by_init"])
        | set((result["strategy_test"] or {}).get("within_init") or {})
        | set((result["strategy_test"] or {}).get("nonparametric") or {})
        | set(result["matching_vs_none"])
    )
    by_init = {
        init: {
            "strategies_differ": strategies_answer(result, init, alpha),
            "matching_beats_none": matching_answer(result, init, alpha),
        }
        for init in inits
    }
    _gate_by_room(result, by_init)

    def statuses(key: str) -> dict[str, str]:
        return {i: a[key]["claim_status"] for i, a in by_init.items() if a[key]["answer"] != "untestable"}

    s1, s2 = statuses("strategies_differ"), statuses("matching_beats_none")
    equivalent = None
    if s1 and "refuted" in s1.values():
        equivalent = False
    elif s1 and all(s == "shown" for s in s1.values()):
        equivalent = True
    beats = None
    if "shown" in s2.values() and "refuted" not in s2.values():
        beats = True
    elif "refuted" in s2.values() and "shown" not in s2.values():
        beats = False
    out = {"strategy_significant": significant, "strategies_equivalent": equivalent, "matching_beats_none": beats}
    out["text"] = verdict_text(result, by_init, out, alpha)
    out["by_init"] = by_init
    return out


EQUIVALENCE_ANSWERS = {"equivalent", "differ_within_margin", "better_within_margin", "worse_within_margin"}


def _gate_by_room(result: dict[str, Any], by_init: dict[str, dict]) -> None:
    """An equivalence within a margin that is not small next to the room the arms had is no finding: such
    answers keep their test results but their claim status becomes undecided, with the reason."""
    scale = points_per_unit(result["metric"])
    for init, answers in by_init.items():
        space = (result.get("room") or {}).get(init)
        if not space or space["enough"]:
            continue
        reason = (
            f"the arms had {space['room'] * scale:.2f} points of room (teacher minus {space['against']}), "
            f"less than {space['min_room'] * scale:g} points ({space['min_room'] / result['equivalence']['margin']:g}"
            f" x the +-{result['equivalence']['margin'] * scale:g} margin): equivalence here is not a finding"
        )
        for answer in answers.values():
            if answer["answer"] in EQUIVALENCE_ANSWERS:
                answer["claim_status"] = "undecided"
                answer["no_room"] = reason


def _basis(items: list[dict]) -> str:
    return ", ".join(
        f"{b['test']} {_pe(b['p'])}" + (f" (Holm-adjusted {_p(b['p_adjusted'])})" if "p_adjusted" in b else "")
        for b in items
    )


def verdict_text(result: dict[str, Any], by_init: dict[str, dict], flags: dict[str, Any], alpha: float) -> str:
    """One line: the main effect, then per init what was shown, refuted or left undecided, then overall."""
    effect = (result["strategy_test"] or {}).get("strategy")
    sentences = []
    if flags["strategy_significant"] is None:
        sentences.append("The strategy main effect could not be tested")
    elif flags["strategy_significant"]:
        sentences.append(
            f"The strategy main effect is significant (ANOVA {_pe(effect['p'])}, partial eta2="
            f"{effect['partial_eta2']:.2f})"
        )
    else:
        sentences.append(
            f"The strategy main effect is not significant (ANOVA {_pe(effect['p'])}; that alone does not "
            "show the strategies equivalent)"
        )
    for init, answers in by_init.items():
        q1, q2 = answers["strategies_differ"], answers["matching_beats_none"]
        part1, part2 = _strategies_sentence(result, q1), _matching_sentence(result, init, q2)
        no_room = q1.get("no_room") or q2.get("no_room")
        if no_room:
            part2 += f" (not a finding: {no_room})"
        sentences.append(f"{init} init: {part1}; {part2}")
    sentences += _overall(by_init, flags)
    text = ". ".join(s[0].upper() + s[1:] for s in sentences)
    return text + "."


def _strategies_sentence(result: dict[str, Any], q1: dict[str, Any]) -> str:
    """Question 1 of one init, with the tests behind its answer."""
    margin = result["equivalence"]["margin"] * points_per_unit(result["metric"])
    reference = result["equivalence"]["reference"]
    claim1 = f"claim '{CLAIM_STRATEGIES}' {q1['claim_status']}"
    if q1["answer"] == "differ":
        return f"the strategies differ ({_basis(q1['basis'])}): {claim1}"
    if q1["answer"] == "differ_within_margin":
        diff_basis = [b for b in q1["basis"] if b["kind"] == "difference"]
        eq_basis = [b for b in q1["basis"] if b["kind"] == "equivalence"]
        return (
            f"the strategies differ ({_basis(diff_basis)}) but every strategy is within +-{margin:g} "
            f"points of {reference} ({_basis(eq_basis)}): {claim1} at this margin"
        )
    if q1["answer"] == "equivalent":
        return (
            f"every strategy is equivalent to {reference} within +-{margin:g} points ({_basis(q1['basis'])}): {claim1}"
        )
    if q1["answer"] == "undecided":
        diffs = [b for b in q1["basis"] if b["kind"] == "difference"]
        eqs = [b for b in q1["basis"] if b["kind"] == "equivalence"]
        smallest = min(diffs, key=lambda b: b["p_adjusted"]) if diffs else None
        no_diff = (
            f"no difference between the strategies is shown (smallest Holm-adjusted "
            f"{_pe(smallest['p_adjusted'])} over {len(diffs)} difference tests, {smallest['test']})"
            if smallest
            else "no difference test ran"
        )
        no_eq = (
            f"equivalence to {reference} within +-{margin:g} points is not shown ("
            + (
                f"{eqs[0]['test']}: {_pe(eqs[0]['p'])}"
                if eqs and eqs[0]["p"] is not None
                else "TOST could not run for every strategy"
            )
            + ")"
        )
        return f"{no_diff} and {no_eq}: {claim1}"
    return "the strategies could not be compared"


def _matching_sentence(result: dict[str, Any], init: str, q2: dict[str, Any]) -> str:
    """Question 2 of one init, with the tests behind its answer."""
    scale = points_per_unit(result["metric"])
    margin = result["equivalence"]["margin"] * scale
    v = result["matching_vs_none"].get(init) or {}
    d = None if v.get("diff") is None else v["diff"] * scale
    claim2 = f"claim '{CLAIM_MATCHING}' {q2['claim_status']}"
    if q2["answer"] == "better":
        return f"matching beats none by {d:+.2f} points (paired t {_pe(v['p'])}): {claim2}"
    if q2["answer"] == "worse":
        return f"matching is worse than none by {d:+.2f} points (paired t {_pe(v['p'])}): {claim2}"
    if q2["answer"] == "equivalent":
        return (
            f"matching and none are equivalent within +-{margin:g} points ({d:+.2f} points, TOST "
            f"{_pe(v['tost_p'])}): {claim2}"
        )
    if q2["answer"] in ("better_within_margin", "worse_within_margin"):
        word = "beats" if q2["answer"] == "better_within_margin" else "is worse than"
        return (
            f"matching {word} none by {d:+.2f} points (paired t {_pe(v['p'])}) but within +-{margin:g} points "
            f"(TOST {_pe(v['tost_p'])}), smaller than the margin: {claim2} at this margin"
        )
    if q2["answer"] == "undecided":
        tost = (
            f"equivalence within +-{margin:g} points is not shown (TOST {_pe(v['tost_p'])})"
            if v.get("tost_p") is not None
            else "equivalence was not tested"
        )
        return f"matching vs none: no significant difference ({d:+.2f} points, paired t {_pe(v['p'])}) and {tost}: {claim2}"
    return "matching vs none was not tested (needs a 'none' arm and two paired seeds)"


def _overall(by_init: dict[str, dict], flags: dict[str, Any]) -> list[str]:
    """The sentence over all inits (empty when nothing was testable)."""
    overall = []
    s1 = {
        i: a["strategies_differ"]["claim_status"]
        for i, a in by_init.items()
        if a["strategies_differ"]["answer"] != "untestable"
    }
    s2 = {
        i: a["matching_beats_none"]["claim_status"]
        for i, a in by_init.items()
        if a["matching_beats_none"]["answer"] != "untestable"
    }

    def where(statuses: dict[str, str], status: str) -> str:
        return ", ".join(i for i, s in statuses.items() if s == status)

    if flags["strategies_equivalent"] is True:
        overall.append(f"'{CLAIM_STRATEGIES}' is shown under every init tested ({', '.join(s1)})")
    elif flags["strategies_equivalent"] is False:
        overall.append(f"'{CLAIM_STRATEGIES}' is refuted under {where(s1, 'refuted')}")
    elif s1:
        overall.append(f"'{CLAIM_STRATEGIES}' is undecided under {where(s1, 'undecided')}")
    if flags["matching_beats_none"] is True:
        overall.append(f"'{CLAIM_MATCHING}' is shown under {where(s2, 'shown')}; no init refutes it")
    elif flags["matching_beats_none"] is False:
        overall.append(f"'{CLAIM_MATCHING}' is refuted under {where(s2, 'refuted')}; no init shows it")
    elif "shown" in s2.values():
        overall.append(
            f"'{CLAIM_MATCHING}' is mixed: shown under {where(s2, 'shown')}, refuted under {where(s2, 'refuted')}"
        )
    elif s2:
        overall.append(f"'{CLAIM_MATCHING}' is undecided")
    return ["Overall: " + "; ".join(overall)] if overall else []
