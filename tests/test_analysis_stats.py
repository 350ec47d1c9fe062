"""The strategy tests: golden values against direct computations, calibration by simulation, degradation."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from raykd.analysis.stats import analyze_trials, friedman_per_init, mean_ci, points_per_unit, strategy_anova

MATCHING = ("forward", "reverse", "all_to_one", "random")


def make_trials(effects=None, *, inits=("random", "teacher"), seeds=(0, 1, 2), noise=0.008, rng=None,
                none_shift=None, base=0.70, strategies=MATCHING + ("none",)):
    """Synthetic study results: base + init effect + seed (block) effect + strategy effect + noise."""
    rng = rng if rng is not None else np.random.default_rng(0)
    effects = effects or {}
    none_shift = none_shift or {}
    seed_effect = {s: rng.normal(0, 0.01) for s in seeds}
    rows = []
    for init_i, init in enumerate(inits):
        for strategy in strategies:
            for seed in seeds:
                value = base + 0.05 * init_i + seed_effect[seed] + rng.normal(0, noise)
                value += effects.get((strategy, init), effects.get(strategy, 0.0))
                if strategy == "none":
                    value += none_shift.get(init, 0.0)
                rows.append({"trial_id": f"{strategy}-{init}-s{seed}", "strategy": strategy, "init": init,
                             "weight": 0.0 if strategy == "none" else 3.0, "seed": seed, "metric": value,
                             "status": "finished", "best_validation": value})
    return rows


def test_cells_mean_std_and_t_interval_match_scipy():
    values = [0.71, 0.74, 0.69, 0.73]
    out = mean_ci(values)
    lo, hi = sps.t.interval(0.95, 3, loc=np.mean(values), scale=sps.sem(values))
    assert out["n"] == 4 and out["mean"] == pytest.approx(np.mean(values))
    assert out["std"] == pytest.approx(np.std(values, ddof=1))
    assert out["ci95"] == pytest.approx([lo, hi])
    single = mean_ci([0.5])
    assert single["std"] is None and single["ci95"] is None


def test_anova_partial_eta_squared_matches_a_direct_sum_of_squares():
    rows = [r for r in make_trials({"reverse": 0.02}) if r["strategy"] != "none"]
    out = analyze_trials(rows)
    test = out["strategy_test"]
    assert test["formula"] == "metric ~ C(strategy) * C(init) + C(seed)"
    # balanced design: type-II SS of strategy = between-strategy SS; residual from the full model
    y = np.array([r["metric"] for r in rows])
    strategies = sorted({r["strategy"] for r in rows})
    grand = y.mean()
    ss_strategy = sum(len([r for r in rows if r["strategy"] == s]) *
                      (np.mean([r["metric"] for r in rows if r["strategy"] == s]) - grand) ** 2 for s in strategies)
    cell_mean = {(r["strategy"], r["init"]): np.mean([q["metric"] for q in rows if (q["strategy"], q["init"]) == (r["strategy"], r["init"])]) for r in rows}
    seed_mean = {r["seed"]: np.mean([q["metric"] for q in rows if q["seed"] == r["seed"]]) for r in rows}
    resid = [r["metric"] - cell_mean[(r["strategy"], r["init"])] - seed_mean[r["seed"]] + grand for r in rows]
    ss_resid = float(np.sum(np.square(resid)))
    assert test["df_resid"] == 24 - 8 - 2
    assert test["strategy"]["partial_eta2"] == pytest.approx(ss_strategy / (ss_strategy + ss_resid), rel=1e-6)
    f = (ss_strategy / 3) / (ss_resid / test["df_resid"])
    assert test["strategy"]["F"] == pytest.approx(f, rel=1e-6)
    assert test["strategy"]["p"] == pytest.approx(sps.f.sf(f, 3, test["df_resid"]), rel=1e-6)


def test_null_calibration_rejects_at_about_five_percent():
    """1000 simulated studies with no strategy effect (4 strategies x 2 inits x 3 paired seeds)."""
    rng = np.random.default_rng(12345)
    rejections = friedman = 0
    n = 1000
    for _ in range(n):
        rows = make_trials(rng=rng, strategies=MATCHING)
        rejections += strategy_anova(rows, [])["strategy"]["p"] < 0.05
        friedman += friedman_per_init(rows, [])["random"]["p"] < 0.05
    assert 0.03 <= rejections / n <= 0.07, rejections
    assert friedman / n <= 0.07  # Friedman with 3 blocks is conservative, never liberal


def test_power_for_a_two_point_effect_with_three_seeds():
    """A 2-point drop of one strategy under both inits, seed noise sd 0.8 points: detected most of the time."""
    rng = np.random.default_rng(7)
    n, hits = 300, 0
    for _ in range(n):
        hits += strategy_anova(make_trials({"reverse": -0.02}, rng=rng, strategies=MATCHING), [])["strategy"]["p"] < 0.05
    assert hits / n >= 0.8, hits / n


def test_pairwise_holm_and_tost_against_the_reference():
    rows = make_trials({"reverse": -0.05}, noise=0.002)
    out = analyze_trials(rows, margin=0.01)
    per = out["pairwise"]["by_init"]["random"]
    assert set(per) == {"all_to_one", "random", "reverse"}
    raw = [per[s]["p"] for s in sorted(per)]
    order = np.argsort(raw)
    holm = np.minimum(1, np.maximum.accumulate([(len(raw) - i) * raw[j] for i, j in enumerate(order)]))
    for i, j in enumerate(order):
        assert per[sorted(per)[j]]["p_holm"] == pytest.approx(holm[i])
    assert per["reverse"]["significant"] and per["reverse"]["diff"] == pytest.approx(-0.05, abs=0.01)
    eq = out["equivalence"]["by_init"]["random"]
    assert eq["reverse"]["equivalent"] is False
    assert eq["all_to_one"]["equivalent"] is True and eq["all_to_one"]["p"] < 0.05
    # the 90% CI is what decides: inside (-margin, margin) exactly when TOST p < 0.05
    for e in eq.values():
        assert e["equivalent"] == (e["p"] < 0.05)
    assert out["verdict"]["strategy_significant"] is True
    assert out["verdict"]["strategies_equivalent"] is False


def test_not_significant_is_not_equivalent():
    """Very noisy data: no difference is detected, and no equivalence is claimed either."""
    rows = make_trials(noise=0.05, rng=np.random.default_rng(3), strategies=MATCHING)
    out = analyze_trials(rows, margin=0.01)
    assert out["verdict"]["strategies_equivalent"] is False
    assert not any(c["significant"] for per in out["pairwise"]["by_init"].values() for c in per.values())
    assert "not significant is not equivalent" in out["verdict"]["text"]


def test_matching_vs_none_per_init():
    rows = make_trials(none_shift={"random": -0.08, "teacher": 0.0}, noise=0.003)
    out = analyze_trials(rows)
    random, teacher = out["matching_vs_none"]["random"], out["matching_vs_none"]["teacher"]
    assert random["diff"] == pytest.approx(0.08, abs=0.01) and random["p"] < 0.05
    assert random["ci95"][0] < 0.08 < random["ci95"][1] or abs(random["diff"] - 0.08) < 0.01
    assert teacher["p"] > 0.01 and set(random["by_strategy"]) == set(MATCHING)
    per_seed = [np.mean([r["metric"] for r in rows if r["init"] == "random" and r["seed"] == s and r["strategy"] != "none"])
                - next(r["metric"] for r in rows if r["init"] == "random" and r["seed"] == s and r["strategy"] == "none")
                for s in (0, 1, 2)]
    assert random["diff"] == pytest.approx(np.mean(per_seed))
    assert random["p"] == pytest.approx(sps.ttest_1samp(per_seed, 0).pvalue)
    assert out["verdict"]["matching_beats_none"] is False  # not under the teacher init


def test_lower_is_better_flips_differences():
    rows = make_trials(none_shift={"random": 0.08, "teacher": 0.08}, noise=0.003)  # none has a higher (worse) value
    out = analyze_trials(rows, higher_is_better=False)
    assert out["matching_vs_none"]["random"]["diff"] > 0.07
    assert out["verdict"]["matching_beats_none"] is True


def test_failed_and_diverged_trials_are_listed_and_excluded():
    rows = make_trials()
    rows[0] = {**rows[0], "status": "diverged", "metric": None}
    rows[1] = {**rows[1], "status": "failed"}
    rows[2] = {**rows[2], "metric": float("nan")}
    out = analyze_trials(rows)
    assert [e["reason"] for e in out["excluded"]] == ["diverged", "failed", "no test metric"]
    assert out["n_used"] == len(rows) - 3
    assert not any((c["strategy"], c["init"]) == ("forward", "random") for c in out["cells"])  # all 3 seeds gone
    assert out["strategy_test"]["formula"] == "metric ~ C(strategy) + C(init) + C(seed)"
    assert any("interaction cannot be estimated" in n for n in out["notes"])
    assert out["strategy_test"]["strategy"]["p"] is not None
    assert "forward" not in out["strategy_test"]["nonparametric"]["random"]["strategies"]


def test_single_seed_degrades_with_reasons():
    out = analyze_trials(make_trials(seeds=(0,)))
    assert out["strategy_test"]["strategy"] is None
    assert out["verdict"]["strategy_significant"] is None and out["verdict"]["matching_beats_none"] is None
    assert any("no residual degrees of freedom" in n for n in out["notes"])
    assert all(c["ci95"] is None for c in out["cells"])


def test_single_init_and_single_strategy_and_no_none_arm():
    one_init = analyze_trials(make_trials(inits=("teacher",)))
    assert one_init["strategy_test"]["formula"] == "metric ~ C(strategy) + C(seed)"
    assert one_init["strategy_test"]["init"] is None and one_init["strategy_test"]["strategy"]["p"] is not None
    one_strategy = analyze_trials(make_trials(strategies=("forward", "none")))
    assert one_strategy["strategy_test"]["strategy"] is None
    assert any("at least two matching strategies" in n for n in one_strategy["notes"])
    assert one_strategy["matching_vs_none"]["random"]["p"] is not None  # still answered
    no_none = analyze_trials(make_trials(strategies=MATCHING))
    assert no_none["matching_vs_none"] == {} and any("needs a 'none' arm" in n for n in no_none["notes"])
    assert no_none["verdict"]["matching_beats_none"] is None


def test_missing_reference_falls_back_with_a_note():
    out = analyze_trials(make_trials(strategies=("reverse", "random", "none")), reference="forward")
    assert out["pairwise"]["reference"] == "random"
    assert any("reference strategy 'forward'" in n for n in out["notes"])


def test_weight_grid_uses_the_best_validation_weight_per_cell():
    rows = make_trials(strategies=("forward", "reverse"))
    extra = [{**r, "weight": 1.0, "trial_id": r["trial_id"] + "-w1", "metric": r["metric"] - 0.1,
              "best_validation": r["best_validation"] + 0.01} for r in rows]
    out = analyze_trials(rows + extra)
    assert out["chosen_weights"] == {f"{s}/{i}": 1.0 for s in ("forward", "reverse") for i in ("random", "teacher")}
    assert all(c["weight"] == 1.0 for c in out["cells"])


def test_points_per_unit():
    assert points_per_unit("accuracy") == 100 and points_per_unit("sacrebleu") == 1


def test_result_is_json_ready():
    import json

    out = analyze_trials(make_trials())
    text = json.dumps(out, allow_nan=False)
    assert math.isfinite(json.loads(text)["strategy_test"]["strategy"]["F"])


def test_angles_use_the_weight_the_tests_chose():
    from raykd.analysis.actor import with_chosen_weights

    rows = make_trials(strategies=("forward", "none"))
    extra = [{**r, "weight": 1.0, "best_validation": r["best_validation"] + 0.01} for r in rows if r["strategy"] != "none"]
    chosen = analyze_trials(rows + extra)["chosen_weights"]
    kept = with_chosen_weights(rows + extra, chosen)
    assert {t["weight"] for t in kept if t["strategy"] == "forward"} == {1.0}
    assert len([t for t in kept if t["strategy"] == "none"]) == 6  # single-weight cells untouched
