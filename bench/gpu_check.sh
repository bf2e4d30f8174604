#!/usr/bin/env bash
# One-shot proof of the CUDA path, end to end, on a machine with an NVIDIA GPU:
#   the template notebook runs federated with `nbfed run-local` (a real SuperLink and one
#   SuperNode per site, 3 sites) and every site's ClientApp trains on the GPU.
#
# What it does, failing loudly at the first broken check:
#   1. installs the carried wheels (.whl/, when Flower is not importable) into /tmp/site;
#   2. prints nvidia-smi and torch.cuda facts (GPU_REQUIRED=1: no GPU is a failure);
#   3. writes synthetic data for three sites;
#   4. runs notebook/template.ipynb federated while sampling nvidia-smi's compute processes
#      and tying each one to its site (process tree -> the SuperNode's --node-config site=...);
#   5. checks results/run.json and rounds.json: every round finished at every site, plausible
#      metrics; and that every site's ClientApp held a CUDA context on the GPU;
#   6. times the generated app's train() for one epoch on cuda and on cpu on one site's data;
#   7. writes $OUT/summary.json, $OUT/gpu_check.log and $OUT/logs.tar.gz.
#
# On the GPU machine (no network; Python 3.12 with torch preinstalled), from the repo root:
#     bash bench/gpu_check.sh            # GPU_REQUIRED=1 by default
# A dry run on a machine without a GPU (e.g. with the project's venv first on PATH):
#     PATH=$PWD/.venv/bin:$PATH GPU_REQUIRED=0 bash bench/gpu_check.sh
# Knobs: OUT (default ./gpu-out), GPU_REQUIRED (1), RUN_TIMEOUT (seconds, 300),
# WORK (scratch, /tmp/nbfed-gpu-check), TIME_SITE (site-b).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-$REPO/gpu-out}
GPU_REQUIRED=${GPU_REQUIRED:-1}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
WORK=${WORK:-/tmp/nbfed-gpu-check}
TIME_SITE=${TIME_SITE:-site-b}
export PYTHONUNBUFFERED=1

mkdir -p "$OUT"
rm -rf "$WORK"
mkdir -p "$WORK"
exec > >(tee "$OUT/gpu_check.log") 2>&1
STAGE=start
STARTED=$(date +%s)

step() { STAGE=$1; echo; echo "=== [$(( $(date +%s) - STARTED )) s] $*"; }
fail() { echo "GPU CHECK FAILED ($STAGE): $*" >&2; exit 1; }

SAMPLER_PID=
finish() {
    local rc=$?
    set +e
    if [ -n "$SAMPLER_PID" ]; then kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null; fi
    if [ ! -s "$OUT/summary.json" ]; then
        printf '{"status": "failed", "stage": "%s", "exit_code": %d, "elapsed_s": %d}\n' \
            "$STAGE" "$rc" "$(( $(date +%s) - STARTED ))" >"$OUT/summary.json"
    fi
    # Small: logs, metrics and samples only (no checkpoints, no model, no app copy).
    (cd "$WORK" && tar -czf "$OUT/logs.tar.gz" --exclude='results/app' --exclude='results/checkpoints' \
        --exclude='results/model' --exclude='results/*.png' --exclude=data -- * 2>/dev/null)
    if [ "$rc" -eq 0 ]; then
        echo "GPU CHECK PASSED in $(( $(date +%s) - STARTED )) s; summary: $OUT/summary.json"
    else
        echo "GPU CHECK FAILED at stage '$STAGE' (exit $rc) after $(( $(date +%s) - STARTED )) s; see $OUT/gpu_check.log and $OUT/logs.tar.gz" >&2
    fi
    sleep 0.5  # let tee finish writing gpu_check.log
}
trap finish EXIT
on_err() { echo "command failed (line $1): ${2%%$'\n'*}" >&2; }  # first line of the command only
trap 'on_err $LINENO "$BASH_COMMAND"' ERR

# ---------------------------------------------------------------------------------------------
step python "Python and Flower"
command -v python3 >/dev/null || fail "no python3 on PATH"
if python3 -c 'import flwr' 2>/dev/null; then
    echo "Flower is importable already ($(command -v python3)); the carried wheels are not needed"
else
    ls .whl/*.whl >/dev/null 2>&1 || fail "Flower is not installed and there are no wheels in .whl/ (name .whl in carry)"
    echo "installing $(ls .whl/*.whl | wc -l) carried wheels into /tmp/site"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || fail "installing the carried wheels failed"
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    export PATH=/tmp/site/bin:$PATH
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$REPO  # the wheels first, then nbfed from this checkout
python3 --version
for cmd in flower-superlink flower-supernode flower-superexec flwr flwr-clientapp flwr-serverapp; do
    command -v "$cmd" >/dev/null || fail "$cmd is not on PATH"
done
python3 - <<'EOF' || fail "Flower or nbfed cannot be imported, or nbfed does not find Flower's commands"
import importlib.metadata as md
import sys
from nbfed.superlink import BIN
for name in ("flwr", "torch", "numpy", "protobuf", "grpcio", "typer", "rich", "nbformat", "nbconvert", "fastapi", "cryptography"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} MISSING")
missing = [c for c in ("flower-superlink", "flower-supernode", "flwr") if not (BIN / c).exists()]
print(f"  nbfed runs Flower's commands from {BIN}")
sys.exit(f"not in {BIN}: {missing}" if missing else 0)
EOF
flwr --version || fail "the flwr command does not run"

# ---------------------------------------------------------------------------------------------
step gpu "GPU (GPU_REQUIRED=$GPU_REQUIRED)"
if command -v nvidia-smi >/dev/null; then nvidia-smi || true; else echo "nvidia-smi: not found"; fi
python3 - "$WORK/cuda.json" <<'EOF' || fail "torch could not report on CUDA"
import json, sys
import torch
from nbfed.flower_app.settings import _auto_device
info = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "auto_device": _auto_device()}
if info["cuda_available"]:
    p = torch.cuda.get_device_properties(0)
    info.update(device_count=torch.cuda.device_count(), name=p.name, capability=f"{p.major}.{p.minor}",
                memory_gib=round(p.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version())
    x = torch.randn(1024, 1024, device="cuda")
    info["matmul_ok"] = bool(torch.isfinite(x @ x).all().item())
print(json.dumps(info, indent=1))
json.dump(info, open(sys.argv[1], "w"))
EOF
HAVE_GPU=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["cuda_available"]))' "$WORK/cuda.json")
if [ "$HAVE_GPU" = 1 ]; then
    [ "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["auto_device"])' "$WORK/cuda.json")" = cuda ] \
        || fail "torch sees a GPU but the app's _auto_device() does not pick cuda"
    command -v nvidia-smi >/dev/null || fail "torch sees a GPU but nvidia-smi is missing: no way to show the sites' processes on it"
    echo "GPU present: the sites must train on cuda"
elif [ "$GPU_REQUIRED" = 1 ]; then
    fail "no GPU: torch.cuda.is_available() is False (set GPU_REQUIRED=0 for a dry run without one)"
else
    echo "NO GPU: torch.cuda.is_available() is False; dry run on cpu, the cuda checks are SKIPPED (GPU_REQUIRED=0)"
fi

# ---------------------------------------------------------------------------------------------
step data "synthetic data for three sites"
python3 -m nbfed.cli synth-data -o "$WORK/data" || fail "nbfed synth-data failed"

# ---------------------------------------------------------------------------------------------
step run "template notebook, federated: SuperLink + 3 SuperNodes (timeout ${RUN_TIMEOUT} s)"
cat >"$WORK/sampler.py" <<'EOF'
"""Every 0.1 s: the GPU's compute processes (NVML, else nvidia-smi), each tied to its site through
the process tree; and, as secondary evidence, which /dev/nvidia* files each ClientApp holds open."""
import json, os, re, subprocess, sys, time

def ppid(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])

def cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace").strip()

ROLES = ("flwr-clientapp", "flwr-serverapp", "flower-superexec", "flower-supernode", "flower-superlink")

def describe(pid):
    """(site or None, the process's role): walk up to the SuperNode that started it."""
    role, site, p = None, None, pid
    try:
        for _ in range(12):
            cmd = cmdline(p)
            # (nbfed's SuperNode forks its ClientApps from a zygote: they carry the zygote's command line)
            role = role or ("flwr-clientapp" if "--zygote" in cmd else next((r for r in ROLES if r in cmd), None))
            m = re.search(r'site="([^"]+)"', cmd) if "supernode" in cmd else None
            if m:
                site = m.group(1)
                break
            p = ppid(p)
            if p <= 1:
                break
    except (OSError, IndexError, ValueError):
        pass
    return site, role or "other"

try:
    import pynvml  # nvidia-ml-py: in-process and fast, so short-lived ClientApps are not missed
    pynvml.nvmlInit()
    HANDLES = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
except Exception:
    pynvml = None

def read_gpu():
    """[(pid, MiB)], used MiB, utilisation %."""
    if pynvml:
        procs, used, util = [], 0.0, 0.0
        for h in HANDLES:
            for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
                procs.append((p.pid, (p.usedGpuMemory or 0) / 2**20))
            used += pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20
            util = max(util, float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu))
        return procs, used, util
    apps = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                          capture_output=True, text=True, timeout=10).stdout
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=memory.used,utilization.gpu", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=10).stdout.split("\n")[0].split(",")
    procs = []
    for line in apps.strip().splitlines():
        pid, mem = (x.strip() for x in line.split(","))
        if pid.isdigit():
            procs.append((int(pid), float(mem) if mem.replace(".", "").isdigit() else 0.0))
    return procs, float(gpu[0]), float(gpu[1])

def clientapp_devices():
    """{pid: (site, [open /dev/nvidia* files])} for every flwr-clientapp process."""
    found = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if "flwr-clientapp" not in cmdline(d) and "--zygote" not in cmdline(d):
                continue
            files = {os.readlink(f"/proc/{d}/fd/{fd}") for fd in os.listdir(f"/proc/{d}/fd")}
            found[d] = (describe(int(d))[0], sorted(f for f in files if f.startswith("/dev/nvidia")))
        except OSError:
            pass
    return found

out = open(sys.argv[1], "a", buffering=1)
out.write(json.dumps({"source": "nvml" if pynvml else "nvidia-smi"}) + "\n")
while True:
    t = time.time()
    try:
        procs, used, util = read_gpu()
        rows = []
        for pid, mib in procs:
            site, role = describe(pid)
            rows.append({"pid": str(pid), "mib": round(mib, 1), "site": site, "role": role})
        clientapps = {pid: {"site": site, "dev": dev} for pid, (site, dev) in clientapp_devices().items()}
        out.write(json.dumps({"t": t, "gpu_mib": used, "gpu_util": util, "procs": rows, "clientapps": clientapps}) + "\n")
    except Exception as e:  # keep sampling: one failed read is no reason to stop
        out.write(json.dumps({"t": t, "error": repr(e)}) + "\n")
    time.sleep(max(0.0, 0.1 - (time.time() - t)))
EOF
if [ "$HAVE_GPU" = 1 ]; then
    python3 "$WORK/sampler.py" "$WORK/gpu_samples.jsonl" &
    SAMPLER_PID=$!
fi
RUN_START=$(date +%s)
timeout --signal=INT --kill-after=30 "$((RUN_TIMEOUT + 30))" \
    python3 -m nbfed.cli run-local notebook/template.ipynb --data "$WORK/data" --results "$WORK/results" \
    --timeout "$RUN_TIMEOUT" || fail "nbfed run-local failed (exit $?); logs in logs.tar.gz (results/logs/)"
RUN_S=$(( $(date +%s) - RUN_START ))
if [ -n "$SAMPLER_PID" ]; then kill "$SAMPLER_PID"; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=; fi
echo "federated run took ${RUN_S} s"

# ---------------------------------------------------------------------------------------------
step timing "train() for one epoch on one site's data, cuda against cpu"
cat >"$WORK/gpu_check_timing.py" <<'EOF'
"""Time the generated app's own train() (results/app/<app>/task.py) for one epoch, per device."""
import json, sys, time
from pathlib import Path

import torch

results, data, site, out = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
run = json.loads((results / "run.json").read_text())
sys.path.insert(0, str(results / "app"))
task = __import__(f"{run['app']}.task", fromlist=["task"])
from nbfed.flower_app.settings import nested_config  # the ClientApp's own run config -> CONFIG

config = {**nested_config(run["run_config"]), "local_epochs": 1}
train_set, _ = task.load_data(str(data / site), config)
# The same samples held as tensors: the training step alone, without PNG decoding.
xs, ys = zip(*(train_set[i] for i in range(len(train_set))))
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
report = {"site": site, "samples": len(train_set), "config": config, "torch_threads": torch.get_num_threads(), "devices": {}}
for device in devices:
    first, _ = timed(train_set, device)  # cold: cuDNN autotuning, allocator, first kernels
    files_s, metrics = timed(train_set, device)
    memory_s, _ = timed(in_memory, device)
    report["devices"][device] = {"first_epoch_s": first, "epoch_s": files_s, "epoch_in_memory_s": memory_s, "metrics": metrics}
    if device == "cuda":
        report["devices"][device]["max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
if "cuda" in report["devices"]:
    c, g = report["devices"]["cpu"], report["devices"]["cuda"]
    report["speedup_cuda_over_cpu"] = {"epoch": round(c["epoch_s"] / g["epoch_s"], 2),
                                       "epoch_in_memory": round(c["epoch_in_memory_s"] / g["epoch_in_memory_s"], 2)}
print(json.dumps(report, indent=1))
out.write_text(json.dumps(report))
EOF
python3 "$WORK/gpu_check_timing.py" "$WORK/results" "$WORK/data" "$TIME_SITE" "$WORK/timing.json" \
    || fail "timing train() failed"

# ---------------------------------------------------------------------------------------------
step checks "results and GPU evidence"
python3 - "$WORK" "$OUT/summary.json" "$HAVE_GPU" "$GPU_REQUIRED" "$RUN_S" "$STARTED" <<'EOF'
import json, math, sys, time
from pathlib import Path

work, summary_path, have_gpu, gpu_required, run_s, started = (
    Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1", int(sys.argv[5]), int(sys.argv[6]))
results = work / "results"
problems = []
def check(ok, message):
    if not ok:
        problems.append(message)
    return ok

run = json.loads((results / "run.json").read_text())
rounds = json.loads((results / "rounds.json").read_text())
sites = sorted(run["sites"])
n = int(run["num_rounds"])
check(run.get("status") == "completed", f"run.json status is {run.get('status')!r}, not 'completed'")
check(sites == ["site-a", "site-b", "site-c"], f"run.json sites are {sites}, not site-a, site-b, site-c")
check([r.get("round") for r in rounds] == list(range(1, n + 1)), f"rounds.json has rounds {[r.get('round') for r in rounds]}, expected 1..{n}")
finite = lambda v: isinstance(v, (int, float)) and math.isfinite(v)
for r in rounds:
    k = r.get("round")
    for phase in ("train", "evaluate"):
        got = sorted(r.get(phase, {}))
        check(got == sites, f"round {k}: {phase} replies from {got}, expected {sites}")
        for site, m in r.get(phase, {}).items():
            check(finite(m.get("loss")) and m["loss"] >= 0, f"round {k} {phase} {site}: loss {m.get('loss')}")
            check(finite(m.get("accuracy")) and 0 <= m["accuracy"] <= 1, f"round {k} {phase} {site}: accuracy {m.get('accuracy')}")
            check(m.get("num-examples", 0) > 0, f"round {k} {phase} {site}: no examples")
            if phase == "evaluate":
                check(sum(m.get(c, 0) for c in ("tp", "fp", "tn", "fn")) == m.get("num-examples"),
                      f"round {k} evaluate {site}: confusion counts do not add up to num-examples")
final = rounds[-1]["pooled"] if rounds else {}
check(final.get("num-sites") == len(sites), f"final pooled metrics from {final.get('num-sites')} sites")
check(finite(final.get("accuracy")) and final["accuracy"] >= 0.6, f"final pooled accuracy {final.get('accuracy')} < 0.6 (synthetic data is easy)")
check(final.get("sensitivity", 0) > 0 and final.get("specificity", 0) > 0,
      f"degenerate final model: sensitivity {final.get('sensitivity')}, specificity {final.get('specificity')}")
events = [json.loads(line) for line in (results / "events.jsonl").read_text().splitlines() if line.strip()]
for e in events:
    if e.get("event") == "round_finished":
        check(not e.get("errors"), f"round {e.get('round')} had site errors: {e.get('errors')}")
check(any(e.get("event") == "finished" for e in events), "events.jsonl has no 'finished' event")

gpu = {"checked": have_gpu}
if have_gpu:
    lines = [json.loads(line) for line in (work / "gpu_samples.jsonl").read_text().splitlines() if line.strip()]
    source = next((s["source"] for s in lines if "source" in s), "?")
    samples = [s for s in lines if "t" in s]
    ok = [s for s in samples if "procs" in s]
    # Secondary: the /dev/nvidia* files each site's ClientApps held open (not a pass criterion).
    held = {}
    for s in ok:
        for c in s["clientapps"].values():
            if c["site"]:
                held.setdefault(c["site"], set()).update(c["dev"])
    per_site = {}
    for s in ok:
        for p in s["procs"]:
            if p["site"]:
                d = per_site.setdefault(p["site"], {"pids": set(), "roles": set(), "max_mib": 0.0, "samples": 0})
                d["pids"].add(p["pid"]); d["roles"].add(p["role"]); d["samples"] += 1
                d["max_mib"] = max(d["max_mib"], p["mib"] or 0.0)
    others = sorted({(p["role"], p["pid"]) for s in ok for p in s["procs"] if not p["site"]})
    gpu.update(source=source, samples=len(samples), sample_errors=len(samples) - len(ok),
               first_sample_error=next((s["error"] for s in samples if "error" in s), None),
               clientapp_open_nvidia_files={k: sorted(v) for k, v in sorted(held.items())},
               peak_gpu_mib=max((s["gpu_mib"] for s in ok), default=None),
               peak_gpu_util=max((s["gpu_util"] for s in ok), default=None),
               sites={k: {"clientapp_processes_on_gpu": len(v["pids"]), "roles": sorted(v["roles"]),
                          "max_mib": v["max_mib"], "samples": v["samples"]} for k, v in sorted(per_site.items())},
               processes_without_site=[list(o) for o in others])
    check(len(ok) > 0, f"no GPU sample could be read during the run ({source}): {gpu['first_sample_error']}")
    if ok and not per_site and others:
        problems.append(f"processes were on the GPU but none could be tied to a site (PID namespace?): {others[:6]}; "
                        f"ClientApps' open /dev/nvidia* files: {gpu['clientapp_open_nvidia_files']}")
    for site in sites:
        d = per_site.get(site)
        if check(d is not None, f"{site}: no process of this site was ever seen holding a CUDA context (nvidia-smi --query-compute-apps)"):
            check("flwr-clientapp" in d["roles"], f"{site}: the process on the GPU was {sorted(d['roles'])}, not flwr-clientapp")
            # train and evaluate are one flwr-clientapp process each, per round: expect several
            check(len(d["pids"]) >= n, f"{site}: only {len(d['pids'])} ClientApp processes seen on the GPU for {n} rounds")
else:
    gpu["note"] = "NO GPU: torch.cuda.is_available() was False; the sites trained on cpu and the cuda checks were skipped"
    check(not gpu_required, "no GPU but GPU_REQUIRED=1")

timing = json.loads((work / "timing.json").read_text())
if have_gpu:
    check("cuda" in timing["devices"], "the timing ran without cuda")
cuda = json.loads((work / "cuda.json").read_text())
summary = {
    "status": "failed" if problems else ("passed" if have_gpu else "passed-without-gpu"),
    "problems": problems,
    "cuda": cuda,
    "run": {"status": run.get("status"), "num_rounds": n, "sites": sites, "wall_s": run_s,
            "round_durations_s": [r.get("duration_s") for r in rounds],
            "final_pooled": {k: final.get(k) for k in ("accuracy", "sensitivity", "specificity", "f1", "loss")}},
    "gpu_evidence": gpu,
    "train_timing": timing,
    "elapsed_s": int(time.time()) - started,
}
summary_path.write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps({k: summary[k] for k in ("status", "problems", "run", "gpu_evidence")}, indent=1))
if timing.get("speedup_cuda_over_cpu"):
    print("train() one epoch, cuda over cpu:", timing["speedup_cuda_over_cpu"])
if problems:
    print("\n".join(f"CHECK FAILED: {p}" for p in problems), file=sys.stderr)
    sys.exit(1)
EOF
STAGE=done
