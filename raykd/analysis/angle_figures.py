"""The angle figures of the report: the mean cosine matrices C_k[i, j] (at init, trained, the random-point null) and
the per-token cosine histograms, per init and stack (`raykd.analysis.figures` draws and writes them)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from raykd.analysis import drawing as draw
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


def _angle_headline(init: str, stack: str, layers: dict[str, Any], keys: list[str]) -> str:
    when = (
        "trained" if any(draw.finite((layers[k].get("trained") or {}).get("acute_share")) for k in keys) else "at_init"
    )
    shares, places = [], []
    for k in keys:
        entry = layers[k].get(when) or {}
        share = entry.get("acute_share")
        if not draw.finite(share):
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
    fig = draw.figure(1.7 + 2.45 * len(keys), 1.35 + 2.5 * len(rows))
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
                if draw.finite(entry.get("n")):
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
    fig.supxlabel(draw.wrap(note, draw.chars(fig, 7.5, bold=False)), fontsize=7.5, color="#333333")
    fig.suptitle(
        draw.wrap(_angle_headline(init, stack, layers, keys), draw.chars(fig, 10.5)), fontsize=10.5, fontweight="bold"
    )
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
    fig = draw.figure(1.1 + 2.9 * ncols, 1.3 + 2.8 * nrows)
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
    for row in grid:
        row[0].set_ylabel("share of token pairs i<j", fontsize=8)
    n_text = (f"n={min(ns)}" if len(ns) == 1 else f"n={min(ns)}\u2013{max(ns)}") if ns else "n=?"
    fig.supxlabel(
        draw.wrap(
            f"Pooled over {n_text} measured students of this init; cos > 0 (right of the black line) is "
            "acute. Null shares: random point / other token. The summary holds the nulls' acute shares, "
            "not their histograms, so no null histogram is drawn.",
            draw.chars(fig, 7.5, bold=False),
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
    fig.suptitle(draw.wrap(head, draw.chars(fig, 10.5)), fontsize=10.5, fontweight="bold")
    return fig
