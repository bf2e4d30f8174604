"""metrics.png: pooled metrics per round, and (with baselines) each site alone against the federation."""

from __future__ import annotations

from pathlib import Path

from nbfed.metrics import METRIC_LABELS, METRIC_NAMES
from nbfed.report.data import FEDERATION_LABEL, PLOT_FILE, Columns, Rows, load_results, pooled, table2_rows


def write_plot(results_dir: Path) -> Path:
    """Write ``metrics.png`` only; returns its path."""
    results_dir = Path(results_dir)
    run, rounds, baselines = load_results(results_dir)
    return draw_plot(results_dir / PLOT_FILE, run, rounds, baselines)


def draw_plot(path: Path, run: dict, rounds: list[dict], baselines: dict | None) -> Path:
    """Write the figure of loaded results (``load_results``) to `path`."""
    # Figure + FigureCanvasAgg directly: no pyplot, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = 2 if baselines else 1
    fig = Figure(figsize=(7.5 * panels, 5.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    _per_round(axes[0], run, rounds)
    if baselines:
        _sites_against_federation(axes[1], *table2_rows(run, rounds, baselines))
    notebook = run.get("notebook") or run.get("app") or "notebook"
    fig.suptitle(f"{notebook}: {len(rounds)} of {run.get('num_rounds', '?')} rounds", fontsize=12)
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def _per_round(ax, run: dict, rounds: list[dict]) -> None:
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    xs = [r.get("round") for r in rounds]
    records = [pooled(r) for r in rounds]
    plotted = 0
    markers = "osD^vP"
    for name, marker in zip(METRIC_NAMES, markers, strict=True):
        ys = [p.get(name) for p in records]
        if all(y is None for y in ys):
            continue
        # None -> NaN leaves a gap in the line instead of failing.
        ax.plot(
            xs, [float("nan") if y is None else y for y in ys], marker=marker, linewidth=1.8, label=METRIC_LABELS[name]
        )
        plotted += 1
    if not plotted:
        ax.text(0.5, 0.5, "no pooled metrics reported", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylim(-0.02, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if xs:
        planned = run.get("num_rounds") if isinstance(run.get("num_rounds"), int) else max(xs)
        ax.set_xlim(0.5, max(max(xs), planned) + 0.5)
    ax.set_xlabel("Round")
    ax.set_ylabel("Pooled test metric")
    ax.set_title("Global model per round (pooled over sites)")
    ax.grid(True, alpha=0.3)
    if plotted:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=9, frameon=False)


def _sites_against_federation(bx, columns: Columns, rows: Rows) -> None:
    from matplotlib.ticker import PercentFormatter

    n = len(columns)
    width = 0.8 / n
    for j, column in enumerate(columns):
        heights = [values[j] if values[j] is not None else 0.0 for _, values in rows]
        offsets = [i - 0.4 + width * (j + 0.5) for i in range(len(rows))]
        bx.bar(offsets, heights, width=width * 0.95, label=column, hatch="//" if column == FEDERATION_LABEL else None)
    bx.set_xticks(range(len(rows)), [label for label, _ in rows])
    bx.set_ylim(0, 1.05)
    bx.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    bx.set_ylabel("Test metric on all sites' test splits")
    bx.set_title("Trained at one site vs federation")
    bx.grid(True, axis="y", alpha=0.3)
    bx.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(n, 4), fontsize=9, frameon=False)
