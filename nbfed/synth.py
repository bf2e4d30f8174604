"""Synthetic H&E-like histopathology patches for three simulated hospital sites.

This is SYNTHETIC data drawn by a random generator, not medical data: no patient,
slide or scan is behind any pixel. It exists so that the federation can be shown and
tested end to end without a hospital.

Each image is a square patch of pink, textured eosin-stained tissue with purple
haematoxylin-stained nuclei, written in ImageFolder layout::

    OUT/site-a/train/tumor/*.png   OUT/site-a/train/normal/*.png
    OUT/site-a/test/tumor/*.png    OUT/site-a/test/normal/*.png   (same for site-b, site-c)
    OUT/manifest.json              seed, scale, size, counts, site profiles

Tumour patches tend to have more, larger, irregular (pleomorphic), darker
(hyperchromatic) and crowded nuclei; normal patches fewer, small, round nuclei, often
around a gland lumen. Both classes are drawn from a latent "grade" whose distributions
overlap, and either may hold a cluster of lymphocytes (small dark benign nuclei), so
some normal patches look busy and some tumour patches calm: learnable, not trivial.

What makes the sites non-IID (see ``PROFILES``):

- stain: each site has its own haematoxylin and eosin optical densities and its own
  illuminant, as different staining protocols and scanners give, so a model trained at
  one site sees shifted colours and contrasts at the others;
- case mix: site-b samples no glandular tissue, so a site-b model has never seen a
  gland, which the other sites show in most normal patches;
- label balance: the tumour/non-tumour counts of each site follow the paper's Table 1
  (Launet, Wang et al., Applied Sciences 2023, 13(2):919), scaled by ``scale``.

A model trained on one site alone therefore transfers worse to the others than one
trained on all three. Output is deterministic: the same seed, scale, size and test
fraction give byte-identical PNG files (each image has its own generator, seeded from
seed/site/split/class/index, so generating a subset of sites gives the same images).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SITES: tuple[str, ...] = ("site-a", "site-b", "site-c")
CLASSES: tuple[str, ...] = ("normal", "tumor")  # ImageFolder order: normal=0, tumor=1
SPLITS: tuple[str, ...] = ("train", "test")

#: (tumour, non-tumour) patches per site in the paper's Table 1.
PAPER_COUNTS: dict[str, tuple[int, int]] = {
    "site-a": (1554, 5609),
    "site-b": (2627, 4694),
    "site-c": (1005, 3979),
}

# Defaults: about 1,950 patches (4 MB), written in a few seconds; the compact CNN of the
# notebooks trains 3 rounds x 2 local epochs at all three sites in seconds on 2 CPU cores.
DEFAULT_SCALE = 0.1
DEFAULT_SIZE = 32
MIN_SIZE = 16
MIN_PER_SPLIT = 4
#: Nuclei are drawn at their true size on a 224 px patch (the paper's patch size);
#: smaller patches show a field of view that shrinks with the square root of the size.
REFERENCE_SIZE = 224
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SiteProfile:
    """How one simulated hospital stains and scans its slides, and what tissue it samples."""

    haematoxylin: tuple[float, float, float]  # RGB optical density per unit concentration
    eosin: tuple[float, float, float]
    illuminant: tuple[float, float, float]  # RGB of blank glass, 0..1
    glands: float  # how often its patches show glands, relative to a typical site (1.0)


PROFILES: dict[str, SiteProfile] = {
    # standard protocol: blue-purple nuclei on pink stroma
    "site-a": SiteProfile((0.62, 0.78, 0.30), (0.06, 0.72, 0.30), (0.97, 0.96, 0.98), 1.0),
    # weak haematoxylin, heavy eosin: faint blue nuclei on deep magenta stroma, dim
    # scanner; and it samples non-glandular tissue only
    "site-b": SiteProfile((0.30, 0.35, 0.07), (0.28, 1.83, 0.70), (0.89, 0.85, 0.92), 0.0),
    # strong haematoxylin, faint eosin: dark violet nuclei on pale salmon stroma, warm scanner
    "site-c": SiteProfile((0.60, 0.95, 0.62), (0.02, 0.30, 0.50), (1.00, 0.98, 0.88), 1.0),
}
#: Chance that a patch (of either class) holds a cluster of lymphocytes: small, round,
#: dark nuclei that crowd a patch without making it a tumour.
LYMPHOCYTE_CHANCE = 0.15


def split_counts(site: str, scale: float, test_fraction: float) -> dict[str, dict[str, int]]:
    """Images per split and class for ``site``: the paper's counts times ``scale``."""
    tumour, normal = PAPER_COUNTS[site]
    counts: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
    for cls, paper in (("normal", normal), ("tumor", tumour)):
        n = max(round(paper * scale), 2 * MIN_PER_SPLIT)
        test = min(max(round(n * test_fraction), MIN_PER_SPLIT), n - MIN_PER_SPLIT)
        counts["train"][cls] = n - test
        counts["test"][cls] = test
    return counts


def generate(
    out_dir: Path,
    *,
    scale: float = DEFAULT_SCALE,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    test_fraction: float = 0.25,
    sites: Sequence[str] = SITES,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write the synthetic dataset under ``out_dir`` and return its manifest.

    Existing PNG files in the class folders written to are replaced.
    """
    if not (isinstance(scale, numbers.Real) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    if not isinstance(size, numbers.Integral) or size < MIN_SIZE:
        raise ValueError(f"size must be an integer of at least {MIN_SIZE} px, got {size!r}")
    if not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")
    if isinstance(sites, str) or not sites or len(set(sites)) != len(sites) or set(sites) - set(SITES):
        raise ValueError(f"sites must be distinct names out of {list(SITES)}, got {sites!r}")

    out_dir = Path(out_dir)
    plan = {site: split_counts(site, scale, test_fraction) for site in sites}
    total = sum(n for c in plan.values() for split in c.values() for n in split.values())
    done = 0
    for site, counts in plan.items():
        for split in SPLITS:
            for cls in CLASSES:
                folder = out_dir / site / split / cls
                folder.mkdir(parents=True, exist_ok=True)
                for stale in folder.glob("*.png"):
                    stale.unlink()
                key = [seed, SITES.index(site), SPLITS.index(split), CLASSES.index(cls)]
                for i in range(counts[split][cls]):
                    rng = np.random.default_rng([*key, i])
                    pixels = render_patch(rng, size, cls == "tumor", PROFILES[site])
                    Image.fromarray(pixels).save(folder / f"{cls}_{i:05d}.png")
                    done += 1
                    if progress is not None:
                        progress(done, total)

    manifest = {
        "generator": "nbfed.synth",
        "synthetic": True,
        "seed": seed,
        "scale": scale,
        "size": size,
        "test_fraction": test_fraction,
        "classes": list(CLASSES),
        "total_images": total,
        "sites": {
            site: {
                "counts": counts,
                "paper_counts": dict(zip(("tumor", "normal"), PAPER_COUNTS[site], strict=True)),
                "profile": asdict(PROFILES[site]),
            }
            for site, counts in plan.items()
        },
    }
    text = json.dumps(manifest, indent=2)
    (out_dir / MANIFEST).write_text(text + "\n")
    return json.loads(text)  # exactly what the file says (lists, not tuples)


def render_patch(rng: np.random.Generator, size: int, tumour: bool, site: SiteProfile) -> np.ndarray:
    """One ``size`` x ``size`` RGB patch (uint8) drawn from ``rng``."""
    k = math.sqrt(size / REFERENCE_SIZE)  # image px per reference px
    area = (size / k) ** 2  # in reference px
    grade = rng.beta(8, 2) if tumour else rng.beta(2, 8)  # the classes overlap a little
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)

    # Eosin: smooth density variation, wavy collagen fibres, occasional clear spaces.
    eosin = 0.55 * np.exp(0.3 * _smooth_noise(rng, size, 4))
    angle, wavelength = rng.uniform(0, math.pi), rng.uniform(8, 18) * k
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) / wavelength + 1.5 * _smooth_noise(rng, size, 3)
    eosin *= 1 + rng.uniform(0.05, 0.25) * np.sin(2 * math.pi * phase)
    clear = np.zeros((size, size), np.float32)
    if rng.random() < 0.35:
        clear = np.clip((_smooth_noise(rng, size, 3) - 1.0) * 3, 0, 1)

    # Epithelial nuclei: density, size, shape, irregularity and darkness follow the grade.
    count = rng.poisson(area * (0.001 + 0.006 * grade) * math.exp(rng.normal(0, 0.3)))
    cx, cy = rng.uniform(-4, size + 4, (2, count))
    if rng.random() < site.glands * (0.7 - 0.6 * grade):  # a lumen ringed by epithelial nuclei
        g_x, g_y = rng.uniform(0.2, 0.8, 2) * size
        g_r = rng.uniform(18, 40) * k
        clear = np.maximum(clear, np.clip((0.75 - np.hypot(xx - g_x, yy - g_y) / g_r) * 6, 0, 1))
        ring = int(2 * math.pi * g_r / (rng.uniform(7, 10) * k))
        t = np.linspace(0, 2 * math.pi, ring, endpoint=False) + rng.uniform(0, 2 * math.pi)
        keep = np.hypot(cx - g_x, cy - g_y) > 1.3 * g_r  # no nuclei inside the gland
        cx = np.concatenate([cx[keep], g_x + g_r * np.cos(t) + rng.normal(0, k, ring)])
        cy = np.concatenate([cy[keep], g_y + g_r * np.sin(t) + rng.normal(0, k, ring)])
    n = len(cx)
    radius = rng.uniform(3.2, 4.2) * (1 + 0.6 * grade) * np.exp(rng.normal(0, 0.08 + 0.25 * grade, n))
    groups = [
        dict(
            cx=cx,
            cy=cy,
            radius=np.clip(radius, 2.0, 11.0) * k,
            aspect=1 + rng.gamma(1.5, 0.06 + 0.2 * grade, n),
            rotation=rng.uniform(0, math.pi, n),
            irregular=(0.03 + 0.22 * grade) * rng.uniform(0.5, 1.5, n),
            density=(0.9 + 0.6 * grade) * np.exp(rng.normal(0, 0.15, n) + rng.normal(0, 0.1)),
            chromatin=np.full(n, 0.1 + 0.3 * grade),
        )
    ]
    if rng.random() < LYMPHOCYTE_CHANCE:  # benign look-alike: small, round, dark, regular
        m = rng.poisson(area * rng.uniform(0.003, 0.012))
        lx, ly = rng.uniform(0, size, (2, 1)) + rng.normal(0, rng.uniform(0.2, 0.5) * size, (2, m))
        groups.append(
            dict(
                cx=lx,
                cy=ly,
                radius=rng.uniform(2.3, 2.9, m) * k,
                aspect=1 + rng.gamma(1.5, 0.03, m),
                rotation=rng.uniform(0, math.pi, m),
                irregular=np.full(m, 0.03),
                density=1.7 * np.exp(rng.normal(0, 0.1, m)),
                chromatin=np.full(m, 0.1),
            )
        )
    nuclei = _nuclei(rng, size, **{key: np.concatenate([g[key] for g in groups]) for key in groups[0]})

    haem = nuclei + 0.05 * np.exp(0.4 * _smooth_noise(rng, size, 5))
    solid = np.clip(nuclei, 0, 1)
    eosin = eosin * (1 - 0.5 * solid) + 0.2 * _blur(solid, 2.5 * k)  # cytoplasm around nuclei
    haem, eosin = haem * (1 - clear), eosin * (1 - 0.9 * clear)
    sigma = rng.uniform(0.3, 0.9)  # focus varies per patch
    haem, eosin = _blur(haem, sigma), _blur(eosin, sigma)

    # Beer-Lambert: the site's stain vectors with a little per-slide jitter, plus sensor noise.
    h_od = np.asarray(site.haematoxylin) * np.exp(rng.normal(0, 0.06, 3))
    e_od = np.asarray(site.eosin) * np.exp(rng.normal(0, 0.06, 3))
    light = np.asarray(site.illuminant) * np.exp(rng.normal(0, 0.02))
    od = haem[..., None] * h_od + eosin[..., None] * e_od
    rgb = 255 * light * np.exp(-od) + rng.normal(0, rng.uniform(1.5, 4), (size, size, 3))
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _nuclei(
    rng: np.random.Generator,
    size: int,
    *,
    cx: np.ndarray,
    cy: np.ndarray,
    radius: np.ndarray,
    aspect: np.ndarray,
    rotation: np.ndarray,
    irregular: np.ndarray,
    density: np.ndarray,
    chromatin: np.ndarray,
) -> np.ndarray:
    """Haematoxylin concentration of irregular elliptic nuclei (all sizes in px)."""
    n = len(cx)
    a, b = radius * np.sqrt(aspect), radius / np.sqrt(aspect)
    ph2, ph3 = rng.uniform(0, 2 * math.pi, (2, n))
    r = int(math.ceil((a * (1 + irregular)).max(initial=0))) + 1
    seen = (cx > -r) & (cx < size + r) & (cy > -r) & (cy < size + r)
    if not seen.any():
        return np.zeros((size, size), np.float32)
    cx, cy, a, b, rotation, ph2, ph3 = (x[seen] for x in (cx, cy, a, b, rotation, ph2, ph3))
    irregular, density, chromatin = irregular[seen], density[seen], chromatin[seen]

    offsets = np.arange(-r, r + 1)
    ix, iy = np.rint(cx).astype(int), np.rint(cy).astype(int)
    dx = (ix[:, None] + offsets - cx[:, None])[:, None, :]
    dy = (iy[:, None] + offsets - cy[:, None])[:, :, None]
    cos, sin = np.cos(rotation)[:, None, None], np.sin(rotation)[:, None, None]
    u = (dx * cos + dy * sin) / a[:, None, None]
    v = (dy * cos - dx * sin) / b[:, None, None]
    rho, theta = np.hypot(u, v), np.arctan2(v, u)
    edge = 1 + irregular[:, None, None] * (
        0.6 * np.cos(2 * theta + ph2[:, None, None]) + 0.4 * np.cos(3 * theta + ph3[:, None, None])
    )
    mask = np.clip(0.5 + (edge - rho) * b[:, None, None], 0, 1)
    texture = 1 + chromatin[:, None, None] * rng.standard_normal(mask.shape) + 0.3 * (rho / edge) ** 4
    conc = (mask * density[:, None, None] * texture).astype(np.float32)

    # Scatter-add every nucleus's box into a canvas padded so that no box falls off it.
    pad = 2 * r + 1
    canvas = np.zeros((size + 2 * pad,) * 2, np.float32)
    rows = (iy[:, None] + offsets + pad)[:, :, None]
    cols = (ix[:, None] + offsets + pad)[:, None, :]
    np.add.at(canvas, (rows, cols), conc)
    return np.clip(canvas[pad : pad + size, pad : pad + size], 0, 2.5)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Unit-variance-ish low-frequency noise: a ``cells`` x ``cells`` grid, upsampled."""
    grid = Image.fromarray(rng.standard_normal((cells + 1, cells + 1)).astype(np.float32))
    return np.asarray(grid.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with reflected edges."""
    r = max(1, int(math.ceil(3 * sigma)))
    kernel = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    n = image.shape[0]
    padded = np.pad(image, r, mode="reflect")
    rows = sum(w * padded[i : i + n, :] for i, w in enumerate(kernel))
    return sum(w * rows[:, i : i + n] for i, w in enumerate(kernel)).astype(np.float32)
