"""Model families: one interface over Hugging Face models for the hidden-state stacks a loss needs.

Stacks (index convention of docs/paper.md: entry 0 = embedding output, entry k = block k):
- encoder-only (BERT, RoBERTa): ``{"encoder": ...}``
- encoder-decoder (BART, T5, Marian): ``{"encoder": ..., "decoder": ...}``, decoder states from
  teacher forcing on the gold target (HF shifts ``labels`` into ``decoder_input_ids``);
- decoder-only (Qwen3, Llama, GPT-2): ``{"decoder": ...}``.

The final-norm quirk: in T5, Qwen3, Llama, GPT-2 and mBART, Hugging Face returns the *last*
entry of ``hidden_states`` after the stack's final norm, while every other entry is a raw block
output (verified on transformers 5.23). Two documented choices, `FINAL_NORM_MODES`:
- ``"as_returned"`` (default): use the states as Hugging Face returns them, as the paper's
  released code does, so results reproduce theirs;
- ``"pre_norm"``: replace the last entry by the raw output of the last block (captured with a
  forward hook), so every index is the same kind of quantity.
Families whose blocks end in LayerNorm (BERT, BART, Marian) have no final norm: both modes agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from raykd.registry import Registry

FAMILIES: Registry = Registry("model family")
FINAL_NORM_MODES = ("as_returned", "pre_norm")
KINDS = ("encoder", "encoder_decoder", "decoder")


@dataclass(frozen=True)
class WidthKeys:
    """Config keys to change when a student gets another width (head size kept fixed)."""

    width: str
    ffn: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()
    kv_heads: tuple[str, ...] = ()
    head_dim: str | None = None  # config key of an explicit head size, if the family has one


@dataclass(frozen=True)
class Family:
    """What raykd needs to know about one Hugging Face architecture.

    `block_paths` and `final_norm_paths` are attribute paths from ``model.base_model``.
    """

    name: str
    kind: str
    depth_keys: Mapping[str, str]
    block_paths: Mapping[str, str]
    width_keys: WidthKeys
    final_norm_paths: Mapping[str, str] = field(default_factory=dict)

    @property
    def stacks(self) -> tuple[str, ...]:
        return tuple(self.depth_keys)

    def depths(self, config: Any) -> dict[str, int]:
        """Blocks per stack, read from a model config."""
        return {stack: int(getattr(config, key)) for stack, key in self.depth_keys.items()}

    def depths_from_fields(self, fields: Mapping[str, Any]) -> dict[str, int]:
        """Blocks per stack from config fields given as a mapping (a from-config teacher in a study config);
        a missing or non-integer field raises a ValueError naming it."""
        out = {}
        for stack, key in self.depth_keys.items():
            raw = fields.get(key)
            if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
                raise ValueError(f"teacher.model.{key} must be a whole number >= 1, got {raw!r}")
            out[stack] = raw
        return out

    def width(self, config: Any) -> int:
        return int(getattr(config, self.width_keys.width))

    def blocks(self, model: nn.Module) -> dict[str, nn.ModuleList]:
        """The ModuleList of blocks of each stack."""
        return {stack: _get_path(model.base_model, path) for stack, path in self.block_paths.items()}

    def block_prefixes(self, model: nn.Module) -> dict[str, str]:
        """The state-dict prefix of each stack's blocks, e.g. ``"bert.encoder.layer."``."""
        names = {id(module): name for name, module in model.named_modules()}
        return {stack: names[id(blocks)] + "." for stack, blocks in self.blocks(model).items()}

    def final_norms(self, model: nn.Module) -> dict[str, nn.Module]:
        return {s: _get_path(model.base_model, p) for s, p in self.final_norm_paths.items()}

    def hidden_stacks(self, outputs: Any) -> dict[str, tuple[torch.Tensor, ...]]:
        """Hidden states per stack from outputs of a forward with ``output_hidden_states=True``."""
        if self.kind == "encoder_decoder":
            return {"encoder": outputs.encoder_hidden_states, "decoder": outputs.decoder_hidden_states}
        return {self.stacks[0]: outputs.hidden_states}

    def hidden_masks(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Boolean ``[batch, seq]`` masks of the valid (non-pad) positions of each stack.

        Encoder-decoder decoder positions are valid where the gold target is (``labels != -100``,
        or ``decoder_attention_mask`` when the batch has one).
        """
        ids = batch["input_ids"]
        attention = batch.get("attention_mask")
        masks = {self.stacks[0]: (attention if attention is not None else torch.ones_like(ids)).bool()}
        if self.kind == "encoder_decoder":
            decoder_mask = batch.get("decoder_attention_mask")
            masks["decoder"] = decoder_mask.bool() if decoder_mask is not None else batch["labels"] != -100
        return masks

    def prediction_mask(self, batch: Mapping[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor | None:
        """Positions whose predictions count for token-level KD; None for sequence-level logits.

        Seq2seq: the gold target tokens (``labels != -100``). Decoder-only: position i predicts
        token i+1, so it counts where ``labels[i+1] != -100`` (completion-only when prompts are
        masked out of the labels), or where the next token is not padding when there are no labels.
        """
        if logits.dim() == 2:
            return None
        labels = batch.get("labels")
        if self.kind == "encoder_decoder":
            return labels != -100
        target = labels != -100 if labels is not None else self.hidden_masks(batch)[self.stacks[0]]
        mask = torch.zeros_like(target)
        mask[:, :-1] = target[:, 1:]
        return mask

    def forward(
        self, model: nn.Module, batch: Mapping[str, torch.Tensor], *, final_norm: str = "as_returned"
    ) -> tuple[Any, dict[str, tuple[torch.Tensor, ...]]]:
        """Run `model` on `batch` with hidden states; return (outputs, stacks).

        Each stack is a tuple of ``depth + 1`` tensors ``[batch, seq, width]``.
        """
        if final_norm not in FINAL_NORM_MODES:
            raise ValueError(f"final_norm must be one of {FINAL_NORM_MODES}, got {final_norm!r}")
        captured: dict[str, torch.Tensor] = {}
        handles = []
        if final_norm == "pre_norm":
            blocks = self.blocks(getattr(model, "module", model))  # through a DDP wrapper
            for stack in self.final_norm_paths:
                handles.append(blocks[stack][-1].register_forward_hook(_capture(captured, stack)))
        try:
            outputs = model(**batch, output_hidden_states=True)
        finally:
            for handle in handles:
                handle.remove()
        stacks = self.hidden_stacks(outputs)
        for stack, raw in captured.items():
            stacks[stack] = (*stacks[stack][:-1], raw)
        return outputs, stacks


def family_of(model_or_config: Any) -> Family:
    """The `Family` of a Hugging Face model or config, by its ``model_type``."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise ValueError(f"{type(model_or_config).__name__} has no Hugging Face config.model_type")
    return FAMILIES.get(model_type)


def _capture(store: dict[str, torch.Tensor], key: str):
    def hook(module, inputs, output):
        store[key] = output[0] if isinstance(output, (tuple, list)) else output

    return hook


def _get_path(root: nn.Module, path: str) -> Any:
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _register(names: tuple[str, ...], **spec: Any) -> None:
    for name in names:
        FAMILIES.add(name, Family(name=name, **spec))


_BERT_WIDTH = WidthKeys("hidden_size", ffn=("intermediate_size",), heads=("num_attention_heads",))
_register(
    ("bert", "roberta", "xlm-roberta", "electra"),
    kind="encoder",
    depth_keys={"encoder": "num_hidden_layers"},
    block_paths={"encoder": "encoder.layer"},
    width_keys=_BERT_WIDTH,
)
_SEQ2SEQ = dict(
    kind="encoder_decoder",
    depth_keys={"encoder": "encoder_layers", "decoder": "decoder_layers"},
    block_paths={"encoder": "encoder.layers", "decoder": "decoder.layers"},
    width_keys=WidthKeys(
        "d_model",
        ffn=("encoder_ffn_dim", "decoder_ffn_dim"),
        heads=("encoder_attention_heads", "decoder_attention_heads"),
    ),
)
_register(("bart", "marian"), **_SEQ2SEQ)
_register(("mbart",), **_SEQ2SEQ, final_norm_paths={"encoder": "encoder.layer_norm", "decoder": "decoder.layer_norm"})
_register(
    ("t5", "mt5"),
    kind="encoder_decoder",
    depth_keys={"encoder": "num_layers", "decoder": "num_decoder_layers"},
    block_paths={"encoder": "encoder.block", "decoder": "decoder.block"},
    width_keys=WidthKeys("d_model", ffn=("d_ff",), heads=("num_heads",), head_dim="d_kv"),
    final_norm_paths={"encoder": "encoder.final_layer_norm", "decoder": "decoder.final_layer_norm"},
)
_register(
    ("qwen3", "qwen2", "llama", "mistral"),
    kind="decoder",
    depth_keys={"decoder": "num_hidden_layers"},
    block_paths={"decoder": "layers"},
    width_keys=WidthKeys(
        "hidden_size",
        ffn=("intermediate_size",),
        heads=("num_attention_heads",),
        kv_heads=("num_key_value_heads",),
        head_dim="head_dim",
    ),
    final_norm_paths={"decoder": "norm"},
)
_register(
    ("gpt2",),
    kind="decoder",
    depth_keys={"decoder": "n_layer"},
    block_paths={"decoder": "h"},
    width_keys=WidthKeys("n_embd", ffn=("n_inner",), heads=("n_head",)),
    final_norm_paths={"decoder": "ln_f"},
)
