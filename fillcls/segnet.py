"""The ``learned`` segmentation backend's network and its mask-to-instances post-processing.

:class:`FillSegNet` is a small encoder-decoder (U-Net-like, ~0.2 M parameters) that maps an RGB
frame shrunk to ``input_hw`` (default 120 x 160) to a container-foreground logit map at half that
resolution. :func:`instances` turns the probability map into one box + mask + score per
container (connected components; parts of one container cut by a hand are merged). Trained by
``python -m training segtrain`` on the procedural full frames; checkpoints use the project
format with ``kind="segmenter"``.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from .core import CheckpointError, CheckpointHeader, IMAGENET_MEAN, IMAGENET_STD, Normalize, read_checkpoint

SEGNET_ARCH = "fillsegnet"
DEFAULT_INPUT_HW = (120, 160)


def _block(cin: int, cout: int, stride: int = 1, convs: int = 2) -> nn.Sequential:
    layers = []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, stride if i == 0 else 1, 1, bias=False),
                   nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class FillSegNet(nn.Module):
    """Foreground (container) logits at 1/2 the input resolution; inputs in [0, 1]."""

    def __init__(self, width: int = 16):
        super().__init__()
        c = [width, 2 * width, 4 * width, 6 * width]
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.enc1 = _block(3, c[0], 2, 1)   # 1/2
        self.enc2 = _block(c[0], c[1], 2)   # 1/4
        self.enc3 = _block(c[1], c[2], 2)   # 1/8
        self.enc4 = _block(c[2], c[3], 2)   # 1/16
        self.dec3 = _block(c[3] + c[2], c[2], 1, 1)
        self.dec2 = _block(c[2] + c[1], c[1], 1, 1)
        self.dec1 = _block(c[1] + c[0], c[0], 1, 1)
        self.head = nn.Conv2d(c[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(self.normalize(x))
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)

        def up(a, skip):
            return torch.cat([F.interpolate(a, size=skip.shape[-2:], mode="bilinear", align_corners=False),
                              skip], 1)

        d3 = self.dec3(up(e4, e3))
        d2 = self.dec2(up(d3, e2))
        d1 = self.dec1(up(d2, e1))
        return self.head(d1)[:, 0]


def frame_to_input(rgb: np.ndarray, input_hw=DEFAULT_INPUT_HW) -> torch.Tensor:
    """An H x W x 3 uint8 frame as a 3 x h x w float tensor in [0, 1] at the network's size."""
    h, w = input_hw
    small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1).float().div_(255.0)


def instances(prob: np.ndarray, frame_hw: tuple[int, int], threshold: float = 0.5,
              min_area: float = 0.002, merge_overlap: float = 0.5):
    """Containers in a foreground probability map: a list of ``(box, score, mask)``.

    ``prob`` (h x w, any resolution) is thresholded; connected components covering at least
    ``min_area`` of the map are containers; components whose horizontal extents overlap by
    ``merge_overlap`` of the narrower one are one container cut by an occluder (a hand) and are
    merged. ``box`` is in frame pixels (x0, y0, x1, y1, exclusive), ``mask`` a frame-sized bool
    array, ``score`` the mean probability inside the mask. Left-to-right order.
    """
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
            if overlap >= merge_overlap * min(x1 - x0, gx1 - gx0):
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
        mask = cv2.resize(small.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST).astype(bool)
        out.append((box, float(prob[small].mean()), mask))
    out.sort(key=lambda d: (d[0][0], d[0][1]))
    return out


def segmenter_header(input_hw=DEFAULT_INPUT_HW, width: int = 16, model_id: str = "",
                     training: dict | None = None) -> CheckpointHeader:
    """Checkpoint header of a FillSegNet (``input_size`` is the input height; width in training)."""
    return CheckpointHeader(arch=SEGNET_ARCH, classes=("background", "container"), input_size=int(input_hw[0]),
                            model_id=model_id, kind="segmenter",
                            training={"input_hw": list(input_hw), "width": width, **(training or {})})


def load_segnet(path, device="cpu") -> tuple[FillSegNet, CheckpointHeader, tuple[int, int]]:
    """Load a FillSegNet checkpoint: ``(model in eval mode, header, input_hw)``; CheckpointError naming the file."""
    header, state_dict, _ = read_checkpoint(path)
    if header.kind != "segmenter" or header.arch != SEGNET_ARCH:
        raise CheckpointError(f"{path}: holds a {header.kind!r} {header.arch!r} model, not a {SEGNET_ARCH} segmenter")
    info = header.training or {}
    model = FillSegNet(int(info.get("width", 16)))
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {SEGNET_ARCH}: {exc}") from exc
    hw = tuple(int(v) for v in info.get("input_hw", DEFAULT_INPUT_HW))
    return model.eval().to(device), header, hw
