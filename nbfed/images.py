"""Container images: a wheelhouse prepared on the build host, content-tagged image builds.

Images carry dependencies only (the notebook's code travels as the Flower app at run time),
so their tags are derived from what goes into them: the base image's layers, the Dockerfile (and
its other context files), the resolved wheel set, the flavour and the flwr version. When only
the notebook's code changes nothing is rebuilt.

    nbfed/aggregator:<tag>          SuperLink (+ the ServerApp's dependencies, CPU torch)
    nbfed/site:<tag>-cpu|-cuda      SuperNode (+ the ClientApp's dependencies)
    nbfed/proxy:<tag>               nginx in front of SuperLink (fleet API and /health only)

Dependencies are downloaded here (`pip download`, Python 3.11, manylinux x86_64 wheels) and
installed in the image with `pip install --no-index --require-hashes`: no index is contacted
during the image build, which is how an air-gapped hospital builds too.

Layout of the build tree (default `build/`):

    build/wheelhouse/<flavour>/pool/*.whl               every wheel downloaded so far
    build/wheelhouse/<flavour>/<key>/requirements.in    the input requirements
    build/wheelhouse/<flavour>/<key>/requirements.lock  pinned, with sha256, for pip
    build/wheelhouse/<flavour>/<key>/lock.json          the same, with the install layer
    build/wheelhouse/<flavour>/<key>/*.whl              hard links to the locked wheels
    build/context/<image>/                              the docker build context
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from rich.console import Console
from rich.table import Table

from nbfed import __version__ as NBFED_VERSION
from nbfed import contract

FLWR_REQUIREMENT = contract.FLWR_REQUIREMENT
FLWR_VERSION = FLWR_REQUIREMENT.split("==")[1]
# The torch range nbfed is tested with (pyproject.toml); pip intersects it with the notebook's.
TORCH_RANGE = "torch>=2.4,<2.14"
DEFAULT_BASE_IMAGE = "python:3.11-slim-bookworm"
BOOTSTRAP_BASE_IMAGE = "nbfed/base:bookworm"
# The images' strip stage runs in a "tools image": the base's Debian release with binutils.
# images/base/build.sh makes <base>-tools beside the base; python:X-slim-Y has python:X-Y.
TOOLS_SUFFIX = "-tools"
# torch dependencies the aggregator drops unless the notebook names them (images/aggregator/unneeded.py)
AGGREGATOR_OPTIONAL = ("sympy", "mpmath", "networkx")
FLAVOURS: tuple[str, ...] = ("cpu", "cuda")
IMAGE_PREFIX = "nbfed"
NONROOT_UID = 10001

# Where pip looks for torch, per flavour. No registry is named here: users point these at
# the CPU (or a specific CUDA) wheel index they use.
TORCH_INDEX_ENV = {"cpu": "NBFED_TORCH_INDEX_URL", "cuda": "NBFED_CUDA_TORCH_INDEX_URL"}

# The target interpreter and platform of every image (Debian bookworm: glibc 2.36).
PYTHON_VERSION = "3.11"
PYTHON_ABI = "cp311"
PLATFORMS: tuple[str, ...] = tuple(f"manylinux_2_{m}_x86_64" for m in range(36, 16, -1)) + (
    "manylinux2014_x86_64",  # pip expands this one to manylinux2010 and manylinux1
)

# Install layers in the image, in order: each holds its roots' dependency closure minus what an
# earlier layer holds, so adding a notebook requirement rebuilds only the last, small layer.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("1-torch", ("torch",)),
    ("2-flwr", ("flwr",)),
    ("3-app", ()),
)

LABEL_NOTEBOOK = "nbfed.notebook"
LABEL_NOTEBOOK_SHA256 = "nbfed.notebook.sha256"
LABEL_FLWR_VERSION = "nbfed.flwr.version"
LABEL_FLAVOUR = "nbfed.flavour"
LABEL_LOCK_SHA256 = "nbfed.lock.sha256"
LABEL_CONTENT_TAG = "nbfed.content-tag"

# Keys of `build_images(labels=...)` that become build arguments (the Dockerfiles turn them
# into labels); any other key is added to every image as a label as it is.
_LABEL_BUILD_ARGS = {
    "notebook": "NOTEBOOK_NAME",
    "notebook_sha256": "NOTEBOOK_SHA256",
    "source": "SOURCE_URL",
    "version": "NBFED_VERSION",
}

_SCHEMA = 1  # bump when the wheelhouse or tag recipe changes


class ImagesError(RuntimeError):
    """A build that cannot go on; the message says what to do."""


@dataclass(frozen=True)
class ResolvedWheel:
    name: str
    version: str
    url: str
    filename: str
    sha256: str | None  # as the index states it; None where it states none (local files)


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
class ImageSpec:
    """One image to build: its name and content tag, and what goes into its build context."""

    kind: str  # aggregator | site | proxy
    name: str  # repository, e.g. nbfed/site
    tag: str
    dockerfile_dir: Path
    flavour: str | None = None
    wheelhouse: Path | None = None
    buildargs: Mapping[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"


@dataclass(frozen=True)
class BuiltImage:
    name: str
    tag: str
    id: str
    size_bytes: int
    built: bool  # False: an image with this content tag existed already
    seconds: float = 0.0
    kind: str = ""
    flavour: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"


# --- requirements --------------------------------------------------------------------------


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


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _named(requirements: Iterable[str]) -> set[str]:
    """The canonical project names that requirement lines name."""
    from packaging.requirements import InvalidRequirement, Requirement  # noqa: PLC0415

    names = set()
    for line in normalise_requirements(requirements):
        try:
            names.add(_canonical(Requirement(line).name))
        except InvalidRequirement:
            pass  # pip reports it, with its line, when it resolves
    return names


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _torch_index(flavour: str, torch_index_url: str | None) -> str | None:
    return torch_index_url or os.environ.get(TORCH_INDEX_ENV[flavour]) or None


def _wheelhouse_key(requirements: Sequence[str], flavour: str, index_url: str | None) -> str:
    payload = {
        "schema": _SCHEMA,
        "requirements": list(requirements),
        "flavour": flavour,
        "index": index_url or "",
        "python": PYTHON_VERSION,
        "platforms": PLATFORMS,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _pip_target_args() -> list[str]:
    args = ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp",
            "--abi", PYTHON_ABI, "--abi", "abi3", "--abi", "none"]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return args


def _run_pip(args: list[str], console: Console, what: str, show: tuple[str, ...] = (),
             cwd: Path | None = None) -> list[str]:
    """Run pip, streaming the lines that start with one of `show`; raise with its tail on failure."""
    cmd = [sys.executable, "-m", "pip", *args]
    env = dict(os.environ, PIP_PROGRESS_BAR="off", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INPUT="1", PYTHONUNBUFFERED="1", SOURCE_DATE_EPOCH="315532800")
    lines: list[str] = []
    with console.status(f"{what}…") as status:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                cwd=cwd)
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if not line or "is ignored: it is neither a file nor a directory" in line:
                continue
            lines.append(line)
            status.update(f"{what}: {_cut(line.strip(), 90)}")
            if show and line.lstrip().startswith(show):
                console.print(f"  [dim]{line.strip()}[/dim]", highlight=False, soft_wrap=True)
        code = proc.wait()
    if code != 0:
        tail = "\n".join(lines[-30:])
        hint = ""
        if "No matching distribution" in tail or "ResolutionImpossible" in tail:
            hint = ("\nEvery dependency needs a wheel for CPython 3.11 on manylinux x86_64; pin a "
                    "version that has one, or check the package name.")
        raise ImagesError(f"{what} failed (pip exit code {code}):\n{tail}{hint}")
    return lines


def nbfed_wheel(build_dir: Path, console: Console) -> Path:
    """nbfed itself as a wheel, for the aggregator image.

    The aggregator's one-shot runner (`nbfed register`, `nbfed submit`) converts the
    notebook, submits it on the host's loopback and writes the report. The wheel is built
    from a copy of the sources into a directory named by their hash, so the same sources
    give the same wheel, lock and image tag, and a source change gives a new one.
    """
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise ImagesError(f"nbfed's sources are not in {root}: build images from a source checkout")
    # The README is the package's long description only: a stand-in keeps documentation
    # edits from changing the wheel and so the aggregator image.
    sources = [root / "pyproject.toml",
               *(p for p in sorted((root / "nbfed").rglob("*")) if p.is_file() and "__pycache__" not in p.parts)]
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
        _run_pip(["wheel", "--no-deps", "--wheel-dir", str(out), tmp], console, "building the nbfed wheel", cwd=Path(tmp))
    return sorted(out.glob("nbfed-*.whl"))[0]


def _wheel_requires(path: Path) -> list[str]:
    """Names a wheel requires unconditionally or by environment marker (extras are skipped)."""
    with zipfile.ZipFile(path) as zf:
        meta = next((n for n in zf.namelist()
                     if n.endswith(".dist-info/METADATA") and n.count("/") == 1), None)
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
            names.append(_canonical(match.group(1)))
    return names


def _assign_layers(wheels: list[LockedWheel], pool: Path) -> list[LockedWheel]:
    by_name = {_canonical(w.name): w for w in wheels}
    requires = {n: [d for d in _wheel_requires(pool / w.filename) if d in by_name]
                for n, w in by_name.items()}
    layer_of: dict[str, str] = {}
    for layer, roots in LAYERS:
        todo = [_canonical(r) for r in roots] if roots else list(by_name)
        while todo:
            name = todo.pop()
            if name not in by_name or name in layer_of:
                continue
            layer_of[name] = layer
            if roots:
                todo.extend(requires[name])
    return [LockedWheel(w.name, w.version, w.filename, w.sha256, layer_of[_canonical(w.name)])
            for w in wheels]


def _read_lock(wheelhouse: Path) -> list[LockedWheel]:
    data = json.loads((wheelhouse / "lock.json").read_text())
    return [LockedWheel(**w) for w in data["wheels"]]


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _lock_complete(wheelhouse: Path) -> bool:
    try:
        wheels = _read_lock(wheelhouse)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (wheelhouse / "requirements.lock").is_file() and all(
        (wheelhouse / w.filename).is_file() for w in wheels)


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
    if flavour not in FLAVOURS:
        raise ImagesError(f"unknown flavour {flavour!r}: choose one of {', '.join(FLAVOURS)}")
    console = console or Console(stderr=True)
    reqs = normalise_requirements(requirements)
    index_url = _torch_index(flavour, torch_index_url)
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
    _guard_flavour(flavour, resolved)

    # 2. download what the pool lacks, by exact URL; local wheels (nbfed's own) are copied
    # afresh, since one file name stands for every build of the sources
    for r in resolved:
        if r.url.startswith("file:"):
            (pool / r.filename).unlink(missing_ok=True)  # never write through older hard links
            shutil.copy2(unquote(urlparse(r.url).path), pool / r.filename)
    missing = [r for r in resolved if not (pool / r.filename).is_file()]
    if missing:
        console.print(f"wheelhouse [bold]{flavour}[/bold]: downloading {len(missing)} of "
                      f"{len(resolved)} wheels", highlight=False)
        _run_pip(["download", "--no-deps", "--dest", str(pool), *_pip_target_args(), *index_args,
                  *[r.url for r in missing]],
                 console, f"downloading the {flavour} wheels", show=("Saved", "Downloading"))
    wheels: list[LockedWheel] = []
    for r in resolved:
        path = pool / r.filename
        if not path.is_file():
            raise ImagesError(f"pip did not save {r.filename} into {pool}")
        actual = _sha256_file(path)
        if r.sha256 and actual != r.sha256:
            path.unlink()
            raise ImagesError(f"{r.filename}: sha256 {actual} does not match the index's "
                              f"{r.sha256}; the damaged file was removed, run again")
        wheels.append(LockedWheel(r.name, r.version, r.filename, actual))
    wheels = sorted(_assign_layers(wheels, pool), key=lambda w: _canonical(w.name))

    # 3. the lock, and the wheelhouse as hard links into the pool
    for w in wheels:
        _link_or_copy(pool / w.filename, wheelhouse / w.filename)
    header = [f"# nbfed wheelhouse: flavour={flavour} python={PYTHON_VERSION} key={key}",
              *[f"# input: {r}" for r in reqs]]
    lock_text = "\n".join(header + [f"{w.pin}  # {w.layer} {w.filename}" for w in wheels]) + "\n"
    (wheelhouse / "lock.json").write_text(json.dumps(
        {"schema": _SCHEMA, "flavour": flavour, "key": key, "requirements": reqs,
         "wheels": [w.__dict__ for w in wheels]}, indent=1) + "\n")
    (wheelhouse / "requirements.lock").write_text(lock_text)  # written last: marks completion
    size = sum((wheelhouse / w.filename).stat().st_size for w in wheels)
    console.print(f"wheelhouse [bold]{flavour}[/bold]: {len(wheels)} wheels, {_human(size)}, "
                  f"locked in {time.monotonic() - started:.0f} s ({wheelhouse / 'requirements.lock'})",
                  highlight=False)
    return wheelhouse


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
    if flavour not in FLAVOURS:
        raise ImagesError(f"unknown flavour {flavour!r}: choose one of {', '.join(FLAVOURS)}")
    console = console or Console(stderr=True)
    reqs = normalise_requirements(requirements)
    index_url = _torch_index(flavour, torch_index_url)
    index_args = ["--extra-index-url", index_url] if index_url else []
    with tempfile.TemporaryDirectory(prefix="nbfed-resolve-") as tmp:
        req_file = Path(tmp) / "requirements.in"
        req_file.write_text("\n".join(reqs) + "\n")
        report_path = Path(tmp) / "report.json"
        _run_pip(["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report_path),
                  *_pip_target_args(), *index_args, "-r", str(req_file)],
                 console, f"resolving the {flavour} dependencies")
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
        resolved.append(ResolvedWheel(item["metadata"]["name"], item["metadata"]["version"], url,
                                      filename, sha))
    return resolved


def _guard_flavour(flavour: str, resolved: list[ResolvedWheel]) -> None:
    if flavour == "cuda":
        cpu = [f"{r.name}=={r.version}" for r in resolved if _canonical(r.name) == "torch" and "+cpu" in r.version]
        if cpu:
            raise ImagesError(
                f"the cuda flavour resolved to a CPU build of torch ({cpu[0]}; your pip configuration serves it). "
                f"Point {TORCH_INDEX_ENV['cuda']} at a CUDA wheel index, or pin a torch version that resolves to a "
                "CUDA build."
            )
        return
    cuda = [f"{r.name}=={r.version}" for r in resolved if _canonical(r.name).startswith(("nvidia-", "triton", "cuda-"))]
    if cuda:
        raise ImagesError(
            "the cpu flavour resolved to a CUDA build of torch (it pulls "
            f"{', '.join(cuda[:4])}{', …' if len(cuda) > 4 else ''}: gigabytes). Point pip at a "
            f"CPU wheel index: set {TORCH_INDEX_ENV['cpu']} (or torch_index_url) to it, or pin a "
            "torch version your pip configuration serves as a CPU build."
        )


def lock_digest(wheelhouse: Path) -> str:
    """sha256 of the resolved wheel set (names, versions, hashes): what the image installs."""
    pins = sorted(f"{w.filename} {w.sha256}" for w in _read_lock(wheelhouse))
    return hashlib.sha256("\n".join(pins).encode()).hexdigest()


# --- tags ----------------------------------------------------------------------------------


def content_tag(
    *,
    base_image_digest: str,
    context_files: Mapping[str, bytes],
    tools_image_digest: str = "",
    lock: str = "",
    flavour: str = "",
    flwr_version: str = FLWR_VERSION,
) -> str:
    """A 12-hex-digit tag derived from everything that goes into an image.

    `base_image_digest` is `base_image_digest()` of the base image (and `tools_image_digest`
    of the tools image, for the images that use it); `context_files` maps build-context paths
    to their bytes (the Dockerfile, nginx.conf); `lock` is the wheel set's digest
    (`lock_digest`). The notebook's code is not an input.
    """
    digest = hashlib.sha256()
    tools = [f"tools={tools_image_digest}"] if tools_image_digest else []
    for part in (f"schema={_SCHEMA}", f"base={base_image_digest}", *tools, f"lock={lock}",
                 f"flavour={flavour}", f"flwr={flwr_version}"):
        digest.update(part.encode() + b"\0")
    for path in sorted(context_files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(context_files[path]).digest())
    return digest.hexdigest()[:12]


def images_dir() -> Path:
    """The Dockerfiles: $NBFED_IMAGES_DIR, else images/ beside the package (a source checkout)."""
    if env := os.environ.get("NBFED_IMAGES_DIR"):
        return Path(env)
    return Path(__file__).resolve().parent.parent / "images"


def _context_files(dockerfile_dir: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted(dockerfile_dir.iterdir())
             if p.is_file() and p.name != "README.md"}
    if "Dockerfile" not in files:
        raise ImagesError(f"no Dockerfile in {dockerfile_dir}")
    return files


# --- docker --------------------------------------------------------------------------------


def docker_client() -> Any:
    """A low-level docker API client that answered a ping, or a clear error."""
    try:
        import docker  # noqa: PLC0415 (the SDK is needed only here)
        from docker.errors import DockerException  # noqa: PLC0415
    except ImportError as err:  # pragma: no cover
        raise ImagesError("the docker SDK is missing: pip install docker==7.1.0") from err
    try:
        client = docker.APIClient(timeout=600, **docker.utils.kwargs_from_env())  # DOCKER_HOST etc.
        client.ping()
        return client
    except (DockerException, OSError) as err:
        raise ImagesError(
            f"the Docker Engine does not answer ({err}). Start it: `sudo systemctl start docker`, "
            "or on a host without systemd, as root, `.ci/docker-engine` (installs and starts "
            "dockerd); set DOCKER_HOST if the engine listens elsewhere."
        ) from err


def _image_or_none(client: Any, ref: str) -> dict[str, Any] | None:
    from docker.errors import ImageNotFound, NotFound  # noqa: PLC0415

    try:
        return client.inspect_image(ref)
    except (ImageNotFound, NotFound):
        return None


def default_tools_image(base_image: str) -> str:
    """The tools image (binutils, for the strip stage) that goes with a base image."""
    if m := re.fullmatch(r"python:(.+)-slim-([a-z]+)", base_image):
        return f"python:{m[1]}-{m[2]}"
    return base_image + TOOLS_SUFFIX


def base_image_digest(client: Any, base_image: str, *, role: str = "base image") -> str:
    """A digest of the base image's content (its layers and run config), for content tags.

    Not the image id: `docker import` of the same rootfs gives a new id every time (the
    creation time is part of it), while the layers, and so this digest, stay the same.
    `role` names the image in the error when it is missing.
    """
    info = _image_or_none(client, base_image)
    if info is None:
        raise ImagesError(
            f"the {role} {base_image} is not on this Docker Engine. Pull it (`docker pull {base_image}`), "
            f"or where no registry can be reached build the base and its tools image from Debian "
            f"packages: `images/base/build.sh` (as root; makes {BOOTSTRAP_BASE_IMAGE} and "
            f"{BOOTSTRAP_BASE_IMAGE + TOOLS_SUFFIX}) and pass base_image={BOOTSTRAP_BASE_IMAGE!r}."
        )
    config = info.get("Config") or {}
    content = {"layers": (info.get("RootFS") or {}).get("Layers", []),
               **{k: config.get(k) for k in ("Env", "Cmd", "Entrypoint", "WorkingDir", "User")}}
    return "sha256:" + hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def plan_images(
    requirements: list[str],
    *,
    flavours: Sequence[str] = ("cpu",),
    base_image: str = DEFAULT_BASE_IMAGE,
    base_digest: str,
    tools_image: str | None = None,
    tools_digest: str,
    build_dir: Path = Path("build"),
    labels: Mapping[str, str] | None = None,
    torch_index_url: str | None = None,
    console: Console | None = None,
) -> list[ImageSpec]:
    """The images to build and their content tags (prepares the wheelhouses; builds nothing)."""
    console = console or Console(stderr=True)
    for flavour in flavours:
        if flavour not in FLAVOURS:
            raise ImagesError(f"unknown flavour {flavour!r}: choose one of {', '.join(FLAVOURS)}")
    src = images_dir()
    if not (src / "aggregator" / "Dockerfile").is_file():
        raise ImagesError(f"the Dockerfiles are not in {src}: run nbfed from a source checkout, "
                          "or set NBFED_IMAGES_DIR to its images/ directory")
    common = {"BASE_IMAGE": base_image, "TOOLS_IMAGE": tools_image or default_tools_image(base_image),
              "FLWR_VERSION": FLWR_VERSION, "NBFED_VERSION": NBFED_VERSION}
    for key, value in (labels or {}).items():
        if key in _LABEL_BUILD_ARGS:
            common[_LABEL_BUILD_ARGS[key]] = value

    wheelhouses = {"cpu": prepare_wheelhouse(requirements, "cpu", build_dir, torch_index_url,
                                             console=console)}
    # the aggregator also runs nbfed itself (the run stage's converter, submitter and report)
    control = [*requirements, f"nbfed @ {nbfed_wheel(build_dir, console).as_uri()}"]
    wheelhouses["aggregator"] = prepare_wheelhouse(control, "cpu", build_dir, torch_index_url, console=console)
    for flavour in flavours:
        if flavour not in wheelhouses:
            wheelhouses[flavour] = prepare_wheelhouse(
                requirements, flavour, build_dir, torch_index_url if flavour == "cpu" else None,
                console=console)

    specs: list[ImageSpec] = []
    proxy_dir = src / "proxy"
    proxy_tag = content_tag(base_image_digest=base_digest, context_files=_context_files(proxy_dir))
    proxy_args = {k: v for k, v in common.items() if k in ("BASE_IMAGE", "NBFED_VERSION", "SOURCE_URL")}
    specs.append(ImageSpec("proxy", f"{IMAGE_PREFIX}/proxy", proxy_tag, proxy_dir,
                           buildargs={**proxy_args, "CONTENT_TAG": proxy_tag}))
    keep = " ".join(sorted(_named(requirements) & set(AGGREGATOR_OPTIONAL)))
    for kind, flavour in [("aggregator", "cpu"), *(("site", f) for f in flavours)]:
        dockerfile_dir = src / kind
        wheelhouse = wheelhouses["aggregator" if kind == "aggregator" else flavour]
        digest = lock_digest(wheelhouse)
        kept = keep if kind == "aggregator" else ""  # what it keeps is part of what it installs
        args = {**common, "FLAVOUR": flavour, "LOCK_SHA256": digest, **({"NBFED_KEEP": kept} if kept else {})}
        tag = content_tag(base_image_digest=base_digest, tools_image_digest=tools_digest,
                          context_files=_context_files(dockerfile_dir), flavour=flavour,
                          lock=f"{digest} keep={kept}" if kept else digest)
        if kind == "site":
            tag = f"{tag}-{flavour}"
        specs.append(ImageSpec(kind, f"{IMAGE_PREFIX}/{kind}", tag, dockerfile_dir, flavour, wheelhouse,
                               {**args, "CONTENT_TAG": tag}))
    return specs


def _assemble_context(spec: ImageSpec, build_dir: Path) -> Path:
    """build/context/<image>/: the Dockerfile's directory plus lock/ and wheels/ per layer."""
    ctx = Path(build_dir) / "context" / (f"{spec.kind}-{spec.flavour}" if spec.flavour else spec.kind)
    if ctx.exists():
        shutil.rmtree(ctx)
    ctx.mkdir(parents=True)
    for name, data in _context_files(spec.dockerfile_dir).items():
        (ctx / name).write_bytes(data)
    if spec.wheelhouse is not None:
        wheels = _read_lock(spec.wheelhouse)
        (ctx / "lock").mkdir()
        for layer, _roots in LAYERS:
            layer_dir = ctx / "wheels" / layer
            layer_dir.mkdir(parents=True)
            (layer_dir / ".keep").write_text("")
            pins = [w for w in wheels if w.layer == layer]
            for w in pins:
                _link_or_copy(spec.wheelhouse / w.filename, layer_dir / w.filename)
            (ctx / "lock" / f"{layer}.txt").write_text(
                f"# {layer}: {len(pins)} wheels\n" + "".join(f"{w.pin}\n" for w in pins))
    return ctx


_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


def _docker_build(client: Any, spec: ImageSpec, ctx: Path, extra_labels: Mapping[str, str],
                  console: Console) -> str:
    """Run one API build, streaming its steps; returns the image id."""
    tail: list[str] = []
    image_id = ""
    with console.status(f"building {spec.ref}") as status:
        stream = client.build(path=str(ctx), tag=spec.ref, buildargs=dict(spec.buildargs),
                              labels=dict(extra_labels) or None, rm=True, forcerm=True,
                              pull=False, decode=True)
        for chunk in stream:
            if "error" in chunk:
                detail = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
                raise ImagesError(f"building {spec.ref} failed: {detail.strip()}\n"
                                  + "\n".join(tail[-25:]) + f"\n(build context: {ctx})")
            if aux := chunk.get("aux"):
                image_id = aux.get("ID", image_id)
            text = chunk.get("stream", "")
            for line in text.splitlines():
                line = line.rstrip()
                if not line:
                    continue
                tail.append(line)
                del tail[:-50]
                if m := _STEP.match(line):
                    instruction = " ".join(m[3].split())
                    console.print(f"  [cyan]{spec.kind}{'/' + spec.flavour if spec.flavour else ''}"
                                  f"[/cyan] step {m[1]}/{m[2]}: {_cut(instruction, 100)}",
                                  highlight=False, soft_wrap=True)
                    status.update(f"building {spec.ref}: step {m[1]}/{m[2]} {_cut(instruction, 60)}")
                elif line.startswith(" ---> Using cache"):
                    status.update(f"building {spec.ref}: cached")
                elif not line.startswith(" ---> "):
                    status.update(f"building {spec.ref}: {_cut(line.strip(), 90)}")
    return image_id


def build_images(
    requirements: list[str],
    *,
    flavours: Sequence[str] = ("cpu",),
    base_image: str = DEFAULT_BASE_IMAGE,
    tools_image: str | None = None,
    build_dir: Path = Path("build"),
    labels: Mapping[str, str] | None = None,
    console: Console | None = None,
    torch_index_url: str | None = None,
) -> list[BuiltImage]:
    """Build the proxy, the aggregator and one site image per flavour; skip those that exist.

    `requirements` are the notebook's pip requirement lines (flwr is pinned to FLWR_VERSION
    whatever they say). `tools_image` (default: `default_tools_image(base_image)`) has the
    binutils that strip the venv's shared libraries. `labels`: the keys notebook, notebook_sha256, source and
    version fill the images' nbfed/OCI labels; other keys are added as labels as they are.
    Returns one BuiltImage per image, built=False where the content tag already existed.
    """
    console = console or Console(stderr=True)
    build_dir = Path(build_dir)
    client = docker_client()
    base_digest = base_image_digest(client, base_image)
    tools_image = tools_image or default_tools_image(base_image)
    tools_digest = base_image_digest(client, tools_image, role="tools image (the base's Debian release with "
                                     "binutils, for stripping the libraries)")
    specs = plan_images(requirements, flavours=flavours, base_image=base_image, base_digest=base_digest,
                        tools_image=tools_image, tools_digest=tools_digest, build_dir=build_dir,
                        labels=labels, torch_index_url=torch_index_url, console=console)
    extra_labels = {k: v for k, v in (labels or {}).items() if k not in _LABEL_BUILD_ARGS}
    results: list[BuiltImage] = []
    for spec in specs:
        started = time.monotonic()
        info = _image_or_none(client, spec.ref)
        built = info is None
        if built:
            console.print(f"building [bold]{spec.ref}[/bold] from {base_image}", highlight=False)
            ctx = _assemble_context(spec, build_dir)
            _docker_build(client, spec, ctx, extra_labels, console)
            info = _image_or_none(client, spec.ref)
            if info is None:
                raise ImagesError(f"the build of {spec.ref} finished but the image is not there")
        else:
            console.print(f"[green]{spec.ref}[/green] exists: nothing to build", highlight=False)
        results.append(BuiltImage(spec.name, spec.tag, info["Id"], int(info.get("Size", 0)), built,
                                  time.monotonic() - started, spec.kind, spec.flavour))
    console.print(images_table(results))
    return results


def images_table(images: Sequence[BuiltImage]) -> Table:
    table = Table(title="nbfed images", title_justify="left")
    table.add_column("image")
    table.add_column("id")
    table.add_column("size", justify="right")
    table.add_column("build", justify="right")
    for image in images:
        table.add_row(image.ref, image.id.removeprefix("sha256:")[:12], _human(image.size_bytes),
                      f"{image.seconds:.0f} s" if image.built else "cached")
    return table


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit in ("B", "kB") else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover

