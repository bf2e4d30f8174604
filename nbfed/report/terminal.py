"""Table 2 for the terminal (`nbfed report`, the end of `nbfed run-local` and `nbfed submit`)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from nbfed.report.data import FEDERATION_LABEL, load_results, pct, pooled, table2_rows


def render_table(results_dir: Path) -> Table:
    """Table 2 as a rich Table for the terminal."""
    run, rounds, baselines = load_results(results_dir)
    columns, rows = table2_rows(run, rounds, baselines)
    title = f"Test metrics, {len(rounds)} of {run.get('num_rounds', '?')} rounds"
    exact = bool(rounds) and all(pooled(r).get("method") == "confusion-counts" for r in rounds[-1:])
    caption = "test splits, summed confusion counts" if exact or baselines else "test splits, example-weighted means"
    table = Table(title=title, caption=caption)
    table.add_column("Metric", style="bold")
    for column in columns:
        table.add_column(column, justify="right", style="bold green" if column == FEDERATION_LABEL else None)
    for label, values in rows:
        table.add_row(label, *(pct(v) for v in values))
    return table
