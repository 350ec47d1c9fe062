"""Each paper config's code path on tiny from-config models of its family (no downloads).

Everything in the config is kept (task type and options, column mapping, loss settings, student
depth and copy rule, sweep strategies) except the teacher, replaced by a width-32 model of the same
family and the paper's depth, and the hub data, replaced by local files of the same shape.
"""

import json
from pathlib import Path

import pytest
import torch
import yaml

from raykd.families import family_of
from raykd.losses import LossConfig, attach_projections, projection_keys
from raykd.strategies import layer_maps
from raykd.student import build_student, student_metadata
from raykd.train.loop import distill
from tests.studies import BIBLE, hellaswag_like, load_everything, tiny_version

CONFIGS = Path(__file__).parent.parent / "studies" / "configs"


def verses(split="train", n=120):
    lines = Path(BIBLE[split]).read_text(encoding="utf-8").splitlines()[:n]
    return [json.loads(line) for line in lines]


def local_files(tmp_path, rows_of_split):
    files = {}
    for split in ("train", "validation", "test"):
        files[split] = str(tmp_path / f"{split}.jsonl")
        Path(files[split]).write_text("".join(json.dumps(r) + "\n" for r in rows_of_split(split)))
    return files


def glue_pairs(first, second, labels):
    return lambda split: [
        {first: v["translation"]["en"], second: v["translation"]["es"], "label": i % labels}
        for i, v in enumerate(verses(split, 60))
    ]


CASES = {
    "bert_base_to_3l_mnli": ("bert", lambda tmp: {"files": local_files(tmp, glue_pairs("premise", "hypothesis", 3))}),
    "bert_base_to_3l_qqp": ("bert", lambda tmp: {"files": local_files(tmp, glue_pairs("question1", "question2", 2))}),
    "bert_base_to_3l_qnli": ("bert", lambda tmp: {"files": local_files(tmp, glue_pairs("question", "sentence", 2))}),
    "bert_base_to_3l_sst2": (
        "bert",
        lambda tmp: {
            "files": local_files(
                tmp,
                lambda s: [{"sentence": v["translation"]["en"], "label": i % 2} for i, v in enumerate(verses(s, 60))],
            )
        },
    ),
    "bart_large_to_3l_dart": (
        "bart",
        lambda tmp: {
            "files": local_files(
                tmp,
                lambda s: [
                    {"tripleset": [[v["id"], "says", v["translation"]["en"][:40]]], "target": v["translation"]["en"]}
                    for v in verses(s, 60)
                ],
            )
        },
    ),
    "t5_base_to_3l_wmt16_en_ro": (
        "t5",
        lambda tmp: {"files": BIBLE, "max_examples": {"train": 120, "validation": 8, "test": 8}},
    ),
    "qwen3_8b_to_9l_hellaswag": ("qwen3", lambda tmp: {"files": hellaswag_like(tmp)}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_paper_config_code_path_on_tiny_family_models(name, tmp_path):
    model_type, data = CASES[name]
    config_data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    tiny = tiny_version(config_data, model_type, data(tmp_path))
    if model_type == "t5":
        tiny["task"]["target_lang"] = "es"  # Romanian -> the Spanish fixture
    tiny["task"]["max_new_tokens"] = 4
    tiny["task"]["num_beams"] = 1
    config, task, splits, teacher, tok = load_everything(tiny)
    family = family_of(teacher)
    assert family.name == model_type
    assert family.depths(teacher.config) == config_data["teacher"]["depths"]  # the paper's depth
    match_embeddings = config.distill.match_embeddings
    if match_embeddings is None:
        match_embeddings = family.kind != "decoder"
    loss = LossConfig(hidden=3.0, **config.distill.loss.model_dump())
    loader = task.dataloader(splits["train"], tok, batch_size=8, shuffle=True)
    for init in config.sweep.inits:
        student = build_student(teacher, depth=config.student.depth, init=init, copy_rule=config.student.copy_rule)
        student_depths = family.depths(student.config)
        if init == "teacher":
            expected = {"matched": [4, 8, 12], "spread": [1, 7, 12]}.get(config.student.copy_rule)
            if model_type == "qwen3":
                expected = [1, 5, 10, 14, 19, 23, 27, 32, 36]
            assert all(v == expected for v in student_metadata(student)["copied_layers"].values())
        for strategy in config.sweep.strategies:
            maps = layer_maps(
                strategy, student_depths, family.depths(teacher.config), seed=0, match_embeddings=match_embeddings
            )
            if strategy == "forward" and model_type == "qwen3":
                assert maps["decoder"] == [(k, 4 * k) for k in range(1, 10)]
            attach_projections(student, projection_keys(maps), family.width(teacher.config))
            result = distill(
                teacher,
                student,
                loader,
                torch.optim.AdamW(student.parameters(), lr=1e-3),
                layer_maps=maps,
                loss=loss,
                final_norm=config.distill.final_norm,
                max_steps=1,
            )
            assert result.status == "finished"
            assert (result.history[0]["hidden"] > 0) == (strategy != "none")
        metrics = task.evaluate(student, tok, splits["test"].select(range(4)))
        assert task.metric in metrics


@pytest.mark.parametrize(
    "name", ["smoke", "default", "minilm6_to_3l_tweets_long", "bible_t5_to_3l_en_es", "bible_qwen3_to_2l_en_es"]
)
def test_offline_configs_run_their_code_path_as_written(name):
    """The offline configs with their own teachers (real MiniLM for default), smaller data only."""
    data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    if data["task"]["data"].get("builtin") == "tweets":
        data["task"]["data"]["split"].update(validation=16, test=16)
        data["task"]["data"]["max_examples"] = {"train": 64}
    else:  # the Bible corpus -> its committed slice, through the same files path
        data["task"]["data"] = {"files": BIBLE, "max_examples": {"train": 64, "validation": 4, "test": 4}}
        data["teacher"]["tokenizer"]["vocab_size"] = 600
        data["task"]["max_new_tokens"] = 4
    config, task, splits, teacher, tok = load_everything(data)
    family = family_of(teacher)
    student = build_student(teacher, depth=config.student.depth, init="teacher", copy_rule=config.student.copy_rule)
    match = config.distill.match_embeddings if config.distill.match_embeddings is not None else family.kind != "decoder"
    maps = layer_maps("forward", family.depths(student.config), family.depths(teacher.config), match_embeddings=match)
    loader = task.dataloader(splits["train"], tok, batch_size=16, shuffle=True)
    result = distill(
        teacher,
        student,
        loader,
        torch.optim.AdamW(student.parameters(), lr=1e-4),
        layer_maps=maps,
        loss=LossConfig(hidden=3.0, **config.distill.loss.model_dump()),
        max_steps=2,
    )
    assert result.status == "finished" and result.history[0]["hidden"] > 0
    assert task.metric in task.evaluate(student, tok, splits["test"])
    if name in ("default", "minilm6_to_3l_tweets_long"):
        assert family.depths(teacher.config) == config.teacher.depths == {"encoder": 6}
