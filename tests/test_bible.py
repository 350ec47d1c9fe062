import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from raykd.corpora import bible

needs_sword = pytest.mark.skipif(
    shutil.which("diatheke") is None,
    reason="needs Debian's diatheke sword-text-kjv sword-text-sparv (.ci/run installs them)",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("bible")
    return out, bible.build(out, seed=0)


@needs_sword
def test_build_aligns_every_verse_into_chapter_disjoint_splits(built):
    out, counts = built
    assert sum(counts.values()) == 31084  # every verse both texts have
    rows = {
        s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text(encoding="utf-8").splitlines()] for s in counts
    }
    assert {s: len(r) for s, r in rows.items()} == counts
    first = rows["train"][0] if rows["train"][0]["id"] == "Genesis 1:1" else None
    assert first == {
        "id": "Genesis 1:1",
        "translation": {
            "en": "In the beginning God created the heaven and the earth.",
            "es": "EN el principio crió Dios los cielos y la tierra.",
        },
    }
    chapters = {s: {r["id"].rsplit(":", 1)[0] for r in items} for s, items in rows.items()}
    assert not (chapters["train"] & chapters["test"] or chapters["train"] & chapters["validation"])
    assert 0.01 < counts["test"] / 31084 < 0.03 and 0.01 < counts["validation"] / 31084 < 0.03
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == counts and manifest["split_unit"] == "chapter"
    psalm = next(r for r in rows["train"] + rows["validation"] + rows["test"] if r["id"] == "Psalms 3:1")
    assert "Absalom" not in psalm["translation"]["en"]  # superscriptions are not verse text


@needs_sword
def test_build_is_deterministic_and_fixtures_come_from_it(built, tmp_path):
    out, counts = built
    assert bible.build(tmp_path, seed=0) == counts
    assert (tmp_path / "test.jsonl").read_bytes() == (out / "test.jsonl").read_bytes()
    fixture = os.path.join(os.path.dirname(__file__), "fixtures", "bible_en_es", "test.jsonl")
    built_rows = {json.loads(line)["id"]: json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()}
    for line in Path(fixture).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        assert built_rows[row["id"]] == row


def test_cli_without_diatheke_names_the_packages(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # an empty PATH: no diatheke
    result = subprocess.run(
        [sys.executable, "-m", "raykd.corpora", "bible", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 2
    assert "apt-get install diatheke sword-text-kjv sword-text-sparv" in result.stderr
