"""Does the layer-selection strategy matter? Tests over the finished trials of a study.

Input: one row per trial (``strategy``, ``init``, ``weight``, ``seed``, ``metric``, ``status``).
Seeds are paired across arms (same seed = same data order and student draw), so every test
blocks on the seed:

- ``strategy_test``: OLS ``metric ~ C(strategy) * C(init) + C(seed)`` over the matching strategies
  (``none`` excluded), type-II ANOVA (statsmodels): F, p and partial eta-squared for strategy, init
  and their interaction; per init a Friedman test blocked by seed (complete designs only).
- ``pairwise``: each matching strategy against the reference, per init: paired t-test over seeds,
  Holm-corrected within the init.
- ``equivalence``: TOST (statsmodels ``ttost_paired``) of each strategy against the reference
  within +-margin; equivalent when the 90% CI of the paired difference lies inside the margin.
- ``matching_vs_none``: per init, the mean of the matching strategies minus ``none``, paired by seed.
- ``cells``: n, mean, std and a 95% t interval per (strategy, init).

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
# Metric points per unit of the metric as stored: accuracy/F1/exact match are fractions; BLEU and
# chrF are already in points.
POINTS_PER_UNIT = {"sacrebleu": 1.0, "chrf": 1.0}


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
        out.append({"strategy": strategy, "init": init, "weight": weights[0] if len(weights) == 1 else weights,
                    **mean_ci(r["metric"] for r in rows), "seeds": [r["seed"] for r in rows],
                    "values": [r["metric"] for r in rows]})
    return out


def paired(trials: list[dict], init: str, a: str, b: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Metrics of strategies a and b under `init` on the seeds both have, in seed order."""
    va = {t["seed"]: t["metric"] for t in trials if t["init"] == init and t["strategy"] == a}
    vb = {t["seed"]: t["metric"] for t in trials if t["init"] == init and t["strategy"] == b}
    seeds = sorted(set(va) & set(vb))
    return np.array([va[s] for s in seeds]), np.array([vb[s] for s in seeds]), seeds


def paired_difference(diffs: np.ndarray, level: float = 0.95) -> dict[str, Any]:
    """Mean paired difference, its t interval and the two-sided one-sample t-test p (None when n < 2)."""
    from scipy import stats

    n = int(diffs.size)
    out: dict[str, Any] = {"n": n, "diff": float(diffs.mean()) if n else None, "ci": None, "p": None}
    if n < 2:
        return out
    std = float(diffs.std(ddof=1))
    if std == 0.0:
        out["ci"] = [out["diff"], out["diff"]]
        out["p"] = 1.0 if out["diff"] == 0.0 else 0.0
        return out
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    out["ci"] = [out["diff"] - half, out["diff"] + half]
    out["p"] = float(stats.ttest_1samp(diffs, 0.0).pvalue)
    return out


def strategy_anova(trials: list[dict], notes: list[str]) -> dict[str, Any] | None:
    """Type-II ANOVA of metric ~ strategy * init + seed over the matching strategies."""
    import pandas as pd
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    rows = [t for t in trials if t["strategy"] != NONE]
    strategies = sorted({t["strategy"] for t in rows})
    inits = sorted({t["init"] for t in rows})
    seeds = sorted({t["seed"] for t in rows})
    if len(strategies) < 2:
        notes.append(f"strategy test: needs at least two matching strategies with finished trials, has {strategies}")
        return None
    terms = ["C(strategy)"]
    missing = [(s, i) for s in strategies for i in inits if not any(t["strategy"] == s and t["init"] == i for t in rows)]
    if len(inits) > 1 and missing:
        terms = ["C(strategy) + C(init)"]
        notes.append(f"strategy test: no finished trial in cell(s) {missing}; the strategy x init interaction "
                     "cannot be estimated, so the model is additive")
    elif len(inits) > 1:
        terms = ["C(strategy) * C(init)"]
    else:
        notes.append(f"strategy test: a single init ({inits[0]}); no init or interaction terms")
    if len(seeds) > 1:
        terms.append("C(seed)")
    formula = "metric ~ " + " + ".join(terms)
    frame = pd.DataFrame({"metric": [t["metric"] for t in rows], "strategy": [t["strategy"] for t in rows],
                          "init": [t["init"] for t in rows], "seed": [str(t["seed"]) for t in rows]})
    model = smf.ols(formula, frame).fit()
    if model.df_resid < 1:
        notes.append(f"strategy test: {formula} leaves no residual degrees of freedom ({len(rows)} trials); "
                     "more seeds are needed")
        return {"test": "type-II ANOVA (OLS)", "formula": formula, "n": len(rows), "df_resid": 0,
                "strategy": None, "init": None, "interaction": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a perfect fit gives 0/0 F
        table = anova_lm(model, typ=2)
    ss_resid = float(table.loc["Residual", "sum_sq"])

    def effect(term: str) -> dict[str, Any] | None:
        if term not in table.index:
            return None
        row = table.loc[term]
        ss = float(row["sum_sq"])
        f, p = float(row["F"]), float(row["PR(>F)"])
        return {"F": f if math.isfinite(f) else None, "p": p if math.isfinite(p) else None,
                "df": int(row["df"]), "partial_eta2": ss / (ss + ss_resid) if ss + ss_resid > 0 else None}

    return {"test": "type-II ANOVA (OLS)", "formula": formula, "n": len(rows), "df_resid": int(model.df_resid),
            "strategy": effect("C(strategy)"), "init": effect("C(init)"),
            "interaction": effect("C(strategy):C(init)")}


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
            notes.append(f"non-parametric check ({init}): needs two strategies on two common seeds, has "
                         f"{len(strategies)} strategies, {len(seeds)} common seeds")
            out[init] = None
            continue
        if any(set(v) != set(seeds) for v in table.values()):
            notes.append(f"non-parametric check ({init}): incomplete blocks; only the {len(seeds)} seeds every "
                         "strategy finished are used")
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
        out[init] = {"test": name, "statistic": float(result.statistic), "p": p if math.isfinite(p) else None,
                     "strategies": strategies, "seeds": seeds}
    return out


def pairwise_and_equivalence(trials: list[dict], reference: str, margin: float, alpha: float, sign: float,
                             notes: list[str]) -> tuple[dict, dict]:
    """Each matching strategy vs the reference per init: Holm-corrected paired t and TOST within +-margin."""
    from statsmodels.stats.multitest import multipletests
    from statsmodels.stats.weightstats import ttost_paired

    pairwise: dict[str, dict] = {}
    equivalence: dict[str, dict] = {}
    rows = [t for t in trials if t["strategy"] != NONE]
    for init in sorted({t["init"] for t in rows}):
        others = sorted({t["strategy"] for t in rows if t["init"] == init} - {reference})
        has_reference = any(t["init"] == init and t["strategy"] == reference for t in rows)
        if not has_reference or not others:
            notes.append(f"pairwise/equivalence ({init}): needs the reference {reference!r} and another matching "
                         "strategy with finished trials")
            continue
        comparisons, raw_p = {}, []
        eq = {}
        for strategy in others:
            a, b, seeds = paired(trials, init, strategy, reference)
            diffs = sign * (a - b)
            d95 = paired_difference(diffs, 0.95)
            d90 = paired_difference(diffs, 0.90)
            comparisons[strategy] = {"diff": d95["diff"], "ci95": d95["ci"], "p": d95["p"], "n": d95["n"],
                                     "seeds": seeds}
            raw_p.append(d95["p"])
            tost_p = None
            if len(seeds) >= 2:
                if float(np.std(diffs)) == 0.0:
                    tost_p = 0.0 if abs(float(diffs.mean())) < margin else 1.0
                else:
                    # ttost_paired tests x1 - x2; orient so that the margin is symmetric anyway
                    tost_p = float(ttost_paired(sign * a, sign * b, -margin, margin)[0])
            equivalent = None if d90["ci"] is None else bool(-margin < d90["ci"][0] and d90["ci"][1] < margin)
            eq[strategy] = {"diff": d90["diff"], "ci90": d90["ci"], "p": tost_p, "equivalent": equivalent,
                            "n": d90["n"]}
        testable = [i for i, p in enumerate(raw_p) if p is not None]
        if testable:
            adjusted = multipletests([raw_p[i] for i in testable], alpha=alpha, method="holm")[1]
            for i, p_adj in zip(testable, adjusted):
                name = others[i]
                comparisons[name]["p_holm"] = float(p_adj)
                comparisons[name]["significant"] = bool(p_adj < alpha)
        for name in others:
            comparisons[name].setdefault("p_holm", None)
            comparisons[name].setdefault("significant", None)
        pairwise[init] = comparisons
        equivalence[init] = eq
        if any(c["p"] is None for c in comparisons.values()):
            notes.append(f"pairwise/equivalence ({init}): some strategies share fewer than two seeds with "
                         f"{reference!r}; they are not tested")
    return pairwise, equivalence


def matching_vs_none(trials: list[dict], sign: float, notes: list[str]) -> dict[str, Any]:
    """Per init: mean over the matching strategies minus `none`, paired by seed; also per strategy."""
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
        by_strategy = {}
        for strategy in matching:
            a, b, _ = paired(trials, init, strategy, NONE)
            d = paired_difference(sign * (a - b), 0.95)
            by_strategy[strategy] = {"diff": d["diff"], "ci95": d["ci"], "p": d["p"], "n": d["n"]}
        out[init] = {"diff": summary["diff"], "ci95": summary["ci"], "p": summary["p"], "n": summary["n"],
                     "seeds": sorted(per_seed), "by_strategy": by_strategy}
        if summary["n"] < 2:
            notes.append(f"matching vs none ({init}): {summary['n']} paired seed(s); no test")
    return out


def analyze_trials(trials: Iterable[Mapping[str, Any]], *, metric: str = "metric", higher_is_better: bool = True,
                   reference: str = "forward", margin: float = 0.01, alpha: float = DEFAULT_ALPHA) -> dict[str, Any]:
    """Every test above on a study's trial rows; JSON-ready (the statistical half of ``summary.json``)."""
    notes: list[str] = []
    usable, excluded = split_trials(trials)
    usable, chosen = select_weights(usable, higher_is_better)
    if chosen:
        notes.append("several hidden-loss weights per cell: each cell is represented by the weight with the best "
                     f"mean validation metric ({chosen})")
    sign = 1.0 if higher_is_better else -1.0
    matching = sorted({t["strategy"] for t in usable} - {NONE})
    if reference not in matching and matching:
        notes.append(f"reference strategy {reference!r} has no finished trials; using {matching[0]!r}")
        reference = matching[0]
    anova = strategy_anova(usable, notes) if usable else None
    if not usable:
        notes.append("no finished trials: nothing to test")
    strategy_test = {**(anova or {"test": "type-II ANOVA (OLS)", "formula": None, "strategy": None, "init": None,
                                  "interaction": None}),
                     "nonparametric": friedman_per_init(usable, notes) if usable else {}}
    pairwise, equivalence = pairwise_and_equivalence(usable, reference, margin, alpha, sign, notes)
    versus_none = matching_vs_none(usable, sign, notes)
    result = {
        "metric": metric, "higher_is_better": higher_is_better, "alpha": alpha,
        "n_trials": len(usable) + len(excluded), "n_used": len(usable),
        "excluded": [{k: e.get(k) for k in ("trial_id", "strategy", "init", "weight", "seed", "status", "reason")}
                     for e in excluded],
        "chosen_weights": chosen,
        "cells": cells_table(usable),
        "strategy_test": strategy_test,
        "pairwise": {"reference": reference, "correction": "holm", "by_init": pairwise},
        "equivalence": {"reference": reference, "margin": margin, "test": "TOST (paired t, 90% CI)",
                        "by_init": equivalence},
        "matching_vs_none": versus_none,
        "notes": notes,
    }
    result["verdict"] = verdict(result, alpha)
    return result


def verdict(result: dict[str, Any], alpha: float) -> dict[str, Any]:
    """Three booleans (None when untestable) and one sentence."""
    effect = (result["strategy_test"] or {}).get("strategy")
    significant = None if not effect or effect.get("p") is None else bool(effect["p"] < alpha)
    flags = [e["equivalent"] for per_init in result["equivalence"]["by_init"].values() for e in per_init.values()]
    equivalent = None if not flags or any(f is None for f in flags) else all(flags)
    tested = [v for v in result["matching_vs_none"].values() if v["p"] is not None]
    beats = None
    if tested:
        beats = all(v["diff"] > 0 and v["p"] < alpha for v in tested)
    margin = result["equivalence"]["margin"] * points_per_unit(result["metric"])
    parts = []
    if significant is None:
        parts.append("whether the strategy matters could not be tested")
    elif significant:
        p = effect["p"]
        parts.append(f"the strategy is a significant factor (ANOVA p={p:.3g}, partial eta2={effect['partial_eta2']:.2f})")
    else:
        p = effect["p"]
        parts.append(f"the strategy is not a significant factor (ANOVA p={p:.3g})")
    if equivalent is True:
        parts.append(f"every strategy is equivalent to {result['equivalence']['reference']} within +-{margin:g} points")
    elif equivalent is False:
        parts.append(f"equivalence to {result['equivalence']['reference']} within +-{margin:g} points is not shown for every "
                     "strategy (not significant is not equivalent)")
    if beats is True:
        parts.append("matching beats no matching under every init")
    elif beats is False:
        worse = [i for i, v in result["matching_vs_none"].items() if v["p"] is not None and not (v["diff"] > 0 and v["p"] < alpha)]
        parts.append(f"matching does not significantly beat no matching under init {', '.join(worse)}")
    text = "; ".join(parts)
    return {"strategy_significant": significant, "strategies_equivalent": equivalent, "matching_beats_none": beats,
            "text": text[0].upper() + text[1:] + "."}
