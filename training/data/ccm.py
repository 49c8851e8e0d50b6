"""C-CCM (Crop-CCM) metadata, splits and the crop-manifest format shared by real and procedural data.

Modas et al. (ICIP 2021) crop 10,216 frames of the 8 public CORSMAL Containers Manipulation
containers; :data:`CCM_CONTAINER_COUNTS` / :data:`CCM_CLASS_COUNTS` are their numbers and
:data:`SPLITS` the three train/test configurations of the paper (test containers listed, the others
train).

Manifest format (``manifest.csv``, UTF-8, one header line, one row per crop)::

    image,container,filling,level,occlusion,transparency,view
    crops/000000.png,C5,water,50,0,transparent,2

* ``image``: path of the crop (PNG/JPEG, any size), relative to the manifest's folder (absolute
  paths are kept); on load a non-square crop is zero-padded to a square around its centre
  (:func:`fillcls.core.crop_image_to_square`, the node's crop rule), never stretched, then resized
  with ``resize_uint8``;
* ``container``: ``C1`` .. ``C8`` (:data:`CONTAINER_NAMES`; any other id is an error of
  :func:`read_manifest`, :func:`counts` and :func:`load_manifest`, listed with the others);
* ``filling``: ``none``, ``water``, ``pasta`` or ``rice``;
* ``level``: ``0``, ``50``, ``90`` (percent of the capacity) or ``unknown`` (``empty`` / ``half`` /
  ``full`` are accepted too, and C-CCM's ``opaque``, read as ``unknown``);
* ``occlusion``: hand occlusion, ``0`` / ``1`` or the occluded fraction of the container in [0, 1];
* ``transparency``: ``transparent``, ``translucent`` or ``opaque``; as in the paper a crop of a
  non-transparent container is labelled ``unknown`` whatever its level column says;
* ``view``: camera view (free text, e.g. ``1`` .. ``4``).
"""

from __future__ import annotations

import csv
import os
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from fillcls.atomic import atomic_write
from fillcls.core import CLASSES, crop_image_to_square, resize_uint8

from fillcls.world.containers import (CCM_CLASS_COUNTS, CCM_CONTAINER_COUNTS, CONTAINER_NAMES,  # noqa: F401
                                       OPAQUE, SPLITS, split_containers)

from .base import CropSet

#: Columns of a crop manifest, in order.
MANIFEST_COLUMNS: tuple[str, ...] = ("image", "container", "filling", "level", "occlusion",
                                     "transparency", "view")
FILLINGS: tuple[str, ...] = ("none", "water", "pasta", "rice")
TRANSPARENCIES: tuple[str, ...] = ("transparent", "translucent", "opaque")
#: Level column value -> class name.
_LEVEL_WORDS: dict[str, str] = {
    "0": "empty", "0%": "empty", "empty": "empty",
    "50": "half", "50%": "half", "half": "half",
    "90": "full", "90%": "full", "full": "full",
    "unknown": "unknown", "nan": "unknown", "opaque": "unknown",
}
#: Class name -> level column value written by :func:`write_manifest`.
LEVEL_CODES: dict[str, str] = {"empty": "0", "half": "50", "full": "90", "unknown": "unknown"}
_CONTAINER_RE = re.compile(r"^C\d+$")


class ManifestError(ValueError):
    """A manifest cannot be parsed: names the file, the row number (header = row 1) and the column."""


class MissingImagesError(FileNotFoundError):
    """A manifest's data cannot be trained on: images missing, unreadable or corrupt, or container
    ids outside the known set (:data:`CONTAINER_NAMES`). Found all at once, before any training;
    ``.bad`` lists ``(path, reason)`` for every problem, the message the first
    :attr:`SHOWN` and the counts."""

    SHOWN = 10

    def __init__(self, manifest: str, bad: Sequence[tuple[str, str]]):
        self.manifest, self.bad = manifest, list(bad)
        n_ids = sum(1 for _, why in self.bad if "container id" in why)
        parts = [f"{len(self.bad) - n_ids} image(s) missing, unreadable or corrupt"] if len(self.bad) > n_ids else []
        if n_ids:
            parts.append(f"{n_ids} row(s) with a container id outside {', '.join(CONTAINER_NAMES)}")
        lines = [f"{p} ({why})" for p, why in self.bad[:self.SHOWN]]
        if len(self.bad) > self.SHOWN:
            lines.append(f"... and {len(self.bad) - self.SHOWN} more")
        super().__init__(f"{manifest}: {' and '.join(parts)}:\n  " + "\n  ".join(lines))


def split_cropset(cropset: CropSet, split: str) -> tuple[CropSet, CropSet]:
    """Train and test CropSets of ``split``: the test set holds the split's test containers."""
    _, test_ids = split_containers(split)
    test = set(test_ids)
    is_test = [c in test for c in cropset.containers]
    tr = [i for i, t in enumerate(is_test) if not t]
    te = [i for i, t in enumerate(is_test) if t]
    return cropset.subset(tr), cropset.subset(te)


# --------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------


def class_of(level: str, transparency: str = "transparent", opaque_unknown: bool = True) -> str:
    """Class name of a manifest row from its level and transparency columns."""
    name = _LEVEL_WORDS.get(str(level).strip().lower())
    if name is None:
        raise ValueError(f"level must be 0, 50, 90 or unknown, got {level!r}")
    if opaque_unknown and str(transparency).strip().lower() != "transparent":
        return "unknown"
    return name


def read_manifest(path: str, opaque_unknown: bool = True, known_containers: bool = True) -> list[dict[str, Any]]:
    """Parse and validate a manifest; one dict per row (``image`` resolved, ``label``, ``level`` ...).

    Raises :class:`ManifestError` naming the row number and column of the first bad value and, with
    ``known_containers``, one :class:`MissingImagesError` listing every row whose container id is
    not one of :data:`CONTAINER_NAMES` (C1-C8).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: manifest not found")
    root = os.path.dirname(os.path.abspath(path))
    rows: list[dict[str, Any]] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in MANIFEST_COLUMNS if c not in header]
        if missing:
            raise ManifestError(f"{path}: row 1 (header): missing column(s) {', '.join(missing)}; "
                                f"expected {','.join(MANIFEST_COLUMNS)}")
        reader.fieldnames = header
        for rowno, raw in enumerate(reader, start=2):
            def bad(col: str, why: str) -> ManifestError:
                return ManifestError(f"{path}: row {rowno}, column {col!r}: {why}")

            if None in raw:
                raise bad(MANIFEST_COLUMNS[-1], f"{len(header) + len(raw[None])} fields, expected {len(header)}")
            val = {k: (raw.get(k) or "").strip() for k in MANIFEST_COLUMNS}
            if not val["image"]:
                raise bad("image", "empty path")
            if not _CONTAINER_RE.match(val["container"]):
                raise bad("container", f"expected C1..C8, got {val['container']!r}")
            filling = val["filling"].lower()
            if filling not in FILLINGS:
                raise bad("filling", f"expected one of {', '.join(FILLINGS)}, got {val['filling']!r}")
            transparency = val["transparency"].lower()
            if transparency not in TRANSPARENCIES:
                raise bad("transparency", f"expected one of {', '.join(TRANSPARENCIES)}, "
                                          f"got {val['transparency']!r}")
            try:
                cls = class_of(val["level"], transparency, opaque_unknown)
            except ValueError as e:
                raise bad("level", str(e)) from None
            try:
                occ = float(val["occlusion"])
            except ValueError:
                raise bad("occlusion", f"expected a number in [0, 1], got {val['occlusion']!r}") from None
            if not 0.0 <= occ <= 1.0:
                raise bad("occlusion", f"expected a number in [0, 1], got {val['occlusion']!r}")
            if not val["view"]:
                raise bad("view", "empty")
            image = val["image"] if os.path.isabs(val["image"]) else os.path.join(root, val["image"])
            rows.append({
                "image": image, "row": rowno, "container": val["container"], "filling": filling,
                "level": _LEVEL_WORDS[val["level"].lower()], "label": CLASSES.index(cls), "class": cls,
                "occlusion": occ, "occluded": occ > 0, "transparency": transparency,
                "transparent": transparency == "transparent", "view": val["view"],
            })
    if known_containers:
        bad = [(r["image"], f"row {r['row']}: unknown container id {r['container']!r}")
               for r in rows if r["container"] not in CONTAINER_NAMES]
        if bad:
            raise MissingImagesError(path, bad)
    return rows


def merge_manifests(out: str, paths: Sequence[str]) -> str:
    """Write one manifest at ``out`` listing every row of the manifests ``paths`` (image paths made
    absolute, so the crops stay where they are), e.g. a procedural + path-traced training mix."""
    rows = [r for p in paths for r in read_manifest(p, opaque_unknown=False)]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    return write_manifest(out, [{**r, "image": os.path.abspath(r["image"])} for r in rows])


def _read_rgb(path: str) -> tuple[np.ndarray | None, str]:
    """``(RGB image, "")`` or ``(None, why)``: missing, unreadable, empty or corrupt."""
    import cv2

    if not os.path.isfile(path):
        return None, "missing"
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        return None, f"unreadable: {exc.strerror or exc}"
    if not data.size:
        return None, "empty file"
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        return None, "corrupt (not a decodable PNG/JPEG image)"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), ""


def load_manifest(path: str, size: int, opaque_unknown: bool = True) -> CropSet:
    """The crops of a manifest as a :class:`CropSet` at ``size`` px: each crop padded to a square
    (:func:`fillcls.core.crop_image_to_square`: zero borders, not stretched), then ``resize_uint8``.

    Every row is checked before anything is returned: images missing, unreadable or corrupt and
    container ids outside :data:`CONTAINER_NAMES` raise one :class:`MissingImagesError` that
    lists them (the first few and the count). ``meta`` holds the manifest row of each crop.
    """
    rows = read_manifest(path, opaque_unknown, known_containers=False)  # ids listed below, with the images
    images = torch.empty((len(rows), 3, size, size), dtype=torch.uint8)
    bad: list[tuple[str, str]] = []
    for i, row in enumerate(rows):
        if row["container"] not in CONTAINER_NAMES:
            bad.append((row["image"], f"row {row['row']}: unknown container id {row['container']!r}"))
        rgb, why = _read_rgb(row["image"])
        if rgb is None:
            bad.append((row["image"], f"row {row['row']}: {why}"))
        elif not bad:
            images[i] = resize_uint8(crop_image_to_square(rgb), size)
    if bad:
        raise MissingImagesError(os.fspath(path), bad)
    meta = [{k: v for k, v in r.items() if k not in ("label", "class")} for r in rows]
    return CropSet(images, torch.tensor([r["label"] for r in rows], dtype=torch.int64),
                   [r["container"] for r in rows], meta)


def write_manifest(path: str, rows: Iterable[Mapping[str, Any]]) -> str:
    """Write manifest rows (dicts with the :data:`MANIFEST_COLUMNS`; ``level`` may be a class name)
    atomically."""
    def write(f) -> None:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(MANIFEST_COLUMNS)
        for r in rows:
            level = str(r["level"])
            w.writerow([r["image"], r["container"], r["filling"], LEVEL_CODES.get(level, level),
                        f"{float(r['occlusion']):.4g}", r["transparency"], r["view"]])

    return atomic_write(path, write, newline="", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Counts
# --------------------------------------------------------------------------------------------


def _container_key(c: str) -> tuple:
    digits = "".join(ch for ch in c if ch.isdigit())
    return (int(digits) if digits else 1 << 30, c)


def counts(source: str | CropSet) -> dict[str, Any]:
    """Per-container and per-class counts of a manifest path (images not read) or a CropSet.

    Returns ``{"total": n, "containers": {id: n}, "classes": {class: n}, "table": {id: {class: n}}}``.
    """
    if isinstance(source, CropSet):
        names = list(source.classes)
        pairs = [(c, names[int(y)]) for c, y in zip(source.containers, source.labels.tolist())]
    else:
        names = list(CLASSES)
        pairs = [(r["container"], r["class"]) for r in read_manifest(source)]
    ids = sorted({c for c, _ in pairs}, key=_container_key)
    table = {c: {k: 0 for k in names} for c in ids}
    for c, k in pairs:
        table[c][k] += 1
    return {
        "total": len(pairs),
        "containers": {c: sum(table[c].values()) for c in ids},
        "classes": {k: sum(table[c][k] for c in ids) for k in names},
        "table": table,
    }


def format_counts(result: Mapping[str, Any], reference: bool = True) -> str:
    """A text table of :func:`counts` with the C-CCM numbers (and shares) beside them."""
    classes = list(result["classes"])
    total = max(result["total"], 1)
    ref_total = sum(CCM_CONTAINER_COUNTS.values())
    lines = []
    head = f"{'container':<26}" + "".join(f"{k:>9}" for k in classes) + f"{'total':>9}{'share':>8}"
    if reference:
        head += f"{'C-CCM':>9}{'share':>8}"
    lines += [head, "-" * len(head)]
    for c, row in result["table"].items():
        n = result["containers"][c]
        line = (f"{c + ' ' + CONTAINER_NAMES.get(c, ''):<26}" + "".join(f"{row[k]:>9}" for k in classes)
                + f"{n:>9}{100 * n / total:>7.1f}%")
        if reference and c in CCM_CONTAINER_COUNTS:
            r = CCM_CONTAINER_COUNTS[c]
            line += f"{r:>9}{100 * r / ref_total:>7.1f}%"
        lines.append(line)
    lines.append("-" * len(head))
    lines.append(f"{'total':<26}" + "".join(f"{result['classes'][k]:>9}" for k in classes)
                 + f"{result['total']:>9}{100.0:>7.1f}%" + (f"{ref_total:>9}{100.0:>7.1f}%" if reference else ""))
    lines.append(f"{'share':<26}" + "".join(f"{100 * result['classes'][k] / total:>8.1f}%" for k in classes))
    if reference:
        lines.append(f"{'C-CCM':<26}" + "".join(f"{CCM_CLASS_COUNTS.get(k, 0):>9}" for k in classes)
                     + f"{ref_total:>9}")
        lines.append(f"{'C-CCM share':<26}" + "".join(
            f"{100 * CCM_CLASS_COUNTS.get(k, 0) / ref_total:>8.1f}%" for k in classes))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Writing procedural datasets
# --------------------------------------------------------------------------------------------


def _pbr_items(n: int, size: int | None, seed: int, containers, spp: int, cache_dir, chunk: int = 100):
    """(rgb, meta) of path-traced crops ``0 .. n-1`` (train photo backdrops), rendered ``chunk`` at a
    time through :func:`fillcls.world.pbr.make_cropset_pbr`'s cache (an interrupted run resumes)."""
    from fillcls.world.pbr import make_cropset_pbr

    if not size:
        raise ValueError("renderer pbr: give --size (path-traced crops are rendered at their final size)")
    for start in range(0, n, chunk):
        images, _, metas = make_cropset_pbr(min(chunk, n - start), size, seed, containers, spp=spp, split="train",
                                            cache_dir=cache_dir, start=start)
        for img, m in zip(images, metas):
            yield img.permute(1, 2, 0).numpy(), m


def write_dataset(out_dir: str, n: int, seed: int = 0, size: int | None = None,
                  containers: Sequence[str] | None = None, workers: int | None = None,
                  renderer: str = "procedural", spp: int = 16, cache_dir=None, **kw) -> str:
    """Write ``n`` crops as PNGs (``crops/NNNNNN.png``) and ``manifest.csv``.

    ``renderer``: ``procedural`` (the 2-D renderer, C-CCM proportions) or ``pbr`` (Mitsuba 3 path
    traced, ``spp`` samples per pixel, containers drawn uniformly, train photo backdrops when
    fetched; cached in ``cache_dir``). ``size=None`` keeps each procedural crop at its native side
    (the square cut from the rendered scene, before any resize); an int writes crops resized to
    ``size`` px. Returns the manifest path. ``load_manifest(path, S)`` then gives the same images
    as ``make_cropset(n, S, seed)`` when ``size == S``.
    """
    import cv2

    from . import procedural as P

    if renderer not in ("procedural", "pbr"):
        raise ValueError(f"renderer must be procedural or pbr, got {renderer!r}")
    os.makedirs(os.path.join(out_dir, "crops"), exist_ok=True)
    rows = []
    if renderer == "pbr":
        items = _pbr_items(n, size, seed, containers, spp, cache_dir)
    elif size:
        cs = P.make_cropset(n, size, seed, containers=containers, workers=workers, **kw)
        items = ((cs.images[i].permute(1, 2, 0).numpy(), cs.meta[i]) for i in range(len(cs)))
    else:
        items = P.iter_crops(n, None, seed, containers=containers, **kw)
    for i, (rgb, m) in enumerate(items):
        rel = f"crops/{i:06d}.png"
        if not cv2.imwrite(os.path.join(out_dir, rel), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {os.path.join(out_dir, rel)}")
        # the true fill level, also for opaque containers (labelled unknown on load, as in C-CCM)
        level = {0.0: "empty", 0.5: "half", 0.9: "full"}.get(float(m["fill_fraction"]), m["level"])
        rows.append({"image": rel, "container": m["container"], "filling": m["filling"],
                     "level": level, "occlusion": m["occlusion"],
                     "transparency": "transparent" if m["transparent"] else "opaque", "view": m["view"]})
    return write_manifest(os.path.join(out_dir, "manifest.csv"), rows)
