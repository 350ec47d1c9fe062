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

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raykd.analysis import drawing as draw
from raykd.analysis.angle_figures import angles_figure, hist_figure
from raykd.analysis.drawing import FigureWarning
from raykd.analysis.text import level as level_text
from raykd.analysis.text import p_is


def _metric_marks(cells, strategies, inits, scale: float, width: float) -> list[dict]:
    """One mark per drawn cell: x position, colour, mean, 95% interval and every seed's value, in points."""
    drawn = []
    for j, init in enumerate(inits):
        for i, strategy in enumerate(strategies):
            cell = next((c for c in cells if c["strategy"] == strategy and c["init"] == init), None)
            if cell is None:
                continue
            values = [float(v) * scale for v in cell.get("values") or [] if draw.finite(v)]
            drawn.append(
                {
                    "x": i + (j - (len(inits) - 1) / 2) * width,
                    "colour": draw.INIT_COLOURS[j % len(draw.INIT_COLOURS)],
                    "mean": cell["mean"] * scale,
                    "ci": draw.interval(cell.get("ci95"), scale),
                    "values": values,
                    "n": cell.get("n", len(values)),
                }
            )
    return drawn


def _metric_limits(drawn: list[dict], lines: list[float], scale: float) -> tuple[float, float]:
    """The y range: every mean, seed and reference line, intervals up to 1.5 spans beyond, room for the n labels."""
    core = [d["mean"] for d in drawn] + [v for d in drawn for v in d["values"]] + lines
    lo, hi = min(core), max(core)
    span = max(hi - lo, 2.0)  # points
    ci_lo = min([d["ci"][0] for d in drawn if d["ci"]] + [lo])
    ci_hi = max([d["ci"][1] for d in drawn if d["ci"]] + [hi])
    bottom, top = max(ci_lo, lo - 1.5 * span), min(ci_hi, hi + 1.5 * span)
    pad = 0.08 * (top - bottom)
    bottom, top = bottom - 1.6 * pad, top + pad  # room for the n labels at the bottom
    if scale == 100.0 and lo >= 0 and hi <= 100:  # a share: no interval end beyond 0 or 100 points
        bottom, top = max(bottom, -1.6 * pad), min(top, 100 + pad)
    return bottom, top


def _metric_mark(ax, d: dict[str, Any], width: float, bottom: float, top: float) -> bool:
    """One cell: its 95% interval with caps, the mean, each seed beside it, n below; whether the interval is cut."""
    clipped = False
    if d["ci"]:
        clipped = draw.segment(
            ax, d["x"], *d["ci"], (bottom, top), horizontal=False, colour=d["colour"], linewidth=1.6, zorder=3
        )
        for end in d["ci"]:
            if bottom < end < top:
                cap = [d["x"] - width * 0.12, d["x"] + width * 0.12]
                ax.plot(cap, [end, end], color=d["colour"], linewidth=1.4, zorder=3)
    ax.plot(
        d["x"], d["mean"], marker="o", markersize=7, color=d["colour"], zorder=4, markeredgecolor="white",
        markeredgewidth=0.8,
    )  # fmt: skip
    k = len(d["values"])
    offsets = [width * 0.3 + (width * 0.12 * (s - (k - 1) / 2) / max(k - 1, 1)) for s in range(k)]
    ax.scatter(
        [d["x"] + o for o in offsets], d["values"], s=14, color=d["colour"], alpha=0.55, edgecolors="none", zorder=5
    )
    ax.annotate(
        f"n={d['n']}", xy=(d["x"], 0), xycoords=("data", "axes fraction"), xytext=(0, 3), textcoords="offset points",
        ha="center", va="bottom", fontsize=7, color=d["colour"],
    )  # fmt: skip
    return clipped


def _metric_legend(ax, inits, teacher: float | None, baseline: float | None, name: str, clipped: bool) -> list:
    """The reference lines (teacher, trivial baseline) and the legend's entries."""
    from matplotlib.lines import Line2D

    colours = draw.INIT_COLOURS
    handles = [
        Line2D([], [], marker="o", color=colours[j % len(colours)], linewidth=1.6, label=f"{init} init: mean, 95% CI")
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
        label = draw.wrap(f"trivial baseline {baseline:.1f} ({name})", 28)
        handles.append(Line2D([], [], color="black", linestyle=":", linewidth=1.2, label=label))
    if clipped:
        handles.append(Line2D([], [], marker="^", color="grey", linestyle="none", label="95% CI runs past the axis"))
    return handles


def metric_figure(summary: dict[str, Any]):
    """Test metric (points) per strategy x init: mean and 95% CI, seeds as dots, teacher and trivial baseline."""
    scale = summary.get("points_per_unit") or 1.0
    cells = [
        c
        for c in summary.get("cells") or []
        if isinstance(c, dict) and draw.finite(c.get("mean")) and None not in (c.get("strategy"), c.get("init"))
    ]
    if not cells:
        return None
    metric = summary.get("metric", "metric")
    strategies = draw.strategy_order([c["strategy"] for c in cells])
    inits = list(dict.fromkeys(c["init"] for c in cells))
    teacher = draw.scaled((summary.get("teacher") or {}).get("metric"), scale)
    baseline_info = (summary.get("teacher") or {}).get("baseline") or {}
    baseline = draw.scaled(baseline_info.get(metric), scale)
    width = 0.72 / len(inits)
    drawn = _metric_marks(cells, strategies, inits, scale, width)
    bottom, top = _metric_limits(drawn, [v for v in (teacher, baseline) if v is not None], scale)

    fig = draw.figure(max(6.0, 2.9 + 1.05 * len(strategies) * max(1.0, len(inits) / 2)), 4.6)
    ax = fig.add_subplot()
    clipped = sum(_metric_mark(ax, d, width, bottom, top) for d in drawn) > 0  # draws every mark
    name = baseline_info.get("name") or "trivial baseline"
    handles = _metric_legend(ax, inits, teacher, baseline, name, clipped)
    ax.set_ylim(bottom, top)
    ax.set_xlim(-0.6, len(strategies) - 0.4)
    ax.set_xticks(range(len(strategies)), strategies)
    ax.set_xlabel("layer-selection strategy")
    ax.set_ylabel(f"test {metric} (points)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.suptitle(draw.wrap(draw.metric_headline(summary, cells), draw.chars(fig, 11)), fontsize=11, fontweight="bold")
    ax.set_title(f"{summary.get('study', '')}: test {metric} per cell, mean and 95% t interval over seeds", fontsize=9)
    return fig


# --- 2. each strategy against the reference --------------------------------------------------------


def _difference_limit(rows: list[dict[str, Any]], margin: float | None) -> float:
    """The symmetric x range of a difference figure: every mean and TOST interval, 95% intervals within reason, and
    at least 2.2 margins."""
    core = [r["diff"] for r in rows] + [v for r in rows if r["tost"] for v in r["tost"]]
    wide = [v for r in rows if r["ci95"] for v in r["ci95"]]
    limit = draw.limits(core, wide, floor=2.2 * margin if margin else 0.0)
    return limit if limit > 0 else 1.0


def _forest_panels(summary: dict[str, Any], scale: float) -> list[tuple[str, list[dict[str, Any]]]]:
    """Per init, one row per strategy: its difference from the reference, TOST and 95% intervals, reading."""
    eq_by = (summary.get("equivalence") or {}).get("by_init") or {}
    pw_by = (summary.get("pairwise") or {}).get("by_init") or {}
    panels = []
    for init in dict.fromkeys([*eq_by, *pw_by]):
        eqs, pws = eq_by.get(init) or {}, pw_by.get(init) or {}
        rows = []
        for strategy in dict.fromkeys([*eqs, *pws]):
            e, c = eqs.get(strategy) or {}, pws.get(strategy) or {}
            diff = draw.scaled(e.get("diff"), scale)
            diff = diff if diff is not None else draw.scaled(c.get("diff"), scale)
            if diff is None:
                continue
            rows.append(
                {
                    "strategy": strategy,
                    "diff": diff,
                    "tost": draw.interval(e.get("ci90"), scale),
                    "ci95": draw.interval(c.get("ci95"), scale),
                    "reading": e.get("reading", "not testable"),
                    "n": e.get("n", c.get("n")),
                    "tost_p": e.get("p"),
                }
            )
        if rows:
            panels.append((init, rows))
    return panels


def _forest_row_label(r: dict[str, Any]) -> str:
    flat = r["tost"] is not None and r["tost"][0] == r["tost"][1]
    detail = [f"n={r['n']}"] if r["n"] is not None else []
    if flat:
        detail.append("same on every seed")
    elif draw.finite(r["tost_p"]):
        detail.append(f"TOST {p_is(r['tost_p'])}")
    return f"{r['reading']}\n{r['diff']:+.2f} pts, " + ", ".join(detail)


def _forest_panel(ax, rows: list[dict[str, Any]], margin: float | None, limit: float) -> bool:
    """One init's rows against the margin band; whether an interval runs past the axis."""
    clipped = False
    if margin:
        ax.axvspan(-margin, margin, color=draw.MARGIN_COLOUR, alpha=0.13, linewidth=0, gid="margin_band", zorder=0)
    ax.axvline(0, color="black", linewidth=0.8, zorder=1)
    for y, r in enumerate(rows):
        colour = draw.READING_COLOURS[r["reading"]]
        for ci, width, alpha in ((r["ci95"], 1.0, 0.7), (r["tost"], 4.0, 0.55)):
            if ci:
                clipped |= draw.segment(
                    ax, y, *ci, (-limit, limit), horizontal=True, colour=colour, linewidth=width, alpha=alpha
                )
        ax.plot(r["diff"], y, marker="D", markersize=6, color=colour, markeredgecolor="white", zorder=4)
    ax.set_yticks(range(len(rows)), [r["strategy"] for r in rows])
    draw.right_labels(
        ax,
        [_forest_row_label(r) for r in rows],
        [draw.READING_COLOURS[r["reading"]] for r in rows],
        ["normal" if r["reading"] == "undecided" else "bold" for r in rows],
        [8] * len(rows),
    )
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)
    return clipped


def forest_figure(summary: dict[str, Any]):
    """Per init: each strategy minus the reference with its TOST and 95% intervals against the margin band."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    scale = summary.get("points_per_unit") or 1.0
    panels = _forest_panels(summary, scale)
    if not panels:
        return None
    reference = (
        (summary.get("equivalence") or {}).get("reference")
        or (summary.get("pairwise") or {}).get("reference")
        or "reference"
    )
    level, margin = level_text(summary), draw.margin_points(summary)
    limit = _difference_limit([r for _, rows in panels for r in rows], margin)
    heights = [1.0 + 0.45 * len(rows) for _, rows in panels]
    fig = draw.figure(8.8, 1.4 + sum(heights))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    clipped = False
    for ax, (init, rows) in zip(axes, panels):
        clipped |= _forest_panel(ax, rows, margin, limit)
        ax.set_title(
            draw.answer_title(init, draw.answer(summary, init, "strategies_differ"), 95), fontsize=9, loc="left"
        )
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
        handles.append(Patch(color=draw.MARGIN_COLOUR, alpha=0.25, label=f"equivalence margin \u00b1{margin:g} pts"))
    if clipped:
        handles.append(Line2D([], [], marker=">", color="grey", linestyle="none", label="CI runs past the axis"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8, frameon=False)
    title = (
        f"Does the strategy matter? Each strategy minus {reference}: a row reads equivalent when its {level} CI lies "
        "inside the margin (that pair alone, unadjusted; the claim over every pair is the verdict's)"
    )
    fig.suptitle(draw.wrap(title, draw.chars(fig, 11)), fontsize=11, fontweight="bold")
    return fig


# --- 3. matching vs none ----------------------------------------------------------------------------


def _matching_panels(summary: dict[str, Any], scale: float) -> list[tuple[str, list[dict], float | None, dict]]:
    """Per init: the mean of the matching strategies minus none, then each strategy; the room and its entry."""
    panels = []
    for init, v in (summary.get("matching_vs_none") or {}).items():
        if not isinstance(v, dict) or not draw.finite(v.get("diff")):
            continue
        main = {"label": "all matching (mean)", "tost": draw.interval(v.get("ci_tost"), scale), "main": True}
        rows = [{**main, "diff": v["diff"] * scale, "ci95": draw.interval(v.get("ci95"), scale), "n": v.get("n")}]
        rows[0].update(p=v.get("p"), tost_p=v.get("tost_p"))
        for strategy, d in (v.get("by_strategy") or {}).items():
            if isinstance(d, dict) and draw.finite(d.get("diff")):
                ci95 = draw.interval(d.get("ci95"), scale)
                rows.append(
                    {"label": strategy, "diff": d["diff"] * scale, "ci95": ci95, "tost": None, "n": d.get("n")}
                    | {"p": d.get("p"), "tost_p": None, "main": False}
                )
        space = (summary.get("room") or {}).get(init) or {}
        room = draw.scaled(space.get("room"), scale) if isinstance(space, dict) else None
        panels.append((init, rows, room, space))
    return panels


def _matching_detail(r: dict[str, Any]) -> str:
    detail = [f"{r['diff']:+.2f} pts"] + ([f"n={r['n']}"] if r["n"] is not None else [])
    detail.append(p_is(r["p"]) if draw.finite(r["p"]) else "no test")
    if r["main"] and draw.finite(r["tost_p"]):
        detail.append(f"TOST {p_is(r['tost_p'])}")
    return ", ".join(detail)


def _matching_panel(ax, rows: list[dict], colour: str, limit: float) -> bool:
    """One init's rows: the mean (bold, with its TOST interval) and each strategy; whether an interval is cut."""
    clipped = False
    for y, r in enumerate(rows):
        strong = r["main"]
        if r["ci95"]:
            clipped |= draw.segment(
                ax, y, *r["ci95"], (-limit, limit), horizontal=True, colour=colour,
                linewidth=1.2 if strong else 0.8, alpha=0.8 if strong else 0.45,
            )  # fmt: skip
        if r["tost"]:
            clipped |= draw.segment(
                ax, y, *r["tost"], (-limit, limit), horizontal=True, colour=colour, linewidth=4.0, alpha=0.55
            )
        ax.plot(
            r["diff"], y, marker="o", markersize=8 if strong else 4.5, color=colour, markeredgecolor="white",
            alpha=1.0 if strong else 0.7, zorder=4,
        )  # fmt: skip
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows])
    draw.right_labels(
        ax,
        [_matching_detail(r) for r in rows],
        [colour if r["main"] else "#444444" for r in rows],
        ["bold" if r["main"] else "normal" for r in rows],
        [8 if r["main"] else 7.5 for r in rows],
    )
    for tick, r in zip(ax.get_yticklabels(), rows):
        tick.set_fontweight("bold" if r["main"] else "normal")
        tick.set_fontsize(9 if r["main"] else 8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)
    return clipped


def _matching_title(summary: dict[str, Any], init: str, room: float | None, space: dict, scale: float) -> str:
    title = draw.answer_title(init, draw.answer(summary, init, "matching_beats_none"), 95)
    if room is None:
        return title
    needed = draw.scaled(space.get("min_room"), scale)
    title += f"\nroom: teacher minus {space.get('against', draw.NONE)} = {room:+.2f} pts"
    if needed is not None:
        title += f" ({'enough' if space.get('enough') else 'not enough'}: a finding needs \u2265 {needed:g})"
    return title


def _matching_legend(level: str, margin: float | None, room_drawn: bool, clipped: bool) -> list:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Line2D(
            [], [], marker="o", color="grey", linestyle="none", markersize=8, label="mean of the matching strategies"
        ),
        Line2D([], [], marker="o", color="grey", linestyle="none", markersize=4.5, alpha=0.7, label="one strategy"),
        Line2D([], [], color="grey", linewidth=4, alpha=0.55, label=f"{level} CI (decides TOST)"),
        Line2D([], [], color="grey", linewidth=1.2, label="95% CI (paired t)"),
    ]
    if margin:
        handles.append(Patch(color=draw.MARGIN_COLOUR, alpha=0.25, label=f"equivalence margin \u00b1{margin:g} pts"))
    if room_drawn:
        room = "room: teacher minus none (all the gap)"
        handles.append(Line2D([], [], color="black", linestyle="-.", linewidth=1, label=room))
    if clipped:
        handles.append(Line2D([], [], marker=">", color="grey", linestyle="none", label="CI runs past the axis"))
    return handles


def matching_figure(summary: dict[str, Any]):
    """Per init: the mean of the matching strategies minus none (95% and TOST intervals), and each strategy."""
    scale = summary.get("points_per_unit") or 1.0
    margin = draw.margin_points(summary)
    panels = _matching_panels(summary, scale)
    if not panels:
        return None
    limit = _difference_limit([r for _, rows, _, _ in panels for r in rows], margin)
    heights = [1.2 + 0.32 * len(rows) for _, rows, _, _ in panels]
    fig = draw.figure(8.8, 1.5 + sum(heights))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    clipped = room_drawn = False
    for k, (ax, (init, rows, room, space)) in enumerate(zip(axes, panels)):
        if margin:
            ax.axvspan(-margin, margin, color=draw.MARGIN_COLOUR, alpha=0.13, linewidth=0, gid="margin_band", zorder=0)
        ax.axvline(0, color="black", linewidth=0.8, zorder=1)
        if room is not None and -limit < room < limit:
            ax.axvline(room, color="black", linestyle="-.", linewidth=1.0, zorder=1)
            room_drawn = True
        clipped |= _matching_panel(ax, rows, draw.INIT_COLOURS[k % len(draw.INIT_COLOURS)], limit)
        ax.set_title(_matching_title(summary, init, room, space, scale), fontsize=9, loc="left")
    axes[-1].set_xlim(-limit, limit)
    axes[-1].set_xlabel(
        f"matching minus none: test {summary.get('metric', 'metric')} difference in points, "
        "paired by seed (+ = matching better)"
    )
    handles = _matching_legend(level_text(summary), margin, room_drawn, clipped)
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle("Does matching beat no matching? Matching minus none, per init", fontsize=11, fontweight="bold")
    return fig


# --- 4./5. angles -----------------------------------------------------------------------------------


# --- writing --------------------------------------------------------------------------------------


def curves_figure(summary: dict[str, Any]):
    """The validation learning curves: per init, one line per strategy (mean over its seeds) and a band of +-1 sd."""
    curves = summary.get("curves") or {}
    by_init = {i: arms for i, arms in (curves.get("by_init") or {}).items() if arms}
    if not by_init:
        return None
    scale, metric = summary.get("points_per_unit") or 1.0, summary.get("metric", "metric")
    fig = draw.figure(4.2 * len(by_init) + 1.8, 4.4)
    axes = fig.subplots(1, len(by_init), sharey=True, squeeze=False)[0]
    strategies = draw.strategy_order([s for arms in by_init.values() for s in arms])
    colours = {s: draw.STRATEGY_COLOURS[k % len(draw.STRATEGY_COLOURS)] for k, s in enumerate(strategies)}
    for ax, (init, arms) in zip(axes, by_init.items(), strict=True):
        for strategy in (s for s in strategies if s in arms):
            arm, colour = arms[strategy], colours[strategy]
            mean = [m * scale for m in arm["mean"]]
            ax.plot(arm["steps"], mean, color=colour, lw=1.6, label=f"{strategy} (n={arm['n']})")
            if all(sd is not None for sd in arm["sd"]):
                sd = [v * scale for v in arm["sd"]]
                low, high = (
                    [m - v for m, v in zip(mean, sd, strict=True)],
                    [m + v for m, v in zip(mean, sd, strict=True)],
                )
                ax.fill_between(arm["steps"], low, high, color=colour, alpha=0.15, lw=0)
        ax.set_title(f"{init} init", fontsize=9)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7, frameon=False)  # this init's arms, each with its seeds
    axes[0].set_ylabel(f"validation {metric} (points)")
    title = (
        f"Validation {metric} over training, on {curves.get('examples')} validation examples: "
        "mean over seeds per strategy, band +-1 sd"
    )
    fig.suptitle(draw.wrap(title, draw.chars(fig, 11)), fontsize=11, fontweight="bold")
    return fig


def _build(key: str, build: Callable[[], Any]):
    try:
        return build()
    except Exception as exc:  # noqa: BLE001 - a malformed part of a summary must not cost the whole report
        warnings.warn(f"figure {key!r} not drawn: {type(exc).__name__}: {exc}", FigureWarning, stacklevel=3)
        return None


def figures(summary: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """Every figure this summary supports: ``(key, file name, matplotlib Figure)``, none saved."""
    out = []
    for key, build in (
        ("metric", metric_figure),
        ("curves", curves_figure),
        ("forest", forest_figure),
        ("matching_vs_none", matching_figure),
    ):
        fig = _build(key, lambda build=build: build(summary))
        if fig is not None:
            out.append((key, draw.FILES[key], fig))
    for init, stacks in (summary.get("angles") or {}).items():
        for stack in (stacks or {}) if isinstance(stacks, dict) else ():
            for prefix, build in (("angles", angles_figure), ("hist", hist_figure)):
                key = f"{prefix}_{init}_{stack}"
                fig = _build(key, lambda build=build, init=init, stack=stack: build(summary, init, stack))
                if fig is not None:
                    out.append((key, draw.file_name(key), fig))
    return out


def write_figures(summary: dict[str, Any], folder: Path) -> dict[str, str]:
    """PNG figures next to the report; returns {key: file name} (keys: metric, curves, forest, matching_vs_none,
    angles_<init>_<stack>, hist_<init>_<stack>; only those the summary has the data for)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for key, name, fig in figures(summary):
        try:
            fig.savefig(folder / name, dpi=draw.DPI, facecolor="white")
            written[key] = name
        except Exception as exc:  # noqa: BLE001 - one figure that cannot be saved must not cost the report
            warnings.warn(f"figure {key!r} not saved: {type(exc).__name__}: {exc}", FigureWarning, stacklevel=2)
    return written
