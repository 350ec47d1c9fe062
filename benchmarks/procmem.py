"""Run a command and sample the memory of its whole process tree (Ray's raylet, GCS and workers included).

Total memory is the sum of PSS (proportional set size: shared pages split between the processes that
map them), so the torch libraries that every Ray worker maps are not counted once per worker.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field

import psutil


@dataclass
class TreeRun:
    returncode: int
    seconds: float
    peak_pss_bytes: int
    peak_processes: int
    lines: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, line)


def tree_pss(root: psutil.Process) -> tuple[int, int]:
    """(sum of PSS over root and its descendants, number of processes)."""
    total = count = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
            count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total, count


def run_sampled(cmd: list[str], *, interval: float = 1.0, env=None, echo: bool = True) -> TreeRun:
    """Run `cmd`, streaming its output, sampling the tree's PSS every `interval` seconds."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    root = psutil.Process(proc.pid)
    peak = {"pss": 0, "procs": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            pss, count = tree_pss(root)
            peak["pss"], peak["procs"] = max(peak["pss"], pss), max(peak["procs"], count)
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    lines = []
    for line in proc.stdout:
        lines.append((time.perf_counter() - started, line.rstrip("\n")))
        if echo:
            print(line, end="", flush=True)
    code = proc.wait()
    done.set()
    sampler.join()
    return TreeRun(code, time.perf_counter() - started, peak["pss"], peak["procs"], lines)
