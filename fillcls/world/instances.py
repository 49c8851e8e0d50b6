"""Containers placed in a scene: :class:`Instance` (where, how large, how full, how it looks) and
how one is drawn at random (:func:`make_instance`), with the levels, fillings and views."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..spec import CLASSES
from .containers import CCM_CLASS_COUNTS
from .profiles import ContainerSpec

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
#: Range of the tilt (vertical / horizontal axis of horizontal circles) of each view.
VIEW_TILTS: dict[int, tuple[float, float]] = {1: (0.06, 0.26), 2: (0.06, 0.26), 3: (0.12, 0.34), 4: (0.22, 0.45)}


@dataclass
class Instance:
    """One container placed in a scene (pixels; ``cx, by``: image position of the base centre).

    Local frame: ``x`` across from the axis, ``y`` up from the bottom of the container (foot or
    base) to the rim at ``height``; ``angle`` rolls it in the image.
    """

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
        """Height of the cavity (px)."""
        s = self.spec
        return self.height / (1.0 + s.stem + s.base)

    @property
    def radius(self) -> float:
        """Largest radius of the cavity (px)."""
        return self.cavity_h / (2.0 * self.spec.aspect)

    @property
    def stem_height(self) -> float:
        """Height of the stem (px; 0 without stem): where the body starts."""
        return self.spec.stem * self.cavity_h

    @property
    def cavity_bottom(self) -> float:
        """Height of the bottom of the cavity (px): stem plus the solid base."""
        return self.stem_height + self.spec.base * self.cavity_h

    @property
    def wall(self) -> float:
        """Wall thickness (px)."""
        return max(0.7, 0.035 * self.radius)

    @property
    def stem_radius(self) -> float:
        """Radius of the stem (px)."""
        return max(0.9, 0.055 * self.radius)

    @property
    def rim_radius(self) -> float:
        """Inner radius at the rim (px)."""
        return self.radius * float(self.spec.profile(1.0))

    @property
    def bottom_radius(self) -> float:
        """Inner radius at the bottom of the cavity (px)."""
        return self.radius * float(self.spec.profile(0.0))

    def local_extent(self) -> tuple[float, float, float, float]:
        """(x_lo, x_hi, y_lo, y_hi) of the container in its local frame (y up from the base)."""
        s, radius, wall = self.spec, self.radius, self.wall
        half_width = max(radius, s.foot * radius) + wall + 1.0
        top = self.rim_radius + wall
        bottom = (s.foot * radius) if s.stemmed else self.bottom_radius + wall
        return -half_width, half_width, -self.tilt * bottom - 1.0, self.height + self.tilt * top + 1.0

    def image_extent(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) image bounding box (float) of the local extent after the roll."""
        x_lo, x_hi, y_lo, y_hi = self.local_extent()
        cos_a, sin_a = math.cos(self.angle), math.sin(self.angle)
        xs, ys = [], []
        for x in (x_lo, x_hi):
            for y in (y_lo, y_hi):
                xs.append(self.cx + x * cos_a - y * sin_a)
                ys.append(self.by - (x * sin_a + y * cos_a))
        return min(xs), min(ys), max(xs), max(ys)

    def to_image(self, x: float, y: float) -> tuple[int, int]:
        """Integer image point of the local point ``(x, y)``."""
        cos_a, sin_a = math.cos(self.angle), math.sin(self.angle)
        return (int(round(self.cx + x * cos_a - y * sin_a)), int(round(self.by - (x * sin_a + y * cos_a))))


def sample_look(rng: np.random.Generator, spec: ContainerSpec, view: int) -> dict:
    """Per-instance appearance parameters (light, tint, edges, highlights, water, skin, shadow)."""
    skin_dark = rng.uniform(0, 1)
    skin = np.array([235, 190, 160]) * (1 - skin_dark) + np.array([120, 78, 52]) * skin_dark
    bright_edges = rng.random() < 0.5
    return {
        "light_x": (-1.0 if view == 1 else 1.0 if view == 2 else rng.uniform(-1, 1)) * rng.uniform(0.3, 1.0),
        "tint": np.asarray(spec.color, np.float32) * np.float32(rng.uniform(0.7, 1.05))
        * rng.uniform(0.93, 1.07, 3).astype(np.float32),
        "hue": rng.uniform(0.93, 1.07, 3).astype(np.float32),
        "tint_gain": rng.uniform(0.6, 1.5),
        "edge_a": rng.uniform(0.25, 0.7),
        "edge_col": np.float32(rng.uniform(200, 250) if bright_edges else rng.uniform(20, 70)),
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


def pick_level(rng: np.random.Generator, spec: ContainerSpec, level: str | None) -> tuple[str, float]:
    """(class name, true fill fraction); opaque containers are always ``unknown``."""
    if level is not None and level not in CLASSES:
        raise ValueError(f"level must be one of {', '.join(CLASSES)}, got {level!r}")
    if level is None or level == "unknown":
        names = list(TRANSPARENT_LEVEL_P)
        visible = names[int(rng.choice(len(names), p=list(TRANSPARENT_LEVEL_P.values())))]
    else:
        visible = level
    fraction = LEVEL_FRACTIONS[visible]
    if not spec.transparent:
        return "unknown", fraction
    if level == "unknown":
        raise ValueError(f"{spec.id} ({spec.name}) is transparent: its level cannot be 'unknown'")
    return visible, fraction


def make_instance(rng: np.random.Generator, spec: ContainerSpec, level: str | None, filling: str | None,
                  view: int | None, hand: bool | None, hand_prob: float, height: float) -> Instance:
    """A random instance of ``spec`` (not placed yet: ``cx = by = 0``); arguments not None are fixed."""
    level, fraction = pick_level(rng, spec, level)
    if filling is None:
        filling = "none" if fraction == 0 else FILLINGS[int(rng.integers(len(FILLINGS)))]
    elif fraction == 0:
        filling = "none"
    elif filling not in FILLINGS:
        raise ValueError(f"filling must be one of {', '.join(FILLINGS)}, got {filling!r}")
    view = int(rng.choice(VIEWS)) if view is None else int(view)
    tilt_lo, tilt_hi = VIEW_TILTS.get(view, (0.06, 0.45))
    hand = bool(rng.random() < hand_prob) if hand is None else bool(hand)
    angle = rng.normal(0, 0.1 if hand else 0.03)
    height = height * rng.uniform(0.93, 1.07)
    inst = Instance(spec, level, fraction, filling, view, 0.0, 0.0, height, rng.uniform(tilt_lo, tilt_hi), angle,
                    hand, int(rng.integers(1 << 31)))
    inst.look = sample_look(rng, spec, view)
    return inst
