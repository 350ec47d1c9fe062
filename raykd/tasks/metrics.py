"""Metrics through `evaluate`: the hub module when it loads, raykd's local module otherwise.

Offline (HF_HUB_OFFLINE / HF_EVALUATE_OFFLINE / HF_DATASETS_OFFLINE set) the local module is used
directly; online the hub name is tried first and the local module is the fallback. The local
modules (`metric_modules/<name>/<name>.py`) wrap sklearn, sacrebleu and rouge-score and return the
same keys as the hub's: accuracy -> accuracy, f1 -> f1, sacrebleu -> score, chrf -> score,
exact_match -> exact_match (0..1), rouge -> rouge1, rouge2, rougeL, rougeLsum (F-measures, 0..1; the
mean over examples, where the hub's default is a bootstrap estimate of it).
"""

from __future__ import annotations

import logging
from pathlib import Path

from raykd.devices import hub_offline
from raykd.lazy import lazy_module

evaluate = lazy_module("evaluate")  # importing it loads transformers' pipelines: ~3-10 s

log = logging.getLogger(__name__)
LOCAL_MODULES = Path(__file__).resolve().parent / "metric_modules"
# Metric points per unit of the metric as stored: accuracy/F1/exact match and ROUGE F-measures are fractions (0..1,
# as `evaluate` returns them; 100 is also the default for unlisted metrics); BLEU and chrF are already in points.
POINTS_PER_UNIT = {"sacrebleu": 1.0, "chrf": 1.0, "rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0, "rougeLsum": 100.0}


def points_per_unit(metric: str) -> float:
    """How many reported points one unit of `metric` (as `evaluate` returns it) is."""
    return POINTS_PER_UNIT.get(metric, 100.0)


def local_metric_names() -> list[str]:
    return sorted(p.name for p in LOCAL_MODULES.iterdir() if (p / f"{p.name}.py").is_file())


def load_metric(name: str):
    """An `evaluate` module by hub name, falling back to raykd's local module of the same name."""
    local = LOCAL_MODULES / name
    if not hub_offline():
        try:
            return evaluate.load(name)
        except Exception as error:  # noqa: BLE001 - no network, hub down, renamed module...
            log.info("metric %r did not load from the hub (%s); using raykd's local module", name, error)
    if (local / f"{name}.py").is_file():
        return evaluate.load(str(local))
    raise ValueError(
        f"metric {name!r} did not load from the hub and raykd ships no local module for it; "
        f"local modules: {', '.join(local_metric_names())}"
    )


def corpus_text_metric_info(description: str, citation: str):
    """The `evaluate.MetricInfo` of a corpus-level text metric (sacreBLEU, chrF): string predictions, each with a
    list of references."""
    import datasets

    features = datasets.Features(
        {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
    )
    return evaluate.MetricInfo(description=description, citation=citation, features=features)


def references_by_position(references: list[list[str]], name: str) -> list[list[str]]:
    """sacrebleu's layout of references: one list per reference position (every prediction needs as many)."""
    counts = {len(r) for r in references}
    if len(counts) != 1:
        raise ValueError(f"{name} needs the same number of references for every prediction")
    return [[refs[i] for refs in references] for i in range(counts.pop())]
