"""Benchmark: the distillation step under glibc's default allocator settings vs raykd's (`raykd.cluster.ALLOCATOR_ENV`).

glibc reads its malloc settings when a process starts, so each measurement is a fresh child process (this script
with ``--child``), alternating the two settings, ``--repeats`` times each, in the same run. A child builds the
study's trial as a study does (benchmarks/steps.py's `Setup`: teacher stage and cache reused under ``--workdir``),
runs ``--steps`` steps of raykd's loop on the shared teacher cache at 1 thread (what one study worker gets), and
reports the mean step time after ``--warmup`` steps and its peak resident memory.

    python benchmarks/allocator.py                        # the default design and the _long one
    python benchmarks/allocator.py --configs studies/configs/default.yaml --repeats 3
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


def child(config: str, workdir: str, steps: int, warmup: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from steps import Setup

    from raykd.train.teacher_cache import CachedTeacher

    s = Setup(config, workdir, steps, threads=1)
    teacher = CachedTeacher(s.cache_path, s.family, s.depths) if s.cache_path else s.teacher
    seconds, terms, _ = s.loop(teacher, s.batches(indexed=bool(s.cache_path)))
    return {
        "step_s": statistics.fmean(seconds[warmup:]),
        "final_total": terms[-1]["total"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure(config: str, workdir: str, steps: int, warmup: int, allocator: bool) -> dict:
    from raykd.cluster import ALLOCATOR_ENV

    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    if allocator:
        env.update(ALLOCATOR_ENV)
    command = [sys.executable, __file__, "--child", config, "--workdir", workdir]
    command += ["--steps", str(steps), "--warmup", str(warmup)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--workdir", default="/tmp/raykd-bench-allocator")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "allocator.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.child:
        print(json.dumps(child(args.child, args.workdir, args.steps, args.warmup)))
        return

    started, rows = time.time(), []
    for config in args.configs:
        runs = {"glibc_default": [], "raykd": []}
        for _ in range(args.repeats):
            for name in runs:  # alternating, so drift in the machine's load hits both alike
                runs[name].append(measure(config, args.workdir, args.steps, args.warmup, name == "raykd"))
        step = {name: statistics.median(r["step_s"] for r in rs) for name, rs in runs.items()}
        rss = {name: max(r["peak_rss_mb"] for r in rs) for name, rs in runs.items()}
        rows.append(
            {
                "config": config,
                "median_step_s": {k: round(v, 4) for k, v in step.items()},
                "speedup": round(step["glibc_default"] / step["raykd"], 3),
                "peak_rss_mb": {k: round(v) for k, v in rss.items()},
                "same_losses": len({round(r["final_total"], 6) for rs in runs.values() for r in rs}) == 1,
                "runs": runs,
            }
        )
        print(
            f"{config}: step {step['glibc_default']:.3f} s (glibc default) vs {step['raykd']:.3f} s (raykd), "
            f"x{rows[-1]['speedup']}; peak RSS {rss['glibc_default']:.0f} vs {rss['raykd']:.0f} MB; "
            f"same final loss in every run: {rows[-1]['same_losses']}",
            flush=True,
        )
    result = {
        "benchmark": "allocator",
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
    main()
