"""Per-pixel helpers of the renderer: signed distances, clipping and colour folding (float32)."""

from __future__ import annotations

import os

import cv2
import numpy as np

from ..atomic import atomic_path


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> str:
    """Write an H x W x 3 uint8 RGB image as a PNG (atomically, folders made); returns ``path``."""
    with atomic_path(path, suffix=".png") as tmp:
        cv2.imwrite(tmp, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return os.fspath(path)


def ellipse_sd(x: np.ndarray, y: np.ndarray, half_width: float, half_height: float) -> np.ndarray:
    """Approximate signed distance (px, > 0 inside) to an axis-aligned ellipse centred at 0."""
    half_width, half_height = max(half_width, 0.3), max(half_height, 0.3)
    xa, yb = x / half_width, y / half_height
    implicit = xa * xa + yb * yb - 1.0
    gradient = 2.0 * np.sqrt((xa / half_width) ** 2 + (yb / half_height) ** 2) + 1e-6
    return -implicit / gradient


def gauss(u: np.ndarray, centre: float, width: float) -> np.ndarray:
    """An unnormalised Gaussian bump ``exp(-((u - centre) / width)^2)``."""
    return np.exp(-((u - centre) / width) ** 2)


def gray3(k: np.ndarray) -> np.ndarray:
    """A 2-D map repeated over 3 channels (much faster than numpy broadcasting)."""
    return cv2.cvtColor(np.ascontiguousarray(k, dtype=np.float32), cv2.COLOR_GRAY2RGB)


def colour_sum(gray, *terms) -> np.ndarray:
    """3-channel image ``gray + sum(map_k * colour_k)`` built channel by channel."""
    channels = []
    for j in range(3):
        acc = None
        for weight, colour in terms:
            v = weight * np.float32(colour[j])
            if acc is None:
                acc = v
            else:
                acc += v
        if gray is not None:
            acc = gray + acc if acc is not None else gray.astype(np.float32, copy=True)
        channels.append(acc)
    return cv2.merge(channels)


def clip01(x: np.ndarray) -> np.ndarray:
    """Clip a temporary array to [0, 1] in place."""
    np.maximum(x, 0.0, out=x)
    return np.minimum(x, 1.0, out=x)


def as_rng(seed) -> np.random.Generator:
    """``seed`` itself when it is a numpy Generator, else ``np.random.default_rng(seed)``."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
