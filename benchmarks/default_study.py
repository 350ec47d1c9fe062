"""Benchmark 5: the embedded default study end to end (teacher + cache + 25 trials + analysis).

    python benchmarks/default_study.py [--output-dir /tmp/raykd-bench] [--set key=value ...] [--resume] [--out F]

Runs ``studies/strategy_grid.py --fresh`` as a child process, samples the PSS of its whole process tree
(driver, Ray's GCS and raylet, every worker) once a second, and writes ``results/default_study.json``:
wall time, peak memory with each process's share at the peak and every 30 s (which process holds what), the
time of each stage (from the study's own ``[raykd]`` lines), the CPU seconds each kind of process used and the
per-cell results. ``--resume`` leaves out ``--fresh``: a teacher folder copied into ``--output-dir`` is reused
(memory probes with ``--set``).

The machine's speed moves between runs (the same step has measured 0.23 and 0.32 s within an hour on the 2-core
machine of benchmarks/RESULTS.md), so before and after the study it measures it (`machine_speed`): the fp32 matrix
products of a student block's shapes at 1 thread, alone and as two processes at once (what two trials see). Runs
compare through those numbers, not only through their wall times.
Targets: <= 20 min wall, <= 4 GB peak of all processes on a 2-core CPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procmem import run_sampled

HERE = Path(__file__).resolve().parent


def machine() -> dict:
    import torch

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }


# The products of one student block of the default design (16 x 24 tokens, width 384, FFN 1536), forward shapes
GEMMS = [(384, 384, 384), (384, 384, 1536), (384, 1536, 384)]


def probe(seconds: float = 4.0) -> float:
    """GFLOP/s of the block's matrix products at 1 thread: median over rounds of `seconds` in all."""
    import torch

    torch.set_num_threads(1)
    pairs = [(torch.randn(m, k), torch.randn(k, n), 2 * m * k * n) for m, k, n in GEMMS]
    rates, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rates) < 5:
        started, flops = time.perf_counter(), 0
        for _ in range(10):
            for a, b, f in pairs:
                a @ b
                flops += f
        rates.append(flops / (time.perf_counter() - started) / 1e9)
    return statistics.median(rates[1:])


def machine_speed() -> dict[str, float]:
    """`probe` in a fresh process alone, then in two processes at once (their mean)."""

    def start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, __file__, "--probe"], stdout=subprocess.PIPE, text=True)

    def read(proc: subprocess.Popen) -> float:
        return float(proc.communicate()[0].strip().splitlines()[-1])

    alone = read(start())
    pair = [start(), start()]
    return {
        "gflops_1_thread": round(alone, 1),
        "gflops_1_thread_two_at_once": round(statistics.fmean(map(read, pair)), 1),
    }


def verdict_block(lines: list[str]) -> str:
    """The verdict block the study prints: from its "== verdict" line to the next "[raykd]" line."""
    out: list[str] = []
    for line in lines:
        if line.startswith("== verdict"):
            out = [line]
        elif out and not line.startswith("[raykd]"):
            out.append(line)
        elif out:
            break
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="/tmp/raykd-bench-default")
    parser.add_argument("--set", action="append", default=[], help="config override, passed to the study")
    parser.add_argument("--out", default=str(HERE / "results" / "default_study.json"))
    parser.add_argument("--resume", action="store_true", help="no --fresh: reuse a teacher stage already in the folder")
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)  # `machine_speed`'s child
    args = parser.parse_args()
    if args.probe:
        print(probe())
        return
    speed_before = machine_speed()
    print(f"machine speed before: {speed_before}", flush=True)
    cmd = [
        sys.executable,
        str(HERE.parent / "studies" / "strategy_grid.py"),
        *([] if args.resume else ["--fresh"]),
        "--output-dir",
        args.output_dir,
    ]
    for item in args.set:
        cmd += ["--set", item]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = run_sampled(cmd, env=env)
    speed_after = machine_speed()
    stamps = {}
    for seconds, line in run.lines:
        for key, pattern in (
            ("teacher_done", r"^\[raykd\] teacher: "),
            ("cache_done", r"^\[raykd\] teacher cache: "),
            ("sweep_start", r"^\[raykd\] sweep: "),
            ("sweep_done", r"^\[raykd\] sweep done"),
            ("analysis_done", r"^\[raykd\] analysis: "),
        ):
            if re.match(pattern, line) and key not in stamps:
                stamps[key] = round(seconds, 1)
    text = "\n".join(line for _, line in run.lines)
    cache = re.search(r"^\[raykd\] teacher cache: (.*)$", text, re.MULTILINE)
    result = {
        "benchmark": "default_study",
        "command": " ".join(["python", "benchmarks/default_study.py", *sys.argv[1:]]),
        "machine": machine(),
        "returncode": run.returncode,
        "wall_s": round(run.seconds, 1),
        "peak_pss_gb": round(run.peak_pss_bytes / 1e9, 2),
        "peak_processes": run.peak_processes,
        "peak_at_s": run.peak_at_s,
        "peak_by_process_mb": [[name, round(pss / 1e6)] for name, pss in run.at_peak],
        "memory_series_mb": [
            [t, round(total / 1e6), [[name, round(pss / 1e6)] for name, pss in procs[:4]]]
            for t, total, procs in run.series
        ],
        "stages_s": stamps,
        "cpu_s_by_process": run.cpu_s,
        "machine_speed": {"before": speed_before, "after": speed_after},
        "teacher_cache": cache.group(1) if cache else None,
        "cell_means": next((line for _, line in run.lines if line.startswith("[raykd] mean test")), None),
        "done": next((line for _, line in run.lines if line.startswith("[raykd] done:")), None),
        "verdict": verdict_block([line for _, line in run.lines]),
        "targets": {"wall_s": 1200, "peak_pss_gb": 4.0},
    }
    result["met"] = {"wall": result["wall_s"] <= 1200, "memory": result["peak_pss_gb"] <= 4.0}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("wall_s", "peak_pss_gb", "stages_s", "machine_speed", "met")}, indent=2))
    sys.exit(run.returncode)


if __name__ == "__main__":
    main()
