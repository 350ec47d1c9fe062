"""The study report: ``summary.json`` (the contract in docs/outputs.md), ``report.md``, ``report.html`` and figures.

Everything here is pure formatting of what `raykd.analysis.stats` and `raykd.analysis.angles`
computed; numbers in ``summary.json`` are in the metric's own units, the Markdown report shows
differences in metric points (accuracy 0.01 = 1 point; BLEU and chrF are points already).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from raykd.analysis.angles import acute_share_overall
from raykd.analysis.stats import points_per_unit

SUMMARY = "summary.json"
REPORT = "report.md"
HTML = "report.html"


def build_summary(
    *,
    study: str,
    metric: str,
    higher_is_better: bool,
    teacher: dict[str, float],
    trials: list[dict],
    stats: dict[str, Any],
    angles: dict[str, Any] | None,
    angle_notes: list[str],
    margin_points: float,
    setup: dict[str, Any],
) -> dict[str, Any]:
    teacher_out = {"metric": teacher.get(f"test/{metric}")}
    teacher_out.update(teacher)
    return {
        "study": study,
        "metric": metric,
        "higher_is_better": higher_is_better,
        "points_per_unit": points_per_unit(metric),
        "alpha": stats["alpha"],
        "teacher": teacher_out,
        "setup": setup,
        "trials": [
            {
                k: t.get(k)
                for k in (
                    "trial_id",
                    "strategy",
                    "init",
                    "weight",
                    "seed",
                    "metric",
                    "status",
                    "best_validation",
                    "layer_map",
                )
            }
            for t in trials
        ],
        "excluded": stats["excluded"],
        "cells": [
            {k: c[k] for k in ("strategy", "init", "weight", "n", "mean", "std", "ci95", "seeds", "values")}
            for c in stats["cells"]
        ],
        "strategy_test": stats["strategy_test"],
        "pairwise": stats["pairwise"],
        "equivalence": {**stats["equivalence"], "margin_points": margin_points},
        "matching_vs_none": stats["matching_vs_none"],
        "angles": angles,
        "acute_share": acute_share_overall(angles) if angles else None,
        "notes": stats["notes"] + angle_notes,
        "verdict": stats["verdict"],
        "plan": stats.get("plan"),
        "room": stats.get("room"),
    }


def write_summary(summary: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SUMMARY
    path.write_text(json.dumps(summary, indent=2, allow_nan=False))
    return path


# --- numbers as text ------------------------------------------------------------------------------


def _pts(value: float | None, scale: float, signed: bool = True) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value * scale:+.2f}" if signed else f"{value * scale:.2f}"


def _ci(ci: list[float] | None, scale: float) -> str:
    return "n/a" if ci is None else f"[{ci[0] * scale:+.2f}, {ci[1] * scale:+.2f}]"


def _num(value: float | None, spec: str = ".3g") -> str:
    return "n/a" if value is None else format(value, spec)


def _p(p: float | None) -> str:
    return "n/a" if p is None else (f"{p:.3g}" if p >= 1e-4 else "<1e-4")


def _level(summary: dict[str, Any]) -> str:
    """The TOST interval's level as text ('90%' at alpha 0.05, '98%' at 0.01)."""
    eq = summary.get("equivalence") or {}
    level = eq.get("ci_level")
    if level is None:
        level = round(1 - 2 * summary.get("alpha", 0.05), 10)
    return f"{100 * level:.10g}%"


_ANSWER_WORDS = {
    "differ": "the strategies differ",
    "differ_within_margin": "the strategies differ, within the margin",
    "equivalent": "equivalent within the margin",
    "undecided": "undecided",
    "untestable": "not testable",
    "better": "matching is better",
    "worse": "matching is worse",
    "better_within_margin": "matching is better, within the margin",
    "worse_within_margin": "matching is worse, within the margin",
}


def _answer_line(init: str, answers: dict[str, Any]) -> str:
    q1, q2 = answers["strategies_differ"], answers["matching_beats_none"]

    def one(q: dict) -> str:
        return f"{_ANSWER_WORDS.get(q['answer'], q['answer'])} -> claim '{q['claim']}' {q['claim_status']}"

    return f"{init} init: do the strategies differ? {one(q1)}; does matching beat none? {one(q2)}"


def compact_verdict(summary: dict[str, Any], max_open: int = 4) -> str:
    """The verdict as a study prints it at its end: one screen, each answer with the test behind it; the full
    account (every test, interval and the plan) is the report's Verdict section."""
    from raykd.analysis.power import plan_lines

    scale, metric = summary["points_per_unit"], summary["metric"]
    margin = summary["equivalence"]["margin_points"]
    lines = [
        (
            f"== verdict: {summary['study']} (test {metric}; {len(summary['trials']) - len(summary['excluded'])} of "
            f"{len(summary['trials'])} trials; alpha {summary.get('alpha', 0.05):g}, margin +-{margin:g} points) =="
        )
    ]
    teacher = summary["teacher"].get("metric")
    rooms = "; ".join(
        f"{i} init {_pts(r['room'], scale)}" + ("" if r["enough"] else " (too little)")
        for i, r in (summary.get("room") or {}).items()
    )
    if teacher is not None:
        lines.append(
            f"teacher {_pts(teacher, scale, signed=False)}{_baseline_text(summary, scale)}"
            + (f"; room (teacher - none): {rooms}" if rooms else "")
        )
    for init in dict.fromkeys(c["init"] for c in summary["cells"]):
        cells = [c for c in summary["cells"] if c["init"] == init]
        shown = ", ".join(
            f"{c['strategy']} {_pts(c['mean'], scale, False)}"
            + (f" [{c['ci95'][0] * scale:.1f}, {c['ci95'][1] * scale:.1f}]" if c["ci95"] else "")
            for c in cells
        )
        lines.append(f"mean test {metric}, {init} init (n={max(c['n'] for c in cells)} seeds, 95% CI): {shown}")
    lines += _question_lines(summary)
    for init, shares in (summary.get("acute_share") or {}).items():
        null = ((shares.get("null") or {}).get("trained") or {}).get("random_point")
        lines.append(
            f"acute angles, trained, {init} init: {_share(shares.get('trained'))}"
            + (f" (random-point null {_share(null['mean'])})" if null else "")
        )
    open_lines = [line for line in plan_lines(summary, scale, open_only=True) if not line.startswith("  ")][:max_open]
    if open_lines:
        lines.append("to decide what is open (80% power; python studies/analyze.py --study DIR --plan for all):")
        lines += [f"  {line.strip()}" for line in open_lines]
    if summary["verdict"].get("finding") is False:
        lines.append("NOT A FINDING: " + (summary["teacher"].get("weak") or "see the report"))
    return "\n".join(lines)


def verdict_block(summary: dict[str, Any]) -> str:
    """Every line of the verdict: the report's Verdict section (a study prints `compact_verdict`)."""
    from raykd.analysis.power import plan_lines

    scale = summary["points_per_unit"]
    level = _level(summary)
    lines = [
        (
            f"== verdict: {summary['study']} (test {summary['metric']}, {len(summary['trials'])} trials, "
            f"{len(summary['trials']) - len(summary['excluded'])} used) =="
        )
    ]
    teacher = summary["teacher"].get("metric")
    if teacher is not None:
        lines.append(f"teacher: {_pts(teacher, scale, signed=False)}" + _baseline_text(summary, scale))
    lines += _room_lines(summary, scale)
    effect = summary["strategy_test"].get("strategy")
    if effect:
        lines.append(
            f"strategy factor ({summary['strategy_test']['formula']}): F={_num(effect['F'])}, "
            f"p={_p(effect['p'])}, partial eta2={_num(effect['partial_eta2'], '.3f')}"
        )
    lines += _equivalence_lines(summary, scale, level)
    lines += _matching_vs_none_lines(summary, scale, level)
    for init, answers in (summary["verdict"].get("by_init") or {}).items():
        lines.append(_answer_line(init, answers))
    for init, shares in (summary.get("acute_share") or {}).items():
        at_init, trained = shares.get("at_init"), shares.get("trained")
        lines.append(
            f"acute angles ({init} init): at init {_share(at_init)}{_null_text(shares, 'at_init')}, "
            f"trained {_share(trained)}{_null_text(shares, 'trained')}"
        )
    open_lines = plan_lines(summary, scale, open_only=True)
    if open_lines:
        lines.append("what this design could decide (open questions):")
        lines += ["  " + line for line in open_lines]
    lines.append(summary["verdict"]["text"])
    return "\n".join(lines)


def _question_lines(summary: dict[str, Any]) -> list[str]:
    """Q1 and Q2 per init: the answer, what it does to the paper's claim, and the tests behind it."""
    questions = (
        ("strategies_differ", "Q1 do the matching strategies differ?"),
        ("matching_beats_none", "Q2 does matching beat no matching?"),
    )
    lines = []
    scale = summary["points_per_unit"]
    margin = summary["equivalence"]["margin_points"]
    for key, question in questions:
        for init, answers in (summary["verdict"].get("by_init") or {}).items():
            q = answers[key]
            basis = ", ".join(
                f"{b['test']} {_pe(b.get('p_adjusted', b['p']))}"
                for b in q.get("basis", [])[:2]
                if b.get("p") is not None
            )
            words = _ANSWER_WORDS.get(q["answer"], q["answer"])
            diff = (summary.get("matching_vs_none") or {}).get(init, {}).get("diff")
            if key == "matching_beats_none" and diff is not None and q["answer"] != "untestable":
                words += f" ({_pts(diff, scale)} points)"
            if key == "strategies_differ" and q["answer"] != "untestable":
                words += _largest_difference(summary, init, scale)
            status = q["claim_status"].upper()
            if q["answer"].endswith("_within_margin"):  # decided by the margin: a difference smaller than it
                status += f" at the +-{margin:g}-point margin"
            lines.append(
                f"{question} {init} init: {words} -> '{q['claim']}' "
                f"{status}"
                + (f" ({basis})" if basis else "")
                + (" [no room: not a finding]" if q.get("no_room") else "")
            )
    return lines


def _largest_difference(summary: dict[str, Any], init: str, scale: float) -> str:
    """ " (largest vs forward: all_to_one -1.87 points)": how far the strategy furthest from the reference is, so a
    "differ" says by how much and an "equivalent" says how close (empty when no strategy was compared)."""
    eq = summary.get("equivalence") or {}
    per = {s: e for s, e in (eq.get("by_init") or {}).get(init, {}).items() if e.get("diff") is not None}
    if not per:
        return ""
    strategy, entry = max(per.items(), key=lambda item: abs(item[1]["diff"]))
    return f" (largest vs {eq.get('reference')}: {strategy} {_pts(entry['diff'], scale)} points)"


def _room_lines(summary: dict[str, Any], scale: float) -> list[str]:
    lines = []
    for init, space in (summary.get("room") or {}).items():
        enough = (
            "(enough for the margin)"
            if space["enough"]
            else f"(< {space['min_room'] * scale:g}: equivalence under this init is not a finding)"
        )
        lines.append(f"room ({init} init): teacher - {space['against']} = {_pts(space['room'], scale)} points {enough}")
    return lines


def _equivalence_lines(summary: dict[str, Any], scale: float, level: str) -> list[str]:
    eq, lines = summary["equivalence"], []
    words = {True: "equivalent", False: "not shown equivalent", None: "not testable"}
    for init, per in eq["by_init"].items():
        shown = ", ".join(
            f"{s} {_pts(e['diff'], scale)} {_ci(e['ci90'], scale)} {words[e['equivalent']]}" for s, e in per.items()
        )
        lines.append(
            f"vs {eq['reference']} ({init} init, {level} CI, margin +-{eq['margin_points']:g} points): {shown}"
        )
    return lines


def _matching_vs_none_lines(summary: dict[str, Any], scale: float, level: str) -> list[str]:
    margin, lines = summary["equivalence"]["margin_points"], []
    for init, v in summary["matching_vs_none"].items():
        tost = ""
        if v.get("ci_tost") is not None:
            tost = (
                f"; {level} CI {_ci(v['ci_tost'], scale)}, TOST p={_p(v.get('tost_p'))} "
                f"({'equivalent' if v.get('equivalent') else 'not shown equivalent'} within +-{margin:g} points)"
            )
        lines.append(
            f"matching - none ({init} init): {_pts(v['diff'], scale)} points 95% CI {_ci(v['ci95'], scale)}, "
            f"p={_p(v['p'])}{tost}"
        )
    return lines


def _baseline_text(summary: dict[str, Any], scale: float) -> str:
    teacher = summary["teacher"]
    baseline = teacher.get("baseline") or {}
    if teacher.get("gain_points") is None:
        return ""
    return (
        f" (trivial baseline, {baseline.get('name')}: {_pts(baseline.get(summary['metric']), scale, signed=False)}; "
        f"gain {teacher['gain_points']:+.2f} points)"
    )


def _null_text(shares: dict[str, Any], when: str) -> str:
    nulls = (shares.get("null") or {}).get(when) or {}
    if not nulls:
        return ""
    shown = ", ".join(f"{kind.replace('_', ' ')} {_share(v['mean'])}" for kind, v in nulls.items())
    return f" (null: {shown})"


def _pe(p: float | None) -> str:
    text = _p(p)
    return f"p{text}" if text.startswith("<") else f"p={text}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def report_markdown(summary: dict[str, Any], figures: dict[str, str]) -> str:
    """report.md: the verdict first, then one section per question and its evidence (figures inline)."""
    sections = (
        _verdict_section,
        _setup_section,
        _cells_section,
        _factor_section,
        _pairwise_section,
        _matching_section,
        _answers_section,
        _plan_section,
        _angles_section,
        _notes_section,
    )
    out = [f"# Study report: {summary['study']}", ""]
    for section in sections:
        out += section(summary, figures)
    return "\n".join(out)


def _verdict_section(summary: dict[str, Any], figures: dict[str, str]) -> list[str]:
    return [
        "## Verdict",
        "",
        "```",
        compact_verdict(summary),
        "```",
        "",
        "Every test behind it:",
        "",
        "```",
        verdict_block(summary),
        "```",
        "",
    ]


def _setup_section(summary: dict[str, Any], figures: dict[str, str]) -> list[str]:
    scale, metric, teacher = summary["points_per_unit"], summary["metric"], summary["teacher"]
    out = ["## Setup", ""] + [f"- {key}: {value}" for key, value in summary["setup"].items()]
    out.append(
        f"- teacher test {metric}: {_pts(teacher.get('metric'), scale, signed=False)}"
        + (
            f" (validation {_pts(teacher.get(f'validation/{metric}'), scale, signed=False)})"
            if teacher.get(f"validation/{metric}") is not None
            else ""
        )
    )
    if teacher.get("gain_points") is not None:
        out.append(
            f"- teacher against its task's trivial baseline:{_baseline_text(summary, scale)}"
            + (f"; **{teacher['weak']}: nothing in this report is a finding**" if teacher.get("weak") else "")
        )
    for init, space in (summary.get("room") or {}).items():
        out.append(
            f"- room the arms had to differ ({init} init): teacher minus {space['against']} = "
            f"{_pts(space['room'], scale)} points; a finding needs at least {space['min_room'] * scale:g} "
            f"({'met' if space['enough'] else 'not met: equivalence under this init is not a finding'})"
        )
    for group in summary.get("coinciding_maps") or []:
        out.append(
            f"- arms {', '.join(group['strategies'])} matched the same layer pairs at {group['init']} init, "
            f"seed {group['seed']}: not different treatments there"
        )
    return out + [f"- differences are in {metric} points ({scale:g} points per unit); positive = better", ""]


def _cells_section(summary: dict[str, Any], figures: dict[str, str]) -> list[str]:
    scale, metric = summary["points_per_unit"], summary["metric"]
    out = [
        "## Strategy x init",
        "",
        f"Test {metric} (points) per cell: mean, std and 95% t interval over seeds.",
        "",
        "| strategy | init | weight | n | mean | std | 95% CI | per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in summary["cells"]:
        per_seed = ", ".join(f"s{s}: {v * scale:.2f}" for s, v in zip(c["seeds"], c["values"]))
        out.append(
            f"| {c['strategy']} | {c['init']} | {c['weight']} | {c['n']} | {_pts(c['mean'], scale, False)} | "
            f"{_pts(c['std'], scale, False)} | {_ci(c['ci95'], scale)} | {per_seed} |"
        )
    if summary["excluded"]:
        out += ["", "Excluded trials:", ""] + [f"- {e['trial_id']}: {e['reason']}" for e in summary["excluded"]]
    if "metric" in figures:
        out += ["", f"![test {metric} per strategy and init]({figures['metric']})"]
    return out + [""]


def _factor_section(summary: dict[str, Any], figures: dict[str, str]) -> list[str]:
    test = summary["strategy_test"]
    out = ["## Is the strategy a significant factor?", ""]
    if test.get("strategy"):
        out += [
            (
                f"{test['test']}: `{test['formula']}` over the matching strategies (`none` excluded), "
                f"{test['n']} trials, residual df {test['df_resid']}."
            ),
            "",
            "| term | F | df | p | partial eta2 |",
            "|---|---|---|---|---|",
        ]
        for term in ("strategy", "init", "interaction"):
            e = test.get(term)
            if e:
                out.append(f"| {term} | {_num(e['F'])} | {e['df']} | {_p(e['p'])} | {_num(e['partial_eta2'], '.3f')} |")
    else:
        out.append("Not testable (see Notes).")
    out += ["", "Non-parametric check per init:", ""]
    for init, r in (test.get("nonparametric") or {}).items():
        out.append(
            f"- {init}: "
            + (
                "not testable"
                if r is None
                else f"{r['test']}: statistic {r['statistic']:.3g}, p={_p(r['p'])} "
                f"({len(r['strategies'])} strategies x {len(r['seeds'])} seeds)"
            )
        )
    return out + [""]


def _pairwise_section(summary: dict[str, Any], figures: dict[str, str]) -> list[str]:
    scale, pairwise, eq = summary["points_per_unit"], summary["pairwise"], summary["equivalence"]
    level, alpha = _level(summary), summary.get("alpha", 0.05)
    out = [
        f"## Each strategy against {pairwise['reference']}",
        "",
        (
            f"Paired by seed. Difference tests: paired t, Holm-corrected within each init (alpha "
            f"{alpha}). Equivalence: TOST within +-{eq['margin_points']:g} points at alpha {alpha} "
            f"(equivalent when the {level} CI lies inside the margin). Not significant is not equivalent: a "
            "strategy is only called equivalent when TOST says so. The reading of each pair is shown "
            "(differs / equivalent), both, or undecided."
        ),
        "",
        f"| init | strategy | diff | 95% CI | p (Holm) | {level} CI | TOST p | reading |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for init, per in pairwise["by_init"].items():
        for strategy, c in per.items():
            e = eq["by_init"].get(init, {}).get(strategy, {})
            out.append(
                f"| {init} | {strategy} | {_pts(c['diff'], scale)} | {_ci(c['ci95'], scale)} | {_p(c['p_holm'])} | "
                f"{_ci(e.get('ci90'), scale)} | {_p(e.get('p'))} | {_reading(c, e)} |"
            )
    if "forest" in figures:
        out += ["", f"![each strategy minus {pairwise['reference']}, with the equivalence margin]({figures['forest']})"]
    return out + [""]


def _matching_section(summary: dict[str, Any], figures: dict[str, str]) -> list[str]:
    scale, eq, level = summary["points_per_unit"], summary["equivalence"], _level(summary)
    verdicts = summary["verdict"].get("by_init") or {}
    out = [
        "## Matching vs no matching",
        "",
        (
            "Mean over the matching strategies minus `none`, paired by seed: paired t (95% t interval) and "
            f"TOST within +-{eq['margin_points']:g} points ({level} interval)."
        ),
        "",
        f"| init | diff | 95% CI | p | {level} CI | TOST p | answer | per strategy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for init, v in summary["matching_vs_none"].items():
        per = ", ".join(f"{s} {_pts(d['diff'], scale)} (p={_p(d['p'])})" for s, d in v["by_strategy"].items())
        answer = ((verdicts.get(init) or {}).get("matching_beats_none") or {}).get("answer", "")
        out.append(
            f"| {init} | {_pts(v['diff'], scale)} | {_ci(v['ci95'], scale)} | {_p(v['p'])} | "
            f"{_ci(v.get('ci_tost'), scale)} | {_p(v.get('tost_p'))} | {answer.replace('_', ' ')} | {per} |"
        )
    if "matching_vs_none" in figures:
        out += ["", f"![matching minus none]({figures['matching_vs_none']})"]
    return out + [""]


def _answers_section(summary: dict[str, Any], figures: dict[str, str]) -> list[str]:
    out = [
        "## Verdict per init",
        "",
        (
            "Each question is answered shown, refuted or undecided against the paper's claims. A difference is "
            "shown when a test of that init is significant after Holm correction over all of its difference tests "
            "(ANOVA within the init, Friedman, paired t against the reference); equivalence when TOST shows it "
            "within the margin. A difference smaller than the margin counts as no difference that matters; an "
            "equivalence where the arms had no room to differ (teacher minus none under the configured number of "
            "margins) is not a finding."
        ),
        "",
        "| init | question | answer | claim | claim status | basis |",
        "|---|---|---|---|---|---|",
    ]
    for init, answers in (summary["verdict"].get("by_init") or {}).items():
        for q in (answers["strategies_differ"], answers["matching_beats_none"]):
            basis = (
                "; ".join(
                    f"{b['test']}: p={_p(b['p'])}" + (f" (Holm {_p(b['p_adjusted'])})" if "p_adjusted" in b else "")
                    for b in q["basis"]
                )
                or "no test ran"
            )
            out.append(
                f"| {init} | {q['question']} | {q['answer'].replace('_', ' ')} | {q['claim']} | "
                f"{q['claim_status']} | {basis}{'; ' + q['no_room'] if q.get('no_room') else ''} |"
            )
    return out + [""]


def _plan_section(summary: dict[str, Any], figures: dict[str, str]) -> list[str]:
    from raykd.analysis.power import plan_lines

    plan, eq = summary.get("plan"), summary["equivalence"]
    out = ["## What this design could decide", ""]
    if not plan:
        return out + ["No plan in this summary.", ""]
    out += [
        (
            f"From the observed paired differences ({100 * plan['power']:g}% power, alpha {plan['alpha']:g}, "
            f"margin +-{eq['margin_points']:g} points): the margin the data show equivalence within, the margin "
            "and the difference this number of seeds could decide, and for each undecided question the seeds "
            f"that would decide it (capped at {plan['max_seeds']})."
        ),
        "",
    ]
    out += [
        f"- {line.strip()}" if not line.startswith("  ") else f"  - {line.strip()}"
        for line in plan_lines(summary, summary["points_per_unit"])
    ]
    return out + [""]


def _angles_section(summary: dict[str, Any], figures: dict[str, str]) -> list[str]:
    out = ["## Angles: teacher layers seen from the student", ""]
    angles = summary.get("angles")
    if not angles:
        return out + ["Not measured (see Notes).", ""]
    out += [
        (
            "Share of acute angles cos(t_i - s, t_j - s) > 0 over token-level teacher layer pairs i < j, "
            "averaged over the measured trials of each init, beside two null baselines computed the same way "
            "(the student state replaced by a random point of the same norm, or by another token's state; "
            "mean and 95% interval over null seeds x trials). A share is informative only where it departs "
            "from its null: far from every teacher state, almost any point sees them at acute angles."
        ),
        "",
        (
            "| init | stack | student state | at init | null (random point / other token) | trained | "
            "null (random point / other token) | trained, per strategy |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for init, stacks in angles.items():
        for stack, layers in stacks.items():
            for k, whens in sorted(layers.items(), key=lambda kv: int(kv[0])):
                per = ", ".join(
                    f"{s} {_share(v)}"
                    for s, v in (whens.get("trained") or {}).get("acute_share_by_strategy", {}).items()
                )
                start, end = whens.get("at_init") or {}, whens.get("trained") or {}
                out.append(
                    f"| {init} | {stack} | {k} | {_share(start.get('acute_share'))} | {_nulls(start)} | "
                    f"{_share(end.get('acute_share'))} | {_nulls(end)} | {per} |"
                )
    out += [
        line
        for key, path in figures.items()
        if key.startswith(("angles", "hist"))
        for line in ("", f"![{key}]({path})")
    ]
    return out + [""]


def _notes_section(summary: dict[str, Any], figures: dict[str, str]) -> list[str]:
    return ["## Notes", ""] + [f"- {n}" for n in summary["notes"]] + [""] if summary["notes"] else []


def _nulls(entry: dict[str, Any]) -> str:
    parts = []
    for kind in ("random_point", "other_token"):
        null = (entry.get("null") or {}).get(kind)
        if null is None:
            parts.append("n/a")
            continue
        share = null["acute_share"]
        ci = share.get("ci95")
        parts.append(_share(share["mean"]) + (f" [{_share(ci[0])}, {_share(ci[1])}]" if ci else ""))
    return " / ".join(parts)


def _reading(c: dict, e: dict) -> str:
    """One pair against the reference: a difference shown, equivalence shown, both, or undecided."""
    if c.get("p") is None and e.get("p") is None:
        return "not testable"
    if c.get("significant") and e.get("equivalent"):
        return "differs, within the margin (shown)"
    if c.get("significant"):
        return "differs (shown)"
    if e.get("equivalent"):
        return "equivalent (shown)"
    return "undecided (neither shown)"


def write_report(summary: dict[str, Any], folder: Path) -> dict[str, Path]:
    """summary.json, figures and report.md in `folder` (figures of an earlier report removed); returns their paths."""
    for stale in folder.glob("*.png"):
        stale.unlink()
    from raykd.analysis.figures import write_figures

    paths = {"summary": write_summary(summary, folder)}
    figures = write_figures(summary, folder)
    paths.update({key: folder / name for key, name in figures.items()})
    paths["report"] = folder / REPORT
    text = report_markdown(summary, figures)
    paths["report"].write_text(text)
    paths["html"] = folder / HTML
    paths["html"].write_text(report_html(text, folder, title=f"Study report: {summary['study']}"))
    return paths


def report_html(markdown: str, folder: Path, *, title: str) -> str:
    """report.md as one self-contained HTML page (figures inlined as data URIs, so it renders in MLflow's
    artifact viewer and opens anywhere without its folder)."""
    import base64
    import html
    import re

    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown)

    def inline(match: re.Match) -> str:
        path = folder / html.unescape(match.group(1))
        if path.suffix != ".png" or not path.is_file():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'

    body = re.sub(r'src="([^"]+)"', inline, body)
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
        "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 7px}"
        "th{background:#f3f3f3}pre{background:#f6f6f6;padding:0.8em;overflow-x:auto;white-space:pre-wrap}"
        "img{max-width:100%}code{background:#f3f3f3}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{body}</body></html>"
    )


def description_markdown(summary: dict[str, Any]) -> str:
    """The study run's description in MLflow: the verdict, the cells and where the full report is."""
    scale = summary["points_per_unit"]
    lines = [
        f"## {summary['study']}: does the layer-selection strategy matter?",
        "",
        summary["verdict"]["text"],
        "",
        f"| strategy | init | n | mean test {summary['metric']} | 95% CI |",
        "|---|---|---|---|---|",
    ]
    for c in summary["cells"]:
        lines.append(
            f"| {c['strategy']} | {c['init']} | {c['n']} | {_pts(c['mean'], scale, False)} | {_ci(c['ci95'], scale)} |"
        )
    teacher = summary["teacher"].get("metric")
    if teacher is not None:
        lines += ["", f"Teacher: {_pts(teacher, scale, False)}."]
    lines += [
        "",
        (
            "Full report with figures: artifact `report/report.html` of this run (`report/report.md`, "
            "`report/summary.json`). Compare trials: group the runs by `trial.strategy` and `trial.init`."
        ),
    ]
    return "\n".join(lines)
