"""Where one container is in the image, pixel by pixel: its local coordinates over its bounding
box, its silhouette (body, stem, foot), its rim and the direction its wall faces.

All maps are float32 arrays over the container's bounding box; signed distances are in pixels,
positive inside; a coverage is a signed distance + 0.5 clipped to [0, 1] (>= 0.5: in the mask).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .instances import Instance
from .raster import clip01, ellipse_sd


@dataclass
class ContainerFrame:
    """The bounding box ``[y0:y1, x0:x1]`` of one container and its local coordinates there.

    ``x``: across from the container's axis, ``y``: up from its bottom (px, float32 maps, after
    the roll); ``abs_x = |x|``.
    """

    inst: Instance
    x0: int
    y0: int
    x1: int
    y1: int
    cos_roll: float
    sin_roll: float
    x: np.ndarray
    y: np.ndarray
    abs_x: np.ndarray

    @classmethod
    def around(cls, inst: Instance, image_h: int, image_w: int) -> ContainerFrame | None:
        """The frame of ``inst`` clipped to the image; None when it is outside the image."""
        ex0, ey0, ex1, ey1 = inst.image_extent()
        x0, y0 = max(int(math.floor(ex0)) - 1, 0), max(int(math.floor(ey0)) - 1, 0)
        x1, y1 = min(int(math.ceil(ex1)) + 2, image_w), min(int(math.ceil(ey1)) + 2, image_h)
        if x1 <= x0 or y1 <= y0:
            return None
        cos_roll, sin_roll = math.cos(inst.angle), math.sin(inst.angle)
        px = np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - inst.cx)
        py = np.float32(inst.by - 0.5) - np.arange(y0, y1, dtype=np.float32)
        x = px[None, :] * np.float32(cos_roll) + py[:, None] * np.float32(sin_roll)
        y = py[:, None] * np.float32(cos_roll) - px[None, :] * np.float32(sin_roll)
        return cls(inst, x0, y0, x1, y1, cos_roll, sin_roll, x, y, np.abs(x))

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def rows(self, centre: float, half_height: float, half_width: float) -> slice:
        """Rows of the box where an ellipse centred at local height ``centre`` may be."""
        base_y, cos_roll, abs_sin = self.inst.by, self.cos_roll, abs(self.sin_roll)
        lo = base_y - (centre + half_height + 2.0) * cos_roll - half_width * abs_sin - 2.0
        hi = base_y - (centre - half_height - 2.0) * cos_roll + half_width * abs_sin + 2.0
        n = self.height
        return slice(min(max(int(lo) - self.y0, 0), n), min(max(int(math.ceil(hi)) - self.y0, 0), n))

    def ellipse_sd(self, centre: float, half_width: float, half_height: float, rows: slice) -> np.ndarray:
        """Signed distance to the horizontal circle at height ``centre`` (an ellipse) on ``rows``."""
        return ellipse_sd(self.x[rows], self.y[rows] - np.float32(centre), half_width, half_height)


@dataclass
class StemMaps:
    """The stem and foot of a stemmed glass: ``zone`` (bool: below the body), the foot's rows and
    the signed distance to the foot's front edge there."""

    zone: np.ndarray
    foot_rows: slice
    foot_edge_sd: np.ndarray


@dataclass
class ContainerMaps:
    """Per-pixel maps of one container over its frame (see the module docstring).

    ``inner_radius`` / ``outer_radius``: cavity / outer wall radius at each pixel's height;
    ``across``: x over the outer radius, in [-1, 1]; ``facing``: how much the wall faces the
    camera (``sqrt(1 - across^2)``); ``in_body``: between the body's bottom and the rim;
    ``opening_sd`` (on ``top_rows``): signed distance to the rim opening; ``rim``: the rim line.
    """

    frame: ContainerFrame
    coverage: np.ndarray
    inner_radius: np.ndarray
    outer_radius: np.ndarray
    stem: StemMaps | None
    top_rows: slice
    opening_sd: np.ndarray
    rim: np.ndarray
    across: np.ndarray
    across_sq: np.ndarray
    facing: np.ndarray
    in_body: np.ndarray


def wall_radii(frame: ContainerFrame) -> tuple[np.ndarray, np.ndarray]:
    """(inner, outer) radius of the wall at each pixel's height (from the cavity profile)."""
    inst = frame.inst
    bottom, top = inst.cavity_bottom, inst.height
    relative_height = (frame.y - np.float32(bottom)) * np.float32(1.0 / max(top - bottom, 1e-3))
    inner = inst.spec.profile.radius_lut(relative_height)
    inner *= np.float32(inst.radius)
    return inner, inner + np.float32(inst.wall)


def top_rows(frame: ContainerFrame) -> slice:
    """Rows of the outer rim ellipse."""
    inst = frame.inst
    outer_rim = inst.rim_radius + inst.wall
    return frame.rows(inst.height, inst.tilt * outer_rim, outer_rim)


def body_sd(frame: ContainerFrame, outer_radius: np.ndarray) -> np.ndarray:
    """Signed distance to the body: the wall between the stem top and the rim, rounded by the
    rim ellipse above and the bottom ellipse below."""
    inst, y = frame.inst, frame.y
    top, stem_top, tilt, wall = inst.height, inst.stem_height, inst.tilt, inst.wall
    sd = np.minimum(np.minimum(outer_radius - frame.abs_x, y - np.float32(stem_top)), np.float32(top) - y)
    rim_rows = top_rows(frame)
    outer_rim = inst.rim_radius + wall
    np.maximum(sd[rim_rows], frame.ellipse_sd(top, outer_rim, tilt * outer_rim, rim_rows), out=sd[rim_rows])
    outer_bottom = inst.bottom_radius + wall
    rows = frame.rows(stem_top, tilt * outer_bottom, outer_bottom)
    np.maximum(sd[rows], frame.ellipse_sd(stem_top, outer_bottom, tilt * outer_bottom, rows), out=sd[rows])
    return sd


def add_stem_and_foot(frame: ContainerFrame, sd: np.ndarray) -> StemMaps:
    """Add a stem (flared at its foot) and a foot disc to the signed distance ``sd`` (in place)."""
    inst, y, abs_x = frame.inst, frame.y, frame.abs_x
    stem_top, tilt = inst.stem_height, inst.tilt
    stem_radius = inst.stem_radius
    foot_radius = inst.spec.foot * inst.radius
    foot_thickness = max(1.0, 0.02 * inst.height)
    flare = np.float32(stem_radius) + np.float32(0.6 * stem_radius) * clip01(
        1.0 - y * np.float32(1.0 / (0.2 * stem_top + 1e-3)))
    sd_stem = np.minimum(np.minimum(flare - abs_x, y), np.float32(stem_top + 1.0) - y)
    joint_half_height = max(1.0, 1.5 * stem_radius)
    rows = frame.rows(stem_top, joint_half_height, 2.2 * stem_radius)
    np.maximum(sd_stem[rows], frame.ellipse_sd(stem_top, 2.2 * stem_radius, joint_half_height, rows),
               out=sd_stem[rows])
    foot_rows = frame.rows(foot_thickness * 0.5, tilt * foot_radius + foot_thickness, foot_radius)
    foot_edge_sd = frame.ellipse_sd(0.0, foot_radius, tilt * foot_radius, foot_rows)
    foot = sd_stem[foot_rows]
    np.maximum(foot, foot_edge_sd, out=foot)
    np.maximum(foot, frame.ellipse_sd(foot_thickness, foot_radius, tilt * foot_radius, foot_rows), out=foot)
    np.maximum(foot, np.minimum(np.minimum(np.float32(foot_radius) - abs_x[foot_rows], y[foot_rows]),
                                np.float32(foot_thickness) - y[foot_rows]), out=foot)
    np.maximum(sd, sd_stem, out=sd)
    return StemMaps(y < np.float32(stem_top), foot_rows, foot_edge_sd)


def container_maps(inst: Instance, image_h: int, image_w: int) -> ContainerMaps | None:
    """All the maps of ``inst``; None when no pixel of it is in the image."""
    frame = ContainerFrame.around(inst, image_h, image_w)
    if frame is None:
        return None
    inner_radius, outer_radius = wall_radii(frame)
    sd = body_sd(frame, outer_radius)
    stem = add_stem_and_foot(frame, sd) if inst.spec.stemmed else None
    coverage = clip01(sd + np.float32(0.5))
    if not (coverage >= 0.5).any():
        return None
    rim_rows = top_rows(frame)
    rim_radius = inst.rim_radius
    opening_sd = frame.ellipse_sd(inst.height, rim_radius, inst.tilt * rim_radius, rim_rows)
    rim = np.zeros_like(coverage)
    rim[rim_rows] = clip01(np.float32(max(0.8, inst.wall) * 0.5 + 0.5) - np.abs(opening_sd))
    across = frame.x / np.maximum(outer_radius, np.float32(0.5))
    np.clip(across, -1.0, 1.0, out=across)
    across_sq = across * across
    facing = np.sqrt(1.0 - across_sq)
    in_body = (frame.y >= np.float32(inst.stem_height)) & (frame.y <= np.float32(inst.height))
    return ContainerMaps(frame, coverage, inner_radius, outer_radius, stem, rim_rows, opening_sd, rim,
                         across, across_sq, facing, in_body)
