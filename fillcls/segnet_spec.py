"""Torch-free definitions of FillSegNet shared by :mod:`fillcls.segnet` and
:mod:`fillcls.segnet_torch`: architecture name, input size, frame preprocessing, header check."""

from __future__ import annotations

import cv2
import numpy as np

from .spec import CheckpointError, CheckpointHeader

SEGNET_ARCH = "fillsegnet"
#: The larger network: torchvision's MobileNetV3-Large encoder with an LR-ASPP head.
LRASPP_ARCH = "lraspp_mobilenet_v3_large"
#: Every segmenter architecture a checkpoint may name.
SEGNET_ARCHS = (SEGNET_ARCH, LRASPP_ARCH)
DEFAULT_INPUT_HW = (120, 160)
#: Output channels of a segmenter with a box head: foreground, then the distances from each pixel to
#: the left, top, right and bottom edges of its container's box (fractions of the frame's width /
#: height), all through a sigmoid (:func:`fillcls.segnet.box_instances`).
BOX_OUTPUTS = 5


def frame_to_array(rgb: np.ndarray, input_hw=DEFAULT_INPUT_HW) -> np.ndarray:
    """An H x W x 3 uint8 frame as a 3 x h x w float32 array in [0, 1] at the network's size."""
    h, w = input_hw
    small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    out = small.transpose(2, 0, 1).astype(np.float32)
    out /= np.float32(255.0)
    return out


def segmenter_outputs(header: CheckpointHeader) -> int:
    """Output channels of a segmenter: 1 (foreground; files without the entry) or :data:`BOX_OUTPUTS`."""
    return int((header.training or {}).get("outputs", 1))


def check_segmenter_header(path, header: CheckpointHeader) -> tuple[int, int]:
    """The network input (h, w) of a segmenter header (:data:`SEGNET_ARCHS`); CheckpointError naming
    ``path`` otherwise."""
    if header.kind != "segmenter" or header.arch not in SEGNET_ARCHS:
        raise CheckpointError(f"{path}: holds a {header.kind!r} {header.arch!r} model, not a segmenter "
                              f"({' or '.join(SEGNET_ARCHS)})")
    if segmenter_outputs(header) not in (1, BOX_OUTPUTS):
        raise CheckpointError(f"{path}: a segmenter with {segmenter_outputs(header)} output channels; this "
                              f"version reads 1 or {BOX_OUTPUTS}")
    return tuple(int(v) for v in (header.training or {}).get("input_hw", DEFAULT_INPUT_HW))
