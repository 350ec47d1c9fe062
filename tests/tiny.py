"""Tiny from-config Hugging Face models of every family raykd supports, for fast CPU tests."""

from __future__ import annotations

import torch
import transformers as tf

VOCAB = 100


def tiny_model(model_type: str, depth: int = 6, width: int = 32, seed: int = 0, vocab: int = VOCAB):
    """A randomly initialised model of `model_type` with `depth` blocks per stack, in eval mode."""
    heads, ffn = 4, 2 * width
    configs = {
        "bert": lambda: (
            tf.BertForSequenceClassification,
            tf.BertConfig(
                vocab_size=vocab,
                hidden_size=width,
                intermediate_size=ffn,
                num_hidden_layers=depth,
                num_attention_heads=heads,
                num_labels=3,
            ),
        ),
        "roberta": lambda: (
            tf.RobertaForSequenceClassification,
            tf.RobertaConfig(
                vocab_size=vocab,
                hidden_size=width,
                intermediate_size=ffn,
                num_hidden_layers=depth,
                num_attention_heads=heads,
                num_labels=3,
            ),
        ),
        "electra": lambda: (
            tf.ElectraForSequenceClassification,
            tf.ElectraConfig(
                vocab_size=vocab,
                hidden_size=width,
                embedding_size=width,
                intermediate_size=ffn,
                num_hidden_layers=depth,
                num_attention_heads=heads,
                num_labels=3,
            ),
        ),
        "bart": lambda: (
            tf.BartForConditionalGeneration,
            tf.BartConfig(
                vocab_size=vocab,
                d_model=width,
                encoder_ffn_dim=ffn,
                decoder_ffn_dim=ffn,
                encoder_layers=depth,
                decoder_layers=depth,
                encoder_attention_heads=heads,
                decoder_attention_heads=heads,
            ),
        ),
        "mbart": lambda: (
            tf.MBartForConditionalGeneration,
            tf.MBartConfig(
                vocab_size=vocab,
                d_model=width,
                encoder_ffn_dim=ffn,
                decoder_ffn_dim=ffn,
                encoder_layers=depth,
                decoder_layers=depth,
                encoder_attention_heads=heads,
                decoder_attention_heads=heads,
            ),
        ),
        "marian": lambda: (
            tf.MarianMTModel,
            tf.MarianConfig(
                vocab_size=vocab,
                d_model=width,
                encoder_ffn_dim=ffn,
                decoder_ffn_dim=ffn,
                encoder_layers=depth,
                decoder_layers=depth,
                encoder_attention_heads=heads,
                decoder_attention_heads=heads,
                pad_token_id=1,
                decoder_start_token_id=1,
            ),
        ),
        "t5": lambda: (
            tf.T5ForConditionalGeneration,
            tf.T5Config(
                vocab_size=vocab,
                d_model=width,
                d_ff=ffn,
                num_layers=depth,
                num_decoder_layers=depth,
                num_heads=heads,
                d_kv=width // heads,
                decoder_start_token_id=0,
            ),
        ),
        "qwen3": lambda: (
            tf.Qwen3ForCausalLM,
            tf.Qwen3Config(
                vocab_size=vocab,
                hidden_size=width,
                intermediate_size=ffn,
                num_hidden_layers=depth,
                num_attention_heads=heads,
                num_key_value_heads=2,
                head_dim=width // heads,
            ),
        ),
        "llama": lambda: (
            tf.LlamaForCausalLM,
            tf.LlamaConfig(
                vocab_size=vocab,
                hidden_size=width,
                intermediate_size=ffn,
                num_hidden_layers=depth,
                num_attention_heads=heads,
                num_key_value_heads=2,
            ),
        ),
        "gpt2": lambda: (
            tf.GPT2LMHeadModel,
            tf.GPT2Config(vocab_size=vocab, n_embd=width, n_layer=depth, n_head=heads, bos_token_id=0, eos_token_id=0),
        ),
    }
    cls, config = configs[model_type]()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config).eval()


TINY_TYPES = ("bert", "roberta", "electra", "bart", "mbart", "marian", "t5", "qwen3", "llama", "gpt2")
PAPER_TYPES = ("bert", "bart", "t5", "qwen3")


def tiny_batch(model, batch: int = 2, seq: int = 7, target: int = 5, seed: int = 0) -> dict:
    """A padded batch with the labels each head expects (row 1 padded at the end)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[1:, seq - 2 :] = 0
    kind = (
        "encoder_decoder"
        if model.config.is_encoder_decoder
        else (
            "classifier"
            if hasattr(model.config, "num_labels") and "SequenceClassification" in type(model).__name__
            else "decoder"
        )
    )
    if kind == "classifier":
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.arange(batch) % 3}
    if kind == "encoder_decoder":
        labels = torch.randint(3, VOCAB, (batch, target), generator=g)
        labels[1:, target - 2 :] = -100
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :2] = -100  # a prompt that is not trained on
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
