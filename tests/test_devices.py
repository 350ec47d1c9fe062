"""`raykd.devices.release_freed_memory`: what a reused trial actor calls between trials."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# What a trial does to the heap, in miniature: a worker thread (Tune runs each trial in one) allocates
# ~200 MB in tensors under glibc's mmap threshold, keeps one small tensor allocated above them, and frees
# the rest. glibc keeps the freed memory in the thread's arena (the live tensor pins the heap's top);
# malloc_trim hands it back.
PROBE = textwrap.dedent(
    """
    import threading, psutil, torch
    from raykd.devices import release_freed_memory
    kept = []
    def trial():
        blocks = [torch.ones(25_000) for _ in range(2_000)]  # 100 kB each, 200 MB
        kept.append(torch.ones(16))
        del blocks
    thread = threading.Thread(target=trial)
    thread.start(); thread.join()
    before = psutil.Process().memory_info().rss
    ran = release_freed_memory()
    after = psutil.Process().memory_info().rss
    print(ran, before, after)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_freed_memory_returns_a_finished_threads_heap_to_the_os():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    ran, before, after = out[0] == "True", int(out[1]), int(out[2])
    assert ran
    assert before - after > 150e6, f"RSS {before / 1e6:.0f} MB -> {after / 1e6:.0f} MB after malloc_trim"
