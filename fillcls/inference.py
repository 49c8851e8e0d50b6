"""ROS-free inference core of the node: frame -> containers -> filling levels.

:class:`FillingEstimator` segments an RGB frame with a backend of :mod:`fillcls.segmentation`,
crops every container with the paper's recipe and the trainer's preprocessing
(:func:`fillcls.core.crop_and_preprocess`) and classifies all crops in one batch with a runner
of :mod:`fillcls.backends` (torch or onnxruntime); :meth:`FillingEstimator.predict_many` does
the same for several frames (cameras) with one forward for all their crops. :func:`draw_debug`
renders the results on the frame. torch is imported only by the torch backend: with ``inference_backend="onnxruntime"``
(and a segmentation backend other than ``maskrcnn``) nothing here imports it.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from . import backends, segmentation
from .spec import CLASSES, DEFAULT_MARGIN, LEVEL_PERCENT, CheckpointHeader, crop_and_preprocess_np

_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def resolve_device(name: str):
    """``cpu``, ``cuda`` or ``cuda:N`` -> (device to use, warning or None).

    Raises ValueError for another string; falls back to the CPU, with a warning, when CUDA or
    that GPU index is not available. Imports torch (the torch backend's device check).
    """
    import torch

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
    # torch backend: fold BatchNorm into the convolutions and run channels-last, on the CPU and
    # on CUDA (fillcls.backends.fold_batchnorm; same outputs). The name is historical: no TorchScript.
    cpu_jit: bool = True
    inference_backend: str = "auto"  # torch | onnxruntime | auto (by the model file: .onnx -> onnxruntime)
    # auto (int8 when onnxruntime runs on the CPU and <model>.int8.onnx is beside the model, else fp32)
    # | fp32 | bf16 (torch, CPU with AMX / AVX512-BF16) | int8 (onnxruntime) | fp16 (CUDA)
    precision: str = "auto"
    int8_recheck: float = backends.INT8_RECHECK_MARGIN  # int8: near-tie answers recomputed in fp32 (0: off)
    cpu_threads: int = 0  # onnxruntime intra-op threads (0: one per core); torch threads are process-wide


class FillingEstimator:
    """Segment, crop, preprocess and classify; one instance per model/device configuration.

    Raises :class:`fillcls.spec.CheckpointError` (naming the file) if the model cannot be
    loaded and ValueError for a bad device string, backend or precision name. ``warnings``
    collects the non-fatal problems met while building (CUDA fallback, fp16 / bf16 unavailable,
    input size override). ``backend`` is the resolved inference backend (``torch`` or
    ``onnxruntime``).
    """

    def __init__(self, config: EstimatorConfig):
        self.config = config
        self.warnings: list[str] = []
        precision = backends.check_precision(config.precision)
        if config.fp16 and precision in ("fp32", "auto"):
            precision = "fp16"  # the legacy fp16 switch
        backends.check_options(config.inference_backend, precision, [config.device])
        self.backend = backends.resolve_backend(config.inference_backend, config.model_path)
        device = config.device
        if self.backend == "torch":
            self.device, warning = resolve_device(config.device)
            device = str(self.device)
            if warning:
                self.warnings.append(warning)
        self.runner, self.header = backends.load_classifier_runner(
            config.model_path, self.backend, device, precision, config.cpu_threads, optimize=config.cpu_jit,
            int8_recheck=config.int8_recheck)
        self.warnings += self.runner.warnings
        if self.backend == "onnxruntime":
            self.device = "cpu" if self.runner.providers[0] == "CPUExecutionProvider" else device
        self.precision = self.runner.precision
        self.fp16 = self.precision == "fp16"
        self.segment = segmentation.make_segmenter(
            config.segmentation_backend, model=config.segmentation_model,
            mask_threshold=config.segmentation_mask_threshold, classes=tuple(config.maskrcnn_classes),
            device=str(self.device), inference_backend=self.backend, threads=config.cpu_threads,
            precision="fp32" if precision in ("int8", "auto") else precision)
        self.warnings += [w for w in getattr(self.segment, "warnings", []) if w not in self.warnings]
        self.input_size = int(config.input_size) or self.header.input_size
        if self.input_size != self.header.input_size:
            self.warnings.append(f"input_size {self.input_size} differs from the {self.header.input_size} px "
                                 f"the model was trained at ({config.model_path})")
        self.last_timing: dict[str, float] = {}
        self.last_batch_size = 0
        self.warm_up()

    def warm_up(self, frames: int = 2) -> None:
        """Run a blank frame through segmentation and a batch through the classifier, so the first
        camera frame does not pay for lazy initialisation (allocator, oneDNN / ORT kernels)."""
        blank = np.zeros((240, 320, 3), np.uint8)
        x = np.zeros((2, 3, self.input_size, self.input_size), np.float32)
        for _ in range(frames):
            self.segment(blank)
            self.classify(x)

    @property
    def model_id(self) -> str:
        return self.header.model_id

    def classify(self, batch):
        """Class probabilities (B x 4, float32 on the CPU) of a B x 3 x S x S batch in [0, 1]:
        a torch tensor with the torch backend, a numpy array with onnxruntime."""
        if self.backend == "onnxruntime":
            if len(batch) == 0:
                return np.empty((0, len(CLASSES)), np.float32)
            return self.runner(batch)
        import torch

        if len(batch) == 0:
            return torch.empty((0, len(CLASSES)))
        return self.runner.forward(batch)

    def preprocess(self, rgb: np.ndarray, boxes) -> object:
        """The batch of crops of ``boxes``: torch's resize for torch, Pillow's for onnxruntime."""
        if self.backend == "onnxruntime":
            return crop_and_preprocess_np(rgb, boxes, self.input_size, self.config.margin)
        from .core import crop_and_preprocess

        return crop_and_preprocess(rgb, boxes, self.input_size, self.config.margin)

    def predict(self, rgb: np.ndarray) -> list[ContainerResult]:
        """Filling level of every container found in an H x W x 3 uint8 RGB frame."""
        return self.predict_many([rgb])[0]

    def predict_many(self, frames) -> list[list[ContainerResult]]:
        """:meth:`predict` of several frames (e.g. one per camera) with ONE classifier forward:
        the frames are segmented (in one batched forward where the segmenter has ``many``, as
        ``learned`` has) and cropped, the crops of all frames are classified as one batch
        and the results are split back per frame (``result[i]`` belongs to ``frames[i]``).
        ``last_timing`` holds the stage times of the whole call, ``last_batch_size`` the number
        of crops of its forward."""
        if not frames:
            return []
        t0 = time.perf_counter()
        many = getattr(self.segment, "many", None) if len(frames) > 1 else None
        segmented = many(frames) if many else [self.segment(rgb) for rgb in frames]
        found = [segmentation.select(dets, self.config.segmentation_score_threshold, self.config.max_containers)
                 for dets in segmented]
        t1 = time.perf_counter()
        batch = self._concat([self.preprocess(rgb, [d.box for d in dets]) for rgb, dets in zip(frames, found)])
        t2 = time.perf_counter()
        probs = self.classify(batch).tolist()
        t3 = time.perf_counter()
        self.last_timing = {"segment": t1 - t0, "preprocess": t2 - t1, "classify": t3 - t2}
        self.last_batch_size = len(probs)
        out, start = [], 0
        for rgb, dets in zip(frames, found):
            out.append(_results(dets, probs[start:start + len(dets)], rgb.shape[:2]))
            start += len(dets)
        return out

    def _concat(self, parts: list):
        """One batch of the per-frame batches (the only one as it is: no copy for one frame)."""
        if len(parts) == 1:
            return parts[0]
        if self.backend == "onnxruntime":
            return np.concatenate(parts)
        import torch

        return torch.cat(parts)


def _results(dets, probs: list, shape: tuple[int, int]) -> list[ContainerResult]:
    """The :class:`ContainerResult` of each detection of a frame of ``shape`` (H, W) and its
    class probabilities (the box clipped to the frame)."""
    h, w = shape
    results = []
    for det, p in zip(dets, probs):
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
