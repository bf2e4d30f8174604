"""gpu_check.sh, step python: Flower and nbfed import, and nbfed finds Flower's commands."""

import importlib.metadata as md
import sys

from nbfed.superlink import BIN

for name in (
    "flwr",
    "torch",
    "numpy",
    "protobuf",
    "grpcio",
    "typer",
    "rich",
    "nbformat",
    "nbconvert",
    "fastapi",
    "cryptography",
):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} MISSING")
missing = [c for c in ("flower-superlink", "flower-supernode", "flwr") if not (BIN / c).exists()]
print(f"  nbfed runs Flower's commands from {BIN}")
sys.exit(f"not in {BIN}: {missing}" if missing else 0)
