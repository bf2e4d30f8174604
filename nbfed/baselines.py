"""`run-local --baselines`: each site trained alone, against the federation (the paper's Table 2).

Each site's model trains on that site's data only, for as many epochs as a federation
site trained in total (num_rounds calls of the notebook's `train`), with the code of the
app that ran. Every model, and the federation's final global model, is then evaluated on
the pooled test splits of all sites (confusion counts summed over sites).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import torch
from rich.console import Console
from rich.progress import Progress

from nbfed.convert import App
from nbfed.local import find_sites
from nbfed.metrics import summarize_round


def _app_module(app: App, name: str) -> ModuleType:
    root = str(app.root.resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"{app.package}.{name}")


def run_baselines(app: App, results: Path, data_dir: Path, console: Console) -> dict:
    task = _app_module(app, "task")
    run = json.loads((results / "run.json").read_text())
    config = _app_module(app, "settings").nested_config(run["run_config"])
    num_rounds = int(config["num_rounds"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sites = find_sites(data_dir)
    data = {site: task.load_data(str(path), config) for site, path in sites.items()}

    log = open(results / "logs" / "baselines.log", "w")  # what the notebook's own code prints

    def on_pooled_test(model: torch.nn.Module) -> dict:
        per_site = {}
        for site, (_, test_set) in data.items():
            with contextlib.redirect_stdout(log):
                metrics = dict(task.evaluate(model, test_set, config, device))
            per_site[site] = {**{k: float(v) for k, v in metrics.items()}, "num-examples": len(test_set)}
        return summarize_round(per_site)

    table: dict[str, dict] = {}
    with log, Progress(console=console, transient=True) as progress:
        bar = progress.add_task("baselines", total=len(sites) * num_rounds)
        for site, (train_set, _) in data.items():
            torch.manual_seed(int(config.get("seed", 0)))
            model = task.build_model(config).to(device)
            for r in range(num_rounds):
                progress.update(bar, description=f"{site} alone: round {r + 1}/{num_rounds}")
                with contextlib.redirect_stdout(log):
                    task.train(model, train_set, config, device)
                progress.advance(bar)
            table[site] = on_pooled_test(model)
        federated = task.build_model(config)
        federated.load_state_dict(torch.load(results / "model" / "global_model.pt", weights_only=True))
        table["federation"] = on_pooled_test(federated.to(device))
    (results / "baselines.json").write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    return table
