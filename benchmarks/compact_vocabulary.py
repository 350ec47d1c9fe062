"""Benchmark: the distillation step training every word-embedding row vs only the rows the study's data contains
(`raykd.train.vocab`, what trials do).

Each measurement is a fresh child process (this script with ``--child``), the two variants alternating, ``--repeats``
times each, ``--steps`` steps at 1 thread, mean step time after ``--warmup``, so the two compare on one machine in one
run; medians over the repeats. The final losses of the two show
that the variants train the same thing (equal up to the order of float sums in the gradient norm).

    python benchmarks/compact_vocabulary.py                 # the default design and the _long one
    python benchmarks/compact_vocabulary.py --configs studies/configs/default.yaml --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["studies/configs/default.yaml", "studies/configs/minilm6_to_3l_tweets_long.yaml"]


def child(config: str, workdir: str, steps: int, warmup: int, compact_vocabulary: bool = True) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from steps import Setup

    from raykd.train.teacher_cache import CachedTeacher

    s = Setup(config, workdir, steps, threads=1, compact_vocabulary=compact_vocabulary)
    teacher = CachedTeacher(s.cache_path, s.family, s.depths) if s.cache_path else s.teacher
    seconds, terms, _ = s.loop(teacher, s.batches(indexed=bool(s.cache_path)))
    return {
        "step_s": statistics.fmean(seconds[warmup:]),
        "final_total": terms[-1]["total"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "embedding_rows_trained": s.embedding_rows or "all",
    }


def measure(config: str, workdir: str, steps: int, warmup: int, compact_vocabulary: bool = True) -> dict:
    """One fresh child process's measurement (see `child`)."""
    command = [sys.executable, __file__, "--child", config, "--workdir", workdir]
    command += ["--steps", str(steps), "--warmup", str(warmup)]
    command += [] if compact_vocabulary else ["--full-vocabulary"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(benchmark: str, variants: dict[str, dict], description: str, out: str) -> None:
    """Run the A/B benchmark `variants` (name -> `measure` keywords; the first is the baseline) from the command
    line: alternating fresh children per config, medians of the step time, and the JSON written to `out`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--workdir", default="/tmp/raykd-bench-vocabulary")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=out)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--full-vocabulary", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.child:
        print(json.dumps(child(args.child, args.workdir, args.steps, args.warmup, not args.full_vocabulary)))
        return

    started, rows = time.time(), []
    base, new = list(variants)
    for config in args.configs:
        runs = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, how in variants.items():  # alternating, so drift in the machine's load hits both alike
                runs[name].append(measure(config, args.workdir, args.steps, args.warmup, **how))
        step = {name: statistics.median(r["step_s"] for r in rs) for name, rs in runs.items()}
        rss = {name: statistics.median(r["peak_rss_mb"] for r in rs) for name, rs in runs.items()}
        rows.append(
            {
                "config": config,
                "median_step_s": {k: round(v, 4) for k, v in step.items()},
                "speedup": round(step[base] / step[new], 3),
                "peak_rss_mb": {k: round(v) for k, v in rss.items()},
                "final_losses": {k: sorted({round(r["final_total"], 6) for r in rs}) for k, rs in runs.items()},
                "same_losses": len({round(r["final_total"], 6) for rs in runs.values() for r in rs}) == 1,
                "runs": runs,
            }
        )
        print(
            f"{config}: step {step[base]:.3f} s ({base}) vs {step[new]:.3f} s ({new}), x{rows[-1]['speedup']}; "
            f"peak RSS {rss[base]:.0f} vs {rss[new]:.0f} MB; final losses {rows[-1]['final_losses']}",
            flush=True,
        )
    result = {
        "benchmark": benchmark,
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "wall_s": round(time.time() - started, 1),
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    compare(
        "compact_vocabulary",
        {"all_rows": {"compact_vocabulary": False}, "compact": {"compact_vocabulary": True}},
        __doc__.splitlines()[0],
        str(ROOT / "benchmarks" / "results" / "compact_vocabulary.json"),
    )
