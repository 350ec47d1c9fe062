import pytest
import torch

from raykd.families import FAMILIES, family_of
from tests.tiny import TINY_TYPES, tiny_batch, tiny_model


def test_every_registered_family_has_a_tiny_test_model():
    # A family registered without a tiny model here would go untested.
    assert set(FAMILIES.names()) - set(TINY_TYPES) <= {"xlm-roberta", "mt5", "qwen2", "mistral"}


@pytest.mark.parametrize("model_type", TINY_TYPES)
def test_stacks_have_depth_plus_one_states(model_type):
    model = tiny_model(model_type, depth=3)
    family = family_of(model)
    batch = tiny_batch(model)
    _, stacks = family.forward(model, batch)
    assert set(stacks) == set(family.stacks)
    expected_kind = {
        "bert": "encoder",
        "roberta": "encoder",
        "electra": "encoder",
        "qwen3": "decoder",
        "llama": "decoder",
        "gpt2": "decoder",
    }.get(model_type, "encoder_decoder")
    assert family.kind == expected_kind
    for stack, states in stacks.items():
        assert len(states) == family.depths(model.config)[stack] + 1 == 4
        seq = (
            batch["labels"].shape[1]
            if stack == "decoder" and family.kind == "encoder_decoder"
            else batch["input_ids"].shape[1]
        )
        assert all(s.shape == (2, seq, 32) for s in states)
    assert {k: len(v) for k, v in family.blocks(model).items()} == family.depths(model.config)


@pytest.mark.parametrize("model_type", TINY_TYPES)
def test_final_norm_modes(model_type):
    """as_returned: the last state is final_norm(last block output); pre_norm: the raw block output."""
    model = tiny_model(model_type, depth=3)
    family = family_of(model)
    batch = tiny_batch(model)
    with torch.no_grad():
        _, returned = family.forward(model, batch, final_norm="as_returned")
        _, raw = family.forward(model, batch, final_norm="pre_norm")
    norms = family.final_norms(model)
    for stack in family.stacks:
        for k in range(3):  # every state but the last is the same in both modes
            torch.testing.assert_close(returned[stack][k], raw[stack][k])
        if stack in norms:
            torch.testing.assert_close(returned[stack][-1], norms[stack](raw[stack][-1]))
            assert not torch.allclose(returned[stack][-1], raw[stack][-1])
        else:
            torch.testing.assert_close(returned[stack][-1], raw[stack][-1])
    # The quirk exists exactly in these families (checked against transformers' behaviour above).
    assert bool(norms) == (model_type in {"t5", "mbart", "qwen3", "llama", "gpt2"})


def test_final_norm_mode_validated():
    model = tiny_model("bert", depth=2)
    with pytest.raises(ValueError, match="final_norm must be one of"):
        family_of(model).forward(model, tiny_batch(model), final_norm="post")


def test_hook_removed_after_forward():
    model = tiny_model("qwen3", depth=2)
    family = family_of(model)
    last_block = family.blocks(model)["decoder"][-1]
    family.forward(model, tiny_batch(model))  # transformers may install hooks of its own
    before = dict(last_block._forward_hooks)
    family.forward(model, tiny_batch(model), final_norm="pre_norm")
    assert dict(last_block._forward_hooks) == before


def test_masks_encoder_decoder_and_prediction_masks():
    t5 = tiny_model("t5", depth=2)
    batch = tiny_batch(t5)
    fam = family_of(t5)
    masks = fam.hidden_masks(batch)
    assert masks["encoder"].tolist() == batch["attention_mask"].bool().tolist()
    assert masks["decoder"].tolist() == (batch["labels"] != -100).tolist()
    logits = torch.zeros(2, 5, 100)
    assert fam.prediction_mask(batch, logits).tolist() == (batch["labels"] != -100).tolist()

    qwen = tiny_model("qwen3", depth=2)
    batch = tiny_batch(qwen)
    mask = family_of(qwen).prediction_mask(batch, torch.zeros(2, 7, 100))
    # position i predicts token i+1: counted where labels[i+1] is a target; the last never is.
    assert mask[:, :-1].tolist() == (batch["labels"][:, 1:] != -100).tolist()
    assert not mask[:, -1].any()
    assert family_of(qwen).prediction_mask(batch, torch.zeros(2, 3)) is None


def test_family_from_local_folder_and_config(tmp_path):
    model = tiny_model("bart", depth=2)
    model.save_pretrained(tmp_path)
    import transformers

    loaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    assert family_of(loaded) is family_of(model) is family_of(transformers.AutoConfig.from_pretrained(tmp_path))
    _, stacks = family_of(loaded).forward(loaded.eval(), tiny_batch(loaded))
    _, original = family_of(model).forward(model, tiny_batch(model))
    torch.testing.assert_close(stacks["decoder"][-1], original["decoder"][-1])


def test_unknown_family():
    with pytest.raises(ValueError, match="unknown model family 'resnet'; registered: .*bert"):
        FAMILIES.get("resnet")
    with pytest.raises(ValueError, match="no Hugging Face config.model_type"):
        family_of(torch.nn.Linear(2, 2))
