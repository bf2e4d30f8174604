"""nbfed.synth: deterministic synthetic H&E-like patches for three non-IID sites."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nbfed import synth

SCALE = 0.01  # about 200 patches: every class count is above the per-split minimum
SIZE = 24


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def pixels(folder: Path) -> np.ndarray:
    """All patches in a class folder as one float array (n, size, size, 3)."""
    return np.stack([np.asarray(Image.open(p), dtype=np.float64) for p in sorted(folder.glob("*.png"))])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[tuple[int, int]]]:
    out = tmp_path_factory.mktemp("synth") / "data"
    calls: list[tuple[int, int]] = []
    manifest = synth.generate(out, scale=SCALE, size=SIZE, seed=0, progress=lambda d, t: calls.append((d, t)))
    return out, manifest, calls


def test_same_seed_gives_identical_files_and_another_seed_differs(dataset, tmp_path: Path) -> None:
    out, _, _ = dataset
    again = synth.generate(tmp_path / "again", scale=SCALE, size=SIZE, seed=0)
    assert files(tmp_path / "again") == files(out)
    assert again == json.loads((out / synth.MANIFEST).read_text())

    synth.generate(tmp_path / "other", scale=SCALE, size=SIZE, seed=1)
    other, first = files(tmp_path / "other"), files(out)
    assert other.keys() == first.keys()
    assert sum(other[name] != first[name] for name in first) == len(first)


def test_a_subset_of_sites_gives_the_same_images(dataset, tmp_path: Path) -> None:
    out, _, _ = dataset
    synth.generate(tmp_path, scale=SCALE, size=SIZE, seed=0, sites=["site-c"])
    assert files(tmp_path / "site-c") == files(out / "site-c")
    assert not (tmp_path / "site-a").exists()


def test_layout_counts_and_manifest_agree(dataset) -> None:
    out, manifest, calls = dataset
    assert json.loads((out / synth.MANIFEST).read_text()) == manifest
    assert manifest["synthetic"] is True
    assert (manifest["seed"], manifest["scale"], manifest["size"]) == (0, SCALE, SIZE)
    assert set(manifest["sites"]) == set(synth.SITES)
    total = 0
    for site, info in manifest["sites"].items():
        assert set(info["profile"]) == {"haematoxylin", "eosin", "illuminant", "glands"}
        for split in synth.SPLITS:
            for cls in synth.CLASSES:
                found = sorted((out / site / split / cls).glob("*.png"))
                assert len(found) == info["counts"][split][cls] >= synth.MIN_PER_SPLIT
                total += len(found)
    assert total == manifest["total_images"] == len(files(out))
    with Image.open(next(out.rglob("*.png"))) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (SIZE, SIZE))
    assert calls == [(i, total) for i in range(1, total + 1)]


def test_class_balance_follows_the_papers_table_1(dataset) -> None:
    _, manifest, _ = dataset
    for site, (paper_tumour, paper_normal) in synth.PAPER_COUNTS.items():
        counts = manifest["sites"][site]["counts"]
        tumour = counts["train"]["tumor"] + counts["test"]["tumor"]
        normal = counts["train"]["normal"] + counts["test"]["normal"]
        assert (tumour, normal) == (round(paper_tumour * SCALE), round(paper_normal * SCALE))
        assert tumour / (tumour + normal) == pytest.approx(paper_tumour / (paper_tumour + paper_normal), abs=0.03)
        for cls in synth.CLASSES:  # a quarter of each class is held out for testing
            n = counts["train"][cls] + counts["test"][cls]
            assert counts["test"][cls] == max(round(n / 4), synth.MIN_PER_SPLIT)


def test_tiny_scales_keep_a_few_patches_per_class_and_split() -> None:
    counts = synth.split_counts("site-c", 0.0001, 0.25)
    assert all(n == synth.MIN_PER_SPLIT for split in counts.values() for n in split.values())


def test_sites_are_stained_differently(dataset) -> None:
    out, _, _ = dataset
    mean = {
        site: np.concatenate([pixels(out / site / "train" / cls) for cls in synth.CLASSES]).mean(axis=(0, 1, 2))
        for site in synth.SITES
    }
    for one, other in [("site-a", "site-b"), ("site-a", "site-c"), ("site-b", "site-c")]:
        assert np.abs(mean[one] - mean[other]).sum() > 30, (one, other, mean[one], mean[other])


def test_tumour_patches_are_darker_with_more_nuclei(dataset) -> None:
    out, _, _ = dataset
    for site in synth.SITES:
        grey = {cls: pixels(out / site / "train" / cls).mean(axis=3) for cls in synth.CLASSES}
        assert grey["tumor"].mean() < grey["normal"].mean() - 10, site
        # nuclear area: the share of pixels much darker than the patch's own median
        dark = {cls: (g < np.median(g, axis=(1, 2), keepdims=True) * 0.75).mean() for cls, g in grey.items()}
        assert dark["tumor"] > 1.5 * dark["normal"], (site, dark)
        # ...but the classes overlap: some normal patches are darker than some tumour ones
        assert grey["normal"].mean(axis=(1, 2)).min() < grey["tumor"].mean(axis=(1, 2)).max()


def test_paper_patch_size_is_supported() -> None:
    patch = synth.render_patch(np.random.default_rng(0), 224, True, synth.PROFILES["site-a"])
    assert patch.shape == (224, 224, 3) and patch.dtype == np.uint8
    assert 0 < patch.mean() < 255


def test_regenerating_replaces_the_old_patches(tmp_path: Path) -> None:
    synth.generate(tmp_path, scale=0.02, size=16, sites=["site-b"])
    manifest = synth.generate(tmp_path, scale=0.01, size=16, sites=["site-b"])
    assert len(files(tmp_path)) == manifest["total_images"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": 0}, "scale must be a positive number"),
        ({"scale": -0.5}, "scale must be a positive number"),
        ({"scale": float("nan")}, "scale must be a positive number"),
        ({"size": 15}, "size must be an integer of at least 16 px"),
        ({"size": 32.0}, "size must be an integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"test_fraction": 1.0}, "test_fraction must be between 0 and 1"),
        ({"sites": ["site-d"]}, "sites must be distinct names out of"),
        ({"sites": []}, "sites must be distinct names out of"),
        ({"sites": ["site-a", "site-a"]}, "sites must be distinct names out of"),
        ({"sites": "site-a"}, "sites must be distinct names out of"),
    ],
)
def test_bad_arguments_are_refused_before_writing(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        synth.generate(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
