"""The one on-disk cache of generated or decoded datasets (procedural crops, fractals, image folders).

A cache file holds named :class:`~training.data.base.CropSet` s (images, labels, container ids,
per-image meta, class names) and is named ``<stem>_<hash of the settings>.<npz|pt>``: ``.npz``
files are read with ``allow_pickle=False``, ``.pt`` files with ``weights_only=True``. A missing,
broken or stale file is rebuilt; files are written atomically (:mod:`fillcls.atomic`), and a cache
that cannot be written is an error naming the file.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Mapping

import numpy as np
import torch

from fillcls.atomic import atomic_path
from training.runs import digest

from .base import CropSet

Sets = dict[str, CropSet]


def cache_path(cache_dir: str | os.PathLike, stem: str, settings: Mapping[str, Any], ext: str = ".npz") -> str:
    """``<cache_dir>/<stem>_<hash of settings><ext>``."""
    return os.path.join(os.fspath(cache_dir), f"{stem}_{digest(dict(settings))}{ext}")


def _arrays(sets: Mapping[str, CropSet]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, cs in sets.items():
        out[f"{name}_images"] = cs.images.numpy()
        out[f"{name}_labels"] = cs.labels.numpy()
        out[f"{name}_containers"] = np.array(list(cs.containers), dtype=str)
        out[f"{name}_classes"] = np.array(list(cs.classes), dtype=str)
        out[f"{name}_meta"] = np.array(json.dumps(cs.meta))
    return out


def save_sets(path: str, sets: Mapping[str, CropSet]) -> None:
    """Write ``sets`` to ``path`` (``.npz`` or ``.pt``) atomically."""
    arrays = _arrays(sets)
    if path.endswith(".pt"):
        data = {k: (torch.from_numpy(v) if v.dtype.kind in "biuf" else v.tolist()) for k, v in arrays.items()}
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(data, f)
    else:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _read(path: str) -> dict[str, Any]:
    if path.endswith(".pt"):
        return dict(torch.load(path, map_location="cpu", weights_only=True))
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _tensor(v: Any) -> torch.Tensor:
    return v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))


def load_sets(path: str, names: tuple[str, ...]) -> Sets | None:
    """The sets ``names`` stored in ``path``, or None if it is missing, broken or incomplete."""
    if not os.path.isfile(path):
        return None
    try:
        d = _read(path)
        out = {}
        for n in names:
            meta = d[f"{n}_meta"]
            out[n] = CropSet(_tensor(d[f"{n}_images"]), _tensor(d[f"{n}_labels"]).to(torch.int64),
                             [str(c) for c in d[f"{n}_containers"]],
                             json.loads(meta if isinstance(meta, str) else str(meta)),
                             tuple(str(c) for c in d[f"{n}_classes"]))
        return out
    except Exception:  # corrupt, truncated or stale file: rebuilt by the caller
        return None


def cached(cache_dir: str | os.PathLike | None, stem: str, settings: Mapping[str, Any],
           build: Callable[[], Sets], names: tuple[str, ...] = ("all",), ext: str = ".npz",
           log: Callable[[str], None] | None = None) -> Sets:
    """The sets ``names`` of ``build()``, read from / written to the cache file of ``settings``
    (no cache when ``cache_dir`` is None)."""
    if not cache_dir:
        return build()
    path = cache_path(cache_dir, stem, settings, ext)
    hit = load_sets(path, names)
    if hit is not None:
        if log:
            log(f"{stem}: {path} (cached)")
        return hit
    sets = build()
    save_sets(path, sets)
    return sets


def cached_train_test(cache_dir: str | os.PathLike | None, stem: str, settings: Mapping[str, Any],
                      make: Callable[[str], CropSet], log: Callable[[str], None] | None = None) -> tuple[CropSet, CropSet]:
    """``make("train")`` and ``make("test")`` (a source dataset's two splits) through :func:`cached`;
    a build is logged with its size and time."""
    def build() -> Sets:
        t0 = time.perf_counter()
        sets = {split: make(split) for split in ("train", "test")}
        if log:
            k, (tr, te) = max(1, len(sets["train"].classes)), (len(sets["train"]), len(sets["test"]))
            log(f"{stem}: {k} classes x ({tr // k} + {te // k}) images at {sets['train'].images.shape[-1]} px "
                f"in {time.perf_counter() - t0:.1f} s")
        return sets

    sets = cached(cache_dir, stem, settings, build, names=("train", "test"), log=log)
    return sets["train"], sets["test"]

