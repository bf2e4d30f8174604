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

A build is three steps, one module each (`build_images` runs them in order):

    wheelhouse.prepare_wheelhouses  resolve, download and lock the wheels (the only downloads;
                                    resolve.py runs pip for the images' target)
    plan.plan_images                the images and their content tags (reads only)
    build.build_images              the docker build of each image the engine lacks

Layout of the build tree (default `build/`):

    build/wheelhouse/<flavour>/pool/*.whl               every wheel downloaded so far
    build/wheelhouse/<flavour>/<key>/requirements.in    the input requirements
    build/wheelhouse/<flavour>/<key>/requirements.lock  pinned, with sha256, for pip
    build/wheelhouse/<flavour>/<key>/lock.json          the same, with the install layer
    build/wheelhouse/<flavour>/<key>/*.whl              hard links to the locked wheels
    build/context/<image>/                              the docker build context
"""

from __future__ import annotations

from nbfed.images.build import BuiltImage, base_image_digest, build_images, docker_client, images_table
from nbfed.images.common import (
    AGGREGATOR_OPTIONAL,
    BOOTSTRAP_BASE_IMAGE,
    DEFAULT_BASE_IMAGE,
    FLAVOURS,
    FLWR_REQUIREMENT,
    FLWR_VERSION,
    IMAGE_PREFIX,
    LABEL_CONTENT_TAG,
    LABEL_FLAVOUR,
    LABEL_FLWR_VERSION,
    LABEL_LOCK_SHA256,
    LABEL_NOTEBOOK,
    LABEL_NOTEBOOK_SHA256,
    LAYERS,
    NONROOT_UID,
    PLATFORMS,
    PYTHON_ABI,
    PYTHON_VERSION,
    TOOLS_SUFFIX,
    TORCH_INDEX_ENV,
    TORCH_RANGE,
    ImagesError,
)
from nbfed.images.plan import ImageSpec, content_tag, default_tools_image, images_dir, plan_images
from nbfed.images.resolve import ResolvedWheel, normalise_requirements, resolve_requirements
from nbfed.images.wheelhouse import (
    LockedWheel,
    Wheelhouses,
    lock_digest,
    nbfed_wheel,
    prepare_wheelhouse,
    prepare_wheelhouses,
)

__all__ = [
    "AGGREGATOR_OPTIONAL",
    "BOOTSTRAP_BASE_IMAGE",
    "DEFAULT_BASE_IMAGE",
    "FLAVOURS",
    "FLWR_REQUIREMENT",
    "FLWR_VERSION",
    "IMAGE_PREFIX",
    "LABEL_CONTENT_TAG",
    "LABEL_FLAVOUR",
    "LABEL_FLWR_VERSION",
    "LABEL_LOCK_SHA256",
    "LABEL_NOTEBOOK",
    "LABEL_NOTEBOOK_SHA256",
    "LAYERS",
    "NONROOT_UID",
    "PLATFORMS",
    "PYTHON_ABI",
    "PYTHON_VERSION",
    "TOOLS_SUFFIX",
    "TORCH_INDEX_ENV",
    "TORCH_RANGE",
    "BuiltImage",
    "ImageSpec",
    "ImagesError",
    "LockedWheel",
    "ResolvedWheel",
    "Wheelhouses",
    "base_image_digest",
    "build_images",
    "content_tag",
    "default_tools_image",
    "docker_client",
    "images_dir",
    "images_table",
    "lock_digest",
    "nbfed_wheel",
    "normalise_requirements",
    "plan_images",
    "prepare_wheelhouse",
    "prepare_wheelhouses",
    "resolve_requirements",
]
