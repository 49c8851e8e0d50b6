"""A procedural source dataset that needs no download: fractals of iterated function systems.

Formula-driven supervised pretraining (Kataoka et al., "Pre-training without Natural Images",
ACCV 2020, FractalDB): every class is one iterated function system (IFS) of 2-4 random 2-D affine
maps ``x -> A_i x + b_i`` (the six parameters uniform in [-1, 1], map ``i`` chosen with probability
proportional to ``|det A_i|``). An IFS is kept only if its attractor is not degenerate: it must
fill at least ``min_fill`` of a 64 x 64 raster of its bounding box (FractalDB's "filling rate";
lines and points fill almost nothing) and contract on average (``sum p_i log ||A_i|| < 0``, so the
chaos game converges).

The images of a class are instances of its IFS: every parameter is multiplied by a random weight
in ``[1 - jitter, 1 + jitter]`` (FractalDB's intra-class "parameter weighting"); with ``augment``
the attractor is also randomly flipped, scaled and shifted (and rotated with ``rotate``, off by
default: a rotation-invariant class is much harder to learn in a short pretraining). ``color="random"`` draws the
colour of every map and the background per image (dark on light or light on dark), so only the
shape tells the class apart. Rendering is the chaos game, vectorised with numpy over many chains
and many images at once, rasterised at ``supersample`` x the size and averaged down (antialiasing).

Everything is deterministic per ``seed``: class ``k``'s IFS depends only on (seed, k), the images
of a split only on (seed, k, split). :func:`fractal_splits` caches the sets as ``.npz`` files
(:mod:`training.data.cache`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .base import CropSet
from .cache import cached_train_test

#: Bump when the generator changes (invalidates caches).
VERSION = 2
COLOR_MODES: tuple[str, ...] = ("random", "class", "white")
_SPLIT_CODES = {"train": 1, "test": 2}


@dataclass(frozen=True)
class IFS:
    """An iterated function system: maps ``x -> A[i] @ x + b[i]`` picked with probability ``p[i]``."""

    A: np.ndarray  # n x 2 x 2
    b: np.ndarray  # n x 2
    p: np.ndarray  # n

    @property
    def params(self) -> np.ndarray:
        """n x 6 parameters (a, b, c, d, e, f) as in FractalDB."""
        return np.concatenate([self.A.reshape(-1, 4), self.b], axis=1)

    @classmethod
    def from_params(cls, params: np.ndarray) -> "IFS":
        params = np.asarray(params, dtype=np.float64)
        A, b = params[:, :4].reshape(-1, 2, 2), params[:, 4:6]
        return cls(A, b, map_probabilities(A))


def map_probabilities(A: np.ndarray) -> np.ndarray:
    """Probability of each map, proportional to ``|det A_i|`` (over the last map axis)."""
    det = np.abs(A[..., 0, 0] * A[..., 1, 1] - A[..., 0, 1] * A[..., 1, 0]) + 1e-3
    return det / det.sum(axis=-1, keepdims=True)


def class_names(n_classes: int) -> list[str]:
    """``ifs000``, ``ifs001`` ... (at least three digits)."""
    width = max(3, len(str(max(n_classes - 1, 0))))
    return [f"ifs{k:0{width}d}" for k in range(n_classes)]


# --------------------------------------------------------------------------------------------
# Chaos game and rasterisation
# --------------------------------------------------------------------------------------------


def chaos_game(A: np.ndarray, b: np.ndarray, p: np.ndarray, rng: np.random.Generator,
               chains: int = 1024, steps: int = 24, burn_in: int = 10, return_maps: bool = False):
    """Points of the attractors of a batch of IFS with the same number of maps.

    ``A``: B x n x 2 x 2, ``b``: B x n x 2, ``p``: B x n. Runs ``chains`` independent chains per
    IFS for ``steps`` steps and keeps the last ``steps - burn_in`` points of each chain:
    returns B x (chains * (steps - burn_in)) x 2 (float32; may hold inf / nan if an IFS diverges),
    and with ``return_maps`` also the index of the map that produced each point (B x points).
    """
    B, n = p.shape
    A = A.astype(np.float32)
    b = b.astype(np.float32)
    cum = np.cumsum(p, axis=1).astype(np.float32)
    cum[:, -1] = 1.0
    x = rng.uniform(-1, 1, (B, chains, 2)).astype(np.float32)
    out = np.empty((B, steps - burn_in, chains, 2), np.float32)
    maps = np.empty((B, steps - burn_in, chains), np.int8) if return_maps else None
    rows = np.arange(B)[:, None]
    with np.errstate(all="ignore"):
        for t in range(steps):
            u = rng.random((B, chains), dtype=np.float32)
            idx = (u[:, :, None] > cum[:, None, :]).sum(axis=2)  # B x chains map indices
            Ai = A[rows, idx]  # B x chains x 2 x 2
            x = np.stack([Ai[..., 0, 0] * x[..., 0] + Ai[..., 0, 1] * x[..., 1],
                          Ai[..., 1, 0] * x[..., 0] + Ai[..., 1, 1] * x[..., 1]], axis=-1) + b[rows, idx]
            if t >= burn_in:
                out[:, t - burn_in] = x
                if return_maps:
                    maps[:, t - burn_in] = idx
    if return_maps:
        return out.reshape(B, -1, 2), maps.reshape(B, -1)
    return out.reshape(B, -1, 2)


def _fit_boxes(pts: np.ndarray, q: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
    """Robust bounding box of every point cloud (quantiles ``q`` and ``1 - q``): lo, hi (B x 2)."""
    finite = np.where(np.isfinite(pts), pts, np.nan)
    lo = np.nanquantile(finite, q, axis=1)
    hi = np.nanquantile(finite, 1 - q, axis=1)
    return np.nan_to_num(lo), np.nan_to_num(hi)


def filling_rate(ifs: IFS, rng: np.random.Generator, grid: int = 64) -> float:
    """Fraction of a ``grid`` x ``grid`` raster of the attractor's bounding box that it covers."""
    pts = chaos_game(ifs.A[None], ifs.b[None], ifs.p[None], rng, chains=grid * grid // 4, steps=26,
                     burn_in=10)
    if not np.isfinite(pts).all():
        return 0.0
    lo, hi = _fit_boxes(pts, 0.0)
    ext = hi - lo
    if (ext < 1e-6).any() or (ext > 1e6).any():
        return 0.0
    scale = (grid - 1) / ext.max()  # keep the aspect ratio: a thin line stays thin
    ij = np.clip(((pts[0] - lo[0]) * scale).astype(np.int64), 0, grid - 1)
    occupied = np.zeros((grid, grid), bool)
    occupied[ij[:, 1], ij[:, 0]] = True
    return float(occupied.mean())


def sample_ifs(rng: np.random.Generator, n_maps: tuple[int, int] = (2, 4), min_fill: float = 0.2,
               max_tries: int = 10000) -> IFS:
    """A random non-degenerate IFS: 2-4 maps, parameters uniform in [-1, 1] (see module doc)."""
    for _ in range(max_tries):
        n = int(rng.integers(n_maps[0], n_maps[1] + 1))
        ifs = IFS.from_params(rng.uniform(-1.0, 1.0, (n, 6)))
        sigma = np.linalg.norm(ifs.A, ord=2, axis=(1, 2))
        if float(np.sum(ifs.p * np.log(sigma + 1e-12))) >= -0.05:  # not contractive on average
            continue
        if filling_rate(ifs, rng) >= min_fill:
            return ifs
    raise RuntimeError(f"no IFS with filling rate >= {min_fill} in {max_tries} tries")


def class_ifs(seed: int, k: int, n_maps: tuple[int, int] = (2, 4), min_fill: float = 0.2) -> IFS:
    """The IFS of class ``k`` for ``seed`` (independent of the number of classes)."""
    return sample_ifs(np.random.default_rng([seed, 7919, k]), n_maps, min_fill)


def render_class(ifs: IFS, n_images: int, size: int, rng: np.random.Generator, *,
                 jitter: float = 0.1, augment: bool = True, rotate: bool = False,
                 color: str = "random", class_color: np.ndarray | None = None, supersample: int = 2,
                 points_per_pixel: float = 2.0) -> np.ndarray:
    """``n_images`` instances of one IFS as n x 3 x size x size uint8 (see module doc)."""
    if color not in COLOR_MODES:
        raise ValueError(f"unknown color mode {color!r}; choose from {', '.join(COLOR_MODES)}")
    n_maps = len(ifs.p)
    R = size * supersample
    chains = 256
    keep = max(4, int(np.ceil(points_per_pixel * R * R / chains)))
    # images per chunk: bound the point arrays to ~8M points
    chunk = max(1, int(8_000_000 // (chains * keep)))
    out = np.empty((n_images, 3, size, size), np.uint8)
    for start in range(0, n_images, chunk):
        B = min(chunk, n_images - start)
        params = np.broadcast_to(ifs.params, (B, n_maps, 6)) * rng.uniform(1 - jitter, 1 + jitter,
                                                                           (B, n_maps, 6))
        A, b = params[..., :4].reshape(B, n_maps, 2, 2), params[..., 4:]
        if augment:  # rotate / flip the attractor by conjugating the maps: A' = Q A Q^T, b' = Q b
            theta = rng.uniform(0, 2 * np.pi, B) if rotate else np.zeros(B)
            flip = np.where(rng.random(B) < 0.5, -1.0, 1.0)
            c, s = np.cos(theta), np.sin(theta)
            Q = np.stack([np.stack([c * flip, -s], -1), np.stack([s * flip, c], -1)], -2)[:, None]
            A = Q @ A @ np.swapaxes(Q, -1, -2)
            b = (Q @ b[..., None])[..., 0]
            scale = rng.uniform(0.7, 0.95, B)
        else:
            scale = np.full(B, 0.9)
        pts, maps = chaos_game(A, b, map_probabilities(A), rng, chains=chains, steps=keep + 12,
                               burn_in=12, return_maps=True)
        lo, hi = _fit_boxes(pts[:, :: max(1, pts.shape[1] // 4096)])
        ext = np.maximum((hi - lo).max(axis=1), 1e-6)
        centre = (lo + hi) / 2
        fit = (scale * R / ext).astype(np.float32)[:, None, None]
        shift = (1 - scale)[:, None] * R / 2 * (rng.uniform(-1, 1, (B, 2)) if augment else 0.0)
        offset = (R / 2 + shift - centre * fit[:, :, 0]).astype(np.float32)
        with np.errstate(all="ignore"):
            xy = pts * fit + offset[:, None, :]
        # colours: fg (B x n_maps x 3) and bg (B x 3) in [0, 1]
        if color == "random":
            bg = rng.uniform(0.0, 0.35, (B, 3))
            fg = rng.uniform(0.55, 1.0, (B, n_maps, 3))
            inv = rng.random(B) < 0.5
            bg[inv], fg[inv] = 1 - bg[inv], 1 - fg[inv]
        elif color == "class":
            base = class_color if class_color is not None else np.ones((n_maps, 3))
            fg = np.broadcast_to(base, (B, n_maps, 3)).copy()
            bg = np.zeros((B, 3))
        else:
            fg, bg = np.ones((B, n_maps, 3)), np.zeros((B, 3))
        # histogram over (image, pixel, map); every point has the colour of the map that produced
        # it (shows the self-similar parts), a pixel the mean colour of its points
        with np.errstate(invalid="ignore"):
            ij = np.floor(np.clip(xy, -1, R)).astype(np.int64)
        ok = np.isfinite(xy).all(axis=2) & (ij >= 0).all(axis=2) & (ij < R).all(axis=2)
        key = ((np.arange(B)[:, None] * R + ij[..., 1]) * R + ij[..., 0]) * n_maps + maps
        hist = np.bincount(key[ok], minlength=B * R * R * n_maps).reshape(B, R * R, n_maps)
        hist = hist.astype(np.float32)
        counts = hist.sum(axis=2, keepdims=True)
        mean_col = (hist @ fg.astype(np.float32)) / np.maximum(counts, 1)
        hi_res = np.where(counts > 0, mean_col, bg[:, None, :].astype(np.float32))
        low = hi_res.reshape(B, size, supersample, size, supersample, 3).mean(axis=(2, 4))
        out[start:start + B] = np.clip(np.rint(low * 255), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
    return out


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


def fractal_set(n_classes: int, per_class: int, size: int, *, seed: int = 0, split: str = "train",
                jitter: float = 0.1, augment: bool = True, rotate: bool = False, color: str = "random",
                n_maps: tuple[int, int] = (2, 4), min_fill: float = 0.2,
                supersample: int = 2) -> CropSet:
    """``n_classes`` x ``per_class`` fractal images (classes ``ifs000`` ...), no caching."""
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {', '.join(_SPLIT_CODES)}")
    names = class_names(n_classes)
    images = np.empty((n_classes * per_class, 3, size, size), np.uint8)
    for k in range(n_classes):
        ifs = class_ifs(seed, k, n_maps, min_fill)
        rng = np.random.default_rng([seed, _SPLIT_CODES[split], k])
        class_color = np.random.default_rng([seed, 104729, k]).uniform(0.3, 1.0, (len(ifs.p), 3))
        images[k * per_class:(k + 1) * per_class] = render_class(
            ifs, per_class, size, rng, jitter=jitter, augment=augment, rotate=rotate, color=color,
            class_color=class_color, supersample=supersample)
    return CropSet.of_classes(images, np.repeat(np.arange(n_classes), per_class), names)


def fractal_splits(n_classes: int, per_class: int, test_per_class: int, size: int, *, seed: int = 0,
                   cache_dir: str | os.PathLike | None = None, log: Callable[[str], None] | None = None,
                   **kwargs) -> tuple[CropSet, CropSet]:
    """Train and held-out test sets of the same classes (independent images), cached under
    ``cache_dir`` as ``fractals_<hash>.npz`` when given (:mod:`training.data.cache`). ``kwargs``
    go to :func:`fractal_set`."""
    settings = dict(version=VERSION, n_classes=n_classes, per_class=per_class,
                    test_per_class=test_per_class, size=size, seed=seed,
                    **{k: list(v) if isinstance(v, tuple) else v for k, v in sorted(kwargs.items())})

    return cached_train_test(cache_dir, "fractals", settings, lambda split: fractal_set(
        n_classes, per_class if split == "train" else test_per_class, size, seed=seed, split=split, **kwargs), log)
