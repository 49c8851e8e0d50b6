"""Real photographs (issue 16): scene backgrounds, RGBA distractor cut-outs and frames with no
container at all (negatives), from the Debian packages that ``make photos``
(``scripts/fetch_photos.sh``) fetches into ``data/photos/`` (sources and licences: docs/data.md).

``data/photos/index.json`` lists every photo: ``file`` (relative to the folder), ``kind``
(``background`` | ``cutout``), ``split`` (``train`` | ``val``: a fixed hash of the file name, ~20 %
val; keep ``val`` out of all training), package, version, source, licence. Everything here is
deterministic by seed (numpy ``default_rng``); ROS-free and torch-free (numpy / cv2).

Where this plugs in: :func:`background_crop` can replace the 2-D renderer's procedural backdrop
(``fillcls.world.background``), :func:`paste_distractors` adds cut-outs to a rendered frame outside
its containers' masks, :func:`no_container_frame` is a negative frame for the segmenter, and
``fillcls.world.pbr`` uses :func:`background_crop` for its backdrops and environment maps.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..paths import SOURCE_ROOT
from .raster import as_rng as _rng

KINDS = ("background", "cutout")
SPLITS = ("train", "val")
#: Where ``make photos`` puts the photos; ``$FILLCLS_PHOTOS`` overrides it.
DEFAULT_ROOT = SOURCE_ROOT / "data" / "photos"


class PhotosMissingError(FileNotFoundError):
    """The photo folder or its index is missing: run ``make photos``."""


class PhotoIndexError(ValueError):
    """``index.json`` is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Photo:
    """One photo of the index (``path``: absolute)."""

    path: str
    kind: str
    split: str
    package: str
    licence: str


def photos_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$FILLCLS_PHOTOS``, else ``data/photos`` of the source tree."""
    return Path(root or os.environ.get("FILLCLS_PHOTOS") or DEFAULT_ROOT)


def available(root: str | os.PathLike | None = None) -> bool:
    """True if the photo index exists (``make photos`` has run)."""
    return (photos_root(root) / "index.json").is_file()


@functools.lru_cache(maxsize=8)
def _load(index_path: str, mtime: float) -> tuple[Photo, ...]:
    try:
        with open(index_path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise PhotoIndexError(f"{index_path}: not valid JSON ({exc}); rerun `make photos` (FORCE=1)") from exc
    rows = data.get("photos") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise PhotoIndexError(f"{index_path}: no 'photos' list")
    folder, photos = os.path.dirname(index_path), []
    for i, row in enumerate(rows):
        try:
            kind, split, file = row["kind"], row["split"], row["file"]
        except (KeyError, TypeError) as exc:
            raise PhotoIndexError(f"{index_path}: entry {i} lacks {exc}") from None
        if kind not in KINDS or split not in SPLITS or not isinstance(file, str):
            raise PhotoIndexError(f"{index_path}: entry {i} ({file!r}): kind must be one of {KINDS}, "
                                  f"split one of {SPLITS}")
        photos.append(Photo(os.path.join(folder, file), kind, split, str(row.get("package", "")),
                            str(row.get("licence", ""))))
    return tuple(photos)


def load_index(root: str | os.PathLike | None = None) -> tuple[Photo, ...]:
    """All photos of ``root/index.json``; :class:`PhotosMissingError` naming ``make photos`` if absent."""
    index = photos_root(root) / "index.json"
    if not index.is_file():
        raise PhotosMissingError(f"no photo index {index}: run `make photos` (scripts/fetch_photos.sh) "
                                 "to fetch the photographs from the Debian packages")
    return _load(str(index), index.stat().st_mtime)


@functools.lru_cache(maxsize=8)
def _digest(index_path: str, mtime_ns: int, size: int) -> str:
    with open(index_path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()[:16]


def fingerprint(root: str | os.PathLike | None = None) -> str:
    """A short hash of ``index.json`` (every file, split and package version): part of the key of
    each cache of images made from the photographs, so that a changed photo set is not served stale
    renders. :class:`PhotosMissingError` if there is no index."""
    index = photos_root(root) / "index.json"
    if not index.is_file():
        load_index(root)  # raises PhotosMissingError naming `make photos`
    st = index.stat()
    return _digest(str(index), st.st_mtime_ns, st.st_size)


def photos(kind: str, split: str, root: str | os.PathLike | None = None) -> tuple[Photo, ...]:
    """The photos of one kind (``background`` / ``cutout``) and split (``train`` / ``val``)."""
    if kind not in KINDS or split not in SPLITS:
        raise ValueError(f"kind must be one of {KINDS} and split one of {SPLITS}, got {kind!r}, {split!r}")
    chosen = tuple(p for p in load_index(root) if p.kind == kind and p.split == split)
    if not chosen:
        raise PhotosMissingError(f"{photos_root(root) / 'index.json'} has no {split} {kind}: rerun `make photos`")
    return chosen


@functools.lru_cache(maxsize=64)
def _read(path: str, rgba: bool) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise PhotosMissingError(f"cannot read photo {path}: rerun `make photos` (FORCE=1)")
    if rgba:
        if img.ndim != 3 or img.shape[2] != 4:
            raise PhotoIndexError(f"cut-out {path} has no alpha channel")
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)


def read(photo: Photo) -> np.ndarray:
    """The pixels of ``photo``: RGBA (h x w x 4) for a cut-out, RGB for a background; uint8, cached
    and shared between calls (do not modify)."""
    return _read(photo.path, photo.kind == "cutout")


def background_crop(seed, width: int, height: int, split: str = "train",
                    root: str | os.PathLike | None = None, chosen: list | None = None) -> np.ndarray:
    """A ``height x width x 3`` uint8 RGB crop of a random background photo of ``split``: a random
    window of the photo's aspect-corrected region (35-100 % of the largest), maybe mirrored.
    ``chosen``: a list that receives the photo's file name, e.g. for per-photo figures."""
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be >= 1, got {width} x {height}")
    rng = _rng(seed)
    pool = photos("background", split, root)
    pick = pool[int(rng.integers(len(pool)))]
    if chosen is not None:
        chosen.append(Path(pick.path).name)
    img = _read(pick.path, False)
    h, w = img.shape[:2]
    full_w = min(w, h * width / height)  # largest window with the target's aspect
    cw = full_w * rng.uniform(0.35, 1.0)
    ch = cw * height / width
    x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    window = img[int(y0):int(y0 + ch) or 1, int(x0):int(x0 + cw) or 1]
    out = cv2.resize(window, (width, height), interpolation=cv2.INTER_AREA if cw > width else cv2.INTER_LINEAR)
    return np.ascontiguousarray(out[:, ::-1] if rng.random() < 0.5 else out)


def cutout(seed, max_side: int, split: str = "train", root: str | os.PathLike | None = None) -> np.ndarray:
    """A random RGBA cut-out (uint8, ``h x w x 4``) of ``split``, its longest side
    ``max_side`` x U(0.5, 1) px (at least 4), maybe mirrored."""
    rng = _rng(seed)
    pool = photos("cutout", split, root)
    img = _read(pool[int(rng.integers(len(pool)))].path, True)
    side = max(4.0, max_side * rng.uniform(0.5, 1.0))
    s = side / max(img.shape[:2])
    out = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                     interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return np.ascontiguousarray(out[:, ::-1] if rng.random() < 0.5 else out)


def paste(frame: np.ndarray, rgba: np.ndarray, x: int, y: int) -> np.ndarray:
    """Alpha-blend ``rgba`` into ``frame`` (uint8 RGB, in place) with its top-left corner at
    ``(x, y)`` (clipped at the borders); returns the boolean mask of the pasted pixels (alpha > 50 %)."""
    H, W = frame.shape[:2]
    h, w = rgba.shape[:2]
    fx0, fy0, fx1, fy1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    mask = np.zeros((H, W), bool)
    if fx0 >= fx1 or fy0 >= fy1:
        return mask
    part = rgba[fy0 - y:fy1 - y, fx0 - x:fx1 - x].astype(np.float32)
    alpha = part[..., 3:] / 255.0
    region = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    frame[fy0:fy1, fx0:fx1] = np.clip(part[..., :3] * alpha + region * (1 - alpha) + 0.5, 0, 255).astype(np.uint8)
    mask[fy0:fy1, fx0:fx1] = alpha[..., 0] > 0.5
    return mask


def paste_distractors(frame: np.ndarray, seed, n: int, split: str = "train", avoid: np.ndarray | None = None,
                      size: tuple[float, float] = (0.15, 0.45), root: str | os.PathLike | None = None) -> int:
    """Paste up to ``n`` random cut-outs into ``frame`` (in place), each ``size`` x the frame height
    on its longest side, its visible pixels covering at most 5 % of the ``avoid`` mask (H x W bool,
    e.g. the containers' masks; 10 tries each). Returns how many were pasted."""
    rng = _rng(seed)
    H, W = frame.shape[:2]
    limit = 0.05 * max(1, int(avoid.sum())) if avoid is not None else None
    pasted = 0
    for _ in range(int(n)):
        item = cutout(rng, max(4, int(H * rng.uniform(*size))), split, root)
        h, w = item.shape[:2]
        for _ in range(10):
            x, y = int(rng.integers(-w // 4, W - 3 * w // 4 + 1)), int(rng.integers(-h // 4, H - 3 * h // 4 + 1))
            if limit is not None:
                opaque = np.zeros((H, W), bool)
                fx0, fy0, fx1, fy1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
                if fx0 < fx1 and fy0 < fy1:
                    opaque[fy0:fy1, fx0:fx1] = item[fy0 - y:fy1 - y, fx0 - x:fx1 - x, 3] > 0
                if (opaque & avoid).sum() > limit:
                    continue
            paste(frame, item, x, y)
            pasted += 1
            break
    return pasted


def no_container_frame(seed, split: str = "train", width: int = 640, height: int = 480,
                       n_cutouts: tuple[int, int] = (0, 4),
                       root: str | os.PathLike | None = None, chosen: list | None = None) -> tuple[np.ndarray, list]:
    """A negative frame: a background photo of ``split`` with ``n_cutouts`` (inclusive range)
    pasted cut-outs and no container. Returns ``(rgb uint8 H x W x 3, [])`` (the empty list: no
    container annotations, like :func:`fillcls.world.render.render_frame` with none); ``chosen``
    as for :func:`background_crop`."""
    rng = _rng(seed)
    frame = background_crop(rng, width, height, split, root, chosen)
    paste_distractors(frame, rng, int(rng.integers(n_cutouts[0], n_cutouts[1] + 1)), split, root=root)
    return frame, []
