"""The in-memory crop dataset every training routine consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch.utils.data import Dataset

from fillcls.core import CLASSES, to_float


@dataclass
class CropSet(Dataset):
    """Container crops already resized to the model's input size, kept as uint8 in memory.

    ``images``: N x 3 x S x S uint8 (made with :func:`fillcls.core.resize_uint8`);
    ``labels``: N int64 indices into :data:`fillcls.core.CLASSES`;
    ``containers``: N container ids (``"C1"`` .. ``"C8"`` for C-CCM-style data);
    ``meta``: optional per-image annotations (filling type, occlusion, view, ...);
    ``classes``: the class names the labels index (C-CCM levels by default; a source dataset has
    its own).
    ``__getitem__`` returns ``(float image in [0, 1], label)``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    containers: Sequence[str]
    meta: list[dict] = field(default_factory=list)
    classes: Sequence[str] = CLASSES

    def __post_init__(self):
        n = len(self.images)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be N x 3 x S x S uint8, got {tuple(self.images.shape)} "
                             f"{self.images.dtype}")
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64)
        if len(self.labels) != n or len(self.containers) != n:
            raise ValueError(f"{n} images but {len(self.labels)} labels and {len(self.containers)} "
                             "container ids")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise ValueError(f"labels must be in 0..{len(self.classes) - 1}")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return to_float(self.images[i]), self.labels[i]

    @classmethod
    def of_classes(cls, images, labels, classes: Sequence[str]) -> "CropSet":
        """A source dataset's set: ``images`` (N x 3 x S x S uint8, numpy or tensor) labelled by
        indices into ``classes``; each image's ``containers`` entry is its class name."""
        classes = tuple(classes)
        labels = torch.as_tensor(labels, dtype=torch.int64)
        images = images if isinstance(images, torch.Tensor) else torch.from_numpy(images)
        return cls(images, labels, [classes[k] for k in labels.tolist()], [], classes)

    @property
    def input_size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, index: Sequence[int] | torch.Tensor) -> "CropSet":
        """A new CropSet with the rows ``index`` (shares no memory with ``self``)."""
        idx = torch.as_tensor(index, dtype=torch.int64)
        return CropSet(self.images[idx].clone(), self.labels[idx].clone(),
                       [self.containers[i] for i in idx.tolist()],
                       [self.meta[i] for i in idx.tolist()] if self.meta else [], self.classes)

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=len(self.classes))
