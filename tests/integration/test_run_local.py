"""`nbfed run-local`: a real SuperLink and three SuperNodes on loopback run the template."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nbfed.report import table2
from nbfed.synth import generate

ROOT = Path(__file__).resolve().parents[2]
NBFED = Path(sys.executable).parent / "nbfed"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """One two-round federation with baselines, shared by the assertions below."""
    tmp = tmp_path_factory.mktemp("run-local")
    generate(tmp / "data", scale=0.02, seed=1)
    results = tmp / "results"
    done = subprocess.run(
        [
            str(NBFED),
            "run-local",
            str(ROOT / "notebook" / "template.ipynb"),
            "--data",
            str(tmp / "data"),
            "--results",
            str(results),
            "--set",
            "num_rounds=2",
            "--baselines",
            "--timeout",
            "600",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return results, done.stdout


def test_both_rounds_completed_at_every_site(federation):
    results, stdout = federation
    run = json.loads((results / "run.json").read_text())
    rounds = json.loads((results / "rounds.json").read_text())
    assert run["status"] == "completed" and run["num_rounds"] == 2
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert sorted(r["train"]) == sorted(r["evaluate"]) == ["site-a", "site-b", "site-c"]
        assert "errors" not in r
        # each site's time in the notebook's code, and the rest of the round: both real, both in it
        work = r["site_seconds"]
        assert sorted(work["train"]) == sorted(work["evaluate"]) == ["site-a", "site-b", "site-c"]
        slowest = max(work["train"].values()) + max(work["evaluate"].values())
        assert 0 < slowest < r["duration_s"] and r["overhead_s"] == pytest.approx(r["duration_s"] - slowest, abs=0.01)
    assert "round 2/2" in stdout


def test_pooled_metrics_are_plausible_and_beat_chance(federation):
    results, _ = federation
    final = json.loads((results / "rounds.json").read_text())[-1]["pooled"]
    for name in ("sensitivity", "specificity", "ppv", "npv", "f1", "accuracy"):
        assert 0.0 <= final[name] <= 1.0, name
    total = final["tp"] + final["fp"] + final["tn"] + final["fn"]
    assert total == sum(
        site["num-examples"] for site in json.loads((results / "rounds.json").read_text())[-1]["evaluate"].values()
    )
    # balanced accuracy: chance is 0.5 whatever the class imbalance
    assert (final["sensitivity"] + final["specificity"]) / 2 > 0.55


def test_results_directory_holds_everything(federation):
    results, _ = federation
    for path in (
        "rounds.csv",
        "report.md",
        "metrics.png",
        "model/global_model.pt",
        "checkpoints/round-2.pt",
        "app/pyproject.toml",
        "overrides.toml",
        "logs/superlink.log",
    ):
        assert (results / path).is_file(), path
    assert len((results / "rounds.csv").read_text().strip().splitlines()) == 3  # header + 2 rounds


def test_baselines_table_has_sites_and_federation(federation):
    results, stdout = federation
    columns, rows = table2(results)
    assert columns == ["Site A", "Site B", "Site C", "Federation"]
    assert [label for label, _ in rows][-1] == "Accuracy"
    assert all(v is None or 0 <= v <= 1 for _, values in rows for v in values)
    assert "Federation" in stdout and "Site A" in stdout


def test_clientapps_were_forked_from_a_warm_zygote(federation):
    results, _ = federation
    for site in ("site-a", "site-b", "site-c"):
        log = (results / "logs" / f"supernode-{site}.log").read_text()
        assert "ClientApp zygote ready" in log and "cold flwr-clientapp" not in log, site


def test_processes_are_cleaned_up(federation):
    results, _ = federation
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    # every SuperNode's command line names its data directory, beside the results
    assert str(results.parent / "data") not in ps
    # (the site containers of the Docker tests run zygotes too, from /opt/nbfed: not ours)
    assert f"{ROOT / 'nbfed' / 'warm_supernode.py'} --zygote" not in ps


def test_a_failing_notebook_fails_fast_with_the_sites_reason_and_leaves_no_process(tmp_path):
    from notebooks import minimal_cells, write_notebook

    failing = (
        "def load_data(data_dir: str, config: dict):\n"
        "    raise FileNotFoundError(f'no slides under {data_dir}/train')\n"
    )
    nb = write_notebook(tmp_path / "failing.ipynb", minimal_cells(data=failing))
    generate(tmp_path / "data", scale=0.01, seed=3)
    done = subprocess.run(
        [
            str(NBFED),
            "run-local",
            str(nb),
            "--data",
            str(tmp_path / "data"),
            "--results",
            str(tmp_path / "results"),
            "--timeout",
            "300",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 1
    assert "round 1: no site returned a model" in done.stderr
    assert f"no slides under {tmp_path / 'data' / 'site-b'}/train" in done.stderr
    assert json.loads((tmp_path / "results" / "run.json").read_text())["status"] == "failed"
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path / "data") not in ps


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupt_stops_every_process(tmp_path, sig):
    import signal
    import time

    from notebooks import minimal_cells, write_notebook

    nb = write_notebook(tmp_path / "nb.ipynb", minimal_cells())
    generate(tmp_path / "data", scale=0.01, seed=4)
    proc = subprocess.Popen(
        [str(NBFED), "run-local", str(nb), "--data", str(tmp_path / "data"), "--results", str(tmp_path / "results")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "results" / "events.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.5)  # the run is under way once its ServerApp writes events
    proc.send_signal(getattr(signal, sig))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted; every process was stopped" in stderr
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path / "data") not in ps
