"""Drawing one container into a scene: geometry (:mod:`.geometry`), content (:mod:`.contents`)
and material (:mod:`.materials`) composited over the background in its bounding box."""

from __future__ import annotations

import numpy as np

from .contents import fill_maps, grain_patch
from .geometry import container_maps
from .instances import Instance
from .materials import shade_glass, shade_opaque


def draw_container(img: np.ndarray, inst: Instance, rng: np.random.Generator) -> tuple | None:
    """Composite one container into ``img`` (H x W x 3 float32, 0..255) in place.

    Returns ``(x0, y0, coverage)`` (coverage: float32 map of the bounding box, >= 0.5 = mask) or
    None when the container is outside the image. ``rng`` draws the grain texture patch.
    """
    maps = container_maps(inst, *img.shape[:2])
    if maps is None:
        return None
    frame = maps.frame
    fill = fill_maps(frame, maps.inner_radius)
    grains = grain_patch(inst, rng, frame.width, frame.height)
    background = img[frame.y0:frame.y1, frame.x0:frame.x1]
    shade = shade_glass if inst.spec.transparent else shade_opaque
    img[frame.y0:frame.y1, frame.x0:frame.x1] = shade(maps, fill, grains, background)
    return frame.x0, frame.y0, maps.coverage
