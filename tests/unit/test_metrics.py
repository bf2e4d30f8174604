"""nbfed.metrics: pooled Table 2 metrics from summed confusion counts (stdlib only)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from nbfed import metrics
from nbfed.metrics import (
    CONFUSION_KEYS,
    METRIC_LABELS,
    METRIC_NAMES,
    pooled_metrics,
    sum_counts,
    summarize_round,
    weighted_mean,
)

METRICS_PY = Path(metrics.__file__)


def test_constants():
    assert CONFUSION_KEYS == ("tp", "fp", "tn", "fn")
    assert METRIC_NAMES == ("sensitivity", "specificity", "ppv", "npv", "f1", "accuracy")
    assert [METRIC_LABELS[n] for n in METRIC_NAMES] == [
        "Sensitivity",
        "Specificity",
        "PPV",
        "NPV",
        "F1 score",
        "Accuracy",
    ]


def test_pooled_metrics_hand_computed():
    m = pooled_metrics({"tp": 40, "fp": 10, "tn": 45, "fn": 5})
    assert list(m) == list(METRIC_NAMES)
    assert m["sensitivity"] == pytest.approx(40 / 45)
    assert m["specificity"] == pytest.approx(45 / 55)
    assert m["ppv"] == pytest.approx(0.8)
    assert m["npv"] == pytest.approx(0.9)
    assert m["f1"] == pytest.approx(80 / 95)
    assert m["accuracy"] == pytest.approx(0.85)


def test_pooled_metrics_accepts_whole_floats_and_ignores_extra_keys():
    # Flower metric records may carry counts as floats.
    m = pooled_metrics({"tp": 40.0, "fp": 10.0, "tn": 45.0, "fn": 5.0, "loss": 0.3})
    assert m["accuracy"] == pytest.approx(0.85)


def test_zero_denominators_give_none():
    m = pooled_metrics({"tp": 0, "fp": 0, "tn": 10, "fn": 0})  # no positives at all
    assert m["sensitivity"] is None
    assert m["ppv"] is None
    assert m["f1"] is None
    assert m["specificity"] == 1.0
    assert m["npv"] == 1.0
    assert m["accuracy"] == 1.0
    assert all(v is None for v in pooled_metrics({"tp": 0, "fp": 0, "tn": 0, "fn": 0}).values())


@pytest.mark.parametrize(
    "key, value",
    [("tp", -1), ("fp", 2.5), ("tn", "7"), ("fn", float("nan")), ("tp", True), ("fn", None)],
)
def test_bad_counts_raise_naming_the_key(key, value):
    counts = {"tp": 1, "fp": 1, "tn": 1, "fn": 1, key: value}
    with pytest.raises(ValueError, match=repr(key)):
        pooled_metrics(counts)


def test_missing_count_raises_naming_the_key():
    with pytest.raises(ValueError, match="'fn'"):
        pooled_metrics({"tp": 1, "fp": 1, "tn": 1})


def test_sum_counts():
    sites = [
        {"tp": 1, "fp": 2, "tn": 3, "fn": 4, "loss": 0.5},
        {"tp": 10, "fp": 20, "tn": 30, "fn": 40},
        {"tp": 100.0, "fp": 200, "tn": 300, "fn": 400},
    ]
    total = sum_counts(sites)
    assert total == {"tp": 111, "fp": 222, "tn": 333, "fn": 444}
    assert all(type(v) is int for v in total.values())
    assert sum_counts(iter(sites)) == total  # any iterable


def test_sum_counts_none_when_a_site_lacks_a_key_or_no_sites():
    assert sum_counts([{"tp": 1, "fp": 1, "tn": 1, "fn": 1}, {"tp": 1, "fp": 1, "tn": 1}]) is None
    assert sum_counts([]) is None


def test_sum_counts_rejects_bad_counts():
    with pytest.raises(ValueError, match="'tn'"):
        sum_counts([{"tp": 1, "fp": 1, "tn": -3, "fn": 1}])


def test_pooling_differs_from_averaging_site_ratios():
    # Three hospitals with very different numbers of positive cases.
    sites = [
        {"tp": 90, "fp": 5, "tn": 0, "fn": 10},  # sensitivity 0.9 (100 positives)
        {"tp": 1, "fp": 5, "tn": 90, "fn": 9},  # sensitivity 0.1 (10 positives)
        {"tp": 5, "fp": 5, "tn": 90, "fn": 5},  # sensitivity 0.5 (10 positives)
    ]
    per_site = [pooled_metrics(s)["sensitivity"] for s in sites]
    mean_of_ratios = sum(per_site) / 3
    pooled = pooled_metrics(sum_counts(sites))["sensitivity"]
    assert mean_of_ratios == pytest.approx(0.5)
    assert pooled == pytest.approx(96 / 120)  # = 0.8
    assert pooled != pytest.approx(mean_of_ratios)
    # Weighting by num-examples (all sites have 105 examples here) does not fix it either.
    for s in sites:
        s["num-examples"] = sum(s[k] for k in CONFUSION_KEYS)
        s["sensitivity"] = pooled_metrics(s)["sensitivity"]
    assert [s["num-examples"] for s in sites] == [105, 105, 105]
    assert weighted_mean(sites, "sensitivity") == pytest.approx(0.5)


def test_weighted_mean():
    sites = [
        {"loss": 1.0, "num-examples": 10},
        {"loss": 4.0, "num-examples": 30},
        {"accuracy": 0.5, "num-examples": 1000},  # no loss: skipped
    ]
    assert weighted_mean(sites, "loss") == pytest.approx((10 + 120) / 40)
    assert weighted_mean(sites, "accuracy") == pytest.approx(0.5)
    assert weighted_mean(sites, "missing") is None
    assert weighted_mean([], "loss") is None
    assert weighted_mean([{"loss": 1.0, "num-examples": 0}], "loss") is None
    assert weighted_mean([{"loss": 2.0, "n": 1}, {"loss": 4.0, "n": 3}], "loss", weight_key="n") == pytest.approx(3.5)


def test_weighted_mean_bad_weight_raises():
    with pytest.raises(ValueError, match="num-examples"):
        weighted_mean([{"loss": 1.0}], "loss")
    with pytest.raises(ValueError, match="num-examples"):
        weighted_mean([{"loss": 1.0, "num-examples": -5}], "loss")


def test_summarize_round_with_counts():
    per_site = {
        "site-a": {"accuracy": 0.99, "loss": 0.2, "tp": 10, "fp": 3, "tn": 50, "fn": 4, "num-examples": 67},
        "site-b": {"accuracy": 0.01, "loss": 0.8, "tp": 30, "fp": 7, "tn": 0, "fn": 1, "num-examples": 38},
        "site-c": {"accuracy": 0.50, "loss": 0.5, "tp": 0, "fp": 0, "tn": 45, "fn": 0, "num-examples": 45},
    }
    rec = summarize_round(per_site)
    assert rec["method"] == "confusion-counts"
    assert rec["num-sites"] == 3
    assert rec["num-examples"] == 150
    assert {k: rec[k] for k in CONFUSION_KEYS} == {"tp": 40, "fp": 10, "tn": 95, "fn": 5}
    # Pooled metrics come from the summed counts, not from the sites' own "accuracy".
    assert rec["accuracy"] == pytest.approx(135 / 150)
    assert rec["sensitivity"] == pytest.approx(40 / 45)
    assert rec["specificity"] == pytest.approx(95 / 105)
    assert rec["ppv"] == pytest.approx(0.8)
    assert rec["npv"] == pytest.approx(95 / 100)
    assert rec["f1"] == pytest.approx(80 / 95)
    # Other common keys: weighted by num-examples.
    assert rec["loss"] == pytest.approx((0.2 * 67 + 0.8 * 38 + 0.5 * 45) / 150)
    assert set(rec) == {"method", "num-sites", "num-examples", *CONFUSION_KEYS, *METRIC_NAMES, "loss"}
    json.dumps(rec)  # JSON-serialisable for rounds.json


def test_summarize_round_without_counts():
    per_site = {
        "site-a": {"accuracy": 0.9, "loss": 0.2, "extra": 1.0, "num-examples": 100},
        "site-b": {"accuracy": 0.6, "loss": 0.8, "tp": 3, "fp": 1, "tn": 2, "fn": 0, "num-examples": 300},
    }
    rec = summarize_round(per_site)
    assert rec["method"] == "weighted-mean"
    assert rec["num-sites"] == 2
    assert rec["num-examples"] == 400
    assert rec["accuracy"] == pytest.approx((90 + 180) / 400)
    assert rec["loss"] == pytest.approx((20 + 240) / 400)
    # Not common to all sites: left out; counts of one site are not pooled.
    assert "extra" not in rec
    assert not any(k in rec for k in CONFUSION_KEYS)
    assert "sensitivity" not in rec
    assert list(rec)[:4] == ["method", "num-sites", "num-examples", "accuracy"]


def test_summarize_round_without_num_examples_uses_plain_mean():
    rec = summarize_round({"a": {"accuracy": 0.9}, "b": {"accuracy": 0.5}})
    assert rec["method"] == "mean"
    assert rec["accuracy"] == pytest.approx(0.7)


def test_summarize_round_empty():
    assert summarize_round({}) == {"method": "none", "num-sites": 0, "num-examples": 0}


def test_metrics_py_imports_only_stdlib():
    tree = ast.parse(METRICS_PY.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "metrics.py must not use relative imports"
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            pytest.fail("metrics.py must not import dynamically")
    non_stdlib = {name for name in imported if name not in sys.stdlib_module_names and name != "__future__"}
    assert not non_stdlib, f"metrics.py imports non-stdlib modules: {sorted(non_stdlib)}"
    assert "nbfed" not in imported


def test_metrics_py_runs_standalone(tmp_path):
    # As copied into a generated Flower app: a lone module, no nbfed package around it.
    import subprocess

    (tmp_path / "pooled.py").write_text(METRICS_PY.read_text(encoding="utf-8"), encoding="utf-8")
    code = (
        "import sys; sys.path.insert(0, '.'); import pooled; "
        "print(pooled.pooled_metrics({'tp': 40, 'fp': 10, 'tn': 45, 'fn': 5})['accuracy'])"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0.85"
