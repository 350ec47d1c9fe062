import pytest
import sacrebleu
import torch
from sklearn.metrics import accuracy_score

from raykd.families import family_of
from raykd.losses import LossConfig
from raykd.strategies import layer_maps
from raykd.student import build_student
from raykd.tasks.data import DataError
from raykd.train.loop import distill, finetune
from tests.studies import BIBLE, load_everything, tiny_model_fields

TEACHER_BASE = {"tokenizer": {"source": "train", "kind": "unigram", "vocab_size": 600}, "source": "config"}


def study(task: dict, model_type: str, depth=4, kind="unigram"):
    depths = {"encoder": depth, "decoder": depth}
    return {
        "name": "t",
        "task": task,
        "teacher": {
            **TEACHER_BASE,
            "model": tiny_model_fields(model_type, depths),
            "tokenizer": {"source": "train", "kind": kind, "vocab_size": 600},
        },
    }


def test_classification_on_real_tweets():
    data = {"builtin": "tweets", "split": {"validation": 64, "test": 64}, "max_examples": {"train": 256}}
    _config, task, splits, teacher, tok = load_everything(
        study({"type": "classification", "data": data, "max_length": 48}, "bert", kind="wordpiece")
    )
    assert teacher.config.num_labels == 3 and teacher.config.id2label[2] == "positive"
    batch = next(iter(task.dataloader(splits["train"], tok, batch_size=8)))
    assert (
        {"input_ids", "attention_mask", "labels"}
        <= set(batch)
        <= {"input_ids", "attention_mask", "token_type_ids", "labels"}
    )
    assert batch["labels"].shape == (8,) and batch["input_ids"].shape[1] <= 48
    finetune(
        teacher,
        task.dataloader(splits["train"], tok, batch_size=32, shuffle=True),
        torch.optim.AdamW(teacher.parameters(), lr=2e-3),
        epochs=2,
    )
    metrics = task.evaluate(teacher, tok, splits["test"])
    predictions = task.predict(teacher, tok, splits["test"])
    assert metrics["accuracy"] == pytest.approx(accuracy_score(splits["test"]["labels"], predictions))
    assert set(metrics) == {"accuracy", "f1_macro"}  # f1 (binary) only for 2 labels


@pytest.mark.parametrize("model_type", ["t5", "bart"])
def test_seq2seq_translation(model_type):
    task_cfg = {
        "type": "seq2seq",
        "source_lang": "en",
        "target_lang": "es",
        "num_beams": 2,
        "max_new_tokens": 12,
        "data": {"files": BIBLE, "max_examples": {"validation": 16}},
    }
    _config, task, splits, teacher, tok = load_everything(study(task_cfg, model_type))
    example = splits["train"][0]
    assert example["labels"][-1] == tok.eos_token_id
    assert example["reference"] == "EN el principio crió Dios los cielos y la tierra."
    batch = next(iter(task.dataloader(splits["train"], tok, batch_size=4)))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert (batch["labels"] == -100).any() and not (batch["labels"] == tok.pad_token_id).any()
    finetune(
        teacher,
        task.dataloader(splits["train"], tok, batch_size=32, shuffle=True),
        torch.optim.AdamW(teacher.parameters(), lr=3e-3),
        epochs=1,
    )
    metrics = task.evaluate(teacher, tok, splits["validation"])
    outputs = task.generate(teacher, tok, splits["validation"])
    assert len(outputs) == 16
    assert metrics["sacrebleu"] == pytest.approx(
        sacrebleu.corpus_bleu(outputs, [splits["validation"]["reference"]]).score
    )
    assert metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(outputs, [splits["validation"]["reference"]]).score)


def test_causal_lm_completion_only_and_left_padded_generation():
    task_cfg = {
        "type": "causal_lm",
        "source_lang": "en",
        "target_lang": "es",
        "prompt_template": "translate: {source} =>",
        "max_new_tokens": 8,
        "eval_batch_size": 8,
        "data": {"files": BIBLE, "max_examples": {"validation": 8}},
    }
    _config, task, splits, teacher, tok = load_everything(study(task_cfg, "qwen3"))
    example = splits["train"][0]
    n_prompt = len(example["prompt_ids"])
    assert example["labels"][:n_prompt] == [-100] * n_prompt
    assert example["labels"][n_prompt:] == example["input_ids"][n_prompt:]
    assert example["input_ids"][-1] == tok.eos_token_id
    assert tok.decode(example["prompt_ids"]).startswith("translate: In the beginning")
    finetune(
        teacher,
        task.dataloader(splits["train"], tok, batch_size=32, shuffle=True),
        torch.optim.AdamW(teacher.parameters(), lr=3e-3),
        epochs=1,
    )
    batched = task.generate(teacher, tok, splits["validation"])
    one_by_one = []
    for row in splits["validation"]:
        ids = torch.tensor([row["prompt_ids"]])
        out = teacher.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=8,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        one_by_one.append(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    assert batched == one_by_one  # left padding does not change what is generated
    metrics = task.evaluate(teacher, tok, splits["validation"])
    assert set(metrics) == {"exact_match", "sacrebleu"} and 0 <= metrics["exact_match"] <= 1


def test_template_errors_name_the_missing_field():
    task_cfg = {
        "type": "causal_lm",
        "source_lang": "en",
        "target_lang": "es",
        "prompt_template": "{question} =>",
        "data": {"files": BIBLE},
    }
    with pytest.raises(DataError, match=r"task.prompt_template '\{question\} =>' refers to 'question'"):
        load_everything(study(task_cfg, "qwen3"))


def test_translation_languages_checked():
    task_cfg = {"type": "seq2seq", "source_lang": "en", "target_lang": "ro", "data": {"files": BIBLE}}
    with pytest.raises(DataError, match=r"column 'translation' has languages \['en', 'es'\]; task.target_lang is 'ro'"):
        load_everything(study(task_cfg, "t5"))


@pytest.mark.parametrize("task_type, model_type", [("seq2seq", "t5"), ("causal_lm", "qwen3")])
def test_distillation_runs_on_task_batches(task_type, model_type):
    task_cfg = {"type": task_type, "source_lang": "en", "target_lang": "es", "data": {"files": BIBLE}}
    _config, task, splits, teacher, tok = load_everything(study(task_cfg, model_type))
    student = build_student(teacher, depth=2, init="teacher")
    family = family_of(teacher)
    maps = layer_maps(
        "forward",
        family.depths(student.config),
        family.depths(teacher.config),
        match_embeddings=family.kind != "decoder",
    )
    loader = task.dataloader(splits["train"], tok, batch_size=16, shuffle=True)
    result = distill(
        teacher,
        student,
        loader,
        torch.optim.AdamW(student.parameters(), lr=1e-3),
        layer_maps=maps,
        loss=LossConfig(),
        max_steps=4,
    )
    assert result.status == "finished" and all(h["kd"] > 0 and h["hidden"] > 0 for h in result.history)
