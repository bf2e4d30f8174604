"""`nbfed submit`: convert a notebook and run it on a running SuperLink, then write the report.

This is the run stage of every deployment but run-local: the dry-run compose stack's
runner and the playbook (over SSH, on the aggregator host, where the Control API listens
on loopback only) both call it. The results directory must be the one the ServerApp
writes to (a volume both containers mount at the same path).
"""

from __future__ import annotations

import itertools
import time
import tomllib
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

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


def prepare_resume(results: Path) -> PreparedRun:
    """The run in `results` again, with the same app and settings, told to go on from its last
    checkpoint (from the start when it has none)."""
    results = results.resolve()
    if not (results / "run.json").exists():
        raise FileNotFoundError(f"{results} holds no run to resume; start a new run instead")
    with open(results / "overrides.toml", "rb") as f:
        settings = tomllib.load(f)
    run = PreparedRun(results / "app", results, results / "overrides.toml", 0)
    return _write_overrides(run, {**settings, "nbfed.resume": True})


def _write_overrides(run: PreparedRun, settings: dict[str, Any]) -> PreparedRun:
    run.overrides.write_text("".join(f'"{k}" = {toml_value(v)}\n' for k, v in settings.items()))
    with open(run.app_dir / "pyproject.toml", "rb") as f:
        defaults = tomllib.load(f)["tool"]["flwr"]["app"]["config"]
    return replace(run, num_rounds=int(settings.get("num_rounds", defaults["num_rounds"])))


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
) -> PreparedRun:
    """Submit the run and follow it to the end (the sites' keys are registered already).

    A run whose ServerApp is lost (the aggregator restarted under it) goes on from its last
    checkpoint in a new Flower run, up to `resume_attempts` times. With `resume`, `results`
    holds such a run already and it goes on at once.
    """
    deadline = time.monotonic() + timeout
    run = prepare_resume(results) if resume else prepare_run(notebook, results, settings)
    for attempt in itertools.count():
        done, events = finished_rounds(run.results), run.results / "events.jsonl"
        offset = events.stat().st_size if events.exists() else 0
        run_id = client.submit(run.app_dir, run.overrides)
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
