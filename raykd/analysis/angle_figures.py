"""The angle figures of the report: the mean cosine matrices C_k[i, j] (at init, trained, the random-point null) and
the per-token cosine histograms, per init and stack (`raykd.analysis.figures` draws and writes them)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from raykd.analysis import drawing as draw
from raykd.analysis.text import p_is
from raykd.analysis.text import share as share_text


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
    return (share.get("mean") if draw.finite(share.get("mean")) else None), draw.interval(share.get("ci95"), 1.0)


def _null_pair_text(entry: dict[str, Any] | None) -> str:
    shown = [
        share_text(_nullshare_text(entry, kind)[0])
        for kind in ("random_point", "other_token")
        if _nullshare_text(entry, kind)[0] is not None
    ]
    return " / ".join(shown)


def _contrast(layers: dict[str, Any], k: str, when: str) -> np.ndarray | None:
    """C_k[i, j] of student state k at `when` minus the same for its random-point null (None if either is missing)."""
    entry = layers[k].get(when)
    entry = entry if isinstance(entry, dict) else {}
    own, null = _matrix(entry.get("matrix")), _matrix(_null(entry, "random_point").get("matrix"))
    return None if own is None or null is None or own.shape != null.shape else own - null


def _angle_test_text(summary: dict[str, Any], init: str, stack: str) -> str:
    """The test of the trained students' mean cosine against the null (`raykd.analysis.angles.null_contrast`)."""
    t = (((summary.get("angle_test") or {}).get(init) or {}).get(stack) or {}).get("trained") or {}
    if not draw.finite(t.get("mean")):
        return "trained minus its random-point null: no test"
    seeds = f"{len(t.get('seeds') or [])} seeds"
    if not t.get("tested"):
        return f"trained minus its random-point null: {t['mean']:+.3f} over {seeds} (not tested: fewer than 3)"
    lo, hi = t["ci95"]
    return f"trained minus its random-point null: {t['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}] over {seeds}, {p_is(t['p'])}"


def _contrast_panel(ax, diff: np.ndarray, title: str, bound: float, cmap):
    image = ax.imshow(diff, vmin=-bound, vmax=bound, cmap=cmap)
    ax.set_title(f"{title}\nmean {float(np.nanmean(diff)):+.3f}", fontsize=8)
    step = 1 if len(diff) <= 8 else 2 if len(diff) <= 16 else 4
    ax.set_xticks(range(0, len(diff), step))
    ax.set_yticks(range(0, len(diff), step))
    ax.tick_params(labelsize=6.5, length=2)
    return image


def angles_figure(summary: dict[str, Any], init: str, stack: str):
    """Per student state k, at init and trained: C_k[i, j] minus its random-point null, on a colour scale set by the
    data (the raw C_k sit at 0.8-1.0 for students and null alike), with the test across seeds in the title."""
    import matplotlib

    layers = ((summary.get("angles") or {}).get(init) or {}).get(stack) or {}
    if not isinstance(layers, dict):
        return None
    keys = _state_keys(layers)
    rows = [(w, name) for w, name in (("at_init", "at init"), ("trained", "trained")) if any(
        _contrast(layers, k, w) is not None for k in keys
    )]  # fmt: skip
    if not rows:
        return None
    diffs = {(w, k): _contrast(layers, k, w) for w, _ in rows for k in keys}
    drawn = [np.abs(d[np.isfinite(d)]) for d in diffs.values() if d is not None]
    bound = max(max((float(d.max()) for d in drawn if d.size), default=0.0), 1e-3)
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#cccccc")
    fig = draw.figure(1.7 + 2.45 * len(keys), 1.6 + 2.5 * len(rows))
    axes = fig.subplots(len(rows), len(keys), squeeze=False)
    image = None
    for r, (when, name) in enumerate(rows):
        for c, k in enumerate(keys):
            ax, diff = axes[r][c], diffs[(when, k)]
            if diff is None:
                ax.set_axis_off()
                continue
            image = _contrast_panel(ax, diff, f"state {k}, {name}", bound, cmap)
            ax.set_xlabel("teacher layer j" if r == len(rows) - 1 else "", fontsize=7.5)
            ax.set_ylabel(f"{name}\nteacher layer i" if c == 0 else "", fontsize=7.5)
    bar = fig.colorbar(image, ax=axes, shrink=0.8, pad=0.02)
    bar.set_label("mean cos(t_i \u2212 s, t_j \u2212 s) minus its random-point null", fontsize=8)
    note = (
        "Each panel: student state k's mean cosine matrix over the measured students of this init, minus the same for "
        "the student state replaced by a random point of equal norm (red: more acute than the null, blue: less)."
    )
    fig.supxlabel(draw.wrap(note, draw.chars(fig, 7.5, bold=False)), fontsize=7.5, color="#333333")
    head = f"{init} init, {stack}: {_angle_test_text(summary, init, stack)}"
    fig.suptitle(draw.wrap(head, draw.chars(fig, 10.5)), fontsize=10.5, fontweight="bold")
    return fig


def _hist(entry: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(edges, shares) of a measured state's cosine histogram, or None when it has none usable."""
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


HIST_STYLES = {
    "at_init": {"color": "#7f7f7f", "linewidth": 1.0, "label": "at init", "fill": True, "alpha": 0.4},
    "trained": {"color": "#1f77b4", "linewidth": 1.8, "label": "trained"},
}


def _hist_panel(ax, state: dict[str, Any], k: str, shares: dict[str, list], ns: set) -> None:
    """Student state k's histograms at init and trained, its acute shares and their nulls in the title."""
    lines = []
    for when in ("at_init", "trained"):
        entry, h = state.get(when), _hist(state.get(when))
        if h is None:
            continue
        ax.stairs(h[1], h[0], **HIST_STYLES[when])
        if draw.finite(entry.get("acute_share")):
            shares[when].append(entry["acute_share"])
        if draw.finite(entry.get("n")):
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


def hist_figure(summary: dict[str, Any], init: str, stack: str):
    """Per student state: the histogram of per-token cosines over teacher layer pairs i < j, at init and trained."""
    layers = ((summary.get("angles") or {}).get(init) or {}).get(stack) or {}
    if not isinstance(layers, dict):
        return None
    keys = [k for k in _state_keys(layers) if any(_hist(layers[k].get(w)) for w in ("at_init", "trained"))]
    if not keys:
        return None
    ncols = min(len(keys), 4)  # long stacks wrap onto more rows instead of one very wide strip
    nrows = math.ceil(len(keys) / ncols)
    fig = draw.figure(1.1 + 2.9 * ncols, 1.3 + 2.8 * nrows)
    grid = fig.subplots(nrows, ncols, squeeze=False)
    for ax in grid.flat[len(keys) :]:
        ax.set_axis_off()
    shares, ns = {"at_init": [], "trained": []}, set()
    for ax, k in zip(grid.flat, keys):
        _hist_panel(ax, layers[k], k, shares, ns)
    for row in grid:
        row[0].set_ylabel("share of token pairs i<j", fontsize=8)
    n_text = (f"n={min(ns)}" if len(ns) == 1 else f"n={min(ns)}\u2013{max(ns)}") if ns else "n=?"
    note = (
        f"Pooled over {n_text} measured students of this init; cos > 0 (right of the black line) is acute. Null "
        "shares: random point / other token. The summary holds the nulls' acute shares, not their histograms, so no "
        "null histogram is drawn."
    )
    fig.supxlabel(draw.wrap(note, draw.chars(fig, 7.5, bold=False)), fontsize=7.5, color="#333333")
    head = f"{init} init, {stack}: per-token cosines over teacher layer pairs"
    if shares["at_init"] and shares["trained"]:
        head += (
            f"; mean acute share {share_text(float(np.mean(shares['at_init'])))} at init \u2192 "
            f"{share_text(float(np.mean(shares['trained'])))} trained"
        )
    fig.suptitle(draw.wrap(head, draw.chars(fig, 10.5)), fontsize=10.5, fontweight="bold")
    return fig
