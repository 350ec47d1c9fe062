"""The report: summary.json keys (the docs/outputs.md contract), report.md sections, figures that open."""

import json

import matplotlib.image
import numpy as np
import pytest

from raykd.analysis.angles import HIST_EDGES, summarise
from raykd.analysis.report import build_summary, write_report
from raykd.analysis.stats import analyze_trials
from raykd.analysis.views import verdict_block
from tests.test_analysis_stats import make_trials


def fake_angles(share):
    rng = np.random.default_rng(0)
    return {
        "encoder": {
            str(k): {
                "matrix": rng.uniform(-1, 1, (4, 4)).round(3).tolist(),
                "acute_share": share,
                "histogram": {"edges": HIST_EDGES.tolist(), "counts": list(range(40))},
            }
            for k in range(3)
        }
    }


@pytest.fixture
def summary():
    trials = make_trials(none_shift={"random": -0.06})
    trials[0] = {**trials[0], "status": "diverged", "metric": None}
    stats = analyze_trials(trials, metric="accuracy", margin=0.01, min_seeds=3)
    angles = summarise(
        [
            {"init": i, "strategy": s, "seed": 0, "at_init": fake_angles(0.6), "trained": fake_angles(0.9)}
            for i in ("random", "teacher")
            for s in ("forward", "reverse")
        ]
    )
    return build_summary(
        study="demo",
        metric="accuracy",
        higher_is_better=True,
        teacher={"test/accuracy": 0.78, "validation/accuracy": 0.8},
        trials=trials,
        stats=stats,
        angles=angles,
        angle_notes=["angles: 4 trained students"],
        margin_points=1.0,
        setup={"task": "classification (accuracy)"},
    )


def test_summary_has_the_contract_keys(summary, tmp_path):
    paths = write_report(summary, tmp_path)
    data = json.loads(paths["summary"].read_text())
    for key in (
        "study",
        "metric",
        "higher_is_better",
        "teacher",
        "trials",
        "cells",
        "strategy_test",
        "equivalence",
        "matching_vs_none",
        "angles",
        "verdict",
    ):
        assert key in data, key
    assert data["teacher"]["metric"] == 0.78
    assert {"strategy", "init", "weight", "seed", "metric", "status"} <= set(data["trials"][0])
    assert data["trials"][0]["status"] == "diverged"
    assert {"strategy", "init", "n", "mean", "std", "ci95"} <= set(data["cells"][0])
    test = data["strategy_test"]
    assert {"test", "formula", "strategy", "init", "interaction", "nonparametric"} <= set(test)
    assert {"F", "p", "partial_eta2"} <= set(test["strategy"])
    eq = data["equivalence"]
    assert eq["reference"] == "forward" and eq["margin"] == 0.01 and eq["margin_points"] == 1.0
    assert {"diff", "ci90", "p", "equivalent"} <= set(eq["by_init"]["random"]["reverse"])
    assert {"diff", "ci95", "p"} <= set(data["matching_vs_none"]["teacher"])
    layer = data["angles"]["random"]["encoder"]["1"]
    assert {"matrix", "acute_share"} <= set(layer["at_init"]) and layer["trained"]["acute_share"] == 0.9
    assert set(data["verdict"]) >= {"strategy_significant", "strategies_equivalent", "matching_beats_none", "text"}
    assert {k: v for k, v in data["acute_share"]["teacher"].items() if k != "null"} == {"at_init": 0.6, "trained": 0.9}


def test_report_sections_and_figures(summary, tmp_path):
    paths = write_report(summary, tmp_path)
    text = paths["report"].read_text()
    for heading in (
        "## Verdict",
        "## Setup",
        "## Strategy x init",
        "## Is the strategy a significant factor?",
        "## Each strategy against forward",
        "## Matching vs no matching",
        "## Angles: teacher layers seen from the student",
        "## Notes",
    ):
        assert heading in text, heading
    assert "forward-random-s0: diverged" in text  # excluded trials are listed
    assert "teacher test accuracy: 78.00" in text
    assert "Not significant is not equivalent" in text
    figures = sorted(p.name for p in tmp_path.glob("*.png"))
    assert figures == [  # no angle heatmaps: these angles have no null to contrast with (test_analysis_figures)
        "forest.png",
        "hist_random_encoder.png",
        "hist_teacher_encoder.png",
        "matching_vs_none.png",
        "metric_by_cell.png",
    ]
    html = paths["html"].read_text()  # the same report as one page, figures inlined
    assert html.count("data:image/png;base64,") == len(figures) and "<h2>Strategy x init</h2>" in html
    for name in figures:
        image = matplotlib.image.imread(tmp_path / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
        assert f"({name})" in text  # linked from the report
        assert image[..., :3].std() > 0.05  # not a blank canvas


def test_verdict_block_reads_in_points(summary):
    block = verdict_block(summary)
    assert (
        block.splitlines()[0] == "== verdict: demo (test accuracy; 29 of 30 trials; alpha 0.05, margin +-1 points) =="
    )
    assert "teacher: 78.00" in block
    assert "matching - none (random init): +" in block
    assert "angles" not in block  # no angle test in this summary: the saturated acute share alone is not shown
    summary["angle_test"] = {
        "random": {
            "encoder": {"trained": {"mean": 0.12, "ci95": [0.05, 0.19], "seeds": [0, 1, 2], "p": 0.01, "tested": True}}
        }
    }
    assert (
        "angles, trained, random init (encoder): mean cosine minus its random-point null +0.120 [+0.050, +0.190] over "
        "3 seeds, t p=0.01" in verdict_block(summary)
    )
    assert block.splitlines()[-1] == summary["verdict"]["text"]


def test_compact_verdict_gives_each_claim_per_init_on_one_screen(summary):
    from raykd.analysis.claims import STATEMENTS
    from raykd.analysis.views import compact_verdict

    lines = compact_verdict(summary).splitlines()
    assert lines[0] == "== verdict: demo (test accuracy; 29 of 30 trials; alpha 0.05, margin +-1 points) =="
    for claim in summary["claims"]:
        (line,) = [x for x in lines if f"'{STATEMENTS[claim['name']]}' ({claim['init']} init" in x]
        assert claim["verdict"].upper() in line and claim["decided_by"] in line
    assert any(x.startswith("fact: the strategies ") for x in lines)  # a fact beside, not the verdict
    assert len(lines) <= 24 and max(map(len, lines)) < 600


def _random_init_summary(trials: list[dict], margin_points: float) -> dict:
    """The summary of synthetic trials at one margin (in accuracy points), without angles."""
    return build_summary(
        study="synthetic",
        metric="accuracy",
        higher_is_better=True,
        teacher={"test/accuracy": 0.78},
        trials=trials,
        stats=analyze_trials(trials, metric="accuracy", margin=margin_points / 100, teacher_metric=0.78),
        angles=None,
        angle_notes=[],
        margin_points=margin_points,
        setup={"task": "classification (accuracy)"},
    )


def test_a_gain_inside_the_margin_shows_beats_and_refutes_by_margin():
    """Matching better than none by ~0.6 points over 8 seeds, with a 1-point margin: 'beats' shown, 'by more than
    the margin' refuted -- a gain inside the margin is still a gain."""
    from raykd.analysis.views import compact_verdict

    trials = make_trials(none_shift={"random": -0.006}, inits=("random",), seeds=tuple(range(8)), noise=0.001)
    summary = _random_init_summary(trials, margin_points=1.0)
    verdicts = {c["name"]: c["verdict"] for c in summary["claims"]}
    assert verdicts["matching_beats_none"] == "shown" and verdicts["matching_beats_none_by_margin"] == "refuted"
    text = compact_verdict(summary)
    assert "'matching beats no matching' (random init, margin +-1 points): SHOWN" in text
    assert "'matching beats no matching by more than the margin' (random init, margin +-1 points): REFUTED" in text


@pytest.mark.parametrize(("deficit", "verdict"), [(-0.03, "REFUTED"), (-0.015, "SHOWN")])
def test_compact_verdict_says_how_far_the_widest_pair_is(deficit, verdict):
    """A planted all-to-one deficit of 3 points (outside a 2-point margin) or 1.5 (inside): the strategy claim is
    refuted or shown, and a fact line gives the widest pair and its interval to set against the margin."""
    from raykd.analysis.views import compact_verdict

    trials = make_trials({"all_to_one": deficit}, inits=("random",), seeds=tuple(range(6)), noise=0.002)
    summary = _random_init_summary(trials, margin_points=2.0)
    text = compact_verdict(summary)
    assert f"'the layer-selection strategy does not matter' (random init, margin +-2 points): {verdict}" in text
    diff = summary["equivalence"]["by_init"]["random"]["all_to_one"]["diff"] * 100
    assert f"fact: widest pair of strategies, random init: all_to_one - forward {diff:+.2f} points" in text
    assert abs(diff - deficit * 100) < 0.5


def test_partial_summary_without_angles_or_tests(tmp_path):
    trials = make_trials(strategies=("forward",), seeds=(0,))
    stats = analyze_trials(trials, metric="accuracy")
    summary = build_summary(
        study="tiny",
        metric="accuracy",
        higher_is_better=True,
        teacher={},
        trials=trials,
        stats=stats,
        angles=None,
        angle_notes=["angles: no checkpoints"],
        margin_points=1.0,
        setup={},
    )
    paths = write_report(summary, tmp_path)
    text = paths["report"].read_text()
    assert "Not testable (see Notes)" in text and "Not measured (see Notes)" in text
    (tmp_path / "angles_random_encoder.png").write_bytes(b"from an earlier report")
    write_report(summary, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["metric_by_cell.png"]  # no stale figures
    assert "angles: no checkpoints" in text and "at least two matching strategies" in text
    assert json.loads(paths["summary"].read_text())["verdict"]["strategy_significant"] is None
    assert (tmp_path / "metric_by_cell.png").is_file()


def test_verdict_block_shows_a_zero_f_as_zero(summary):
    summary["strategy_test"]["strategy"] = {**summary["strategy_test"]["strategy"], "F": 0.0, "partial_eta2": 0.0}
    assert "F=0, " in verdict_block(summary) and "partial eta2=0.000" in verdict_block(summary)
