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
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from common import machine  # bench/common.py
from rich import box
from rich.console import Console
from rich.table import Table

from nbfed.convert import toml_value
from nbfed.local import LocalFederation, find_sites
from nbfed.submit import prepare_run
from nbfed.superlink import RunFailed, SuperLinkClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "bench" / "notebooks" / "overhead.ipynb"
ANCHOR = Path(os.environ.get("NBFED_RAW_FLOWER_ANCHOR", ROOT / "bench" / "raw_flower"))
TRAIN_ONLY = {"nbfed.fraction-evaluate": 0.0}


@dataclass(frozen=True)
class BenchApp:
    label: str
    transfers: int  # model copies a round sends per node: training down and up, evaluation down
    warm: bool  # nbfed's SuperNodes (warm ClientApps, short polls), else Flower's own
    overrides: dict = field(default_factory=dict)
    flower_fedavg: bool = False  # a strategy cell returning Flower's FedAvg
    value_bytes: int = 4  # bytes per parameter on the wire


APPS = {
    "raw": BenchApp("raw Flower", 2, warm=False),
    "nbfed": BenchApp("nbfed", 3, warm=True),
    "nbfed-train": BenchApp("nbfed, train only", 2, warm=True, overrides=TRAIN_ONLY),
    "nbfed-train-flower-supernode": BenchApp("nbfed, train only, Flower's SuperNode", 2, warm=False, overrides=TRAIN_ONLY),
    "nbfed-train-float16": BenchApp("nbfed, train only, float16 transfers", 2, warm=True, value_bytes=2,
                                    overrides={**TRAIN_ONLY, "nbfed.transfer-dtype": "float16"}),
    "nbfed-fedavg": BenchApp("nbfed, train only, Flower's FedAvg", 2, warm=True, overrides=TRAIN_ONLY, flower_fedavg=True),
}
DEFAULT_APPS = ["raw", "nbfed", "nbfed-train", "nbfed-train-flower-supernode"]
MIN_AVAILABLE_KIB = 1_500_000  # stop a run before the host runs out of memory, as the anchor does
QUIET_S = 30  # ask SuperLink about a run only when its events file stays quiet this long
console = Console(width=None if sys.stdout.isatty() else 200)  # a log gets the whole table


def repo_path(path: Path) -> str:
    """`path` as results record it: relative to the repository when inside it, so results name no machine's paths."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def num_params(params: int, width: int) -> int:
    """Parameters of the model the notebook and the anchor build for `params` (layers of w*w + w)."""
    return max(1, round(params / (width * width + width))) * (width * width + width)


# -- processes -------------------------------------------------------------------------------
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


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # it ended meanwhile
        return b""


class ProcessWatch(threading.Thread):
    """From /proc every `period` s: the peak RSS of each process tree (a root and all its
    descendants, summed) and of the ServerApp process alone, how long each ClientApp process
    lived (Flower starts one per message), and the lowest MemAvailable of the host."""

    def __init__(self, roots: dict[str, int], period: float = 0.2):
        super().__init__(daemon=True)
        self.roots, self.period = roots, period
        self.peak_kib = dict.fromkeys(roots, 0)
        self.serverapp_kib = 0
        self.clientapps: dict[int, list[float]] = {}  # pid -> [first seen, last seen]
        self.min_available_kib = 1 << 60
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.period):
            table, now = process_table(), time.time()
            children = defaultdict(list)
            for pid, (ppid, _) in table.items():
                children[ppid].append(pid)
            for name, root in self.roots.items():
                tree, stack = [], [root]
                while stack:
                    pid = stack.pop()
                    if pid in table:
                        tree.append(pid)
                        stack += children[pid]
                self.peak_kib[name] = max(self.peak_kib[name], sum(table[pid][1] for pid in tree))
                for pid in tree:
                    command = cmdline(pid)
                    if b"flwr-serverapp" in command:
                        self.serverapp_kib = max(self.serverapp_kib, table[pid][1])
                    elif ((b"flwr-clientapp" in command and b"/nbfed-supernode-" not in command)
                          or (b"--zygote" in command and b"--zygote" in cmdline(table[pid][0]))):
                        # Flower's own ClientApp process, or one nbfed's zygote forked (not the
                        # flwr-clientapp shim that asked for it and left)
                        self.clientapps.setdefault(pid, [now, now])[1] = now
            meminfo = Path("/proc/meminfo").read_text().splitlines()
            available = next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable:"))
            self.min_available_kib = min(self.min_available_kib, available)

    def clientapp_lifetimes(self) -> list[float]:
        return sorted(round(last - first, 1) for first, last in self.clientapps.values())


# -- one run -------------------------------------------------------------------------------
class BenchFederation(LocalFederation):
    """nbfed's local federation whose SuperNodes also carry the anchor's partition-id (nbfed
    ignores it), so that both apps run on the very same processes and flags."""

    def _spawn(self, name: str, argv: list[str]):
        if name.startswith("supernode-"):
            assert argv[-2] == "--node-config", f"LocalFederation changed how it starts SuperNodes: {argv}"
            index = list(self.sites).index(name.removeprefix("supernode-"))
            argv = [*argv[:-1], f"{argv[-1]} partition-id={index} num-partitions={len(self.sites)}"]
        return super()._spawn(name, argv)


def make_sites(root: Path, nodes: int) -> dict[str, Path]:
    """Site folders that pass nbfed's site check and hold nothing but the site's weight offset."""
    for i in range(nodes):
        (root / f"site-{i}" / "test").mkdir(parents=True)
        (root / f"site-{i}" / "train").mkdir()
        (root / f"site-{i}" / "train" / "offset.txt").write_text(f"{1e-6 * (i + 1)!r}\n")
    return find_sites(root)


def read_events(path: Path) -> list[dict]:
    """The complete lines of a JSON-lines file (a line being written is left for later)."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line]


def wait_until(finished: Callable[[list[dict]], bool], events: Path, fed: LocalFederation, client: SuperLinkClient,
               run_id: int, watch: ProcessWatch, timeout: float) -> list[dict]:
    """Follow the events file until `finished` says so. Nothing else runs meanwhile: a `flwr`
    call costs a CPU-second, so SuperLink is asked about the run only when the file stays quiet."""
    deadline, quiet_since, seen = time.monotonic() + timeout, time.monotonic(), 0
    while not finished(lines := read_events(events)):
        fed.check_alive()
        if watch.min_available_kib < MIN_AVAILABLE_KIB:
            raise RunFailed(f"stopped: the host has less than {MIN_AVAILABLE_KIB // 1024} MiB available")
        if time.monotonic() > deadline:
            raise RunFailed(f"the run did not finish within {timeout:.0f} s")
        if len(lines) != seen:
            quiet_since, seen = time.monotonic(), len(lines)
        elif time.monotonic() - quiet_since > QUIET_S:
            status, details = client.run_status(run_id)
            if status.startswith("finished:") and not finished(read_events(events)):
                raise RunFailed(f"run {run_id} ended as {status} ({details or 'no details'})")
            quiet_since = time.monotonic()
        time.sleep(0.2)
    return lines


def run_raw(client: SuperLinkClient, fed: LocalFederation, watch: ProcessWatch, work: Path, args, nodes: int) -> list[tuple[float, float]]:
    """Run the anchor's app to the end; (start, end) of every round."""
    app = shutil.copytree(args.anchor / "app", work / "app", ignore=shutil.ignore_patterns("__pycache__"))
    for path in [app, *app.rglob("*")]:  # an anchor elsewhere may be read-only; this copy is ours to delete
        path.chmod(path.stat().st_mode | 0o200)
    events = work / "events.jsonl"
    settings = {"num-server-rounds": args.rounds, "num-params": args.params, "layer-width": args.width,
                "num-nodes": nodes, "out-file": str(events)}
    overrides = work / "overrides.toml"
    overrides.write_text("".join(f'"{key}" = {toml_value(value)}\n' for key, value in settings.items()))
    run_id = client.submit(app, overrides)
    lines = wait_until(lambda lines: any(e["ev"] == "done" for e in lines), events, fed, client, run_id, watch, args.timeout)
    times = defaultdict(dict)
    for event in lines:
        if "rnd" in event:
            times[event["rnd"]][event["ev"]] = event["t"]
    return [(times[r]["cfg_start"], times[r]["agg_end"]) for r in sorted(times)]


def with_flower_fedavg(work: Path, nodes: int) -> Path:
    """The bench notebook plus a strategy cell returning Flower's own FedAvg (every reply of a
    round held at once), training only."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    cell = nbformat.v4.new_code_cell(
        "def build_strategy(config: dict):\n"
        "    from flwr.serverapp.strategy import FedAvg\n\n"
        "    return FedAvg(fraction_train=1.0, fraction_evaluate=0.0, "
        f"min_train_nodes={nodes}, min_available_nodes={nodes})\n",
        id="strategy")
    cell.metadata["tags"] = ["strategy"]
    notebook.cells.append(cell)
    work.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, work / NOTEBOOK.name)
    return work / NOTEBOOK.name


def run_nbfed(client: SuperLinkClient, fed: LocalFederation, watch: ProcessWatch, work: Path, args, nodes: int,
              app: BenchApp) -> list[tuple[float, float]]:
    """Convert a bench notebook and run it to the end as `nbfed run-local` does; (start, end) of every round."""
    notebook = with_flower_fedavg(work, nodes) if app.flower_fedavg else NOTEBOOK
    run = prepare_run(notebook, work / "results", {"num_rounds": args.rounds, "num_params": args.params,
                                                   "layer_width": args.width, "nbfed.min-sites": nodes, **app.overrides})
    run_id = client.submit(run.app_dir, run.overrides)

    def finished(lines: list[dict]) -> bool:
        if failed := [e for e in lines if e["event"] == "failed"]:
            raise RunFailed(f"the run failed on the aggregator: {failed[0]['error']}")
        return any(e["event"] == "finished" for e in lines)

    lines = wait_until(finished, run.results / "events.jsonl", fed, client, run_id, watch, args.timeout)
    started = {e["round"]: e["time"] for e in lines if e["event"] == "round_started"}
    return [(started[r["round"]], started[r["round"]] + r["duration_s"]) for r in json.loads((run.results / "rounds.json").read_text())]


def run_once(app: str, nodes: int, work: Path, args) -> dict:
    """A fresh federation, one run of `app` on it, its round times, peak memory and ClientApp processes."""
    sites = make_sites(work / "data", nodes)
    fed = BenchFederation(sites=sites, logs=work / "logs", flwr_home=work / "flwr", warm=APPS[app].warm)
    with ExitStack() as stack:
        stack.callback(fed.stop)
        t0 = time.time()
        client = fed.start()
        watch = ProcessWatch({name: proc.pid for name, proc in fed.procs.items()})
        watch.start()
        stack.callback(watch.join)
        stack.callback(watch.done.set)
        if app == "raw":
            rounds = run_raw(client, fed, watch, work, args, nodes)
        else:
            rounds = run_nbfed(client, fed, watch, work, args, nodes, APPS[app])
    kib = watch.peak_kib
    return {
        "app": app,
        "nodes": nodes,
        "startup_s": round(rounds[0][1] - t0, 3),
        "rounds_s": [round(end - start, 3) for start, end in rounds],
        "between_rounds_s": [round(start - end, 3) for (_, end), (start, _) in zip(rounds, rounds[1:], strict=False)],
        "peak_rss_mib": {"superlink_tree": kib["superlink"] // 1024, "serverapp": watch.serverapp_kib // 1024,
                         "supernode_trees": [kib[name] // 1024 for name in kib if name != "superlink"]},
        "clientapp_lifetimes_s": watch.clientapp_lifetimes(),
        "min_available_mib": watch.min_available_kib // 1024,
    }


# -- summary -------------------------------------------------------------------------------
def spread(values: list[float]) -> dict | None:
    return {"median": round(statistics.median(values), 3), "min": min(values), "max": max(values), "n": len(values)} if values else None


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
        "peak_supernode_tree_mib": {"median": statistics.median(m for run in runs for m in run["peak_rss_mib"]["supernode_trees"]),
                                    "max": max(m for run in runs for m in run["peak_rss_mib"]["supernode_trees"])},
    }


def table(summaries: list[dict], args, markdown: bool = False) -> Table:
    def s(value: dict | None, ranged: bool = True) -> str:
        if value is None:
            return "-"
        return f"{value['median']:.2f} ({value['min']:.2f}-{value['max']:.2f})" if ranged and value["n"] > 1 else f"{value['median']:.2f}"

    title = None if markdown else (f"{num_params(args.params, args.width):,} parameters, "
                                   f"{args.rounds} rounds x {args.runs} runs")
    out = Table("app", "nodes", "startup s", "round 1 s", "rounds 2+ s", "between s", "ClientApp s", "MB/round", "MB/s",
                "SuperLink MiB (ServerApp)", "SuperNode MiB (max)",
                title=title, box=box.MARKDOWN if markdown else box.HEAVY_HEAD)
    for row in summaries:
        node = row["peak_supernode_tree_mib"]
        out.add_row(row["app"], str(row["nodes"]), s(row["startup_s"], False), s(row["round_1_s"]), s(row["later_rounds_s"]),
                    s(row["between_rounds_s"], False), s(row["clientapp_s"], False),
                    f"{row['bytes_per_round'] / 1e6:.1f}", f"{row['throughput_mb_s']:.1f}",
                    f"{row['peak_superlink_tree_mib']:.0f} ({row['peak_serverapp_mib']:.0f})",
                    f"{node['median']:.0f} ({node['max']:.0f})")
    return out


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


def write_markdown(path: Path, results: dict, summaries: list[dict], args) -> None:
    m = results["machine"]
    rendered = io.StringIO()
    Console(file=rendered, width=400, color_system=None).print(table(summaries, args, markdown=True))
    path.write_text("\n".join([
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
    ]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=int, default=1_000_000, help="model parameters (rounded to whole layers)")
    parser.add_argument("--width", type=int, default=1000, help="the layers are Linear(width, width)")
    parser.add_argument("--nodes", type=int, nargs="+", default=[3], help="sites; several counts for scaling")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each app, each on fresh processes")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "round_overhead.json")
    parser.add_argument("--apps", nargs="+", choices=list(APPS), help=f"default: {' '.join(DEFAULT_APPS)}; with --smoke: raw nbfed")
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
        console.print(f"[yellow]no raw-Flower anchor at {args.anchor} (--anchor or NBFED_RAW_FLOWER_ANCHOR): nbfed only[/yellow]")
        apps.remove("raw")
    results = {"command": " ".join(["bench/round_overhead.py", *sys.argv[1:]]), "machine": machine(flower=True, load=True),
               "settings": {"params": num_params(args.params, args.width), "params_requested": args.params,
                            "width": args.width, "nodes": args.nodes, "rounds": args.rounds, "runs": args.runs,
                            "smoke": args.smoke, "apps": apps, "anchor": repo_path(args.anchor) if "raw" in apps else None},
               "runs": []}
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
                    console.print(f"{label}: startup {run['startup_s']:.1f} s, rounds "
                                  f"{', '.join(f'{s:.2f}' for s in run['rounds_s'])} s")
    except BaseException:
        console.print(f"[red]stopped; every process's log is under {work}[/red]")
        raise
    if not args.keep:
        shutil.rmtree(work)

    summaries = [summarize(app, nodes, [r for r in results["runs"] if r["app"] == app and r["nodes"] == nodes], args)
                 for nodes in args.nodes for app in apps]
    results["summary"] = summaries
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(args.out.with_suffix(".md"), results, summaries, args)
    console.print(table(summaries, args))
    console.print(f"results: {args.out} and {args.out.with_suffix('.md')}" + (f"; logs: {work}" if args.keep else ""))


if __name__ == "__main__":
    main()
