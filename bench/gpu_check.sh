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
# Each step's Python is a script in bench/gpu_check/ (imports, cuda_facts, sampler, timing, checks).
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
python3 bench/gpu_check/imports.py || fail "Flower or nbfed cannot be imported, or nbfed does not find Flower's commands"
flwr --version || fail "the flwr command does not run"

# ---------------------------------------------------------------------------------------------
step gpu "GPU (GPU_REQUIRED=$GPU_REQUIRED)"
if command -v nvidia-smi >/dev/null; then nvidia-smi || true; else echo "nvidia-smi: not found"; fi
python3 bench/gpu_check/cuda_facts.py "$WORK/cuda.json" || fail "torch could not report on CUDA"
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
if [ "$HAVE_GPU" = 1 ]; then
    python3 bench/gpu_check/sampler.py "$WORK/gpu_samples.jsonl" &
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
python3 bench/gpu_check/timing.py "$WORK/results" "$WORK/data" "$TIME_SITE" "$WORK/timing.json" \
    || fail "timing train() failed"

# ---------------------------------------------------------------------------------------------
step checks "results and GPU evidence"
python3 bench/gpu_check/checks.py "$WORK" "$OUT/summary.json" "$HAVE_GPU" "$GPU_REQUIRED" "$RUN_S" "$STARTED"
STAGE=done
