"""Report figures: every figure a full summary supports is written and opens; partial summaries lose only
the figures they have no data for; the margin band, readings and titles say what the numbers say."""

import matplotlib.image
import numpy as np
import pytest

from raykd.analysis import figures as figs
from raykd.analysis.angles import HIST_EDGES, NULLS, summarise
from raykd.analysis.drawing import ANSWER_WORDS
from raykd.analysis.report import build_summary, learning_curves
from raykd.analysis.stats import analyze_trials
from tests.test_analysis_stats import MATCHING, make_trials

# a figure that fails on a summary would be skipped with a FigureWarning: here that is a failure
pytestmark = pytest.mark.filterwarnings("error::raykd.analysis.figures.FigureWarning")

FULL_KEYS = {
    "metric",
    "curves",
    "forest",
    "matching_vs_none",
    "angles_random_encoder",
    "hist_random_encoder",
    "angles_teacher_encoder",
    "hist_teacher_encoder",
}


def fake_stats(rng, share, *, nulls=True, size=5, degenerate=False):
    """One student state's angle statistics as `student_angles` returns them (nulls per seed)."""

    def one(acute):
        m = rng.uniform(-1, 1, (size, size))
        m = (m + m.T) / 2
        np.fill_diagonal(m, 1.0)
        matrix = m.round(3).tolist()
        if degenerate:
            matrix[0] = [None] * size
            for row in matrix:
                row[0] = None
        counts = rng.integers(0, 50, len(HIST_EDGES) - 1).tolist()
        return {"matrix": matrix, "acute_share": acute, "histogram": {"edges": HIST_EDGES.tolist(), "counts": counts}}

    entry = one(share)
    if nulls:
        entry["null"] = {kind: [one(0.97 + 0.01 * j) for j in range(3)] for kind in NULLS}
    return entry


def fake_angles(rng, share, *, nulls=True, degenerate=False):
    """Three student states of one stack; with `degenerate`, state 0 has no direction to teacher layer 0."""
    return {
        "encoder": {
            str(k): fake_stats(rng, share + 0.01 * k, nulls=nulls, degenerate=degenerate and k == 0) for k in range(3)
        }
    }


def make_summary(trials, *, angles=True, margin=0.01, nulls=True, teacher=0.80, curves=False):
    rng = np.random.default_rng(1)
    stats = analyze_trials(trials, metric="accuracy", margin=margin, teacher_metric=teacher, min_seeds=3)
    measured = None
    if angles:
        inits = sorted({t["init"] for t in trials})
        strategies = sorted({t["strategy"] for t in trials})
        measured = summarise(
            [
                {
                    "init": i,
                    "strategy": s,
                    "seed": 0,
                    "at_init": fake_angles(rng, 0.6, nulls=nulls, degenerate=True),
                    "trained": fake_angles(rng, 0.8, nulls=nulls),
                }
                for i in inits
                for s in strategies
            ]
        )
    teacher_info = {
        "test/accuracy": teacher,
        "baseline": {"name": "majority class", "accuracy": 0.5},
        "gain_points": 100 * (teacher - 0.5),
    }
    summary = build_summary(
        study="demo",
        metric="accuracy",
        higher_is_better=True,
        teacher=teacher_info,
        trials=trials,
        stats=stats,
        angles=measured,
        angle_notes=[],
        margin_points=100 * margin,
        setup={"task": "classification (accuracy)"},
    )
    if curves:  # each trial's curve rises to its test metric
        steps = range(10, 110, 10)
        curved = [{**t, "curve": [[s, t["metric"] * s / 100] for s in steps]} for t in trials]
        summary["curves"] = {"examples": 64, "by_init": learning_curves(curved, set())}
    return summary


@pytest.fixture(scope="module")
def full():
    """2 inits x (4 strategies + none) x 3 seeds; 'reverse' 5 points better; a 2-point margin; angles with nulls."""
    trials = make_trials({"reverse": 0.05}, none_shift={"random": -0.06}, noise=0.003)
    return make_summary(trials, margin=0.02, curves=True)


def band_extent(ax):
    """x extent (data units) of the margin band drawn on `ax`, or None."""
    bands = [p for p in ax.patches if p.get_gid() == "margin_band"]
    if not bands:
        return None
    assert len(bands) == 1
    xs = bands[0].get_patch_transform().transform(bands[0].get_path().vertices)[:, 0]
    return float(xs.min()), float(xs.max())


def right_labels(ax):
    """The per-row texts drawn at the right of a row plot (tick labels of its secondary axis)."""
    (right,) = list(ax.child_axes)
    return [t.get_text() for t in right.get_yticklabels()]


def opens(path):
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 500, (path.name, image.shape)
    assert image[..., :3].std() > 0.05, f"{path.name} is (nearly) blank"


def test_full_summary_writes_every_figure_and_they_open(full, tmp_path):
    written = figs.write_figures(full, tmp_path)
    assert set(written) == FULL_KEYS
    assert written["metric"] == "metric_by_cell.png" and written["forest"] == "forest.png"
    assert written["matching_vs_none"] == "matching_vs_none.png"
    assert written["angles_teacher_encoder"] == "angles_teacher_encoder.png"
    assert written["hist_random_encoder"] == "hist_random_encoder.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(written.values())
    for name in written.values():
        opens(tmp_path / name)


def test_forest_band_is_the_margin_in_points_and_rows_read_the_tests(full):
    fig = figs.forest_figure(full)
    assert "(that pair alone, unadjusted; the claim over every pair is the verdict's)" in " ".join(
        fig._suptitle.get_text().split()
    )
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.patches]
    assert len(panels) == 2  # one per init
    for ax, init in zip(panels, ("random", "teacher")):
        assert band_extent(ax) == pytest.approx((-2.0, 2.0))  # +-margin_points, not +-0.02 (the metric's units)
        low, high = ax.get_xlim()
        assert low < -2.0 and high > 2.0
        strategies = [t.get_text() for t in ax.get_yticklabels()]
        assert sorted(strategies) == sorted(set(MATCHING) - {"forward"})
        readings = dict(zip(strategies, right_labels(ax)))
        assert readings["reverse"].startswith("differs")  # +5 points, far outside a 2-point margin
        assert not any(readings[s].startswith("differs") for s in ("all_to_one", "random"))
        # the difference printed in points
        assert f"{100 * full['equivalence']['by_init'][init]['reverse']['diff']:+.2f} pts" in readings["reverse"]
    titles = [ax.get_title(loc="left") for ax in panels]
    for init, title in zip(("random", "teacher"), titles):
        answer = full["verdict"]["by_init"][init]["strategies_differ"]
        assert title.startswith(f"{init} init: {ANSWER_WORDS[answer['answer']]}")
        assert answer["claim_status"] in title


def test_matching_vs_none_rows_band_and_answer(full):
    fig = figs.matching_figure(full)
    panels = [ax for ax in fig.axes if ax.patches]
    assert len(panels) == 2
    for ax, init in zip(panels, ("random", "teacher")):
        assert band_extent(ax) == pytest.approx((-2.0, 2.0))
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels[0] == "all matching (mean)" and sorted(labels[1:]) == sorted(MATCHING)
        answer = full["verdict"]["by_init"][init]["matching_beats_none"]
        assert ANSWER_WORDS[answer["answer"]] in ax.get_title(loc="left")
        assert "room: teacher minus none" in ax.get_title(loc="left")
    # random init: none is 6 points worse, so matching wins there
    assert full["verdict"]["by_init"]["random"]["matching_beats_none"]["answer"] == "better"
    assert right_labels(panels[0])[0].startswith("+")


def test_metric_figure_shows_teacher_baseline_and_n(full):
    fig = figs.metric_figure(full)
    (ax,) = [a for a in fig.axes if a.get_ylabel()]
    levels = {tuple(line.get_ydata()) for line in ax.get_lines() if line.get_linestyle() in ("--", ":")}
    assert (80.0, 80.0) in {tuple(round(v, 6) for v in lv) for lv in levels}  # teacher, in points
    assert (50.0, 50.0) in {tuple(round(v, 6) for v in lv) for lv in levels}  # trivial baseline
    n_labels = [t.get_text() for t in ax.texts if t.get_text().startswith("n=")]
    assert len(n_labels) == len(full["cells"]) and set(n_labels) == {"n=3"}
    assert "n=3 seeds per cell" in fig.get_suptitle() and "ANOVA" in fig.get_suptitle()


def test_angle_figure_shows_the_contrast_with_its_null_on_the_data_scale_and_the_test(full):
    """The raw C_k sit near 1 for students and null alike (one dark-red block on a -1..1 scale); the figure draws
    C_k minus the random-point null's, at init and trained, on a symmetric scale the largest contrast sets, and its
    title carries the test across seeds (`raykd.analysis.angles.null_contrast`)."""
    from raykd.analysis.angles import null_contrast

    rng = np.random.default_rng(3)
    measured = [
        {"init": "teacher", "strategy": "forward", "seed": seed, "at_init": fake_angles(rng, 0.6),
         "trained": fake_angles(rng, 0.8)}
        for seed in range(3)
    ]  # fmt: skip
    summary = {**full, "angle_test": null_contrast(measured)}
    fig = figs.angles_figure(summary, "teacher", "encoder")
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 2 * 3  # at init and trained x 3 student states
    low, high = images[0].get_clim()
    assert low == -high and 0 < high < 1 and all(im.get_clim() == (low, high) for im in images)
    assert max(float(np.nanmax(np.abs(im.get_array()))) for im in images) == pytest.approx(high)
    assert all("mean " in ax.get_title() for ax in fig.axes if ax.images)
    assert "minus its random-point null" in fig.get_suptitle() and "over 3 seeds" in fig.get_suptitle()
    assert [ax for ax in fig.axes if "null" in ax.get_ylabel() and "cos" in ax.get_ylabel()]  # the colour bar


def test_histograms_say_why_no_null_is_drawn(full):
    hist = figs.hist_figure(full, "teacher", "encoder")
    assert any("not their histograms" in t.get_text() for t in hist.texts)  # says why no null histogram
    assert all(any(line.get_xdata()[0] == 0 for line in ax.get_lines()) for ax in hist.axes)  # the line at 0


def test_one_strategy_no_angles(tmp_path):
    trials = make_trials(strategies=("forward",))
    written = figs.write_figures(make_summary(trials, angles=False), tmp_path)
    assert set(written) == {"metric"}
    assert [p.name for p in tmp_path.iterdir()] == ["metric_by_cell.png"]
    opens(tmp_path / "metric_by_cell.png")


def test_no_none_arm(tmp_path):
    trials = make_trials(strategies=MATCHING)
    written = figs.write_figures(make_summary(trials, angles=False), tmp_path)
    assert set(written) == {"metric", "forest"}


def test_one_seed_without_intervals(tmp_path):
    trials = make_trials(seeds=(0,))
    summary = make_summary(trials, angles=False)
    assert all(c["ci95"] is None for c in summary["cells"])
    written = figs.write_figures(summary, tmp_path)
    assert "metric" in written and not any(k.startswith(("angles", "hist")) for k in written)
    for name in written.values():
        opens(tmp_path / name)
    assert "forest" in written  # differences without intervals, each read as not testable
    ax = figs.forest_figure(summary).axes[0]
    assert right_labels(ax) and all(label.startswith("not testable") for label in right_labels(ax))


def test_angles_without_nulls_or_at_init(tmp_path):
    trials = make_trials(strategies=("forward", "none"), inits=("random",), seeds=(0, 1))
    summary = make_summary(trials, nulls=False)
    for layers in summary["angles"]["random"].values():
        for entry in layers.values():
            entry.pop("at_init")
    written = figs.write_figures(summary, tmp_path)
    assert "hist_random_encoder" in written  # the heatmap draws the contrast with a null: without one, none
    assert "angles_random_encoder" not in written and figs.angles_figure(summary, "random", "encoder") is None
    assert set(figs.write_figures({**summary, "angles": None}, tmp_path / "none")) == {"metric", "matching_vs_none"}


def test_empty_and_skeleton_summaries_make_nothing(tmp_path):
    assert figs.write_figures({}, tmp_path / "a") == {}
    skeleton = {
        "study": "x",
        "metric": "accuracy",
        "points_per_unit": 100.0,
        "alpha": 0.05,
        "teacher": {},
        "cells": [],
        "equivalence": None,
        "pairwise": None,
        "matching_vs_none": {},
        "verdict": None,
        "room": None,
        "angles": {"random": {"encoder": {"0": {"skipped": "width mismatch"}}}},
    }
    assert figs.write_figures(skeleton, tmp_path / "b") == {}


def test_a_failing_figure_is_skipped_with_a_warning(full, tmp_path, monkeypatch):
    def broken(summary):
        raise KeyError("mean")

    monkeypatch.setattr(figs, "forest_figure", broken)
    with pytest.warns(figs.FigureWarning, match="forest"):
        made = figs.figures(full)  # what write_figures saves
    assert {key for key, _, _ in made} == FULL_KEYS - {"forest"}


def test_learning_curves_average_the_finished_trials_of_each_arm_and_the_figure_says_so(full):
    trials = [
        {
            "trial_id": "a",
            "init": "random",
            "strategy": "forward",
            "status": "finished",
            "curve": [[5, 0.5], [10, 0.6]],
        },
        {
            "trial_id": "b",
            "init": "random",
            "strategy": "forward",
            "status": "finished",
            "curve": [[5, 0.7], [10, 0.8]],
        },
        {"trial_id": "c", "init": "random", "strategy": "forward", "status": "diverged", "curve": [[5, 0.0]]},
        {"trial_id": "d", "init": "random", "strategy": "none", "status": "finished", "curve": [[5, 0.4], [10, 0.4]]},
        {"trial_id": "e", "init": "random", "strategy": "none", "status": "finished", "curve": [[5, 0.9]]},
    ]
    curves = learning_curves(trials, excluded={"e"})
    forward, none = curves["random"]["forward"], curves["random"]["none"]
    assert forward["steps"] == [5, 10] and forward["n"] == 2
    assert forward["mean"] == pytest.approx([0.6, 0.7]) and forward["sd"] == pytest.approx([0.1414214, 0.1414214])
    assert none == {"steps": [5, 10], "mean": [0.4, 0.4], "sd": [None, None], "n": 1}

    fig = figs.curves_figure(full)
    title = " ".join(fig._suptitle.get_text().split())
    assert "on 64 validation examples: mean over seeds per strategy, band +-1 sd" in title
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {f"{s} (n=3)" for s in ("forward", "reverse", "all_to_one", "random", "none")}
    reverse = full["curves"]["by_init"]["random"]["reverse"]
    assert list(lines["reverse (n=3)"].get_ydata()) == pytest.approx([100 * m for m in reverse["mean"]])
    assert len(ax.collections) == 5  # a band per strategy
