"""The docker build: each planned image whose content tag the engine lacks, built from its context.

build/context/<image>/      the Dockerfile's directory, lock/ and wheels/ per install layer
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from nbfed.images.common import (
    BOOTSTRAP_BASE_IMAGE,
    DEFAULT_BASE_IMAGE,
    LAYERS,
    TOOLS_SUFFIX,
    ImagesError,
    check_flavour,
    cut,
    human,
)
from nbfed.images.plan import (
    LABEL_BUILD_ARGS,
    ImageSpec,
    context_files,
    default_tools_image,
    dockerfiles,
    plan_images,
)
from nbfed.images.wheelhouse import link_or_copy, prepare_wheelhouses, read_lock


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
    content = {
        "layers": (info.get("RootFS") or {}).get("Layers", []),
        **{k: config.get(k) for k in ("Env", "Cmd", "Entrypoint", "WorkingDir", "User")},
    }
    return "sha256:" + hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


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
    The steps: the base images' digests, the wheelhouses (the only downloads), the plan, the builds.
    """
    console = console or Console(stderr=True)
    build_dir = Path(build_dir)
    client = docker_client()
    base_digest = base_image_digest(client, base_image)
    tools_image = tools_image or default_tools_image(base_image)
    tools_digest = base_image_digest(
        client, tools_image, role="tools image (the base's Debian release with binutils, for stripping the libraries)"
    )
    for flavour in flavours:  # before any download, as the plan would
        check_flavour(flavour)
    dockerfiles()
    wheelhouses = prepare_wheelhouses(requirements, flavours, build_dir, torch_index_url, console=console)
    specs = plan_images(
        wheelhouses,
        base_image=base_image,
        base_digest=base_digest,
        tools_image=tools_image,
        tools_digest=tools_digest,
        labels=labels,
    )
    extra_labels = {k: v for k, v in (labels or {}).items() if k not in LABEL_BUILD_ARGS}
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
        results.append(
            BuiltImage(
                spec.name,
                spec.tag,
                info["Id"],
                int(info.get("Size", 0)),
                built,
                time.monotonic() - started,
                spec.kind,
                spec.flavour,
            )
        )
    console.print(images_table(results))
    return results


def images_table(images: Sequence[BuiltImage]) -> Table:
    table = Table(title="nbfed images", title_justify="left")
    table.add_column("image")
    table.add_column("id")
    table.add_column("size", justify="right")
    table.add_column("build", justify="right")
    for image in images:
        table.add_row(
            image.ref,
            image.id.removeprefix("sha256:")[:12],
            human(image.size_bytes),
            f"{image.seconds:.0f} s" if image.built else "cached",
        )
    return table


def _assemble_context(spec: ImageSpec, build_dir: Path) -> Path:
    """build/context/<image>/: the Dockerfile's directory plus lock/ and wheels/ per layer."""
    ctx = Path(build_dir) / "context" / (f"{spec.kind}-{spec.flavour}" if spec.flavour else spec.kind)
    if ctx.exists():
        shutil.rmtree(ctx)
    ctx.mkdir(parents=True)
    for name, data in context_files(spec.dockerfile_dir).items():
        (ctx / name).write_bytes(data)
    if spec.wheelhouse is not None:
        wheels = read_lock(spec.wheelhouse)
        (ctx / "lock").mkdir()
        for layer, _roots in LAYERS:
            layer_dir = ctx / "wheels" / layer
            layer_dir.mkdir(parents=True)
            (layer_dir / ".keep").write_text("")
            pins = [w for w in wheels if w.layer == layer]
            for w in pins:
                link_or_copy(spec.wheelhouse / w.filename, layer_dir / w.filename)
            (ctx / "lock" / f"{layer}.txt").write_text(
                f"# {layer}: {len(pins)} wheels\n" + "".join(f"{w.pin}\n" for w in pins)
            )
    return ctx


_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


def _docker_build(client: Any, spec: ImageSpec, ctx: Path, extra_labels: Mapping[str, str], console: Console) -> str:
    """Run one API build, streaming its steps; returns the image id."""
    tail: list[str] = []
    image_id = ""
    with console.status(f"building {spec.ref}") as status:
        stream = client.build(
            path=str(ctx),
            tag=spec.ref,
            buildargs=dict(spec.buildargs),
            labels=dict(extra_labels) or None,
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        )
        for chunk in stream:
            if "error" in chunk:
                detail = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
                raise ImagesError(
                    f"building {spec.ref} failed: {detail.strip()}\n"
                    + "\n".join(tail[-25:])
                    + f"\n(build context: {ctx})"
                )
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
                    console.print(
                        f"  [cyan]{spec.kind}{'/' + spec.flavour if spec.flavour else ''}"
                        f"[/cyan] step {m[1]}/{m[2]}: {cut(instruction, 100)}",
                        highlight=False,
                        soft_wrap=True,
                    )
                    status.update(f"building {spec.ref}: step {m[1]}/{m[2]} {cut(instruction, 60)}")
                elif line.startswith(" ---> Using cache"):
                    status.update(f"building {spec.ref}: cached")
                elif not line.startswith(" ---> "):
                    status.update(f"building {spec.ref}: {cut(line.strip(), 90)}")
    return image_id
