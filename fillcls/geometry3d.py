"""A container's 3-D centre and size in the camera frame from its mask, a depth image and the
camera intrinsics (ROS-free, torch-free).

Depth through clear glass is unreliable: a depth camera mostly sees *through* it (the table or
the wall behind), keeping only the rim, the edges and opaque contents. :func:`locate` therefore
never averages the depth inside a mask; it uses, in this order:

1. the **table plane** (:func:`fit_plane`: RANSAC + least squares on the depth *outside* every
   container mask, the plane must face the camera's up side, i.e. the camera is within ~60 deg of
   upright) to tell see-through pixels (depth on the plane or beyond the object) from the
   container's own **surface pixels** (rim, opaque wall, opaque contents, a hand);
2. **opaque** (at least half the mask is surface): the surface points, pushed back by the mean
   depth of a half cylinder (pi/4 of the radius) to the axis; height = their extent along the
   plane's normal;
3. **table** (standing clear glass): the ray through the mask's bottom centre meets the table at
   the front of the base; the base centre is one base radius further; the height is where the ray
   through the mask's top meets the axis (back of the rim). Used unless the rim says the glass is
   elsewhere (lifted, held);
4. **rim** (a lifted clear glass): the centre of the rim's surface points (front and back lips);
   the height from the ray through the mask's bottom.

Widths are the mask's width (2nd-98th percentile of its columns) at the estimated depth.
Camera frame: x right, y down, z forward (ROS optical frame), metres; depth 0 / NaN = no reading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

MIN_SURFACE_PIXELS = 15


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics (pixels)."""

    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_k(cls, k: Sequence[float]) -> Intrinsics:
        """From a row-major 3 x 3 matrix (``sensor_msgs/CameraInfo.k``); ValueError if unusable."""
        if len(k) != 9 or not all(math.isfinite(float(v)) for v in k) or not (k[0] > 0 and k[4] > 0):
            raise ValueError(f"camera matrix k must be 9 finite numbers with fx, fy > 0, got {list(k)!r}")
        return cls(float(k[0]), float(k[4]), float(k[2]), float(k[5]))

    def rays(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Rays (N x 3, z = 1) through pixel centres."""
        return np.stack([(cols - self.cx) / self.fx, (rows - self.cy) / self.fy, np.ones(len(rows))], axis=1)


@dataclass(frozen=True)
class Object3D:
    """A container in the camera frame: ``centre`` (its axis at mid-height, m), ``diameter`` and
    ``height`` (m), ``up`` (unit axis direction), ``method`` (``opaque``, ``table`` or ``rim``) and
    ``surface_fraction`` (fraction of its mask with a depth of its own)."""

    centre: tuple[float, float, float]
    diameter: float
    height: float
    up: tuple[float, float, float]
    method: str
    surface_fraction: float


def _valid(depth: np.ndarray) -> np.ndarray:
    return np.isfinite(depth) & (depth > 0)


def fit_plane(depth: np.ndarray, intrinsics: Intrinsics, exclude: np.ndarray | None = None, threshold: float = 0.01,
              iterations: int = 200, max_points: int = 5000, seed: int = 0) -> tuple[np.ndarray, float] | None:
    """The dominant upward-facing plane (the table) as ``(n, d)`` with ``n . p + d = 0``, ``n`` the
    unit normal towards the camera's side (``d > 0``); None when fewer than 50 points or no plane
    faces up. ``exclude``: bool mask of pixels not to use (the containers). Deterministic (``seed``)."""
    depth = np.asarray(depth, np.float32)
    ok = _valid(depth) if exclude is None else _valid(depth) & ~exclude
    rows, cols = np.nonzero(ok)
    if len(rows) < 50:
        return None
    rng = np.random.default_rng(seed)
    if len(rows) > max_points:
        pick = rng.choice(len(rows), max_points, replace=False)
        rows, cols = rows[pick], cols[pick]
    pts = intrinsics.rays(rows, cols) * depth[rows, cols][:, None]
    best, best_count = None, 0
    for _ in range(iterations):
        a, b, c = pts[rng.choice(len(pts), 3, replace=False)]
        n = np.cross(b - a, c - a)
        norm = np.linalg.norm(n)
        if norm < 1e-12:
            continue
        n /= norm
        if n[1] > 0:
            n = -n
        if -n[1] < 0.5:  # not facing up (a wall, the camera is about upright)
            continue
        count = int((np.abs(pts @ n - n @ a) < threshold).sum())
        if count > best_count:
            best, best_count = (n, -float(n @ a)), count
    if best is None:
        return None
    inliers = pts[np.abs(pts @ best[0] + best[1]) < threshold]
    centroid = inliers.mean(axis=0)
    n = np.linalg.svd(inliers - centroid, full_matrices=False)[2][2]
    d = -float(n @ centroid)
    return (n, d) if d > 0 else (-n, -d)


def _closest_on_line(a: np.ndarray, up: np.ndarray, ray: np.ndarray) -> float:
    """``s`` such that ``a + s * up`` is closest to the line through the origin along ``ray``."""
    r = ray / np.linalg.norm(ray)
    b = float(up @ r)
    denom = 1.0 - b * b
    if denom < 1e-9:
        return 0.0
    return float((b * (a @ r) - a @ up) / denom)


def _horizontal(v: np.ndarray, up: np.ndarray) -> np.ndarray:
    """``v`` without its ``up`` part, normalised."""
    h = v - (v @ up) * up
    return h / max(np.linalg.norm(h), 1e-12)


def _surface(depth: np.ndarray, intrinsics: Intrinsics, rows: np.ndarray, cols: np.ndarray,
             plane: tuple[np.ndarray, float] | None) -> np.ndarray:
    """Bool per mask pixel: a depth of the container's own (not the plane, not far behind it)."""
    z = depth[rows, cols].astype(np.float64)
    own = _valid(z)
    if plane is not None:
        n, d = plane
        with np.errstate(divide="ignore", invalid="ignore"):
            z_plane = -d / (intrinsics.rays(rows, cols) @ n)
        on_plane = np.isfinite(z_plane) & (z_plane > 0) & (np.abs(z - z_plane) < 0.012 + 0.01 * z_plane)
        own &= ~on_plane
    if own.sum() < MIN_SURFACE_PIXELS:
        return np.zeros_like(own)
    near = np.quantile(z[own], 0.05)
    return own & (z < near + 0.25)  # one object: the wall behind a glass is farther


def _width_at(rows: np.ndarray, cols: np.ndarray, z: float, intrinsics: Intrinsics) -> float:
    """Width (m) at depth ``z`` of the mask's widest rows (90th percentile of the row widths)."""
    order = np.argsort(rows, kind="stable")
    r, c = rows[order], cols[order]
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    widths = np.maximum.reduceat(c, starts) - np.minimum.reduceat(c, starts) + 1
    return float(np.quantile(widths, 0.9)) * z / intrinsics.fx


def _row_ray(rows: np.ndarray, cols: np.ndarray, row: int, intrinsics: Intrinsics, edge: float) -> np.ndarray:
    """The ray through the middle of mask row ``row`` at its outer pixel edge (``edge`` = +-0.5)."""
    return intrinsics.rays(np.array([row + edge]), np.array([float(np.median(cols[rows == row]))]))[0]


def _extent(axis: np.ndarray, diameter: float, rows, cols, intrinsics: Intrinsics, up: np.ndarray) -> tuple:
    """(centre, height) of a container whose axis passes through ``axis``: its bottom is where the
    ray through the mask's bottom meets the front of the base, its top where the ray through the
    mask's top meets the back of the rim."""
    view = _horizontal(axis, up)
    bottom = _closest_on_line(axis - diameter / 2 * view, up, _row_ray(rows, cols, rows.max(), intrinsics, 0.5))
    top = _closest_on_line(axis + diameter / 2 * view, up, _row_ray(rows, cols, rows.min(), intrinsics, -0.5))
    return axis + (top + bottom) / 2 * up, top - bottom


def _table_axis(rows, cols, intrinsics: Intrinsics, plane, up: np.ndarray) -> tuple | None:
    """(base centre, diameter) of a container standing on ``plane`` (None if its bottom ray misses)."""
    n, d = plane
    ray = _row_ray(rows, cols, rows.max(), intrinsics, 0.5)
    if ray @ n >= -1e-6:
        return None
    front = ray * (-d / float(ray @ n))
    low = rows >= rows.max() - max(2, 0.05 * (rows.max() - rows.min()))
    base = front + _width_at(rows[low], cols[low], float(front[2]), intrinsics) / 2 * _horizontal(front, up)
    return base, _width_at(rows, cols, float(base[2]), intrinsics)


def _surface_axis(rows, cols, own: np.ndarray, pts: np.ndarray, intrinsics: Intrinsics, up: np.ndarray) -> tuple | None:
    """(axis point, diameter) from the surface points: an opaque front pushed back by pi/4 of the
    radius, else the centre of the rim's points (the top quarter of the mask); None if too few."""
    if own.mean() >= 0.5:
        diameter = _width_at(rows, cols, float(np.median(pts[:, 2])), intrinsics)
        for _ in range(2):
            axis = pts.mean(axis=0) + (math.pi / 4) * (diameter / 2) * _horizontal(pts.mean(axis=0), up)
            diameter = _width_at(rows, cols, float(axis[2]), intrinsics)
        return axis, diameter
    rim = pts[rows[own] <= rows.min() + 0.25 * (rows.max() - rows.min())]
    if len(rim) < MIN_SURFACE_PIXELS:
        return None
    axis = rim.mean(axis=0)
    return axis, _width_at(rows, cols, float(axis[2]), intrinsics)


def locate(mask: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics,
           plane: tuple[np.ndarray, float] | None = None) -> Object3D | None:
    """The 3-D centre and size of the container of ``mask`` (H x W bool) from ``depth`` (H x W,
    metres) and ``intrinsics``; ``plane`` from :func:`fit_plane` (with every mask excluded) when a
    table is in view. None when the mask is empty or nothing usable is in the depth. ValueError
    when the shapes differ."""
    mask, depth = np.asarray(mask, bool), np.asarray(depth, np.float32)
    if mask.shape != depth.shape:
        raise ValueError(f"mask {mask.shape} and depth {depth.shape} must have the same shape")
    rows, cols = np.nonzero(mask)
    if len(rows) < 10:
        return None
    up = plane[0] if plane is not None else np.array([0.0, -1.0, 0.0])
    own = _surface(depth, intrinsics, rows, cols, plane)
    pts = intrinsics.rays(rows[own], cols[own]) * depth[rows[own], cols[own]][:, None].astype(np.float64)
    table = _table_axis(rows, cols, intrinsics, plane, up) if plane is not None else None
    surface = _surface_axis(rows, cols, own, pts, intrinsics, up) if len(pts) else None
    method = "opaque" if own.mean() >= 0.5 else "rim"
    if table is not None and surface is not None:
        offset = surface[0] - table[0]
        if np.linalg.norm(offset - (offset @ up) * up) <= 0.025 + 0.1 * table[1]:
            surface = None  # the surface stands above that base: trust the table
    if surface is None and table is not None:
        surface, method = table, "table"
    if surface is None:
        return None
    centre, height = _extent(surface[0], surface[1], rows, cols, intrinsics, up)
    return Object3D(tuple(float(v) for v in centre), float(surface[1]), float(height), tuple(float(v) for v in up),
                    method, float(own.mean()))


def depth_to_metres(msg) -> np.ndarray:
    """A depth ``sensor_msgs/Image`` (fields encoding, width, height, step, is_bigendian, data) as an
    H x W float32 array in metres, NaN where there is no reading: ``16UC1`` / ``mono16`` in
    millimetres (0 = none), ``32FC1`` in metres (0, NaN, inf = none). ValueError naming the problem
    for another encoding, a short step or truncated data."""
    encoding, w, h, step = str(msg.encoding), int(msg.width), int(msg.height), int(msg.step)
    kinds = {"16UC1": (np.uint16, 0.001), "mono16": (np.uint16, 0.001), "32FC1": (np.float32, 1.0)}
    if encoding not in kinds:
        raise ValueError(f"depth encoding {encoding!r} not supported (16UC1 / mono16 in mm, 32FC1 in m)")
    dtype, scale = kinds[encoding]
    dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    if w <= 0 or h <= 0 or step < w * dtype.itemsize:
        raise ValueError(f"depth image {w}x{h} with step {step} is not a {encoding} image")
    data = np.frombuffer(bytes(msg.data), np.uint8)
    if data.size < step * h:
        raise ValueError(f"depth image has {data.size} bytes, {step * h} expected")
    rows = data[: step * h].reshape(h, step)[:, : w * dtype.itemsize]
    depth = np.ascontiguousarray(rows).view(dtype).reshape(h, w).astype(np.float32) * np.float32(scale)
    depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
    return depth
