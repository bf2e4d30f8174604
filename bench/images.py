#!/usr/bin/env python3
"""Image sizes and build times (issue 7, items 1 and 2).

    .venv/bin/python bench/images.py [--runs 3] [--flavour cpu --flavour cuda]
        [--out bench/results/images.json] [--smoke]

For the template notebook's requirements, --runs times each:

  cold      the nbfed images removed (every tag, with their dangling layers), the base image
            and the wheelhouse (build/) kept: every image step runs again, on an engine that
            holds no older nbfed build (their layers would be reused)
  warm      nothing changed: nothing may be built
  code edit a code-only edit of the notebook: nothing may be built (images carry
            requirements, never code)

then the size of every image. Cold builds remove the nbfed images of this notebook's
requirements: tear down deployments that use them first (the script stops if one is in use).
--smoke: one warm build, sizes only; keeps the script working in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from common import machine, summary  # bench/common.py
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TEMPLATE = ROOT / "notebook" / "template.ipynb"
console = Console()


def build(notebook: Path, flavours: list[str], base: str) -> tuple[float, dict]:
    argv = [
        str(BIN / "nbfed"),
        "build-images",
        str(notebook),
        "--json",
        "--base-image",
        base,
        "--build-dir",
        str(ROOT / "build"),
        "--env-file",
        os.devnull,
        *(f"--flavour={f}" for f in flavours),
    ]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True)
    took = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"nbfed build-images failed:\n{done.stderr[-5000:]}")
    return took, json.loads(done.stdout)


def docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--flavour", action="append", choices=["cpu", "cuda"])
    parser.add_argument("--base-image", default=os.environ.get("NBFED_BASE_IMAGE", "nbfed/base:bookworm"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "images.json")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    flavours = args.flavour or ["cpu"]

    measured: dict[str, dict] = {}
    with console.status("build (or find) the images"):
        _, first = build(TEMPLATE, flavours, args.base_image)
    refs = list(first["images"].values())
    if not args.smoke:
        in_use = docker("ps", "--format", "{{.Image}}").stdout.split()
        if busy := sorted(set(refs) & set(in_use)):
            sys.exit(f"{', '.join(busy)} in use by a running container: tear the deployment down first")
        cold = []
        for n in range(args.runs):
            # Every tag of each image (a registry tag too), then the dangling layers: a cold
            # build must not find them. Older builds' images still cache shared steps: run
            # this on an engine without them (`docker image prune -a`) for a true cold build.
            ids = {docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip() for ref in refs}
            docker("rmi", "--force", *ids)
            docker("image", "prune", "--force")
            with console.status(f"cold build {n + 1}/{args.runs}"):
                took, result = build(TEMPLATE, flavours, args.base_image)
            assert sorted(result["built"]) == sorted(refs), result
            cold.append(took)
        measured["cold build"] = summary(cold, 1)

    warm = []
    for n in range(1 if args.smoke else args.runs):
        with console.status(f"warm build {n + 1}"):
            took, result = build(TEMPLATE, flavours, args.base_image)
        assert result["built"] == [], result
        warm.append(took)
    measured["warm build"] = summary(warm, 1)

    if not args.smoke:
        notebook = nbformat.read(TEMPLATE, as_version=4)
        [train] = [c for c in notebook.cells if "train" in c.metadata.get("tags", [])]
        edits = []
        with tempfile.TemporaryDirectory() as tmp:
            for n in range(args.runs):
                train.source += f"\n# edit {n}\n"
                edited = Path(tmp) / "template.ipynb"
                nbformat.write(notebook, edited)
                took, result = build(edited, flavours, args.base_image)
                assert result["built"] == [], f"a code-only edit rebuilt {result['built']}"
                edits.append(took)
        measured["code-only edit"] = summary(edits, 1)

    sizes = {ref: int(docker("image", "inspect", "--format", "{{.Size}}", ref).stdout) for ref in refs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": machine(docker=True, base_image=args.base_image),
                "smoke": args.smoke,
                "sizes_bytes": sizes,
                "builds_s": measured,
            },
            indent=2,
        )
        + "\n"
    )

    table = Table("image", "size", title="Image sizes")
    for ref, size in sizes.items():
        table.add_row(ref, f"{size / 1e9:.2f} GB")
    times = Table(
        "build", "median s", "range s", title=f"Build times ({'smoke' if args.smoke else f'{args.runs} runs'})"
    )
    for what, value in measured.items():
        times.add_row(what, f"{value['median']:.1f}", f"{value['min']:.1f}-{value['max']:.1f}")
    console.print(table, times)
    console.print(f"results in {args.out}")


if __name__ == "__main__":
    main()
