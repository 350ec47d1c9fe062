"""The shared teacher cache returns what a live teacher forward returns, for any batch order."""

import datasets
import pytest
import torch

from raykd.families import family_of
from raykd.losses import LossConfig
from raykd.strategies import layer_maps
from raykd.student import build_student
from raykd.train import teacher_cache as tc
from raykd.train.frozen import as_teacher
from raykd.train.loop import distill_loss
from tests.tiny import VOCAB, tiny_model


def examples(kind: str, n: int = 24, seed: int = 0) -> datasets.Dataset:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = int(torch.randint(3, 12, (1,), generator=g))
        ids = torch.randint(3, VOCAB, (length,), generator=g).tolist()
        if kind == "classifier":
            label = i % 3
        elif kind == "encoder_decoder":
            label = torch.randint(3, VOCAB, (int(torch.randint(2, 7, (1,), generator=g)),), generator=g).tolist()
        else:
            label = [-100, -100] + ids[2:]
        rows.append({"input_ids": ids, "attention_mask": [1] * length, "labels": label})
    return datasets.Dataset.from_list(rows)


def collate(features):
    """Right padding (inputs 0, sequence labels -100); scalar labels stay scalars."""
    width = max(len(f["input_ids"]) for f in features)
    out = {
        "input_ids": torch.tensor([f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in features]),
        "attention_mask": torch.tensor(
            [f["attention_mask"] + [0] * (width - len(f["attention_mask"])) for f in features]
        ),
    }
    if isinstance(features[0]["labels"], list):
        target = max(len(f["labels"]) for f in features)
        out["labels"] = torch.tensor([f["labels"] + [-100] * (target - len(f["labels"])) for f in features])
    else:
        out["labels"] = torch.tensor([f["labels"] for f in features])
    return out


CASES = {"bert": "classifier", "t5": "encoder_decoder", "qwen3": "decoder"}


@pytest.mark.parametrize("model_type", list(CASES))
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_cached_outputs_equal_a_live_forward_in_shuffled_batches(model_type, dtype, tmp_path):
    teacher = tiny_model(model_type, depth=4)
    family = family_of(teacher)
    depths = family.depths(teacher.config)
    data = examples(CASES[model_type])
    maps = [layer_maps(s, dict.fromkeys(depths, 2), depths, seed=0) for s in ("forward", "reverse")]
    layers = tc.needed_layers(maps)
    sequence_level = CASES[model_type] == "classifier"
    logit_width = 3 if sequence_level else VOCAB
    plan = tc.plan(
        family,
        data,
        collate,
        layers,
        width=32,
        logits=True,
        logit_width=logit_width,
        sequence_level=sequence_level,
        dtype=dtype,
        final_norm="as_returned",
        batch_size=5,
    )
    assert plan.tokens[family.stacks[0]] == sum(len(x) for x in data["input_ids"])
    assert (
        plan.bytes
        == sum(plan.tokens[s] * len(ls) * 32 * 2 for s, ls in layers.items()) + plan.logit_rows * logit_width * 2
    )
    folder = tc.build(teacher, family, data, collate, plan, tmp_path / "cache", batch_size=5)
    assert not (tmp_path / "cache.tmp").exists()
    cached = tc.CachedTeacher(folder, family, depths)

    indexed = tc.with_index(collate)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(1)).tolist()
    tolerance = {"fp16": 2e-3, "bf16": 1.6e-2}[dtype]
    for start in range(0, len(order), 7):  # other batch sizes and orders than the build used
        rows = [dict(data[i], raykd_index=i) for i in order[start : start + 7]]
        batch = indexed(rows)
        live_out, live_states = as_teacher(teacher).outputs(batch)
        out, states = cached.outputs(batch)
        masks = family.hidden_masks(batch)
        for stack, ts in layers.items():
            mask = masks[stack]
            for t in ts:
                ref = live_states[stack][t][mask]
                assert torch.allclose(states[stack][t][mask], ref, rtol=tolerance, atol=tolerance * ref.abs().max())
                assert states[stack][t][~mask].abs().sum() == 0
            assert all(states[stack][t] is None for t in range(depths[stack] + 1) if t not in ts)
        if sequence_level:
            assert torch.allclose(out.logits, live_out.logits, rtol=tolerance, atol=tolerance)
        else:
            pred = family.prediction_mask(batch, live_out.logits)
            assert torch.allclose(
                out.logits[pred], live_out.logits[pred], rtol=tolerance, atol=tolerance * live_out.logits.abs().max()
            )

        student = build_student(teacher, depth=2, init="random", seed=0).eval()  # no dropout: same student twice
        loss = LossConfig(hidden=3.0, kd=1.0)
        live = distill_loss(teacher, student, batch, maps[1], loss)
        read = distill_loss(cached, student, batch, maps[1], loss)
        for key in ("ce", "kd", "hidden", "total"):
            assert abs(float(read[key].detach()) - float(live[key].detach())) <= tolerance * max(
                1.0, abs(float(live[key]))
            ), key


def test_a_cache_from_other_data_is_refused(tmp_path):
    teacher = tiny_model("bert", depth=4)
    family = family_of(teacher)
    data = examples("classifier")
    plan = tc.plan(
        family,
        data,
        collate,
        {"encoder": [4]},
        width=32,
        logits=False,
        logit_width=3,
        sequence_level=True,
        dtype="fp16",
        final_norm="as_returned",
    )
    cached = tc.CachedTeacher(tc.build(teacher, family, data, collate, plan, tmp_path / "c"), family, {"encoder": 4})
    other = examples("classifier", seed=5)
    batch = tc.with_index(collate)([dict(other[i], raykd_index=i) for i in range(4)])
    with pytest.raises(RuntimeError, match="built from other data"):
        cached.outputs(batch)
    assert cached.covers({"encoder": [(1, 4)]}, need_logits=False)
    assert not cached.covers({"encoder": [(1, 2)]}, need_logits=False)
    assert not cached.covers({}, need_logits=True)


def test_needed_layers_is_the_union_over_maps():
    maps = [{"encoder": [(1, 2), (2, 4)]}, {"encoder": [(1, 4), (2, 6)], "decoder": [(1, 3)]}, {"encoder": []}]
    assert tc.needed_layers(maps) == {"encoder": [2, 4, 6], "decoder": [3]}


def test_a_trial_runs_live_when_the_cache_was_built_from_other_training_data(tmp_path):
    teacher = tiny_model("bert", depth=4)
    family = family_of(teacher)
    data, other = examples("classifier"), examples("classifier", seed=5)
    plan = tc.plan(
        family,
        data,
        collate,
        {"encoder": [2, 4]},
        width=32,
        logits=True,
        logit_width=3,
        sequence_level=True,
        dtype="fp16",
        final_norm="as_returned",
    )
    cache = tc.CachedTeacher(
        tc.build(teacher, family, data, collate, plan, tmp_path / "c", fingerprint=data._fingerprint),
        family,
        {"encoder": 4},
    )
    maps = {0: {"encoder": [(1, 2), (2, 4)]}}
    assert tc.why_not_served(cache, data, maps, matches=True, needs_logits=True) is None
    assert "built from other training data" in tc.why_not_served(cache, other, maps, matches=True, needs_logits=True)
    lacking = tc.why_not_served(cache, data, {0: {"encoder": [(1, 3)]}}, matches=True, needs_logits=True)
    assert "lacks layers or logits" in lacking
    assert tc.why_not_served(cache, data, {0: {"encoder": [(1, 3)]}}, matches=False, needs_logits=True) is None
