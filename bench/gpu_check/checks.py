"""gpu_check.sh, step checks: results/run.json and rounds.json, and the GPU evidence the sampler
gathered; writes the summary (argv: WORK SUMMARY HAVE_GPU GPU_REQUIRED RUN_S STARTED), exits 1 on a problem."""

import json
import math
import sys
import time
from pathlib import Path

work, summary_path, have_gpu, gpu_required, run_s, started = (
    Path(sys.argv[1]),
    Path(sys.argv[2]),
    sys.argv[3] == "1",
    sys.argv[4] == "1",
    int(sys.argv[5]),
    int(sys.argv[6]),
)
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
check(
    [r.get("round") for r in rounds] == list(range(1, n + 1)),
    f"rounds.json has rounds {[r.get('round') for r in rounds]}, expected 1..{n}",
)


def finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


for r in rounds:
    k = r.get("round")
    for phase in ("train", "evaluate"):
        got = sorted(r.get(phase, {}))
        check(got == sites, f"round {k}: {phase} replies from {got}, expected {sites}")
        for site, m in r.get(phase, {}).items():
            check(finite(m.get("loss")) and m["loss"] >= 0, f"round {k} {phase} {site}: loss {m.get('loss')}")
            check(
                finite(m.get("accuracy")) and 0 <= m["accuracy"] <= 1,
                f"round {k} {phase} {site}: accuracy {m.get('accuracy')}",
            )
            check(m.get("num-examples", 0) > 0, f"round {k} {phase} {site}: no examples")
            if phase == "evaluate":
                check(
                    sum(m.get(c, 0) for c in ("tp", "fp", "tn", "fn")) == m.get("num-examples"),
                    f"round {k} evaluate {site}: confusion counts do not add up to num-examples",
                )
final = rounds[-1]["pooled"] if rounds else {}
check(final.get("num-sites") == len(sites), f"final pooled metrics from {final.get('num-sites')} sites")
check(
    finite(final.get("accuracy")) and final["accuracy"] >= 0.6,
    f"final pooled accuracy {final.get('accuracy')} < 0.6 (synthetic data is easy)",
)
check(
    final.get("sensitivity", 0) > 0 and final.get("specificity", 0) > 0,
    f"degenerate final model: sensitivity {final.get('sensitivity')}, specificity {final.get('specificity')}",
)
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
                d["pids"].add(p["pid"])
                d["roles"].add(p["role"])
                d["samples"] += 1
                d["max_mib"] = max(d["max_mib"], p["mib"] or 0.0)
    others = sorted({(p["role"], p["pid"]) for s in ok for p in s["procs"] if not p["site"]})
    gpu.update(
        source=source,
        samples=len(samples),
        sample_errors=len(samples) - len(ok),
        first_sample_error=next((s["error"] for s in samples if "error" in s), None),
        clientapp_open_nvidia_files={k: sorted(v) for k, v in sorted(held.items())},
        peak_gpu_mib=max((s["gpu_mib"] for s in ok), default=None),
        peak_gpu_util=max((s["gpu_util"] for s in ok), default=None),
        sites={
            k: {
                "clientapp_processes_on_gpu": len(v["pids"]),
                "roles": sorted(v["roles"]),
                "max_mib": v["max_mib"],
                "samples": v["samples"],
            }
            for k, v in sorted(per_site.items())
        },
        processes_without_site=[list(o) for o in others],
    )
    check(len(ok) > 0, f"no GPU sample could be read during the run ({source}): {gpu['first_sample_error']}")
    if ok and not per_site and others:
        problems.append(
            f"processes were on the GPU but none could be tied to a site (PID namespace?): {others[:6]}; "
            f"ClientApps' open /dev/nvidia* files: {gpu['clientapp_open_nvidia_files']}"
        )
    for site in sites:
        d = per_site.get(site)
        if check(
            d is not None,
            f"{site}: no process of this site was ever seen holding a CUDA context (nvidia-smi --query-compute-apps)",
        ):
            check(
                "flwr-clientapp" in d["roles"],
                f"{site}: the process on the GPU was {sorted(d['roles'])}, not flwr-clientapp",
            )
            # train and evaluate are one flwr-clientapp process each, per round: expect several
            check(
                len(d["pids"]) >= n, f"{site}: only {len(d['pids'])} ClientApp processes seen on the GPU for {n} rounds"
            )
else:
    gpu["note"] = (
        "NO GPU: torch.cuda.is_available() was False; the sites trained on cpu and the cuda checks were skipped"
    )
    check(not gpu_required, "no GPU but GPU_REQUIRED=1")

timing = json.loads((work / "timing.json").read_text())
if have_gpu:
    check("cuda" in timing["devices"], "the timing ran without cuda")
cuda = json.loads((work / "cuda.json").read_text())
summary = {
    "status": "failed" if problems else ("passed" if have_gpu else "passed-without-gpu"),
    "problems": problems,
    "cuda": cuda,
    "run": {
        "status": run.get("status"),
        "num_rounds": n,
        "sites": sites,
        "wall_s": run_s,
        "round_durations_s": [r.get("duration_s") for r in rounds],
        "final_pooled": {k: final.get(k) for k in ("accuracy", "sensitivity", "specificity", "f1", "loss")},
    },
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
