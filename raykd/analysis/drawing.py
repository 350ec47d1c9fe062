"""What the report's figures share: colours, words, scaling to metric points, titles that fit, segments and labels."""

from __future__ import annotations

import math
import re
import textwrap
from typing import Any

from raykd.analysis.text import p_is

DPI = 115
FILES = {
    "metric": "metric_by_cell.png",
    "curves": "learning_curves.png",
    "forest": "forest.png",
    "matching_vs_none": "matching_vs_none.png",
}
NONE = "none"

INIT_COLOURS = ("#1f77b4", "#d95f02", "#7570b3", "#1b9e77", "#e7298a", "#66a61e")
STRATEGY_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")
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


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def scaled(x: Any, scale: float) -> float | None:
    return float(x) * scale if finite(x) else None


def interval(ci: Any, scale: float) -> tuple[float, float] | None:
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or not all(finite(v) for v in ci):
        return None
    lo, hi = sorted(float(v) * scale for v in ci)
    return lo, hi


def margin_points(summary: dict[str, Any]) -> float | None:
    eq = summary.get("equivalence") or {}
    if finite(eq.get("margin_points")):
        return float(eq["margin_points"])
    return scaled(eq.get("margin"), summary.get("points_per_unit") or 1.0)


def wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def chars(fig, fontsize: float, bold: bool = True) -> int:
    """About how many characters of text at `fontsize` fit across the figure."""
    return max(30, int(fig.get_figwidth() * 72 / (fontsize * (0.62 if bold else 0.55))))


def figure(width: float, height: float):
    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    # laid out at the dpi it is saved at (text widths do not scale exactly with dpi), with a little slack
    return Figure(figsize=(width, height), dpi=DPI, layout=ConstrainedLayoutEngine(w_pad=0.06, h_pad=0.06))


def file_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key) + ".png"


def answer(summary: dict[str, Any], init: str, question: str) -> dict[str, Any] | None:
    answer = (((summary.get("verdict") or {}).get("by_init") or {}).get(init) or {}).get(question)
    return answer if isinstance(answer, dict) and answer.get("answer") else None


def answer_title(init: str, answer: dict[str, Any] | None, width: int) -> str:
    if answer is None:
        return f"{init} init"
    words = ANSWER_WORDS.get(answer["answer"], answer["answer"].replace("_", " "))
    text = f"{init} init: {words}"
    if answer.get("claim"):
        text += f" \u2192 claim '{answer['claim']}' {answer.get('claim_status', '?')}"
    if answer.get("no_room"):
        text += " (too little room: not a finding)"
    return wrap(text, width)


def limits(core: list[float], wide: list[float], floor: float, stretch: float = 2.5) -> float:
    """Half-width of a symmetric axis around 0: all of `core` (at least `floor`), and `wide` (e.g. 95% intervals)
    up to `stretch` times that; wider intervals are clipped and marked."""
    base = 1.15 * max([abs(v) for v in core] + [floor])
    if not wide:
        return base
    return max(base, min(1.06 * max(abs(v) for v in wide), stretch * base))


def segment(
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


def right_labels(ax, labels: list[str], colours: list[str], weights: list[str], sizes: list[float]) -> None:
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


def strategy_order(names: list[str]) -> list[str]:
    names = list(dict.fromkeys(names))
    return [n for n in names if n != NONE] + [n for n in names if n == NONE]


def metric_headline(summary: dict[str, Any], cells: list[dict[str, Any]]) -> str:
    ns = sorted({int(c["n"]) for c in cells if finite(c.get("n"))})
    if not ns:
        n_text = ""
    elif len(ns) == 1:
        n_text = f"n={ns[0]} seed{'s' if ns[0] != 1 else ''} per cell"
    else:
        n_text = f"n={ns[0]}\u2013{ns[-1]} seeds per cell"
    effect = (summary.get("strategy_test") or {}).get("strategy") or {}
    alpha = summary.get("alpha") or 0.05
    if finite(effect.get("p")):
        f = effect.get("F")
        f = "" if not finite(f) else f"F={f:.0f}, " if f >= 100 else f"F={f:.3g}, "
        head = "Strategy is a significant factor" if effect["p"] < alpha else "No significant strategy effect"
        head += f" (ANOVA {f}{p_is(effect['p'])})"
    elif len({c["strategy"] for c in cells if c["strategy"] != NONE}) < 2:
        head = "One matching strategy: no strategy effect to test"
    else:
        head = "Strategy effect not testable"
    return head + (f"; {n_text}" if n_text else "")
