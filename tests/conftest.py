"""Test environment: offline Hugging Face, a temporary HF_HOME, small thread counts.

Set before transformers/datasets are imported anywhere, so no test can reach for the hub.
"""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="raykd-hf-home-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from hypothesis import settings

# Property-based tests draw the same examples on every run by default, so CI cannot fail by chance on an input no
# earlier run drew; exploring new inputs is a separate, deliberate run: `python -m pytest --hypothesis-profile=explore`
# (fresh random draws, and the failures it finds are replayed from hypothesis' example database).
settings.register_profile("default", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("default")

# Two threads at most, and one per pytest-xdist worker when the workers share the cores (README: `-n 2` on 2 cores):
# more threads than cores makes OpenMP's threads wait on each other.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, torch.get_num_threads(), (os.cpu_count() or 1) // _workers)))


@pytest.fixture
def rng_batch():
    """A padded batch factory: ``make(batch, seq, vocab)`` -> input_ids + attention_mask (row 1 padded)."""

    def make(batch=2, seq=7, vocab=100, seed=0):
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(3, vocab, (batch, seq), generator=g)
        mask = torch.ones_like(ids)
        mask[1:, seq - 2 :] = 0
        return ids, mask

    return make


@pytest.fixture(scope="session")
def smoke_teacher(tmp_path_factory):
    """The smoke config's fine-tuned teacher, built once per session (see tests/smoke_studies.py)."""
    from tests.smoke_studies import build_smoke_teacher

    return build_smoke_teacher(tmp_path_factory.mktemp("smoke-teacher"))
