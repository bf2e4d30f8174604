"""Processes as /proc shows them, for the benchmarks that watch what they start.

    process_table()     pid -> (parent pid, resident KiB) of every process
    cmdline(pid)        its raw command line (b"" once it ended); command(pid) as text
    parent(pid)         its parent's pid
    ProcessWatch        a thread sampling the peak RSS of process trees and the host's
                        lowest MemAvailable; subclasses look at each sample (observe)

Used by bench/round_overhead.py (bench/overhead_run.py) and bench/gpu_check/sampler.py.
Linux only; a process that ends between two reads is skipped, never an error.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from pathlib import Path


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, resident KiB) of every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:  # it ended meanwhile
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        table[int(entry.name)] = (int(fields["PPid"]), int(fields.get("VmRSS", "0 kB").split()[0]))
    return table


def cmdline(pid: int | str) -> bytes:
    """The process's command line, NUL-separated; b"" once it ended."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # it ended meanwhile
        return b""


def command(pid: int | str) -> str:
    """The process's command line as one line of text; "" once it ended."""
    return cmdline(pid).replace(b"\0", b" ").decode(errors="replace").strip()


def parent(pid: int | str) -> int:
    """The parent's pid (OSError once the process ended)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])  # after the command name, which may hold spaces


def tree(root: int, table: dict[int, tuple[int, int]], children: dict[int, list[int]]) -> list[int]:
    """`root` and all its descendants that are in `table`."""
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        if pid in table:
            found.append(pid)
            stack += children[pid]
    return found


def mem_available_kib() -> int:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    return next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable:"))


class ProcessWatch(threading.Thread):
    """From /proc every `period` s: the peak RSS of each process tree (a root and all its
    descendants, summed) and the lowest MemAvailable of the host. Stop it with `done.set()`."""

    def __init__(self, roots: dict[str, int], period: float = 0.2):
        super().__init__(daemon=True)
        self.roots, self.period = roots, period
        self.peak_kib = dict.fromkeys(roots, 0)
        self.min_available_kib = 1 << 60
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.period):
            table, now = process_table(), time.time()
            children = defaultdict(list)
            for pid, (ppid, _) in table.items():
                children[ppid].append(pid)
            for name, root in self.roots.items():
                pids = tree(root, table, children)
                self.peak_kib[name] = max(self.peak_kib[name], sum(table[pid][1] for pid in pids))
                self.observe(pids, table, now)
            self.min_available_kib = min(self.min_available_kib, mem_available_kib())

    def observe(self, pids: list[int], table: dict[int, tuple[int, int]], now: float) -> None:
        """Called with each tree of each sample; the base class looks no further."""
