"""The image plan: which images to build and their content tags. Reads, never writes.

A tag is derived from everything that goes into its image: the base (and tools) image's
content, the Dockerfile and its other context files, the locked wheel set, the flavour and
the flwr version. The wheelhouses are an input, prepared beforehand
(nbfed.images.wheelhouse.prepare_wheelhouses): planning downloads nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nbfed import __version__ as NBFED_VERSION
from nbfed.images.common import (
    AGGREGATOR_OPTIONAL,
    DEFAULT_BASE_IMAGE,
    FLWR_VERSION,
    IMAGE_PREFIX,
    SCHEMA,
    TOOLS_SUFFIX,
    ImagesError,
    check_flavour,
)
from nbfed.images.resolve import named
from nbfed.images.wheelhouse import Wheelhouses, lock_digest

# Keys of `build_images(labels=...)` that become build arguments (the Dockerfiles turn them
# into labels); any other key is added to every image as a label as it is.
LABEL_BUILD_ARGS = {
    "notebook": "NOTEBOOK_NAME",
    "notebook_sha256": "NOTEBOOK_SHA256",
    "source": "SOURCE_URL",
    "version": "NBFED_VERSION",
}


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
    for part in (
        f"schema={SCHEMA}",
        f"base={base_image_digest}",
        *tools,
        f"lock={lock}",
        f"flavour={flavour}",
        f"flwr={flwr_version}",
    ):
        digest.update(part.encode() + b"\0")
    for path in sorted(context_files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(context_files[path]).digest())
    return digest.hexdigest()[:12]


def images_dir() -> Path:
    """The Dockerfiles: $NBFED_IMAGES_DIR, else images/ beside the package (a source checkout)."""
    if env := os.environ.get("NBFED_IMAGES_DIR"):
        return Path(env)
    return Path(__file__).resolve().parents[2] / "images"


def dockerfiles() -> Path:
    """images_dir(), once it holds the Dockerfiles; else an error that says where to run from."""
    src = images_dir()
    if not (src / "aggregator" / "Dockerfile").is_file():
        raise ImagesError(
            f"the Dockerfiles are not in {src}: run nbfed from a source checkout, "
            "or set NBFED_IMAGES_DIR to its images/ directory"
        )
    return src


def context_files(dockerfile_dir: Path) -> dict[str, bytes]:
    """The files of a Dockerfile's directory that go into its build context, by name."""
    files = {p.name: p.read_bytes() for p in sorted(dockerfile_dir.iterdir()) if p.is_file() and p.name != "README.md"}
    if "Dockerfile" not in files:
        raise ImagesError(f"no Dockerfile in {dockerfile_dir}")
    return files


def default_tools_image(base_image: str) -> str:
    """The tools image (binutils, for the strip stage) that goes with a base image."""
    if m := re.fullmatch(r"python:(.+)-slim-([a-z]+)", base_image):
        return f"python:{m[1]}-{m[2]}"
    return base_image + TOOLS_SUFFIX


def plan_images(
    wheelhouses: Wheelhouses,
    *,
    base_image: str = DEFAULT_BASE_IMAGE,
    base_digest: str,
    tools_image: str | None = None,
    tools_digest: str,
    labels: Mapping[str, str] | None = None,
) -> list[ImageSpec]:
    """The images to build and their content tags, from prepared wheelhouses (builds and writes nothing).

    The proxy, the aggregator, then one site image per flavour of `wheelhouses`.
    """
    for flavour in wheelhouses.flavours:
        check_flavour(flavour)
    src = dockerfiles()
    common = {
        "BASE_IMAGE": base_image,
        "TOOLS_IMAGE": tools_image or default_tools_image(base_image),
        "FLWR_VERSION": FLWR_VERSION,
        "NBFED_VERSION": NBFED_VERSION,
    }
    for key, value in (labels or {}).items():
        if key in LABEL_BUILD_ARGS:
            common[LABEL_BUILD_ARGS[key]] = value

    specs: list[ImageSpec] = []
    proxy_dir = src / "proxy"
    proxy_tag = content_tag(base_image_digest=base_digest, context_files=context_files(proxy_dir))
    proxy_args = {k: v for k, v in common.items() if k in ("BASE_IMAGE", "NBFED_VERSION", "SOURCE_URL")}
    specs.append(
        ImageSpec(
            "proxy", f"{IMAGE_PREFIX}/proxy", proxy_tag, proxy_dir, buildargs={**proxy_args, "CONTENT_TAG": proxy_tag}
        )
    )
    keep = " ".join(sorted(named(wheelhouses.requirements) & set(AGGREGATOR_OPTIONAL)))
    for kind, flavour in [("aggregator", "cpu"), *(("site", f) for f in wheelhouses.flavours)]:
        dockerfile_dir = src / kind
        wheelhouse = wheelhouses.aggregator if kind == "aggregator" else wheelhouses.sites[flavour]
        digest = lock_digest(wheelhouse)
        kept = keep if kind == "aggregator" else ""  # what it keeps is part of what it installs
        args = {**common, "FLAVOUR": flavour, "LOCK_SHA256": digest, **({"NBFED_KEEP": kept} if kept else {})}
        tag = content_tag(
            base_image_digest=base_digest,
            tools_image_digest=tools_digest,
            context_files=context_files(dockerfile_dir),
            flavour=flavour,
            lock=f"{digest} keep={kept}" if kept else digest,
        )
        if kind == "site":
            tag = f"{tag}-{flavour}"
        specs.append(
            ImageSpec(
                kind, f"{IMAGE_PREFIX}/{kind}", tag, dockerfile_dir, flavour, wheelhouse, {**args, "CONTENT_TAG": tag}
            )
        )
    return specs
