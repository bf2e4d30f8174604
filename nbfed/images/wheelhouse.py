"""The wheelhouse: every wheel an image installs, downloaded on the build host and locked.

    build/wheelhouse/<flavour>/pool/*.whl               every wheel downloaded so far
    build/wheelhouse/<flavour>/<key>/requirements.in    the input requirements
    build/wheelhouse/<flavour>/<key>/requirements.lock  pinned, with sha256, for pip
    build/wheelhouse/<flavour>/<key>/lock.json          the same, with the install layer
    build/wheelhouse/<flavour>/<key>/*.whl              hard links to the locked wheels

This is the one step of an image build that downloads: `prepare_wheelhouses` runs before
the plan (nbfed.images.plan), which only reads the locks it leaves.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from rich.console import Console

from nbfed.images.common import (
    LAYERS,
    PLATFORMS,
    PYTHON_VERSION,
    SCHEMA,
    ImagesError,
    canonical,
    check_flavour,
    human,
)
from nbfed.images.resolve import (
    guard_flavour,
    normalise_requirements,
    pip_target_args,
    resolve_requirements,
    run_pip,
    torch_index,
)


@dataclass(frozen=True)
class LockedWheel:
    name: str
    version: str
    filename: str
    sha256: str
    layer: str = LAYERS[-1][0]

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"


@dataclass(frozen=True)
class Wheelhouses:
    """The locked wheelhouses one build installs, prepared by `prepare_wheelhouses`."""

    requirements: tuple[str, ...]  # the notebook's, as given
    flavours: tuple[str, ...]  # the site images', in the order asked for
    aggregator: Path  # the requirements plus nbfed itself, cpu
    sites: Mapping[str, Path]  # flavour -> wheelhouse


def prepare_wheelhouses(
    requirements: list[str],
    flavours: Sequence[str] = ("cpu",),
    build_dir: Path = Path("build"),
    torch_index_url: str | None = None,
    *,
    console: Console | None = None,
) -> Wheelhouses:
    """Every wheelhouse the images of `flavours` need: the sites' and the aggregator's.

    `torch_index_url` applies to the cpu flavour (the cuda one reads its environment variable).
    """
    console = console or Console(stderr=True)
    for flavour in flavours:
        check_flavour(flavour)
    cpu = prepare_wheelhouse(requirements, "cpu", build_dir, torch_index_url, console=console)
    # the aggregator also runs nbfed itself (the run stage's converter, submitter and report)
    control = [*requirements, f"nbfed @ {nbfed_wheel(build_dir, console).as_uri()}"]
    aggregator = prepare_wheelhouse(control, "cpu", build_dir, torch_index_url, console=console)
    sites = {"cpu": cpu}
    for flavour in flavours:
        if flavour not in sites:
            sites[flavour] = prepare_wheelhouse(requirements, flavour, build_dir, console=console)
    return Wheelhouses(
        tuple(requirements), tuple(flavours), aggregator, {flavour: sites[flavour] for flavour in flavours}
    )


def prepare_wheelhouse(
    requirements: list[str],
    flavour: str,
    build_dir: Path,
    torch_index_url: str | None = None,
    *,
    console: Console | None = None,
) -> Path:
    """Download every wheel the image needs, lock them, and return the wheelhouse directory.

    The directory holds `requirements.lock` (pip format: `name==version --hash=sha256:...`),
    `lock.json` (the same with each wheel's install layer) and the wheels themselves (hard
    links into a per-flavour pool, so a wheel is downloaded once). `pip install --no-index
    --find-links DIR --require-hashes -r DIR/requirements.lock` installs it offline.

    Cached: when a complete lock for the same input requirements, flavour and torch index
    exists, nothing is resolved or downloaded. `torch_index_url` (default: the environment
    variable NBFED_TORCH_INDEX_URL for `cpu`, NBFED_CUDA_TORCH_INDEX_URL for `cuda`) is
    passed to pip as `--extra-index-url`; without it the `cuda` flavour gets PyPI's torch,
    which is a CUDA build.
    """
    check_flavour(flavour)
    console = console or Console(stderr=True)
    reqs = normalise_requirements(requirements)
    index_url = torch_index(flavour, torch_index_url)
    key = _wheelhouse_key(reqs, flavour, index_url)
    root = Path(build_dir) / "wheelhouse" / flavour
    pool = root / "pool"
    wheelhouse = root / key
    if _lock_complete(wheelhouse):
        console.print(f"wheelhouse [bold]{flavour}[/bold]: cached ({wheelhouse})", highlight=False)
        return wheelhouse

    pool.mkdir(parents=True, exist_ok=True)
    wheelhouse.mkdir(parents=True, exist_ok=True)
    (wheelhouse / "requirements.in").write_text("\n".join(reqs) + "\n")
    index_args = ["--extra-index-url", index_url] if index_url else []
    started = time.monotonic()

    # 1. resolve (metadata only where the index serves it: big wheels are not fetched yet)
    resolved = resolve_requirements(requirements, flavour, torch_index_url, console=console)
    guard_flavour(flavour, resolved)

    # 2. download what the pool lacks, by exact URL; local wheels (nbfed's own) are copied
    # afresh, since one file name stands for every build of the sources
    for r in resolved:
        if r.url.startswith("file:"):
            (pool / r.filename).unlink(missing_ok=True)  # never write through older hard links
            shutil.copy2(unquote(urlparse(r.url).path), pool / r.filename)
    missing = [r for r in resolved if not (pool / r.filename).is_file()]
    if missing:
        console.print(
            f"wheelhouse [bold]{flavour}[/bold]: downloading {len(missing)} of {len(resolved)} wheels", highlight=False
        )
        run_pip(
            ["download", "--no-deps", "--dest", str(pool), *pip_target_args(), *index_args, *[r.url for r in missing]],
            console,
            f"downloading the {flavour} wheels",
            show=("Saved", "Downloading"),
        )
    wheels: list[LockedWheel] = []
    for r in resolved:
        path = pool / r.filename
        if not path.is_file():
            raise ImagesError(f"pip did not save {r.filename} into {pool}")
        actual = _sha256_file(path)
        if r.sha256 and actual != r.sha256:
            path.unlink()
            raise ImagesError(
                f"{r.filename}: sha256 {actual} does not match the index's "
                f"{r.sha256}; the damaged file was removed, run again"
            )
        wheels.append(LockedWheel(r.name, r.version, r.filename, actual))
    wheels = sorted(_assign_layers(wheels, pool), key=lambda w: canonical(w.name))

    # 3. the lock, and the wheelhouse as hard links into the pool
    for w in wheels:
        link_or_copy(pool / w.filename, wheelhouse / w.filename)
    header = [
        f"# nbfed wheelhouse: flavour={flavour} python={PYTHON_VERSION} key={key}",
        *[f"# input: {r}" for r in reqs],
    ]
    lock_text = "\n".join(header + [f"{w.pin}  # {w.layer} {w.filename}" for w in wheels]) + "\n"
    (wheelhouse / "lock.json").write_text(
        json.dumps(
            {
                "schema": SCHEMA,
                "flavour": flavour,
                "key": key,
                "requirements": reqs,
                "wheels": [w.__dict__ for w in wheels],
            },
            indent=1,
        )
        + "\n"
    )
    (wheelhouse / "requirements.lock").write_text(lock_text)  # written last: marks completion
    size = sum((wheelhouse / w.filename).stat().st_size for w in wheels)
    console.print(
        f"wheelhouse [bold]{flavour}[/bold]: {len(wheels)} wheels, {human(size)}, "
        f"locked in {time.monotonic() - started:.0f} s ({wheelhouse / 'requirements.lock'})",
        highlight=False,
    )
    return wheelhouse


def nbfed_wheel(build_dir: Path, console: Console) -> Path:
    """nbfed itself as a wheel, for the aggregator image.

    The aggregator's one-shot runner (`nbfed register`, `nbfed submit`) converts the
    notebook, submits it from inside the stack's internal network and writes the report. The wheel is built
    from a copy of the sources into a directory named by their hash, so the same sources
    give the same wheel, lock and image tag, and a source change gives a new one.
    """
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise ImagesError(f"nbfed's sources are not in {root}: build images from a source checkout")
    # The README is the package's long description only: a stand-in keeps documentation
    # edits from changing the wheel and so the aggregator image.
    sources = [
        root / "pyproject.toml",
        *(p for p in sorted((root / "nbfed").rglob("*")) if p.is_file() and "__pycache__" not in p.parts),
    ]
    digest = hashlib.sha256()
    for path in sources:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    out = Path(build_dir).resolve() / "wheelhouse" / "nbfed" / digest.hexdigest()[:16]
    if wheels := sorted(out.glob("nbfed-*.whl")):
        return wheels[0]
    with tempfile.TemporaryDirectory(prefix="nbfed-src-") as tmp:
        for path in sources:
            target = Path(tmp) / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        (Path(tmp) / "README.md").write_text("Notebook Federator: see the repository's README.md.\n")
        run_pip(
            ["wheel", "--no-deps", "--wheel-dir", str(out), tmp], console, "building the nbfed wheel", cwd=Path(tmp)
        )
    return sorted(out.glob("nbfed-*.whl"))[0]


def read_lock(wheelhouse: Path) -> list[LockedWheel]:
    data = json.loads((wheelhouse / "lock.json").read_text())
    return [LockedWheel(**w) for w in data["wheels"]]


def lock_digest(wheelhouse: Path) -> str:
    """sha256 of the resolved wheel set (names, versions, hashes): what the image installs."""
    pins = sorted(f"{w.filename} {w.sha256}" for w in read_lock(wheelhouse))
    return hashlib.sha256("\n".join(pins).encode()).hexdigest()


def link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _wheelhouse_key(requirements: Sequence[str], flavour: str, index_url: str | None) -> str:
    payload = {
        "schema": SCHEMA,
        "requirements": list(requirements),
        "flavour": flavour,
        "index": index_url or "",
        "python": PYTHON_VERSION,
        "platforms": PLATFORMS,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _lock_complete(wheelhouse: Path) -> bool:
    try:
        wheels = read_lock(wheelhouse)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (wheelhouse / "requirements.lock").is_file() and all((wheelhouse / w.filename).is_file() for w in wheels)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _wheel_requires(path: Path) -> list[str]:
    """Names a wheel requires unconditionally or by environment marker (extras are skipped)."""
    with zipfile.ZipFile(path) as zf:
        meta = next((n for n in zf.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1), None)
        if meta is None:
            return []
        text = zf.read(meta).decode("utf-8", "replace")
    names = []
    for line in text.split("\n\n", 1)[0].splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        spec = line.split(":", 1)[1].strip()
        requirement, _, marker = spec.partition(";")
        if "extra" in marker:
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        if match:
            names.append(canonical(match.group(1)))
    return names


def _assign_layers(wheels: list[LockedWheel], pool: Path) -> list[LockedWheel]:
    by_name = {canonical(w.name): w for w in wheels}
    requires = {n: [d for d in _wheel_requires(pool / w.filename) if d in by_name] for n, w in by_name.items()}
    layer_of: dict[str, str] = {}
    for layer, roots in LAYERS:
        todo = [canonical(r) for r in roots] if roots else list(by_name)
        while todo:
            name = todo.pop()
            if name not in by_name or name in layer_of:
                continue
            layer_of[name] = layer
            if roots:
                todo.extend(requires[name])
    return [LockedWheel(w.name, w.version, w.filename, w.sha256, layer_of[canonical(w.name)]) for w in wheels]
