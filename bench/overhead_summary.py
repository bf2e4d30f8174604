"""bench/round_overhead.py's results summarised: per app and node count, as JSON, a table and Markdown."""

from __future__ import annotations

import io
import statistics
from pathlib import Path

from overhead_run import APPS, num_params  # bench/overhead_run.py
from rich import box
from rich.console import Console
from rich.table import Table

# What the markdown says under the table (flush left, so each line stays as it is written out).
NOTES = """\
- Raw Flower's round is training only, and so is every `train only` row (`nbfed.fraction-evaluate = 0`);
  nbfed's default also evaluates at every site each round, so its round moves the model 3 times per node
  instead of 2 (MB/round: 10^6 bytes of float32 weights). Raw Flower and `Flower's SuperNode` rows run
  Flower's own SuperNodes; the others nbfed's (warm ClientApps, short polls). `Flower's FedAvg`: a strategy
  cell with Flower's FedAvg, which holds every reply at once; nbfed's folds each in as it arrives.
- startup: processes spawned to round 1 done (SuperLink and SuperNodes starting, `flwr run`, the ServerApp).
- round 1, rounds 2+: median (range) over runs, and over the later rounds of every run; MB/s uses rounds 2+.
- between: median end of one round to the start of the next (nbfed saves its checkpoint there).
- ClientApp: median lifetime of a ClientApp process, one per message: Flower's SuperNode starts
  `flwr-clientapp` (spawn, imports), nbfed's forks a warm one; then the app's work and the reply (seen every 0.2 s).
- Peak RSS summed over each process tree: SuperLink with SuperExec and the ServerApp (the ServerApp alone
  in brackets); each SuperNode with SuperExec and its ClientApps (median and max over nodes and runs)."""


def spread(values: list[float]) -> dict | None:
    return (
        {"median": round(statistics.median(values), 3), "min": min(values), "max": max(values), "n": len(values)}
        if values
        else None
    )


def summarize(app: str, nodes: int, runs: list[dict], args) -> dict:
    later = [s for run in runs for s in run["rounds_s"][1:]]
    round_1 = spread([run["rounds_s"][0] for run in runs])
    typical = (spread(later) or round_1)["median"]  # later rounds; round 1 when there is no other
    label, transfers = APPS[app].label, APPS[app].transfers
    moved = transfers * APPS[app].value_bytes * num_params(args.params, args.width) * nodes
    return {
        "app": label,
        "key": app,
        "nodes": nodes,
        "runs": len(runs),
        "startup_s": spread([run["startup_s"] for run in runs]),
        "round_1_s": round_1,
        "later_rounds_s": spread(later),
        "between_rounds_s": spread([s for run in runs for s in run["between_rounds_s"]]),
        "clientapp_s": spread([s for run in runs for s in run["clientapp_lifetimes_s"]]),
        "model_transfers_per_node": transfers,
        "bytes_per_round": moved,
        "throughput_mb_s": round(moved / 1e6 / typical, 2),
        "peak_superlink_tree_mib": statistics.median(run["peak_rss_mib"]["superlink_tree"] for run in runs),
        "peak_serverapp_mib": statistics.median(run["peak_rss_mib"]["serverapp"] for run in runs),
        "peak_supernode_tree_mib": {
            "median": statistics.median(m for run in runs for m in run["peak_rss_mib"]["supernode_trees"]),
            "max": max(m for run in runs for m in run["peak_rss_mib"]["supernode_trees"]),
        },
    }


def table(summaries: list[dict], args, markdown: bool = False) -> Table:
    def s(value: dict | None, ranged: bool = True) -> str:
        if value is None:
            return "-"
        return (
            f"{value['median']:.2f} ({value['min']:.2f}-{value['max']:.2f})"
            if ranged and value["n"] > 1
            else f"{value['median']:.2f}"
        )

    title = (
        None
        if markdown
        else (f"{num_params(args.params, args.width):,} parameters, {args.rounds} rounds x {args.runs} runs")
    )
    out = Table(
        "app",
        "nodes",
        "startup s",
        "round 1 s",
        "rounds 2+ s",
        "between s",
        "ClientApp s",
        "MB/round",
        "MB/s",
        "SuperLink MiB (ServerApp)",
        "SuperNode MiB (max)",
        title=title,
        box=box.MARKDOWN if markdown else box.HEAVY_HEAD,
    )
    for row in summaries:
        node = row["peak_supernode_tree_mib"]
        out.add_row(
            row["app"],
            str(row["nodes"]),
            s(row["startup_s"], False),
            s(row["round_1_s"]),
            s(row["later_rounds_s"]),
            s(row["between_rounds_s"], False),
            s(row["clientapp_s"], False),
            f"{row['bytes_per_round'] / 1e6:.1f}",
            f"{row['throughput_mb_s']:.1f}",
            f"{row['peak_superlink_tree_mib']:.0f} ({row['peak_serverapp_mib']:.0f})",
            f"{node['median']:.0f} ({node['max']:.0f})",
        )
    return out


def write_markdown(path: Path, results: dict, summaries: list[dict], args) -> None:
    m = results["machine"]
    rendered = io.StringIO()
    Console(file=rendered, width=400, color_system=None).print(table(summaries, args, markdown=True))
    path.write_text(
        "\n".join(
            [
                "# Round overhead: nbfed against raw Flower",
                "",
                f"`{results['command']}` on {m['date']}: {num_params(args.params, args.width):,} parameters, "
                f"{args.rounds} rounds, {args.runs} run(s) per app, every process on one machine over loopback "
                f"({m['cpus']} CPUs, {m['cpu']}, {m['memory_mib']} MiB, "
                f"load average {m['load_average'][0]} at the start; "
                f"Python {m['python']}, flwr {m['flwr']}, torch {m['torch']}).",
                "",
                "\n".join(line.rstrip() for line in rendered.getvalue().strip("\n").splitlines() if line.strip()),
                "",
                NOTES,
                f"- Every run is in `{path.with_suffix('.json').name}`.",
                "",
            ]
        )
    )
