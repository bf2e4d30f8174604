"""rounds.csv: one row per round, for spreadsheets and scripts."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from nbfed.metrics import CONFUSION_KEYS, META_KEYS, METRIC_NAMES, NUM_EXAMPLES_KEY
from nbfed.report.data import CSV_FILE, contributors, load_results, pooled


def _extra_keys(pooled_records: list[dict]) -> list[str]:
    skip = set(METRIC_NAMES) | set(CONFUSION_KEYS) | set(META_KEYS)
    return sorted({k for p in pooled_records for k in p if k not in skip})


def _csv_value(value: Any) -> Any:
    return "" if value is None else value


def _csv_text(text: str) -> str:
    """Text as a spreadsheet shows it and never runs it: a cell that starts like a formula gets
    a leading apostrophe (a metric's name is the notebook's, or a site's, word)."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


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
    pooled_records = [pooled(r) for r in rounds]
    extra = _extra_keys(pooled_records)
    header = [
        "round",
        "duration_s",
        "sites",
        "site_names",
        "train_sites",
        "overhead_s",
        *METRIC_NAMES,
        *CONFUSION_KEYS,
        "num_examples",
        *map(_csv_text, extra),
    ]
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for round_, record in zip(rounds, pooled_records, strict=True):
            names = contributors(round_)
            writer.writerow(
                [
                    round_.get("round"),
                    _csv_value(round_.get("duration_s")),
                    len(names),
                    _csv_text(";".join(names)),
                    len(round_.get("train") or {}),
                    _csv_value(round_.get("overhead_s")),
                    *(_csv_value(record.get(k)) for k in METRIC_NAMES),
                    *(_csv_value(record.get(k)) for k in CONFUSION_KEYS),
                    _csv_value(record.get(NUM_EXAMPLES_KEY)),
                    *(_csv_value(record.get(k)) for k in extra),
                ]
            )
    return path
