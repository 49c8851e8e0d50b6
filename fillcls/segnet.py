"""The ``learned`` segmentation backend's network and its mask-to-instances post-processing.

:class:`FillSegNet` is a small encoder-decoder (U-Net-like, ~0.3 M parameters) that maps an RGB
frame shrunk to ``input_hw`` (default 120 x 160) to a container-foreground logit map at half that
resolution. :func:`instances` turns the probability map into one box + mask + score per
container (connected components; parts of one container cut by a hand are merged), or, for a
segmenter with a box head (:data:`BOX_OUTPUTS` channels), :func:`box_instances` from the pixels'
votes for their container's box. Trained by
``python -m training segtrain`` on the procedural full frames; checkpoints use the project
format with ``kind="segmenter"``. :class:`SegLRASPP` (MobileNetV3-Large + LR-ASPP, 3.2 M
parameters; the shipped ``models/segmenter.pt``) has the same inputs and outputs; a header's
``arch`` says which network a file holds.

This module imports no torch: the network itself, :func:`load_segnet` and :func:`frame_to_input`
live in :mod:`fillcls.segnet_torch` and are re-exported here on first use.
"""

from __future__ import annotations

import cv2
import numpy as np

from .spec import CheckpointHeader
from .tracking import box_ious
from .segnet_spec import (BOX_OUTPUTS, DEFAULT_INPUT_HW, LRASPP_ARCH, SEGNET_ARCH, SEGNET_ARCHS,  # noqa: F401
                          check_segmenter_header, frame_to_array, segmenter_outputs)


def instances(prob: np.ndarray, frame_hw: tuple[int, int], threshold: float = 0.5,
              min_area: float = 0.002, merge_overlap: float = 0.5, merge_axis: float = 0.25):
    """Containers in a foreground probability map: a list of ``(box, score, mask)``.

    ``prob`` (h x w, any resolution) is thresholded; connected components covering at least
    ``min_area`` of the map are containers; components whose horizontal extents overlap by
    ``merge_overlap`` of the narrower one and whose centres lie on one vertical axis (within
    ``merge_axis`` of the wider one's width) are one container cut by an occluder (a hand) or
    by a faint part (a glass's stem) and are merged; off-axis ones are two containers, one
    above the other. ``box`` is in frame pixels (x0, y0, x1, y1, exclusive), ``mask`` a
    frame-sized bool array, ``score`` the mean probability inside the mask. Left-to-right order.
    A box-head segmenter's output (:data:`BOX_OUTPUTS` x h x w) goes to :func:`box_instances`.
    """
    if prob.ndim == 3:
        return box_instances(prob, frame_hw, threshold, min_area)
    H, W = frame_hw
    h, w = prob.shape
    fg = (prob >= threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    comps = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area * h * w]
    groups: list[list[int]] = []
    for i in sorted(comps, key=lambda i: -stats[i, cv2.CC_STAT_AREA]):
        x0, x1 = stats[i, 0], stats[i, 0] + stats[i, 2]
        for g in groups:
            gx0 = min(stats[j, 0] for j in g)
            gx1 = max(stats[j, 0] + stats[j, 2] for j in g)
            overlap = min(x1, gx1) - max(x0, gx0)
            on_axis = abs((x0 + x1) - (gx0 + gx1)) / 2 <= merge_axis * max(x1 - x0, gx1 - gx0)
            if on_axis and overlap >= merge_overlap * min(x1 - x0, gx1 - gx0):
                g.append(i)
                break
        else:
            groups.append([i])
    sx, sy = W / w, H / h
    out = []
    for g in groups:
        small = np.isin(labels, g)
        ys, xs = np.nonzero(small)
        box = (int(np.floor(xs.min() * sx)), int(np.floor(ys.min() * sy)),
               min(W, int(np.ceil((xs.max() + 1) * sx))), min(H, int(np.ceil((ys.max() + 1) * sy))))
        out.append((box, float(prob[small].mean()), _frame_mask(small, frame_hw)))
    out.sort(key=lambda d: (d[0][0], d[0][1]))
    return out


def _frame_mask(small: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """A bool mask of the network's output size as a frame-sized bool mask (nearest neighbour)."""
    H, W = frame_hw
    return cv2.resize(small.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST).astype(bool)


def box_instances(maps: np.ndarray, frame_hw: tuple[int, int], threshold: float = 0.5, min_area: float = 0.002,
                  vote_iou: float = 0.2, max_containers: int = 64):
    """Containers in a box-head segmenter's output, as :func:`instances` returns them.

    ``maps`` (:data:`BOX_OUTPUTS` x h x w, after the sigmoid): the foreground probability, then each
    pixel's distances to the left, top, right and bottom edges of its container's box (fractions of
    the frame's width / height). Every foreground pixel of a connected component of at least
    ``min_area`` of the map votes for the box its distances give. Greedily, the vote of the most
    confident, most central pixel and every vote whose box overlaps it by ``vote_iou`` form one
    container (kept if it has ``min_area`` pixels): its box is their median box, its mask their
    pixels, its score their mean probability. Touching neighbours vote for different boxes; the
    parts of one container cut by a hand or a faint stem vote for the same one. (``vote_iou``
    0.2: chosen on frames of S1's *training* containers, 0.1-0.6 tried; docs/model_card.md.)
    """
    H, W = frame_hw
    prob = maps[0]
    h, w = prob.shape
    min_px = max(1.0, min_area * h * w)
    n, labels, stats, _ = cv2.connectedComponentsWithStats((prob >= threshold).astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_px
    ys, xs = np.nonzero(keep[labels])
    if not len(ys):
        return []
    p = prob[ys, xs]
    left, top, right, bottom = maps[1:5, ys, xs]
    cx, cy = (xs.astype(np.float32) + 0.5) / w, (ys.astype(np.float32) + 0.5) / h
    boxes = np.stack([cx - left, cy - top, cx + right, cy + bottom], 1)
    rank = p * np.sqrt(np.minimum(left, right) / np.maximum(np.maximum(left, right), 1e-9)  # p x centre-ness
                       * np.minimum(top, bottom) / np.maximum(np.maximum(top, bottom), 1e-9))
    left_over, out = len(p), []  # a rank of -1 marks a pixel already in a container (others are >= 0)
    while left_over >= min_px and len(out) < max_containers:
        i = int(np.argmax(rank))
        members = (rank >= 0) & (box_ious(boxes[i], boxes) >= vote_iou)
        members[i] = True
        rank[members] = -1.0
        count = int(np.count_nonzero(members))
        left_over -= count
        if count < min_px:
            continue
        bx = np.clip(np.median(boxes[members], 0), 0.0, 1.0) * (W, H, W, H)
        x0, y0 = int(np.floor(bx[0] + 1e-3)), int(np.floor(bx[1] + 1e-3))  # float32 noise is no pixel
        box = (x0, y0, max(x0 + 1, min(W, int(np.ceil(bx[2] - 1e-3)))), max(y0 + 1, min(H, int(np.ceil(bx[3] - 1e-3)))))
        small = np.zeros((h, w), bool)
        small[ys[members], xs[members]] = True
        out.append((box, float(p[members].mean()), _frame_mask(small, frame_hw)))
    out.sort(key=lambda d: (d[0][0], d[0][1]))
    return out


def segmenter_header(input_hw=DEFAULT_INPUT_HW, width: int = 16, model_id: str = "",
                     training: dict | None = None, arch: str = SEGNET_ARCH, outputs: int = 1) -> CheckpointHeader:
    """Checkpoint header of a segmenter of ``arch`` (:data:`SEGNET_ARCHS`; ``input_size`` is the input
    height; the input size, FillSegNet's width and the output channels (when not 1) are in ``training``)."""
    if arch not in SEGNET_ARCHS:
        raise ValueError(f"unknown segmenter architecture {arch!r}; choose from {', '.join(SEGNET_ARCHS)}")
    return CheckpointHeader(arch=arch, classes=("background", "container"), input_size=int(input_hw[0]),
                            model_id=model_id, kind="segmenter",
                            training={"input_hw": list(input_hw), "width": width, **(training or {}),
                                      **({"outputs": outputs} if outputs != 1 else {})})




_TORCH_NAMES = ("FillSegNet", "SegLRASPP", "build_segnet", "load_segnet", "frame_to_input")


def __getattr__(name):
    """The torch names (:data:`_TORCH_NAMES`) from :mod:`fillcls.segnet_torch` (imports torch)."""
    if name in _TORCH_NAMES:
        from . import segnet_torch

        return getattr(segnet_torch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
