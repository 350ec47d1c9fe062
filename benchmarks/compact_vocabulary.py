"""Benchmark: the distillation step training every word-embedding row vs only the rows the study's data contains
(`raykd.train.vocab`, what trials do).

The same harness as benchmarks/allocator.py (each measurement a fresh child process, the two variants alternating,
``--repeats`` times each, ``--steps`` steps at 1 thread, mean step time after ``--warmup``; both with raykd's allocator
settings, as a study's workers run), so the two compare on one machine in one run. The final losses of the two show
that the variants train the same thing (equal up to the order of float sums in the gradient norm).

    python benchmarks/compact_vocabulary.py                 # the default design and the _long one
    python benchmarks/compact_vocabulary.py --configs studies/configs/default.yaml --repeats 5
"""

from __future__ import annotations

from allocator import ROOT, compare

if __name__ == "__main__":
    compare(
        "compact_vocabulary",
        {
            "all_rows": {"allocator": True, "compact_vocabulary": False},
            "compact": {"allocator": True, "compact_vocabulary": True},
        },
        __doc__.splitlines()[0],
        str(ROOT / "benchmarks" / "results" / "compact_vocabulary.json"),
    )
