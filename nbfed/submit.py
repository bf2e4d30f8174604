"""`nbfed submit`: convert a notebook and run it on a running SuperLink, then write the report.

This is the run stage of every deployment but run-local: the dry-run compose stack's
runner and the playbook (over SSH, in the aggregator stack's runner, on the internal
network that alone reaches the Control API) both call it. The results directory must be the one the ServerApp
writes to (a volume both containers mount at the same path).
"""

from __future__ import annotations

import hashlib
import itertools
import time
import tomllib
import zipfile
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from nbfed.app_signing import SIGNATURE_KEY, Statement, load_private_key, sign
from nbfed.convert import App, convert, toml_value
from nbfed.metrics import checkpoints
from nbfed.superlink import RunFailed, ServerAppLost, SuperLinkClient, follow


@dataclass(frozen=True)
class PreparedRun:
    app_dir: Path  # the Flower app (results/app)
    results: Path
    overrides: Path  # TOML file for `flwr run --run-config`
    num_rounds: int
    app: App | None = None  # the conversion's result, for a new run
    fab: Path | None = None  # the signed FAB (results/app.fab): submitted as is, never rebuilt


FAB_NAME = "app.fab"


def default_results_dir(notebook: Path, root: Path = Path("results")) -> Path:
    return root / f"{notebook.stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def prepare_run(notebook: Path, results: Path, settings: dict[str, Any]) -> PreparedRun:
    """Convert into `results/app` (the exact app that ran stays with its results) and write the overrides."""
    results = results.resolve()
    if (results / "run.json").exists():
        raise FileExistsError(f"{results} already holds a run; choose another results directory")
    app = convert(notebook, results / "app")
    settings = {"nbfed.results-dir": str(results), **settings}
    unknown = sorted(set(settings) - set(app.run_config))
    if unknown:
        raise KeyError(f"unknown run config key(s) {', '.join(unknown)}; the app has: {', '.join(app.run_config)}")
    return _write_overrides(PreparedRun(app.root, results, results / "overrides.toml", 0, app), settings)


def sign_run(notebook: Path, out: Path, settings: dict[str, Any], key: Path) -> tuple[PreparedRun, Statement]:
    """On the control node: the run prepared in `out`, its FAB built (app.fab) and signed with
    its run config by `key` (nbfed.signature in overrides.toml), for a runner to submit as is."""
    from flwr.cli.build import build_fab_from_disk

    run = prepare_run(notebook, out, settings)
    fab = run.results / FAB_NAME
    fab.write_bytes(build_fab_from_disk(run.app_dir))
    config = _read_overrides(run.results)  # as Flower will parse it: the values the sites see
    statement = Statement.of(hashlib.sha256(fab.read_bytes()).hexdigest(), config)
    signature = sign(load_private_key(key), statement)
    return _write_overrides(replace(run, fab=fab), {**config, SIGNATURE_KEY: signature}), statement


def prepare_signed(results: Path) -> PreparedRun:
    """A run the control node prepared and signed in `results` (sign_run, copied here)."""
    results = results.resolve()
    if (results / "run.json").exists():
        raise FileExistsError(f"{results} already holds a run; choose another results directory")
    if not (results / FAB_NAME).exists():
        raise FileNotFoundError(f"{results / FAB_NAME} is missing: the control node signs the app (playbooks/run.yml)")
    run = PreparedRun(results / "app", results, results / "overrides.toml", 0, fab=results / FAB_NAME)
    with zipfile.ZipFile(run.fab) as fab:  # the exact app that ran stays with its results
        fab.extractall(run.app_dir)
    return replace(run, num_rounds=_num_rounds(run, _read_overrides(results)))


def prepare_resume(results: Path) -> PreparedRun:
    """The run in `results` again, with the same app and settings, told to go on from its last
    checkpoint (from the start when it has none). A signed app stays signed: `nbfed.resume` is
    not one of the signed settings."""
    results = results.resolve()
    if not (results / "run.json").exists():
        raise FileNotFoundError(f"{results} holds no run to resume; start a new run instead")
    fab = results / FAB_NAME
    run = PreparedRun(results / "app", results, results / "overrides.toml", 0, fab=fab if fab.exists() else None)
    return _write_overrides(run, {**_read_overrides(results), "nbfed.resume": True})


def _read_overrides(results: Path) -> dict[str, Any]:
    with open(results / "overrides.toml", "rb") as f:
        return tomllib.load(f)


def _write_overrides(run: PreparedRun, settings: dict[str, Any]) -> PreparedRun:
    run.overrides.write_text("".join(f'"{k}" = {toml_value(v)}\n' for k, v in settings.items()))
    return replace(run, num_rounds=_num_rounds(run, settings))


def _num_rounds(run: PreparedRun, settings: dict[str, Any]) -> int:
    with open(run.app_dir / "pyproject.toml", "rb") as f:
        defaults = tomllib.load(f)["tool"]["flwr"]["app"]["config"]
    return int(settings.get("num_rounds", defaults["num_rounds"]))


def finished_rounds(results: Path) -> int:
    """The last round the ServerApp checkpointed (checkpoints/round-<k>.pt), 0 for none."""
    return max(checkpoints(results), default=0)


def submit(
    notebook: Path,
    client: SuperLinkClient,
    results: Path,
    settings: dict[str, Any],
    console: Console,
    timeout: float = 3600,
    resume: bool = False,
    resume_attempts: int = 3,
    signed: bool = False,
) -> PreparedRun:
    """Submit the run and follow it to the end (the sites' keys are registered already).

    A run whose ServerApp is lost (the aggregator restarted under it) goes on from its last
    checkpoint in a new Flower run, up to `resume_attempts` times. With `resume`, `results`
    holds such a run already and it goes on at once; with `signed`, the control node prepared
    and signed it there (sign_run) and its FAB is submitted as is.
    """
    deadline = time.monotonic() + timeout
    if resume:
        run = prepare_resume(results)
    else:
        run = prepare_signed(results) if signed else prepare_run(notebook, results, settings)
    for attempt in itertools.count():
        done, events = finished_rounds(run.results), run.results / "events.jsonl"
        offset = events.stat().st_size if events.exists() else 0
        run_id = client.submit(run.app_dir, run.overrides, run.fab)
        resumed = f", resumed after round {done}" if attempt or resume else ""
        console.print(f"run {run_id}: {notebook.name}, {run.num_rounds} rounds{resumed}, results in {run.results}")
        try:
            follow(
                client,
                run_id,
                run.results,
                run.num_rounds,
                console,
                deadline - time.monotonic(),
                offset=offset,
                done=done,
            )
            return run
        except ServerAppLost as e:
            if attempt == resume_attempts:
                raise RunFailed(f"{e}; given up after {attempt} resumes") from None
            console.print(f"[yellow]{e}[/yellow]\nresuming from the checkpoint of round {finished_rounds(run.results)}")
            run = prepare_resume(run.results)
        except RunFailed as e:
            raise RunFailed(f"{e}; the SuperLink container's log has the details") from None
