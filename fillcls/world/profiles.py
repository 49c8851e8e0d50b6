"""The shapes of the 8 CCM containers: revolved cavity profiles and the container catalogue.

A container is a revolved 2-D :class:`Profile` (cavity radius ``r(h)``, ``h`` in [0, 1] from the
bottom of the cavity to the rim) plus an optional stem and foot; :class:`ContainerSpec` adds its
identity, proportions and material. :data:`CONTAINERS` is the catalogue, by id ``C1`` .. ``C8``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from .containers import CONTAINER_NAMES


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
        area = self.r ** 2
        cumulative = np.concatenate([[0.0], np.cumsum((area[1:] + area[:-1]) * 0.5 * np.diff(h))])
        self.v = cumulative / cumulative[-1]
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

    def radius_lut(self, heights: np.ndarray) -> np.ndarray:
        """``self(heights)`` for a float32 array, clamped to [0, 1]: the nearest of the samples (fast)."""
        n = len(self._r32) - 1
        index = np.clip(heights, 0.0, 1.0)
        index *= np.float32(n)
        index += np.float32(0.5)
        return np.take(self._r32, index.astype(np.int32))


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
    """A frustum: radius ``bottom`` at the bottom of the cavity, 1 at the rim."""
    return lambda h: bottom + (1.0 - bottom) * h


def _ellipsoid(centre: float, radius: float) -> Callable[[np.ndarray], np.ndarray]:
    """A bowl: an ellipse section centred at height ``centre``, half-height ``radius``."""
    return lambda h: np.sqrt(np.clip(1.0 - ((h - centre) / radius) ** 2, 0.0, None))


def _cone(h: np.ndarray) -> np.ndarray:
    """A cone with a tiny flat bottom (cocktail glass)."""
    return np.maximum(h, 0.015)


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
        ContainerSpec("C8", CONTAINER_NAMES["C8"], True, Profile(_cone), "glass",
                      0.42, 16.0, (225, 235, 235), alpha=0.07, stem=1.0, foot=0.62),
    )
}


def random_shape(rng: np.random.Generator, spec: ContainerSpec) -> ContainerSpec:
    """``spec`` (its material and look) with a random revolved shape, for the segmenter's training.

    Shapes from one generic family, not from any container of the catalogue: a cavity radius
    ``b + (1 - b) h^p`` (frusta, flared and cone-like cups: ``b`` in [0.02, 1], ``p`` in [0.5, 2])
    or an elliptic bowl, cavity height / diameter log-uniform in [0.4, 3], a stem and foot on half
    of the transparent ones. A segmenter that has only seen the training containers' shapes misses
    the unseen ones (the flute, 2.6 x as tall as wide, against at most 1.35 x in S1's training set).
    """
    if rng.random() < 0.6:
        b, p = rng.uniform(0.02, 1.0), float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        profile = Profile(lambda h: b + (1.0 - b) * h ** p)
    else:
        centre = rng.uniform(0.45, 0.95)
        profile = Profile(_ellipsoid(centre, centre + rng.uniform(0.03, 0.3)))
    stem = rng.uniform(0.3, 1.1) if spec.transparent and rng.random() < 0.5 else 0.0
    return replace(spec, profile=profile, aspect=float(np.exp(rng.uniform(np.log(0.4), np.log(3.0)))),
                   stem=stem, foot=rng.uniform(0.5, 1.1) if stem else 0.0,
                   base=rng.uniform(0.02, 0.18) if spec.transparent else spec.base)


def container_ids(containers: Sequence[str] | None) -> list[str]:
    """The ids of ``containers`` (default: all of :data:`CONTAINERS`); ValueError naming unknown ones."""
    ids = list(containers) if containers is not None else list(CONTAINERS)
    bad = [c for c in ids if c not in CONTAINERS]
    if bad or not ids:
        raise ValueError(f"unknown container id(s) {bad}; choose from {', '.join(CONTAINERS)}")
    return ids
