#!/usr/bin/env python3
"""Deploy and notebook-edit latency on inventory/local (issue 7, items 3 and 4).

    .venv/bin/python bench/deploy.py [--runs 3] [--out bench/results/deploy.json] [--smoke]

Runs inventory/local under the deployment name `bench` (its own compose projects, ports and
directories under .nbfed/bench, so a developer's `local` deployment is left alone), on
synthetic data at a small scale, and measures, --runs times each:

  warm deploy   deploy.yml with nothing changed: total, each stage (play), and the time
                until the run is submitted ("reaches training")
  edit to run   a code-only edit of the notebook, then playbooks/run.yml: the time until
                the ServerApp sends round 1 to every site, and until round 1 is done
  no-op         deploy.yml --skip-tags run: what a redeploy costs when nothing changed

The first deploy of the session (cold if the images are missing) is recorded too, unless
--on names a deployment that is up already. Stage times come from Ansible's profile_tasks
callback (ansible.cfg). Medians and ranges go to --out with the machine; a table is printed.
--smoke: the first deploy and one notebook edit, one round, to keep the script working in
CI, not to measure; --on a running deployment (the tests'), the edit only: the tests read
the stages of their own deploy's output with this script's functions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from common import machine, summary  # bench/common.py
from rich.console import Console
from rich.table import Table

from nbfed.local import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEPLOYMENT = "bench"
# profile_tasks prints, after each TASK/PLAY header, the time and the elapsed total so far.
ELAPSED = re.compile(r"^\w+ \d+ \w+ \d{4}\s+[\d:]+ \+0000 \([\d:.]+\)\s+(\d+):(\d\d):(\d\d\.\d+) \*+\s*$")
console = Console()


def playbook(playbook: str, extra: dict, *args: str, inventory: str = "inventory/local") -> tuple[float, str]:
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
    )
    started = time.monotonic()
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), playbook, "-i", inventory, "-e", json.dumps(extra), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    took = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"{playbook} failed:\n{(done.stdout + done.stderr)[-5000:]}")
    return took, done.stdout


def timeline(output: str) -> list[tuple[str, float]]:
    """(header, elapsed seconds when it started) for every PLAY and TASK header."""
    marks, header = [], None
    for line in output.splitlines():
        if line.startswith(("PLAY [", "TASK [")):
            header = line.split(" *", 1)[0]
        elif header and (m := ELAPSED.match(line)):
            marks.append((header, int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])))
            header = None
    return marks


def stages(output: str, total: float) -> dict[str, float]:
    """Seconds per play (stage) of the playbook."""
    plays = [(h[6:-1], t) for h, t in timeline(output) if h.startswith("PLAY [")]
    ends = [t for _, t in plays[1:]] + [total]
    out: dict[str, float] = {}
    for (name, start), end in zip(plays, ends, strict=True):
        out[name] = out.get(name, 0.0) + end - start
    return out


def until(output: str, task: str) -> float:
    return next(t for h, t in timeline(output) if task in h)


def first_event(results: Path, kind: str) -> float:
    for line in (results / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["event"] == kind:
            return event["time"]
    raise ValueError(f"no {kind} event in {results}")


def deploy_measures(deploys: list[tuple[float, str]]) -> dict:
    """Total, time until the run is submitted, and each stage, over (seconds, output) pairs."""
    each = [stages(out, took) for took, out in deploys]
    return {
        "total": summary([took for took, _ in deploys]),
        "reaches training": summary([until(out, "TASK [run : Submit run") for _, out in deploys]),
        "stages": {k: summary([s[k] for s in each]) for k in each[0]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "deploy.json")
    parser.add_argument(
        "--smoke", action="store_true", help="the first deploy (none --on) and one edit, one round: keeps it working"
    )
    parser.add_argument("--keep", action="store_true", help="leave the bench deployment running")
    parser.add_argument(
        "--on",
        type=json.loads,
        metavar="VARS",
        help="the extra vars (JSON) of a running deployment of inventory/local to use, left running, "
        "instead of a `bench` deployment of its own (the tests' smoke run)",
    )
    args = parser.parse_args()
    runs = 1 if args.smoke else args.runs

    work = Path(tempfile.mkdtemp(prefix="nbfed-bench-"))
    if args.on:
        extra = dict(args.on)
    else:
        subprocess.run(
            [str(BIN / "nbfed"), "synth-data", "-o", str(work / "data"), "--scale", "0.05"],
            check=True,
            capture_output=True,
        )
        extra = {
            "nbfed_deployment": DEPLOYMENT,
            "nbfed_local_data": str(work / "data"),
            "nbfed_results_dir": str(work / "results"),
            "aggregator_port": free_port(),
        }
    extra["nbfed_rounds"] = 1 if args.smoke else 2
    control = Path(extra.get("nbfed_control_dir", ROOT / ".nbfed" / extra["nbfed_deployment"]))
    aggregator_results = control / "hosts" / "local-aggregator" / "aggregator" / "results"
    measured: dict[str, dict] = {}
    try:
        if not args.on:  # a running deployment had its first deploy
            with console.status("first deploy (builds the images if they are missing)"):
                first = playbook("deploy.yml", extra)
            measured["first deploy"] = deploy_measures([first])

        # The warm deploy and the no-op go through the code of the first: the smoke run leaves them out.
        warm, noop = [], []
        for n in range(0 if args.smoke else runs):
            with console.status(f"warm deploy {n + 1}/{runs}"):
                warm.append(playbook("deploy.yml", extra))
            with console.status(f"no-op redeploy {n + 1}/{runs}"):
                noop.append(playbook("deploy.yml", extra, "--skip-tags", "run")[0])
        if warm:
            measured["warm deploy"] = deploy_measures(warm)
            measured["no-op redeploy"] = {"total": summary(noop)}

        notebook = nbformat.read(ROOT / "notebook" / "template.ipynb", as_version=4)
        [train] = [c for c in notebook.cells if "train" in c.metadata.get("tags", [])]
        to_round, to_done = [], []
        for n in range(runs):
            train.source += f"\n# edit {n}\n"  # code only: no image may be rebuilt
            edited = work / "notebooks" / "template.ipynb"
            edited.parent.mkdir(exist_ok=True)
            nbformat.write(notebook, edited)
            name = f"edit-{n}"
            started = time.time()
            with console.status(f"notebook edit -> run {n + 1}/{runs}"):
                _, out = playbook("playbooks/run.yml", {**extra, "nbfed_notebook": str(edited), "run_name": name})
            rounds = json.loads((aggregator_results / name / "rounds.json").read_text())
            to_round.append(first_event(aggregator_results / name, "round_started") - started)
            to_done.append(to_round[-1] + rounds[0]["duration_s"])
            assert (
                "images : Build the images (cached by content)" in out
                and "changed: [localhost]"
                not in out.split("TASK [images : Build the images (cached by content)]", 1)[1].split("TASK [", 1)[0]
            )
        measured["notebook edit to training"] = {
            "round 1 sent to every site": summary(to_round),
            "round 1 done": summary(to_done),
        }
    finally:
        if not (args.keep or args.on):
            playbook("playbooks/teardown.yml", {**extra, "teardown_purge": True, "teardown_purge_confirmed": True})

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"machine": machine(docker=True), "runs": runs, "smoke": args.smoke, "results": measured}, indent=2)
        + "\n"
    )
    table = Table("measure", "median s", "range s", title=f"inventory/local, {runs} run(s) each")
    for what, values in measured.items():
        for key, value in values.items():
            if key != "stages":
                table.add_row(f"{what}: {key}", f"{value['median']:.1f}", f"{value['min']:.1f}-{value['max']:.1f}")
    console.print(table)
    shown = next((what for what in ("warm deploy", "first deploy") if what in measured), None)
    if shown:
        stage_table = Table(f"stage ({shown})", "median s", title="deploy.yml stages")
        for stage, value in measured[shown]["stages"].items():
            stage_table.add_row(stage, f"{value['median']:.1f}")
        console.print(stage_table)
    console.print(f"results in {args.out}")


if __name__ == "__main__":
    main()
