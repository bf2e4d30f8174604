"""One run of bench/round_overhead.py: a fresh local federation, one app on it, its rounds and memory.

The apps (APPS) and the model size (num_params) are described in bench/round_overhead.py.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from processes import ProcessWatch, cmdline  # bench/processes.py

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
    isolated: bool = False  # the ClientApps from a SuperExec apart from the SuperNode, as at a site
    overrides: dict = field(default_factory=dict)
    flower_fedavg: bool = False  # a strategy cell returning Flower's FedAvg
    value_bytes: int = 4  # bytes per parameter on the wire


APPS = {
    "raw": BenchApp("raw Flower", 2, warm=False),
    "nbfed": BenchApp("nbfed", 3, warm=True),
    "nbfed-train": BenchApp("nbfed, train only", 2, warm=True, overrides=TRAIN_ONLY),
    "nbfed-train-isolated": BenchApp(
        "nbfed, train only, ClientApps apart (process isolation)", 2, warm=True, isolated=True, overrides=TRAIN_ONLY
    ),
    "nbfed-train-flower-supernode": BenchApp(
        "nbfed, train only, Flower's SuperNode", 2, warm=False, overrides=TRAIN_ONLY
    ),
    "nbfed-train-float16": BenchApp(
        "nbfed, train only, float16 transfers",
        2,
        warm=True,
        value_bytes=2,
        overrides={**TRAIN_ONLY, "nbfed.transfer-dtype": "float16"},
    ),
    "nbfed-fedavg": BenchApp(
        "nbfed, train only, Flower's FedAvg", 2, warm=True, overrides=TRAIN_ONLY, flower_fedavg=True
    ),
}
DEFAULT_APPS = ["raw", "nbfed", "nbfed-train", "nbfed-train-flower-supernode"]
MIN_AVAILABLE_KIB = 1_500_000  # stop a run before the host runs out of memory, as the anchor does
QUIET_S = 30  # ask SuperLink about a run only when its events file stays quiet this long


def num_params(params: int, width: int) -> int:
    """Parameters of the model the notebook and the anchor build for `params` (layers of w*w + w)."""
    return max(1, round(params / (width * width + width))) * (width * width + width)


class FlowerWatch(ProcessWatch):
    """ProcessWatch that also keeps the peak RSS of the ServerApp process alone and how long
    each ClientApp process lived (Flower starts one per message)."""

    def __init__(self, roots: dict[str, int], period: float = 0.2):
        super().__init__(roots, period)
        self.serverapp_kib = 0
        self.clientapps: dict[int, list[float]] = {}  # pid -> [first seen, last seen]

    def observe(self, pids: list[int], table: dict[int, tuple[int, int]], now: float) -> None:
        for pid in pids:
            command = cmdline(pid)
            if b"flwr-serverapp" in command:
                self.serverapp_kib = max(self.serverapp_kib, table[pid][1])
            elif (b"flwr-clientapp" in command and b"/nbfed-clientapps-" not in command) or (
                b"--zygote" in command and b"--zygote" in cmdline(table[pid][0])
            ):
                # Flower's own ClientApp process, or one nbfed's zygote forked (not the
                # flwr-clientapp shim that asked for it and left)
                self.clientapps.setdefault(pid, [now, now])[1] = now

    def clientapp_lifetimes(self) -> list[float]:
        return sorted(round(last - first, 1) for first, last in self.clientapps.values())


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


def wait_until(
    finished: Callable[[list[dict]], bool],
    events: Path,
    fed: LocalFederation,
    client: SuperLinkClient,
    run_id: int,
    watch: ProcessWatch,
    timeout: float,
) -> list[dict]:
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


def run_raw(
    client: SuperLinkClient, fed: LocalFederation, watch: ProcessWatch, work: Path, args, nodes: int
) -> list[tuple[float, float]]:
    """Run the anchor's app to the end; (start, end) of every round."""
    app = shutil.copytree(args.anchor / "app", work / "app", ignore=shutil.ignore_patterns("__pycache__"))
    for path in [app, *app.rglob("*")]:  # an anchor elsewhere may be read-only; this copy is ours to delete
        path.chmod(path.stat().st_mode | 0o200)
    events = work / "events.jsonl"
    settings = {
        "num-server-rounds": args.rounds,
        "num-params": args.params,
        "layer-width": args.width,
        "num-nodes": nodes,
        "out-file": str(events),
    }
    overrides = work / "overrides.toml"
    overrides.write_text("".join(f'"{key}" = {toml_value(value)}\n' for key, value in settings.items()))
    run_id = client.submit(app, overrides)
    lines = wait_until(
        lambda lines: any(e["ev"] == "done" for e in lines), events, fed, client, run_id, watch, args.timeout
    )
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
        id="strategy",
    )
    cell.metadata["tags"] = ["strategy"]
    notebook.cells.append(cell)
    work.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, work / NOTEBOOK.name)
    return work / NOTEBOOK.name


def run_nbfed(
    client: SuperLinkClient, fed: LocalFederation, watch: ProcessWatch, work: Path, args, nodes: int, app: BenchApp
) -> list[tuple[float, float]]:
    """Convert a bench notebook and run it to the end as `nbfed run-local` does; (start, end) of every round."""
    notebook = with_flower_fedavg(work, nodes) if app.flower_fedavg else NOTEBOOK
    run = prepare_run(
        notebook,
        work / "results",
        {
            "num_rounds": args.rounds,
            "num_params": args.params,
            "layer_width": args.width,
            "nbfed.min-sites": nodes,
            **app.overrides,
        },
    )
    run_id = client.submit(run.app_dir, run.overrides)

    def finished(lines: list[dict]) -> bool:
        if failed := [e for e in lines if e["event"] == "failed"]:
            raise RunFailed(f"the run failed on the aggregator: {failed[0]['error']}")
        return any(e["event"] == "finished" for e in lines)

    lines = wait_until(finished, run.results / "events.jsonl", fed, client, run_id, watch, args.timeout)
    started = {e["round"]: e["time"] for e in lines if e["event"] == "round_started"}
    return [
        (started[r["round"]], started[r["round"]] + r["duration_s"])
        for r in json.loads((run.results / "rounds.json").read_text())
    ]


def run_once(app: str, nodes: int, work: Path, args) -> dict:
    """A fresh federation, one run of `app` on it, its round times, peak memory and ClientApp processes."""
    sites = make_sites(work / "data", nodes)
    fed = BenchFederation(
        sites=sites, logs=work / "logs", flwr_home=work / "flwr", warm=APPS[app].warm, isolated=APPS[app].isolated
    )
    with ExitStack() as stack:
        stack.callback(fed.stop)
        t0 = time.time()
        client = fed.start()
        watch = FlowerWatch({name: proc.pid for name, proc in fed.procs.items()})
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
        "peak_rss_mib": {
            "superlink_tree": kib["superlink"] // 1024,
            "serverapp": watch.serverapp_kib // 1024,
            "supernode_trees": [kib[name] // 1024 for name in kib if name != "superlink"],
        },
        "clientapp_lifetimes_s": watch.clientapp_lifetimes(),
        "min_available_mib": watch.min_available_kib // 1024,
    }
