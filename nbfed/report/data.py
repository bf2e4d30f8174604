"""A results directory read back: the run, its rounds, the baselines, and the tables they make.

The generated ServerApp writes ``run.json`` and ``rounds.json``; ``run-local --baselines``
adds ``baselines.json`` (see ``nbfed/metrics.py`` for the pooled record). Every renderer
(report.md, metrics.png, rounds.csv, the terminal table) starts from ``load_results``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbfed.metrics import CONFUSION_KEYS, METRIC_LABELS, METRIC_NAMES, pooled_metrics, summarize_round

FEDERATION_LABEL = "Federation"
RUN_FILE = "run.json"
ROUNDS_FILE = "rounds.json"
BASELINES_FILE = "baselines.json"
REPORT_FILE = "report.md"
PLOT_FILE = "metrics.png"
CSV_FILE = "rounds.csv"

Columns = list[str]
Rows = list[tuple[str, list[float | None]]]


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
        raise ValueError(
            f"{path} is not valid JSON ({exc}); the run may have been interrupted while writing it"
        ) from exc


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


def pooled(round_: dict) -> dict:
    """The round's pooled record, recomputed from ``evaluate`` if absent."""
    record = round_.get("pooled")
    if isinstance(record, dict):
        return record
    return summarize_round(round_.get("evaluate") or {})


def contributors(round_: dict) -> list[str]:
    """Sites behind the round's pooled metrics (evaluate; train if none evaluated)."""
    return sorted(round_.get("evaluate") or round_.get("train") or {})


def run_sites(run: dict, rounds: list[dict]) -> list[str]:
    """The run's sites: run.json's, else every site that evaluated in some round."""
    return sorted(run.get("sites") or {s for r in rounds for s in (r.get("evaluate") or {})})


def site_label(name: str) -> str:
    """``"site-a"`` -> ``"Site A"``, ``"hospital_berlin"`` -> ``"Hospital Berlin"``."""
    words = [w for w in re.split(r"[-_\s]+", name) if w]
    return " ".join(w[:1].upper() + w[1:] for w in words) or name


def _site_order(run: dict, names: list[str]) -> list[str]:
    """Sites in run.json order, then any others in their given order."""
    listed = [s for s in run.get("sites", []) if s in names]
    return listed + [s for s in names if s not in listed]


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


def table2_rows(run: dict, rounds: list[dict], baselines: dict | None) -> tuple[Columns, Rows]:
    """Table 2 of loaded results; see ``table2``."""
    final = pooled(rounds[-1]) if rounds else None
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
    return table2_rows(run, rounds, baselines)


@dataclass(frozen=True)
class RoundRow:
    """One round as the per-round tables show it."""

    round: Any  # the round's number; "?" where rounds.json lacks it
    duration_s: Any
    overhead_s: Any  # the duration beyond the slowest site's time in the notebook's code
    sites: int  # sites behind the pooled metrics
    pooled: dict


def round_rows(rounds: list[dict]) -> list[RoundRow]:
    return [
        RoundRow(r.get("round", "?"), r.get("duration_s"), r.get("overhead_s"), len(contributors(r)), pooled(r))
        for r in rounds
    ]


def round_problems(run: dict, rounds: list[dict]) -> list[tuple[str, str]]:
    """(where, reason) of the run's error, then of every site a round lost or left out."""
    problems = [("Run", run["error"])] if run.get("error") else []
    for round_ in rounds:
        left_out = {**(round_.get("errors") or {}), **(round_.get("missing") or {})}
        problems += [(f"Round {round_.get('round', '?')}, {site}", reason) for site, reason in sorted(left_out.items())]
    return problems


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
