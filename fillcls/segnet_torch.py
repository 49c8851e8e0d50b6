"""FillSegNet, the ``learned`` segmentation backend's network (torch); see :mod:`fillcls.segnet`
for the torch-free rest (post-processing, headers) which re-exports the names defined here."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .core import IMAGENET_MEAN, IMAGENET_STD, CheckpointError, CheckpointHeader, Normalize, read_checkpoint
from .segnet_spec import (BOX_OUTPUTS, DEFAULT_INPUT_HW, LRASPP_ARCH, SEGNET_ARCH, check_segmenter_header,
                          frame_to_array, segmenter_outputs)


def _block(cin: int, cout: int, stride: int = 1, convs: int = 2) -> nn.Sequential:
    layers = []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, stride if i == 0 else 1, 1, bias=False),
                   nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class FillSegNet(nn.Module):
    """Foreground (container) logits at 1/2 the input resolution (N x h x w; with ``outputs`` = 5, N x 5 x
    h x w: foreground and the box channels of :func:`fillcls.segnet.box_instances`); inputs in [0, 1]."""

    def __init__(self, width: int = 16, outputs: int = 1):
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
        self.head = nn.Conv2d(c[0], outputs, 1)

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
        out = self.head(d1)
        return out[:, 0] if out.shape[1] == 1 else out


class SegLRASPP(nn.Module):
    """torchvision's MobileNetV3-Large (random init) with an LR-ASPP head: foreground logits at 1/2
    the input resolution, inputs in [0, 1]. The head's detail branch reads the last block at
    output stride ``low_stride`` (8 as in torchvision's ``lraspp_mobilenet_v3_large``, or 4 for
    thin stems); 3.2 M parameters, 13.5 ms at 320 x 240 on 2 AVX2 cores with onnxruntime (FillSegNet:
    16.2 ms in the same run). ``outputs`` as :class:`FillSegNet`'s."""

    def __init__(self, low_stride: int = 8, outputs: int = 1):
        super().__init__()
        from torchvision.models import mobilenet_v3_large
        from torchvision.models.segmentation.lraspp import LRASPPHead

        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        features = mobilenet_v3_large(weights=None).features
        with torch.no_grad():  # each block's output stride, from a probe
            x, strides = torch.zeros(1, 3, 64, 64), []
            for block in features.eval():
                x = block(x)
                strides.append(64 // x.shape[-1])
        if low_stride not in strides:
            raise ValueError(f"low_stride must be one of {sorted(set(strides))}, got {low_stride}")
        self.low_index = max(i for i, s in enumerate(strides) if s == low_stride)
        self.features = features.train()
        low_ch = features[self.low_index].out_channels
        self.head = LRASPPHead(low_ch, features[-1].out_channels, outputs, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.normalize(x)
        low = None
        for i, block in enumerate(self.features):
            y = block(y)
            if i == self.low_index:
                low = y
        out = self.head({"low": low, "high": y})
        out = F.interpolate(out, size=(h // 2, w // 2), mode="bilinear", align_corners=False)
        return out[:, 0] if out.shape[1] == 1 else out


def build_segnet(arch: str = SEGNET_ARCH, width: int = 16, low_stride: int = 8, outputs: int = 1) -> nn.Module:
    """A randomly initialised segmenter of ``arch`` (FillSegNet uses ``width``, LR-ASPP ``low_stride``)
    with ``outputs`` channels (1: foreground; :data:`BOX_OUTPUTS`: foreground + box channels)."""
    if outputs not in (1, BOX_OUTPUTS):
        raise ValueError(f"a segmenter has 1 or {BOX_OUTPUTS} output channels, not {outputs}")
    if arch == LRASPP_ARCH:
        return SegLRASPP(low_stride, outputs)
    if arch == SEGNET_ARCH:
        return FillSegNet(width, outputs)
    raise ValueError(f"unknown segmenter architecture {arch!r}")


def frame_to_input(rgb: np.ndarray, input_hw=DEFAULT_INPUT_HW) -> torch.Tensor:
    """An H x W x 3 uint8 frame as a 3 x h x w float tensor in [0, 1] at the network's size."""
    return torch.from_numpy(frame_to_array(rgb, input_hw))


def load_segnet(path, device="cpu") -> tuple[nn.Module, CheckpointHeader, tuple[int, int]]:
    """Load a segmenter checkpoint: ``(model in eval mode, header, input_hw)``; CheckpointError naming the file."""
    header, state_dict, _ = read_checkpoint(path)
    hw = check_segmenter_header(path, header)
    info = header.training or {}
    model = build_segnet(header.arch, int(info.get("width", 16)), int(info.get("low_stride", 8)),
                         segmenter_outputs(header))
    try:
        model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {header.arch}: {exc}") from exc
    return model.eval().to(device), header, hw
