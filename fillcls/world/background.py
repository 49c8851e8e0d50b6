"""Random backgrounds: a colour gradient, a gray texture, distractor shapes and a table top (plain
or wood, with a front edge), out of focus."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .raster import colour_sum
from .textures import BANK_SIZE, bank, patch


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour (float32), uniform in hue."""
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(0, 200), rng.integers(30, 250)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _bank_patch(rng: np.random.Generator, kind: str, w: int, h: int, min_spread: float, full_w: int,
                scale: float) -> np.ndarray:
    """A ``w`` x ``h`` patch of a random ``kind`` (gray / wood) texture of the bank, spread over
    U(``min_spread``, 1) of the bank's width, less for objects (``scale``) large in the image."""
    textures = bank()[kind]
    texture = textures[rng.integers(len(textures))]
    return patch(rng, texture, w, h, rng.uniform(min_spread, 1.0) * BANK_SIZE * min(1.0, full_w / scale))


def _wall(rng: np.random.Generator, w: int, h: int, full_w: int, full_h: int, scale: float) -> np.ndarray:
    """A ``w`` x ``h`` gradient between two colours in a random direction, with a gray texture in
    80 % of the images (the full image is ``full_w`` x ``full_h``)."""
    colour0 = random_colour(rng)
    colour1 = np.clip(colour0 * rng.uniform(0.5, 1.5) + rng.normal(0, 25, 3), 0, 255).astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    cos_d, sin_d = math.cos(direction), math.sin(direction)
    xs = np.linspace(0, 1, w, dtype=np.float32) * np.float32(cos_d * full_w / max(full_w, full_h))
    ys = np.linspace(0, 1, h, dtype=np.float32) * np.float32(sin_d * full_h / max(full_w, full_h))
    lo = min(0.0, float(xs[-1])) + min(0.0, float(ys[-1]))
    span = abs(float(xs[-1])) + abs(float(ys[-1])) + 1e-6
    ramp = (xs[None, :] + ys[:, None] - np.float32(lo)) * np.float32(1.0 / span)
    terms = [(ramp, colour1 - colour0)]
    if rng.random() < 0.8:
        tex = _bank_patch(rng, "gray", w, h, 0.3, full_w, scale * 2.5)
        amplitude = rng.uniform(5, 45)
        terms.append((tex, (0.6 + 0.4 * rng.random(3)) * amplitude))
    img = colour_sum(None, *terms)
    img += colour0
    return img


def _draw_distractors(img: np.ndarray, rng: np.random.Generator) -> None:
    """Up to 3 plain rectangles or ellipses."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(0, 4))):
        colour = tuple(float(v) for v in random_colour(rng))
        cx, cy = int(rng.uniform(0, w)), int(rng.uniform(0, h))
        a, b = int(rng.uniform(0.05, 0.5) * w), int(rng.uniform(0.05, 0.5) * h)
        if rng.random() < 0.5:
            cv2.rectangle(img, (cx - a, cy - b), (cx + a, cy + b), colour, -1)
        else:
            cv2.ellipse(img, (cx, cy), (a, b), rng.uniform(0, 180), 0, 360, colour, -1)


def _draw_table(img: np.ndarray, rng: np.random.Generator, top: int, full_w: int, scale: float,
                factor: int) -> None:
    """A table top from row ``top`` down: shaded colour, wood grain in 60 % of the images, a front
    edge line (``factor``: image pixels per pixel of ``img``)."""
    h, w = img.shape[:2]
    rows = h - top
    colour = random_colour(rng) * np.float32(rng.uniform(0.6, 1.1))
    shade = np.linspace(rng.uniform(0.8, 1.0), rng.uniform(1.0, 1.2), rows, dtype=np.float32)
    shade = np.repeat(shade[:, None], w, axis=1)
    if rng.random() < 0.6:
        tex = _bank_patch(rng, "wood", w, rows, 0.4, full_w, scale * 3)
        img[top:] = colour_sum(tex * np.float32(rng.uniform(8, 35)), (shade, colour))
    else:
        img[top:] = colour_sum(None, (shade, colour))
    edge = max(1, int(round(rng.uniform(0.005, 0.02) * scale / factor)))
    img[top:top + edge] *= np.float32(rng.uniform(0.5, 1.4))


def background(rng: np.random.Generator, W: int, H: int, table_y: float | None, scale: float) -> np.ndarray:
    """A random background (gradient, texture, distractor shapes, table), H x W x 3 float32.

    Drawn at half resolution (it is out of focus anyway) and upsampled. ``scale``: a typical
    object size in px (sets texture scale and blur).
    """
    factor = 2 if min(W, H) >= 48 else 1
    w, h = -(-W // factor), -(-H // factor)
    img = _wall(rng, w, h, W, H, scale)
    _draw_distractors(img, rng)
    if table_y is not None and table_y < H:
        _draw_table(img, rng, int(max(table_y, 0) / factor), W, scale, factor)
    blur = rng.uniform(0.0, 1.0) ** 2 * 0.02 * scale / factor
    if blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    if factor > 1:
        img = cv2.resize(img, (w * factor, h * factor), interpolation=cv2.INTER_LINEAR)[:H, :W]
    return np.ascontiguousarray(img)
