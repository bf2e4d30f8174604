"""Pooled classification metrics for a federation (the paper's Table 2 metrics).

STANDARD LIBRARY ONLY. This file is copied verbatim into every generated Flower
app and runs inside the ServerApp, so it must not import numpy, torch, flwr or
anything from ``nbfed``. ``tests/unit/test_metrics.py`` enforces this.

Why sum counts instead of averaging ratios: each site's ``evaluate`` returns
its confusion counts on its own test split; summing ``tp``/``fp``/``tn``/``fn``
over sites gives exactly the confusion matrix of the global model on the union
of all test splits, so the ratios computed from it are the exact pooled
metrics. Averaging per-site ratios (even weighted by ``num-examples``) is not
the same thing, e.g. sensitivity depends on each site's number of positives.

The names of the per-round checkpoints (``checkpoints/round-<k>.pt``) live here too: the
ServerApp writes and resumes from them, and ``nbfed submit`` reads which round a lost run
reached, and this is the one file both sides share.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "CONFUSION_KEYS",
    "METRIC_NAMES",
    "METRIC_LABELS",
    "NUM_EXAMPLES_KEY",
    "sum_counts",
    "pooled_metrics",
    "weighted_mean",
    "summarize_round",
    "checkpoint_path",
    "checkpoints",
]

CONFUSION_KEYS: tuple[str, ...] = ("tp", "fp", "tn", "fn")
METRIC_NAMES: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv", "f1", "accuracy")
METRIC_LABELS: dict[str, str] = {
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV",
    "npv": "NPV",
    "f1": "F1 score",
    "accuracy": "Accuracy",
}
NUM_EXAMPLES_KEY = "num-examples"

# Keys of a summarize_round() record that describe the record rather than a metric.
META_KEYS: tuple[str, ...] = ("method", "num-sites", NUM_EXAMPLES_KEY)


def _is_number(value: object) -> bool:
    """True for finite int/float values (bool excluded)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def _count(counts: Mapping[str, float], key: str) -> int:
    """One confusion count as an int; ValueError naming the key if it is not a
    non-negative whole number (floats such as 10.0 are accepted: Flower metric
    records may carry counts as floats)."""
    if key not in counts:
        raise ValueError(f"confusion count {key!r} is missing (expected keys {', '.join(CONFUSION_KEYS)})")
    value = counts[key]
    if not _is_number(value):
        raise ValueError(f"confusion count {key!r} must be a finite number, got {value!r}")
    if value != int(value):
        raise ValueError(f"confusion count {key!r} must be a whole number, got {value!r}")
    if value < 0:
        raise ValueError(f"confusion count {key!r} must not be negative, got {value!r}")
    return int(value)


def _has_counts(metrics: Mapping[str, float]) -> bool:
    return all(key in metrics for key in CONFUSION_KEYS)


def sum_counts(per_site: Iterable[Mapping[str, float]]) -> dict[str, int] | None:
    """Sum ``tp``/``fp``/``tn``/``fn`` over sites.

    Returns ``{"tp": int, "fp": int, "tn": int, "fn": int}``, or ``None`` when
    there are no sites or any site lacks any of the four keys (pooled metrics
    are then not available). A present but invalid count (negative, fractional,
    non-numeric) raises ``ValueError`` naming the key.
    """
    sites = list(per_site)
    if not sites or not all(_has_counts(site) for site in sites):
        return None
    total = dict.fromkeys(CONFUSION_KEYS, 0)
    for site in sites:
        for key in CONFUSION_KEYS:
            total[key] += _count(site, key)
    return total


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def pooled_metrics(counts: Mapping[str, float]) -> dict[str, float | None]:
    """The six Table 2 metrics from one confusion matrix.

    Returns ``{name: value for name in METRIC_NAMES}`` with values in [0, 1],
    or ``None`` for a metric whose denominator is 0 (undefined)::

        sensitivity = tp / (tp + fn)       specificity = tn / (tn + fp)
        ppv         = tp / (tp + fp)       npv         = tn / (tn + fn)
        f1          = 2tp / (2tp + fp + fn)
        accuracy    = (tp + tn) / (tp + fp + tn + fn)

    Raises ``ValueError`` naming the key if a count is missing, negative or
    not a whole number.
    """
    tp, fp, tn, fn = (_count(counts, key) for key in CONFUSION_KEYS)
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
    }


def weighted_mean(
    per_site: Iterable[Mapping[str, float]],
    key: str,
    weight_key: str = NUM_EXAMPLES_KEY,
) -> float | None:
    """Mean of ``site[key]`` weighted by ``site[weight_key]``.

    Sites where ``key`` is missing or not a finite number are skipped. Returns
    ``None`` when no site has the key or the total weight is 0. A site that
    has ``key`` but no valid weight (missing, non-numeric, negative) raises
    ``ValueError`` naming ``weight_key``.
    """
    total = 0.0
    weight_sum = 0.0
    for site in per_site:
        value = site.get(key)
        if not _is_number(value):
            continue
        weight = site.get(weight_key)
        if not _is_number(weight) or weight < 0:
            raise ValueError(
                f"weight {weight_key!r} must be a non-negative number for every site reporting {key!r}, got {weight!r}"
            )
        total += value * weight
        weight_sum += weight
    return total / weight_sum if weight_sum > 0 else None


def summarize_round(per_site: Mapping[str, Mapping[str, float]]) -> dict:
    """The pooled record of one evaluation round.

    ``per_site`` maps a site name to the metrics dict its ``evaluate()``
    returned plus ``"num-examples"``. The result is a flat JSON-serialisable
    dict (insertion order as listed)::

        {
          "method": "confusion-counts" | "weighted-mean" | "mean" | "none",
          "num-sites": int,               # number of sites in per_site
          "num-examples": int | float,    # sum over sites (0 if none report it)
          # only when method == "confusion-counts" (every site returned tp/fp/tn/fn):
          "tp": int, "fp": int, "tn": int, "fn": int,             # summed over sites
          "sensitivity": float | None, "specificity": ..., "ppv": ..., "npv": ...,
          "f1": ..., "accuracy": ...,     # pooled_metrics() of the summed counts
          # always: every other numeric key common to all sites (e.g. "loss"),
          # averaged over sites weighted by num-examples:
          "<key>": float | None,
        }

    Methods: ``"confusion-counts"`` when every site has the four counts (the
    six metrics are then exact pooled values and override any per-site
    ``accuracy``/``sensitivity``/... keys); otherwise ``"weighted-mean"``
    (the six metrics appear only if every site reported them, as
    num-examples-weighted means); ``"mean"`` is the same but with equal
    weights, used when some site lacks a valid ``num-examples``; ``"none"``
    for an empty ``per_site``. Metric values may be ``None`` (undefined),
    which is why this record belongs in JSON, not in a Flower MetricRecord.
    """
    sites = [per_site[name] for name in per_site]
    record: dict = {"method": "none", "num-sites": len(sites), NUM_EXAMPLES_KEY: 0}
    if not sites:
        return record

    weights_ok = all(_is_number(site.get(NUM_EXAMPLES_KEY)) and site[NUM_EXAMPLES_KEY] >= 0 for site in sites)
    if weights_ok:
        total_examples = sum(site[NUM_EXAMPLES_KEY] for site in sites)
        record[NUM_EXAMPLES_KEY] = int(total_examples) if total_examples == int(total_examples) else total_examples
        weighted_sites = sites
        record["method"] = "weighted-mean"
    else:
        weighted_sites = [{**site, NUM_EXAMPLES_KEY: 1} for site in sites]
        record["method"] = "mean"

    counts = sum_counts(sites)
    if counts is not None:
        record["method"] = "confusion-counts"
        record.update(counts)
        record.update(pooled_metrics(counts))

    common = set.intersection(*(set(k for k, v in site.items() if _is_number(v)) for site in sites))
    skip = set(META_KEYS) | set(CONFUSION_KEYS)
    if counts is not None:
        skip |= set(METRIC_NAMES)
    # Metric names first (Table 2 order), then the rest alphabetically: deterministic.
    ordered = [k for k in METRIC_NAMES if k in common] + sorted(common - set(METRIC_NAMES))
    for key in ordered:
        if key not in skip:
            record[key] = weighted_mean(weighted_sites, key)
    return record


# --- checkpoints ------------------------------------------------------------------------

_CHECKPOINT = re.compile(r"round-(\d+)\.pt")


def checkpoint_path(results_dir: Path, server_round: int) -> Path:
    """Where the global model after `server_round` is kept in a results directory."""
    return results_dir / "checkpoints" / f"round-{server_round}.pt"


def checkpoints(results_dir: Path) -> dict[int, Path]:
    """The checkpoints in a results directory, by round (temporary files left out)."""
    found = (_CHECKPOINT.fullmatch(p.name) for p in (results_dir / "checkpoints").glob("round-*.pt"))
    return {int(m.group(1)): results_dir / "checkpoints" / m.group(0) for m in found if m}
