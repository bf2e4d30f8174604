"""gpu_check.sh, step gpu: what torch knows about CUDA, printed and written to argv[1] (cuda.json)."""

import json
import sys

import torch

from nbfed.flower_app.settings import _auto_device

info = {
    "torch": torch.__version__,
    "cuda_build": torch.version.cuda,
    "cuda_available": torch.cuda.is_available(),
    "auto_device": _auto_device(),
}
if info["cuda_available"]:
    p = torch.cuda.get_device_properties(0)
    info.update(
        device_count=torch.cuda.device_count(),
        name=p.name,
        capability=f"{p.major}.{p.minor}",
        memory_gib=round(p.total_memory / 2**30, 1),
        cudnn=torch.backends.cudnn.version(),
    )
    x = torch.randn(1024, 1024, device="cuda")
    info["matmul_ok"] = bool(torch.isfinite(x @ x).all().item())
print(json.dumps(info, indent=1))
json.dump(info, open(sys.argv[1], "w"))
