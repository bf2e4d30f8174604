"""What every benchmark in bench/ records alike: the machine it ran on, and medians with ranges.

The scripts run as `python bench/<script>.py`, so this directory is first on sys.path and they
import this file as `common`.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path


def machine(*, flower: bool = False, docker: bool = False, load: bool = False, **extra: object) -> dict:
    """CPUs, CPU model, memory and Python; with `flower` the flwr and torch versions, with `docker`
    the Docker Engine's, with `load` the load average (the machine may be shared: how busy it was
    before the first run); then `extra` and the date."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), platform.processor()
    )
    found: dict = {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_mib": int(Path("/proc/meminfo").read_text().split()[1]) // 1024,
        "python": platform.python_version(),
    }
    if flower:
        found |= {"flwr": version("flwr"), "torch": version("torch")}
    if docker:
        found["docker"] = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True
        ).stdout.strip()
    if load:
        found["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return {**found, **extra, "date": datetime.now(UTC).isoformat(timespec="seconds")}


def summary(values: list[float], digits: int = 2) -> dict:
    """Median, range and every value, rounded to `digits`."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": [round(v, digits) for v in values],
    }
