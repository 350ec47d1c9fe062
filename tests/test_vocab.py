"""Training only the word-embedding rows the data reaches (`raykd.train.vocab`) computes what training all rows
computes, reads and writes the same state dict, refuses where it would not be exact, and fails loudly on an id it
does not train."""

import pytest
import torch
import transformers
from torch import nn

from raykd.student import load_student, save_student
from raykd.train.vocab import CompactEmbedding, compact_word_embeddings

VOCAB, WIDTH = 300, 32


def tiny_bert(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=WIDTH,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        num_labels=3,
    )
    return transformers.BertForSequenceClassification(config)


def batches(ids: list[int], steps: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    pool = torch.tensor(ids)
    out = []
    for _ in range(steps):
        input_ids = pool[torch.randint(len(pool), (8, 12), generator=g)]
        input_ids[:, 0] = 2  # a special id, kept as the data's ids are
        mask = torch.ones_like(input_ids)
        mask[::2, 9:] = 0
        out.append({"input_ids": input_ids, "attention_mask": mask, "labels": torch.randint(3, (8,), generator=g)})
    return out


def train(model: nn.Module, data, weight_decay: float) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=weight_decay, fused=True)
    torch.manual_seed(1)  # dropout: the same masks on both sides
    losses = []
    for batch in data:
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)  # clipping binds: the norm must agree too
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_training_the_rows_in_use_computes_what_training_all_rows_computes(weight_decay):
    ids = list(range(3, 120, 2))  # the data's ids: fewer than half the vocabulary, none of the rows above 120
    data = batches(ids, 12)
    full, compact = tiny_bert(), tiny_bert()
    assert compact_word_embeddings(compact, [*ids, 0, 2])
    embedding = compact.get_input_embeddings()
    assert isinstance(embedding, CompactEmbedding) and embedding.rows.shape == (len(ids) + 2, WIDTH)
    assert (
        sum(p.numel() for p in compact.parameters())
        == sum(p.numel() for p in full.parameters()) - (VOCAB - len(ids) - 2) * WIDTH
    )

    assert train(compact, data, weight_decay) == pytest.approx(train(full, data, weight_decay), rel=1e-5, abs=1e-6)
    full_state, compact_state = full.state_dict(), compact.state_dict()
    assert list(compact_state) == list(full_state)  # the same keys in the same order: nn.Embedding's `weight`
    for key, value in full_state.items():
        if key.endswith("word_embeddings.weight") and weight_decay:
            trained = torch.tensor([*ids, 0, 2])  # rows no input reads only decayed on the full side
            torch.testing.assert_close(compact_state[key][trained], value[trained], rtol=1e-4, atol=1e-6)
        else:
            torch.testing.assert_close(compact_state[key], value, rtol=1e-4, atol=1e-6)
    probe = batches(ids, 1, seed=5)[0]
    full.eval(), compact.eval()
    torch.testing.assert_close(compact(**probe).logits, full(**probe).logits, rtol=1e-4, atol=1e-5)


def test_state_dicts_load_both_ways_and_a_saved_student_is_a_plain_one(tmp_path):
    ids = [0, 2, 5, 7, 11]
    compact = tiny_bert()
    original = compact.get_input_embeddings().weight.detach().clone()
    compact_word_embeddings(compact, ids)
    torch.testing.assert_close(compact.get_input_embeddings().weight, original)

    other = tiny_bert(seed=1)  # a plain student's weights load into the compact one, all rows
    compact.load_state_dict(other.state_dict(), strict=True)
    embedding = compact.get_input_embeddings()
    torch.testing.assert_close(embedding.weight, other.get_input_embeddings().weight)
    torch.testing.assert_close(embedding.rows, other.get_input_embeddings().weight[ids])

    assert not list(embedding.buffers())  # nothing for DDP to broadcast before every forward
    compact.double()  # moves and casts follow the module: the float tables, not the id tables
    assert embedding.weight.dtype == embedding.rows.dtype == torch.float64 and embedding.lookup.dtype == torch.long
    compact.float()

    saved = load_student(save_student(compact, tmp_path / "student"))  # strict safetensors round trip
    assert type(saved.get_input_embeddings()) is nn.Embedding
    torch.testing.assert_close(saved.get_input_embeddings().weight, other.get_input_embeddings().weight)

    wrong = dict(other.state_dict())
    wrong["bert.embeddings.word_embeddings.weight"] = torch.zeros(VOCAB + 1, WIDTH)
    with pytest.raises(RuntimeError, match="size mismatch for bert.embeddings.word_embeddings.weight"):
        compact.load_state_dict(wrong)


def test_the_padding_row_gets_no_gradient_as_in_nn_embedding():
    model = tiny_bert()
    pad = model.get_input_embeddings().padding_idx
    compact_word_embeddings(model, [pad, 2, 5])
    embedding = model.get_input_embeddings()
    embedding(torch.tensor([[2, pad, 5, pad]])).sum().backward()
    grad = embedding.rows.grad
    assert embedding.padding_row == 0 and not grad[0].any() and grad[1].any() and grad[2].any()


def test_an_id_outside_the_trained_rows_fails_naming_it():
    model = tiny_bert()
    compact_word_embeddings(model, [0, 2, 5])
    with pytest.raises(ValueError, match=r"token ids \[6, 9\] are outside the 3 rows"):
        model(input_ids=torch.tensor([[2, 5, 6, 9]]))


def test_left_alone_where_it_would_not_be_exact():
    ids = [0, 1, 2]
    assert not compact_word_embeddings(tiny_bert(), ids, optimizer="adafactor")  # moments averaged over all rows
    lm = transformers.BertForMaskedLM(tiny_bert().config)  # the output layer reads every row
    assert not compact_word_embeddings(lm, ids)
    t5 = transformers.T5ForSequenceClassification(
        transformers.T5Config(vocab_size=VOCAB, d_model=WIDTH, d_ff=64, num_layers=1, num_heads=4, d_kv=8)
    )
    assert not compact_word_embeddings(t5, ids)  # encoder and decoder share one matrix
    for model in (lm, t5):
        assert type(model.get_input_embeddings()) is not CompactEmbedding
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 300\)"):
        CompactEmbedding(nn.Embedding(VOCAB, WIDTH), [3, 300])
