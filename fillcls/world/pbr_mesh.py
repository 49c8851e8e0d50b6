"""Lathe meshes of the 8 CCM containers for the physically based renderer (:mod:`.pbr`).

Everything in centimetres, ``y`` up, the container's axis on ``y`` with its base at ``y = 0``.
A container's dimensions come from its :class:`~fillcls.world.render.ContainerSpec` (real height,
cavity aspect, stem, foot, solid base) and its cavity profile ``r(h)``; the wall has a real
thickness (outer and inner surfaces of one closed solid). Numpy only: :func:`lathe` returns vertex,
face and texture-coordinate arrays that :mod:`.pbr_scene` turns into Mitsuba meshes. Profiles are
closed counter-clockwise in the ``(r, y)`` half-plane (the solid on the left of the walking
direction), so that the revolved faces' normals point out of the solid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .render import ContainerSpec

#: Wall thickness (cm) by material; the green tumbler (C4) is thick glass.
WALL_CM = {"glass": 0.22, "plastic": 0.09, "paper": 0.06}
THICK_GLASS = {"C4": 0.32}
STEM_RADIUS_CM = 0.35
FOOT_THICKNESS_CM = 0.3


@dataclass(frozen=True)
class Dims:
    """Sizes (cm) of one container: total height, cavity height and largest inner radius, the
    height of the cavity bottom (stem + solid base), wall, stem radius, foot radius."""

    height: float
    cavity_h: float
    radius: float
    cavity_bottom: float
    wall: float
    stem_h: float
    stem_r: float
    foot_r: float

    def inner(self, spec: ContainerSpec, y: np.ndarray) -> np.ndarray:
        """Inner radius at heights ``y`` (cm) of the cavity."""
        return self.radius * spec.profile((np.asarray(y) - self.cavity_bottom) / self.cavity_h)


def dims(spec: ContainerSpec) -> Dims:
    """The real sizes of ``spec`` (see :class:`Dims`)."""
    cavity_h = spec.height_cm / (1.0 + spec.stem + spec.base)
    radius = cavity_h / (2.0 * spec.aspect)
    wall = THICK_GLASS.get(spec.id, WALL_CM.get(spec.material, 0.15))
    return Dims(spec.height_cm, cavity_h, radius, (spec.stem + spec.base) * cavity_h, wall,
                spec.stem * cavity_h, STEM_RADIUS_CM, spec.foot * radius)


def fill_level_y(spec: ContainerSpec, fraction: float) -> float:
    """Height (cm) of the content's surface for a volume ``fraction`` (``Profile.fill_height``)."""
    d = dims(spec)
    return d.cavity_bottom + float(spec.profile.fill_height(fraction)) * d.cavity_h


def _cavity_heights(d: Dims, lo: float, hi: float, n: int = 28) -> np.ndarray:
    """Heights (cm) from ``lo`` to ``hi`` inside the cavity, denser near the bottom (curved bowls)."""
    t = np.linspace(0.0, 1.0, n) ** 1.4
    return lo + (hi - lo) * t


def body_profile(spec: ContainerSpec, wet_y: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The container's solid (wall, base, stem, foot) as a counter-clockwise ``(r, y)`` polyline
    from the axis at the bottom, up the outside, over a rounded rim, down the inside to the axis
    at the cavity bottom. With ``wet_y`` (a liquid surface), returns ``(dry, wet)``: the part above
    the surface and the inner part below it (a glass/liquid interface); else ``(all, empty)``."""
    d = dims(spec)
    top = d.height
    ys = _cavity_heights(d, d.cavity_bottom, top)
    outer = np.stack([d.inner(spec, ys) + d.wall, ys], 1)
    pts = [(1e-4, 0.0)]
    if spec.stemmed:
        pts += [(d.foot_r, 0.0), (d.foot_r, FOOT_THICKNESS_CM * 0.6), (d.foot_r * 0.85, FOOT_THICKNESS_CM),
                (d.stem_r * 1.6, FOOT_THICKNESS_CM * 1.6), (d.stem_r, FOOT_THICKNESS_CM * 3),
                (d.stem_r, max(d.stem_h - 0.4, FOOT_THICKNESS_CM * 3.2))]
        pts += [(max(d.stem_r * 1.5, 0.5 * outer[0, 0]), d.stem_h + 0.4 * (d.cavity_bottom - d.stem_h))]
    else:
        pts += [(outer[0, 0] - 0.2 * d.wall, 0.0), (outer[0, 0], 0.2 * d.wall)]
    pts += [tuple(p) for p in outer]
    half = d.wall / 2.0
    rim_c = d.inner(spec, top) + half
    for a in np.linspace(0.0, math.pi, 7)[1:-1]:  # rounded rim
        pts.append((rim_c + half * math.cos(a), top + half * math.sin(a)))
    inner_ys = ys[::-1]
    inner = [(float(d.inner(spec, y)), float(y)) for y in inner_ys] + [(1e-4, d.cavity_bottom)]
    if wet_y is None:
        return np.array(pts + inner), np.zeros((0, 2))
    wet_y = float(np.clip(wet_y, d.cavity_bottom + 1e-3, top - 1e-3))
    dry = [p for p in inner if p[1] > wet_y] + [(float(d.inner(spec, wet_y)), wet_y)]
    wet = [(float(d.inner(spec, wet_y)), wet_y)] + [p for p in inner if p[1] < wet_y]
    return np.array(pts + dry), np.array(wet)


def content_profile(spec: ContainerSpec, level_y: float, inset: float = 0.0) -> np.ndarray:
    """The content (liquid or grains) filling the cavity up to ``level_y``: a counter-clockwise
    polyline from the axis at the cavity bottom, up the inner wall (``inset`` cm inside it) to the
    surface and back to the axis. A liquid uses ``inset = 0`` and only its top (the last segment)."""
    d = dims(spec)
    level_y = float(np.clip(level_y, d.cavity_bottom + 1e-3, d.height - 1e-3))
    ys = _cavity_heights(d, d.cavity_bottom + inset, level_y, 16)
    side = [(max(float(d.inner(spec, y)) - inset, 1e-3), float(y)) for y in ys]
    return np.array([(1e-4, d.cavity_bottom + inset)] + side + [(1e-4, level_y)])


def lathe(profile: np.ndarray, segments: int = 64, uv: str = "cylinder", uv_scale: float = 4.0):
    """Revolve a ``(r, y)`` polyline around ``y``: ``(vertices (N, 3), faces (F, 3) uint32,
    texcoords (N, 2))``. ``uv``: ``cylinder`` (u around, v along the polyline's length, both in
    units of ``uv_scale`` cm) or ``planar`` (``x / uv_scale, z / uv_scale``, for tops). The seam
    column is duplicated so that textures do not wrap backwards."""
    profile = np.asarray(profile, np.float64)
    m, n = len(profile), segments
    theta = np.linspace(0.0, 2.0 * math.pi, n + 1)
    r, y = profile[:, 0:1], profile[:, 1:2]
    verts = np.stack([r * np.cos(theta), np.broadcast_to(y, (m, n + 1)), r * np.sin(theta)], -1).reshape(-1, 3)
    if uv == "planar":
        tex = verts[:, [0, 2]] / uv_scale
    else:
        length = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(profile, axis=0).T))])
        circumference = 2.0 * math.pi * max(float(profile[:, 0].max()), 1e-3)
        tex = np.stack(np.meshgrid(theta / (2 * math.pi) * circumference / uv_scale, length / uv_scale), -1)
        tex = tex.reshape(-1, 2)
    i, j = np.meshgrid(np.arange(m - 1), np.arange(n), indexing="ij")
    a, b = i * (n + 1) + j, i * (n + 1) + j + 1
    c, e = a + (n + 1), b + (n + 1)
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([b, e, c], -1).reshape(-1, 3)])
    return verts.astype(np.float32), _orient(verts, faces, profile).astype(np.uint32), tex.astype(np.float32)


def _orient(verts: np.ndarray, faces: np.ndarray, profile: np.ndarray) -> np.ndarray:
    """``faces`` wound so that their normals point to the right of the polyline's direction in
    ``(r, y)`` (out of a counter-clockwise solid); checked on the longest segment."""
    seg = int(np.argmax(np.hypot(*np.diff(profile, axis=0).T)))
    segments = len(verts) // len(profile) - 1
    p = verts[faces[seg * segments]]  # the segment's first triangle (theta ~ 0, where r ~ x)
    normal = np.cross(p[1] - p[0], p[2] - p[0])
    dr, dy = profile[seg + 1] - profile[seg]
    return faces if float(normal[0] * dy - normal[1] * dr) >= 0 else faces[:, ::-1]
