"""Container segmentation backends behind one interface: RGB frame in, detections out.

A backend is a callable ``segment(rgb) -> list[Detection]`` (H x W x 3 uint8 RGB in; boxes in
pixels of that frame, best first). Backends register themselves in :data:`BACKENDS` by name and
are built with :func:`make_segmenter`; the node selects one with its ``segmentation_backend``
parameter. Score thresholding and the per-frame limit are applied by :func:`select`.

Backends here:

* ``full_frame``: the whole frame is one container (for upstream nodes that publish crops);
* ``threshold``: a classical detector for a container in front of a plain background
  (colour distance to the frame border's median colour, morphology, connected components).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np


@dataclass
class Detection:
    """One container: ``box`` (x0, y0, x1, y1; x1, y1 exclusive), ``score`` in [0, 1], optional mask."""

    box: tuple[int, int, int, int]
    score: float
    mask: np.ndarray | None = None  # H x W bool, frame-sized, or None

    @property
    def roi(self) -> tuple[int, int, int, int]:
        """``(x_offset, y_offset, width, height)`` as in sensor_msgs/RegionOfInterest."""
        x0, y0, x1, y1 = self.box
        return x0, y0, x1 - x0, y1 - y0


Segmenter = Callable[[np.ndarray], "list[Detection]"]
#: name -> factory(**options) -> Segmenter
BACKENDS: dict[str, Callable[..., Segmenter]] = {}


def register(name: str):
    """Decorator adding a backend factory to :data:`BACKENDS` under ``name``."""

    def deco(factory):
        BACKENDS[name] = factory
        return factory

    return deco


def make_segmenter(name: str, **options) -> Segmenter:
    """Build the backend ``name`` with its ``options`` (ValueError naming the known backends)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown segmentation backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name](**options)


def select(detections: Sequence[Detection], score_threshold: float, max_containers: int) -> list[Detection]:
    """Detections scoring at least ``score_threshold``, best first, at most ``max_containers``.

    Ties keep the backend's order (the sort is stable), so the output order is deterministic.
    """
    kept = [d for d in detections if d.score >= score_threshold]
    kept.sort(key=lambda d: -d.score)
    return kept[:max_containers]


@register("full_frame")
def full_frame() -> Segmenter:
    """The whole frame is one container with score 1."""

    def segment(rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        return [Detection((0, 0, w, h), 1.0)]

    return segment


@register("threshold")
def threshold(work_width: int = 160, distance: float = 40.0, min_area: float = 0.004) -> Segmenter:
    """Classical foreground detector for a plain background.

    The frame is shrunk to ``work_width`` pixels wide; pixels whose RGB distance to the median
    colour of the frame border exceeds ``distance`` are foreground; after a morphological close and
    open, each connected component covering at least ``min_area`` of the frame is a container.
    Score: the component's mean colour distance, scaled so ``2 * distance`` gives 1.
    """
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))

    def segment(rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        scale = min(1.0, work_width / w)
        small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA) if scale < 1.0 else rgb
        sh, sw = small.shape[:2]
        border = np.concatenate([small[0], small[-1], small[:, 0], small[:, -1]]).astype(np.float32)
        background = np.median(border, axis=0)
        dist = np.linalg.norm(small.astype(np.float32) - background, axis=2)
        fg = (dist > distance).astype(np.uint8)
        fg = cv2.morphologyEx(cv2.morphologyEx(fg, cv2.MORPH_CLOSE, kernel), cv2.MORPH_OPEN, kernel)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        out = []
        for i in range(1, n):
            x, y, bw, bh, area = stats[i]
            if area < min_area * sh * sw:
                continue
            score = float(min(1.0, dist[labels == i].mean() / (2.0 * distance)))
            box = (int(np.floor(x / scale)), int(np.floor(y / scale)),
                   min(w, int(np.ceil((x + bw) / scale))), min(h, int(np.ceil((y + bh) / scale))))
            mask = cv2.resize((labels == i).astype(np.uint8), (w, h),
                              interpolation=cv2.INTER_NEAREST).astype(bool)
            out.append(Detection(box, score, mask))
        out.sort(key=lambda d: (d.box[0], d.box[1]))  # stable left-to-right order before scoring
        return out

    return segment
