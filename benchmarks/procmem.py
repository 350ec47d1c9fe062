"""Run a command and sample the memory of its whole process tree (Ray's raylet, GCS and workers included).

Total memory is the sum of PSS (proportional set size: shared pages split between the processes that
map them), so the torch libraries that every Ray worker maps are not counted once per worker.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass
class TreeRun:
    returncode: int
    seconds: float
    peak_pss_bytes: int
    peak_processes: int
    lines: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, line)
    at_peak: list[tuple[str, int]] = field(default_factory=list)  # (process, PSS bytes) at the peak, largest first
    peak_at_s: float = 0.0  # seconds since start when the peak was sampled
    series: list[tuple[float, int, list[tuple[str, int]]]] = field(default_factory=list)  # every `every` s
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds (user + system) per process label


def label(proc: psutil.Process) -> str:
    """A process as a reader knows it: Ray's title (``ray::TrialActor``, ``ray::IDLE``), else its program."""
    cmd = proc.cmdline()
    if cmd and cmd[0].startswith("ray::"):
        return cmd[0].split()[0]
    names = [Path(part).name for part in cmd[:3] if not part.startswith("-")]
    return " ".join(names) or proc.name()


def tree_pss(root: psutil.Process, cpu: dict[int, tuple[str, float]] | None = None) -> list[tuple[str, int]]:
    """(process, PSS bytes) for root and each of its live descendants; with `cpu`, also records each one's
    CPU seconds so far under its pid (a process's last sample is what it used, to within `interval`)."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    out = []
    for proc in procs:
        try:
            name = label(proc)
            out.append((name, proc.memory_full_info().pss))
            if cpu is not None:
                times = proc.cpu_times()
                if name == "ray::IDLE":  # a worker between tasks: its time stays with the task it ran
                    name = cpu.get(proc.pid, (name, 0.0))[0]
                cpu[proc.pid] = (name, times.user + times.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


def run_sampled(cmd: list[str], *, interval: float = 1.0, every: float = 30.0, env=None, echo: bool = True) -> TreeRun:
    """Run `cmd`, streaming its output, sampling the tree's PSS every `interval` seconds (and keeping the
    processes' PSS every `every` seconds, for where memory grows)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    root = psutil.Process(proc.pid)
    peak = {"pss": 0, "procs": 0, "at": [], "when": 0.0}
    series: list[tuple[float, int, list[tuple[str, int]]]] = []
    done = threading.Event()
    cpu: dict[int, tuple[str, float]] = {}

    def sample() -> None:
        while not done.is_set():
            procs = tree_pss(root, cpu)
            total = sum(pss for _, pss in procs)
            if total > peak["pss"]:
                peak.update(pss=total, at=sorted(procs, key=lambda p: -p[1]), when=time.perf_counter() - started)
            peak["procs"] = max(peak["procs"], len(procs))
            now = time.perf_counter() - started
            if not series or now - series[-1][0] >= every:
                series.append((round(now, 1), total, sorted(procs, key=lambda p: -p[1])))
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
    cpu_s: dict[str, float] = {}
    for name, seconds in cpu.values():
        cpu_s[name] = round(cpu_s.get(name, 0.0) + seconds, 1)
    return TreeRun(
        code,
        time.perf_counter() - started,
        peak["pss"],
        peak["procs"],
        lines,
        peak["at"],
        round(peak["when"], 1),
        series,
        dict(sorted(cpu_s.items(), key=lambda kv: -kv[1])),
    )
