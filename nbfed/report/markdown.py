"""report.md, rendered from nbfed/templates/report.md.j2: the run, Table 2, the rounds, what went wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

from nbfed.report.data import (
    CSV_FILE,
    PLOT_FILE,
    REPORT_FILE,
    pct,
    pooled,
    round_problems,
    round_rows,
    run_sites,
    table2_rows,
)

TEMPLATE = "report.md.j2"

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)
_env.filters.update(
    pct=pct,
    seconds=lambda value: f"{value:.1f}" if isinstance(value, (int, float)) else "n/a",
    loss=lambda value: f"{value:.4f}" if isinstance(value, (int, float)) else "n/a",
    one_line=lambda text: " ".join(str(text).split()),  # a reason may be a traceback
    pretty_json=lambda value: json.dumps(value, indent=2, sort_keys=True),
)


def render_markdown(run: dict, rounds: list[dict], baselines: dict | None) -> str:
    """report.md's text for loaded results (``load_results``)."""
    columns, rows = table2_rows(run, rounds, baselines)
    per_round = round_rows(rounds)
    context: dict[str, Any] = {
        "run": run,
        "rounds": rounds,
        "baselines": baselines,
        "notebook": run.get("notebook") or "unknown notebook",
        "sites": run_sites(run, rounds),
        "columns": columns,
        "table2": rows,
        "per_round": per_round,
        "has_overhead": any(isinstance(r.overhead_s, (int, float)) for r in per_round),
        "has_loss": any(isinstance(r.pooled.get("loss"), (int, float)) for r in per_round),
        "problems": round_problems(run, rounds),
        # every round pooled exactly from confusion counts (not example-weighted means)
        "exact": bool(rounds) and {pooled(r).get("method") for r in rounds} <= {"confusion-counts"},
        "plot_file": PLOT_FILE,
        "csv_file": CSV_FILE,
    }
    return _env.get_template(TEMPLATE).render(context)


def write_markdown(results_dir: Path, run: dict, rounds: list[dict], baselines: dict | None) -> Path:
    """Write ``report.md`` into the results directory; returns its path."""
    path = Path(results_dir) / REPORT_FILE
    path.write_text(render_markdown(run, rounds, baselines), encoding="utf-8")
    return path
