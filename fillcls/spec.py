"""The torch-free half of the classifier's one definition (re-exported by :mod:`fillcls.core`).

Class list, normalisation constants, the crop rule (:func:`square_box`, :func:`crop_square`,
:func:`crop_image_to_square`), the
checkpoint header and a numpy preprocessing (:func:`resize_uint8_np`, :func:`crop_and_preprocess_np`)
for the onnxruntime backend, which must run without importing torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

#: Class names, in the order of the classifier's outputs.
CLASSES: tuple[str, ...] = ("empty", "half", "full", "unknown")
#: Filling percentage of each class (NaN: the level cannot be seen, opaque container).
LEVEL_PERCENT: tuple[float, ...] = (0.0, 50.0, 90.0, float("nan"))
#: ImageNet statistics, the default normalisation of every model.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Architectures the builder knows (torchvision constructor names).
ARCHITECTURES: tuple[str, ...] = ("resnet18", "resnet50", "wide_resnet50_2")
#: Blocks of a ResNet in order; ``L`` fixed layers means the first ``L`` entries (the stem counts
#: with layer1: L=1 fixes stem + layer1, L=4 fixes everything but the head).
RESNET_BLOCKS: tuple[tuple[str, ...], ...] = (
    ("conv1", "bn1", "layer1"),
    ("layer2",),
    ("layer3",),
    ("layer4",),
)
#: Default margin by which a container box is enlarged before it is squared (fraction of side).
DEFAULT_MARGIN = 0.1
CHECKPOINT_FORMAT = "fillcls-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt or does not match what was asked for."""


# --------------------------------------------------------------------------------------------
# Crop geometry
# --------------------------------------------------------------------------------------------

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive), pixels


def square_box(box: Sequence[float], margin: float = DEFAULT_MARGIN) -> Box:
    """Enlarge ``box`` (x0, y0, x1, y1) by ``margin`` of its longer side on each side, then square it.

    The square keeps the box's centre; it may extend past the image (see :func:`crop_square`).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"empty box {tuple(box)}")
    side = max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    side_px = max(1, int(round(side)))
    sx0 = int(math.floor(cx - side_px / 2.0 + 0.5))
    sy0 = int(math.floor(cy - side_px / 2.0 + 0.5))
    return sx0, sy0, sx0 + side_px, sy0 + side_px


def crop_square(image: np.ndarray, box: Sequence[float], margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Square crop of ``image`` (H x W x C) around ``box``; parts outside the image are zero.

    Returns a (side x side x C) array of ``image``'s dtype.
    """
    sx0, sy0, sx1, sy1 = square_box(box, margin)
    h, w = image.shape[:2]
    ix0, iy0, ix1, iy1 = max(sx0, 0), max(sy0, 0), min(sx1, w), min(sy1, h)
    if ix0 == sx0 and iy0 == sy0 and ix1 == sx1 and iy1 == sy1:
        return image[sy0:sy1, sx0:sx1]
    out = np.zeros((sy1 - sy0, sx1 - sx0) + image.shape[2:], dtype=image.dtype)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0 - sy0 : iy1 - sy0, ix0 - sx0 : ix1 - sx0] = image[iy0:iy1, ix0:ix1]
    return out


def crop_image_to_square(image: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """The crop rule for an image that already is a crop (a C-CCM crop, a picture of one container):
    :func:`crop_square` with the whole image as the box, squared around its centre and zero-padded,
    never stretched. ``margin`` 0: a crop image already holds the margin the crop rule added when it
    was cut (the procedural crops, the paper's recipe), so a square crop is kept as it is. It is
    what the node does with a frame whose one box is the whole frame (``full_frame`` backend) at
    ``margin``; the trainer's loaders use it for every crop image."""
    h, w = image.shape[:2]
    return crop_square(image, (0, 0, w, h), margin)


# --------------------------------------------------------------------------------------------
# Torch-free preprocessing (onnxruntime backend)
# --------------------------------------------------------------------------------------------


def resize_uint8_np(crop: np.ndarray, size: int) -> np.ndarray:
    """One H x W x 3 uint8 RGB crop -> size x size x 3 uint8, without torch.

    Pillow's antialiased bilinear resize: the same triangle filter as torchvision's uint8 resize
    (:func:`fillcls.core.resize_uint8`, which was written after Pillow's); only the fixed-point
    rounding differs (Pillow 22 bits, torch 15), so a few pixels differ by 1-2 levels
    (test/test_backends.py measures it).
    """
    from PIL import Image

    if not isinstance(crop, np.ndarray) or crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB crop, got {getattr(crop, 'shape', type(crop))} "
                         f"{getattr(crop, 'dtype', '')}")
    if crop.shape[:2] == (size, size):
        return crop
    img = Image.fromarray(np.ascontiguousarray(crop))
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR))


def preprocess_np(crops: Iterable[np.ndarray], size: int) -> np.ndarray:
    """Stack RGB crops into one B x 3 x size x size float32 batch in [0, 1] (numpy, no torch)."""
    arrays = [resize_uint8_np(c, size) for c in crops]
    if not arrays:
        return np.empty((0, 3, size, size), np.float32)
    batch = np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32)
    batch /= np.float32(255.0)
    return np.ascontiguousarray(batch)


def crop_and_preprocess_np(image: np.ndarray, boxes: Sequence[Sequence[float]], size: int,
                           margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """:func:`fillcls.core.crop_and_preprocess` without torch: the same crops, Pillow's resize."""
    return preprocess_np((crop_square(image, b, margin) for b in boxes), size)


# --------------------------------------------------------------------------------------------
# Checkpoint header
# --------------------------------------------------------------------------------------------


@dataclass
class CheckpointHeader:
    """What a checkpoint says about its model, besides the weights (JSON-able)."""

    arch: str = "resnet18"
    classes: tuple[str, ...] = CLASSES
    input_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    model_id: str = ""
    training: dict[str, Any] | None = None  # how it was trained (strategy, eps, data, ...)
    kind: str = "classifier"  # "classifier" or another model kind (e.g. a segmenter)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "arch": self.arch,
            "classes": list(self.classes),
            "input_size": int(self.input_size),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "model_id": self.model_id,
            "training": self.training or {},
            "kind": self.kind,
        }
        json.dumps(d)  # raises if someone put something non-JSON-able in `training`
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CheckpointHeader":
        return cls(
            arch=str(d["arch"]),
            classes=tuple(d["classes"]),
            input_size=int(d["input_size"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            model_id=str(d.get("model_id", "")),
            training=dict(d.get("training") or {}),
            kind=str(d.get("kind", "classifier")),
        )


def check_classifier_header(path, header: CheckpointHeader) -> None:
    """CheckpointError naming ``path`` unless ``header`` describes a classifier of :data:`CLASSES`."""
    if header.kind != "classifier":
        raise CheckpointError(f"{path}: holds a {header.kind!r} model, not a classifier")
    if tuple(header.classes) != CLASSES:
        raise CheckpointError(f"{path}: classes {list(header.classes)} do not match {list(CLASSES)}")
    if header.arch not in ARCHITECTURES:
        raise CheckpointError(f"{path}: unknown architecture {header.arch!r}")
