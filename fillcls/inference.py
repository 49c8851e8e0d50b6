"""ROS-free inference core of the node: frame -> containers -> filling levels.

:class:`FillingEstimator` segments an RGB frame with a backend of :mod:`fillcls_ros.segmentation`,
crops every container with the paper's recipe and the trainer's preprocessing
(:func:`fillcls_ros.core.crop_and_preprocess`) and classifies all crops in one batch.
:func:`draw_debug` renders the results on the frame.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from . import segmentation
from .core import (CLASSES, DEFAULT_MARGIN, LEVEL_PERCENT, CheckpointHeader, crop_and_preprocess,
                   load_classifier)

_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def resolve_device(name: str) -> tuple[torch.device, str | None]:
    """``cpu``, ``cuda`` or ``cuda:N`` -> (device to use, warning or None).

    Raises ValueError for another string; falls back to the CPU, with a warning, when CUDA or
    that GPU index is not available.
    """
    if not _DEVICE_RE.match(name):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if name == "cpu":
        return torch.device("cpu"), None
    if not torch.cuda.is_available():
        return torch.device("cpu"), f"device {name!r} requested but CUDA is not available: using the CPU"
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        return torch.device("cpu"), (f"device {name!r} requested but only {torch.cuda.device_count()} "
                                     "GPU(s) present: using the CPU")
    return torch.device(name), None


@dataclass
class ContainerResult:
    """The filling level of one container of a frame."""

    level: int  # index into CLASSES
    percentage: float  # LEVEL_PERCENT[level] (NaN for unknown)
    confidence: float  # probabilities[level]
    probabilities: tuple[float, ...]
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels, clipped to the frame
    segmentation_score: float
    mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return CLASSES[self.level]

    @property
    def roi(self) -> tuple[int, int, int, int]:
        """``(x_offset, y_offset, width, height)``."""
        x0, y0, x1, y1 = self.box
        return x0, y0, x1 - x0, y1 - y0


def jit_for_cpu(model: torch.nn.Module, size: int) -> torch.nn.Module:
    """``model`` traced, frozen and optimised for CPU inference (oneDNN conv/BN fusion).

    Equal outputs to ``model`` (up to float rounding) for any batch size and input size; falls back
    to ``model`` itself if tracing fails.
    """
    import warnings

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model.eval(), torch.rand(1, 3, size, size))
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    except Exception:  # pragma: no cover - unusual architectures
        return model


@dataclass
class EstimatorConfig:
    """Everything that defines a :class:`FillingEstimator` (the node's parameters)."""

    model_path: str
    device: str = "cpu"
    fp16: bool = False
    input_size: int = 0  # 0: the checkpoint's input size
    segmentation_backend: str = "learned"  # the shipped models/segmenter.pt
    segmentation_score_threshold: float = 0.5
    max_containers: int = 5
    margin: float = DEFAULT_MARGIN
    segmentation_model: str = ""  # learned / maskrcnn weights ("" = packaged segmenter for learned)
    segmentation_mask_threshold: float = 0.5
    maskrcnn_classes: tuple = ("cup", "wine glass")
    cpu_jit: bool = True  # TorchScript-freeze the model for CPU inference (same outputs, ~15 % faster)


class FillingEstimator:
    """Segment, crop, preprocess and classify; one instance per model/device configuration.

    Raises :class:`fillcls_ros.core.CheckpointError` (naming the file) if the model cannot be
    loaded and ValueError for a bad device string or backend name. ``warnings`` collects the
    non-fatal problems met while building (CUDA fallback, fp16 on CPU, input size override).
    """

    def __init__(self, config: EstimatorConfig):
        self.config = config
        self.warnings: list[str] = []
        self.device, warning = resolve_device(config.device)
        if warning:
            self.warnings.append(warning)
        self.segment = segmentation.make_segmenter(
            config.segmentation_backend, model=config.segmentation_model,
            mask_threshold=config.segmentation_mask_threshold, classes=tuple(config.maskrcnn_classes),
            device=str(self.device))
        self.model, self.header = load_classifier(config.model_path, self.device)
        self.fp16 = bool(config.fp16) and self.device.type == "cuda"
        if config.fp16 and not self.fp16:
            self.warnings.append("fp16 needs a CUDA device: running in fp32")
        if self.fp16:
            self.model.half()
        self.input_size = int(config.input_size) or self.header.input_size
        self.eager_model = self.model
        if config.cpu_jit and self.device.type == "cpu":
            self.model = jit_for_cpu(self.model, self.input_size)
        if self.input_size != self.header.input_size:
            self.warnings.append(f"input_size {self.input_size} differs from the {self.header.input_size} px "
                                 f"the model was trained at ({config.model_path})")
        self.last_timing: dict[str, float] = {}
        self.warm_up()

    def warm_up(self, frames: int = 2) -> None:
        """Run a blank frame through segmentation and a batch through the classifier, so the first
        camera frame does not pay for lazy initialisation (TorchScript profiling runs, allocator)."""
        blank = np.zeros((240, 320, 3), np.uint8)
        x = torch.zeros(2, 3, self.input_size, self.input_size)
        for _ in range(frames):
            self.segment(blank)
            self.classify(x)

    @property
    def model_id(self) -> str:
        return self.header.model_id

    @torch.inference_mode()
    def classify(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B x 4, float32 on CPU) of a B x 3 x S x S batch in [0, 1]."""
        if len(batch) == 0:
            return torch.empty((0, len(CLASSES)))
        x = batch.to(self.device, non_blocking=True)
        x = x.half() if self.fp16 else x
        return torch.softmax(self.model(x).float(), dim=1).cpu()

    def predict(self, rgb: np.ndarray) -> list[ContainerResult]:
        """Filling level of every container found in an H x W x 3 uint8 RGB frame."""
        t0 = time.perf_counter()
        dets = segmentation.select(self.segment(rgb), self.config.segmentation_score_threshold,
                                   self.config.max_containers)
        t1 = time.perf_counter()
        batch = crop_and_preprocess(rgb, [d.box for d in dets], self.input_size, self.config.margin)
        t2 = time.perf_counter()
        probs = self.classify(batch)
        t3 = time.perf_counter()
        self.last_timing = {"segment": t1 - t0, "preprocess": t2 - t1, "classify": t3 - t2}
        h, w = rgb.shape[:2]
        results = []
        for det, p in zip(dets, probs.tolist()):
            level = int(np.argmax(p))
            x0, y0, x1, y1 = det.box
            box = (max(0, x0), max(0, y0), min(w, x1), min(h, y1))
            results.append(ContainerResult(level, LEVEL_PERCENT[level], float(p[level]), tuple(p), box,
                                           float(det.score), det.mask))
        return results


_COLOURS = ((66, 135, 245), (46, 204, 113), (231, 76, 60), (160, 160, 160))  # RGB per class


def draw_debug(rgb: np.ndarray, results: list[ContainerResult]) -> np.ndarray:
    """A copy of ``rgb`` with each container's mask tinted, its box and ``label pct conf`` drawn."""
    out = np.array(rgb, dtype=np.uint8, copy=True)
    for r in results:
        colour = _COLOURS[r.level]
        if r.mask is not None and r.mask.shape == out.shape[:2]:
            out[r.mask] = (0.6 * out[r.mask] + 0.4 * np.array(colour)).astype(np.uint8)
        x0, y0, x1, y1 = r.box
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, 2)
        pct = "?" if math.isnan(r.percentage) else f"{r.percentage:.0f}%"
        text = f"{r.label} {pct} {r.confidence:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        ty = max(th + 4, y0)
        cv2.rectangle(out, (x0, ty - th - 4), (x0 + tw + 4, ty), colour, -1)
        cv2.putText(out, text, (x0 + 2, ty - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return out


def describe(header: CheckpointHeader) -> str:
    """One line about a loaded model, for logs."""
    t = header.training or {}
    how = ", ".join(f"{k}={t[k]}" for k in ("strategy", "split", "eps_source", "eps_target", "L") if k in t)
    return f"{header.arch} @ {header.input_size}px, id {header.model_id or '?'}" + (f" ({how})" if how else "")
