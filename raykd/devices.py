"""One place that probes the machine: the compute device, native bf16, the CPUs Ray assigned, and
whether the Hugging Face hub is offline. Every other module asks here."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE")


def hub_offline() -> bool:
    """True when any of the Hugging Face offline switches is set (hub models, datasets and metrics alike)."""
    return any(os.environ.get(flag, "").lower() in ("1", "true", "yes") for flag in OFFLINE_FLAGS)


def default_device() -> str:
    """``cuda`` when this process sees a GPU (Ray sets CUDA_VISIBLE_DEVICES for GPU tasks), else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def native_bf16(device: torch.device | str | None = None) -> bool:
    """Whether `device` computes bf16 natively: a CUDA GPU that supports it, or an x86 CPU with
    AVX512-BF16 or AMX (elsewhere CPU bf16 is emulated and slower than fp32)."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def assigned_cpus() -> int:
    """CPUs Ray gave the calling task or actor (the whole machine outside Ray)."""
    try:
        import ray

        if ray.is_initialized():
            return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    except Exception:  # noqa: BLE001, S110 - not inside a Ray task or actor: torch's own thread count
        pass
    return torch.get_num_threads()


def use_assigned_cpus(cpus: float | None = None) -> int:
    """Set torch's thread count to `cpus` (default: what Ray assigned); returns it."""
    threads = max(1, int(cpus)) if cpus else assigned_cpus()
    torch.set_num_threads(threads)
    return threads


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS); looked up once per process."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")  # runs ldconfig: not on every call
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Hand memory that Python and torch have freed back to the OS (glibc's ``malloc_trim``); True if it ran.

    A reused Tune actor runs each trial in a fresh thread, and glibc keeps what a finished trial freed in that
    thread's arena: without this, an actor grew by ~150 MB per trial (benchmarks/RESULTS.md). A no-op where the C library has no ``malloc_trim``.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
