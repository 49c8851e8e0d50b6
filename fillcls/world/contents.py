"""What is inside a container: the fill (liquid or grains) up to the height that holds its volume
fraction, the pasta / rice texture, and how water and grains look through the glass or inside
the rim of an opaque cup."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .geometry import ContainerFrame, ContainerMaps
from .instances import Instance
from .raster import clip01, colour_sum, gray3
from .textures import bank, patch

#: Resolution of the pasta / rice textures of the bank.
GRAIN_PX_PER_CM = 24.0


@dataclass
class FillMaps:
    """The content of a container: ``coverage`` (of the filled volume), ``surface`` (coverage of
    the top surface ellipse) and, on ``surface_rows``, the signed distance to that ellipse."""

    coverage: np.ndarray
    surface: np.ndarray
    surface_sd: np.ndarray
    surface_rows: slice


def fill_maps(frame: ContainerFrame, inner_radius: np.ndarray) -> FillMaps | None:
    """The fill of ``frame.inst`` (None when it is empty): the cavity below the fill height, whose
    top is the surface ellipse and whose bottom is the cavity's bottom ellipse."""
    inst = frame.inst
    fraction = inst.fraction if inst.filling != "none" else 0.0
    if not fraction > 0:
        return None
    profile, tilt, radius = inst.spec.profile, inst.tilt, inst.radius
    bottom, top = inst.cavity_bottom, inst.height
    relative_fill = float(profile.fill_height(fraction))
    surface_y = bottom + relative_fill * (top - bottom)
    surface_radius = radius * float(profile(relative_fill))
    surface_rows = frame.rows(surface_y, tilt * surface_radius, surface_radius)
    surface_sd = frame.ellipse_sd(surface_y, surface_radius, tilt * surface_radius, surface_rows)
    y = frame.y
    sd = np.minimum(np.minimum(inner_radius - frame.abs_x, y - np.float32(bottom)), np.float32(surface_y) - y)
    np.maximum(sd[surface_rows], surface_sd, out=sd[surface_rows])
    bottom_radius = inst.bottom_radius
    rows = frame.rows(bottom, tilt * bottom_radius, bottom_radius)
    np.maximum(sd[rows], frame.ellipse_sd(bottom, bottom_radius, tilt * bottom_radius, rows), out=sd[rows])
    coverage = clip01(sd + np.float32(0.5))
    surface = np.zeros_like(coverage)
    surface[surface_rows] = clip01(surface_sd + np.float32(0.5))
    return FillMaps(coverage, surface, surface_sd, surface_rows)


def grain_patch(inst: Instance, rng: np.random.Generator, width: int, height: int) -> np.ndarray | None:
    """A ``width`` x ``height`` patch of pasta / rice at the container's scale (None for water or
    an empty container)."""
    if not (inst.fraction > 0 and inst.filling in ("pasta", "rice")):
        return None
    px_per_cm = inst.height / inst.spec.height_cm
    texture = bank()[inst.filling]
    return patch(rng, texture, width, height, width / px_per_cm * GRAIN_PX_PER_CM * rng.uniform(0.85, 1.15))


def refracted_background(frame: ContainerFrame, background: np.ndarray, magnification: float) -> np.ndarray:
    """The background seen through water as through a cylindrical lens: flipped and magnified."""
    inst, cos_roll, sin_roll = frame.inst, frame.cos_roll, frame.sin_roll
    source_x = frame.x * np.float32(-magnification)
    map_x = np.float32(inst.cx - frame.x0 - 0.5) + source_x * np.float32(cos_roll) - frame.y * np.float32(sin_roll)
    map_y = np.float32(inst.by - frame.y0 - 0.5) - (source_x * np.float32(sin_roll) + frame.y * np.float32(cos_roll))
    return cv2.remap(np.ascontiguousarray(background), map_x, map_y, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)


def water_through_glass(maps: ContainerMaps, fill: FillMaps, background: np.ndarray, seen_through: np.ndarray,
                        glass_mc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Water in a transparent container: ``(colour, ambient)``.

    ``colour`` is the box with the refracted background below the surface, the background seen
    through the surface and the meniscus line (weighted by the glass factor ``glass_mc``);
    ``ambient`` is the gray light of the surface and meniscus still to be multiplied by the
    glass's transmission.
    """
    look, liquid, surface = maps.frame.inst.look, fill.coverage, fill.surface
    refracted = refracted_background(maps.frame, background, look["water_mag"])
    surface_mix = surface * np.float32(look["surface_mix"])
    meniscus = np.zeros_like(surface)
    meniscus[fill.surface_rows] = clip01(np.float32(look["meniscus_w"] + 0.5) - np.abs(fill.surface_sd)) \
        * np.float32(look["meniscus_a"])
    # water = refracted*tint*shade*(1-S) + S*(through/2 + ambient/2), then the meniscus line
    k_refracted = (np.float32(0.97) - np.float32(0.3) * np.abs(maps.across) * maps.across_sq) \
        * (1.0 - surface_mix) * (1.0 - meniscus) * liquid
    k_through = (np.float32(0.5) * surface_mix) * (1.0 - meniscus) * liquid + (1.0 - liquid)
    k_ambient = ((np.float32(0.5 * look["ambient"]) * surface_mix) * (1.0 - meniscus)
                 + meniscus * np.float32(look["meniscus_col"])) * liquid
    out = background * gray3(1.0 - maps.coverage)
    out += seen_through * gray3(k_through * glass_mc)
    out += refracted * colour_sum(None, (k_refracted * glass_mc, look["water_tint"]))
    return out, k_ambient


def grains_through_glass(maps: ContainerMaps, fill: FillMaps, background: np.ndarray, seen_through: np.ndarray,
                         grains: np.ndarray, glass_mc: np.ndarray) -> np.ndarray:
    """Pasta / rice in a transparent container, shaded as a lit cylinder with a bright top."""
    look, liquid, surface = maps.frame.inst.look, fill.coverage, fill.surface
    light_x = np.float32(look["light_x"])
    shade = (np.float32(0.62) + np.float32(0.38) * maps.facing + np.float32(0.15) * light_x * maps.across) \
        * (1.0 - surface) + np.float32(1.08) * surface
    k_grains = shade * liquid * np.float32(look["content_gain"])
    out = background * gray3(1.0 - maps.coverage)
    out += seen_through * gray3((1.0 - liquid) * glass_mc)
    out += grains * gray3(k_grains * glass_mc)
    return out
