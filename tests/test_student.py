import pytest
import torch

from raykd.families import family_of
from raykd.losses import attach_projections
from raykd.student import build_student, copied_layers, head_keys, load_student, save_student, student_metadata
from tests.tiny import PAPER_TYPES, TINY_TYPES, tiny_batch, tiny_model


def block_state(model, stack, index):
    """State dict of block `index` (0-based) of `stack`, keys relative to the block."""
    return family_of(model).blocks(model)[stack][index].state_dict()


@pytest.mark.parametrize("model_type", TINY_TYPES)
@pytest.mark.parametrize("rule", ["matched", "spread"])
def test_teacher_init_copies_blocks_and_everything_else(model_type, rule):
    teacher = tiny_model(model_type, depth=6)
    student = build_student(teacher, depth=3, init="teacher", copy_rule=rule)
    family = family_of(teacher)
    expected = [2, 4, 6] if rule == "matched" else [1, 4, 6]  # spread 6->3: 1, 3.5->4, 6
    meta = student_metadata(student)
    assert meta["copied_layers"] == dict.fromkeys(family.stacks, expected)
    assert meta["init"] == "teacher" and meta["copy_rule"] == rule
    for stack in family.stacks:
        for k, t in enumerate(expected):
            student_block, teacher_block = block_state(student, stack, k), block_state(teacher, stack, t - 1)
            for key, value in student_block.items():
                # T5's relative attention bias lives in block 1 only and is shared by all blocks.
                source = teacher_block.get(key, block_state(teacher, stack, k).get(key))
                torch.testing.assert_close(value, source, rtol=0, atol=0)
    teacher_state = teacher.state_dict()
    prefixes = tuple(family.block_prefixes(student).values())
    head = tuple(f"{h}." for h in head_keys(student))
    non_block = [k for k in student.state_dict() if not k.startswith(prefixes) and not k.startswith(head)]
    assert non_block, "embeddings (and pooler, final norms) should be copied"
    for key in non_block:
        torch.testing.assert_close(student.state_dict()[key], teacher_state[key], rtol=0, atol=0)


@pytest.mark.parametrize("model_type", TINY_TYPES)
def test_teacher_init_copies_the_head_by_head_type_as_the_paper(model_type):
    """A sequence classifier's fine-tuned head is drawn fresh from the seed (a copied one starts the student at
    the teacher's accuracy), LM heads are copied; `copy_head` overrides either way; the choice is recorded."""
    teacher = tiny_model(model_type, depth=4)
    classifier = "ForSequenceClassification" in type(teacher).__name__
    head = tuple(f"{h}." for h in head_keys(teacher))
    a = build_student(teacher, depth=2, init="teacher", seed=1)
    assert student_metadata(a)["copied_head"] is (not classifier)
    for key, value in a.state_dict().items():
        if key.startswith(head) and classifier:
            assert not torch.equal(value, teacher.state_dict()[key]) or value.abs().sum() == 0, key  # fresh
        elif key.startswith(head):
            assert torch.equal(value, teacher.state_dict()[key]), key
    if classifier:
        again = build_student(teacher, depth=2, init="teacher", seed=1)
        other = build_student(teacher, depth=2, init="teacher", seed=2)
        weight = next(k for k in a.state_dict() if k.startswith(head) and k.endswith("weight"))
        assert torch.equal(a.state_dict()[weight], again.state_dict()[weight])  # drawn from the seed
        assert not torch.equal(a.state_dict()[weight], other.state_dict()[weight])
        copied = build_student(teacher, depth=2, init="teacher", copy_head=True)
        assert torch.equal(copied.state_dict()[weight], teacher.state_dict()[weight])
        assert student_metadata(copied)["copied_head"] is True


@pytest.mark.parametrize("model_type", PAPER_TYPES)
def test_random_init_differs_from_teacher_and_is_seeded(model_type):
    teacher = tiny_model(model_type, depth=6)
    a = build_student(teacher, depth=2, init="random", seed=1)
    b = build_student(teacher, depth=2, init="random", seed=1)
    c = build_student(teacher, depth=2, init="random", seed=2)
    stack = family_of(teacher).stacks[0]
    first = next(iter(block_state(a, stack, 0)))
    assert not torch.equal(block_state(a, stack, 0)[first], block_state(teacher, stack, 0)[first])
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
    assert student_metadata(a)["copied_layers"] == {} and student_metadata(a)["init"] == "random"
    rng_before = torch.random.get_rng_state()
    build_student(teacher, depth=2, seed=3)
    assert torch.equal(rng_before, torch.random.get_rng_state()), "building a student must not move the global RNG"


@pytest.mark.parametrize("model_type", PAPER_TYPES)
@pytest.mark.parametrize("init", ["random", "teacher"])
def test_student_runs_forward_with_hidden_states(model_type, init):
    teacher = tiny_model(model_type, depth=6)
    student = build_student(teacher, depth=3, init=init)
    family = family_of(student)
    assert family.depths(student.config) == dict.fromkeys(family.stacks, 3)
    out, stacks = family.forward(student, tiny_batch(student))
    assert torch.isfinite(out.loss)
    assert all(len(states) == 4 for states in stacks.values())


def test_encoder_decoder_depths_separately_and_explicit_lists():
    teacher = tiny_model("t5", depth=6)
    student = build_student(
        teacher,
        depth={"encoder": 3, "decoder": 2},
        init="teacher",
        copy_rule={"encoder": [1, 3, 6], "decoder": "spread"},
    )
    assert family_of(student).depths(student.config) == {"encoder": 3, "decoder": 2}
    assert student_metadata(student)["copied_layers"] == {"encoder": [1, 3, 6], "decoder": [1, 6]}
    assert student_metadata(student)["copy_rule"] == "explicit"


def test_t5_relative_bias_comes_from_teacher_block_one_when_not_copied():
    teacher = tiny_model("t5", depth=6)
    student = build_student(teacher, depth=2, init="teacher", copy_rule=[4, 6])
    key = "layer.0.SelfAttention.relative_attention_bias.weight"
    torch.testing.assert_close(block_state(student, "encoder", 0)[key], block_state(teacher, "encoder", 0)[key])
    torch.testing.assert_close(
        block_state(student, "encoder", 1)["layer.1.DenseReluDense.wi.weight"],
        block_state(teacher, "encoder", 5)["layer.1.DenseReluDense.wi.weight"],
    )


def test_qwen3_layer_types_follow_copied_blocks():
    teacher = tiny_model("qwen3", depth=4)
    teacher.config.layer_types = ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
    student = build_student(teacher, depth=2, init="teacher", copy_rule=[2, 3])
    assert student.config.layer_types == ["sliding_attention", "full_attention"]
    assert student.config.num_hidden_layers == 2


def test_spread_golden():
    assert copied_layers("spread", 3, 12) == [1, 7, 12]
    assert copied_layers("matched", 3, 12) == [4, 8, 12]
    assert copied_layers("spread", 9, 36) == [1, 5, 10, 14, 19, 23, 27, 32, 36]


@pytest.mark.parametrize("model_type", PAPER_TYPES + ("gpt2", "llama"))
def test_width_change_scales_heads_and_ffn_at_fixed_head_size(model_type):
    teacher = tiny_model(model_type, depth=4, width=32)
    student = build_student(teacher, depth=2, width=16)
    family = family_of(student)
    keys = family.width_keys
    assert family.width(student.config) == 16
    for head_key in keys.heads:
        assert getattr(student.config, head_key) == getattr(teacher.config, head_key) // 2
    for ffn_key in keys.ffn:
        if getattr(teacher.config, ffn_key, None) is not None:
            assert getattr(student.config, ffn_key) == getattr(teacher.config, ffn_key) // 2
    _out, stacks = family.forward(student, tiny_batch(student))
    assert all(s.shape[-1] == 16 for states in stacks.values() for s in states)
    assert student_metadata(student)["width"] == 16 and student_metadata(student)["teacher_width"] == 32


def test_save_load_roundtrip_with_projections(tmp_path):
    teacher = tiny_model("bert", depth=4)
    student = build_student(teacher, depth=2, width=16, seed=5)
    attach_projections(student, ["encoder_1", "encoder_2"], teacher_width=32)
    with torch.no_grad():
        student.raykd_projections.layers["encoder_2"].weight.fill_(0.25)
    save_student(student, tmp_path / "student")
    loaded = load_student(tmp_path / "student")
    assert type(loaded) is type(student)
    assert student_metadata(loaded) == student_metadata(student)
    assert student.state_dict().keys() == loaded.state_dict().keys()
    for key, value in student.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    assert (loaded.raykd_projections.layers["encoder_2"].weight == 0.25).all()


def test_save_load_tied_embeddings(tmp_path):
    teacher = tiny_model("t5", depth=4)
    student = build_student(teacher, depth=2, init="teacher")
    loaded = load_student(save_student(student, tmp_path / "s"))
    torch.testing.assert_close(loaded.lm_head.weight, student.lm_head.weight)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=3, init="copied"), "student init must be one of"),
        (dict(depth=0), "student depth for encoder must be an integer >= 1"),
        (dict(depth={"decoder": 2}), "student depth names stacks"),
        (dict(depth=7, init="teacher"), "cannot copy 7 blocks from a teacher stack of 6"),
        (dict(depth=2, init="teacher", copy_rule="evenly"), "copy rule must be one of"),
        (dict(depth=2, init="teacher", copy_rule=[1, 7]), r"must hold 2 teacher blocks in 1..6"),
        (dict(depth=2, init="teacher", copy_rule=[1]), r"must hold 2 teacher blocks"),
        (dict(depth=2, init="teacher", width=16), "cannot copy teacher blocks of width 32"),
        (dict(depth=2, width=20), "not a multiple of the teacher's head size 8"),
    ],
)
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_student(tiny_model("bert", depth=6), **kwargs)
