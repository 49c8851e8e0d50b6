"""The texture bank (background noise, stripes, checks, fabric, wood; pasta and rice; camera
noise), built once per process from a fixed seed, and random patches of it."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

#: Bank seed: the same textures in every process.
BANK_SEED = 20210919
BANK_SIZE = 256
_BANK: dict[str, Any] = {}


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """``size`` x ``size`` float32 noise in [-1, 1] from a ``cells`` x ``cells`` grid (bicubic)."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    noise = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return noise / (np.abs(noise).max() + 1e-6)


def grain_texture(rng: np.random.Generator, kind: str, size: int = BANK_SIZE) -> np.ndarray:
    """RGB float32 texture of pasta or rice at 24 px per cm."""
    img = np.zeros((size, size, 3), np.float32)
    if kind == "rice":
        img[:] = (150, 140, 118)
        n, length, width = 2600, 14.0, 5.0
        colours = [(246, 242, 228), (236, 230, 212), (252, 250, 242), (225, 218, 196)]
    else:
        img[:] = (120, 82, 30)
        n, length, width = 500, 56.0, 16.0
        colours = [(238, 196, 108), (228, 178, 86), (246, 210, 128), (214, 166, 74)]
    for _ in range(n):
        x, y = rng.uniform(-10, size + 10, 2)
        angle = rng.uniform(0, 180)
        grain_length = length * rng.uniform(0.7, 1.2)
        colour = colours[rng.integers(len(colours))]
        shade = rng.uniform(0.8, 1.05)
        centre = (int(x), int(y))
        cv2.ellipse(img, centre, (int(grain_length / 2), int(width / 2)), angle, 0, 360,
                    tuple(float(v) * shade * 0.65 for v in colour), -1)
        cv2.ellipse(img, centre, (max(1, int(grain_length / 2 - 2)), max(1, int(width / 2 - 2))), angle,
                    0, 360, tuple(float(v) * shade for v in colour), -1)
        if kind == "pasta" and rng.random() < 0.7:  # ridges / hollow of penne and fusilli
            cv2.ellipse(img, centre, (max(1, int(grain_length / 2 - 4)), max(1, int(width / 5))), angle,
                        0, 360, tuple(float(v) * shade * 0.72 for v in colour), -1)
    # wrap the texture (tiles seamlessly enough after a blur)
    return cv2.GaussianBlur(img, (0, 0), 0.8)


def _gray_textures(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> list[np.ndarray]:
    """Gray background textures in [-1, 1]: smooth noise, stripes, checks, fabric."""
    size = BANK_SIZE
    gray = []
    for cells in (4, 8, 16, 32, 64):
        for _ in range(2):
            gray.append(smooth_noise(rng, size, cells))
    for period in (6, 10, 18, 32, 60):  # stripes
        gray.append(np.sign(np.sin(xx * 2 * np.pi / period)).astype(np.float32) * 0.8
                    + 0.2 * smooth_noise(rng, size, 32))
    for period in (16, 32, 64):  # checks
        gray.append((np.sign(np.sin(xx * np.pi / period)) * np.sign(np.sin(yy * np.pi / period)))
                    .astype(np.float32))
    for _ in range(3):  # fabric
        gray.append(0.5 * np.sin(xx * 1.7).astype(np.float32) * np.sin(yy * 1.7).astype(np.float32)
                    + 0.5 * smooth_noise(rng, size, 48))
    return gray


def _wood_textures(rng: np.random.Generator, yy: np.ndarray) -> list[np.ndarray]:
    """Wood grain textures in [-1, 1] (for table tops)."""
    wood = []
    for _ in range(4):
        warp = smooth_noise(rng, BANK_SIZE, 6)
        grain = np.sin(yy * rng.uniform(0.15, 0.4) + 9 * warp + 0.4 * smooth_noise(rng, BANK_SIZE, 64) * 3)
        wood.append(grain.astype(np.float32))
    return wood


def bank() -> dict[str, Any]:
    """Background / content / noise textures, built once per process from fixed seeds."""
    if _BANK:
        return _BANK
    rng = np.random.default_rng(BANK_SEED)
    yy, xx = np.mgrid[0:BANK_SIZE, 0:BANK_SIZE].astype(np.float32)
    gray = _gray_textures(rng, yy, xx)
    wood = _wood_textures(rng, yy)
    _BANK.update(
        gray=np.stack(gray),
        wood=np.stack(wood),
        pasta=grain_texture(rng, "pasta"),
        rice=grain_texture(rng, "rice"),
        noise=rng.standard_normal((512, 512, 3)).astype(np.float32),
    )
    return _BANK


def patch(rng: np.random.Generator, tex: np.ndarray, w: int, h: int, src_w: float) -> np.ndarray:
    """A ``w x h`` patch of ``tex`` (H x W [x C]) covering ``src_w`` texture pixels horizontally,
    at a random place, mirrored half of the time."""
    tex_h, tex_w = tex.shape[:2]
    src_w = int(np.clip(round(src_w), 2, tex_w))
    src_h = int(np.clip(round(src_w * h / max(w, 1)), 2, tex_h))
    x0 = int(rng.integers(0, tex_w - src_w + 1))
    y0 = int(rng.integers(0, tex_h - src_h + 1))
    out = cv2.resize(tex[y0:y0 + src_h, x0:x0 + src_w], (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.flip(out, 1) if rng.random() < 0.5 else out
