#!/usr/bin/env python3
"""The README's test command on a busy machine, several times in a row.

    python3 bench/busy_suite.py [--runs 3] [--stress-cpus 1] [--no-demo] [--out bench/results/busy_suite.json]

A developer runs `make test` right after `make demo`, with the demo's federation still up and
other work on the machine. This brings the demo's stack up (`make demo`, unless --no-demo),
keeps `--stress-cpus` cores busy with Debian's stress-ng (installed when missing), runs
`make test` `--runs` times in a row in this checkout, and writes each run's wall time, exit
code and pytest summary line to the results file as it goes (stdlib only: it runs before
`make demo` has made the venv). It stops at the first failed
run (its log is kept beside the results file). The demo is left up, as `make demo` leaves it:
`make down` stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from common import machine  # bench/common.py

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"^=+ (.*(passed|failed).*) in [\d.]+s.*=+$", re.MULTILINE)


def stress(cpus: int) -> subprocess.Popen | None:
    if cpus <= 0:
        return None
    if shutil.which("stress-ng") is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "stress-ng"], check=True)
    return subprocess.Popen(
        ["stress-ng", "--cpu", str(cpus), "--cpu-method", "matrixprod", "--quiet"], start_new_session=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stress-cpus", type=int, default=1, help="cores kept busy by stress-ng (0: none)")
    parser.add_argument("--no-demo", action="store_true", help="leave the demo's stack as it is")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "busy_suite.json")
    args = parser.parse_args()

    if not args.no_demo:
        subprocess.run(["make", "demo"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    demo = subprocess.run(
        ["docker", "ps", "--filter", "name=nbfed-local-", "--format", "{{.Names}}"], capture_output=True, text=True
    ).stdout.split()
    result = {
        "machine": machine(docker=True, load=True),
        "stress_cpus": args.stress_cpus,
        "demo_containers": demo,
        "runs": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    busy = stress(args.stress_cpus)
    try:
        for run in range(1, args.runs + 1):
            log = args.out.with_name(f"{args.out.stem}-run{run}.log")
            started = time.monotonic()
            with open(log, "w") as f:
                done = subprocess.run(["make", "test"], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
            wall = time.monotonic() - started
            said = SUMMARY.findall(log.read_text())
            result["runs"].append(
                {
                    "run": run,
                    "wall_s": round(wall, 1),
                    "exit": done.returncode,
                    "summary": said[-1][0] if said else "",
                    "log": log.name,
                }
            )
            args.out.write_text(json.dumps(result, indent=2) + "\n")
            print(f"run {run}/{args.runs}: exit {done.returncode}, {wall / 60:.1f} min, {said[-1][0] if said else '?'}")
            if done.returncode != 0:
                break
    finally:
        if busy:
            os.killpg(busy.pid, 15)
            busy.wait()
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
