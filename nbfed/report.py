"""Reports for a finished (or interrupted) federated run.

Reads a results directory written by the generated ServerApp (``run.json``,
``rounds.json`` and, after ``run-local --baselines``, ``baselines.json``; see
``nbfed/metrics.py`` for the pooled record) and writes:

- ``report.md``: run summary, the paper's Table 2 (metrics x sites + Federation),
  a per-round table;
- ``metrics.png``: pooled metrics per round (+ sites vs federation bars);
- ``rounds.csv``: one row per round (see :func:`write_rounds_csv`).

Output is deterministic: the only timestamps come from ``run.json``.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from rich.table import Table

from nbfed.metrics import (
    CONFUSION_KEYS,
    META_KEYS,
    METRIC_LABELS,
    METRIC_NAMES,
    NUM_EXAMPLES_KEY,
    pooled_metrics,
    summarize_round,
)

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

FEDERATION_LABEL = "Federation"
RUN_FILE = "run.json"
ROUNDS_FILE = "rounds.json"
BASELINES_FILE = "baselines.json"
REPORT_FILE = "report.md"
PLOT_FILE = "metrics.png"
CSV_FILE = "rounds.csv"

Columns = list[str]
Rows = list[tuple[str, list[float | None]]]


# --------------------------------------------------------------------------- loading


def _read_json(path: Path, *, required: bool) -> Any:
    if not path.is_file():
        if not required:
            return None
        raise FileNotFoundError(
            f"{path.name} is missing from the results directory {path.parent}: "
            "the run may not have finished (or not have started)"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); the run may have been interrupted while writing it") from exc


def load_results(results_dir: Path) -> tuple[dict, list[dict], dict | None]:
    """(run, rounds, baselines or None) from a results directory.

    Raises FileNotFoundError naming the missing file if ``run.json`` or
    ``rounds.json`` is absent.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results directory {results_dir} does not exist: the run may not have started")
    run = _read_json(results_dir / RUN_FILE, required=True)
    rounds = _read_json(results_dir / ROUNDS_FILE, required=True)
    baselines = _read_json(results_dir / BASELINES_FILE, required=False)
    if not isinstance(run, dict):
        raise ValueError(f"{results_dir / RUN_FILE} must hold a JSON object")
    if not isinstance(rounds, list):
        raise ValueError(f"{results_dir / ROUNDS_FILE} must hold a JSON list of rounds")
    if baselines is not None and not isinstance(baselines, dict):
        raise ValueError(f"{results_dir / BASELINES_FILE} must hold a JSON object")
    rounds = sorted(rounds, key=lambda r: r.get("round", 0))
    return run, rounds, baselines


def _pooled(round_: dict) -> dict:
    """The round's pooled record, recomputed from ``evaluate`` if absent."""
    pooled = round_.get("pooled")
    if isinstance(pooled, dict):
        return pooled
    return summarize_round(round_.get("evaluate") or {})


def _record_metrics(record: dict | None) -> list[float | None]:
    """The six metrics of a pooled-style record; exact from counts when present."""
    if not record:
        return [None] * len(METRIC_NAMES)
    if all(key in record for key in CONFUSION_KEYS):
        values = pooled_metrics(record)
        return [values[name] for name in METRIC_NAMES]
    out: list[float | None] = []
    for name in METRIC_NAMES:
        value = record.get(name)
        out.append(float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None)
    return out


def site_label(name: str) -> str:
    """``"site-a"`` -> ``"Site A"``, ``"hospital_berlin"`` -> ``"Hospital Berlin"``."""
    words = [w for w in re.split(r"[-_\s]+", name) if w]
    return " ".join(w[:1].upper() + w[1:] for w in words) or name


def _site_order(run: dict, names: list[str]) -> list[str]:
    """Sites in run.json order, then any others in their given order."""
    listed = [s for s in run.get("sites", []) if s in names]
    return listed + [s for s in names if s not in listed]


# --------------------------------------------------------------------------- Table 2


def _table2(run: dict, rounds: list[dict], baselines: dict | None) -> tuple[Columns, Rows]:
    final = _pooled(rounds[-1]) if rounds else None
    if baselines:
        fed_key = next((k for k in baselines if k.lower() == "federation"), None)
        sites = _site_order(run, [k for k in baselines if k != fed_key])
        records = [baselines[s] for s in sites] + [baselines[fed_key] if fed_key else final]
        columns = [site_label(s) for s in sites] + [FEDERATION_LABEL]
    else:
        records = [final]
        columns = [FEDERATION_LABEL]
    per_column = [_record_metrics(r) for r in records]
    rows = [(METRIC_LABELS[name], [col[i] for col in per_column]) for i, name in enumerate(METRIC_NAMES)]
    return columns, rows


def table2(results_dir: Path) -> tuple[Columns, Rows]:
    """The paper's Table 2: ``(columns, rows)``.

    ``rows`` is one ``(metric label, values)`` per metric in ``METRIC_NAMES``
    order; values are fractions in [0, 1] or None (undefined / not reported),
    one per column. With ``baselines.json`` the columns are each site alone
    (``"Site A"``, ...) then ``"Federation"`` (baselines' ``federation`` record,
    else the final round's pooled metrics); without it, the single column
    ``"Federation"`` holds the final round's pooled metrics.
    """
    run, rounds, baselines = load_results(results_dir)
    return _table2(run, rounds, baselines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def render_table(results_dir: Path) -> Table:
    """Table 2 as a rich Table for the terminal."""
    run, rounds, baselines = load_results(results_dir)
    columns, rows = _table2(run, rounds, baselines)
    title = f"Test metrics, {len(rounds)} of {run.get('num_rounds', '?')} rounds"
    exact = bool(rounds) and all(_pooled(r).get("method") == "confusion-counts" for r in rounds[-1:])
    caption = (
        "test splits, summed confusion counts"
        if exact or baselines
        else "test splits, example-weighted means"
    )
    table = Table(title=title, caption=caption)
    table.add_column("Metric", style="bold")
    for column in columns:
        table.add_column(column, justify="right", style="bold green" if column == FEDERATION_LABEL else None)
    for label, values in rows:
        table.add_row(label, *(_pct(v) for v in values))
    return table


# --------------------------------------------------------------------------- rounds.csv


def _contributors(round_: dict) -> list[str]:
    """Sites behind the round's pooled metrics (evaluate; train if none evaluated)."""
    return sorted(round_.get("evaluate") or round_.get("train") or {})


def _extra_keys(pooled_records: list[dict]) -> list[str]:
    skip = set(METRIC_NAMES) | set(CONFUSION_KEYS) | set(META_KEYS)
    return sorted({k for p in pooled_records for k in p if k not in skip})


def _seconds(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else "n/a"


def _csv_value(value: Any) -> Any:
    return "" if value is None else value


def write_rounds_csv(results_dir: Path, *, overwrite: bool = True) -> Path:
    """Write ``rounds.csv``: one row per round.

    Columns: ``round, duration_s, sites`` (number of sites in the round's
    evaluate results, i.e. behind the pooled metrics), ``site_names`` (those
    sites joined by ``;``), ``train_sites`` (number of sites that returned
    training results), ``overhead_s`` (the duration beyond the slowest site's
    time in the notebook's code), the six pooled metrics, ``tp, fp, tn, fn,
    num_examples``, then any other pooled key (e.g. ``loss``) alphabetically.
    Undefined values are empty cells. With ``overwrite=False`` an existing
    file is left as is. Returns the path.
    """
    results_dir = Path(results_dir)
    path = results_dir / CSV_FILE
    if path.exists() and not overwrite:
        return path
    _, rounds, _ = load_results(results_dir)
    pooled_records = [_pooled(r) for r in rounds]
    extra = _extra_keys(pooled_records)
    header = ["round", "duration_s", "sites", "site_names", "train_sites", "overhead_s", *METRIC_NAMES, *CONFUSION_KEYS, "num_examples", *extra]
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for round_, pooled in zip(rounds, pooled_records):
            names = _contributors(round_)
            writer.writerow(
                [
                    round_.get("round"),
                    _csv_value(round_.get("duration_s")),
                    len(names),
                    ";".join(names),
                    len(round_.get("train") or {}),
                    _csv_value(round_.get("overhead_s")),
                    *(_csv_value(pooled.get(k)) for k in METRIC_NAMES),
                    *(_csv_value(pooled.get(k)) for k in CONFUSION_KEYS),
                    _csv_value(pooled.get(NUM_EXAMPLES_KEY)),
                    *(_csv_value(pooled.get(k)) for k in extra),
                ]
            )
    return path


# --------------------------------------------------------------------------- plot


def _write_plot(path: Path, run: dict, rounds: list[dict], baselines: dict | None) -> Path:
    # Figure + FigureCanvasAgg directly: no pyplot, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    panels = 2 if baselines else 1
    fig = Figure(figsize=(7.5 * panels, 5.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]

    ax = axes[0]
    xs = [r.get("round") for r in rounds]
    pooled = [_pooled(r) for r in rounds]
    plotted = 0
    markers = "osD^vP"
    for name, marker in zip(METRIC_NAMES, markers):
        ys = [p.get(name) for p in pooled]
        if all(y is None for y in ys):
            continue
        # None -> NaN leaves a gap in the line instead of failing.
        ax.plot(xs, [float("nan") if y is None else y for y in ys], marker=marker, linewidth=1.8, label=METRIC_LABELS[name])
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

    if baselines:
        columns, rows = _table2(run, rounds, baselines)
        bx = axes[1]
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

    notebook = run.get("notebook") or run.get("app") or "notebook"
    fig.suptitle(f"{notebook}: {len(rounds)} of {run.get('num_rounds', '?')} rounds", fontsize=12)
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def write_plot(results_dir: Path) -> Path:
    """Write ``metrics.png`` only; returns its path."""
    results_dir = Path(results_dir)
    run, rounds, baselines = load_results(results_dir)
    return _write_plot(results_dir / PLOT_FILE, run, rounds, baselines)


# --------------------------------------------------------------------------- report.md


def _md_table(header: list[str], rows: list[list[str]], align: list[str]) -> list[str]:
    sep = {"l": ":---", "r": "---:"}
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep[a] for a in align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def write_report(results_dir: Path) -> Path:
    """Write ``report.md``, ``metrics.png`` and (if absent) ``rounds.csv``.

    Returns the path of ``report.md``. Raises FileNotFoundError naming the
    missing file if ``run.json`` or ``rounds.json`` is absent.
    """
    results_dir = Path(results_dir)
    run, rounds, baselines = load_results(results_dir)
    _write_plot(results_dir / PLOT_FILE, run, rounds, baselines)
    write_rounds_csv(results_dir, overwrite=False)

    notebook = run.get("notebook") or "unknown notebook"
    sha = run.get("notebook_sha256") or "unknown"
    sites = sorted(run.get("sites") or {s for r in rounds for s in (r.get("evaluate") or {})})
    pooled = [_pooled(r) for r in rounds]
    methods = {p.get("method") for p in pooled}

    lines = [f"# Federated run report: {notebook}", ""]
    lines += [
        f"- Notebook: `{notebook}` (sha256 `{sha}`)",
        f"- App: `{run.get('app', 'unknown')}`",
        f"- Status: **{run.get('status', 'unknown')}**",
        f"- Rounds completed: {len(rounds)} of {run.get('num_rounds', '?')} planned",
        f"- Sites ({len(sites)}): {', '.join(sites) if sites else 'none'}",
        f"- Started: {run.get('started_at') or 'unknown'}; finished: {run.get('finished_at') or 'not finished'}",
        *(f"- Resumed from the checkpoint of round {r['after_round']} at {r['at']} (the ServerApp was lost)"
          for r in run.get("resumes", [])),
        "",
    ]

    columns, rows = _table2(run, rounds, baselines)
    lines += ["## Test metrics (Table 2)", ""]
    if baselines:
        lines += [
            "Each site column is a model trained only at that site; every column is evaluated "
            "on the pooled test splits of all sites.",
            "",
        ]
    else:
        lines += [f"Global model after the final round ({len(rounds)}), evaluated on every site's test split.", ""]
    lines += _md_table(
        ["Metric", *columns],
        [[label, *(_pct(v) for v in values)] for label, values in rows],
        ["l"] + ["r"] * len(columns),
    )
    lines.append("")

    lines += ["## Per round", ""]
    has_loss = any(isinstance(p.get("loss"), (int, float)) for p in pooled)
    has_overhead = any(isinstance(r.get("overhead_s"), (int, float)) for r in rounds)
    header = ["Round", "Duration (s)", *(["Overhead (s)"] if has_overhead else []), "Sites",
              "Sensitivity", "Specificity", "F1 score", "Accuracy"]
    if has_loss:
        header.append("Loss")
    table_rows = []
    for round_, p in zip(rounds, pooled):
        row = [
            str(round_.get("round", "?")),
            _seconds(round_.get("duration_s")),
            *([_seconds(round_.get("overhead_s"))] if has_overhead else []),
            str(len(_contributors(round_))),
            *(_pct(p.get(k)) for k in ("sensitivity", "specificity", "f1", "accuracy")),
        ]
        if has_loss:
            loss = p.get("loss")
            row.append(f"{loss:.4f}" if isinstance(loss, (int, float)) else "n/a")
        table_rows.append(row)
    if table_rows:
        lines += _md_table(header, table_rows, ["r"] * len(header))
    else:
        lines.append("No round has completed.")
    if has_overhead:
        lines += ["", "Overhead: the round's duration beyond the slowest site's time in the notebook's code "
                  "(`load_data`, `build_model`, `train`, `evaluate`): messages, processes, (de)serialisation, "
                  "aggregation."]
    lines += ["", f"![Pooled metrics per round]({PLOT_FILE})", "", f"Per-round values are also in `{CSV_FILE}`.", ""]

    errors = [
        f"- Round {round_.get('round', '?')}, {site}: {_one_line(reason)}"
        for round_ in rounds
        for site, reason in sorted({**(round_.get("errors") or {}), **(round_.get("missing") or {})}.items())
    ]
    if run.get("error"):
        errors.insert(0, f"- Run: {_one_line(run['error'])}")
    if errors:
        lines += ["## Errors and sites left out of a round", "", *errors, ""]

    lines += ["## Notes", ""]
    if methods <= {"confusion-counts"} and rounds:
        lines.append(
            "- All metrics are computed on the sites' test splits, pooled from the confusion counts "
            "(tp, fp, tn, fn) summed over sites, not averaged per-site ratios."
        )
    else:
        lines.append(
            "- All metrics are computed on the sites' test splits. Metrics are pooled from the confusion "
            "counts (tp, fp, tn, fn) summed over sites where every site reported them; otherwise they are "
            "means weighted by each site's number of test examples (return tp/fp/tn/fn from `evaluate` "
            "for exact pooled values)."
        )
    lines.append("- n/a: undefined (zero denominator) or not reported.")
    run_config = run.get("run_config")
    if run_config:
        lines += ["", "## Run config", "", "```json", json.dumps(run_config, indent=2, sort_keys=True), "```"]
    lines.append("")

    path = results_dir / REPORT_FILE
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
