"""Train only the word-embedding rows a study's data can reach: the same training, a cheaper step.

A student built from MiniLM-L6 has a 30,522 x 384 word embedding: two thirds of its 17M parameters, while the
default study's tweets use ~8,400 distinct tokens. Every step still paid for all 30,522 rows: a dense 47 MB gradient
to allocate and zero, AdamW's update of every row, and the gradient norm over them. `CompactEmbedding` keeps the rows
the data contains as the parameter and looks ids up through a table, so those costs scale with the rows in use.

It is exact when nothing but the lookup reads the matrix: a row no example contains gets a zero gradient, and AdamW
with zero gradient and no weight decay leaves it where it was (with weight decay it would only shrink a row no
input ever reads). So `compact_word_embeddings` only swaps an encoder's input embedding that no output layer shares
(no LM head, no tied weights), only under AdamW (Adafactor's factored moments average over all rows), and only for
ids it was given: an id outside them fails loudly. Its state dict is `nn.Embedding`'s (`weight`, all rows, the
untouched ones as initialised), so checkpoints, best weights and saved students read and load as before.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F


class CompactEmbedding(nn.Module):
    """An `nn.Embedding` whose trainable rows are those of `ids`; the others stay as they were."""

    def __init__(self, embedding: nn.Embedding, ids: Iterable[int]) -> None:
        super().__init__()
        full = embedding.weight.detach()
        used = torch.tensor(sorted(set(ids)), dtype=torch.long, device=full.device)
        if used.numel() == 0 or int(used[0]) < 0 or int(used[-1]) >= full.shape[0]:
            raise ValueError(f"token ids must lie in [0, {full.shape[0]}); got {used.tolist()[:5]}...")
        lookup = torch.full((full.shape[0],), -1, dtype=torch.long, device=full.device)
        lookup[used] = torch.arange(used.numel(), device=full.device)
        self.num_embeddings, self.embedding_dim = full.shape
        self.padding_idx, self.max_norm = embedding.padding_idx, embedding.max_norm
        # nn.Embedding never sends gradient to its padding row: nor does this one, to that row's place in `rows`
        pad = embedding.padding_idx
        self.padding_row = int(lookup[pad]) if pad is not None and int(lookup[pad]) >= 0 else None
        self.rows = nn.Parameter(full[used].clone(), requires_grad=embedding.weight.requires_grad)
        # Plain tensors, not buffers: DDP broadcasts every buffer from rank 0 before each forward (47 MB a step
        # for MiniLM's matrix), and these never change. `_apply` moves and casts them with the module.
        self.used, self.lookup = used, lookup
        self.frozen = full.clone()  # all rows as they started; the trained ones are overwritten on read

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.used, self.lookup, self.frozen = fn(self.used), fn(self.lookup), fn(self.frozen)
        return self

    @property
    def weight(self) -> torch.Tensor:
        """All rows, as `nn.Embedding.weight` would hold them (a copy: assign through `load_state_dict`)."""
        return self.frozen.index_copy(0, self.used, self.rows.detach())

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = self.lookup[input_ids]
        if bool((rows < 0).any()):
            unknown = sorted(set(input_ids[rows < 0].tolist()))[:10]
            raise ValueError(
                f"token ids {unknown} are outside the {self.used.numel()} rows this compact embedding trains "
                "(the ids of the study's data): build the student on data that contains them"
            )
        return F.embedding(rows, self.rows, padding_idx=self.padding_row, max_norm=self.max_norm)

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        destination[prefix + "weight"] = self.weight

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors) -> None:
        key = prefix + "weight"
        if key not in state_dict:
            missing.append(key)
            return
        weight = state_dict[key]
        if tuple(weight.shape) != (self.num_embeddings, self.embedding_dim):
            errors.append(
                f"size mismatch for {key}: copying a param with shape {tuple(weight.shape)}, the parameter in the "
                f"current model is {(self.num_embeddings, self.embedding_dim)}"
            )
            return
        with torch.no_grad():
            self.frozen.copy_(weight)
            self.rows.copy_(weight[self.used])

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, training {self.used.numel()} rows"


def compact_word_embeddings(model: nn.Module, ids: Iterable[int], optimizer: str = "adamw") -> bool:
    """Swap `model`'s input embedding for a `CompactEmbedding` over `ids` where that changes nothing it computes
    (see the module docstring); returns whether it did."""
    embedding = model.get_input_embeddings()
    if optimizer != "adamw" or type(embedding) is not nn.Embedding or embedding.max_norm is not None:
        return False
    if model.get_output_embeddings() is not None:
        return False
    shared = [n for n, p in model.named_parameters(remove_duplicate=False) if p is embedding.weight]
    if len(shared) != 1:  # e.g. T5's and BART's encoder and decoder read one matrix
        return False
    model.set_input_embeddings(CompactEmbedding(embedding, ids))
    return True
