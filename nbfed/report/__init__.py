"""Reports for a finished (or interrupted) federated run.

Reads a results directory written by the generated ServerApp (``run.json``,
``rounds.json`` and, after ``run-local --baselines``, ``baselines.json``; see
``nbfed/metrics.py`` for the pooled record) and writes:

- ``report.md``: run summary, the paper's Table 2 (metrics x sites + Federation),
  a per-round table (``markdown.py``, from ``nbfed/templates/report.md.j2``);
- ``metrics.png``: pooled metrics per round (+ sites vs federation bars; ``plot.py``);
- ``rounds.csv``: one row per round (see :func:`write_rounds_csv`).

``data.py`` reads the directory and computes the tables every one of them shows.
Output is deterministic: the only timestamps come from ``run.json``.
"""

from __future__ import annotations

from pathlib import Path

from nbfed.report.data import FEDERATION_LABEL, PLOT_FILE, load_results, site_label, table2
from nbfed.report.markdown import write_markdown
from nbfed.report.plot import draw_plot, write_plot
from nbfed.report.rounds_csv import write_rounds_csv
from nbfed.report.terminal import render_table

__all__ = [
    "FEDERATION_LABEL",
    "site_label",
    "load_results",
    "table2",
    "render_table",
    "write_rounds_csv",
    "write_plot",
    "write_report",
]


def write_report(results_dir: Path) -> Path:
    """Write ``report.md``, ``metrics.png`` and (if absent) ``rounds.csv``.

    Returns the path of ``report.md``. Raises FileNotFoundError naming the
    missing file if ``run.json`` or ``rounds.json`` is absent.
    """
    results_dir = Path(results_dir)
    run, rounds, baselines = load_results(results_dir)
    draw_plot(results_dir / PLOT_FILE, run, rounds, baselines)
    write_rounds_csv(results_dir, overwrite=False)
    return write_markdown(results_dir, run, rounds, baselines)
