"""A table of bad configs: each refused by the entry script with exit code 2 and one message naming the
field, before Ray starts or anything is written (in-process: `main` returns the exit code)."""

import importlib.util
from pathlib import Path

import pytest
import ray

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "studies" / "configs" / "smoke.yaml"


def entry():
    spec = importlib.util.spec_from_file_location("strategy_grid", ROOT / "studies" / "strategy_grid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


BAD = [
    # wrong types
    ("distill.train.lr=fast", "distill.train.lr: Input should be a valid number"),
    ("sweep.seeds=[a]", "sweep.seeds.0: Input should be a valid integer"),
    ("student.depth=two", "student.depth"),
    ("sweep.weights=heavy", "sweep.weights"),
    # unknown keys
    ("distill.trian.lr=1", "distill.trian: unknown key"),
    ("comput.num_workers=2", "comput: unknown key"),
    # out of range
    ("student.depth=0", "student.depth: student depth (depth) must be >= 1"),
    ("student.depth=99", "student.depth (encoder) 99 exceeds the teacher's 4 blocks"),
    ("sweep.weights=[-1]", "hidden-loss weights must be a non-empty list of finite numbers >= 0"),
    ("sweep.seeds=[-1]", "seeds must be a non-empty list of integers >= 0"),
    ("compute.num_workers=0", "compute.num_workers: Input should be greater than or equal to 1"),
    ("distill.loss.temperature=0", "distill.loss.temperature: Input should be greater than 0"),
    ("task.max_length=-5", "task.max_length: Input should be greater than or equal to 8"),
    ("compute.gpus_per_worker=1.5", "gpus_per_worker above 1 must be a whole number"),
    # strategies, tasks, metrics, names
    ("sweep.strategies=[forward,fwd]", "unknown layer strategy 'fwd'"),
    ("sweep.strategies=[]", "sweep.strategies: needs at least one strategy"),
    ("task.type=regression", "unknown task type 'regression'"),
    ("task.metric=bleu", "task.metric: 'bleu' is not one of classification's metrics"),
    ("distill.final_norm=post", "distill.final_norm: Input should be 'as_returned' or 'pre_norm'"),
    ("name=../escape", "name: study name must be"),
    # paths and encodings
    ("teacher={source: path, name: /nonexistent/teacher}", "teacher folder '/nonexistent/teacher' does not exist"),
    (
        "task.data={files: {train: /nonexistent.csv}}",
        "task.data.files.train: local file '/nonexistent.csv' does not exist",
    ),
    (
        f"task.data={{files: {{train: {SMOKE}, encoding: klingon}}}}",
        "task.data.files.encoding: unknown encoding 'klingon'",
    ),
]


@pytest.mark.reliability
@pytest.mark.parametrize("override, message", BAD, ids=[b[0][:40] for b in BAD])
def test_bad_config_exits_2_naming_the_field_before_ray_starts(override, message, tmp_path, capsys):
    main = entry()
    code = main(["--config", str(SMOKE), "--output-dir", str(tmp_path), "--set", override])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err
    assert err.count("error:") == 1
    assert not ray.is_initialized()
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.reliability
def test_missing_config_file_exits_2(tmp_path, capsys):
    assert entry()(["--config", str(tmp_path / "nope.yaml"), "--output-dir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
