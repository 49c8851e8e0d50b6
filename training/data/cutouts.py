"""Photographic object classes for source pretraining: one class per real cut-out (issue 16, item 4).

Each class is one *train*-split RGBA cut-out of ``make photos`` (:mod:`fillcls.world.photos`:
the photographic Tux Paint stamps — fruit, tools, animals, household objects); each image shows it
at a random scale (55-95 % of the image side), rotation (±30°), mirroring and brightness / colour
gain, at a random place on a random window of a *train* background photograph. The task is
instance recognition across pose and background — photographic texture and shape, which the
procedural fractals lack. The *val* cut-outs and backgrounds stay out, as everywhere.

:func:`cutout_splits` gives train and held-out test sets of the same classes (independent draws),
cached like the fractals (:mod:`training.data.cache`); :func:`mixed_splits` joins fractal and
cut-out classes into one source dataset. Deterministic by seed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from fillcls.world import photos as ph

from .base import CropSet
from .cache import cached_train_test

VERSION = 2
_SPLIT_CODES = {"train": 11, "test": 12}
#: Images are composed at this multiple of the output size, then shrunk (anti-aliasing).
SUPERSAMPLE = 2


def class_photos(n_classes: int = 0, root=None) -> tuple[ph.Photo, ...]:
    """The *train* cut-outs that are the classes: ``n_classes`` spread evenly over the index (which
    is sorted by subject: animals, food, plants, ...), 0 = all."""
    pool = ph.photos("cutout", "train", root)
    if n_classes < 0 or n_classes > len(pool):
        raise ValueError(f"n_classes must be 0..{len(pool)} (the train cut-outs of `make photos`), got {n_classes}")
    if not n_classes:
        return pool
    return tuple(pool[int(i)] for i in np.linspace(0, len(pool), n_classes, endpoint=False))


def compose(rgba: np.ndarray, size: int, rng: np.random.Generator, root=None) -> np.ndarray:
    """One ``size`` x ``size`` RGB image (uint8) of the cut-out ``rgba`` on a background photo."""
    S = size * SUPERSAMPLE
    frame = ph.background_crop(rng, S, S, "train", root)
    h, w = rgba.shape[:2]
    side = S * rng.uniform(0.55, 0.95)
    angle = rng.uniform(-30, 30)
    scale = side / max(h, w)
    # rotate about the centre on a canvas large enough for the rotated cut-out
    c, s = abs(np.cos(np.radians(angle))), abs(np.sin(np.radians(angle)))
    cw, ch = int(np.ceil((w * c + h * s) * scale)) + 2, int(np.ceil((w * s + h * c) * scale)) + 2
    M = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    M[:, 2] += (cw / 2 - w / 2, ch / 2 - h / 2)
    item = cv2.warpAffine(rgba, M, (cw, ch), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
    if rng.random() < 0.5:
        item = item[:, ::-1]
    gain = rng.uniform(0.7, 1.3) * rng.uniform(0.9, 1.1, 3)
    item = item.astype(np.float32)
    item[..., :3] = np.clip(item[..., :3] * gain, 0, 255)
    x = int(rng.integers(-cw // 6, max(-cw // 6 + 1, S - 5 * cw // 6 + 1)))
    y = int(rng.integers(-ch // 6, max(-ch // 6 + 1, S - 5 * ch // 6 + 1)))
    ph.paste(frame, np.ascontiguousarray(item.round().astype(np.uint8)), x, y)
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)


def cutout_set(n_classes: int, per_class: int, size: int, *, seed: int = 0, split: str = "train",
               root=None) -> CropSet:
    """``per_class`` images of each of ``n_classes`` train cut-outs (:func:`class_photos`), no caching."""
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {', '.join(_SPLIT_CODES)}")
    classes = class_photos(n_classes, root)
    names = tuple(Path(p.path).stem for p in classes)
    images = np.empty((len(classes) * per_class, 3, size, size), np.uint8)
    for k, photo in enumerate(classes):
        rgba = ph.read(photo)
        rng = np.random.default_rng([seed, _SPLIT_CODES[split], k])
        for i in range(per_class):
            images[k * per_class + i] = compose(rgba, size, rng, root).transpose(2, 0, 1)
    return CropSet.of_classes(images, np.repeat(np.arange(len(classes)), per_class), names)


def cutout_splits(n_classes: int, per_class: int, test_per_class: int, size: int, *, seed: int = 0,
                  cache_dir: str | os.PathLike | None = None, log: Callable[[str], None] | None = None,
                  root=None) -> tuple[CropSet, CropSet]:
    """Train and held-out test sets of the cut-out classes (independent draws), cached under
    ``cache_dir`` as ``cutouts_<hash>.npz`` when given."""
    settings = dict(version=VERSION, n_classes=n_classes, per_class=per_class, test_per_class=test_per_class,
                    size=size, seed=seed, photos=ph.fingerprint(root))

    return cached_train_test(cache_dir, "cutouts", settings, lambda split: cutout_set(
        n_classes, per_class if split == "train" else test_per_class, size, seed=seed, split=split, root=root), log)


def concat(a: CropSet, b: CropSet) -> CropSet:
    """The classes of ``a`` then those of ``b`` (labels of ``b`` shifted) in one set."""
    names = tuple(a.classes) + tuple(b.classes)
    if len(set(names)) != len(names):
        raise ValueError("the two source datasets share class names")
    return CropSet.of_classes(torch.cat([a.images, b.images]), torch.cat([a.labels, b.labels + len(a.classes)]), names)


def mixed_splits(n_classes: int, per_class: int, test_per_class: int, size: int, *, seed: int = 0,
                 cache_dir=None, log=None, root=None) -> tuple[CropSet, CropSet]:
    """``n_classes`` fractal classes and ``n_classes`` cut-out classes, ``per_class`` images each
    (``test_per_class`` held out)."""
    from .fractals import fractal_splits

    f_train, f_test = fractal_splits(n_classes, per_class, test_per_class, size, seed=seed,
                                     cache_dir=cache_dir, log=log)
    c_train, c_test = cutout_splits(n_classes, per_class, test_per_class, size, seed=seed,
                                    cache_dir=cache_dir, log=log, root=root)
    return concat(f_train, c_train), concat(f_test, c_test)
