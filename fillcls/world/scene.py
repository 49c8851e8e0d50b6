"""Scenes: containers placed on a background, composited (shadows, containers far to near, hands,
exposure) and annotated; the public :func:`render_frame`, :func:`render_crop` and
:func:`contact_sheet`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from ..spec import CLASSES, DEFAULT_MARGIN, crop_square
from .background import background
from .container import draw_container
from .hands import draw_hand
from .instances import FILLINGS, HAND_PROB, LEVEL_FRACTIONS, Instance, make_instance
from . import photos
from .lighting import draw_shadow, expose
from .profiles import CONTAINERS, container_ids, random_shape
from .raster import as_rng as _rng, save_png

if TYPE_CHECKING:
    import torch


def _annotations(inst: Instance, mask: np.ndarray, occlusion: float) -> dict:
    """The annotation dict of one container (see :func:`render_frame`)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    box = (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)
    return {
        "container": inst.spec.id, "name": inst.spec.name, "label": CLASSES.index(inst.level),
        "level": inst.level, "filling": inst.filling, "fill_fraction": inst.fraction, "box": box,
        "mask": mask, "occlusion": occlusion, "occluded": occlusion > 0, "transparent": inst.spec.transparent,
        "view": inst.view,
    }


def _mask_annotations(drawn: list, hand_mask: np.ndarray | None, W: int, H: int) -> list[dict]:
    """Annotations of the drawn containers (``(inst, (x0, y0, coverage) or None)``) with full-canvas
    masks; containers with an empty mask are left out."""
    anns = []
    for inst, placed in drawn:
        if placed is None:
            continue
        x0, y0, coverage = placed
        inside = coverage >= 0.5
        if not inside.any():
            continue
        mask = np.zeros((H, W), bool)
        mask[y0:y0 + inside.shape[0], x0:x0 + inside.shape[1]] = inside
        occlusion = 0.0
        if hand_mask is not None:
            occlusion = float((hand_mask[y0:y0 + inside.shape[0], x0:x0 + inside.shape[1]][inside] > 0).mean())
        anns.append(_annotations(inst, mask, occlusion))
    return anns


def photo_backdrop(rng: np.random.Generator, img: np.ndarray, table_y: float | None, split: str,
                   distractors: int) -> np.ndarray:
    """``img`` (a :func:`background`, H x W x 3 float32) with a real photograph of ``split`` as the
    wall above ``table_y`` (the whole frame without a table) and 0..``distractors`` photographic
    cut-outs pasted on it (:mod:`.photos`; ``make photos``)."""
    H, W = img.shape[:2]
    top = H if table_y is None else int(min(H, max(0.0, table_y)))
    frame = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    if top > 0:
        frame[:top] = photos.background_crop(rng, W, H, split)[:top]
    photos.paste_distractors(frame, rng, int(rng.integers(0, distractors + 1)), split)
    return frame.astype(np.float32)


def _render(rng: np.random.Generator, W: int, H: int, insts: list[Instance], table_y: float | None,
            scale: float, photo_split: str | None = None, distractors: int = 3) -> tuple[np.ndarray, list[dict]]:
    """Render ``insts`` (already placed) on a W x H canvas; annotations with full-canvas masks."""
    img = background(rng, W, H, table_y, scale)
    if photo_split is not None:
        img = photo_backdrop(rng, img, table_y, photo_split, distractors)
    rgb, anns, _ = render_instances(img, insts, rng, table_y, scale)
    return rgb, anns


def render_instances(img: np.ndarray, insts: list[Instance], light_rng: np.random.Generator,
                     table_y: float | None, scale: float) -> tuple[np.ndarray, list[dict], np.ndarray | None]:
    """Draw placed ``insts`` over a background ``img`` (H x W x 3 float32, modified in place), then
    expose it with ``light_rng`` (a hook for :mod:`.sequences`: a fixed background and light).

    Returns the uint8 RGB frame, the annotations (as :func:`render_frame`) and the hand mask
    (H x W uint8, 255 = hand; None without a hand).
    """
    H, W = img.shape[:2]
    drawn = []
    for inst in sorted(insts, key=lambda i: i.by):  # far (higher in the image) first
        if not inst.hand and table_y is not None and inst.by > table_y:
            draw_shadow(img, inst)
        drawn.append((inst, draw_container(img, inst, np.random.default_rng(inst.seed))))
    hand_mask = None
    for inst in insts:
        if inst.hand:
            if hand_mask is None:
                hand_mask = np.zeros((H, W), np.uint8)
            draw_hand(img, hand_mask, inst, np.random.default_rng(inst.seed + 1))
    light_x = insts[0].look["light_x"] if insts else float(light_rng.uniform(-1, 1))
    rgb = expose(img, light_rng, light_x, scale)
    return rgb, _mask_annotations(drawn, hand_mask, W, H), hand_mask


def _place(rng: np.random.Generator, inst: Instance, width: int, height: int, table_y: float | None,
           boxes: list) -> bool:
    """Put ``inst`` at a random spot on the floor or table (higher if held); True (and its box
    added to ``boxes``) if it is inside the frame and clear of ``boxes``."""
    inst.cx = rng.uniform(0.08, 0.92) * width
    ground = table_y if table_y is not None else height * 0.45
    inst.by = rng.uniform(ground + 0.05 * height, height * 0.97)
    if inst.hand:
        inst.by -= rng.uniform(0.0, 0.15) * height
    x0, y0, x1, y1 = inst.image_extent()
    if x0 < 2 or y0 < 2 or x1 > width - 2 or y1 > height - 2:
        return False
    pad = 0.02 * width
    if any(x0 - pad < b[2] and b[0] < x1 + pad and y0 - pad < b[3] and b[1] < y1 + pad for b in boxes):
        return False
    boxes.append((x0, y0, x1, y1))
    return True


def render_frame(seed, width: int = 640, height: int = 480, containers: Sequence[str] | None = None,
                 n_containers: int = 1, level: str | None = None, filling: str | None = None,
                 view: int | None = None, hand_prob: float = HAND_PROB, photo_split: str | None = None,
                 distractors: int = 3, random_shapes: float = 0.0) -> tuple[np.ndarray, list[dict]]:
    """A camera frame (H x W x 3 uint8 RGB) with ``n_containers`` non-overlapping containers.

    ``containers`` restricts the ids that may appear (default: all eight). Returns the frame and
    one annotation dict per container: container, name, label (index into CLASSES), level,
    filling, fill_fraction, box (x0, y0, x1, y1; exclusive; tight around the mask), mask (H x W
    bool, the whole container silhouette, hand-occluded part included), occlusion (fraction of
    the mask covered by a hand), occluded, transparent, view. ``n_containers=0``: background only.
    Annotations are in drawing order (far to near); a container that cannot be placed without
    overlapping the others (after 60 tries at shrinking sizes) is left out. ``seed``: an int, a
    sequence of ints or a ``numpy.random.Generator``. ``photo_split`` (``train`` / ``val``): the wall
    is a real photograph of that split with up to ``distractors`` photographic cut-outs on it
    (:func:`photo_backdrop`; needs ``make photos``); None (default): the procedural backdrop alone.
    ``random_shapes``: the probability that a container gets a random revolved shape
    (:func:`fillcls.world.profiles.random_shape`; its annotations keep its id) instead of its own.
    """
    rng = _rng(seed)
    ids = container_ids(containers)
    table_y = height * rng.uniform(0.25, 0.6) if rng.random() < 0.85 else None
    insts: list[Instance] = []
    boxes: list[tuple[float, float, float, float]] = []
    for _ in range(int(n_containers)):
        spec = CONTAINERS[ids[int(rng.integers(len(ids)))]]
        if random_shapes and rng.random() < random_shapes:
            spec = random_shape(rng, spec)
        base_h = height * rng.uniform(0.22, 0.5) * (spec.height_cm / 14.0) ** 0.5
        for attempt in range(60):
            inst = make_instance(rng, spec, level, filling, view, None, hand_prob,
                                 base_h * (0.9 ** (attempt // 10)))
            if _place(rng, inst, width, height, table_y, boxes):
                insts.append(inst)
                break
    return _render(rng, width, height, insts, table_y, height * 0.35, photo_split, distractors)


def _jittered_box(rng: np.random.Generator, box: tuple, box_jitter: float) -> tuple:
    """``box`` with each side moved by up to ``box_jitter`` x its size (unchanged if it collapses)."""
    if not box_jitter > 0:
        return box
    bx0, by0, bx1, by1 = box
    shift = rng.uniform(-box_jitter, box_jitter, 4) * np.array([bx1 - bx0, by1 - by0] * 2)
    jittered = (bx0 + shift[0], by0 + shift[1], bx1 + shift[2], by1 + shift[3])
    return jittered if jittered[2] > jittered[0] + 1 and jittered[3] > jittered[1] + 1 else box


def render_crop(seed, size: int | None, container: str | None = None, level: str | None = None,
                filling: str | None = None, view: int | None = None, hand: bool | None = None,
                hand_prob: float = HAND_PROB, box_jitter: float = 0.03,
                scale: tuple[float, float] = (0.7, 1.3)) -> tuple[torch.Tensor, dict]:
    """One container crop (3 x size x size uint8 tensor) and its annotations, made as the node does.

    A scene is rendered on a small canvas around the container; the crop is
    ``resize_uint8(crop_square(canvas, box, DEFAULT_MARGIN), size)`` where ``box`` is the
    container mask's box, each side moved by up to ``box_jitter`` x its size (segmenter noise).
    The square's side before the resize is ``size`` x U(``scale``) px (min 40). ``size=None``
    returns the square crop at that native side. ``level`` / ``filling`` / ``view`` / ``hand`` fix
    those choices; ``level`` is the fill level (empty / half / full): an opaque container is always
    labelled ``unknown`` and ``level`` then sets its hidden content (``unknown``: random).
    """
    import torch  # crops are the trainer's; frames (the camera's) need no torch

    from ..core import resize_uint8

    rng = _rng(seed)
    if container is None:
        container = list(CONTAINERS)[int(rng.integers(len(CONTAINERS)))]
    if container not in CONTAINERS:
        raise ValueError(f"unknown container {container!r}; choose from {', '.join(CONTAINERS)}")
    spec = CONTAINERS[container]
    side = max(40.0, (size or 112) * rng.uniform(*scale))
    inst = make_instance(rng, spec, level, filling, view, hand, hand_prob, 100.0)
    # scale the container so that its squared, enlarged box is ``side`` px
    x0, y0, x1, y1 = inst.image_extent()
    inst.height *= side / ((1.0 + 2.0 * DEFAULT_MARGIN) * max(x1 - x0, y1 - y0))
    x0, y0, x1, y1 = inst.image_extent()
    W = H = int(math.ceil(side * (1.0 + 4.0 * box_jitter))) + 6  # the square crop and its jitter
    inst.cx = W / 2.0 - ((x0 + x1) / 2.0 - inst.cx)
    inst.by = H / 2.0 - ((y0 + y1) / 2.0 - inst.by)
    if rng.random() < 0.7:  # table edge behind the container (standing containers)
        table_y = inst.by - inst.height * rng.uniform(0.1, 0.9) * (0.3 if inst.hand else 1.0)
    else:
        table_y = None
    rgb, anns = _render(rng, W, H, [inst], table_y, inst.height)
    ann = anns[0]
    crop = crop_square(rgb, _jittered_box(rng, ann["box"], box_jitter), DEFAULT_MARGIN)
    t = resize_uint8(crop, size) if size else torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)
    meta = {k: v for k, v in ann.items() if k not in ("mask", "box")}
    meta["side"] = int(crop.shape[0])
    return t.contiguous(), meta


def _label_row(sheet: np.ndarray, cid: str, y: int, tile: int) -> None:
    """Container id, name (and ``(label unknown)`` for opaque ones) at the left of a row."""
    font, spec = cv2.FONT_HERSHEY_SIMPLEX, CONTAINERS[cid]
    cv2.putText(sheet, cid, (6, y + tile // 2 - 8), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(sheet, spec.name, (6, y + tile // 2 + 10), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    if not spec.transparent:
        cv2.putText(sheet, "(label unknown)", (6, y + tile // 2 + 26), font, 0.37, (90, 90, 90), 1, cv2.LINE_AA)


def contact_sheet(path: str | None = None, per_level: int = 3, tile: int = 112, seed: int = 0) -> np.ndarray:
    """Grid of crops: rows C1..C8, columns fill 0 / 50 / 90 % (``per_level`` each). Saved if ``path``."""
    ids = list(CONTAINERS)
    head_w, head_h, gap = 150, 22, 2
    cols = len(LEVEL_FRACTIONS) * per_level
    sheet = np.full((head_h + len(ids) * (tile + gap), head_w + cols * (tile + gap) + 8, 3), 255, np.uint8)
    for j, level in enumerate(LEVEL_FRACTIONS):
        x = head_w + j * per_level * (tile + gap) + 6
        cv2.putText(sheet, f"{level} ({int(100 * LEVEL_FRACTIONS[level])}%)", (x, 16),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for r, cid in enumerate(ids):
        y = head_h + r * (tile + gap)
        _label_row(sheet, cid, y, tile)
        for j, level in enumerate(LEVEL_FRACTIONS):
            for k in range(per_level):
                rng = np.random.default_rng([seed, r, j, k])
                fill = FILLINGS[k % len(FILLINGS)] if level != "empty" else None
                t, _ = render_crop(rng, tile, container=cid, level=level, filling=fill,
                                   hand=(k == per_level - 1) and (r + j) % 2 == 0)
                x = head_w + (j * per_level + k) * (tile + gap) + j * 4
                sheet[y:y + tile, x:x + tile] = t.permute(1, 2, 0).numpy()
    if path:
        save_png(path, sheet)
    return sheet
