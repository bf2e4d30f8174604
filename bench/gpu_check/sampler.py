"""gpu_check.sh, step run: every 0.1 s, the GPU's compute processes (NVML, else nvidia-smi), each
tied to its site through the process tree; and, as secondary evidence, which /dev/nvidia* files
each ClientApp holds open. One JSON line per sample, appended to argv[1], until killed."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/
from processes import command, parent  # noqa: E402  (bench/processes.py)

ROLES = ("flwr-clientapp", "flwr-serverapp", "flower-superexec", "flower-supernode", "flower-superlink")


def describe(pid):
    """(site or None, the process's role): walk up to the SuperNode that started it."""
    role, site, p = None, None, pid
    try:
        for _ in range(12):
            cmd = command(p)
            # (nbfed's SuperNode forks its ClientApps from a zygote: they carry the zygote's command line)
            role = role or ("flwr-clientapp" if "--zygote" in cmd else next((r for r in ROLES if r in cmd), None))
            m = re.search(r'site="([^"]+)"', cmd) if "supernode" in cmd else None
            if m:
                site = m.group(1)
                break
            p = parent(p)
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
    apps = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    gpu = (
        subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used,utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        .stdout.split("\n")[0]
        .split(",")
    )
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
            if "flwr-clientapp" not in command(d) and "--zygote" not in command(d):
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
        out.write(
            json.dumps({"t": t, "gpu_mib": used, "gpu_util": util, "procs": rows, "clientapps": clientapps}) + "\n"
        )
    except Exception as e:  # keep sampling: one failed read is no reason to stop
        out.write(json.dumps({"t": t, "error": repr(e)}) + "\n")
    time.sleep(max(0.0, 0.1 - (time.time() - t)))
