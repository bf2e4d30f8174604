"""Requirements as pip resolves them for the images' target (CPython 3.11, manylinux x86_64)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from rich.console import Console

from nbfed.images.common import (
    FLWR_REQUIREMENT,
    PLATFORMS,
    PYTHON_ABI,
    PYTHON_VERSION,
    TORCH_INDEX_ENV,
    TORCH_RANGE,
    ImagesError,
    canonical,
    check_flavour,
    cut,
)


@dataclass(frozen=True)
class ResolvedWheel:
    name: str
    version: str
    url: str
    filename: str
    sha256: str | None  # as the index states it; None where it states none (local files)


def normalise_requirements(requirements: Iterable[str]) -> list[str]:
    """The requirement lines that go into an image: cleaned, de-duplicated, flwr pinned.

    A notebook's own flwr line is replaced by the pin: every component must run the same
    Flower version; torch is kept in the range the toolkit is tested with.
    """
    out: list[str] = []
    for raw in requirements:
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise ImagesError(
                f"requirement line {raw!r}: pip options cannot go into an image build. Write plain "
                f"requirements; set a torch wheel index with {TORCH_INDEX_ENV['cpu']}, anything "
                "else in your pip configuration on the build host."
            )
        if re.match(r"^flwr\b(?![-_.\w])", line, re.IGNORECASE):
            continue
        if line not in out:
            out.append(line)
    return sorted(out, key=str.lower) + [FLWR_REQUIREMENT, TORCH_RANGE]


def named(requirements: Iterable[str]) -> set[str]:
    """The canonical project names that requirement lines name."""
    from packaging.requirements import InvalidRequirement, Requirement  # noqa: PLC0415

    names = set()
    for line in normalise_requirements(requirements):
        try:
            names.add(canonical(Requirement(line).name))
        except InvalidRequirement:
            pass  # pip reports it, with its line, when it resolves
    return names


def torch_index(flavour: str, torch_index_url: str | None) -> str | None:
    return torch_index_url or os.environ.get(TORCH_INDEX_ENV[flavour]) or None


def pip_target_args() -> list[str]:
    args = [
        "--only-binary=:all:",
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        "--abi",
        PYTHON_ABI,
        "--abi",
        "abi3",
        "--abi",
        "none",
    ]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return args


def run_pip(
    args: list[str], console: Console, what: str, show: tuple[str, ...] = (), cwd: Path | None = None
) -> list[str]:
    """Run pip, streaming the lines that start with one of `show`; raise with its tail on failure."""
    cmd = [sys.executable, "-m", "pip", *args]
    env = dict(
        os.environ,
        PIP_PROGRESS_BAR="off",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        PYTHONUNBUFFERED="1",
        SOURCE_DATE_EPOCH="315532800",
    )
    lines: list[str] = []
    with console.status(f"{what}…") as status:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if not line or "is ignored: it is neither a file nor a directory" in line:
                continue
            lines.append(line)
            status.update(f"{what}: {cut(line.strip(), 90)}")
            if show and line.lstrip().startswith(show):
                console.print(f"  [dim]{line.strip()}[/dim]", highlight=False, soft_wrap=True)
        code = proc.wait()
    if code != 0:
        tail = "\n".join(lines[-30:])
        hint = ""
        if "No matching distribution" in tail or "ResolutionImpossible" in tail:
            hint = (
                "\nEvery dependency needs a wheel for CPython 3.11 on manylinux x86_64; pin a "
                "version that has one, or check the package name."
            )
        raise ImagesError(f"{what} failed (pip exit code {code}):\n{tail}{hint}")
    return lines


def resolve_requirements(
    requirements: list[str],
    flavour: str,
    torch_index_url: str | None = None,
    *,
    console: Console | None = None,
) -> list[ResolvedWheel]:
    """The wheels an image needs (name, version, URL, sha256), resolved without downloading them.

    pip resolves for CPython 3.11 on manylinux x86_64 (`pip install --dry-run --report`); where
    the index serves metadata files the big wheels are not fetched.
    """
    check_flavour(flavour)
    console = console or Console(stderr=True)
    reqs = normalise_requirements(requirements)
    index_url = torch_index(flavour, torch_index_url)
    index_args = ["--extra-index-url", index_url] if index_url else []
    with tempfile.TemporaryDirectory(prefix="nbfed-resolve-") as tmp:
        req_file = Path(tmp) / "requirements.in"
        req_file.write_text("\n".join(reqs) + "\n")
        report_path = Path(tmp) / "report.json"
        run_pip(
            [
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--report",
                str(report_path),
                *pip_target_args(),
                *index_args,
                "-r",
                str(req_file),
            ],
            console,
            f"resolving the {flavour} dependencies",
        )
        report = json.loads(report_path.read_text())
    resolved: list[ResolvedWheel] = []
    for item in report.get("install", []):
        info = item.get("download_info") or {}
        url = info.get("url", "")
        archive = info.get("archive_info") or {}
        sha = (archive.get("hashes") or {}).get("sha256")
        if not sha and str(archive.get("hash", "")).startswith("sha256="):
            sha = archive["hash"].split("=", 1)[1]
        filename = unquote(Path(urlparse(url).path).name)
        if not filename.endswith(".whl"):
            raise ImagesError(f"{item['metadata']['name']} resolved to {filename!r}, which is not a wheel")
        resolved.append(ResolvedWheel(item["metadata"]["name"], item["metadata"]["version"], url, filename, sha))
    return resolved


def guard_flavour(flavour: str, resolved: list[ResolvedWheel]) -> None:
    """Refuse a torch build of the other flavour before anything is downloaded."""
    if flavour == "cuda":
        cpu = [f"{r.name}=={r.version}" for r in resolved if canonical(r.name) == "torch" and "+cpu" in r.version]
        if cpu:
            raise ImagesError(
                f"the cuda flavour resolved to a CPU build of torch ({cpu[0]}; your pip configuration serves it). "
                f"Point {TORCH_INDEX_ENV['cuda']} at a CUDA wheel index, or pin a torch version that resolves to a "
                "CUDA build."
            )
        return
    cuda = [f"{r.name}=={r.version}" for r in resolved if canonical(r.name).startswith(("nvidia-", "triton", "cuda-"))]
    if cuda:
        raise ImagesError(
            "the cpu flavour resolved to a CUDA build of torch (it pulls "
            f"{', '.join(cuda[:4])}{', …' if len(cuda) > 4 else ''}: gigabytes). Point pip at a "
            f"CPU wheel index: set {TORCH_INDEX_ENV['cpu']} (or torch_index_url) to it, or pin a "
            "torch version your pip configuration serves as a CPU build."
        )
