"""A real multi-node Ray cluster on one machine, for tests: a head and more nodes, each its own raylet with its
own resources (`ray start`), started and stopped by the test, which kills exactly its own processes.

A cluster's processes are told apart from every other Ray on the machine (another test's, or a study's) by a mark in
their environment, which `ray start` hands to the GCS and the raylet and the raylet to its workers, and by
descending from a process with the mark."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

TOKEN = "raykd-test-token-0123456789abcdef"
RAY_PROCESS_MARKS = ("ray::", "gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py", "runtime_env")
CLUSTER_MARK = "RAYKD_TEST_CLUSTER"


def free_port() -> int:
    """A free port below the kernel's ephemeral range (32768+) and above Ray's worker ports (10002-19999): ports the
    OS hands out to anyone binding port 0 (Ray's own agents among them) cannot take it between now and its use."""
    while True:
        port = random.randint(20000, 32767)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def ray_processes(cluster: str | None = None) -> set[int]:
    """PIDs of Ray processes on this machine; with `cluster`, those of the test cluster with that mark: the
    processes that carry it and everything they started (Ray's agents rename themselves, which empties what
    /proc shows of their environment, so they are found as children)."""
    out = set()
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if not any(mark in cmd for mark in RAY_PROCESS_MARKS):
                continue
            if cluster is not None:
                if proc.environ().get(CLUSTER_MARK) != cluster:
                    continue
                out.update(child.pid for child in proc.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        out.add(proc.pid)
    return out


class LocalCluster:
    """``head`` plus ``add_node()``s; `env` is what a study needs to join it (RAY_ADDRESS, token auth)."""

    def __init__(
        self, head_cpus: int = 1, driver_slots: int = 100, dashboard: bool = True, env: dict | None = None
    ) -> None:
        """`env`: more environment for every node (what a pod's spec would give its containers)."""
        self.mark = uuid.uuid4().hex
        self.temp_dir = tempfile.mkdtemp(prefix="raykd-cluster-")
        self.port = free_port()
        self.env = {
            **os.environ,
            **(env or {}),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": TOKEN,
            CLUSTER_MARK: self.mark,
        }
        self.ray = str(Path(sys.executable).with_name("ray"))
        self.nodes: list[set[int]] = []
        self.killed: set[int] = set()
        started = self.processes()
        args = [
            self.ray,
            "start",
            "--head",
            f"--port={self.port}",
            f"--num-cpus={head_cpus}",
            f'--resources={{"tune_driver": {driver_slots}}}',
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
            # each node's agent HTTP server on its own port (the fixed default clashes with any other Ray here; the
            # head's serves the job API)
            f"--dashboard-agent-listen-port={free_port()}",
        ]
        self.dashboard = f"http://127.0.0.1:{free_port()}" if dashboard else None  # the job API's address
        args += [f"--dashboard-port={self.dashboard.rsplit(':', 1)[1]}"] if dashboard else ["--include-dashboard=false"]
        self._start(args)
        self.head = self.processes() - started
        self.address = f"127.0.0.1:{self.port}"
        self.env["RAY_ADDRESS"] = self.address

    def processes(self) -> set[int]:
        """PIDs of this cluster's Ray processes (not the drivers that joined it)."""
        return ray_processes(self.mark)

    def _start(self, args: list[str]) -> None:
        result = subprocess.run(args, capture_output=True, text=True, env=self.env, timeout=180)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")

    def add_node(self, cpus: int = 1) -> int:
        """Start one more node (a raylet joining the head); returns its index."""
        started = self.processes()
        self._start(
            [
                self.ray,
                "start",
                f"--address={self.address}",
                f"--num-cpus={cpus}",
                "--disable-usage-stats",
                f"--dashboard-agent-listen-port={free_port()}",
            ]
        )
        self.nodes.append(self.processes() - started)
        self.wait_for_nodes(1 + len(self.nodes) - len(self.killed))  # the head and every node not killed
        return len(self.nodes) - 1

    def wait_for_nodes(self, n: int, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = subprocess.run(
                [self.ray, "status", f"--address={self.address}"],
                capture_output=True,
                text=True,
                env=self.env,
                timeout=60,
            )
            active = status.stdout.split("Active:")[-1].split("Pending:")[0]
            if active.count("node_") >= n:
                return
            time.sleep(1)
        raise AssertionError(f"the cluster did not reach {n} nodes:\n{status.stdout}")

    def node_ids(self) -> list[str]:
        """Ray's ids of the alive nodes, the head first (the State API: needs the dashboard)."""
        listed = subprocess.run(
            [self.ray, "list", "nodes", "--address", self.dashboard, "--format", "json", "--filter", "state=ALIVE"],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=True,
        )
        nodes = json.loads(listed.stdout)
        return [n["node_id"] for n in sorted(nodes, key=lambda n: not n["is_head_node"])]

    def kill_node(self, index: int) -> int:
        """SIGKILL a node's raylet and everything it started (its workers): what a lost machine does. Returns
        how many processes died."""
        self.killed.add(index)
        victims = set()
        for pid in self.nodes[index]:
            try:
                proc = psutil.Process(pid)
                victims.add(proc)
                victims.update(proc.children(recursive=True))
            except psutil.NoSuchProcess:
                continue
        for proc in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        return len(victims)

    def stop(self) -> None:
        """Kill exactly the processes this cluster started (`ray stop` would stop every Ray on the machine)."""
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(2)
        left = self.processes()
        assert not left, f"processes of the test cluster survived: {left}"
