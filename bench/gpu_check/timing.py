"""gpu_check.sh, step timing: the generated app's own train() (results/app/<app>/task.py) for one
epoch, per device. argv: RESULTS DATA SITE OUT (timing.json)."""

import json
import sys
import time
from pathlib import Path

import torch

from nbfed.flower_app.settings import nested_config  # the ClientApp's own run config -> CONFIG

results, data, site, out = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
run = json.loads((results / "run.json").read_text())
sys.path.insert(0, str(results / "app"))
task = __import__(f"{run['app']}.task", fromlist=["task"])

config = {**nested_config(run["run_config"]), "local_epochs": 1}
train_set, _ = task.load_data(str(data / site), config)
# The same samples held as tensors: the training step alone, without PNG decoding.
xs, ys = zip(*(train_set[i] for i in range(len(train_set))), strict=True)
in_memory = torch.utils.data.TensorDataset(torch.stack(xs), torch.tensor(ys))


def timed(dataset, device):
    model = task.build_model(config)
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    metrics = task.train(model, dataset, config, device)
    if device == "cuda":
        torch.cuda.synchronize()
    return round(time.perf_counter() - t, 3), {k: float(v) for k, v in metrics.items()}


devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
report = {
    "site": site,
    "samples": len(train_set),
    "config": config,
    "torch_threads": torch.get_num_threads(),
    "devices": {},
}
for device in devices:
    first, _ = timed(train_set, device)  # cold: cuDNN autotuning, allocator, first kernels
    files_s, metrics = timed(train_set, device)
    memory_s, _ = timed(in_memory, device)
    report["devices"][device] = {
        "first_epoch_s": first,
        "epoch_s": files_s,
        "epoch_in_memory_s": memory_s,
        "metrics": metrics,
    }
    if device == "cuda":
        report["devices"][device]["max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
if "cuda" in report["devices"]:
    c, g = report["devices"]["cpu"], report["devices"]["cuda"]
    report["speedup_cuda_over_cpu"] = {
        "epoch": round(c["epoch_s"] / g["epoch_s"], 2),
        "epoch_in_memory": round(c["epoch_in_memory_s"] / g["epoch_in_memory_s"], 2),
    }
print(json.dumps(report, indent=1))
out.write_text(json.dumps(report))
