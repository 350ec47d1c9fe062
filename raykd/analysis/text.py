"""Numbers as the report writes them: one place for every view (console, report.md, figures, MLflow)."""

from __future__ import annotations

import math
from typing import Any


def p_value(p: float | None) -> str:
    """'0.0312', '<1e-4' or 'n/a'."""
    return "n/a" if p is None else (f"{p:.3g}" if p >= 1e-4 else "<1e-4")


def p_is(p: float | None, name: str = "p") -> str:
    """'p=0.0312' or 'p<1e-4'."""
    text = p_value(p)
    return f"{name}{text}" if text.startswith("<") else f"{name}={text}"


def points(value: float | None, scale: float, signed: bool = True) -> str:
    """A value in metric units as points: '+1.42' (signed) or '66.49'; 'n/a' when missing."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value * scale:+.2f}" if signed else f"{value * scale:.2f}"


def interval(ci: list[float] | tuple[float, float] | None, scale: float) -> str:
    """'[-1.80, -1.04]' in points, or 'n/a'."""
    return "n/a" if ci is None else f"[{ci[0] * scale:+.2f}, {ci[1] * scale:+.2f}]"


def share(value: float | None) -> str:
    """0.953 -> '95.3%'; 0.99991 -> '99.99%' (not 100%)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{100 * value:.1f}%"
    if text == "100.0%" and value < 1:
        text = f"{100 * value:.2f}%"
        return ">99.99%" if text == "100.00%" else text
    return text


def number(value: float | None, spec: str = ".3g") -> str:
    return "n/a" if value is None else format(value, spec)


def level(summary: dict[str, Any]) -> str:
    """The TOST interval's level as text: '90%' at alpha 0.05, '98%' at 0.01."""
    value = (summary.get("equivalence") or {}).get("ci_level")
    if value is None:
        value = round(1 - 2 * summary.get("alpha", 0.05), 10)
    return f"{100 * value:.10g}%"
