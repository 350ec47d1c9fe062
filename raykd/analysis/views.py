"""The verdict as the console prints it (`compact_verdict`, `verdict_block`), the study run's MLflow description
(`description_markdown`) and the plan as text (`plan_lines`, `claim_plan_line`): rendered from ``summary.json``
alone, like report.md."""

from __future__ import annotations

from typing import Any

from raykd.analysis.claims import claim_line
from raykd.analysis.power import MAX_SEEDS
from raykd.analysis.text import interval, number, p_is, p_value, points
from raykd.analysis.text import level as level_text
from raykd.analysis.text import share as pct


def _claim_lines(summary: dict[str, Any]) -> list[str]:
    """The look, then one line per claim (`raykd.analysis.claims.claim_line`, the one wording of a verdict)."""
    claims = summary.get("claims") or []
    if not claims:
        return []
    look = claims[0]["look"]
    where = (
        f"look {look['index']} of {look['of']} ({look['seeds']} seeds), one-sided level {look['alpha']:.3g}"
        if look.get("planned")
        else f"an unplanned look at {look['seeds']} seeds: verdicts exploratory"
    )
    return [f"claims ({where}):"] + [f"  {claim_line(c)}" for c in claims]


def _fact_lines(summary: dict[str, Any], scale: float) -> list[str]:
    """What was measured beside the claims: the strategy main effect and the widest pair of strategies."""
    lines = []
    effect = summary["strategy_test"].get("strategy")
    if effect and effect.get("p") is not None:
        lines.append(
            f"fact: the strategies {'differ' if effect['p'] < summary['alpha'] else 'do not differ'} significantly "
            f"(ANOVA {p_is(effect['p'])}, partial eta2 {number(effect['partial_eta2'], '.2f')}); the claims test "
            "the margin instead"
        )
    for claim in summary.get("claims") or []:
        rows = [r for r in claim["comparisons"] if r.get("ci")]
        if claim["name"] == "strategy_does_not_matter" and rows:
            widest = max(rows, key=lambda r: abs(r["diff"]))
            lines.append(
                f"fact: widest pair of strategies, {claim['init']} init: {widest['comparison']} "
                f"{points(widest['diff'], scale)} points, {100 * widest['ci_level']:.3g}% CI "
                f"{interval(widest['ci'], scale)}"
            )
    return lines


def _header(summary: dict[str, Any]) -> str:
    used = len(summary["trials"]) - len(summary["excluded"])
    return (
        f"== verdict: {summary['study']} (test {summary['metric']}; {used} of {len(summary['trials'])} trials; alpha "
        f"{summary.get('alpha', 0.05):g}, margin +-{summary['equivalence']['margin_points']:g} points) =="
    )


def _cell_lines(summary: dict[str, Any], scale: float) -> list[str]:
    lines = []
    for init in dict.fromkeys(c["init"] for c in summary["cells"]):
        cells = [c for c in summary["cells"] if c["init"] == init]
        shown = ", ".join(
            f"{c['strategy']} {points(c['mean'], scale, False)}"
            + (f" [{c['ci95'][0] * scale:.1f}, {c['ci95'][1] * scale:.1f}]" if c["ci95"] else "")
            for c in cells
        )
        lines.append(
            f"mean test {summary['metric']}, {init} init (n={max(c['n'] for c in cells)} seeds, 95% CI): {shown}"
        )
    return lines


def _angle_lines(summary: dict[str, Any]) -> list[str]:
    """Per init and stack: the trained student's mean cosine toward the teacher's layers minus its random-point null,
    tested across seeds; the (saturated) acute share only beside that test."""
    lines = []
    shares = summary.get("acute_share") or {}
    for init, stacks in (summary.get("angle_test") or {}).items():
        for stack, whens in stacks.items():
            t = whens.get("trained")
            if not t:
                continue
            seeds = f"{len(t['seeds'])} seed{'s' * (len(t['seeds']) != 1)}"
            result = (
                f"{t['mean']:+.3f} [{t['ci95'][0]:+.3f}, {t['ci95'][1]:+.3f}] over {seeds}, t {p_is(t['p'])}"
                if t["tested"]
                else f"{t['mean']:+.3f} over {seeds}: not tested (needs 3 seeds, analysis.angles.seeds)"
            )
            line = f"angles, trained, {init} init ({stack}): mean cosine minus its random-point null {result}"
            null = ((shares.get(init) or {}).get("null") or {}).get("trained", {}).get("random_point")
            if t["tested"] and null:
                line += f"; acute share {pct(shares[init].get('trained'))} (null {pct(null['mean'])})"
            lines.append(line)
    return lines


def compact_verdict(summary: dict[str, Any], max_open: int = 4) -> str:
    """The verdict as a study prints it at its end: one screen, each claim with the test that decided it; the
    full account (every test, interval and the plan) is the report's Verdict section."""
    scale = summary["points_per_unit"]
    lines = [_header(summary)]
    teacher = summary["teacher"].get("metric")
    if teacher is not None:
        lines.append(f"teacher {points(teacher, scale, signed=False)}{baseline_text(summary, scale)}")
    lines += _room_lines(summary, scale)
    lines += _cell_lines(summary, scale)
    lines += _claim_lines(summary)
    lines += _fact_lines(summary, scale)
    lines += _angle_lines(summary)
    open_lines = [line for c in summary.get("claims") or [] if (line := claim_plan_line(c))][:max_open]
    if open_lines:
        lines.append("to decide what is open (80% power; python studies/analyze.py --study DIR --plan for all):")
        lines += [f"  {line.strip()}" for line in open_lines]
    if summary["verdict"].get("finding") is False:
        lines.append("NOT A FINDING: " + (summary["teacher"].get("weak") or "see the report"))
    return "\n".join(lines)


def verdict_block(summary: dict[str, Any]) -> str:
    """Every line of the verdict: the report's Verdict section (a study prints `compact_verdict`)."""
    scale = summary["points_per_unit"]
    lines = [_header(summary)]
    teacher = summary["teacher"].get("metric")
    if teacher is not None:
        lines.append(f"teacher: {points(teacher, scale, signed=False)}" + baseline_text(summary, scale))
    lines += _room_lines(summary, scale)
    effect = summary["strategy_test"].get("strategy")
    if effect:
        lines.append(
            f"strategy factor ({summary['strategy_test']['formula']}): F={number(effect['F'])}, "
            f"p={p_value(effect['p'])}, partial eta2={number(effect['partial_eta2'], '.3f')}"
        )
    lines += _equivalence_lines(summary, scale, level_text(summary))
    lines += _matching_vs_none_lines(summary, scale, level_text(summary))
    for claim in summary.get("claims") or []:
        lines.append(f"{claim['name']} ({claim['init']} init): {claim['verdict']}")
        for r in claim["comparisons"]:
            if r.get("ci"):
                lines.append(
                    f"  {r['comparison']}: {points(r['diff'], scale)} points, {100 * r['ci_level']:.3g}% CI "
                    f"{interval(r['ci'], scale)}, n={r['n']}, TOST p={p_value(r['p_within'])}, "
                    f"p(> 0)={p_value(r['p_above_zero'])}"
                )
        lines.append(
            f"  permutation check: {claim['permutation_check']['verdict']} ({claim['permutation_check']['by']})"
        )
        if claim["fragile_seeds"]:
            lines.append(f"  seeds whose removal alone changes it: {claim['fragile_seeds']}")
    lines += _angle_lines(summary)
    claim_lines = [line for c in summary.get("claims") or [] if (line := claim_plan_line(c))]
    if claim_lines:
        lines.append("what more seeds would decide (each open claim, planned on its own comparisons):")
        lines += ["  " + line for line in claim_lines]
    open_lines = plan_lines(summary, scale, open_only=True)
    if open_lines:
        lines.append("what this design could decide (open questions):")
        lines += ["  " + line for line in open_lines]
    lines.append(summary["verdict"]["text"])
    return "\n".join(lines)


def _room_lines(summary: dict[str, Any], scale: float) -> list[str]:
    lines = []
    for init, space in (summary.get("room") or {}).items():
        gate = (
            "enough for a claim that a difference is below the margin"
            if space["enough"]
            else f"below {space['min_room'] * scale:g}: no claim that a difference is below the margin is a finding"
        )
        lower = space.get("room_lower")
        closed = ", ".join(
            f"{s} {100 * c['share']:.0f}% [{100 * c['ci95'][0]:.0f}, {100 * c['ci95'][1]:.0f}]"
            for s, c in (space.get("closed") or {}).items()
        )
        lines.append(
            f"room ({init} init): teacher - {space['against']} = {points(space['room'], scale)} points"
            + (f" (95% lower bound {points(lower, scale)})" if lower is not None else "")
            + f": {gate}"
            + (f"; share of it closed: {closed}" if closed else "")
        )
    return lines


def _equivalence_lines(summary: dict[str, Any], scale: float, level: str) -> list[str]:
    eq, lines = summary["equivalence"], []
    words = {True: "equivalent", False: "not shown equivalent", None: "not testable"}
    for init, per in eq["by_init"].items():
        shown = ", ".join(
            f"{s} {points(e['diff'], scale)} {interval(e['ci90'], scale)} {words[e['equivalent']]}"
            for s, e in per.items()
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
                f"; {level} CI {interval(v['ci_tost'], scale)}, TOST p={p_value(v.get('tost_p'))} "
                f"({'equivalent' if v.get('equivalent') else 'not shown equivalent'} within +-{margin:g} points)"
            )
        lines.append(
            f"matching - none ({init} init): {points(v['diff'], scale)} points 95% CI {interval(v['ci95'], scale)}, "
            f"p={p_value(v['p'])}{tost}"
        )
    return lines


def baseline_text(summary: dict[str, Any], scale: float) -> str:
    teacher = summary["teacher"]
    baseline = teacher.get("baseline") or {}
    if teacher.get("gain_points") is None:
        return ""
    return (
        f" (trivial baseline, {baseline.get('name')}: {points(baseline.get(summary['metric']), scale, signed=False)}; "
        f"gain {teacher['gain_points']:+.2f} points)"
    )


def description_markdown(summary: dict[str, Any]) -> str:
    """The study run's description in MLflow: the verdict, the cells and where the full report is."""
    scale = summary["points_per_unit"]
    lines = [
        f"## {summary['study']}: does the layer-selection strategy matter?",
        "",
        *[f"- {line.strip()}" for line in _claim_lines(summary)[1:]],
        *[f"- {line}" for line in _fact_lines(summary, scale)],
        "",
        f"| strategy | init | n | mean test {summary['metric']} | 95% CI |",
        "|---|---|---|---|---|",
    ]
    for c in summary["cells"]:
        lines.append(
            f"| {c['strategy']} | {c['init']} | {c['n']} | {points(c['mean'], scale, False)} | {interval(c['ci95'], scale)} |"
        )
    teacher = summary["teacher"].get("metric")
    if teacher is not None:
        lines += ["", f"Teacher: {points(teacher, scale, False)}."]
    lines += [
        "",
        (
            "Full report with figures: artifact `report/report.html` of this run (`report/report.md`, "
            "`report/summary.json`). Compare trials: group the runs by `trial.strategy` and `trial.init`."
        ),
    ]
    return "\n".join(lines)


# --- the plan as text (`raykd.analysis.power` computes it) -------------------------------------------------

_WORDS = {
    "differ": "differs (shown)",
    "differ_within_margin": "differs, but within the margin (shown)",
    "equivalent": "equivalent within the margin (shown)",
    "undecided": "undecided",
    "untestable": "not testable",
    "better": "better (shown)",
    "worse": "worse (shown)",
}


def _needs(seeds: int | None, note: str | None) -> str:
    if seeds is not None:
        return f"needs {seeds} seeds"
    note = note or "not reachable"
    return f"needs {note} seeds" if note.startswith(">") else note


def plan_lines(summary_or_result: dict[str, Any], points_per_unit: float, open_only: bool = False) -> list[str]:
    """Human-readable lines of the ``plan`` (differences in metric points); [] when there is no plan.

    `open_only`: the short form printed at the end of a study -- the non-parametric floors that keep the
    test from reaching alpha at all, one line per undecided comparison, and per init one line with what
    the design could reach (ranges over the comparisons).
    """
    plan = summary_or_result.get("plan")
    if not plan:
        return []
    scale = points_per_unit
    pct = f"{100 * plan['power']:g}% power"
    margin = plan["margin"] * scale
    lines: list[str] = []
    for init, entry in plan["by_init"].items():
        npar = entry.get("nonparametric")
        if npar and npar["min_p"] is not None and (not open_only or not npar["can_reach_alpha"]):
            line = (
                f"{init} init: {npar['test'].split(' ')[0]} with {npar['seeds']} seeds and {npar['strategies']} "
                f"strategies cannot return p below {npar['min_p']:.3g}"
            )
            if not npar["can_reach_alpha"]:
                line += f", so it cannot be significant at alpha {plan['alpha']:g}"
                if npar["seeds_needed"]:
                    line += f" (that takes {npar['seeds_needed']} seeds)"
            lines.append(line)
        comparisons = list((entry.get("vs_reference") or {}).values())
        if entry.get("matching_vs_none"):
            comparisons.append(entry["matching_vs_none"])
        if not open_only and entry.get("proposed_looks"):
            lines.append(_proposal_line(init, entry, pct))
        if open_only:
            open_ = [c for c in comparisons if c["answer"] == "undecided"]
            lines += [_open_line(c, init, scale, margin, pct) for c in open_]
            if open_:
                lines.append(_design_summary(entry, init, scale, pct, plan["reference"]))
            continue
        for c in comparisons:
            label = f"{c['comparison']} ({init} init): {_WORDS.get(c['answer'], c['answer'])}"
            if c["sd"] is None:
                lines.append(f"{label}; fewer than two paired seeds, nothing to plan from")
                continue
            lines.append(_open_line(c, init, scale, margin, pct) if c["answer"] == "undecided" else label)
            design = [
                (
                    f"  with {c['n']} seeds and the observed sd ({points(c['sd'], scale, False)} points) this study could "
                    f"show equivalence only within +-{points(c['equivalence_margin_80'], scale, False)} points ({pct} if the "
                    "true difference were 0)"
                )
            ]
            if c["detectable_difference_80"] is not None:
                level = (
                    "" if c["test_alpha"] == plan["alpha"] else f" at alpha {c['test_alpha']:.3g} (Holm's first step)"
                )
                design.append(
                    f"it could detect differences of {points(c['detectable_difference_80'], scale, False)} points "
                    f"with {pct}{level}"
                )
            lines.append("; ".join(design))
    return lines


def _proposal_line(init: str, entry: dict[str, Any], pct: str) -> str:
    return (
        f"{init} init: at the upper ends of the sds' 95% intervals every comparison shows equivalence with {pct} "
        f"by {entry['seeds_needed_at_sd_upper']} seeds; a sequential plan: sweep.sequential.looks "
        f"{entry['proposed_looks']}"
    )


def _open_line(c: dict[str, Any], init: str, scale: float, margin: float, pct: str) -> str:
    """One undecided comparison: what it would take to decide it."""
    label = f"{c['comparison']} ({init} init): {_WORDS.get(c['answer'], c['answer'])}"
    if c["sd"] is None:
        return f"{label}; fewer than two paired seeds, nothing to plan from"
    parts = [
        label,
        (
            f"detecting the observed {points(c['diff'], scale)} points "
            f"{_needs(c['seeds_to_detect_observed'], c['seeds_to_detect_observed_note'])} ({pct})"
        ),
        f"equivalence within +-{margin:g} points "
        + (
            f"would need {c['seeds_for_equivalence']} seeds ({pct} if the true difference is the observed one)"
            if c["seeds_for_equivalence"] is not None
            else _needs(None, c["seeds_for_equivalence_note"])
        ),
    ]
    if c["equivalence_shown_within"] is not None:
        parts.append(
            f"the data show equivalence only within +-{points(c['equivalence_shown_within'], scale, False)} points"
        )
    return "; ".join(parts)


def _span(values: list[float], scale: float) -> str:
    lo, hi = min(values) * scale, max(values) * scale
    return f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f} to {hi:.2f}"


def _design_summary(entry: dict[str, Any], init: str, scale: float, pct: str, reference: str) -> str:
    """Per init, in one line: the equivalence margins and differences this design reaches with `pct`."""
    parts = []
    for label, group in (
        (f"each strategy vs {reference}", list((entry.get("vs_reference") or {}).values())),
        ("matching vs none", [entry["matching_vs_none"]] if entry.get("matching_vs_none") else []),
    ):
        margins = [c["equivalence_margin_80"] for c in group if c["equivalence_margin_80"] is not None]
        effects = [c["detectable_difference_80"] for c in group if c["detectable_difference_80"] is not None]
        if margins and effects:
            parts.append(
                f"{label}: equivalence only within +-{_span(margins, scale)} points, differences of "
                f"{_span(effects, scale)} points"
            )
    if not parts:
        return f"  {init} init: too few paired seeds to say what this design could reach"
    ns = sorted(
        {
            c["n"]
            for c in list((entry.get("vs_reference") or {}).values()) + [entry.get("matching_vs_none")]
            if c and c["n"] >= 2
        }
    )
    seeds = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
    return f"  {init} init, with {seeds} seeds and the observed sd, this study could show ({pct}) " + "; ".join(parts)


def claim_plan_line(claim: dict[str, Any]) -> str | None:
    """One line of `claim_plan` for the console: which comparison binds and the seeds it takes."""
    plan = claim.get("plan")
    if not plan:
        return None
    head = f"{claim['init']} init, '{claim['statement']}': "
    if plan["seeds"] is None:
        return head + (plan.get("note") or f"more than {MAX_SEEDS} seeds ({plan.get('binding')})")
    upper = plan.get("seeds_sd_upper")
    return (
        head
        + f"~{plan['seeds']} paired seeds for {100 * plan['power']:g}% power at level {plan['level']:.3g}, bound by "
        + f"{plan['binding']}"
        + (
            f"; {upper} if its sd is at the upper end of its 95% interval"
            if upper
            else f"; >{MAX_SEEDS} at the upper end of its sd's 95% interval"
        )
    )
