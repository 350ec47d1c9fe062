"""English->Spanish Bible verse pairs from Debian's public-domain SWORD texts, shaped like WMT16.

Source texts: King James Version (``engKJV2006eb``, Debian ``sword-text-kjv``) and Reina-Valera
1909 (``spaRV1909eb``, Debian ``sword-text-sparv``), exported with ``diatheke`` (Debian
``diatheke``) and joined on the verse reference. Both translations are in the public domain.

Rows: ``{"id": "Genesis 1:1", "translation": {"en": ..., "es": ...}}``, the shape of
``wmt16`` on the hub, written as JSONL per split and loaded with ``load_dataset("json", ...)``.
Splits are whole chapters assigned by a seeded hash, so no verse context leaks across splits.

Build once: ``python -m raykd.corpora bible --out DIR`` (the ``bible_en_es`` built-in dataset
does it on first use under ``$RAYKD_DATA_DIR``, default ``~/.cache/raykd/data``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from raykd.corpora.registry import BUILTIN_DATASETS
from raykd.lazy import lazy_module

datasets = lazy_module("datasets")

MODULES = {"en": "engKJV2006eb", "es": "spaRV1909eb"}
PACKAGES = "diatheke sword-text-kjv sword-text-sparv"
WHOLE_BIBLE = "Genesis 1:1-Revelation 22:21"
VERSE = re.compile(r"^(?P<ref>\S.*? \d+:\d+): (?P<text>.*)$")
DEFAULT_FRACTIONS = {"validation": 0.02, "test": 0.02}


class MissingSwordTexts(RuntimeError):
    """diatheke or a SWORD module is not installed."""


def export_verses(module: str) -> dict[str, str]:
    """Reference -> verse text of one SWORD module, via ``diatheke``.

    Lines that are not verses (psalm superscriptions, blank lines, the module tag) are dropped:
    the other translation has no counterpart for them.
    """
    if shutil.which("diatheke") is None:
        raise MissingSwordTexts(f"diatheke is not installed; install the Debian packages: apt-get install {PACKAGES}")
    result = subprocess.run(
        ["diatheke", "-b", module, "-f", "plain", "-k", WHOLE_BIBLE], capture_output=True, text=True, check=False
    )
    verses = {}
    for line in result.stdout.splitlines():
        match = VERSE.match(line.strip())
        if match:
            verses[match["ref"]] = " ".join(match["text"].split())
    if not verses:
        raise MissingSwordTexts(
            f"SWORD module {module} gave no verses; install the Debian packages: apt-get install {PACKAGES}"
        )
    return verses


def verse_pairs() -> list[dict]:
    """Aligned {"id", "translation": {"en", "es"}} rows, in canonical order, empty verses dropped."""
    english, spanish = export_verses(MODULES["en"]), export_verses(MODULES["es"])
    return [
        {"id": ref, "translation": {"en": english[ref], "es": spanish[ref]}}
        for ref in english
        if ref in spanish and english[ref] and spanish[ref]
    ]


def split_of(ref: str, seed: int, fractions: dict[str, float]) -> str:
    """Assign a verse's whole chapter to a split by a seeded hash."""
    chapter = ref.rsplit(":", 1)[0]
    u = int(hashlib.sha256(f"{seed}:{chapter}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if u < fractions["test"]:
        return "test"
    if u < fractions["test"] + fractions["validation"]:
        return "validation"
    return "train"


def build(out: str | Path, *, seed: int = 0, fractions: dict[str, float] | None = None) -> dict[str, int]:
    """Write train/validation/test JSONL under `out`; return the counts (also in manifest.json)."""
    fractions = fractions or DEFAULT_FRACTIONS
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {"train": [], "validation": [], "test": []}
    for row in verse_pairs():
        rows[split_of(row["id"], seed, fractions)].append(row)
    for split, items in rows.items():
        tmp = out / f"{split}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items), encoding="utf-8")
        tmp.replace(out / f"{split}.jsonl")
    counts = {split: len(items) for split, items in rows.items()}
    manifest = {
        "modules": MODULES,
        "seed": seed,
        "fractions": fractions,
        "counts": counts,
        "split_unit": "chapter",
        "license": "public domain (KJV, Reina-Valera 1909)",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return counts


def data_dir() -> Path:
    return Path(os.environ.get("RAYKD_DATA_DIR", Path.home() / ".cache" / "raykd" / "data")) / "bible_en_es"


@BUILTIN_DATASETS.register("bible_en_es")
def bible_en_es(seed: int = 0) -> dict[str, datasets.Dataset]:
    """The three splits, built on first use; raises `MissingSwordTexts` naming the packages."""
    directory = data_dir() / f"seed{seed}"
    if not (directory / "manifest.json").is_file():
        build(directory, seed=seed)
    files = {split: str(directory / f"{split}.jsonl") for split in ("train", "validation", "test")}
    return dict(datasets.load_dataset("json", data_files=files))
