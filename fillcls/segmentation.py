"""Container segmentation backends behind one interface: RGB frame in, detections out.

A backend is a callable ``segment(rgb) -> list[Detection]`` (H x W x 3 uint8 RGB in; boxes in
pixels of that frame, best first). Backends register themselves in :data:`BACKENDS` by name and
are built with :func:`make_segmenter`; the node selects one with its ``segmentation_backend``
parameter. Score thresholding and the per-frame limit are applied by :func:`select`.

Backends here:

* ``full_frame``: the whole frame is one container (for upstream nodes that publish crops);
* ``threshold``: a classical detector for a container in front of a plain background
  (colour distance to the frame border's median colour, morphology, connected components);
* ``learned``: the project's small segmentation network trained on procedural frames
  (:mod:`fillcls.segnet`; the offline default);
* ``maskrcnn``: torchvision Mask R-CNN with COCO weights from a file, keeping container classes;
* ``auto`` (the node's default): ``maskrcnn`` when the COCO weights are in the model directory
  (``python -m training fetch maskrcnn-coco --dir models``), ``learned`` otherwise; the built
  segmenter's ``description`` says which and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np


@dataclass
class Detection:
    """One container: ``box`` (x0, y0, x1, y1; x1, y1 exclusive), ``score`` in [0, 1], optional mask."""

    box: tuple[int, int, int, int]
    score: float
    mask: np.ndarray | None = None  # H x W bool, frame-sized, or None

    @property
    def roi(self) -> tuple[int, int, int, int]:
        """``(x_offset, y_offset, width, height)`` as in sensor_msgs/RegionOfInterest."""
        x0, y0, x1, y1 = self.box
        return x0, y0, x1 - x0, y1 - y0


Segmenter = Callable[[np.ndarray], "list[Detection]"]
#: name -> factory(**options) -> Segmenter
BACKENDS: dict[str, Callable[..., Segmenter]] = {}


def register(name: str):
    """Decorator adding a backend factory to :data:`BACKENDS` under ``name``."""

    def deco(factory):
        BACKENDS[name] = factory
        return factory

    return deco


def make_segmenter(name: str, **options) -> Segmenter:
    """Build the backend ``name`` (ValueError naming the known backends).

    ``options`` the backend's factory does not take are ignored, so a caller (the node) can pass
    all its segmentation settings to any backend.
    """
    import inspect

    if name not in BACKENDS:
        raise ValueError(f"unknown segmentation backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    factory = BACKENDS[name]
    accepted = inspect.signature(factory).parameters
    return factory(**{k: v for k, v in options.items() if k in accepted})


def select(detections: Sequence[Detection], score_threshold: float, max_containers: int) -> list[Detection]:
    """Detections scoring at least ``score_threshold``, best first, at most ``max_containers``.

    Ties keep the backend's order (the sort is stable), so the output order is deterministic.
    """
    kept = [d for d in detections if d.score >= score_threshold]
    kept.sort(key=lambda d: -d.score)
    return kept[:max_containers]


@register("full_frame")
def full_frame() -> Segmenter:
    """The whole frame is one container with score 1."""

    def segment(rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        return [Detection((0, 0, w, h), 1.0)]

    return segment


@register("threshold")
def threshold(work_width: int = 160, distance: float = 40.0, min_area: float = 0.004) -> Segmenter:
    """Classical foreground detector for a plain background.

    The frame is shrunk to ``work_width`` pixels wide; pixels whose RGB distance to the median
    colour of the frame border exceeds ``distance`` are foreground; after a morphological close and
    open, each connected component covering at least ``min_area`` of the frame is a container.
    Score: the component's mean colour distance, scaled so ``2 * distance`` gives 1.
    """
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))

    def segment(rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        scale = min(1.0, work_width / w)
        small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA) if scale < 1.0 else rgb
        sh, sw = small.shape[:2]
        border = np.concatenate([small[0], small[-1], small[:, 0], small[:, -1]]).astype(np.float32)
        background = np.median(border, axis=0)
        dist = np.linalg.norm(small.astype(np.float32) - background, axis=2)
        fg = (dist > distance).astype(np.uint8)
        fg = cv2.morphologyEx(cv2.morphologyEx(fg, cv2.MORPH_CLOSE, kernel), cv2.MORPH_OPEN, kernel)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        out = []
        for i in range(1, n):
            x, y, bw, bh, area = stats[i]
            if area < min_area * sh * sw:
                continue
            score = float(min(1.0, dist[labels == i].mean() / (2.0 * distance)))
            box = (int(np.floor(x / scale)), int(np.floor(y / scale)),
                   min(w, int(np.ceil((x + bw) / scale))), min(h, int(np.ceil((y + bh) / scale))))
            mask = cv2.resize((labels == i).astype(np.uint8), (w, h),
                              interpolation=cv2.INTER_NEAREST).astype(bool)
            out.append(Detection(box, score, mask))
        out.sort(key=lambda d: (d.box[0], d.box[1]))  # stable left-to-right order before scoring
        return out

    return segment


def _model_path(path: str, backend: str = "torch") -> str:
    """``path``, or the packaged segmenter (``$FILLCLS_SEGMENTER`` first) when empty:
    ``models/segmenter.onnx`` for onnxruntime / auto (if onnxruntime is installed), else
    ``models/segmenter.pt``."""
    if path:
        return path
    from .backends import ort_available
    from .paths import packaged_model

    onnx = backend == "onnxruntime" or (backend == "auto" and ort_available())
    return packaged_model("segmenter.onnx" if onnx else "segmenter.pt", "FILLCLS_SEGMENTER")


def _sigmoid(y: np.ndarray) -> np.ndarray:
    """Logistic function, in place on a writable float32 array (a box head's five channels: 0.26 ms
    instead of 0.66 ms for ``0.5 * (1 + tanh(y / 2))`` on 2 AVX2 cores); no overflow warnings."""
    y = np.asarray(y, dtype=np.float32)
    if not y.flags.writeable:
        y = y.copy()
    with np.errstate(over="ignore"):  # exp(-y) = inf for y < -88: 1 / inf = 0, as it should be
        np.exp(np.negative(y, out=y), out=y)
    y += 1.0
    return np.reciprocal(y, out=y)


def _segnet_runner(path: str, backend: str, device: str, precision: str, threads: int):
    """(runner: B x 3 x h x w in [0, 1] -> B x h/2 x w/2 foreground probabilities, or B x 5 x h/2 x w/2
    with a box head's channels (all through the sigmoid), input (h, w))."""
    from .backends import OrtRunner, TorchRunner, model_format, resolve_backend
    from .segnet import check_segmenter_header

    backend = resolve_backend(backend, path)
    if backend == "onnxruntime":
        runner = OrtRunner(path, device, precision, threads, post=_sigmoid)
        return runner, check_segmenter_header(path, runner.header)
    if model_format(path) == "onnx":
        from .core import CheckpointError

        raise CheckpointError(f"{path}: an ONNX model; inference_backend 'torch' needs a .pt segmenter")
    import torch

    from .segnet_torch import load_segnet

    net, _, input_hw = load_segnet(path, "cpu")
    return TorchRunner(net, device, precision, optimize=False, post=torch.sigmoid), input_hw


@register("learned")
def learned(model: str = "", mask_threshold: float = 0.5, min_area: float = 0.002, device: str = "cpu",
            inference_backend: str = "torch", precision: str = "fp32", threads: int = 0) -> Segmenter:
    """The project's own segmentation network (:mod:`fillcls.segnet`), trained on procedural
    frames by ``python -m training segtrain``; ``model`` "" = the packaged segmenter.
    ``inference_backend`` (``torch``, ``onnxruntime``, ``auto``: by the file), ``precision`` and
    ``threads`` as for the classifier (:mod:`fillcls.backends`); onnxruntime never imports torch.
    ``segment.many(frames)`` segments several frames (cameras) in one batched forward."""
    from .segnet import frame_to_array, instances

    path = _model_path(model, inference_backend)
    runner, input_hw = _segnet_runner(path, inference_backend, device, precision, threads)
    segment_warnings = getattr(runner, "warnings", [])

    def segment_many(frames) -> list[list[Detection]]:
        """The detections of several frames with one network forward (one batch)."""
        probs = runner(np.stack([frame_to_array(rgb, input_hw) for rgb in frames]))
        return [[Detection(box, score, mask)
                 for box, score, mask in instances(prob, rgb.shape[:2], mask_threshold, min_area)]
                for rgb, prob in zip(frames, probs)]

    def segment(rgb: np.ndarray) -> list[Detection]:
        return segment_many([rgb])[0]

    segment.warnings = segment_warnings
    segment.many = segment_many
    return segment


#: COCO category ids (torchvision's 91-way indexing) of containers.
COCO_CONTAINERS = {"cup": 47, "wine glass": 46, "bottle": 44, "bowl": 51}


@register("maskrcnn")
def maskrcnn(model: str = "", classes: Sequence[str] = ("cup", "wine glass"), mask_threshold: float = 0.5,
             box_score_threshold: float = 0.05, device: str = "cpu", allow_random: bool = False,
             min_size: int = 800) -> Segmenter:
    """torchvision Mask R-CNN (ResNet-50 FPN) with COCO weights from the file ``model``.

    ``model``: a torchvision ``maskrcnn_resnet50_fpn`` COCO state dict (e.g.
    ``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``), loaded with ``weights_only=True``. Only the COCO
    ``classes`` that are containers are kept (cup and wine glass; bottle and bowl on request);
    masks are binarised at ``mask_threshold``; ``min_size`` is the network's resize target
    (torchvision's default 800). ``allow_random`` builds an untrained network when
    ``model`` is empty (tests of the plumbing only; it finds nothing meaningful).
    """
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    from .core import CheckpointError

    unknown = [c for c in classes if c not in COCO_CONTAINERS]
    if unknown:
        raise ValueError(f"maskrcnn classes {unknown} unknown; choose from {', '.join(COCO_CONTAINERS)}")
    keep = torch.tensor([COCO_CONTAINERS[c] for c in classes])
    net = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91,
                                box_score_thresh=box_score_threshold, min_size=min_size)
    if model:
        try:
            state = torch.load(model, map_location="cpu", weights_only=True)
        except FileNotFoundError as exc:
            raise CheckpointError(f"{model}: Mask R-CNN weights file not found") from exc
        except Exception as exc:
            raise CheckpointError(f"{model}: not a readable weights file ({type(exc).__name__}: {exc})") from exc
        state = state.get("model", state) if isinstance(state, dict) else state
        try:
            net.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{model}: not torchvision maskrcnn_resnet50_fpn COCO weights: {exc}") from exc
    elif not allow_random:
        raise CheckpointError("maskrcnn backend: parameter segmentation_model must name a torchvision "
                              "maskrcnn_resnet50_fpn COCO weights file (nothing is downloaded)")
    net.eval().to(device)

    @torch.inference_mode()
    def segment(rgb: np.ndarray) -> list[Detection]:
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0).to(device)
        out = net([x])[0]
        sel = torch.isin(out["labels"].cpu(), keep)
        dets = []
        h, w = rgb.shape[:2]
        for box, score, mask in zip(out["boxes"][sel].cpu(), out["scores"][sel].cpu(), out["masks"][sel].cpu()):
            x0, y0, x1, y1 = box.tolist()
            b = (max(0, int(np.floor(x0))), max(0, int(np.floor(y0))), min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1))))
            if b[2] > b[0] and b[3] > b[1]:
                dets.append(Detection(b, float(score), (mask[0] >= mask_threshold).numpy()))
        dets.sort(key=lambda d: (-d.score, d.box[0]))
        return dets

    return segment


#: File name of torchvision's COCO Mask R-CNN weights (``python -m training fetch maskrcnn-coco``).
MASKRCNN_COCO_FILE = "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"


@register("auto")
def auto(model: str = "", classes: Sequence[str] = ("cup", "wine glass"), mask_threshold: float = 0.5,
         device: str = "cpu", inference_backend: str = "torch", precision: str = "fp32", threads: int = 0) -> Segmenter:
    """The best segmenter available: ``maskrcnn`` with the COCO weights found at
    ``$FILLCLS_MASKRCNN`` or ``models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth`` (the package's
    model directory), else ``learned`` with ``model`` ("" = the packaged segmenter). The result's
    ``description`` says which was picked and why."""
    import os

    from .paths import packaged_model

    coco = packaged_model(MASKRCNN_COCO_FILE, "FILLCLS_MASKRCNN")
    if os.path.isfile(coco):
        segment = maskrcnn(coco, classes, mask_threshold, device=device)
        segment.description = f"maskrcnn: COCO weights found at {coco}"
    else:
        segment = learned(model, mask_threshold, device=device, inference_backend=inference_backend,
                          precision=precision, threads=threads)
        segment.description = (f"learned: no COCO Mask R-CNN weights at {coco} (fetch them with "
                               "`python -m training fetch maskrcnn-coco --dir <that folder>` for maskrcnn)")
    return segment
