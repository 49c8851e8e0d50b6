"""The one definition of the classifier shared by the ROS node and the trainer.

Everything that must be identical at training and inference time lives here:

* the class list (:data:`CLASSES`) and the filling percentage of each class;
* the model builder (:func:`build_model`): a torchvision backbone whose first module is a
  :class:`Normalize` layer, so the model takes images in ``[0, 1]`` and attacks work in pixel space;
* the crop geometry (:func:`square_box`, :func:`crop_square`) and the preprocessing
  (:func:`preprocess`: crop, resize, scale to ``[0, 1]``);
* the checkpoint format (:func:`save_checkpoint`, :func:`load_checkpoint`): a state dict plus a
  small JSON-able header, loaded with ``weights_only=True``.

The torch-free names (class list, constants, crop rule, header, :class:`CheckpointError`) are
defined in :mod:`fillcls.spec` and re-exported here; this module adds the torch parts. It imports
no ROS package.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.transforms.v2 import functional as TF

from .atomic import atomic_write
from .spec import (ARCHITECTURES, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CLASSES, DEFAULT_MARGIN,  # noqa: F401
                   IMAGENET_MEAN, IMAGENET_STD, LEVEL_PERCENT, RESNET_BLOCKS, Box, CheckpointError,
                   CheckpointHeader, check_classifier_header, crop_image_to_square, crop_square,
                   square_box)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as the first layer of the model (inputs in [0, 1])."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class FillingClassifier(nn.Module):
    """``Normalize`` followed by a torchvision classification network (``self.net``)."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def build_model(
    arch: str = "resnet18",
    num_classes: int = len(CLASSES),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> FillingClassifier:
    """Build a randomly initialised classifier: ``Normalize`` + torchvision ``arch``.

    The backbone's state dict keys are those of torchvision under the prefix ``net.``, so
    torchvision / robustness weights load into ``model.net`` unchanged.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    return FillingClassifier(net, mean, std)


def replace_head(model: FillingClassifier, num_classes: int) -> None:
    """Give ``model`` a fresh, randomly initialised final layer with ``num_classes`` outputs."""
    model.net.fc = nn.Linear(model.net.fc.in_features, num_classes)


def fixed_modules(model: FillingClassifier, num_fixed: int) -> list[nn.Module]:
    """The modules fixed when fine-tuning with the first ``num_fixed`` (L) layers fixed."""
    if not 0 <= num_fixed <= len(RESNET_BLOCKS):
        raise ValueError(f"L (fixed layers) must be in 0..{len(RESNET_BLOCKS)}, got {num_fixed}")
    return [getattr(model.net, name) for block in RESNET_BLOCKS[:num_fixed] for name in block]


# --------------------------------------------------------------------------------------------
# Crop geometry and preprocessing
# --------------------------------------------------------------------------------------------

def resize_uint8(crop: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """One RGB crop (H x W x 3 uint8 array, or 3 x H x W uint8 tensor) -> 3 x size x size uint8 tensor.

    torchvision's antialiased bilinear resize on uint8: the one resize of the project, used by the
    node on live crops and by the trainer when it builds its datasets.
    """
    if isinstance(crop, np.ndarray):
        if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 RGB crop, got {crop.shape} {crop.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)
    else:
        t = crop
        if t.ndim != 3 or t.shape[0] != 3 or t.dtype != torch.uint8:
            raise ValueError(f"expected a 3 x H x W uint8 RGB tensor, got {tuple(t.shape)} {t.dtype}")
    if t.shape[-2:] != (size, size):
        t = TF.resize(t, [size, size], antialias=True)
    return t


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape) -> float32 in [0, 1], the model's input range."""
    return images.float().div_(255.0)


def to_tensor(crop: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """One RGB crop -> 3 x size x size float in [0, 1]: :func:`resize_uint8` then :func:`to_float`."""
    return to_float(resize_uint8(crop, size))


def preprocess(crops: Iterable[np.ndarray | torch.Tensor], size: int) -> torch.Tensor:
    """Stack RGB crops into one B x 3 x size x size batch in [0, 1] (see :func:`to_tensor`)."""
    tensors = [to_tensor(c, size) for c in crops]
    if not tensors:
        return torch.empty((0, 3, size, size))
    return torch.stack(tensors)


def crop_and_preprocess(
    image: np.ndarray, boxes: Sequence[Sequence[float]], size: int, margin: float = DEFAULT_MARGIN
) -> torch.Tensor:
    """Crop every box of an RGB ``image`` (paper recipe: enlarge, square, resize) into one batch."""
    return preprocess((crop_square(image, b, margin) for b in boxes), size)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def save_checkpoint(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor],
                    header: CheckpointHeader, extra: Mapping[str, Any] | None = None) -> None:
    """Write ``state_dict`` + ``header`` atomically (temp file + rename) in the project format.

    ``extra`` holds other tensors / plain values (optimiser state, epoch) that must still load
    with ``weights_only=True``.
    """
    path = os.fspath(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "header": json.dumps(header.to_dict()),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
    }
    if extra:
        payload["extra"] = dict(extra)
    # through a file object: a full disk then raises OSError (a path gives torch's RuntimeError)
    atomic_write(path, lambda f: torch.save(payload, f), mode="wb")


def read_checkpoint(path: str | os.PathLike) -> tuple[CheckpointHeader, dict[str, torch.Tensor], dict]:
    """Read a project checkpoint (``weights_only=True``): ``(header, state_dict, extra)``.

    Raises :class:`CheckpointError` naming the file if it is missing, unreadable or not in the
    project format.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt / pickled files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a {CHECKPOINT_FORMAT} file (for torchvision or robustness weights use the "
            "source-model loaders of the trainer)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')!r}, "
                              f"this code reads version {CHECKPOINT_VERSION}")
    try:
        header = CheckpointHeader.from_dict(json.loads(payload["header"]))
    except Exception as exc:
        raise CheckpointError(f"{path}: bad checkpoint header ({exc})") from exc
    return header, payload["state_dict"], payload.get("extra", {})


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu"
                    ) -> tuple[FillingClassifier, CheckpointHeader]:
    """Load a classifier checkpoint into a model in eval mode on ``device``.

    Raises :class:`CheckpointError` naming the file if the file is missing or corrupt, is not a
    classifier, has another class list than :data:`CLASSES`, or its weights do not fit the
    architecture it names.
    """
    header, state_dict, _ = read_checkpoint(path)
    check_classifier_header(path, header)
    model = build_model(header.arch, len(header.classes), header.mean, header.std)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {header.arch}: {exc}") from exc
    return model.eval().to(device), header
