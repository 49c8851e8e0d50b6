"""Procedural C-CCM-like data: the 8 CCM containers rendered from a seed (the offline default).

One scene model, two outputs: :func:`render_frame` (a camera frame with one or more containers,
their masks and C-CCM annotations; for the segmenter and the node demo) and :func:`render_crop`
(one container crop made exactly as the node makes it: ``crop_square(frame, box, DEFAULT_MARGIN)``
then ``resize_uint8``; what the classifier trains on). :func:`make_cropset` builds a whole
:class:`~training.data.base.CropSet` with C-CCM's container and class proportions.

Scene model (all numpy/cv2, vectorised over the container's bounding box):

* a container is a revolved 2-D :class:`Profile` (cavity radius ``r(h)``, ``h`` in [0, 1] from the
  bottom of the cavity to the rim) plus an optional stem and foot, seen from slightly above:
  horizontal circles are ellipses (rim, liquid surface, bottom), rolled by a small angle;
* the fill height of a level is computed from the profile so that 50 % / 90 % are fractions of
  the *volume* (:meth:`Profile.fill_height`; a cone at half volume is filled to 0.5**(1/3) ~ 79 %);
* transparent containers show the background through them (tint, dark/bright edges, vertical
  highlights, a flipped and magnified background through water as through a cylindrical lens,
  blur through frosted plastic); opaque ones (C1, C2) are shaded solids that hide their content
  (only what shows inside the rim), and are labelled ``unknown`` as in the paper;
* water is transparent with a visible surface line; pasta and rice are opaque textures;
* backgrounds (gradients, noise, stripes, checks, wood, distractor shapes, a table edge), light
  (gain, white balance, direction, vignette), camera noise and blur vary; a skin-toned hand with
  fingers, thumb and forearm holds the container in ``hand_prob`` of the images.

Everything is deterministic: sample ``i`` of seed ``s`` depends only on ``(s, i)`` (numpy
``default_rng``), so parallel generation gives the same bytes as serial generation.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch

from fillcls_ros.core import CLASSES, DEFAULT_MARGIN, crop_square, resize_uint8

from .base import CropSet
from .ccm import (CCM_CLASS_COUNTS, CCM_CONTAINER_COUNTS, CONTAINER_NAMES, SPLITS,  # noqa: F401
                  split_containers, split_cropset)

#: Bump whenever the rendering changes (invalidates caches).
GENERATOR_VERSION = 1
#: Fill fraction (of the volume) of each visible level.
LEVEL_FRACTIONS: dict[str, float] = {"empty": 0.0, "half": 0.5, "full": 0.9}
FILLINGS: tuple[str, ...] = ("water", "pasta", "rice")
#: Camera views: 1 / 2 side cameras (left / right light), 3 frontal, 4 higher (person's view).
VIEWS: tuple[int, ...] = (1, 2, 3, 4)
#: Default fraction of images in which a hand holds (and partly occludes) the container.
HAND_PROB = 0.3
#: Level proportions of a transparent container (C-CCM's class counts without ``unknown``).
TRANSPARENT_LEVEL_P: dict[str, float] = {
    k: CCM_CLASS_COUNTS[k] / sum(CCM_CLASS_COUNTS[j] for j in LEVEL_FRACTIONS) for k in LEVEL_FRACTIONS
}


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


class Profile:
    """Radius ``r(h)`` of a revolved cavity, ``h`` in [0, 1] from its bottom to the rim.

    ``fn`` maps an array of heights to radii (any scale; normalised so that ``max r = 1``).
    Volumes are ``V(h) = int_0^h r^2 / int_0^1 r^2`` on ``n`` samples (trapezoids).
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], n: int = 2049):
        h = np.linspace(0.0, 1.0, n)
        r = np.maximum(np.broadcast_to(np.asarray(fn(h), dtype=np.float64), h.shape), 0.0)
        if r.max() <= 0:
            raise ValueError("profile radius is zero everywhere")
        self.h, self.r = h, r / r.max()
        a = self.r ** 2
        cum = np.concatenate([[0.0], np.cumsum((a[1:] + a[:-1]) * 0.5 * np.diff(h))])
        self.v = cum / cum[-1]
        keep = np.concatenate([[True], np.diff(self.v) > 0])  # strictly increasing, for fill_height
        self._vk, self._hk = self.v[keep], self.h[keep]
        self._r32 = self.r.astype(np.float32)

    def __call__(self, h):
        return np.interp(h, self.h, self.r)

    def volume_fraction(self, h):
        """Fraction of the volume below height ``h`` (fraction of the cavity height)."""
        return np.interp(h, self.h, self.v)

    def fill_height(self, fraction):
        """Height (fraction of the cavity height) at which ``fraction`` of the volume is filled."""
        return np.interp(fraction, self._vk, self._hk)


@dataclass(frozen=True)
class ContainerSpec:
    """One CCM container: identity, cavity profile and how it is drawn.

    ``aspect``: cavity height / largest diameter; ``stem`` / ``foot``: stem height (fraction of the
    cavity height) and foot radius (fraction of the largest radius), 0 without stem; ``base``: solid
    bottom thickness (fraction of the cavity height); ``height_cm``: real height (sets the scale of
    hands and of pasta / rice); ``color``: body colour (opaque) or glass tint (transparent),
    ``alpha``: tint strength; ``frosted``: blur of the background seen through; ``ridges``: strength
    of horizontal ridges (plastic cups).
    """

    id: str
    name: str
    transparent: bool
    profile: Profile
    material: str
    aspect: float
    height_cm: float
    color: tuple[int, int, int]
    alpha: float = 0.1
    stem: float = 0.0
    foot: float = 0.0
    base: float = 0.03
    frosted: float = 0.0
    ridges: float = 0.0
    band: tuple[int, int, int] | None = None  # printed band of an opaque cup
    inner: tuple[int, int, int] | None = None  # inside colour of an opaque cup

    @property
    def stemmed(self) -> bool:
        return self.stem > 0


def _tapered(bottom: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda h: bottom + (1.0 - bottom) * h


def _ellipsoid(centre: float, radius: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda h: np.sqrt(np.clip(1.0 - ((h - centre) / radius) ** 2, 0.0, None))


CONTAINERS: dict[str, ContainerSpec] = {
    s.id: s
    for s in (
        ContainerSpec("C1", CONTAINER_NAMES["C1"], False, Profile(_tapered(0.68)), "plastic", 1.2, 12.0,
                      (200, 28, 36), inner=(150, 20, 28)),
        ContainerSpec("C2", CONTAINER_NAMES["C2"], False, Profile(_tapered(0.70)), "paper", 1.05, 8.0,
                      (236, 234, 228), band=(60, 90, 160), inner=(215, 212, 205)),
        ContainerSpec("C3", CONTAINER_NAMES["C3"], True, Profile(_tapered(0.72)), "plastic", 1.1, 8.0,
                      (232, 238, 240), alpha=0.10, frosted=0.5, ridges=0.35),
        ContainerSpec("C4", CONTAINER_NAMES["C4"], True, Profile(_tapered(0.88)), "glass", 1.0, 10.0,
                      (70, 160, 95), alpha=0.32, base=0.16),
        ContainerSpec("C5", CONTAINER_NAMES["C5"], True, Profile(_ellipsoid(0.58, 0.63)), "glass", 0.8,
                      19.0, (225, 235, 235), alpha=0.07, stem=0.8, foot=0.85),
        ContainerSpec("C6", CONTAINER_NAMES["C6"], True, Profile(_ellipsoid(0.9, 0.93)), "glass", 2.6,
                      22.0, (225, 235, 235), alpha=0.07, stem=0.45, foot=1.05),
        ContainerSpec("C7", CONTAINER_NAMES["C7"], True, Profile(_tapered(0.66)), "plastic", 1.35, 15.0,
                      (236, 240, 242), alpha=0.08, frosted=0.25, ridges=0.2),
        ContainerSpec("C8", CONTAINER_NAMES["C8"], True, Profile(lambda h: np.maximum(h, 0.015)), "glass",
                      0.42, 16.0, (225, 235, 235), alpha=0.07, stem=1.0, foot=0.62),
    )
}


# --------------------------------------------------------------------------------------------
# Texture banks (fixed seeds: identical in every process)
# --------------------------------------------------------------------------------------------

_BANK: dict[str, Any] = {}


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    g = rng.standard_normal((cells, cells)).astype(np.float32)
    t = cv2.resize(g, (size, size), interpolation=cv2.INTER_CUBIC)
    return t / (np.abs(t).max() + 1e-6)


def _grain_texture(rng: np.random.Generator, kind: str, size: int = 256) -> np.ndarray:
    """RGB float32 texture of pasta or rice at 24 px per cm."""
    img = np.zeros((size, size, 3), np.float32)
    if kind == "rice":
        img[:] = (150, 140, 118)
        n, length, width = 2600, 14.0, 5.0
        cols = [(246, 242, 228), (236, 230, 212), (252, 250, 242), (225, 218, 196)]
    else:
        img[:] = (120, 82, 30)
        n, length, width = 500, 56.0, 16.0
        cols = [(238, 196, 108), (228, 178, 86), (246, 210, 128), (214, 166, 74)]
    for _ in range(n):
        x, y = rng.uniform(-10, size + 10, 2)
        ang = rng.uniform(0, 180)
        ln = length * rng.uniform(0.7, 1.2)
        c = cols[rng.integers(len(cols))]
        sh = rng.uniform(0.8, 1.05)
        cv2.ellipse(img, (int(x), int(y)), (int(ln / 2), int(width / 2)), ang, 0, 360,
                    tuple(float(v) * sh * 0.65 for v in c), -1)
        cv2.ellipse(img, (int(x), int(y)), (max(1, int(ln / 2 - 2)), max(1, int(width / 2 - 2))), ang,
                    0, 360, tuple(float(v) * sh for v in c), -1)
        if kind == "pasta" and rng.random() < 0.7:  # ridges / hollow of penne and fusilli
            cv2.ellipse(img, (int(x), int(y)), (max(1, int(ln / 2 - 4)), max(1, int(width / 5))), ang,
                        0, 360, tuple(float(v) * sh * 0.72 for v in c), -1)
    # wrap the texture (tiles seamlessly enough after a blur)
    return cv2.GaussianBlur(img, (0, 0), 0.8)


def _bank() -> dict[str, Any]:
    """Background / content / noise textures, built once per process from fixed seeds."""
    if _BANK:
        return _BANK
    rng = np.random.default_rng(20210919)
    s = 256
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    gray = []
    for cells in (4, 8, 16, 32, 64):
        for _ in range(2):
            gray.append(_smooth_noise(rng, s, cells))
    for period in (6, 10, 18, 32, 60):  # stripes
        gray.append(np.sign(np.sin(xx * 2 * np.pi / period)).astype(np.float32) * 0.8
                    + 0.2 * _smooth_noise(rng, s, 32))
    for period in (16, 32, 64):  # checks
        gray.append((np.sign(np.sin(xx * np.pi / period)) * np.sign(np.sin(yy * np.pi / period)))
                    .astype(np.float32))
    for _ in range(3):  # fabric
        gray.append(0.5 * np.sin(xx * 1.7).astype(np.float32) * np.sin(yy * 1.7).astype(np.float32)
                    + 0.5 * _smooth_noise(rng, s, 48))
    wood = []
    for _ in range(4):
        n = _smooth_noise(rng, s, 6)
        w = np.sin(yy * rng.uniform(0.15, 0.4) + 9 * n + 0.4 * _smooth_noise(rng, s, 64) * 3)
        wood.append(w.astype(np.float32))
    _BANK.update(
        gray=np.stack(gray),
        wood=np.stack(wood),
        pasta=_grain_texture(rng, "pasta"),
        rice=_grain_texture(rng, "rice"),
        noise=rng.standard_normal((512, 512, 3)).astype(np.float32),
    )
    return _BANK


def _patch(rng: np.random.Generator, tex: np.ndarray, w: int, h: int, src_w: float) -> np.ndarray:
    """A ``w x h`` patch of ``tex`` (H x W [x C]) covering ``src_w`` texture pixels horizontally."""
    th, tw = tex.shape[:2]
    sw = int(np.clip(round(src_w), 2, tw))
    sh = int(np.clip(round(sw * h / max(w, 1)), 2, th))
    x0 = int(rng.integers(0, tw - sw + 1))
    y0 = int(rng.integers(0, th - sh + 1))
    out = cv2.resize(tex[y0:y0 + sh, x0:x0 + sw], (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.flip(out, 1) if rng.random() < 0.5 else out


# --------------------------------------------------------------------------------------------
# Scene description
# --------------------------------------------------------------------------------------------


@dataclass
class _Instance:
    """One container placed in a scene (pixels; ``cx, by``: image position of the base centre)."""

    spec: ContainerSpec
    level: str  # class name (``unknown`` for opaque containers)
    fraction: float  # true fill fraction of the volume (hidden for opaque containers)
    filling: str  # none / water / pasta / rice
    view: int
    cx: float
    by: float
    height: float  # px, base to rim
    tilt: float  # vertical / horizontal axis ratio of horizontal circles
    angle: float  # roll, radians
    hand: bool
    seed: int
    look: dict = field(default_factory=dict)

    @property
    def cavity_h(self) -> float:
        s = self.spec
        return self.height / (1.0 + s.stem + s.base)

    @property
    def radius(self) -> float:
        return self.cavity_h / (2.0 * self.spec.aspect)

    def local_extent(self) -> tuple[float, float, float, float]:
        """(x_lo, x_hi, y_lo, y_hi) of the container in its local frame (y up from the base)."""
        s, R = self.spec, self.radius
        wall = max(0.7, 0.035 * R)
        rmax = max(R, s.foot * R) + wall + 1.0
        rt = R * float(s.profile(1.0)) + wall
        rb = (s.foot * R) if s.stemmed else R * float(s.profile(0.0)) + wall
        return -rmax, rmax, -self.tilt * rb - 1.0, self.height + self.tilt * rt + 1.0

    def image_extent(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) image bounding box (float) of the local extent after the roll."""
        xl, xh, yl, yh = self.local_extent()
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        xs, ys = [], []
        for X in (xl, xh):
            for Y in (yl, yh):
                xs.append(self.cx + X * ca - Y * sa)
                ys.append(self.by - (X * sa + Y * ca))
        return min(xs), min(ys), max(xs), max(ys)


def _sd_ellipse(X: np.ndarray, Yc: np.ndarray, a: float, b: float) -> np.ndarray:
    """Approximate signed distance (px, > 0 inside) to an axis-aligned ellipse centred at 0."""
    a, b = max(a, 0.3), max(b, 0.3)
    xa, yb = X / a, Yc / b
    f = xa * xa + yb * yb - 1.0
    g = 2.0 * np.sqrt((xa / a) ** 2 + (yb / b) ** 2) + 1e-6
    return -f / g


def _gauss(u: np.ndarray, c: float, w: float) -> np.ndarray:
    return np.exp(-((u - c) / w) ** 2)


def _g3(k: np.ndarray) -> np.ndarray:
    """A 2-D map repeated over 3 channels (much faster than numpy broadcasting)."""
    return cv2.cvtColor(np.ascontiguousarray(k, dtype=np.float32), cv2.COLOR_GRAY2RGB)


def _cmap(gray, *terms) -> np.ndarray:
    """3-channel image ``gray + sum(map_k * colour_k)`` built channel by channel."""
    chans = []
    for j in range(3):
        acc = None
        for m, c in terms:
            v = m * np.float32(c[j])
            if acc is None:
                acc = v
            else:
                acc += v
        if gray is not None:
            acc = gray + acc if acc is not None else gray.astype(np.float32, copy=True)
        chans.append(acc)
    return cv2.merge(chans)


def _lut(prof: "Profile", t: np.ndarray) -> np.ndarray:
    """``prof(t)`` for a float32 array (t clamped to [0, 1]): nearest of 2049 samples (fast)."""
    n = len(prof._r32) - 1
    i = np.clip(t, 0.0, 1.0)
    i *= np.float32(n)
    i += np.float32(0.5)
    return np.take(prof._r32, i.astype(np.int32))


def _c01(x: np.ndarray) -> np.ndarray:
    """Clip a temporary array to [0, 1] in place."""
    np.maximum(x, 0.0, out=x)
    return np.minimum(x, 1.0, out=x)


def _draw_container(img: np.ndarray, inst: _Instance, rng: np.random.Generator) -> tuple | None:
    """Composite one container into ``img`` (H x W x 3 float32, 0..255) in place.

    Every layer (glass tint, edges, highlights, rim, content, opaque body) is an affine map
    ``col -> col * m + c`` per pixel; they are folded into a few maps before touching the colour
    channels. Returns ``(x0, y0, coverage)`` (coverage: float32 map of the bounding box, >= 0.5 =
    mask) or None when the container is outside the image.
    """
    H, W = img.shape[:2]
    s, lk = inst.spec, inst.look
    ex0, ey0, ex1, ey1 = inst.image_extent()
    x0, y0 = max(int(math.floor(ex0)) - 1, 0), max(int(math.floor(ey0)) - 1, 0)
    x1, y1 = min(int(math.ceil(ex1)) + 2, W), min(int(math.ceil(ey1)) + 2, H)
    if x1 <= x0 or y1 <= y0:
        return None
    bw, bh = x1 - x0, y1 - y0
    ca, sa = math.cos(inst.angle), math.sin(inst.angle)
    px = np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - inst.cx)
    py = np.float32(inst.by - 0.5) - np.arange(y0, y1, dtype=np.float32)
    X = px[None, :] * np.float32(ca) + py[:, None] * np.float32(sa)
    Y = py[:, None] * np.float32(ca) - px[None, :] * np.float32(sa)
    aX = np.abs(X)
    asa = abs(sa)

    def slab(yc: float, b: float, xmax: float) -> slice:
        """Rows of the box where an ellipse centred at local height ``yc`` (half-height b) may be."""
        lo = inst.by - (yc + b + 2.0) * ca - xmax * asa - 2.0
        hi = inst.by - (yc - b - 2.0) * ca + xmax * asa + 2.0
        return slice(min(max(int(lo) - y0, 0), bh), min(max(int(math.ceil(hi)) - y0, 0), bh))

    def ell(yc: float, a: float, b: float, sl: slice) -> np.ndarray:
        """Signed distance to that ellipse on the rows ``sl``."""
        return _sd_ellipse(X[sl], Y[sl] - np.float32(yc), a, b)

    Hc, R, Ht, e = inst.cavity_h, inst.radius, inst.height, inst.tilt
    Hs = s.stem * Hc
    Hb0 = Hs + s.base * Hc  # bottom of the cavity
    wall = max(0.7, 0.035 * R)
    prof = s.profile
    t = (Y - np.float32(Hb0)) * np.float32(1.0 / max(Ht - Hb0, 1e-3))
    r_in = _lut(prof, t)
    r_in *= np.float32(R)
    r_out = r_in + np.float32(wall)
    rt, rb = R * float(prof(1.0)), R * float(prof(0.0))

    # --- silhouette (signed distances, > 0 inside)
    sd = np.minimum(np.minimum(r_out - aX, Y - np.float32(Hs)), np.float32(Ht) - Y)
    sl_top = slab(Ht, e * (rt + wall), rt + wall)
    np.maximum(sd[sl_top], ell(Ht, rt + wall, e * (rt + wall), sl_top), out=sd[sl_top])
    sl = slab(Hs, e * (rb + wall), rb + wall)
    np.maximum(sd[sl], ell(Hs, rb + wall, e * (rb + wall), sl), out=sd[sl])
    stem_zone = None
    if s.stemmed:
        rs = max(0.9, 0.055 * R)
        rf = s.foot * R
        tf = max(1.0, 0.02 * Ht)
        flare = np.float32(rs) + np.float32(0.6 * rs) * _c01(1.0 - Y * np.float32(1.0 / (0.2 * Hs + 1e-3)))
        sd_stem = np.minimum(np.minimum(flare - aX, Y), np.float32(Hs + 1.0) - Y)
        sl = slab(Hs, max(1.0, 1.5 * rs), 2.2 * rs)
        np.maximum(sd_stem[sl], ell(Hs, 2.2 * rs, max(1.0, 1.5 * rs), sl), out=sd_stem[sl])
        sl_foot = slab(tf * 0.5, e * rf + tf, rf)
        sd_foot_edge = ell(0.0, rf, e * rf, sl_foot)
        ft = sd_stem[sl_foot]
        np.maximum(ft, sd_foot_edge, out=ft)
        np.maximum(ft, ell(tf, rf, e * rf, sl_foot), out=ft)
        np.maximum(ft, np.minimum(np.minimum(np.float32(rf) - aX[sl_foot], Y[sl_foot]),
                                  np.float32(tf) - Y[sl_foot]), out=ft)
        np.maximum(sd, sd_stem, out=sd)
        stem_zone = Y < np.float32(Hs)
    cov = _c01(sd + np.float32(0.5))
    if not (cov >= 0.5).any():
        return None

    # --- content geometry
    f = inst.fraction if inst.filling != "none" else 0.0
    liq = surf = sd_surf = None
    if f > 0:
        hf = float(prof.fill_height(f))
        zf = Hb0 + hf * (Ht - Hb0)
        rf_ = R * float(prof(hf))
        sl_surf = slab(zf, e * rf_, rf_)
        sd_surf = ell(zf, rf_, e * rf_, sl_surf)
        sd_liq = np.minimum(np.minimum(r_in - aX, Y - np.float32(Hb0)), np.float32(zf) - Y)
        np.maximum(sd_liq[sl_surf], sd_surf, out=sd_liq[sl_surf])
        sl = slab(Hb0, e * rb, rb)
        np.maximum(sd_liq[sl], ell(Hb0, rb, e * rb, sl), out=sd_liq[sl])
        liq = _c01(sd_liq + np.float32(0.5))
        surf = np.zeros_like(liq)
        surf[sl_surf] = _c01(sd_surf + np.float32(0.5))
    sd_open = ell(Ht, rt, e * rt, sl_top)  # rim opening
    rim = np.zeros_like(cov)
    rim[sl_top] = _c01(np.float32(max(0.8, wall) * 0.5 + 0.5) - np.abs(sd_open))

    u = X / np.maximum(r_out, np.float32(0.5))
    np.clip(u, -1.0, 1.0, out=u)
    u2 = u * u
    nz = np.sqrt(1.0 - u2)
    lx = np.float32(lk["light_x"])
    bg = img[y0:y1, x0:x1]
    content_tex = None
    if f > 0 and inst.filling in ("pasta", "rice"):
        px_per_cm = Ht / s.height_cm
        tex = _bank()[inst.filling]
        content_tex = _patch(rng, tex, bw, bh, bw / px_per_cm * 24.0 * rng.uniform(0.85, 1.15))
    in_body = (Y >= np.float32(Hs)) & (Y <= np.float32(Ht))
    C = cov

    if s.transparent:
        base = bg
        if s.frosted > 0:
            base = cv2.GaussianBlur(bg, (0, 0), max(0.3, s.frosted * R * 0.06))
        rid = None
        if s.ridges > 0:
            period = max(2.5, Ht / 14.0)
            rid = 1.0 + np.float32(s.ridges * 0.18) * np.sin(Y * np.float32(2 * np.pi / period))
        # glass layers: tint (stronger at the edges, thick base, solid stem), edge line, highlights, rim
        a = np.float32(s.alpha * lk["tint_gain"]) * (0.7 + 2.2 * u2 * u2 * u2)
        if s.base > 0.05:
            a += np.float32(0.35) * _c01((np.float32(Hb0) - Y) * np.float32(0.5) + np.float32(0.5)) * (Y > Hs - 1)
        if stem_zone is not None:
            a = np.where(stem_zone, np.float32(0.45), a)
        np.minimum(a, 0.9, out=a)
        edge = _c01((np.abs(u) - np.float32(0.82)) * np.float32(1 / 0.18))
        edge *= edge * np.float32(lk["edge_a"]) * in_body
        sp = np.float32(lk["spec"]) * (_gauss(u, lk["spec_u"], 0.09) + 0.5 * _gauss(u, -0.78 * lk["spec_u"], 0.05))
        sp *= in_body
        ra = rim * np.float32(lk["rim_a"])
        if stem_zone is not None:  # foot outline and a bright line along the stem
            line = _c01(np.float32(0.8) - aX) * (stem_zone & (Y > 0))
            line[sl_foot] += _c01(1.0 - np.abs(sd_foot_edge))
            ra = np.maximum(ra, np.minimum(line, 1.0) * np.float32(0.45))
        # fold: col = inner*M + T*tint + G
        M = (1.0 - a) * (1.0 - edge)
        M *= 1.0 - sp
        T = a * M / np.maximum(1.0 - a, 1e-6)  # a * (1-edge)(1-sp)
        G = (edge * np.float32(lk["edge_col"])) * (1.0 - sp) + sp * np.float32(255.0)
        M *= 1.0 - ra
        T *= 1.0 - ra
        G = G * (1.0 - ra) + ra * np.float32(lk["rim_col"])
        MC = M * C
        if rid is not None:
            MC *= rid
        if liq is None:
            inner = base
            out = bg * _g3(1.0 - C)
            out += inner * _g3(MC)
        else:
            Lq = liq
            if inst.filling == "water":
                m = lk["water_mag"]
                sx = X * np.float32(-m)
                mx = np.float32(inst.cx - x0 - 0.5) + sx * np.float32(ca) - Y * np.float32(sa)
                my = np.float32(inst.by - y0 - 0.5) - (sx * np.float32(sa) + Y * np.float32(ca))
                refr = cv2.remap(np.ascontiguousarray(bg), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
                S = surf * np.float32(lk["surface_mix"])
                ml = np.zeros_like(surf)
                ml[sl_surf] = _c01(np.float32(lk["meniscus_w"] + 0.5) - np.abs(sd_surf)) * np.float32(lk["meniscus_a"])
                # water = refr*tint*shade*(1-S) + S*(through/2 + amb/2), then the meniscus line
                k_ref = (np.float32(0.97) - np.float32(0.3) * np.abs(u) * u2) * (1.0 - S) * (1.0 - ml) * Lq
                k_thr = (np.float32(0.5) * S) * (1.0 - ml) * Lq + (1.0 - Lq)
                k_amb = ((np.float32(0.5 * lk["ambient"]) * S) * (1.0 - ml) + ml * np.float32(lk["meniscus_col"])) * Lq
                out = bg * _g3(1.0 - C)
                out += base * _g3(k_thr * MC)
                out += refr * _cmap(None, (k_ref * MC, lk["water_tint"]))
                G = G + k_amb * M * (rid if rid is not None else 1.0)
            else:
                shade = (np.float32(0.62) + np.float32(0.38) * nz + np.float32(0.15) * lx * u) * (1.0 - surf) \
                    + np.float32(1.08) * surf
                k_tex = shade * Lq * np.float32(lk["content_gain"])
                out = bg * _g3(1.0 - C)
                out += base * _g3((1.0 - Lq) * MC)
                out += content_tex * _g3(k_tex * MC)
        out += _cmap(G * C, (T * C, lk["tint"]))
    else:
        col_b = np.minimum(np.asarray(s.color, np.float32) * lk["hue"] * np.float32(lk["body_gain"]), 255)
        col_i = np.asarray(s.inner or s.color, np.float32) * lk["hue"] * np.float32(lk["body_gain"])
        shade = np.float32(0.42) + np.float32(0.48) * np.clip(nz + np.float32(0.55) * lx * u, 0, 1.3)
        sp = np.float32(lk["spec"] * 0.8) * _gauss(u, lk["spec_u"], 0.12) * (Y <= np.float32(Ht))
        op = np.zeros_like(cov)  # rim opening: inner wall (and the content if it shows)
        op[sl_top] = _c01(sd_open + np.float32(0.5))
        lip = rim * np.float32(0.85)
        k_out = (1.0 - sp) * (1.0 - op) * (1.0 - lip)  # outer wall
        k_bw = shade * k_out
        out = bg * _g3(1.0 - C)
        terms = []
        if s.band is not None:
            tb = (Y - np.float32(Hb0)) * np.float32(1.0 / max(Ht - Hb0, 1.0))
            bm = _c01((tb - np.float32(0.45)) * np.float32(Ht * 0.5)) * _c01((np.float32(0.68) - tb) * np.float32(Ht * 0.5))
            terms.append((k_bw * bm * C, s.band))
            k_bw = k_bw * (1.0 - bm)
        terms.append((k_bw * C, col_b))
        gray = (sp * np.float32(255.0)) * (1.0 - op) * (1.0 - lip)
        ins = np.float32(0.55) + np.float32(0.35) * _c01(
            np.float32(0.5) - np.float32(0.5) * lx * u + (Y - np.float32(Ht)) * np.float32(0.3 / max(e * rt, 1.0)))
        k_in = ins * op * (1.0 - lip)
        if liq is not None:
            vis = surf * op * (1.0 - lip)
            if content_tex is not None:
                out += content_tex * _g3(vis * C * np.float32(lk["content_gain"]))
                k_in = k_in * (1.0 - surf)
            else:
                gray += vis * np.float32(0.6 * 0.8 * lk["ambient"])
                k_in = k_in * (1.0 - np.float32(0.6) * surf)
        terms += [(k_in * C, col_i), (lip * C, np.minimum(col_b * 1.2 + 20, 255))]
        out += _cmap(gray * C, *terms)
    img[y0:y1, x0:x1] = out
    return x0, y0, cov


def _draw_shadow(img: np.ndarray, inst: _Instance) -> None:
    """A soft contact shadow on the surface under a standing container (opposite the light)."""
    H, W = img.shape[:2]
    s, R, e = inst.spec, inst.radius, inst.tilt
    rb = (s.foot * R if s.stemmed else R * float(s.profile(0.0))) * 1.25 + 1.0
    dx = -inst.look["light_x"] * rb * 0.5
    a, b = rb, max(1.0, rb * max(e, 0.12) * 1.3)
    sig = max(0.8, 0.18 * rb)
    m = int(math.ceil(a + 3 * sig + abs(dx)))
    cx, cy = inst.cx + dx, inst.by
    x0, x1 = max(int(cx) - m, 0), min(int(cx) + m + 1, W)
    y0, y1 = max(int(cy - b - 3 * sig), 0), min(int(cy + b + 3 * sig) + 1, H)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    mk = np.zeros((y1 - y0, x1 - x0), np.float32)
    cv2.ellipse(mk, (int(round(cx)) - x0, int(round(cy)) - y0), (int(a), int(b)), 0, 0, 360, 1.0, -1)
    mk = cv2.GaussianBlur(mk, (0, 0), sig)
    img[y0:y1, x0:x1] *= _g3(1.0 - np.float32(inst.look["shadow"]) * mk)


def _draw_hand(img: np.ndarray, hmask: np.ndarray, inst: _Instance, rng: np.random.Generator) -> None:
    """Draw a hand holding ``inst`` (fingers across its front from one side) into img and hmask."""
    s, R = inst.spec, inst.radius
    px_cm = inst.height / s.height_cm
    fw = 1.75 * px_cm * rng.uniform(0.85, 1.15)  # finger width
    side = 1.0 if rng.random() < 0.5 else -1.0
    Hc = inst.cavity_h
    Hs = s.stem * Hc
    Hb0 = Hs + s.base * Hc
    if s.stemmed and rng.random() < 0.45:
        yg = Hs * rng.uniform(0.35, 0.8)  # pinch the stem
        rg = max(0.9, 0.055 * R)
    else:
        tg = rng.uniform(0.2, 0.7)
        yg = Hb0 + tg * (inst.height - Hb0)
        rg = R * float(s.profile(tg)) + max(0.7, 0.035 * R)
    reach = rg * rng.uniform(0.3, 1.5) + fw * 0.3
    nf = 4
    tilt = rng.uniform(-0.25, 0.25)
    ca, sa = math.cos(inst.angle), math.sin(inst.angle)

    def P(X, Y):
        return (int(round(inst.cx + X * ca - Y * sa)), int(round(inst.by - (X * sa + Y * ca))))

    skin = np.array(inst.look["skin"], np.float32)
    dark = tuple(float(v) for v in skin * 0.8)
    light = tuple(float(v) for v in np.minimum(skin * 1.07 + 4, 255))
    base = tuple(float(v) for v in skin)
    shadow = tuple(float(v) for v in skin * 0.9)
    # forearm and palm (outside, on the holding side)
    palm_x = side * (rg + 1.6 * fw)
    ang = rng.uniform(-0.9, 0.5)
    arm_end = (palm_x + side * 30 * fw * math.cos(ang), yg + 30 * fw * math.sin(ang))
    for im, c, k in ((hmask, 255, 3.6), (img, dark, 3.6), (img, shadow, 3.3), (img, base, 2.4)):
        cv2.line(im, P(palm_x, yg), P(*arm_end), c, max(1, int(k * fw)))
    axes = (max(1, int(2.0 * fw)), max(1, int(2.5 * fw)))
    for im, c, d in ((hmask, 255, 0), (img, dark, 0), (img, shadow, 1), (img, base, max(1, int(0.5 * fw)))):
        cv2.ellipse(im, P(palm_x, yg), (max(1, axes[0] - d), max(1, axes[1] - d)), 0, 0, 360, c, -1)
    # thumb (above the fingers), then the fingers, top to bottom; knuckle creases
    ty = yg + 2.2 * fw
    thumb = (P(side * (rg + 0.6 * fw), ty - 0.3 * fw), P(side * (rg - 0.55 * reach), ty + 0.5 * fw))
    strokes = [thumb]
    for k in range(nf):
        y = yg + (1.0 - k) * fw * 1.02
        ln = reach * (1.0 - 0.12 * abs(k - 1.2))
        strokes.append((P(side * (rg + 0.8 * fw), y), P(side * (rg - ln), y + tilt * ln)))
    w = max(1, int(round(fw)))
    up = max(1, int(round(fw * 0.18)))
    for a, b in strokes:
        cv2.line(hmask, a, b, 255, w)
        cv2.line(img, a, b, dark, w)
        cv2.line(img, a, b, base, max(1, int(fw * 0.8)))
        cv2.line(img, (a[0], a[1] - up), (b[0], b[1] - up), light, max(1, int(fw * 0.3)))
        if fw >= 4:  # fingernail at the tip
            cv2.circle(img, b, max(1, int(fw * 0.22)), tuple(min(255.0, v * 1.15 + 10) for v in base), -1)


def _look(rng: np.random.Generator, spec: ContainerSpec, view: int) -> dict:
    """Per-instance appearance parameters."""
    sk = rng.uniform(0, 1)
    skin = np.array([235, 190, 160]) * (1 - sk) + np.array([120, 78, 52]) * sk
    bright = rng.random() < 0.5
    return {
        "light_x": (-1.0 if view == 1 else 1.0 if view == 2 else rng.uniform(-1, 1)) * rng.uniform(0.3, 1.0),
        "tint": np.asarray(spec.color, np.float32) * np.float32(rng.uniform(0.7, 1.05))
        * rng.uniform(0.93, 1.07, 3).astype(np.float32),
        "hue": rng.uniform(0.93, 1.07, 3).astype(np.float32),
        "tint_gain": rng.uniform(0.6, 1.5),
        "edge_a": rng.uniform(0.25, 0.7),
        "edge_col": np.float32(rng.uniform(200, 250) if bright else rng.uniform(20, 70)),
        "spec": rng.uniform(0.15, 0.75),
        "spec_u": rng.uniform(0.25, 0.6) * (1 if rng.random() < 0.5 else -1),
        "rim_a": rng.uniform(0.3, 0.8),
        "rim_col": np.float32(rng.uniform(180, 255) if rng.random() < 0.7 else rng.uniform(30, 80)),
        "water_mag": rng.uniform(0.35, 0.85),
        "water_tint": np.array([rng.uniform(0.82, 0.97), rng.uniform(0.88, 1.0), 1.0], np.float32),
        "surface_mix": rng.uniform(0.2, 0.6),
        "ambient": np.float32(rng.uniform(170, 250)),
        "meniscus_w": rng.uniform(0.6, 1.6),
        "meniscus_a": rng.uniform(0.25, 0.75),
        "meniscus_col": np.float32(rng.uniform(200, 255) if rng.random() < 0.6 else rng.uniform(20, 70)),
        "content_gain": rng.uniform(0.75, 1.1),
        "body_gain": rng.uniform(0.75, 1.1),
        "skin": skin * rng.uniform(0.9, 1.1, 3),
        "shadow": rng.uniform(0.1, 0.45),
    }


def _random_color(rng: np.random.Generator) -> np.ndarray:
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(0, 200), rng.integers(30, 250)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _background(rng: np.random.Generator, W: int, H: int, table_y: float | None, scale: float) -> np.ndarray:
    """A random background (gradient, texture, distractor shapes, table), H x W x 3 float32.

    Drawn at half resolution (it is out of focus anyway) and upsampled.
    """
    bank = _bank()
    f = 2 if min(W, H) >= 48 else 1
    w, h = -(-W // f), -(-H // f)
    c0 = _random_color(rng)
    c1 = np.clip(c0 * rng.uniform(0.5, 1.5) + rng.normal(0, 25, 3), 0, 255).astype(np.float32)
    th = rng.uniform(0, 2 * np.pi)
    ct, st = math.cos(th), math.sin(th)
    xs = np.linspace(0, 1, w, dtype=np.float32) * np.float32(ct * W / max(W, H))
    ys = np.linspace(0, 1, h, dtype=np.float32) * np.float32(st * H / max(W, H))
    lo = min(0.0, float(xs[-1])) + min(0.0, float(ys[-1]))
    span = abs(float(xs[-1])) + abs(float(ys[-1])) + 1e-6
    ramp = (xs[None, :] + ys[:, None] - np.float32(lo)) * np.float32(1.0 / span)
    terms = [(ramp, c1 - c0)]
    if rng.random() < 0.8:
        g = bank["gray"][rng.integers(len(bank["gray"]))]
        tex = _patch(rng, g, w, h, rng.uniform(0.3, 1.0) * 256 * min(1.0, W / (scale * 2.5)))
        amp = rng.uniform(5, 45)
        terms.append((tex, (0.6 + 0.4 * rng.random(3)) * amp))
    img = _cmap(None, *terms)
    img += c0
    for _ in range(int(rng.integers(0, 4))):  # distractor shapes
        col = tuple(float(v) for v in _random_color(rng))
        cx, cy = int(rng.uniform(0, w)), int(rng.uniform(0, h))
        a, b = int(rng.uniform(0.05, 0.5) * w), int(rng.uniform(0.05, 0.5) * h)
        if rng.random() < 0.5:
            cv2.rectangle(img, (cx - a, cy - b), (cx + a, cy + b), col, -1)
        else:
            cv2.ellipse(img, (cx, cy), (a, b), rng.uniform(0, 180), 0, 360, col, -1)
    if table_y is not None and table_y < H:
        ty = int(max(table_y, 0) / f)
        rows = h - ty
        tcol = _random_color(rng) * np.float32(rng.uniform(0.6, 1.1))
        shade = np.linspace(rng.uniform(0.8, 1.0), rng.uniform(1.0, 1.2), rows, dtype=np.float32)
        shade = np.repeat(shade[:, None], w, axis=1)
        if rng.random() < 0.6:
            wood = bank["wood"][rng.integers(len(bank["wood"]))]
            tex = _patch(rng, wood, w, rows, rng.uniform(0.4, 1.0) * 256 * min(1.0, W / (scale * 3)))
            img[ty:] = _cmap(tex * np.float32(rng.uniform(8, 35)), (shade, tcol))
        else:
            img[ty:] = _cmap(None, (shade, tcol))
        edge = max(1, int(round(rng.uniform(0.005, 0.02) * scale / f)))
        img[ty:ty + edge] *= np.float32(rng.uniform(0.5, 1.4))
    sig = rng.uniform(0.0, 1.0) ** 2 * 0.02 * scale / f
    if sig > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sig)
    if f > 1:
        img = cv2.resize(img, (w * f, h * f), interpolation=cv2.INTER_LINEAR)[:H, :W]
    return np.ascontiguousarray(img)


def _finish(img: np.ndarray, rng: np.random.Generator, light_x: float, scale: float) -> np.ndarray:
    """Lighting (gain, white balance, side light, vignette), blur and camera noise -> uint8."""
    H, W = img.shape[:2]
    gain = np.float32(rng.uniform(0.55, 1.3)) * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    xs = np.linspace(-1, 1, W, dtype=np.float32)
    ys = np.linspace(-1, 1, H, dtype=np.float32)
    v = np.float32(rng.uniform(0.0, 0.35) * 0.5)
    k = np.float32(0.25 * light_x * rng.uniform(0, 1))
    light = (1.0 + k * xs - v * xs * xs)[None, :] - (v * ys * ys)[:, None]
    img *= _cmap(None, (light, gain))
    sig = rng.uniform(0.0, 1.0) ** 2 * 0.012 * scale
    if sig > 0.35:
        img = cv2.GaussianBlur(img, (0, 0), sig)
    noise = _bank()["noise"]
    nh, nw = noise.shape[:2]
    if H <= nh and W <= nw:
        oy, ox = int(rng.integers(0, nh - H + 1)), int(rng.integers(0, nw - W + 1))
        n = noise[oy:oy + H, ox:ox + W]
    else:
        n = cv2.resize(noise, (W, H), interpolation=cv2.INTER_NEAREST)
    return cv2.scaleAdd(n, float(rng.uniform(1.0, 7.0)), img).round().clip(0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Sampling of instances
# --------------------------------------------------------------------------------------------


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _pick_level(rng: np.random.Generator, spec: ContainerSpec, level: str | None) -> tuple[str, float]:
    """(class name, true fill fraction); opaque containers are always ``unknown``."""
    if level is not None and level not in CLASSES:
        raise ValueError(f"level must be one of {', '.join(CLASSES)}, got {level!r}")
    if level is None or level == "unknown":
        names = list(TRANSPARENT_LEVEL_P)
        vis = names[int(rng.choice(len(names), p=list(TRANSPARENT_LEVEL_P.values())))]
    else:
        vis = level
    frac = LEVEL_FRACTIONS[vis]
    if not spec.transparent:
        return "unknown", frac
    if level == "unknown":
        raise ValueError(f"{spec.id} ({spec.name}) is transparent: its level cannot be 'unknown'")
    return vis, frac


def _make_instance(rng: np.random.Generator, spec: ContainerSpec, level: str | None, filling: str | None,
                   view: int | None, hand: bool | None, hand_prob: float, height: float) -> _Instance:
    lvl, frac = _pick_level(rng, spec, level)
    if filling is None:
        filling = "none" if frac == 0 else FILLINGS[int(rng.integers(len(FILLINGS)))]
    elif frac == 0:
        filling = "none"
    elif filling not in FILLINGS:
        raise ValueError(f"filling must be one of {', '.join(FILLINGS)}, got {filling!r}")
    view = int(rng.choice(VIEWS)) if view is None else int(view)
    lo, hi = {1: (0.06, 0.26), 2: (0.06, 0.26), 3: (0.12, 0.34), 4: (0.22, 0.45)}.get(view, (0.06, 0.45))
    hand = bool(rng.random() < hand_prob) if hand is None else bool(hand)
    angle = rng.normal(0, 0.1 if hand else 0.03)
    height = height * rng.uniform(0.93, 1.07)
    inst = _Instance(spec, lvl, frac, filling, view, 0.0, 0.0, height, rng.uniform(lo, hi), angle, hand,
                     int(rng.integers(1 << 31)))
    inst.look = _look(rng, spec, view)
    return inst


# --------------------------------------------------------------------------------------------
# Public rendering API
# --------------------------------------------------------------------------------------------


def _annotations(inst: _Instance, mask: np.ndarray, occlusion: float) -> dict:
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    box = (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)
    return {
        "container": inst.spec.id, "name": inst.spec.name, "label": CLASSES.index(inst.level),
        "level": inst.level, "filling": inst.filling, "fill_fraction": inst.fraction, "box": box,
        "mask": mask, "occlusion": occlusion, "occluded": occlusion > 0, "transparent": inst.spec.transparent,
        "view": inst.view,
    }


def _render(rng: np.random.Generator, W: int, H: int, insts: list[_Instance], table_y: float | None,
            scale: float) -> tuple[np.ndarray, list[dict]]:
    """Render ``insts`` (already placed) on a W x H canvas; annotations with full-canvas masks."""
    img = _background(rng, W, H, table_y, scale)
    covs = []
    for inst in sorted(insts, key=lambda i: i.by):  # far (higher in the image) first
        if not inst.hand and table_y is not None and inst.by > table_y:
            _draw_shadow(img, inst)
        r = _draw_container(img, inst, np.random.default_rng(inst.seed))
        covs.append((inst, r))
    hmask = None
    for inst in insts:
        if inst.hand:
            if hmask is None:
                hmask = np.zeros((H, W), np.uint8)
            _draw_hand(img, hmask, inst, np.random.default_rng(inst.seed + 1))
    light_x = insts[0].look["light_x"] if insts else float(rng.uniform(-1, 1))
    rgb = _finish(img, rng, light_x, scale)
    anns = []
    for inst, r in covs:
        if r is None:
            continue
        x0, y0, cov = r
        m = cov >= 0.5
        if not m.any():
            continue
        mask = np.zeros((H, W), bool)
        mask[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
        occ = 0.0
        if hmask is not None:
            occ = float((hmask[y0:y0 + m.shape[0], x0:x0 + m.shape[1]][m] > 0).mean())
        anns.append(_annotations(inst, mask, occ))
    return rgb, anns


def render_frame(seed, width: int = 640, height: int = 480, containers: Sequence[str] | None = None,
                 n_containers: int = 1, level: str | None = None, filling: str | None = None,
                 view: int | None = None, hand_prob: float = HAND_PROB) -> tuple[np.ndarray, list[dict]]:
    """A camera frame (H x W x 3 uint8 RGB) with ``n_containers`` non-overlapping containers.

    ``containers`` restricts the ids that may appear (default: all eight). Returns the frame and
    one annotation dict per container: container, name, label (index into CLASSES), level,
    filling, fill_fraction, box (x0, y0, x1, y1; exclusive; tight around the mask), mask (H x W
    bool, the whole container silhouette, hand-occluded part included), occlusion (fraction of
    the mask covered by a hand), occluded, transparent, view. ``n_containers=0``: background only.
    Annotations are in drawing order (far to near); a container that cannot be placed without
    overlapping the others (after 60 tries at shrinking sizes) is left out. ``seed``: an int, a
    sequence of ints or a ``numpy.random.Generator``.
    """
    rng = _rng(seed)
    ids = list(containers) if containers is not None else list(CONTAINERS)
    bad = [c for c in ids if c not in CONTAINERS]
    if bad or not ids:
        raise ValueError(f"unknown container id(s) {bad}; choose from {', '.join(CONTAINERS)}")
    table_y = height * rng.uniform(0.25, 0.6) if rng.random() < 0.85 else None
    insts: list[_Instance] = []
    boxes: list[tuple[float, float, float, float]] = []
    for _ in range(int(n_containers)):
        spec = CONTAINERS[ids[int(rng.integers(len(ids)))]]
        base_h = height * rng.uniform(0.22, 0.5) * (spec.height_cm / 14.0) ** 0.5
        for attempt in range(60):
            inst = _make_instance(rng, spec, level, filling, view, None, hand_prob,
                                  base_h * (0.9 ** (attempt // 10)))
            inst.cx = rng.uniform(0.08, 0.92) * width
            ground = table_y if table_y is not None else height * 0.45
            inst.by = rng.uniform(ground + 0.05 * height, height * 0.97)
            if inst.hand:
                inst.by -= rng.uniform(0.0, 0.15) * height
            x0, y0, x1, y1 = inst.image_extent()
            if x0 < 2 or y0 < 2 or x1 > width - 2 or y1 > height - 2:
                continue
            pad = 0.02 * width
            if any(x0 - pad < b[2] and b[0] < x1 + pad and y0 - pad < b[3] and b[1] < y1 + pad for b in boxes):
                continue
            insts.append(inst)
            boxes.append((x0, y0, x1, y1))
            break
    return _render(rng, width, height, insts, table_y, height * 0.35)


def render_crop(seed, size: int | None, container: str | None = None, level: str | None = None,
                filling: str | None = None, view: int | None = None, hand: bool | None = None,
                hand_prob: float = HAND_PROB, box_jitter: float = 0.03,
                scale: tuple[float, float] = (0.7, 1.3)) -> tuple[torch.Tensor, dict]:
    """One container crop (3 x size x size uint8 tensor) and its annotations, made as the node does.

    A scene is rendered on a small canvas around the container; the crop is
    ``resize_uint8(crop_square(canvas, box, DEFAULT_MARGIN), size)`` where ``box`` is the
    container mask's box, each side moved by up to ``box_jitter`` x its size (segmenter noise).
    The square's side before the resize is ``size`` x U(``scale``) px (min 40). ``size=None``
    returns the square crop at that native side. ``level`` / ``filling`` / ``view`` / ``hand`` fix
    those choices; ``level`` is the fill level (empty / half / full): an opaque container is always
    labelled ``unknown`` and ``level`` then sets its hidden content (``unknown``: random).
    """
    rng = _rng(seed)
    if container is None:
        container = list(CONTAINERS)[int(rng.integers(len(CONTAINERS)))]
    if container not in CONTAINERS:
        raise ValueError(f"unknown container {container!r}; choose from {', '.join(CONTAINERS)}")
    spec = CONTAINERS[container]
    side = max(40.0, (size or 112) * rng.uniform(*scale))
    inst = _make_instance(rng, spec, level, filling, view, hand, hand_prob, 100.0)
    # scale the container so that its squared, enlarged box is ``side`` px
    x0, y0, x1, y1 = inst.image_extent()
    k = side / ((1.0 + 2.0 * DEFAULT_MARGIN) * max(x1 - x0, y1 - y0))
    inst.height *= k
    x0, y0, x1, y1 = inst.image_extent()
    W = H = int(math.ceil(side * (1.0 + 4.0 * box_jitter))) + 6  # the square crop and its jitter
    inst.cx = W / 2.0 - ((x0 + x1) / 2.0 - inst.cx)
    inst.by = H / 2.0 - ((y0 + y1) / 2.0 - inst.by)
    if rng.random() < 0.7:  # table edge behind the container (standing containers)
        table_y = inst.by - inst.height * rng.uniform(0.1, 0.9) * (0.3 if inst.hand else 1.0)
    else:
        table_y = None
    rgb, anns = _render(rng, W, H, [inst], table_y, inst.height)
    ann = anns[0]
    bx0, by0, bx1, by1 = ann["box"]
    if box_jitter > 0:
        j = rng.uniform(-box_jitter, box_jitter, 4) * np.array([bx1 - bx0, by1 - by0] * 2)
        box = (bx0 + j[0], by0 + j[1], bx1 + j[2], by1 + j[3])
        if not (box[2] > box[0] + 1 and box[3] > box[1] + 1):
            box = ann["box"]
    else:
        box = ann["box"]
    crop = crop_square(rgb, box, DEFAULT_MARGIN)
    t = resize_uint8(crop, size) if size else torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)
    meta = {k: v for k, v in ann.items() if k not in ("mask", "box")}
    meta["side"] = int(crop.shape[0])
    return t.contiguous(), meta


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


def _largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    w = np.asarray(weights, np.float64)
    raw = total * w / w.sum()
    out = np.floor(raw).astype(int)
    rest = total - int(out.sum())
    order = np.argsort(-(raw - out), kind="stable")
    out[order[:rest]] += 1
    return out.tolist()


def plan(n: int, seed: int = 0, containers: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """``n`` (container, level) pairs with C-CCM's proportions, shuffled by ``seed``.

    Container counts follow :data:`CCM_CONTAINER_COUNTS` (restricted to ``containers``), fill
    levels (empty / half / full) :data:`TRANSPARENT_LEVEL_P` for every container; the class of an
    opaque container's crop is ``unknown`` whatever its (hidden) fill level.
    """
    ids = list(containers) if containers is not None else list(CONTAINERS)
    bad = [c for c in ids if c not in CONTAINERS]
    if bad or not ids:
        raise ValueError(f"unknown container id(s) {bad}; choose from {', '.join(CONTAINERS)}")
    pairs: list[tuple[str, str]] = []
    for c, nc in zip(ids, _largest_remainder(n, [CCM_CONTAINER_COUNTS.get(c, 1) for c in ids])):
        for lvl, k in zip(TRANSPARENT_LEVEL_P, _largest_remainder(nc, list(TRANSPARENT_LEVEL_P.values()))):
            pairs += [(c, lvl)] * k
    order = np.random.default_rng([int(seed), 0x5EED]).permutation(len(pairs))
    return [pairs[i] for i in order]


def _render_chunk(args) -> tuple[np.ndarray, list[dict]]:
    seed, size, items, kw = args
    imgs = np.empty((len(items), 3, size, size), np.uint8)
    metas = []
    for j, (i, c, lvl) in enumerate(items):
        t, m = render_crop(np.random.default_rng([int(seed), int(i)]), size, container=c, level=lvl, **kw)
        imgs[j] = t.numpy()
        m["index"] = int(i)
        metas.append(m)
    return imgs, metas


def iter_crops(n: int, size: int | None, seed: int = 0, containers: Sequence[str] | None = None, **kw):
    """Yield ``(H x W x 3 uint8 crop, meta)`` of sample 0..n-1 of :func:`make_cropset` (same
    plan and per-sample seeds; ``size=None``: native side, not resized)."""
    for i, (c, lvl) in enumerate(plan(n, seed, containers)):
        t, m = render_crop(np.random.default_rng([int(seed), int(i)]), size, container=c, level=lvl, **kw)
        m["index"] = i
        yield t.permute(1, 2, 0).numpy(), m


def _init_worker() -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _bank()


def _pool_context():
    """``forkserver`` (a clean single-threaded parent: forking the caller, which may run torch /
    OpenMP / cv2 threads, can deadlock the children), else ``spawn``."""
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["training.data.procedural"])
        return ctx
    return mp.get_context("spawn")


def _cache_path(cache_dir: str, n: int, size: int, seed: int, containers, kw) -> str:
    key = json.dumps({"n": n, "size": size, "seed": seed, "containers": list(containers or []),
                      "kw": {k: kw[k] for k in sorted(kw)}, "version": GENERATOR_VERSION}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f"procedural_n{n}_s{size}_seed{seed}_{digest}.npz")


def _load_cache(path: str) -> CropSet | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return CropSet(torch.from_numpy(z["images"].copy()), torch.from_numpy(z["labels"].copy()),
                           [str(c) for c in z["containers"]], meta)
    except Exception:  # corrupt or stale file: regenerate
        return None


def _save_cache(path: str, cs: CropSet) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(tmp, images=cs.images.numpy(), labels=cs.labels.numpy(), containers=np.array(cs.containers),
             meta=np.array(json.dumps(cs.meta)))
    os.replace(tmp, path)


def make_cropset(n: int, size: int, seed: int = 0, containers: Sequence[str] | None = None,
                 workers: int | None = None, cache_dir: str | None = None, progress: bool = False,
                 **kw) -> CropSet:
    """``n`` procedural crops at ``size`` px with C-CCM's container and class proportions.

    Deterministic for ``seed`` (same bytes whatever ``workers``); ``containers`` restricts the
    container ids (proportions renormalised). ``workers``: processes (default: up to 2 for
    n >= 1000, env ``FILLCLS_DATA_WORKERS`` overrides; started with ``forkserver``, so a calling
    script needs the usual ``if __name__ == "__main__":`` guard). ``cache_dir``: read / write an ``.npz`` keyed
    by (n, size, seed, containers, kw, generator version). Extra ``kw`` go to :func:`render_crop`
    (``hand_prob``, ``box_jitter``, ``scale``). ``meta`` holds each crop's annotations.
    """
    n, size, seed = int(n), int(size), int(seed)
    if cache_dir:
        path = _cache_path(cache_dir, n, size, seed, containers, kw)
        if os.path.isfile(path):
            cs = _load_cache(path)
            if cs is not None and len(cs) == n:
                return cs
    pairs = plan(n, seed, containers)
    items = [(i, c, lvl) for i, (c, lvl) in enumerate(pairs)]
    if workers is None:
        env = os.environ.get("FILLCLS_DATA_WORKERS")
        workers = int(env) if env else (min(2, os.cpu_count() or 1) if n >= 1000 else 1)
    chunk = 64
    jobs = [(seed, size, items[k:k + chunk], kw) for k in range(0, n, chunk)]
    t0 = time.time()
    if workers > 1 and len(jobs) > 1:
        with _pool_context().Pool(workers, initializer=_init_worker) as pool:
            parts = []
            for k, part in enumerate(pool.imap(_render_chunk, jobs)):
                parts.append(part)
                if progress:
                    print(f"\r{min((k + 1) * chunk, n)}/{n} crops ({time.time() - t0:.0f} s)", end="", flush=True)
    else:
        parts = []
        for k, job in enumerate(jobs):
            parts.append(_render_chunk(job))
            if progress:
                print(f"\r{min((k + 1) * chunk, n)}/{n} crops ({time.time() - t0:.0f} s)", end="", flush=True)
    if progress:
        print()
    images = torch.from_numpy(np.concatenate([p[0] for p in parts])) if parts else \
        torch.empty((0, 3, size, size), dtype=torch.uint8)
    meta = [m for p in parts for m in p[1]]
    cs = CropSet(images, torch.tensor([m["label"] for m in meta], dtype=torch.int64),
                 [m["container"] for m in meta], meta)
    if cache_dir:
        _save_cache(path, cs)
    return cs


def write_frames(out_dir: str, n: int, seed: int = 0, width: int = 640, height: int = 480,
                 containers: Sequence[str] | None = None, n_containers: int = 1, **kw) -> str:
    """Write ``n`` frames (``frames/NNNNNN.png``), instance masks (``masks/NNNNNN.png``: 0 =
    background, k = annotation k) and ``frames.jsonl`` (one line per frame: image, mask,
    annotations without masks). Returns the path of ``frames.jsonl``."""
    os.makedirs(os.path.join(out_dir, "frames"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "masks"), exist_ok=True)
    path = os.path.join(out_dir, "frames.jsonl")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for i in range(int(n)):
            rgb, anns = render_frame(np.random.default_rng([int(seed), i]), width, height, containers,
                                     n_containers, **kw)
            ids = np.zeros((height, width), np.uint8)
            for k, a in enumerate(anns, start=1):
                ids[a["mask"]] = k
            img_rel, mask_rel = f"frames/{i:06d}.png", f"masks/{i:06d}.png"
            cv2.imwrite(os.path.join(out_dir, img_rel), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            cv2.imwrite(os.path.join(out_dir, mask_rel), ids)
            f.write(json.dumps({"image": img_rel, "mask": mask_rel,
                                "containers": [{k: v for k, v in a.items() if k != "mask"} for a in anns]}) + "\n")
    os.replace(path + ".tmp", path)
    return path


def contact_sheet(path: str | None = None, per_level: int = 3, tile: int = 112, seed: int = 0) -> np.ndarray:
    """Grid of crops: rows C1..C8, columns fill 0 / 50 / 90 % (``per_level`` each). Saved if ``path``."""
    ids = list(CONTAINERS)
    head_w, head_h, gap = 150, 22, 2
    cols = len(LEVEL_FRACTIONS) * per_level
    sheet = np.full((head_h + len(ids) * (tile + gap), head_w + cols * (tile + gap) + 8, 3), 255, np.uint8)
    for j, lvl in enumerate(LEVEL_FRACTIONS):
        x = head_w + j * per_level * (tile + gap) + 6
        cv2.putText(sheet, f"{lvl} ({int(100 * LEVEL_FRACTIONS[lvl])}%)", (x, 16),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for r, cid in enumerate(ids):
        spec = CONTAINERS[cid]
        y = head_h + r * (tile + gap)
        cv2.putText(sheet, cid, (6, y + tile // 2 - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(sheet, spec.name, (6, y + tile // 2 + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
        if not spec.transparent:
            cv2.putText(sheet, "(label unknown)", (6, y + tile // 2 + 26), cv2.FONT_HERSHEY_SIMPLEX, 0.37,
                        (90, 90, 90), 1, cv2.LINE_AA)
        for j, lvl in enumerate(LEVEL_FRACTIONS):
            for k in range(per_level):
                rng = np.random.default_rng([seed, r, j, k])
                fill = FILLINGS[k % len(FILLINGS)] if lvl != "empty" else None
                t, _ = render_crop(rng, tile, container=cid, level=lvl, filling=fill,
                                   hand=(k == per_level - 1) and (r + j) % 2 == 0)
                x = head_w + (j * per_level + k) * (tile + gap) + j * 4
                sheet[y:y + tile, x:x + tile] = t.permute(1, 2, 0).numpy()
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        cv2.imwrite(path, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return sheet
