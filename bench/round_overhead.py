#!/usr/bin/env python3
"""Round overhead of nbfed's generated app against raw Flower (issue 7, benchmarks against the paper).

    .venv/bin/python bench/round_overhead.py --params 1000000 --nodes 3 --rounds 3 [--runs 3]
        [--apps raw nbfed nbfed-train ...] [--out bench/results/round_overhead.json] [--anchor DIR] [--smoke]
    .venv/bin/python bench/round_overhead.py --nodes 1 3 10 30 --apps nbfed-train nbfed-fedavg ...   (scaling)

Every app runs on one harness: nbfed's LocalFederation (SuperLink and one SuperNode per site as
local processes on loopback, --insecure, free ports), a fresh one for every run, the app submitted
with `flwr run` by the same client and followed through the events file its ServerApp writes.
Each repetition runs every app in turn.

  raw         raw Flower: the anchor's app (--anchor, default $NBFED_RAW_FLOWER_ANCHOR or
              bench/raw_flower, Flower 1.41 by hand) on Flower's own SuperNodes. FedAvg that only
              trains; its ClientApp adds 1e-6 x (partition-id + 1) to every weight. Round:
              configure_train to the end of aggregate_train, from its events.
  nbfed       bench/notebooks/overhead.ipynb, converted and run as `nbfed run-local` runs it, on
              nbfed's SuperNodes (nbfed/warm_supernode.py, as in the site image): the same model
              and no-op training under nbfed's default FedAvg (StreamingFedAvg), which also
              evaluates at every site each round; the round's checkpoint is saved after it.
              Round: duration_s in rounds.json (configure_train to the end of evaluation).
  nbfed-train the same with `nbfed.fraction-evaluate = 0`: training only, as the anchor does.
  nbfed-train-isolated
              nbfed-train with each site's ClientApps started by a SuperExec process of its own
              (Flower's process isolation, as the site stack's `clientapp` container runs them).
  nbfed-train-flower-supernode
              nbfed-train on Flower's own SuperNodes: what nbfed's ServerApp alone changes.
  nbfed-train-float16
              nbfed-train with `nbfed.transfer-dtype = "float16"`: half the bytes each way.
  nbfed-fedavg
              nbfed-train with a strategy cell returning Flower's FedAvg, which holds every
              reply of a round at once: against nbfed-train, what folding replies saves.

The model is the anchor's: round(P / (w*w + w)) Linear(w, w) layers, w = 1000. Reported per app:
startup (spawning the processes to the end of round 1), round 1, later rounds (median and range),
the time between rounds (checkpoints and bookkeeping), the model bytes a round moves (training
sends the model down and up, nbfed's evaluation sends it down once more) and the throughput that
makes, and peak RSS of the SuperLink tree (SuperLink, SuperExec, ServerApp; the ServerApp alone
too) and of each SuperNode tree (SuperNode, SuperExec, ClientApps), from /proc every 0.2 s.

--nodes takes several counts (scaling: round time and memory against the number of sites).
Where --anchor holds no app/, only nbfed runs. --smoke: 100 k parameters, 2 nodes, 1 round,
1 run, raw and nbfed; keeps the script working in CI, measures nothing.

One run is bench/overhead_run.py (processes watched with bench/processes.py), the summary
and its table bench/overhead_summary.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from common import machine  # bench/common.py
from overhead_run import ANCHOR, APPS, DEFAULT_APPS, ROOT, num_params, run_once  # bench/overhead_run.py
from overhead_summary import summarize, table, write_markdown  # bench/overhead_summary.py
from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 200)  # a log gets the whole table


def repo_path(path: Path) -> str:
    """`path` as results record it: relative to the repository when inside it, so results name no machine's paths."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=int, default=1_000_000, help="model parameters (rounded to whole layers)")
    parser.add_argument("--width", type=int, default=1000, help="the layers are Linear(width, width)")
    parser.add_argument("--nodes", type=int, nargs="+", default=[3], help="sites; several counts for scaling")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each app, each on fresh processes")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "round_overhead.json")
    parser.add_argument(
        "--apps", nargs="+", choices=list(APPS), help=f"default: {' '.join(DEFAULT_APPS)}; with --smoke: raw nbfed"
    )
    parser.add_argument("--anchor", type=Path, default=ANCHOR, help="the raw-Flower anchor (its app/ is run)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one run may take")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (every process's log)")
    parser.add_argument("--smoke", action="store_true", help="100 k parameters, 2 nodes, 1 round, 1 run")
    args = parser.parse_args()
    if args.smoke:
        args.params, args.width, args.nodes, args.rounds, args.runs = 100_000, 100, [2], 1, 1
    # SIGTERM (a CI timeout) must stop the federation too: SystemExit unwinds like Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))

    apps = args.apps or (["raw", "nbfed"] if args.smoke else list(DEFAULT_APPS))
    if "raw" in apps and not (args.anchor / "app" / "pyproject.toml").is_file():
        console.print(
            f"[yellow]no raw-Flower anchor at {args.anchor} (--anchor or NBFED_RAW_FLOWER_ANCHOR): nbfed only[/yellow]"
        )
        apps.remove("raw")
    results = {
        "command": " ".join(["bench/round_overhead.py", *sys.argv[1:]]),
        "machine": machine(flower=True, load=True),
        "settings": {
            "params": num_params(args.params, args.width),
            "params_requested": args.params,
            "width": args.width,
            "nodes": args.nodes,
            "rounds": args.rounds,
            "runs": args.runs,
            "smoke": args.smoke,
            "apps": apps,
            "anchor": repo_path(args.anchor) if "raw" in apps else None,
        },
        "runs": [],
    }
    work = Path(tempfile.mkdtemp(prefix="nbfed-round-overhead-"))
    try:
        for k in range(1, args.runs + 1):
            for nodes in args.nodes:
                for app in apps:  # interleaved, so drift in the machine's load touches every app alike
                    label = f"{APPS[app].label}, {nodes} nodes, run {k}/{args.runs}"
                    with console.status(label):
                        run = {"run": k, **run_once(app, nodes, work / f"{app}-{nodes}-{k}", args)}
                    results["runs"].append(run)
                    args.out.parent.mkdir(parents=True, exist_ok=True)  # so far, in case a later run is cut short
                    args.out.write_text(json.dumps(results, indent=2) + "\n")
                    console.print(
                        f"{label}: startup {run['startup_s']:.1f} s, rounds "
                        f"{', '.join(f'{s:.2f}' for s in run['rounds_s'])} s"
                    )
    except BaseException:
        console.print(f"[red]stopped; every process's log is under {work}[/red]")
        raise
    if not args.keep:
        shutil.rmtree(work)

    summaries = [
        summarize(app, nodes, [r for r in results["runs"] if r["app"] == app and r["nodes"] == nodes], args)
        for nodes in args.nodes
        for app in apps
    ]
    results["summary"] = summaries
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(args.out.with_suffix(".md"), results, summaries, args)
    console.print(table(summaries, args))
    console.print(f"results: {args.out} and {args.out.with_suffix('.md')}" + (f"; logs: {work}" if args.keep else ""))


if __name__ == "__main__":
    main()
