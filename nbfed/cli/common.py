"""What every `nbfed` command shares: the consoles, failing with a message, the common options."""

from __future__ import annotations

import ast
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True, soft_wrap=True)  # messages stay one line each, for logs and grep

NotebookArg = Annotated[Path, typer.Argument(help="The notebook (.ipynb) with tagged cells.")]
SuperLinkOpt = Annotated[
    str, typer.Option(help="SuperLink Control API as host:port (reachable only inside the aggregator stack).")
]
CaOpt = Annotated[Path | None, typer.Option(help="Consortium CA certificate; without it, plain HTTP (loopback only).")]
SetOpt = Annotated[list[str], typer.Option("--set", help="Override a run-config key: --set num_rounds=5.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def finish(results: Path, started: float) -> None:
    """Write the report of a finished run and show its Table-2-style table."""
    from nbfed.report import render_table, write_report

    report = write_report(results)
    console.print(render_table(results))
    console.print(f"finished in {time.monotonic() - started:.0f} s; report: {report}")


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE run-config overrides; values are Python/JSON literals, else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise fail(f"--set expects KEY=VALUE, got '{pair}'", 2)
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = {"true": True, "false": False}.get(raw.lower(), raw)
        out[key.strip()] = value
    return out
