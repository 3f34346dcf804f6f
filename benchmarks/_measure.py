"""Measuring helpers for the benchmark scripts: wall time and peak memory of a process tree."""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass

import psutil


@dataclass
class Measured:
    wall_s: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str
    cpu_s: float = 0.0
    """User + system CPU of the process tree, as last sampled per process."""


def run_measured(cmd: list[str], env: dict | None = None, interval_s: float = 0.05) -> Measured:
    """Run `cmd`, sampling the summed RSS of it and all its descendants (Ray workers included)
    and each one's CPU time."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0.0
    cpu: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                rss = 0
                for p in procs:
                    with p.oneshot():
                        rss += p.memory_info().rss
                        times = p.cpu_times()
                        cpu[p.pid] = times.user + times.system
                peak = max(peak, rss / 2**20)
            except psutil.Error:
                pass
            time.sleep(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    return Measured(wall, peak, proc.returncode, out, err, sum(cpu.values()))
