"""FillSegNet, the ``learned`` segmentation backend's network (torch); see :mod:`fillcls.segnet`
for the torch-free rest (post-processing, headers) which re-exports the names defined here."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .core import IMAGENET_MEAN, IMAGENET_STD, CheckpointError, CheckpointHeader, Normalize, read_checkpoint
from .segnet_spec import DEFAULT_INPUT_HW, SEGNET_ARCH, check_segmenter_header, frame_to_array


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
    return torch.from_numpy(frame_to_array(rgb, input_hw))


def load_segnet(path, device="cpu") -> tuple[FillSegNet, CheckpointHeader, tuple[int, int]]:
    """Load a FillSegNet checkpoint: ``(model in eval mode, header, input_hw)``; CheckpointError naming the file."""
    header, state_dict, _ = read_checkpoint(path)
    hw = check_segmenter_header(path, header)
    info = header.training or {}
    model = FillSegNet(int(info.get("width", 16)))
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {SEGNET_ARCH}: {exc}") from exc
    return model.eval().to(device), header, hw
