"""PNG figures for the study report, drawn from the study summary (the contents of ``summary.json``).

Each figure states its finding in the title, shows numbers in metric points (``points_per_unit``) and
says how many seeds / students stand behind each point:

- ``metric`` (``metric_by_cell.png``): test metric per strategy x init, mean and 95% CI, every seed, the
  teacher and the trivial baseline;
- ``forest`` (``forest.png``): each strategy minus the reference per init, the TOST interval and the 95%
  interval against the equivalence margin, each row read as equivalent / differs / undecided;
- ``matching_vs_none`` (``matching_vs_none.png``): matching minus ``none`` per init, overall and per
  strategy, with the room the arms had;
- ``angles_<init>_<stack>``: the mean cosine matrices C_k[i, j] at init, trained and for the random-point null;
- ``hist_<init>_<stack>``: the per-token cosine histograms at init and trained.

Whatever a partial study lacks (one strategy, one seed, no ``none`` arm, no angles) is simply not drawn.
A figure that fails on malformed input is skipped with a `FigureWarning` rather than failing the report.
Matplotlib is used without pyplot (``matplotlib.figure.Figure`` renders PNGs through Agg), so nothing here
touches the global backend or pyplot's figure registry.
"""

from __future__ import annotations

import math
import re
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from raykd.analysis.text import level as level_text
from raykd.analysis.text import p_is
from raykd.analysis.text import share as share_text

DPI = 115
FILES = {"metric": "metric_by_cell.png", "forest": "forest.png", "matching_vs_none": "matching_vs_none.png"}
NONE = "none"

INIT_COLOURS = ("#1f77b4", "#d95f02", "#7570b3", "#1b9e77", "#e7298a", "#66a61e")
READING_COLOURS = {
    "equivalent": "#1b7837",
    "differs": "#b2182b",
    "differs, within margin": "#d95f02",
    "undecided": "#555555",
    "not testable": "#999999",
}
MARGIN_COLOUR = "#1b7837"
ANSWER_WORDS = {
    "differ": "the strategies differ",
    "equivalent": "equivalent within the margin",
    "undecided": "undecided",
    "untestable": "not testable",
    "better": "matching beats none",
    "worse": "matching is worse than none",
}


class FigureWarning(RuntimeWarning):
    """A figure could not be drawn from this summary; the report goes on without it."""


# --- small helpers ----------------------------------------------------------------------------------


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _scaled(x: Any, scale: float) -> float | None:
    return float(x) * scale if _finite(x) else None


def _interval(ci: Any, scale: float) -> tuple[float, float] | None:
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or not all(_finite(v) for v in ci):
        return None
    lo, hi = sorted(float(v) * scale for v in ci)
    return lo, hi


def _margin_points(summary: dict[str, Any]) -> float | None:
    eq = summary.get("equivalence") or {}
    if _finite(eq.get("margin_points")):
        return float(eq["margin_points"])
    return _scaled(eq.get("margin"), summary.get("points_per_unit") or 1.0)


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def _chars(fig, fontsize: float, bold: bool = True) -> int:
    """About how many characters of text at `fontsize` fit across the figure."""
    return max(30, int(fig.get_figwidth() * 72 / (fontsize * (0.62 if bold else 0.55))))


def _figure(width: float, height: float):
    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    # laid out at the dpi it is saved at (text widths do not scale exactly with dpi), with a little slack
    return Figure(figsize=(width, height), dpi=DPI, layout=ConstrainedLayoutEngine(w_pad=0.06, h_pad=0.06))


def _file_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key) + ".png"


def _answer(summary: dict[str, Any], init: str, question: str) -> dict[str, Any] | None:
    answer = (((summary.get("verdict") or {}).get("by_init") or {}).get(init) or {}).get(question)
    return answer if isinstance(answer, dict) and answer.get("answer") else None


def _answer_title(init: str, answer: dict[str, Any] | None, width: int) -> str:
    if answer is None:
        return f"{init} init"
    words = ANSWER_WORDS.get(answer["answer"], answer["answer"].replace("_", " "))
    text = f"{init} init: {words}"
    if answer.get("claim"):
        text += f" \u2192 claim '{answer['claim']}' {answer.get('claim_status', '?')}"
    if answer.get("no_room"):
        text += " (too little room: not a finding)"
    return _wrap(text, width)


def _limits(core: list[float], wide: list[float], floor: float, stretch: float = 2.5) -> float:
    """Half-width of a symmetric axis around 0: all of `core` (at least `floor`), and `wide` (e.g. 95% intervals)
    up to `stretch` times that; wider intervals are clipped and marked."""
    base = 1.15 * max([abs(v) for v in core] + [floor])
    if not wide:
        return base
    return max(base, min(1.06 * max(abs(v) for v in wide), stretch * base))


def _segment(
    ax,
    pos: float,
    lo: float,
    hi: float,
    bounds: tuple[float, float],
    *,
    horizontal: bool,
    colour: str,
    linewidth: float,
    alpha: float = 1.0,
    zorder: float = 2,
) -> bool:
    """An interval drawn from lo to hi, clipped to bounds with an arrowhead where it runs past them."""
    a, b = bounds
    inset = 0.012 * (b - a)
    clo, chi = max(lo, a + inset), min(hi, b - inset)
    if chi < clo:  # wholly outside: nothing sensible to draw
        return True
    xs, ys = ([clo, chi], [pos, pos]) if horizontal else ([pos, pos], [clo, chi])
    ax.plot(xs, ys, color=colour, linewidth=linewidth, alpha=alpha, solid_capstyle="butt", zorder=zorder)
    clipped = False
    for value, limit, marker in ((lo, clo, "<" if horizontal else "v"), (hi, chi, ">" if horizontal else "^")):
        if value != limit:
            clipped = True
            point = (limit, pos) if horizontal else (pos, limit)
            ax.plot(
                *point,
                marker=marker,
                color=colour,
                markersize=4 + linewidth,
                alpha=alpha,
                zorder=zorder,
                linestyle="none",
            )
    return clipped


def _right_labels(ax, labels: list[str], colours: list[str], weights: list[str], sizes: list[float]) -> None:
    """Per-row text on the right of a row plot, as tick labels of a secondary axis (so the layout makes room)."""
    right = ax.secondary_yaxis("right")
    right.set_yticks(range(len(labels)), labels)
    right.tick_params(length=0, pad=6)
    for tick, colour, weight, size in zip(right.get_yticklabels(), colours, weights, sizes):
        tick.set_color(colour)
        tick.set_fontweight(weight)
        tick.set_fontsize(size)
        tick.set_horizontalalignment("left")


# --- 1. the metric per cell -------------------------------------------------------------------------


def _strategy_order(names: list[str]) -> list[str]:
    names = list(dict.fromkeys(names))
    return [n for n in names if n != NONE] + [n for n in names if n == NONE]


def _metric_headline(summary: dict[str, Any], cells: list[dict[str, Any]]) -> str:
    ns = sorted({int(c["n"]) for c in cells if _finite(c.get("n"))})
    if not ns:
        n_text = ""
    elif len(ns) == 1:
        n_text = f"n={ns[0]} seed{'s' if ns[0] != 1 else ''} per cell"
    else:
        n_text = f"n={ns[0]}\u2013{ns[-1]} seeds per cell"
    effect = (summary.get("strategy_test") or {}).get("strategy") or {}
    alpha = summary.get("alpha") or 0.05
    if _finite(effect.get("p")):
        f = effect.get("F")
        f = "" if not _finite(f) else f"F={f:.0f}, " if f >= 100 else f"F={f:.3g}, "
        head = "Strategy is a significant factor" if effect["p"] < alpha else "No significant strategy effect"
        head += f" (ANOVA {f}{p_is(effect['p'])})"
    elif len({c["strategy"] for c in cells if c["strategy"] != NONE}) < 2:
        head = "One matching strategy: no strategy effect to test"
    else:
        head = "Strategy effect not testable"
    return head + (f"; {n_text}" if n_text else "")


def metric_figure(summary: dict[str, Any]):
    # long: one figure, drawn top to bottom; cut into helpers it would scatter one picture
    """Test metric (points) per strategy x init: mean and 95% CI, seeds as dots, teacher and trivial baseline."""
    from matplotlib.lines import Line2D

    scale = summary.get("points_per_unit") or 1.0
    cells = [
        c
        for c in summary.get("cells") or []
        if isinstance(c, dict)
        and _finite(c.get("mean"))
        and c.get("strategy") is not None
        and c.get("init") is not None
    ]
    if not cells:
        return None
    metric = summary.get("metric", "metric")
    strategies = _strategy_order([c["strategy"] for c in cells])
    inits = list(dict.fromkeys(c["init"] for c in cells))
    teacher = _scaled((summary.get("teacher") or {}).get("metric"), scale)
    baseline_info = (summary.get("teacher") or {}).get("baseline") or {}
    baseline = _scaled(baseline_info.get(metric), scale)

    width = 0.72 / len(inits)
    drawn = []
    for j, init in enumerate(inits):
        for i, strategy in enumerate(strategies):
            cell = next((c for c in cells if c["strategy"] == strategy and c["init"] == init), None)
            if cell is None:
                continue
            values = [float(v) * scale for v in cell.get("values") or [] if _finite(v)]
            drawn.append(
                {
                    "x": i + (j - (len(inits) - 1) / 2) * width,
                    "colour": INIT_COLOURS[j % len(INIT_COLOURS)],
                    "mean": cell["mean"] * scale,
                    "ci": _interval(cell.get("ci95"), scale),
                    "values": values,
                    "n": cell.get("n", len(values)),
                    "init": init,
                }
            )

    core = [d["mean"] for d in drawn] + [v for d in drawn for v in d["values"]]
    core += [v for v in (teacher, baseline) if v is not None]
    lo, hi = min(core), max(core)
    span = max(hi - lo, 2.0)  # points
    ci_lo = min([d["ci"][0] for d in drawn if d["ci"]] + [lo])
    ci_hi = max([d["ci"][1] for d in drawn if d["ci"]] + [hi])
    bottom, top = max(ci_lo, lo - 1.5 * span), min(ci_hi, hi + 1.5 * span)
    pad = 0.08 * (top - bottom)
    bottom, top = bottom - 1.6 * pad, top + pad  # room for the n labels at the bottom
    if scale == 100.0 and lo >= 0 and hi <= 100:  # a share: no interval end beyond 0 or 100 points
        bottom, top = max(bottom, -1.6 * pad), min(top, 100 + pad)

    fig = _figure(max(6.0, 2.9 + 1.05 * len(strategies) * max(1.0, len(inits) / 2)), 4.6)
    ax = fig.add_subplot()
    clipped = False
    for d in drawn:
        if d["ci"]:
            clipped |= _segment(
                ax,
                d["x"],
                d["ci"][0],
                d["ci"][1],
                (bottom, top),
                horizontal=False,
                colour=d["colour"],
                linewidth=1.6,
                zorder=3,
            )
            for end in d["ci"]:
                if bottom < end < top:
                    ax.plot(
                        [d["x"] - width * 0.12, d["x"] + width * 0.12],
                        [end, end],
                        color=d["colour"],
                        linewidth=1.4,
                        zorder=3,
                    )
        ax.plot(
            d["x"],
            d["mean"],
            marker="o",
            markersize=7,
            color=d["colour"],
            zorder=4,
            markeredgecolor="white",
            markeredgewidth=0.8,
        )
        k = len(d["values"])
        offsets = [width * 0.3 + (width * 0.12 * (s - (k - 1) / 2) / max(k - 1, 1)) for s in range(k)]
        ax.scatter(
            [d["x"] + o for o in offsets], d["values"], s=14, color=d["colour"], alpha=0.55, edgecolors="none", zorder=5
        )
        ax.annotate(
            f"n={d['n']}",
            xy=(d["x"], 0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
            color=d["colour"],
        )
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            color=INIT_COLOURS[j % len(INIT_COLOURS)],
            linewidth=1.6,
            label=f"{init} init: mean, 95% CI",
        )
        for j, init in enumerate(inits)
    ]
    handles.append(
        Line2D([], [], marker="o", color="grey", alpha=0.55, linestyle="none", markersize=4, label="one seed")
    )
    if teacher is not None:
        ax.axhline(teacher, color="black", linestyle="--", linewidth=1)
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1, label=f"teacher {teacher:.1f}"))
    if baseline is not None:
        ax.axhline(baseline, color="black", linestyle=":", linewidth=1.2)
        name = baseline_info.get("name") or "trivial baseline"
        handles.append(
            Line2D(
                [],
                [],
                color="black",
                linestyle=":",
                linewidth=1.2,
                label=_wrap(f"trivial baseline {baseline:.1f} ({name})", 28),
            )
        )
    if clipped:
        handles.append(Line2D([], [], marker="^", color="grey", linestyle="none", label="95% CI runs past the axis"))
    ax.set_ylim(bottom, top)
    ax.set_xlim(-0.6, len(strategies) - 0.4)
    ax.set_xticks(range(len(strategies)), strategies)
    ax.set_xlabel("layer-selection strategy")
    ax.set_ylabel(f"test {metric} (points)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.suptitle(_wrap(_metric_headline(summary, cells), _chars(fig, 11)), fontsize=11, fontweight="bold")
    ax.set_title(f"{summary.get('study', '')}: test {metric} per cell, mean and 95% t interval over seeds", fontsize=9)
    return fig


# --- 2. each strategy against the reference --------------------------------------------------------


def forest_figure(summary: dict[str, Any]):
    # long: one figure, drawn top to bottom; cut into helpers it would scatter one picture
    """Per init: each strategy minus the reference with its TOST and 95% intervals against the margin band."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    scale = summary.get("points_per_unit") or 1.0
    equivalence = summary.get("equivalence") or {}
    pairwise = summary.get("pairwise") or {}
    eq_by, pw_by = equivalence.get("by_init") or {}, pairwise.get("by_init") or {}
    reference = equivalence.get("reference") or pairwise.get("reference") or "reference"
    level = level_text(summary)
    margin = _margin_points(summary)
    panels = []
    for init in dict.fromkeys([*eq_by, *pw_by]):
        eqs, pws = eq_by.get(init) or {}, pw_by.get(init) or {}
        rows = []
        for strategy in dict.fromkeys([*eqs, *pws]):
            e, c = eqs.get(strategy) or {}, pws.get(strategy) or {}
            diff = _scaled(e.get("diff"), scale)
            diff = diff if diff is not None else _scaled(c.get("diff"), scale)
            if diff is None:
                continue
            rows.append(
                {
                    "strategy": strategy,
                    "diff": diff,
                    "tost": _interval(e.get("ci90"), scale),
                    "ci95": _interval(c.get("ci95"), scale),
                    "reading": e.get("reading", "not testable"),
                    "n": e.get("n", c.get("n")),
                    "p_holm": c.get("p_holm"),
                    "tost_p": e.get("p"),
                }
            )
        if rows:
            panels.append((init, rows))
    if not panels:
        return None

    rows_all = [r for _, rows in panels for r in rows]
    core = [r["diff"] for r in rows_all] + [v for r in rows_all if r["tost"] for v in r["tost"]]
    wide = [v for r in rows_all if r["ci95"] for v in r["ci95"]]
    limit = _limits(core, wide, floor=2.2 * margin if margin else 0.0)
    if limit <= 0:
        limit = 1.0
    heights = [1.0 + 0.45 * len(rows) for _, rows in panels]
    fig = _figure(8.8, 1.4 + sum(heights))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    clipped = False
    for ax, (init, rows) in zip(axes, panels):
        if margin:
            ax.axvspan(-margin, margin, color=MARGIN_COLOUR, alpha=0.13, linewidth=0, gid="margin_band", zorder=0)
        ax.axvline(0, color="black", linewidth=0.8, zorder=1)
        for y, r in enumerate(rows):
            colour = READING_COLOURS[r["reading"]]
            if r["ci95"]:
                clipped |= _segment(
                    ax, y, *r["ci95"], (-limit, limit), horizontal=True, colour=colour, linewidth=1.0, alpha=0.7
                )
            if r["tost"]:
                clipped |= _segment(
                    ax, y, *r["tost"], (-limit, limit), horizontal=True, colour=colour, linewidth=4.0, alpha=0.55
                )
            ax.plot(r["diff"], y, marker="D", markersize=6, color=colour, markeredgecolor="white", zorder=4)
            flat = r["tost"] is not None and r["tost"][0] == r["tost"][1]
            detail = [f"n={r['n']}"] if r["n"] is not None else []
            if flat:
                detail.append("same on every seed")
            elif _finite(r["tost_p"]):
                detail.append(f"TOST {p_is(r['tost_p'])}")
            r["label"] = f"{r['reading']}\n{r['diff']:+.2f} pts, " + ", ".join(detail)
        ax.set_yticks(range(len(rows)), [r["strategy"] for r in rows])
        _right_labels(
            ax,
            [r["label"] for r in rows],
            [READING_COLOURS[r["reading"]] for r in rows],
            ["normal" if r["reading"] == "undecided" else "bold" for r in rows],
            [8] * len(rows),
        )
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(_answer_title(init, _answer(summary, init, "strategies_differ"), 95), fontsize=9, loc="left")
    axes[-1].set_xlim(-limit, limit)
    axes[-1].set_xlabel(
        f"strategy minus {reference}: test {summary.get('metric', 'metric')} difference in points, "
        f"paired by seed (+ = better than {reference})"
    )
    handles = [
        Line2D([], [], marker="D", color="grey", linestyle="none", label="mean paired difference"),
        Line2D([], [], color="grey", linewidth=4, alpha=0.55, label=f"{level} CI (decides TOST)"),
        Line2D([], [], color="grey", linewidth=1, label="95% CI (paired t)"),
    ]
    if margin:
        handles.append(Patch(color=MARGIN_COLOUR, alpha=0.25, label=f"equivalence margin \u00b1{margin:g} pts"))
    if clipped:
        handles.append(Line2D([], [], marker=">", color="grey", linestyle="none", label="CI runs past the axis"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8, frameon=False)
    fig.suptitle(
        _wrap(
            f"Does the strategy matter? Each strategy minus {reference}: equivalent only when the "
            f"{level} CI lies inside the margin",
            _chars(fig, 11),
        ),
        fontsize=11,
        fontweight="bold",
    )
    return fig


# --- 3. matching vs none ----------------------------------------------------------------------------


def matching_figure(summary: dict[str, Any]):
    # long: one figure, drawn top to bottom; cut into helpers it would scatter one picture
    """Per init: the mean of the matching strategies minus none (95% and TOST intervals), and each strategy."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    scale = summary.get("points_per_unit") or 1.0
    margin = _margin_points(summary)
    level = level_text(summary)
    panels = []
    for init, v in (summary.get("matching_vs_none") or {}).items():
        if not isinstance(v, dict) or not _finite(v.get("diff")):
            continue
        rows = [
            {
                "label": "all matching (mean)",
                "diff": v["diff"] * scale,
                "ci95": _interval(v.get("ci95"), scale),
                "tost": _interval(v.get("ci_tost"), scale),
                "n": v.get("n"),
                "p": v.get("p"),
                "tost_p": v.get("tost_p"),
                "main": True,
            }
        ]
        for strategy, d in (v.get("by_strategy") or {}).items():
            if isinstance(d, dict) and _finite(d.get("diff")):
                rows.append(
                    {
                        "label": strategy,
                        "diff": d["diff"] * scale,
                        "ci95": _interval(d.get("ci95"), scale),
                        "tost": None,
                        "n": d.get("n"),
                        "p": d.get("p"),
                        "tost_p": None,
                        "main": False,
                    }
                )
        space = (summary.get("room") or {}).get(init) or {}
        room = _scaled(space.get("room"), scale) if isinstance(space, dict) else None
        panels.append((init, rows, room, space))
    if not panels:
        return None

    rows_all = [r for _, rows, _, _ in panels for r in rows]
    core = [r["diff"] for r in rows_all] + [v for r in rows_all if r["tost"] for v in r["tost"]]
    wide = [v for r in rows_all if r["ci95"] for v in r["ci95"]]
    limit = _limits(core, wide, floor=2.2 * margin if margin else 0.0)
    if limit <= 0:
        limit = 1.0
    heights = [1.2 + 0.32 * len(rows) for _, rows, _, _ in panels]
    fig = _figure(8.8, 1.5 + sum(heights))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    clipped = room_drawn = False
    for ax, (init, rows, room, space) in zip(axes, panels):
        colour = INIT_COLOURS[[i for i, *_ in panels].index(init) % len(INIT_COLOURS)]
        if margin:
            ax.axvspan(-margin, margin, color=MARGIN_COLOUR, alpha=0.13, linewidth=0, gid="margin_band", zorder=0)
        ax.axvline(0, color="black", linewidth=0.8, zorder=1)
        if room is not None and -limit < room < limit:
            ax.axvline(room, color="black", linestyle="-.", linewidth=1.0, zorder=1)
            room_drawn = True
        for y, r in enumerate(rows):
            if r["ci95"]:
                clipped |= _segment(
                    ax,
                    y,
                    *r["ci95"],
                    (-limit, limit),
                    horizontal=True,
                    colour=colour,
                    linewidth=1.2 if r["main"] else 0.8,
                    alpha=0.8 if r["main"] else 0.45,
                )
            if r["tost"]:
                clipped |= _segment(
                    ax, y, *r["tost"], (-limit, limit), horizontal=True, colour=colour, linewidth=4.0, alpha=0.55
                )
            ax.plot(
                r["diff"],
                y,
                marker="o",
                markersize=8 if r["main"] else 4.5,
                color=colour,
                markeredgecolor="white",
                alpha=1.0 if r["main"] else 0.7,
                zorder=4,
            )
            detail = [f"{r['diff']:+.2f} pts"] + ([f"n={r['n']}"] if r["n"] is not None else [])
            detail.append(p_is(r["p"]) if _finite(r["p"]) else "no test")
            if r["main"] and _finite(r["tost_p"]):
                detail.append(f"TOST {p_is(r['tost_p'])}")
            r["detail"] = ", ".join(detail)
        ax.set_yticks(range(len(rows)), [r["label"] for r in rows])
        _right_labels(
            ax,
            [r["detail"] for r in rows],
            [colour if r["main"] else "#444444" for r in rows],
            ["bold" if r["main"] else "normal" for r in rows],
            [8 if r["main"] else 7.5 for r in rows],
        )
        for tick, r in zip(ax.get_yticklabels(), rows):
            tick.set_fontweight("bold" if r["main"] else "normal")
            tick.set_fontsize(9 if r["main"] else 8)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.grid(axis="x", alpha=0.3)
        title = _answer_title(init, _answer(summary, init, "matching_beats_none"), 95)
        if room is not None:
            against = space.get("against", NONE)
            needed = _scaled(space.get("min_room"), scale)
            title += f"\nroom: teacher minus {against} = {room:+.2f} pts" + (
                f" ({'enough' if space.get('enough') else 'not enough'}: a finding needs \u2265 {needed:g})"
                if needed is not None
                else ""
            )
        ax.set_title(title, fontsize=9, loc="left")
    axes[-1].set_xlim(-limit, limit)
    axes[-1].set_xlabel(
        f"matching minus none: test {summary.get('metric', 'metric')} difference in points, "
        "paired by seed (+ = matching better)"
    )
    handles = [
        Line2D(
            [], [], marker="o", color="grey", linestyle="none", markersize=8, label="mean of the matching strategies"
        ),
        Line2D([], [], marker="o", color="grey", linestyle="none", markersize=4.5, alpha=0.7, label="one strategy"),
        Line2D([], [], color="grey", linewidth=4, alpha=0.55, label=f"{level} CI (decides TOST)"),
        Line2D([], [], color="grey", linewidth=1.2, label="95% CI (paired t)"),
    ]
    if margin:
        handles.append(Patch(color=MARGIN_COLOUR, alpha=0.25, label=f"equivalence margin \u00b1{margin:g} pts"))
    if room_drawn:
        handles.append(
            Line2D([], [], color="black", linestyle="-.", linewidth=1, label="room: teacher minus none (all the gap)")
        )
    if clipped:
        handles.append(Line2D([], [], marker=">", color="grey", linestyle="none", label="CI runs past the axis"))
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle("Does matching beat no matching? Matching minus none, per init", fontsize=11, fontweight="bold")
    return fig


# --- 4./5. angles -----------------------------------------------------------------------------------


def _state_keys(layers: dict[str, Any]) -> list[str]:
    keys = [
        k
        for k, v in layers.items()
        if isinstance(v, dict) and any(isinstance(v.get(w), dict) for w in ("at_init", "trained"))
    ]

    def order(k: str):
        return (0, int(k), k) if str(k).lstrip("-").isdigit() else (1, 0, str(k))

    return sorted(keys, key=order)


def _matrix(values: Any) -> np.ndarray | None:
    if not isinstance(values, list) or not values:
        return None
    try:
        m = np.array([[np.nan if v is None else float(v) for v in row] for row in values], dtype=float)
    except (TypeError, ValueError):
        return None
    return m if m.ndim == 2 and m.size and np.isfinite(m).any() else None


def _null(entry: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    return ((entry or {}).get("null") or {}).get(kind) or {}


def _nullshare_text(entry: dict[str, Any] | None, kind: str) -> tuple[float | None, tuple[float, float] | None]:
    share = _null(entry, kind).get("acute_share") or {}
    return (share.get("mean") if _finite(share.get("mean")) else None), _interval(share.get("ci95"), 1.0)


def _angle_headline(init: str, stack: str, layers: dict[str, Any], keys: list[str]) -> str:
    when = "trained" if any(_finite((layers[k].get("trained") or {}).get("acute_share")) for k in keys) else "at_init"
    shares, places = [], []
    for k in keys:
        entry = layers[k].get(when) or {}
        share = entry.get("acute_share")
        if not _finite(share):
            continue
        shares.append(share)
        mean, ci = _nullshare_text(entry, "random_point")
        if mean is None:
            continue
        lo, hi = ci or (mean, mean)
        places.append("below" if share < lo - 1e-9 else "above" if share > hi + 1e-9 else "at")
    if not shares:
        return f"{init} init, {stack}: no acute share measured"
    label = "trained" if when == "trained" else "at init"
    low, high = share_text(min(shares)), share_text(max(shares))
    text = f"{init} init, {stack}: acute share {label} " + (
        f"{low} in all {len(shares)} student states"
        if low == high
        else f"{low}\u2013{high} over {len(shares)} student states"
    )
    if places:
        nulls = [m for k in keys if (m := _nullshare_text(layers[k].get(when), "random_point")[0]) is not None]
        null_text = (
            share_text(min(nulls))
            if share_text(min(nulls)) == share_text(max(nulls))
            else f"{share_text(min(nulls))}\u2013{share_text(max(nulls))}"
        )
        words = {"below": "below it", "at": "within its 95% interval", "above": "above it"}
        counts = [f"{words[place]} in {places.count(place)}/{len(places)}" for place in words if places.count(place)]
        text += f"; random-point null {null_text}: " + ", ".join(counts)
    return text


def _null_pair_text(entry: dict[str, Any] | None) -> str:
    shown = [
        share_text(_nullshare_text(entry, kind)[0])
        for kind in ("random_point", "other_token")
        if _nullshare_text(entry, kind)[0] is not None
    ]
    return " / ".join(shown)


def angles_figure(summary: dict[str, Any], init: str, stack: str):
    # long: one figure, drawn top to bottom; cut into helpers it would scatter one picture
    """C_k[i, j] per student state k: at init, trained and the random-point null (trained), colour -1..1."""
    layers = ((summary.get("angles") or {}).get(init) or {}).get(stack) or {}
    if not isinstance(layers, dict):
        return None
    keys = _state_keys(layers)
    rows = []
    for when, name in (("at_init", "at init"), ("trained", "trained")):
        if any(_matrix((layers[k].get(when) or {}).get("matrix")) is not None for k in keys):
            rows.append((when, name))
    if any(_matrix(_null(layers[k].get("trained"), "random_point").get("matrix")) is not None for k in keys):
        rows.append(("null", "random-point null"))
    if not rows or not keys:
        return None
    import matplotlib

    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#cccccc")
    fig = _figure(1.7 + 2.45 * len(keys), 1.35 + 2.5 * len(rows))
    axes = fig.subplots(len(rows), len(keys), squeeze=False)
    image, missing, ns = None, False, set()
    for r, (when, name) in enumerate(rows):
        for c, k in enumerate(keys):
            ax = axes[r][c]
            entry = layers[k].get("trained" if when == "null" else when)
            entry = entry if isinstance(entry, dict) else None
            source = _null(entry, "random_point") if when == "null" else (entry or {})
            matrix = _matrix(source.get("matrix"))
            if matrix is None:
                ax.set_axis_off()
                ax.text(
                    0.5,
                    0.5,
                    f"state {k}, {name}:\nnot measured",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="grey",
                    transform=ax.transAxes,
                )
                continue
            missing |= bool(np.isnan(matrix).any())
            image = ax.imshow(matrix, vmin=-1, vmax=1, cmap=cmap)
            if when == "null":
                share, _ = _nullshare_text(entry, "random_point")
                n = (_null(entry, "random_point").get("acute_share") or {}).get("n")
                title = f"state {k}, random point\nacute {share_text(share)}" + (f" (n={n})" if n else "")
            else:
                if _finite(entry.get("n")):
                    ns.add(int(entry["n"]))
                nulls = _null_pair_text(entry)
                title = f"state {k}, {name}\nacute {share_text(entry.get('acute_share'))}" + (
                    f" | null {nulls}" if nulls else ""
                )
            ax.set_title(title, fontsize=8)
            size = len(matrix)
            step = 1 if size <= 8 else 2 if size <= 16 else 4
            ax.set_xticks(range(0, size, step))
            ax.set_yticks(range(0, size, step))
            ax.tick_params(labelsize=6.5, length=2)
            if r == len(rows) - 1:
                ax.set_xlabel("teacher layer j", fontsize=7.5)
            if c == 0:
                ax.set_ylabel(f"{name}\nteacher layer i", fontsize=7.5)
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.8, ticks=[-1, -0.5, 0, 0.5, 1], pad=0.02)
        bar.set_label("mean cos(t_i \u2212 s, t_j \u2212 s)   (red: acute, blue: obtuse)", fontsize=8)
    n_text = (f"n={min(ns)}" if len(ns) == 1 else f"n={min(ns)}\u2013{max(ns)}") if ns else "n=?"
    note = (
        f"Each panel: mean over {n_text} measured students of this init. 'acute' = share of token-level teacher "
        "layer pairs i<j with cos > 0; 'null' = the same share with the student state replaced by a random point "
        "of equal norm / by another token's state."
    )
    if missing:
        note += " Grey: no direction (t_i equals s)."
    fig.supxlabel(_wrap(note, _chars(fig, 7.5, bold=False)), fontsize=7.5, color="#333333")
    fig.suptitle(_wrap(_angle_headline(init, stack, layers, keys), _chars(fig, 10.5)), fontsize=10.5, fontweight="bold")
    return fig


def hist_figure(summary: dict[str, Any], init: str, stack: str):
    # long: one figure, drawn top to bottom; cut into helpers it would scatter one picture
    """Per student state: the histogram of per-token cosines over teacher layer pairs i < j, at init and trained."""
    layers = ((summary.get("angles") or {}).get(init) or {}).get(stack) or {}
    if not isinstance(layers, dict):
        return None

    def hist(entry: Any) -> tuple[np.ndarray, np.ndarray] | None:
        h = (entry or {}).get("histogram") if isinstance(entry, dict) else None
        if not isinstance(h, dict):
            return None
        try:
            edges, counts = np.asarray(h.get("edges"), dtype=float), np.asarray(h.get("counts"), dtype=float)
        except (TypeError, ValueError):
            return None
        if edges.ndim != 1 or counts.ndim != 1 or len(edges) != len(counts) + 1 or not counts.sum() > 0:
            return None
        return edges, counts / counts.sum()

    keys = [k for k in _state_keys(layers) if any(hist(layers[k].get(w)) for w in ("at_init", "trained"))]
    if not keys:
        return None
    styles = {
        "at_init": dict(color="#7f7f7f", linewidth=1.0, label="at init", fill=True, alpha=0.4),
        "trained": dict(color="#1f77b4", linewidth=1.8, label="trained"),
    }
    ncols = min(len(keys), 4)  # long stacks wrap onto more rows instead of one very wide strip
    nrows = math.ceil(len(keys) / ncols)
    fig = _figure(1.1 + 2.9 * ncols, 1.3 + 2.8 * nrows)
    grid = fig.subplots(nrows, ncols, squeeze=False)
    for ax in grid.flat[len(keys) :]:
        ax.set_axis_off()
    axes = list(grid.flat[: len(keys)])
    shares, ns = {"at_init": [], "trained": []}, set()
    for ax, k in zip(axes, keys):
        lines = []
        for when in ("at_init", "trained"):
            entry = layers[k].get(when)
            h = hist(entry)
            if h is None:
                continue
            ax.stairs(h[1], h[0], **styles[when])
            if _finite(entry.get("acute_share")):
                shares[when].append(entry["acute_share"])
            if _finite(entry.get("n")):
                ns.add(int(entry["n"]))
            nulls = _null_pair_text(entry)
            lines.append(
                f"{'at init (grey)' if when == 'at_init' else 'trained (blue)'}: acute "
                f"{share_text(entry.get('acute_share'))}" + (f" (null {nulls})" if nulls else "")
            )
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlim(-1, 1)
        ax.set_ylim(0, None)
        ax.margins(y=0.08)
        ax.set_xticks([-1, -0.5, 0, 0.5, 1])
        ax.tick_params(labelsize=7)
        ax.set_title(f"student state {k}\n" + "\n".join(lines), fontsize=8)
        ax.set_xlabel("cos(t_i \u2212 s, t_j \u2212 s)", fontsize=8)
        ax.grid(alpha=0.25)
    for row in grid:
        row[0].set_ylabel("share of token pairs i<j", fontsize=8)
    n_text = (f"n={min(ns)}" if len(ns) == 1 else f"n={min(ns)}\u2013{max(ns)}") if ns else "n=?"
    fig.supxlabel(
        _wrap(
            f"Pooled over {n_text} measured students of this init; cos > 0 (right of the black line) is "
            "acute. Null shares: random point / other token. The summary holds the nulls' acute shares, "
            "not their histograms, so no null histogram is drawn.",
            _chars(fig, 7.5, bold=False),
        ),
        fontsize=7.5,
        color="#333333",
    )
    head = f"{init} init, {stack}: per-token cosines over teacher layer pairs"
    if shares["at_init"] and shares["trained"]:
        head += (
            f"; mean acute share {share_text(float(np.mean(shares['at_init'])))} at init \u2192 "
            f"{share_text(float(np.mean(shares['trained'])))} trained"
        )
    fig.suptitle(_wrap(head, _chars(fig, 10.5)), fontsize=10.5, fontweight="bold")
    return fig


# --- writing --------------------------------------------------------------------------------------


def _build(key: str, build: Callable[[], Any]):
    try:
        return build()
    except Exception as exc:  # noqa: BLE001 - a malformed part of a summary must not cost the whole report
        warnings.warn(f"figure {key!r} not drawn: {type(exc).__name__}: {exc}", FigureWarning, stacklevel=3)
        return None


def figures(summary: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """Every figure this summary supports: ``(key, file name, matplotlib Figure)``, none saved."""
    out = []
    for key, build in (("metric", metric_figure), ("forest", forest_figure), ("matching_vs_none", matching_figure)):
        fig = _build(key, lambda build=build: build(summary))
        if fig is not None:
            out.append((key, FILES[key], fig))
    for init, stacks in (summary.get("angles") or {}).items():
        for stack in (stacks or {}) if isinstance(stacks, dict) else ():
            for prefix, build in (("angles", angles_figure), ("hist", hist_figure)):
                key = f"{prefix}_{init}_{stack}"
                fig = _build(key, lambda build=build, init=init, stack=stack: build(summary, init, stack))
                if fig is not None:
                    out.append((key, _file_name(key), fig))
    return out


def write_figures(summary: dict[str, Any], folder: Path) -> dict[str, str]:
    """PNG figures next to the report; returns {key: file name} (keys: metric, forest, matching_vs_none,
    angles_<init>_<stack>, hist_<init>_<stack>; only those the summary has the data for)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for key, name, fig in figures(summary):
        try:
            fig.savefig(folder / name, dpi=DPI, facecolor="white")
            written[key] = name
        except Exception as exc:  # noqa: BLE001 - one figure that cannot be saved must not cost the report
            warnings.warn(f"figure {key!r} not saved: {type(exc).__name__}: {exc}", FigureWarning, stacklevel=2)
    return written
