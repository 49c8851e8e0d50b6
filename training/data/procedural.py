"""Procedural C-CCM-like datasets for the trainer, rendered by :mod:`fillcls.world.render`.

:func:`plan` (container / level pairs in C-CCM's proportions), :func:`make_cropset` (a whole
:class:`~training.data.base.CropSet`, parallel, deterministic, cached), :func:`iter_crops` and
:func:`write_frames` (camera frames + masks on disk, for the segmenter).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from typing import Sequence

import cv2
import numpy as np
import torch

from fillcls.atomic import WriteError, atomic_path
from fillcls.world.containers import CCM_CONTAINER_COUNTS
from fillcls.world.profiles import container_ids
from fillcls.world.render import (CONTAINERS, FILLINGS, GENERATOR_VERSION, LEVEL_FRACTIONS,  # noqa: F401
                                  TRANSPARENT_LEVEL_P, ContainerSpec, Profile, _bank, contact_sheet,
                                  render_crop, render_frame)

from .base import CropSet
from .cache import cached

# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


def _largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    w = np.asarray(weights, np.float64)
    raw = total * w / w.sum()
    out = np.floor(raw).astype(int)
    rest = total - int(out.sum())
    order = np.argsort(-(raw - out), kind="stable")
    out[order[:rest]] += 1
    return out.tolist()


def plan(n: int, seed: int = 0, containers: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """``n`` (container, level) pairs with C-CCM's proportions, shuffled by ``seed``.

    Container counts follow :data:`CCM_CONTAINER_COUNTS` (restricted to ``containers``), fill
    levels (empty / half / full) :data:`TRANSPARENT_LEVEL_P` for every container; the class of an
    opaque container's crop is ``unknown`` whatever its (hidden) fill level.
    """
    ids = container_ids(containers)
    pairs: list[tuple[str, str]] = []
    for c, nc in zip(ids, _largest_remainder(n, [CCM_CONTAINER_COUNTS.get(c, 1) for c in ids])):
        for lvl, k in zip(TRANSPARENT_LEVEL_P, _largest_remainder(nc, list(TRANSPARENT_LEVEL_P.values()))):
            pairs += [(c, lvl)] * k
    order = np.random.default_rng([int(seed), 0x5EED]).permutation(len(pairs))
    return [pairs[i] for i in order]


def _render_chunk(args) -> tuple[np.ndarray, list[dict]]:
    seed, size, items, kw = args
    imgs = np.empty((len(items), 3, size, size), np.uint8)
    metas = []
    for j, (i, c, lvl) in enumerate(items):
        t, m = render_crop(np.random.default_rng([int(seed), int(i)]), size, container=c, level=lvl, **kw)
        imgs[j] = t.numpy()
        m["index"] = int(i)
        metas.append(m)
    return imgs, metas


def iter_crops(n: int, size: int | None, seed: int = 0, containers: Sequence[str] | None = None, **kw):
    """Yield ``(H x W x 3 uint8 crop, meta)`` of sample 0..n-1 of :func:`make_cropset` (same
    plan and per-sample seeds; ``size=None``: native side, not resized)."""
    for i, (c, lvl) in enumerate(plan(n, seed, containers)):
        t, m = render_crop(np.random.default_rng([int(seed), int(i)]), size, container=c, level=lvl, **kw)
        m["index"] = i
        yield t.permute(1, 2, 0).numpy(), m


def _init_worker() -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _bank()


def _pool_context():
    """``forkserver`` (a clean single-threaded parent: forking the caller, which may run torch /
    OpenMP / cv2 threads, can deadlock the children), else ``spawn``."""
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["fillcls.world.render"])
        return ctx
    return mp.get_context("spawn")


def make_cropset(n: int, size: int, seed: int = 0, containers: Sequence[str] | None = None,
                 workers: int | None = None, cache_dir: str | None = None, progress: bool = False,
                 **kw) -> CropSet:
    """``n`` procedural crops at ``size`` px with C-CCM's container and class proportions.

    Deterministic for ``seed`` (same bytes whatever ``workers``); ``containers`` restricts the
    container ids (proportions renormalised). ``workers``: processes (default: up to 2 for
    n >= 1000, env ``FILLCLS_DATA_WORKERS`` overrides; started with ``forkserver``, so a calling
    script needs the usual ``if __name__ == "__main__":`` guard). ``cache_dir``: read / write an ``.npz`` keyed
    by (n, size, seed, containers, kw, generator version; :mod:`training.data.cache`). Extra ``kw`` go to :func:`render_crop`
    (``hand_prob``, ``box_jitter``, ``scale``). ``meta`` holds each crop's annotations.
    """
    n, size, seed = int(n), int(size), int(seed)
    settings = {"n": n, "size": size, "seed": seed, "containers": list(containers or []),
                "kw": {k: kw[k] for k in sorted(kw)}, "version": GENERATOR_VERSION}
    return cached(cache_dir, f"procedural_n{n}_s{size}_seed{seed}", settings,
                  lambda: {"all": _render_cropset(n, size, seed, containers, workers, progress, kw)})["all"]


def _render_cropset(n: int, size: int, seed: int, containers, workers, progress: bool, kw) -> CropSet:
    pairs = plan(n, seed, containers)
    items = [(i, c, lvl) for i, (c, lvl) in enumerate(pairs)]
    if workers is None:
        env = os.environ.get("FILLCLS_DATA_WORKERS")
        workers = int(env) if env else (min(2, os.cpu_count() or 1) if n >= 1000 else 1)
    chunk = 64
    jobs = [(seed, size, items[k:k + chunk], kw) for k in range(0, n, chunk)]
    t0 = time.time()
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(jobs) > 1:
            pool = stack.enter_context(_pool_context().Pool(workers, initializer=_init_worker))
            results = pool.imap(_render_chunk, jobs)
        else:
            results = map(_render_chunk, jobs)
        parts = []
        for k, part in enumerate(results):
            parts.append(part)
            if progress:
                print(f"\r{min((k + 1) * chunk, n)}/{n} crops ({time.time() - t0:.0f} s)", end="", flush=True)
    if progress:
        print()
    images = torch.from_numpy(np.concatenate([p[0] for p in parts])) if parts else \
        torch.empty((0, 3, size, size), dtype=torch.uint8)
    meta = [m for p in parts for m in p[1]]
    return CropSet(images, torch.tensor([m["label"] for m in meta], dtype=torch.int64),
                   [m["container"] for m in meta], meta)


def write_frames(out_dir: str, n: int, seed: int = 0, width: int = 640, height: int = 480,
                 containers: Sequence[str] | None = None, n_containers: int = 1, **kw) -> str:
    """Write ``n`` frames (``frames/NNNNNN.png``), instance masks (``masks/NNNNNN.png``: 0 =
    background, k = annotation k) and ``frames.jsonl`` (one line per frame: image, mask,
    annotations without masks). Returns the path of ``frames.jsonl``."""
    os.makedirs(os.path.join(out_dir, "frames"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "masks"), exist_ok=True)
    path = os.path.join(out_dir, "frames.jsonl")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for i in range(int(n)):
            rgb, anns = render_frame(np.random.default_rng([int(seed), i]), width, height, containers,
                                     n_containers, **kw)
            ids = np.zeros((height, width), np.uint8)
            for k, a in enumerate(anns, start=1):
                ids[a["mask"]] = k
            img_rel, mask_rel = f"frames/{i:06d}.png", f"masks/{i:06d}.png"
            for rel, img in ((img_rel, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)), (mask_rel, ids)):
                if not cv2.imwrite(os.path.join(out_dir, rel), img):
                    raise WriteError(errno.EIO, f"{os.path.join(out_dir, rel)}: cannot write")
            f.write(json.dumps({"image": img_rel, "mask": mask_rel,
                                "containers": [{k: v for k, v in a.items() if k != "mask"} for a in anns]}) + "\n")
    return path
