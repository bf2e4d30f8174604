#!/usr/bin/env python3
"""Round time over capped cross-country links, and deploy.yml by stage on separate hosts
(issue 7, items 8 and 4).

    .venv/bin/python bench/links.py [--rate 100mbit] [--params 138000000] [--rounds 2]
        [--dtype float32 --dtype float16] [--sites 3] [--out bench/results/links.json] [--smoke]

On the multi-host harness of tests/e2e (an aggregator and --sites sites, each a container with
its own address, sshd and Docker Engine, reached by Ansible over SSH):

  1. deploy.yml with the round-overhead notebook, images delivered as archives, to hosts that
     hold no image and again with nothing changed: the total, the seconds per stage
     (profile_tasks) and when the run is submitted;
  2. every site's link capped at --rate both ways with tc tbf, then measured with one TCP
     transfer each way between the site and the aggregator host;
  3. playbooks/run.yml once per --dtype: bench/notebooks/overhead.ipynb at --params, training
     only. Every round each site receives the model and sends its update back over its own
     link, so no round can be shorter than 2 x model bytes / rate: the physical limit each
     round is set against.

All hosts share this machine's cores and memory: what is left above the limit is the
machine as much as nbfed. --smoke: one site, a small model, one round, float16 (about 4
minutes, measures nothing). CI runs `measure` on the e2e suite's consortium instead
(tests/e2e/test_multihost.py), which has its hosts up already.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from common import machine  # noqa: E402  (bench/common.py)
from deploy import playbook, stages, until  # noqa: E402  (bench/deploy.py)
from harness import Hosts, group_vars, host_image  # noqa: E402
from overhead_run import num_params  # noqa: E402  (bench/overhead_run.py)

NOTEBOOK = ROOT / "bench" / "notebooks" / "overhead.ipynb"
WIDTH = 1000  # the notebook's layer_width
PROBE_PORT = 9999
# On the aggregator host: for each site, send it `n` bytes, then take `n` bytes from it.
SERVE = """import socket,sys
s=socket.create_server(('',int(sys.argv[1])))
for i in range(2*int(sys.argv[2])):
    c,_=s.accept()
    if i%2==0: c.sendall(bytes(int(sys.argv[3])))
    else:
        while c.recv(1<<20): pass
    c.close()
"""
# On a site host: Mbit/s received, then sent (the upload ends when the aggregator closes).
PROBE = """import socket,sys,time
host,port,n=sys.argv[1],int(sys.argv[2]),int(sys.argv[3])
def connect():
    for _ in range(100):
        try: return socket.create_connection((host,port))
        except OSError: time.sleep(0.1)
    raise SystemExit('no probe server on %s:%d' % (host,port))
c=connect();t=time.monotonic();got=0
while b:=c.recv(1<<20): got+=len(b)
down=time.monotonic()-t;c.close()
c=connect();t=time.monotonic();c.sendall(bytes(n));c.shutdown(socket.SHUT_WR);c.recv(1)
up=time.monotonic()-t
print(got*8/down/1e6,n*8/up/1e6)
"""
console = Console()


def bits_per_second(rate: str) -> float:
    """tc's rate syntax (SI units, as tc reads them): 100mbit -> 1e8."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(kbit|mbit|gbit)", rate)
    if not m:
        sys.exit(f"--rate {rate!r}: give a number and kbit, mbit or gbit (tc's units), like 100mbit")
    return float(m[1]) * {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}[m[2]]


def measure_links(hosts: Hosts, sites: list[str], probe_bytes: int) -> dict[str, dict]:
    """Mbit/s each site's link carries, each way, in one TCP transfer."""
    aggregator = hosts.address["aggregator"]
    hosts.exec(
        "aggregator",
        "sh",
        "-c",
        f'python3 -c "$0" {PROBE_PORT} {len(sites)} {probe_bytes} </dev/null >/dev/null 2>&1 &',
        SERVE,
    )
    measured = {}
    for site in sites:
        down, up = map(
            float,
            hosts.exec(
                site, "python3", "-c", PROBE, aggregator, str(PROBE_PORT), str(probe_bytes), timeout=300
            ).stdout.split(),
        )
        measured[site] = {"download_mbit_s": round(down, 1), "upload_mbit_s": round(up, 1)}
    return measured


def measure(
    hosts: Hosts,
    inventory: str,
    results_dir: Path,
    sites: list[str],
    rate: str,
    params: int,
    rounds: int,
    dtypes: list[str],
    write: Callable[[dict], None] = lambda _: None,
) -> dict:
    """Cap every site's link at `rate`, measure the links, then run the overhead notebook once
    per transfer dtype on the deployment `inventory` describes; the caps are lifted at the end."""
    measured: dict = {"links": {}, "runs": []}
    try:
        for site in sites:
            hosts.cap_link(site, rate)
        probe_bytes = int(min(bits_per_second(rate) / 8 * 4, 50e6))  # about 4 s a way
        with console.status(f"measuring the capped links ({probe_bytes / 1e6:.0f} MB each way)"):
            measured["links"] = measure_links(hosts, sites, probe_bytes)
        size = num_params(params, WIDTH)
        for dtype in dtypes:
            name = f"links-{dtype}-{int(time.time())}"
            model_bytes = size * (4 if dtype == "float32" else 2)
            with console.status(
                f"{rounds} round(s) of {size / 1e6:.0f} M parameters, {dtype} transfers, over {rate} links"
            ):
                playbook(
                    "playbooks/run.yml",
                    {
                        "nbfed_notebook": str(NOTEBOOK),
                        "run_name": name,
                        "nbfed_rounds": rounds,
                        "run_settings": {
                            "num_params": params,
                            "nbfed.transfer-dtype": dtype,
                            "nbfed.fraction-evaluate": 0,
                        },
                    },
                    inventory=inventory,
                )
            durations = [r["duration_s"] for r in json.loads((results_dir / name / "rounds.json").read_text())]
            limit = 2 * model_bytes * 8 / bits_per_second(rate)
            measured["runs"].append(
                {
                    "dtype": dtype,
                    "model_bytes": model_bytes,
                    "rounds_s": [round(r, 1) for r in durations],
                    "round_median_s": round(statistics.median(durations), 1),
                    "physical_limit_s": round(limit, 1),
                    "over_limit": round(statistics.median(durations) / limit, 2),
                }
            )
            write(measured)  # after every run: a later one may fail
    finally:
        for site in sites:
            hosts.cap_link(site, None)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", default="100mbit", help="each site's link, both ways (tc units)")
    parser.add_argument("--params", type=int, default=138_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dtype", action="append", choices=["float32", "float16"])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--base-image", default=os.environ.get("NBFED_BASE_IMAGE", "nbfed/base:bookworm"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "links.json")
    parser.add_argument(
        "--smoke", action="store_true", help="one site, small model, one round: checks the script end to end"
    )
    args = parser.parse_args()
    if args.smoke:
        args.sites, args.params, args.rounds, args.dtype = 1, 100_000, 1, ["float16"]
    bits_per_second(args.rate)  # a wrong rate stops here, before any host starts
    sites = [f"site-{chr(ord('a') + i)}" for i in range(args.sites)]

    def write(measured: dict) -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**results, **measured}, indent=2) + "\n")

    work = Path(tempfile.mkdtemp(prefix="nbfed-bench-links-"))
    data = work / "data"
    (data / "test").mkdir(parents=True)
    (data / "train").mkdir()
    settings = group_vars(
        work,
        args.base_image,
        nbfed_notebook=str(NOTEBOOK),
        nbfed_rounds=1,
        nbfed_min_sites=len(sites),
        nbfed_fraction_train=1.0,
        nbfed_round_timeout=3600,
    )
    results: dict = {
        "machine": machine(docker=True),
        "smoke": args.smoke,
        "rate": args.rate,
        "sites": len(sites),
        "params": num_params(args.params, WIDTH),
        "rounds": args.rounds,
    }
    with (
        console.status(f"starting {len(sites)} site hosts and an aggregator host"),
        Hosts(["aggregator", *sites], work, host_image(args.base_image)) as hosts,
    ):
        for i, site in enumerate(sites):  # the notebook's data: the site's weight offset
            (data / "train" / "offset.txt").write_text(f"{1e-6 * (i + 1)!r}\n")
            hosts.copy_to(site, data, "/srv/nbfed/data")
        inventory = str(hosts.write_inventory(work / "inventory", sites, settings))

        for deploy in ("first deploy", "warm deploy"):  # hosts with no image, then nothing changed
            with console.status(f"{deploy}: deploy.yml on the hosts"):
                took, out = playbook("deploy.yml", {}, inventory=inventory)
            results[deploy] = {
                "total_s": round(took, 1),
                "reaches_training_s": round(until(out, "TASK [run : Submit run"), 1),
                "stages_s": {k: round(v, 1) for k, v in stages(out, took).items()},
            }
        results.update(
            measure(
                hosts,
                inventory,
                work / "results",
                sites,
                args.rate,
                args.params,
                args.rounds,
                args.dtype or ["float32", "float16"],
                write,
            )
        )
        playbook("playbooks/teardown.yml", {}, inventory=inventory)
    write({})
    params = results["params"]

    links = Table("site", "download Mbit/s", "upload Mbit/s", title=f"links capped at {args.rate} (tc tbf)")
    for site, link in results["links"].items():
        links.add_row(site, f"{link['download_mbit_s']:.0f}", f"{link['upload_mbit_s']:.0f}")
    rounds = Table(
        "transfers",
        "model MB",
        "round s (median)",
        "rounds s",
        "physical limit s",
        "x limit",
        title=f"{params / 1e6:.1f} M parameters, {len(sites)} sites, training only",
    )
    for run in results["runs"]:
        rounds.add_row(
            run["dtype"],
            f"{run['model_bytes'] / 1e6:.0f}",
            f"{run['round_median_s']:.1f}",
            ", ".join(f"{r:.1f}" for r in run["rounds_s"]),
            f"{run['physical_limit_s']:.1f}",
            f"{run['over_limit']:.2f}",
        )
    first, warm = results["first deploy"], results["warm deploy"]
    deploy = Table("stage", "first deploy s", "warm deploy s", title=f"deploy.yml on {len(sites) + 1} hosts")
    for stage, seconds in first["stages_s"].items():
        deploy.add_row(stage, f"{seconds:.1f}", f"{warm['stages_s'].get(stage, 0):.1f}")
    deploy.add_row("run submitted at", f"{first['reaches_training_s']:.1f}", f"{warm['reaches_training_s']:.1f}")
    deploy.add_row("total", f"{first['total_s']:.1f}", f"{warm['total_s']:.1f}")
    console.print(deploy, links, rounds)
    console.print(f"results in {args.out}")


if __name__ == "__main__":
    main()
