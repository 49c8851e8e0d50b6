"""Any ImageFolder (``root/<class>/<image>``) as a :class:`CropSet`: a user's ImageNet subset,
Tiny-ImageNet, ... used as the source dataset of ``training pretrain``.

Every image is converted to RGB, centre-cropped to a square and resized with the project's one
resize (:func:`fillcls.core.resize_uint8`): these are the source data set's natural images
(ImageNet-style pretraining), not container crops, so they keep the ImageNet centre crop; container
crops (manifests) follow the node's crop rule instead (:func:`fillcls.core.crop_image_to_square`).
:func:`folder_splits` returns train / held-out sets: ``root/train`` + ``root/val`` when both exist
(Tiny-ImageNet's ``val/images`` + ``val_annotations.txt`` layout included), otherwise a per-class
random hold-out of ``root``.
Decoded sets are cached under ``cache_dir`` (``folder_<name>_<hash>.pt``, loaded with
``weights_only=True``; :mod:`training.data.cache`).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from fillcls.core import crop_square, resize_uint8

from training.runs import digest

from .base import CropSet
from .cache import cached

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".gif",
                                     ".tif", ".tiff", ".jpe")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def find_classes(root: str | os.PathLike) -> list[str]:
    """Sorted names of the sub-directories of ``root`` that hold images (at any depth)."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such image folder")
    out = []
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if os.path.isdir(d) and any(_is_image(f) for _, _, files in os.walk(d) for f in files):
            out.append(name)
    return out


def list_images(root: str | os.PathLike, classes: Sequence[str] | None = None, max_per_class: int = 0,
                seed: int = 0) -> tuple[list[str], list[int], list[str]]:
    """``(paths, labels, classes)`` of ``root/<class>/**/<image>``; at most ``max_per_class``
    images per class (a random subset, fixed by ``seed``; 0 = all)."""
    root = os.fspath(root)
    classes = list(classes) if classes is not None else find_classes(root)
    if not classes:
        raise ValueError(f"{root}: no class sub-directories with images")
    paths, labels = [], []
    for k, name in enumerate(classes):
        d = os.path.join(root, name)
        files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(d) for f in fs if _is_image(f))
        if max_per_class and len(files) > max_per_class:
            rng = np.random.default_rng([seed, k])
            files = [files[i] for i in sorted(rng.choice(len(files), max_per_class, replace=False))]
        paths += files
        labels += [k] * len(files)
    return paths, labels, classes


def load_image(path: str, size: int) -> torch.Tensor:
    """One image file -> centre square crop -> 3 x size x size uint8."""
    with Image.open(path) as im:
        rgb = np.array(im.convert("RGB"))  # writable copy (torch.from_numpy warns otherwise)
    h, w = rgb.shape[:2]
    side = min(h, w)
    x0, y0 = (w - side) // 2, (h - side) // 2
    return resize_uint8(crop_square(rgb, (x0, y0, x0 + side, y0 + side), margin=0.0), size)


def _decode_all(paths: Sequence[str], size: int, workers: int) -> torch.Tensor:
    images = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)

    def one(i):
        try:
            images[i] = load_image(paths[i], size)
        except Exception as exc:
            raise ValueError(f"{paths[i]}: cannot read image ({exc})") from exc

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, range(len(paths))))
    return images


def _file_list_digest(paths: Sequence[str], labels: Sequence[int]) -> str:
    """A hash of the files (path, label, size, mtime): a changed folder is decoded again."""
    stats = []
    for p, y in zip(paths, labels):
        st = os.stat(p)
        stats.append([p, int(y), st.st_size, st.st_mtime_ns])
    return digest(stats, 16)


def load_files(paths: Sequence[str], labels: Sequence[int], classes: Sequence[str], size: int, *,
               cache_dir: str | os.PathLike | None = None, name: str = "folder", workers: int = 0,
               log: Callable[[str], None] | None = None) -> CropSet:
    """A CropSet of the given image files (``containers`` = class names), cached when asked
    (``folder_<name>_<hash>.pt``, :mod:`training.data.cache`)."""
    def build() -> dict[str, CropSet]:
        t0 = time.perf_counter()
        images = _decode_all(paths, size, workers or min(8, os.cpu_count() or 1))
        if log:
            log(f"{name}: {len(paths)} images, {len(classes)} classes at {size} px in "
                f"{time.perf_counter() - t0:.1f} s")
        return {"all": CropSet.of_classes(images, list(labels), classes)}

    settings = {"size": size, "classes": list(classes),
                "files": _file_list_digest(paths, labels) if cache_dir else None}
    return cached(cache_dir, f"folder_{name}", settings, build, ext=".pt", log=log)["all"]


def load_image_folder(root: str | os.PathLike, size: int, *, classes: Sequence[str] | None = None,
                      max_per_class: int = 0, seed: int = 0, cache_dir: str | os.PathLike | None = None,
                      log: Callable[[str], None] | None = None) -> CropSet:
    """``root/<class>/<image>`` -> CropSet (classes sorted by name unless given)."""
    paths, labels, classes = list_images(root, classes, max_per_class, seed)
    return load_files(paths, labels, classes, size, cache_dir=cache_dir,
                      name=_safe_name(root), log=log)


def _safe_name(root) -> str:
    base = os.path.basename(os.path.normpath(os.fspath(root))) or "folder"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in base)[:40]


def _tiny_imagenet_val(val_dir: str, classes: Sequence[str], max_per_class: int, seed: int
                       ) -> tuple[list[str], list[int]] | None:
    """Tiny-ImageNet's ``val/images/*.JPEG`` + ``val/val_annotations.txt`` (file \\t wnid ...)."""
    ann = os.path.join(val_dir, "val_annotations.txt")
    if not os.path.isfile(ann):
        return None
    index = {c: k for k, c in enumerate(classes)}
    per_class: dict[int, list[str]] = {}
    with open(ann) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1] in index:
                per_class.setdefault(index[parts[1]], []).append(os.path.join(val_dir, "images", parts[0]))
    paths, labels = [], []
    for k in sorted(per_class):
        files = sorted(per_class[k])
        if max_per_class and len(files) > max_per_class:
            rng = np.random.default_rng([seed, k, 1])
            files = [files[i] for i in sorted(rng.choice(len(files), max_per_class, replace=False))]
        paths += files
        labels += [k] * len(files)
    return paths, labels


def folder_splits(root: str | os.PathLike, size: int, *, max_per_class: int = 0, test_per_class: int = 0,
                  test_fraction: float = 0.1, max_classes: int = 0, seed: int = 0,
                  cache_dir: str | os.PathLike | None = None,
                  log: Callable[[str], None] | None = None) -> tuple[CropSet, CropSet]:
    """Train / held-out sets of an image folder (see module doc).

    ``max_classes``: keep the first classes only (0 = all); ``max_per_class`` caps the training
    images per class; the hold-out has ``test_per_class`` images per class (0: ``test_fraction``
    of each class, at least one, when there is no ``val`` directory; all of ``val`` otherwise).
    """
    root = os.fspath(root)
    train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
    name = _safe_name(root)
    if os.path.isdir(train_dir) and os.path.isdir(val_dir):
        classes = find_classes(train_dir)
        classes = classes[:max_classes] if max_classes else classes
        tr_paths, tr_labels, _ = list_images(train_dir, classes, max_per_class, seed)
        tiny = _tiny_imagenet_val(val_dir, classes, test_per_class, seed)
        if tiny is not None:
            te_paths, te_labels = tiny
        else:
            te_paths, te_labels, _ = list_images(val_dir, [c for c in classes
                                                           if os.path.isdir(os.path.join(val_dir, c))],
                                                 test_per_class, seed + 1)
            # class indices of the val list refer to the train class list
            val_classes = [c for c in classes if os.path.isdir(os.path.join(val_dir, c))]
            te_labels = [classes.index(val_classes[k]) for k in te_labels]
    else:
        classes = find_classes(root)
        classes = classes[:max_classes] if max_classes else classes
        paths, labels, _ = list_images(root, classes, 0, seed)
        tr_paths, tr_labels, te_paths, te_labels = [], [], [], []
        by_class: dict[int, list[str]] = {}
        for p, y in zip(paths, labels):
            by_class.setdefault(y, []).append(p)
        for k, files in sorted(by_class.items()):
            order = np.random.default_rng([seed, k, 2]).permutation(len(files))
            n_test = test_per_class or max(1, int(round(test_fraction * len(files))))
            n_test = min(n_test, len(files) - 1) if len(files) > 1 else 0
            test_idx, train_idx = order[:n_test], order[n_test:]
            if max_per_class:
                train_idx = train_idx[:max_per_class]
            tr_paths += [files[i] for i in sorted(train_idx)]
            tr_labels += [k] * len(train_idx)
            te_paths += [files[i] for i in sorted(test_idx)]
            te_labels += [k] * len(test_idx)
    if not te_paths:
        raise ValueError(f"{root}: no held-out images (need a val/ directory or >= 2 images per class)")
    train = load_files(tr_paths, tr_labels, classes, size, cache_dir=cache_dir, name=f"{name}-train", log=log)
    test = load_files(te_paths, te_labels, classes, size, cache_dir=cache_dir, name=f"{name}-test", log=log)
    return train, test
