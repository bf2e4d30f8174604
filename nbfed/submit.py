"""`nbfed submit`: convert a notebook and run it on a running SuperLink, then write the report.

This is the run stage of every deployment but run-local: the dry-run compose stack's
runner and the playbook (over SSH, on the aggregator host, where the Control API listens
on loopback only) both call it. The results directory must be the one the ServerApp
writes to (a volume both containers mount at the same path).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from nbfed.convert import App, convert, toml_value
from nbfed.superlink import RunFailed, SuperLinkClient, follow


@dataclass(frozen=True)
class PreparedRun:
    app: App
    results: Path
    overrides: Path  # TOML file for `flwr run --run-config`
    num_rounds: int


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
    overrides = results / "overrides.toml"
    overrides.write_text("".join(f'"{k}" = {toml_value(v)}\n' for k, v in settings.items()))
    num_rounds = int(settings.get("num_rounds", app.run_config["num_rounds"]))
    return PreparedRun(app, results, overrides, num_rounds)


def submit(
    notebook: Path,
    client: SuperLinkClient,
    results: Path,
    settings: dict[str, Any],
    console: Console,
    timeout: float = 3600,
) -> PreparedRun:
    """Submit the run and follow it to the end (the sites' keys are registered already)."""
    run = prepare_run(notebook, results, settings)
    run_id = client.submit(run.app.root, run.overrides)
    console.print(f"run {run_id}: {notebook.name}, {run.num_rounds} rounds, results in {run.results}")
    try:
        follow(client, run_id, run.results, run.num_rounds, console, timeout)
    except RunFailed as e:
        raise RunFailed(f"{e}; the SuperLink container's log has the details") from None
    return run
