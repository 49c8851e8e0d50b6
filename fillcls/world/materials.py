"""How a container's material looks: glass / clear plastic layers (tint, dark or bright edges,
highlights, rim, stem lines, ridges, frosting) over what is seen through it, and the shaded
opaque body of a cup (outer wall, printed band, inside wall, lip).

Every glass layer is an affine map ``colour -> colour * m + c`` per pixel; they are folded into
three maps (``GlassFold``) before touching the colour channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .contents import FillMaps, grains_through_glass, water_through_glass
from .geometry import ContainerMaps
from .raster import clip01, colour_sum, gauss, gray3


@dataclass
class GlassFold:
    """Glass layers folded: ``colour = inner * transmit + tint_weight * tint + gray``."""

    transmit: np.ndarray
    tint_weight: np.ndarray
    gray: np.ndarray


def glass_tint(maps: ContainerMaps) -> np.ndarray:
    """Tint opacity: stronger where the wall is seen at a grazing angle, in a thick base and in a
    solid stem (at most 0.9)."""
    inst, y = maps.frame.inst, maps.frame.y
    spec, u2 = inst.spec, maps.across_sq
    alpha = np.float32(spec.alpha * inst.look["tint_gain"]) * (0.7 + 2.2 * u2 * u2 * u2)
    if spec.base > 0.05:
        alpha += np.float32(0.35) * clip01((np.float32(inst.cavity_bottom) - y) * np.float32(0.5) + np.float32(0.5)) \
            * (y > inst.stem_height - 1)
    if maps.stem is not None:
        alpha = np.where(maps.stem.zone, np.float32(0.45), alpha)
    np.minimum(alpha, 0.9, out=alpha)
    return alpha


def glass_edges_and_highlights(maps: ContainerMaps) -> tuple[np.ndarray, np.ndarray]:
    """(edge line opacity near the silhouette, specular highlight strength), on the body only."""
    look, across = maps.frame.inst.look, maps.across
    edge = clip01((np.abs(across) - np.float32(0.82)) * np.float32(1 / 0.18))
    edge *= edge * np.float32(look["edge_a"]) * maps.in_body
    highlight = np.float32(look["spec"]) * (gauss(across, look["spec_u"], 0.09)
                                            + 0.5 * gauss(across, -0.78 * look["spec_u"], 0.05))
    highlight *= maps.in_body
    return edge, highlight


def glass_lines(maps: ContainerMaps) -> np.ndarray:
    """Opacity of the rim line, and of the foot outline and a bright line along a stem."""
    frame = maps.frame
    rim = maps.rim * np.float32(frame.inst.look["rim_a"])
    stem = maps.stem
    if stem is not None:
        line = clip01(np.float32(0.8) - frame.abs_x) * (stem.zone & (frame.y > 0))
        line[stem.foot_rows] += clip01(1.0 - np.abs(stem.foot_edge_sd))
        rim = np.maximum(rim, np.minimum(line, 1.0) * np.float32(0.45))
    return rim


def fold_glass(maps: ContainerMaps) -> GlassFold:
    """Fold tint, edge line, highlights and rim / stem lines into one affine map."""
    look = maps.frame.inst.look
    alpha = glass_tint(maps)
    edge, highlight = glass_edges_and_highlights(maps)
    lines = glass_lines(maps)
    transmit = (1.0 - alpha) * (1.0 - edge)
    transmit *= 1.0 - highlight
    tint_weight = alpha * transmit / np.maximum(1.0 - alpha, 1e-6)  # alpha * (1-edge)(1-highlight)
    gray = (edge * np.float32(look["edge_col"])) * (1.0 - highlight) + highlight * np.float32(255.0)
    transmit *= 1.0 - lines
    tint_weight *= 1.0 - lines
    gray = gray * (1.0 - lines) + lines * np.float32(look["rim_col"])
    return GlassFold(transmit, tint_weight, gray)


def ridge_factor(maps: ContainerMaps) -> np.ndarray | None:
    """Brightness modulation of the horizontal ridges of a plastic cup (None without ridges)."""
    inst = maps.frame.inst
    if not inst.spec.ridges > 0:
        return None
    period = max(2.5, inst.height / 14.0)
    return 1.0 + np.float32(inst.spec.ridges * 0.18) * np.sin(maps.frame.y * np.float32(2 * np.pi / period))


def shade_glass(maps: ContainerMaps, fill: FillMaps | None, grains: np.ndarray | None,
                background: np.ndarray) -> np.ndarray:
    """The box of a transparent container over ``background``: what is seen through it (blurred
    if frosted; water, grains or nothing), then the glass layers."""
    inst, coverage = maps.frame.inst, maps.coverage
    spec, look = inst.spec, inst.look
    seen_through = background
    if spec.frosted > 0:
        seen_through = cv2.GaussianBlur(background, (0, 0), max(0.3, spec.frosted * inst.radius * 0.06))
    ridges = ridge_factor(maps)
    fold = fold_glass(maps)
    glass_mc = fold.transmit * coverage
    if ridges is not None:
        glass_mc *= ridges
    gray = fold.gray
    if fill is None:
        out = background * gray3(1.0 - coverage)
        out += seen_through * gray3(glass_mc)
    elif inst.filling == "water":
        out, ambient = water_through_glass(maps, fill, background, seen_through, glass_mc)
        gray = gray + ambient * fold.transmit * (ridges if ridges is not None else 1.0)
    else:
        out = grains_through_glass(maps, fill, background, seen_through, grains, glass_mc)
    out += colour_sum(gray * coverage, (fold.tint_weight * coverage, look["tint"]))
    return out


def _opaque_colours(maps: ContainerMaps) -> tuple[np.ndarray, np.ndarray]:
    """(outer body colour, inside colour) of an opaque cup under this instance's hue and gain."""
    spec, look = maps.frame.inst.spec, maps.frame.inst.look
    body = np.minimum(np.asarray(spec.color, np.float32) * look["hue"] * np.float32(look["body_gain"]), 255)
    inside = np.asarray(spec.inner or spec.color, np.float32) * look["hue"] * np.float32(look["body_gain"])
    return body, inside


def _opaque_outer_wall(maps: ContainerMaps, k_wall: np.ndarray, body: np.ndarray) -> list:
    """Colour terms of the outer wall (and its printed band), weighted by ``k_wall``."""
    inst, y, coverage = maps.frame.inst, maps.frame.y, maps.coverage
    top, bottom = inst.height, inst.cavity_bottom
    terms = []
    if inst.spec.band is not None:
        relative_height = (y - np.float32(bottom)) * np.float32(1.0 / max(top - bottom, 1.0))
        band = clip01((relative_height - np.float32(0.45)) * np.float32(top * 0.5)) \
            * clip01((np.float32(0.68) - relative_height) * np.float32(top * 0.5))
        terms.append((k_wall * band * coverage, inst.spec.band))
        k_wall = k_wall * (1.0 - band)
    terms.append((k_wall * coverage, body))
    return terms


def shade_opaque(maps: ContainerMaps, fill: FillMaps | None, grains: np.ndarray | None,
                 background: np.ndarray) -> np.ndarray:
    """The box of an opaque cup over ``background``: shaded outer wall with a highlight, the inside
    wall through the rim opening (and the content's top if it shows there), the lip."""
    inst, y, coverage = maps.frame.inst, maps.frame.y, maps.coverage
    look, across = inst.look, maps.across
    light_x = np.float32(look["light_x"])
    body, inside = _opaque_colours(maps)
    shade = np.float32(0.42) + np.float32(0.48) * np.clip(maps.facing + np.float32(0.55) * light_x * across, 0, 1.3)
    highlight = np.float32(look["spec"] * 0.8) * gauss(across, look["spec_u"], 0.12) * (y <= np.float32(inst.height))
    opening = np.zeros_like(coverage)  # rim opening: inner wall (and the content if it shows)
    opening[maps.top_rows] = clip01(maps.opening_sd + np.float32(0.5))
    lip = maps.rim * np.float32(0.85)
    k_outer = (1.0 - highlight) * (1.0 - opening) * (1.0 - lip)
    out = background * gray3(1.0 - coverage)
    terms = _opaque_outer_wall(maps, shade * k_outer, body)
    gray = (highlight * np.float32(255.0)) * (1.0 - opening) * (1.0 - lip)
    inside_light = np.float32(0.55) + np.float32(0.35) * clip01(
        np.float32(0.5) - np.float32(0.5) * light_x * across
        + (y - np.float32(inst.height)) * np.float32(0.3 / max(inst.tilt * inst.rim_radius, 1.0)))
    k_inside = inside_light * opening * (1.0 - lip)
    if fill is not None:
        visible = fill.surface * opening * (1.0 - lip)
        if grains is not None:
            out += grains * gray3(visible * coverage * np.float32(look["content_gain"]))
            k_inside = k_inside * (1.0 - fill.surface)
        else:
            gray += visible * np.float32(0.6 * 0.8 * look["ambient"])
            k_inside = k_inside * (1.0 - np.float32(0.6) * fill.surface)
    terms += [(k_inside * coverage, inside), (lip * coverage, np.minimum(body * 1.2 + 20, 255))]
    out += colour_sum(gray * coverage, *terms)
    return out
