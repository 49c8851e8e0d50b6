"""Light and camera: the contact shadow under a standing container, then the exposure of the
whole frame (gain, white balance, side light, vignette), defocus blur and sensor noise."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .instances import Instance
from .raster import colour_sum, gray3
from .textures import bank


def draw_shadow(img: np.ndarray, inst: Instance) -> None:
    """A soft contact shadow on the surface under a standing container (opposite the light)."""
    H, W = img.shape[:2]
    spec, radius, tilt = inst.spec, inst.radius, inst.tilt
    footprint = (spec.foot * radius if spec.stemmed else radius * float(spec.profile(0.0))) * 1.25 + 1.0
    dx = -inst.look["light_x"] * footprint * 0.5
    a, b = footprint, max(1.0, footprint * max(tilt, 0.12) * 1.3)
    blur = max(0.8, 0.18 * footprint)
    margin = int(math.ceil(a + 3 * blur + abs(dx)))
    cx, cy = inst.cx + dx, inst.by
    x0, x1 = max(int(cx) - margin, 0), min(int(cx) + margin + 1, W)
    y0, y1 = max(int(cy - b - 3 * blur), 0), min(int(cy + b + 3 * blur) + 1, H)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    shadow = np.zeros((y1 - y0, x1 - x0), np.float32)
    cv2.ellipse(shadow, (int(round(cx)) - x0, int(round(cy)) - y0), (int(a), int(b)), 0, 0, 360, 1.0, -1)
    shadow = cv2.GaussianBlur(shadow, (0, 0), blur)
    img[y0:y1, x0:x1] *= gray3(1.0 - np.float32(inst.look["shadow"]) * shadow)


def _sensor_noise(rng: np.random.Generator, W: int, H: int) -> np.ndarray:
    """A W x H x 3 crop of the bank's unit Gaussian noise (stretched when the frame is larger)."""
    noise = bank()["noise"]
    noise_h, noise_w = noise.shape[:2]
    if H <= noise_h and W <= noise_w:
        oy, ox = int(rng.integers(0, noise_h - H + 1)), int(rng.integers(0, noise_w - W + 1))
        return noise[oy:oy + H, ox:ox + W]
    return cv2.resize(noise, (W, H), interpolation=cv2.INTER_NEAREST)


def expose(img: np.ndarray, rng: np.random.Generator, light_x: float, scale: float) -> np.ndarray:
    """Lighting (gain, white balance, side light, vignette), blur and camera noise -> uint8."""
    H, W = img.shape[:2]
    gain = np.float32(rng.uniform(0.55, 1.3)) * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    xs = np.linspace(-1, 1, W, dtype=np.float32)
    ys = np.linspace(-1, 1, H, dtype=np.float32)
    vignette = np.float32(rng.uniform(0.0, 0.35) * 0.5)
    side_light = np.float32(0.25 * light_x * rng.uniform(0, 1))
    light = (1.0 + side_light * xs - vignette * xs * xs)[None, :] - (vignette * ys * ys)[:, None]
    img *= colour_sum(None, (light, gain))
    blur = rng.uniform(0.0, 1.0) ** 2 * 0.012 * scale
    if blur > 0.35:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    noise = _sensor_noise(rng, W, H)
    return cv2.scaleAdd(noise, float(rng.uniform(1.0, 7.0)), img).round().clip(0, 255).astype(np.uint8)
