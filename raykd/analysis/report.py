"""The study report: ``summary.json`` (the contract in docs/outputs.md), ``report.md``, ``report.html`` and figures.

Everything here is pure formatting of what `raykd.analysis.stats` and `raykd.analysis.angles`
computed; numbers in ``summary.json`` are in the metric's own units, the Markdown report shows
differences in metric points (accuracy 0.01 = 1 point; BLEU and chrF are points already).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from raykd.analysis.angles import acute_share_overall
from raykd.analysis.figures import write_figures
from raykd.analysis.text import interval, number, p_value, points
from raykd.analysis.text import level as level_text
from raykd.analysis.text import share as pct
from raykd.analysis.views import baseline_text, compact_verdict, plan_lines, verdict_block
from raykd.tasks.metrics import points_per_unit

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
        "angle_test": {},
        "notes": stats["notes"] + angle_notes,
        "verdict": stats["verdict"],
        "claims": stats["claims"],
        "rules": stats["rules"],
        "plan": stats.get("plan"),
        "room": stats.get("room"),
    }


def learning_curves(trials: list[dict], excluded: set[str]) -> dict[str, dict[str, dict[str, list]]]:
    """Per init and strategy, the validation learning curve (``val_curve.<metric>`` on ``distill.curve.examples``
    validation examples) of its finished trials at the weight the tests used: the steps every trial logged, and the
    mean and sample sd over trials at each (sd None for one trial); an arm whose trials share no step is left out."""
    arms: dict[tuple[str, str], list[dict[int, float]]] = {}
    for t in trials:
        if t.get("status") == "finished" and t.get("curve") and t["trial_id"] not in excluded:
            arms.setdefault((t["init"], t["strategy"]), []).append(dict(t["curve"]))
    out: dict[str, dict[str, dict[str, list]]] = {}
    for (init, strategy), curves in sorted(arms.items()):
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        if not steps:
            continue
        values = [[c[s] for c in curves] for s in steps]
        out.setdefault(init, {})[strategy] = {
            "steps": steps,
            "mean": [statistics.fmean(v) for v in values],
            "sd": [statistics.stdev(v) if len(v) > 1 else None for v in values],
            "n": len(curves),
        }
    return out


def write_summary(summary: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SUMMARY
    path.write_text(json.dumps(summary, indent=2, allow_nan=False))
    return path


# --- the verdict as text ------------------------------------------------------------------------


def report_markdown(summary: dict[str, Any], figures: dict[str, str]) -> str:
    """report.md: the verdict first, then one section per question and its evidence (figures inline)."""
    sections = (
        _verdict_section,
        _setup_section,
        _cells_section,
        _factor_section,
        _pairwise_section,
        _matching_section,
        _claims_section,
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
        f"- teacher test {metric}: {points(teacher.get('metric'), scale, signed=False)}"
        + (
            f" (validation {points(teacher.get(f'validation/{metric}'), scale, signed=False)})"
            if teacher.get(f"validation/{metric}") is not None
            else ""
        )
    )
    if teacher.get("gain_points") is not None:
        out.append(
            f"- teacher against its task's trivial baseline:{baseline_text(summary, scale)}"
            + (f"; **{teacher['weak']}: nothing in this report is a finding**" if teacher.get("weak") else "")
        )
    for init, space in (summary.get("room") or {}).items():
        out.append(
            f"- room the arms had to differ ({init} init): teacher minus {space['against']} = "
            f"{points(space['room'], scale)} points; a finding needs at least {space['min_room'] * scale:g} "
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
            f"| {c['strategy']} | {c['init']} | {c['weight']} | {c['n']} | {points(c['mean'], scale, False)} | "
            f"{points(c['std'], scale, False)} | {interval(c['ci95'], scale)} | {per_seed} |"
        )
    if summary["excluded"]:
        out += ["", "Excluded trials:", ""] + [f"- {e['trial_id']}: {e['reason']}" for e in summary["excluded"]]
    if "metric" in figures:
        out += ["", f"![test {metric} per strategy and init]({figures['metric']})"]
    if "curves" in figures:
        out += [
            "",
            (
                f"Learning curves: validation {metric} on {summary['curves']['examples']} validation "
                "examples over training (`val_curve.*` in MLflow), described, not tested."
            ),
            "",
            f"![validation {metric} over training steps per strategy]({figures['curves']})",
        ]
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
                out.append(
                    f"| {term} | {number(e['F'])} | {e['df']} | {p_value(e['p'])} | {number(e['partial_eta2'], '.3f')} |"
                )
    else:
        out.append("Not testable (see Notes).")
    out += ["", "Non-parametric check per init:", ""]
    for init, r in (test.get("nonparametric") or {}).items():
        out.append(
            f"- {init}: "
            + (
                "not testable"
                if r is None
                else f"{r['test']}: statistic {r['statistic']:.3g}, p={p_value(r['p'])} "
                f"({len(r['strategies'])} strategies x {len(r['seeds'])} seeds)"
            )
        )
    return out + [""]


def _pairwise_section(summary: dict[str, Any], figures: dict[str, str]) -> list[str]:
    scale, pairwise, eq = summary["points_per_unit"], summary["pairwise"], summary["equivalence"]
    level, alpha = level_text(summary), summary.get("alpha", 0.05)
    intro = (
        f"Paired by seed. Difference tests: paired t, Holm-corrected within each init (alpha {alpha}). Equivalence: "
        f"TOST within +-{eq['margin_points']:g} points at alpha {alpha} (equivalent when the {level} CI lies inside "
        "the margin). Not significant is not equivalent: a strategy is only called equivalent when TOST says so. The "
        "reading of each pair is shown (differs / equivalent), both, or undecided."
    )
    columns = ["init", "strategy", "diff", "95% CI", "p (Holm)", f"{level} CI", "TOST p", "reading"]
    out = _table_head(f"Each strategy against {pairwise['reference']}", intro, columns)
    for init, per in pairwise["by_init"].items():
        for strategy, c in per.items():
            e = eq["by_init"].get(init, {}).get(strategy, {})
            out.append(
                f"| {init} | {strategy} | {points(c['diff'], scale)} | {interval(c['ci95'], scale)} | {p_value(c['p_holm'])} | "
                f"{interval(e.get('ci90'), scale)} | {p_value(e.get('p'))} | {e.get('reading', 'not testable')} |"
            )
    if "forest" in figures:
        out += ["", f"![each strategy minus {pairwise['reference']}, with the equivalence margin]({figures['forest']})"]
    return out + [""]


def _table_head(title: str, intro: str, columns: list[str]) -> list[str]:
    """A report section's heading, its one-paragraph introduction and its table's header rows."""
    return [f"## {title}", "", intro, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def _matching_section(summary: dict[str, Any], figures: dict[str, str]) -> list[str]:
    scale, eq, level = summary["points_per_unit"], summary["equivalence"], level_text(summary)
    verdicts = summary["verdict"].get("by_init") or {}
    intro = (
        "Mean over the matching strategies minus `none`, paired by seed: paired t (95% t interval) and TOST within "
        f"+-{eq['margin_points']:g} points ({level} interval)."
    )
    columns = ["init", "diff", "95% CI", "p", f"{level} CI", "TOST p", "answer", "per strategy"]
    out = _table_head("Matching vs no matching", intro, columns)
    for init, v in summary["matching_vs_none"].items():
        per = ", ".join(f"{s} {points(d['diff'], scale)} (p={p_value(d['p'])})" for s, d in v["by_strategy"].items())
        answer = ((verdicts.get(init) or {}).get("matching_beats_none") or {}).get("answer", "")
        out.append(
            f"| {init} | {points(v['diff'], scale)} | {interval(v['ci95'], scale)} | {p_value(v['p'])} | "
            f"{interval(v.get('ci_tost'), scale)} | {p_value(v.get('tost_p'))} | {answer.replace('_', ' ')} | {per} |"
        )
    if "matching_vs_none" in figures:
        out += ["", f"![matching minus none]({figures['matching_vs_none']})"]
    return out + [""]


def _claims_section(summary: dict[str, Any], figures: dict[str, str]) -> list[str]:
    out = [
        "## Claims",
        "",
        (
            "Each claim was fixed before the study ran (statement, margin, level) and is decided by tests of its "
            "margin, never by significance alone (docs/claims.md has the rules and their truth table). A claim that "
            "rests on a difference being smaller than the margin also needs room (teacher minus none, by its lower "
            "confidence bound). Beside each: the same rule on exact sign-flip permutation p-values, and the seeds "
            "whose removal alone would change the verdict."
        ),
        "",
        "| init | claim | verdict | decided by | permutation check | seeds that decide it alone |",
        "|---|---|---|---|---|---|",
    ]
    for c in summary.get("claims") or []:
        out.append(
            f"| {c['init']} | {c['statement']} (+-{c['margin_points']:g}) | {c['verdict']}"
            f"{' (exploratory)' if c['exploratory'] else ''} | {c['decided_by']} | "
            f"{c['permutation_check']['verdict']} | {', '.join(map(str, c['fragile_seeds'])) or '-'} |"
        )
    return out + [""]


def _plan_section(summary: dict[str, Any], figures: dict[str, str]) -> list[str]:
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
                    f"{s} {pct(v)}" for s, v in (whens.get("trained") or {}).get("acute_share_by_strategy", {}).items()
                )
                start, end = whens.get("at_init") or {}, whens.get("trained") or {}
                out.append(
                    f"| {init} | {stack} | {k} | {pct(start.get('acute_share'))} | {_nulls(start)} | "
                    f"{pct(end.get('acute_share'))} | {_nulls(end)} | {per} |"
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
        parts.append(pct(share["mean"]) + (f" [{pct(ci[0])}, {pct(ci[1])}]" if ci else ""))
    return " / ".join(parts)


def write_report(summary: dict[str, Any], folder: Path) -> dict[str, Path]:
    """summary.json, figures and report.md in `folder` (figures of an earlier report removed); returns their paths."""
    for stale in folder.glob("*.png"):
        stale.unlink()
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
