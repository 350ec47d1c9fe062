"""The power plan: power functions against statsmodels / direct integration, and verified by simulation."""

import itertools
import json
import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps

from raykd.analysis.power import (
    MAX_SEEDS,
    design_plan,
    detectable_difference,
    equivalence_margin,
    nonparametric_min_p,
    nonparametric_seeds_needed,
    seeds_for_equivalence,
    seeds_to_detect,
    t_power,
    tost_power,
    tost_power_nct_bound,
)
from raykd.analysis.stats import analyze_trials
from raykd.analysis.views import plan_lines
from tests.test_analysis_stats import make_trials

DRAWS = 40000  # Monte Carlo standard error of a rate near 80%: 0.2%


def simulated_t_power(diff, sd, n, alpha, rng):
    d = rng.normal(diff, sd, (DRAWS, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    return float((2 * sps.t.sf(np.abs(t), n - 1) < alpha).mean())


def simulated_tost_power(diff, sd, n, margin, alpha, rng):
    d = rng.normal(diff, sd, (DRAWS, n))
    mean, se = d.mean(1), d.std(1, ddof=1) / math.sqrt(n)
    p = np.maximum(sps.t.sf((mean + margin) / se, n - 1), sps.t.cdf((mean - margin) / se, n - 1))
    return float((p < alpha).mean())


def test_t_power_matches_statsmodels():
    from statsmodels.stats.power import TTestPower

    for diff, sd, n, alpha in itertools.product((0.0, 0.3, 1.0, 2.5), (0.5, 1.0), (2, 3, 5, 20), (0.05, 0.01)):
        with np.errstate(all="ignore"):
            expected = TTestPower().power(effect_size=diff / sd, nobs=n, alpha=alpha, alternative="two-sided")
        if math.isfinite(expected):  # statsmodels (scipy's noncentral t) gives nan far in the tail
            assert t_power(diff, sd, n, alpha) == pytest.approx(expected, abs=1e-9)
    assert t_power(0.5, 1.0, 5000, 0.05) == pytest.approx(1.0)  # far tail: no nan
    grid = [t_power(d, 1.0, 3, 0.05 / 3) for d in np.linspace(0, 10, 41)]
    assert all(b >= a for a, b in itertools.pairwise(grid))  # monotone where scipy's noncentral t is not


def test_tost_power_is_the_exact_integral_and_above_the_noncentral_t_bound():
    def direct(diff, sd, n, margin, alpha):
        df, root = n - 1, math.sqrt(n)
        crit = sps.t.isf(alpha, df)

        def inside(s):
            half = margin - crit * s / root
            p = sps.norm.cdf((half - diff) / (sd / root)) - sps.norm.cdf((-half - diff) / (sd / root))
            return max(0.0, p) * sps.chi.pdf(s * math.sqrt(df) / sd, df) * math.sqrt(df) / sd

        return integrate.quad(inside, 0, margin * root / crit, limit=400, epsabs=1e-12, points=[sd])[0]

    for diff, sd, n, margin, alpha in [
        (0, 1, 3, 2, 0.05),
        (0.3, 1, 10, 1, 0.05),
        (0.1, 0.5, 100, 0.2, 0.01),
        (0, 1, 1000, 0.1, 0.05),
        (0.5, 0.2, 2, 1, 0.05),
        (-0.4, 0.7, 6, 1, 0.01),
    ]:
        exact = tost_power(diff, sd, n, margin, alpha)
        assert exact == pytest.approx(direct(diff, sd, n, margin, alpha), abs=1e-9)
        assert tost_power_nct_bound(diff, sd, n, margin, alpha) <= exact + 1e-9
    # with many seeds the two agree; with 3 the noncentral-t shortcut says 0 where the truth is 13%
    assert tost_power_nct_bound(0, 1, 50, 1, 0.05) == pytest.approx(tost_power(0, 1, 50, 1, 0.05), abs=1e-6)
    assert tost_power_nct_bound(0, 1, 3, 1, 0.05) == 0.0
    assert tost_power(0, 1, 3, 1, 0.05) == pytest.approx(0.127, abs=0.001)
    assert tost_power(1.0, 0.1, 10, 1.0, 0.05) < 0.05  # on the margin: at most alpha


@pytest.mark.parametrize("n, sd, alpha", [(3, 0.8, 0.05), (5, 1.0, 0.05), (10, 0.5, 0.01), (3, 1.0, 0.05 / 3)])
def test_detectable_difference_has_80_percent_power_in_simulation(n, sd, alpha):
    rng = np.random.default_rng(n * 100 + int(1000 * alpha))
    effect = detectable_difference(sd, n, alpha)
    assert t_power(effect, sd, n, alpha) == pytest.approx(0.8, abs=1e-6)
    rate = simulated_t_power(effect, sd, n, alpha, rng)
    assert 0.74 <= rate <= 0.86, (n, sd, alpha, effect, rate)
    assert rate == pytest.approx(0.8, abs=0.012)


@pytest.mark.parametrize("n, sd, alpha", [(3, 0.6, 0.05), (3, 1.0, 0.01), (6, 1.0, 0.05), (20, 0.5, 0.05)])
def test_equivalence_margin_has_80_percent_power_in_simulation(n, sd, alpha):
    """The smallest margin that n seeds show equivalence within, 80% of the time, when the truth is 0."""
    rng = np.random.default_rng(n * 7 + int(1000 * alpha))
    margin = equivalence_margin(sd, n, alpha)
    rate = simulated_tost_power(0.0, sd, n, margin, alpha, rng)
    assert 0.74 <= rate <= 0.86, (n, sd, alpha, margin, rate)
    assert rate == pytest.approx(0.8, abs=0.012)


def test_three_seeds_need_a_paired_sd_below_about_0_6_for_one_point():
    """With 3 seeds even a perfectly 0 observed difference shows equivalence within +-1 point only when the
    paired sd is below 0.593 points (the 90% interval is +-1.69 sd wide); to show it with 80% power when the
    truth is 0 the sd must be below 0.376 points (an sd of 0.6 gives 41%)."""
    half_width = sps.t.isf(0.05, 2) / math.sqrt(3)
    assert 1.0 / half_width == pytest.approx(0.593, abs=0.001)
    assert equivalence_margin(0.6, 3, 0.05) > 1.0
    assert tost_power(0.0, 0.6, 3, 1.0, 0.05) == pytest.approx(0.41, abs=0.01)
    assert equivalence_margin(0.376, 3, 0.05) == pytest.approx(1.0, abs=0.003)


@pytest.mark.parametrize("diff, sd, alpha", [(1.2, 1.0, 0.05), (0.5, 1.0, 0.05), (2.0, 0.8, 0.01), (3.0, 1.0, 0.05)])
def test_seeds_to_detect_is_the_smallest_n_with_80_percent_power(diff, sd, alpha):
    rng = np.random.default_rng(int(diff * 10 + sd * 100))
    n, note = seeds_to_detect(diff, sd, alpha)
    assert note is None and n >= 2
    assert t_power(diff, sd, n, alpha) >= 0.8 > t_power(diff, sd, n - 1, alpha)
    at_n = simulated_t_power(diff, sd, n, alpha, rng)
    assert at_n >= 0.78 and at_n == pytest.approx(t_power(diff, sd, n, alpha), abs=0.012)
    if n > 2:
        assert simulated_t_power(diff, sd, n - 1, alpha, rng) < 0.82


@pytest.mark.parametrize(
    "diff, sd, margin, alpha",
    [(0.0, 1.0, 1.0, 0.05), (0.3, 1.0, 1.0, 0.05), (0.5, 0.5, 1.0, 0.01), (0.0, 0.6, 1.0, 0.05)],
)
def test_seeds_for_equivalence_is_the_smallest_n_with_80_percent_power(diff, sd, margin, alpha):
    rng = np.random.default_rng(int(diff * 10 + sd * 100 + alpha * 1000))
    n, note = seeds_for_equivalence(diff, sd, margin, alpha)
    assert note is None and n >= 2
    assert tost_power(diff, sd, n, margin, alpha) >= 0.8 > tost_power(diff, sd, n - 1, margin, alpha)
    at_n = simulated_tost_power(diff, sd, n, margin, alpha, rng)
    assert at_n >= 0.78 and at_n == pytest.approx(tost_power(diff, sd, n, margin, alpha), abs=0.012)
    if n > 2:
        assert simulated_tost_power(diff, sd, n - 1, margin, alpha, rng) < 0.82


def test_unreachable_questions_say_so():
    assert seeds_to_detect(0.0, 1.0, 0.05) == (None, "not reachable: the observed difference is 0")
    assert seeds_to_detect(0.01, 1.0, 0.05) == (None, f"> {MAX_SEEDS}")
    assert seeds_for_equivalence(1.2, 1.0, 1.0, 0.05)[0] is None
    assert "outside the margin" in seeds_for_equivalence(1.2, 1.0, 1.0, 0.05)[1]
    assert seeds_for_equivalence(0.99, 1.0, 1.0, 0.05) == (None, f"> {MAX_SEEDS}")
    assert seeds_to_detect(0.5, None, 0.05)[0] is None and detectable_difference(1.0, 1, 0.05) is None
    assert seeds_to_detect(0.5, 0.0, 0.05) == (2, None) and equivalence_margin(0.0, 3, 0.05) == 0.0


def test_nonparametric_floor_is_the_smallest_p_over_every_ranking():
    """Friedman with 4 strategies and 3 seeds cannot go below 0.029; Wilcoxon with 3 seeds below 0.25."""
    assert nonparametric_min_p(4, 3) == pytest.approx(sps.chi2.sf(9, 3))
    assert round(nonparametric_min_p(4, 3), 3) == 0.029
    assert nonparametric_min_p(2, 3) == pytest.approx(0.25)
    for k, n in ((3, 2), (3, 3), (4, 2)):  # (4, 3) is the same argument: all blocks ranked alike, statistic n (k - 1)
        rankings = list(itertools.permutations(range(k)))
        best = 1.0
        for blocks in itertools.product(rankings, repeat=n):
            samples = [[blocks[b][j] for b in range(n)] for j in range(k)]
            best = min(best, sps.friedmanchisquare(*samples).pvalue)
        assert nonparametric_min_p(k, n) == pytest.approx(best)
    assert nonparametric_seeds_needed(2, 0.05) == 6  # exact Wilcoxon: 2 / 2**6 = 0.031
    assert nonparametric_seeds_needed(4, 0.05) == 3 and nonparametric_seeds_needed(4, 0.01) == 4


def test_design_plan_from_a_study():
    out = analyze_trials(make_trials(none_shift={"random": -0.05}), metric="accuracy", margin=0.01, min_seeds=3)
    plan = out["plan"]
    assert plan == design_plan(out)
    json.dumps(plan, allow_nan=False)
    entry = plan["by_init"]["random"]
    assert entry["n_seeds"] == 3 and entry["nonparametric"]["min_p"] == pytest.approx(0.0293, abs=1e-4)
    for strategy, c in entry["vs_reference"].items():
        e = out["equivalence"]["by_init"]["random"][strategy]
        assert c["equivalence_shown_within"] == pytest.approx(max(abs(e["ci90"][0]), abs(e["ci90"][1])))
        assert c["sd"] == pytest.approx(e["sd"]) and c["test_alpha"] == pytest.approx(0.05 / 3)
        assert c["detectable_difference_80"] == pytest.approx(detectable_difference(e["sd"], 3, 0.05 / 3))
        assert c["equivalence_margin_80"] == pytest.approx(equivalence_margin(e["sd"], 3, 0.05))
    mv = entry["matching_vs_none"]
    assert mv["answer"] == out["verdict"]["by_init"]["random"]["matching_beats_none"]["answer"] == "better"
    assert mv["test_alpha"] == 0.05


def test_plan_lines_read_in_points():
    out = analyze_trials(
        make_trials(none_shift={"random": -0.05}, rng=np.random.default_rng(1)), metric="accuracy", min_seeds=3
    )
    lines = plan_lines(out, 100.0)
    text = "\n".join(lines)
    assert "random init: Friedman with 3 seeds and 4 strategies cannot return p below 0.0293" in text
    assert "matching vs none (random init): better (shown)" in text
    assert "with 3 seeds and the observed sd (" in text and "this study could show equivalence only within +-" in text
    assert "it could detect differences of" in text and "with 80% power" in text
    undecided = [line for line in lines if ": undecided" in line]
    assert undecided and all(
        "detecting the observed" in line and "equivalence within +-1 points" in line for line in undecided
    )
    short = plan_lines(out, 100.0, open_only=True)
    assert all("better (shown)" not in line for line in short) and len(short) < len(lines)
    assert plan_lines({"plan": None}, 100.0) == [] and plan_lines({}, 100.0) == []
    # alpha 0.01: Friedman with 3 seeds can never get there, and the line says so
    strict = analyze_trials(make_trials(), metric="accuracy", alpha=0.01)
    assert any(
        "cannot be significant at alpha 0.01 (that takes 4 seeds)" in line
        for line in plan_lines(strict, 100.0, open_only=True)
    )


def test_plan_of_tiny_studies_degrades():
    one_seed = analyze_trials(make_trials(seeds=(0,)), metric="accuracy")
    json.dumps(one_seed["plan"], allow_nan=False)
    lines = plan_lines(one_seed, 100.0)
    assert any("fewer than two paired seeds" in line for line in lines)
    no_spread = make_trials(strategies=("forward", "reverse"), noise=0.0, seeds=(0, 1, 2))
    out = analyze_trials(no_spread, metric="accuracy")
    c = out["plan"]["by_init"]["random"]["vs_reference"]["reverse"]
    assert c["sd"] == 0.0 and c["seeds_to_detect_observed"] is None  # identical values: nothing to detect
