"""nbfed.images.plan: the images and their content tags, from prepared wheelhouses, with no side effects."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from nbfed import images

DIGESTS = {"base_digest": "sha256:base", "tools_digest": "sha256:tools"}


def _wheelhouse(root: Path, name: str, *wheels: str) -> Path:
    """A locked wheelhouse as prepare_wheelhouse leaves it (the lock is all a plan reads)."""
    path = root / name
    path.mkdir(parents=True)
    locked = [
        {"name": w, "version": "1.0", "filename": f"{w}-1.0-py3-none-any.whl", "sha256": w * 8, "layer": "3-app"}
        for w in wheels
    ]
    (path / "lock.json").write_text(json.dumps({"wheels": locked}))
    return path


def _wheelhouses(
    root: Path, requirements: tuple[str, ...] = ("numpy",), flavours: tuple[str, ...] = ("cpu", "cuda")
) -> images.Wheelhouses:
    sites = {
        "cpu": _wheelhouse(root, "cpu", "torch", "flwr"),
        "cuda": _wheelhouse(root, "cuda", "torch", "flwr", "nvidia-x"),
    }
    return images.Wheelhouses(
        requirements,
        flavours,
        _wheelhouse(root, "aggregator", "torch", "flwr", "nbfed"),
        {f: sites[f] for f in flavours},
    )


def _tree(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in root.rglob("*")}


def test_plan_reads_the_wheelhouses_and_writes_nothing(tmp_path, monkeypatch):
    wheelhouses = _wheelhouses(tmp_path)
    before = _tree(tmp_path)
    monkeypatch.chdir(tmp_path)

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"planning started a process: {args}")

    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    specs = images.plan_images(wheelhouses, base_image="nbfed/base:bookworm", **DIGESTS)
    assert _tree(tmp_path) == before
    assert [(s.kind, s.flavour) for s in specs] == [
        ("proxy", None),
        ("aggregator", "cpu"),
        ("site", "cpu"),
        ("site", "cuda"),
    ]
    assert [s.wheelhouse for s in specs[1:]] == [
        wheelhouses.aggregator,
        wheelhouses.sites["cpu"],
        wheelhouses.sites["cuda"],
    ]
    assert specs[2].tag.endswith("-cpu") and specs[3].tag.endswith("-cuda")
    assert specs[1].buildargs["TOOLS_IMAGE"] == "nbfed/base:bookworm-tools"
    assert all(s.buildargs["CONTENT_TAG"] == s.tag for s in specs)


def test_plan_tags_follow_the_locks_only(tmp_path):
    first = {s.kind + str(s.flavour): s.tag for s in images.plan_images(_wheelhouses(tmp_path / "a"), **DIGESTS)}
    moved = _wheelhouses(tmp_path / "b")  # the same locks elsewhere: the same tags
    assert {s.kind + str(s.flavour): s.tag for s in images.plan_images(moved, **DIGESTS)} == first
    (moved.sites["cuda"] / "lock.json").write_text(json.dumps({"wheels": []}))
    edited = {s.kind + str(s.flavour): s.tag for s in images.plan_images(moved, **DIGESTS)}
    assert edited["sitecuda"] != first["sitecuda"]
    assert {k: v for k, v in edited.items() if k != "sitecuda"} == {k: v for k, v in first.items() if k != "sitecuda"}


def test_the_aggregator_keeps_what_the_notebook_names(tmp_path):
    sympy = {
        s.kind: s for s in images.plan_images(_wheelhouses(tmp_path / "a", ("sympy", "numpy"), ("cpu",)), **DIGESTS)
    }
    plain = {s.kind: s for s in images.plan_images(_wheelhouses(tmp_path / "b", ("numpy",), ("cpu",)), **DIGESTS)}
    assert sympy["aggregator"].buildargs["NBFED_KEEP"] == "sympy" and "NBFED_KEEP" not in sympy["site"].buildargs
    assert sympy["aggregator"].tag != plain["aggregator"].tag and sympy["site"].tag == plain["site"].tag


def test_unknown_flavour_says_which_there_are(tmp_path):
    wheelhouses = _wheelhouses(tmp_path, flavours=("cpu",))
    with pytest.raises(images.ImagesError, match="choose one of cpu, cuda"):
        images.plan_images(images.Wheelhouses(("numpy",), ("rocm",), wheelhouses.aggregator, {}), **DIGESTS)
