#!/usr/bin/env python3
"""Where a round of the template notebook's CNN goes, on three sites (issue 7, item 5).

    .venv/bin/python bench/template_rounds.py [--runs 3] [--rounds 3] [--scale 0.1]
        [--out bench/results/template_rounds.json] [--smoke]

Runs `nbfed run-local notebook/template.ipynb` (SuperLink and nbfed's SuperNodes as local
processes, on `nbfed synth-data` patches at --scale) --runs times and reads every round from
its rounds.json: the round's duration, the slowest site's seconds in the notebook's code to
train and to evaluate (load_data, build_model, train or evaluate; each site reports its own), the
overhead (the rest: messages, ClientApps, (de)serialisation, aggregation), the model bytes the
round moved (each site: down and up to train, down to evaluate) and the throughput those bytes
make over the overhead. Medians and ranges over every
round of every run go to --out with the machine; a table is printed. --smoke: one run of one
round on a small dataset; keeps the script working in CI, measures nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from common import machine  # bench/common.py
from overhead_summary import spread  # bench/overhead_summary.py
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NOTEBOOK = ROOT / "notebook" / "template.ipynb"
console = Console()


def one_run(work: Path, data: Path, rounds: int) -> list[dict]:
    """A run-local run; each round with its slowest site's work, overhead and bytes moved."""
    results = work / "results"
    done = subprocess.run(
        [
            str(BIN / "nbfed"),
            "run-local",
            str(NOTEBOOK),
            "--data",
            str(data),
            "--results",
            str(results),
            "--set",
            f"num_rounds={rounds}",
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"nbfed run-local failed:\n{(done.stdout + done.stderr)[-5000:]}")
    model = torch.load(results / "model" / "global_model.pt", map_location="cpu")
    model_bytes = sum(t.numel() * t.element_size() for t in model.values())
    out = []
    for r in json.loads((results / "rounds.json").read_text()):
        work_s = r["site_seconds"]
        moved = model_bytes * (2 * len(work_s["train"]) + len(work_s.get("evaluate", {})))
        out.append(
            {
                "round": r["round"],
                "duration_s": r["duration_s"],
                "overhead_s": r["overhead_s"],
                "slowest_train_s": max(work_s["train"].values()),
                "slowest_evaluate_s": max(work_s.get("evaluate", {}).values(), default=0.0),
                "model_bytes": model_bytes,
                "bytes_moved": moved,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.1, help="synthetic data, as a fraction of the paper's")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "template_rounds.json")
    parser.add_argument("--smoke", action="store_true", help="one run of one round, little data")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.rounds, args.scale = 1, 1, 0.02

    work = Path(tempfile.mkdtemp(prefix="nbfed-bench-template-"))
    data = work / "data"
    subprocess.run(
        [str(BIN / "nbfed"), "synth-data", "-o", str(data), "--scale", str(args.scale)], check=True, capture_output=True
    )
    runs = []
    for k in range(args.runs):
        with console.status(f"run {k + 1}/{args.runs}: {args.rounds} rounds of the template on 3 sites"):
            runs.append(one_run(work / f"run-{k}", data, args.rounds))
    rounds = [r for run in runs for r in run]
    summary = {
        key: spread([r[key] for r in rounds])
        for key in ("duration_s", "slowest_train_s", "slowest_evaluate_s", "overhead_s")
    }
    model_bytes, moved = rounds[0]["model_bytes"], rounds[0]["bytes_moved"]
    summary["overhead_share"] = round(summary["overhead_s"]["median"] / summary["duration_s"]["median"], 3)
    summary["mb_per_s_over_overhead"] = round(moved / 1e6 / summary["overhead_s"]["median"], 2)
    results = {
        "machine": machine(flower=True, load=True),
        "smoke": args.smoke,
        "scale": args.scale,
        "rounds": args.rounds,
        "model_bytes": model_bytes,
        "bytes_moved_per_round": moved,
        "summary": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    table = Table(
        "per round",
        "median s",
        "range s",
        title=f"template CNN, 3 sites, {args.rounds} rounds x {args.runs} runs: "
        f"{model_bytes / 1e6:.2f} MB model, {moved / 1e6:.1f} MB moved a round",
    )
    for key, label in [
        ("duration_s", "round"),
        ("slowest_train_s", "slowest site, notebook code to train"),
        ("slowest_evaluate_s", "slowest site, notebook code to evaluate"),
        ("overhead_s", "overhead (the rest)"),
    ]:
        table.add_row(label, f"{summary[key]['median']:.2f}", f"{summary[key]['min']:.2f}-{summary[key]['max']:.2f}")
    console.print(table)
    console.print(
        f"overhead {summary['overhead_share']:.0%} of a round; the model bytes make "
        f"{summary['mb_per_s_over_overhead']:.1f} MB/s over it. Results in {args.out}"
    )


if __name__ == "__main__":
    main()
