"""What the wheelhouse, the plan and the build share: the images' target, layers and labels."""

from __future__ import annotations

import re

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

SCHEMA = 1  # bump when the wheelhouse or tag recipe changes


class ImagesError(RuntimeError):
    """A build that cannot go on; the message says what to do."""


def check_flavour(flavour: str) -> None:
    if flavour not in FLAVOURS:
        raise ImagesError(f"unknown flavour {flavour!r}: choose one of {', '.join(FLAVOURS)}")


def canonical(name: str) -> str:
    """A project name as pip compares them: `Foo_Bar.baz` -> `foo-bar-baz`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit in ("B", "kB") else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover
