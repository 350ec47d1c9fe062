"""The shared teacher cache: the frozen teacher's outputs on the training split, computed once per study.

Every trial of a study feeds the same frozen, eval-mode (so deterministic) teacher the same training
examples. The cache stores what trials read from it: the logits when a KD term needs them, and the
union of teacher layers that any trial's layer map uses, at the valid positions only (the positions the
hidden loss and the KD mask count, no padding). Trials then look examples up by index instead of running
the teacher, so the lookup is correct under any shuffling, length grouping, DDP sharding or resume.

Layout of ``<teacher dir>/cache/<key>/`` (key: teacher stage + layers + dtype + final-norm mode):
``index.json`` (facts, written last), per stack ``<stack>.npy`` (``[tokens, layers, width]``) and
``<stack>.offsets.npy``; ``logits.npy`` + ``logits.offsets.npy`` (one row per example for sequence-level
logits, one per predicted position for token-level ones). Stored in fp16 by default (bf16 optional);
built in a temporary folder and renamed, so a killed build leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from raykd.config import config_hash
from raykd.families import Family
from raykd.train.batches import INDEX, with_index  # noqa: F401  (with_index: the collator wrapper trials use)
from raykd.train.frozen import LiveTeacher

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
_NUMPY = {"fp16": np.float16, "bf16": np.uint16}  # numpy has no bfloat16: stored as its bits


@dataclass(frozen=True)
class CachePlan:
    """What a study's cache would hold and how big it would be."""

    layers: dict[str, list[int]]  # stack -> teacher layer indices (0 = embeddings)
    logits: bool
    dtype: str
    final_norm: str
    examples: int
    tokens: dict[str, int]  # stack -> valid positions over the training split
    width: int
    logit_rows: int
    logit_width: int
    sequence_level: bool  # one logits row per example (classification), else one per predicted position

    @property
    def bytes(self) -> int:
        item = 2
        hidden = sum(self.tokens[s] * len(ls) * self.width * item for s, ls in self.layers.items())
        return hidden + (self.logit_rows * self.logit_width * item if self.logits else 0)

    def describe(self) -> str:
        layers = ", ".join(f"{s} {ls}" for s, ls in self.layers.items()) or "none"
        logits = f" + logits ({self.logit_rows} rows x {self.logit_width})" if self.logits else ""
        return (
            f"{self.examples} examples, teacher layers {layers} at width {self.width}{logits}, "
            f"{self.dtype}: {self.bytes / 2**20:,.0f} MiB"
        )

    def key(self, teacher_key: str) -> str:
        return config_hash(
            {
                "teacher": teacher_key,
                "layers": self.layers,
                "logits": self.logits,
                "width": self.width,
                "dtype": self.dtype,
                "final_norm": self.final_norm,
            }
        )


def needed_layers(maps: Iterable[Mapping[str, list]]) -> dict[str, list[int]]:
    """The union of teacher layers over layer maps (``{stack: [(s, t), ...]}``)."""
    out: dict[str, set[int]] = {}
    for layer_map in maps:
        for stack, pairs in layer_map.items():
            out.setdefault(stack, set()).update(int(t) for _, t in pairs)
    return {stack: sorted(ts) for stack, ts in out.items() if ts}


def plan(
    family: Family,
    data,
    collate,
    layers: dict[str, list[int]],
    *,
    width: int,
    logits: bool,
    logit_width: int,
    sequence_level: bool,
    dtype: str,
    final_norm: str,
    batch_size: int = 64,
) -> CachePlan:
    """Count the valid positions of the training split (tokenized, no model run) to size the cache."""
    if dtype not in DTYPES:
        raise ValueError(f"teacher cache dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    tokens = dict.fromkeys(layers, 0)
    logit_rows = 0
    for batch in DataLoader(data, batch_size=batch_size, collate_fn=collate):
        masks = family.hidden_masks(batch)
        for stack in layers:
            tokens[stack] += int(masks[stack].sum())
        if logits:
            mask = _logit_mask(family, batch, sequence_level)
            logit_rows += int(batch["input_ids"].shape[0]) if mask is None else int(mask.sum())
    return CachePlan(
        layers=layers,
        logits=logits,
        dtype=dtype,
        final_norm=final_norm,
        examples=len(data),
        tokens=tokens,
        width=width,
        logit_rows=logit_rows,
        logit_width=logit_width,
        sequence_level=sequence_level,
    )


def _logit_mask(family: Family, batch, sequence_level: bool) -> torch.Tensor | None:
    """Token-level tasks: the positions whose predictions KD counts; None for sequence-level logits."""
    if sequence_level:
        return None
    ids = batch["labels"] if family.kind == "encoder_decoder" else batch["input_ids"]
    return family.prediction_mask(batch, ids.new_empty(*ids.shape, 1))


@torch.no_grad()
def build(
    teacher,
    family: Family,
    data,
    collate,
    cache_plan: CachePlan,
    folder: Path,
    *,
    device="cpu",
    batch_size: int = 64,
    fingerprint: str = "",
    on_batch=None,
) -> Path:
    """Run the teacher once over `data` (in order) and write the cache into `folder` (atomic rename)."""
    if (folder / "index.json").is_file():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    width, dtype = cache_plan.width, cache_plan.dtype
    stores = {
        stack: _RaggedStore(tmp, stack, (cache_plan.tokens[stack], len(ls), width), dtype, len(data))
        for stack, ls in cache_plan.layers.items()
    }
    logit_store = None
    if cache_plan.logits:
        logit_store = _RaggedStore(tmp, "logits", (cache_plan.logit_rows, cache_plan.logit_width), dtype, len(data))
    row = 0
    live = LiveTeacher(teacher, final_norm=cache_plan.final_norm, family=family)
    for batch in DataLoader(data, batch_size=batch_size, collate_fn=collate):
        batch = {k: v.to(device) for k, v in batch.items()}
        out, states = live.outputs(batch)
        masks = family.hidden_masks(batch)
        n = int(batch["input_ids"].shape[0])
        for stack, ls in cache_plan.layers.items():
            picked = torch.stack([states[stack][t] for t in ls], dim=2)[masks[stack]]  # [valid tokens, layers, width]
            stores[stack].append(row, picked, masks[stack].sum(1).cpu().numpy())
        if logit_store is not None:
            mask = _logit_mask(family, batch, cache_plan.sequence_level)
            rows = out.logits if mask is None else out.logits[mask]
            logit_store.append(row, rows, np.ones(n, dtype=np.int64) if mask is None else mask.sum(1).cpu().numpy())
        row += n
        if on_batch is not None:
            on_batch(row, len(data))
    for store in [*stores.values(), *([logit_store] if logit_store is not None else [])]:
        store.close()
    _write_index(tmp, cache_plan, len(data), family.name, fingerprint)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def _write_index(folder: Path, cache_plan: CachePlan, examples: int, family: str, fingerprint: str) -> None:
    """``index.json``: what the cache holds and what it was built from (checked before a trial reads it)."""
    index = {
        "layers": cache_plan.layers,
        "logits": cache_plan.logits,
        "dtype": cache_plan.dtype,
        "final_norm": cache_plan.final_norm,
        "examples": examples,
        "width": cache_plan.width,
        "sequence_level": cache_plan.sequence_level,
        "bytes": cache_plan.bytes,
        "fingerprint": fingerprint,
        "family": family,
    }
    (folder / "index.json").write_text(json.dumps(index, indent=2))


class _RaggedStore:
    """One cache file being written: rows of variable length per example (``<name>.npy``, a memmap), and where
    each example's rows start (``<name>.offsets.npy``)."""

    def __init__(self, folder: Path, name: str, shape: tuple[int, ...], dtype: str, examples: int) -> None:
        self.folder, self.name, self.torch_dtype = folder, name, DTYPES[dtype]
        self.values = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=_NUMPY[dtype], shape=shape)
        self.offsets = np.zeros(examples + 1, dtype=np.int64)
        self.cursor = 0

    def append(self, row: int, values: torch.Tensor, counts: np.ndarray) -> None:
        """The rows of examples ``row, row + 1, ...`` (``counts[i]`` rows each), in order."""
        _write(self.values, self.cursor, values, self.torch_dtype)
        self.offsets[row + 1 : row + len(counts) + 1] = self.cursor + np.cumsum(counts)
        self.cursor += int(counts.sum())

    def close(self) -> None:
        self.values.flush()
        np.save(self.folder / f"{self.name}.offsets.npy", self.offsets)


class _RaggedReader:
    """One cache file read a batch at a time with positioned reads (`os.pread`), not memory-mapped: a mapped cache
    counts in every trial process's resident memory once read (~500 MB for the default study's), while read
    pages stay in the kernel's page cache, shared and reclaimable."""

    def __init__(self, folder: Path, name: str) -> None:
        self.path = folder / f"{name}.npy"
        header = np.load(self.path, mmap_mode="r")  # the header only: shape, dtype and where the data starts
        self.dtype, self.start = header.dtype, header.offset
        self.row_bytes = int(np.prod(header.shape[1:], dtype=np.int64)) * header.dtype.itemsize
        self.row_shape = header.shape[1:]
        del header
        self.offsets = np.load(folder / f"{name}.offsets.npy")
        self._fd: int | None = None

    def read(self, index: list[int]) -> tuple[np.ndarray, list[int]]:
        """The rows of examples `index`, concatenated in that order, and each example's row count."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        lengths = [int(self.offsets[i + 1] - self.offsets[i]) for i in index]
        out = bytearray(sum(lengths) * self.row_bytes)
        view, at = memoryview(out), 0
        for i, n in zip(index, lengths, strict=True):
            size = n * self.row_bytes
            if os.preadv(self._fd, [view[at : at + size]], self.start + int(self.offsets[i]) * self.row_bytes) != size:
                raise OSError(f"{self.path} is shorter than its index says (example {i}): rebuild the cache")
            at += size
        return np.frombuffer(out, dtype=self.dtype).reshape(-1, *self.row_shape), lengths

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


def _write(store: np.ndarray, start: int, values: torch.Tensor, dtype: torch.dtype) -> None:
    cast = values.detach().float().to(dtype).cpu()
    if dtype == torch.bfloat16:
        cast = cast.view(torch.int16)
    store[start : start + cast.shape[0]] = cast.numpy().view(store.dtype)


@dataclass
class _Output:
    logits: torch.Tensor | None


class CachedTeacher:
    """Reads a built cache: ``outputs(batch)`` returns what a live teacher forward would, for the cached
    layers (others are None), as float32 tensors on the batch's device."""

    def __init__(self, folder: Path | str, family: Family, depths: Mapping[str, int]) -> None:
        self.folder = Path(folder)
        self.index = json.loads((self.folder / "index.json").read_text())
        self.family, self.depths = family, dict(depths)
        self.layers = {s: list(ls) for s, ls in self.index["layers"].items()}
        self.torch_dtype = DTYPES[self.index["dtype"]]
        self.stores = {s: _RaggedReader(self.folder, s) for s in self.layers}
        self.logits = _RaggedReader(self.folder, "logits") if self.index["logits"] else None

    def covers(self, layer_maps: Mapping[str, list], need_logits: bool) -> bool:
        """True when every teacher layer in `layer_maps` (and the logits, if needed) are cached."""
        if need_logits and self.logits is None:
            return False
        return all(int(t) in self.layers.get(stack, []) for stack, pairs in layer_maps.items() for _, t in pairs)

    def _rows(self, store: _RaggedReader, index: list[int]) -> tuple[torch.Tensor, list[int]]:
        flat, lengths = store.read(index)
        flat = torch.from_numpy(flat)
        if self.torch_dtype == torch.bfloat16:
            flat = flat.view(torch.bfloat16)
        return flat.float(), lengths

    def outputs(self, batch: Mapping[str, torch.Tensor]) -> tuple[_Output, dict[str, list[torch.Tensor | None]]]:
        if INDEX not in batch:
            raise ValueError(f"a cached teacher needs batches with {INDEX!r} (wrap the collator with with_index)")
        index = batch[INDEX].tolist()
        masks = self.family.hidden_masks(batch)
        states: dict[str, list[torch.Tensor | None]] = {}
        for stack, layers in self.layers.items():
            mask = masks[stack]
            flat, lengths = self._rows(self.stores[stack], index)
            _check(lengths, mask.sum(1).tolist(), stack)
            full = flat.new_zeros(*mask.shape, len(layers), flat.shape[-1])
            full[mask.cpu()] = flat
            full = full.to(mask.device)
            states[stack] = [None] * (self.depths[stack] + 1)
            for j, t in enumerate(layers):
                states[stack][t] = full[:, :, j]
        logits = None
        if self.logits is not None:
            flat, lengths = self._rows(self.logits, index)
            mask = _logit_mask(self.family, batch, self.index["sequence_level"])
            if mask is None:
                logits = flat.to(batch["input_ids"].device)
            else:
                _check(lengths, mask.sum(1).tolist(), "logits")
                logits = flat.new_zeros(*mask.shape, flat.shape[-1])
                logits[mask.cpu()] = flat
                logits = logits.to(mask.device)
        return _Output(logits=logits), states


def why_not_served(
    cache: CachedTeacher,
    train_data,
    maps_by_epoch: Mapping[int, Mapping[str, list]],
    *,
    matches: bool,
    needs_logits: bool,
) -> str | None:
    """Why `cache` cannot stand in for the live teacher for a trial (None when it can): it was built from
    other training data, or it lacks a layer the trial's maps use (when it `matches` at all) or the logits."""
    built_from = cache.index.get("fingerprint")
    if built_from and built_from != getattr(train_data, "_fingerprint", built_from):
        return f"teacher cache {cache.folder} was built from other training data"
    if not all(cache.covers(maps if matches else {}, needs_logits) for maps in maps_by_epoch.values()):
        return f"teacher cache {cache.folder} lacks layers or logits this trial needs"
    return None


def _check(cached: list[int], batch: list[int], what: str) -> None:
    if cached != batch:
        raise RuntimeError(
            f"teacher cache does not match the batch ({what}: cached valid positions {cached[:4]}..., "
            f"batch has {batch[:4]}...): the cache was built from other data; delete it to rebuild"
        )
