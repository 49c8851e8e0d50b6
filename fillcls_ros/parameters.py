"""The node's parameters, declared once.

:data:`NODE_PARAMETERS` is the one table (name, default, type, range or choices, description,
read-only, effect of a change); from it follow the ROS declarations and descriptors
(:func:`descriptor`), the validation of a change (:func:`validate`), the estimator configuration
(:func:`estimator_config`), ``fillcls-node --help`` (:func:`help_text`) and the README's parameter
table (:func:`markdown_table`, checked by a test). Importing this module loads neither rclpy nor
torch.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

#: What a change of a parameter does: ``rebuild`` loads a new estimator (models, device,
#: engine, threads); ``retune`` changes the running estimator's settings; ``tracker`` starts a
#: new tracker with the new settings; ``live`` is read where it is used; ``start`` is read-only
#: (read once at start-up).
EFFECTS = ("rebuild", "retune", "tracker", "live", "start")

_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")
#: Mask R-CNN COCO classes the maskrcnn backend can keep.
MASKRCNN_CLASSES = ("cup", "wine glass", "bottle", "bowl")
SEGMENTATION_BACKENDS = ("auto", "learned", "maskrcnn", "threshold", "full_frame")


@dataclass(frozen=True)
class Param:
    """One node parameter (see the module docstring)."""

    name: str
    default: Any
    description: str
    effect: str = "live"
    range: tuple[float, float] | None = None  # inclusive bounds of an int / float
    choices: tuple[str, ...] | None = None  # allowed values of a string (or of each list item)
    check: Callable[[Any], str | None] | None = None  # extra rule: an error message or None
    rule: str = ""  # the extra rule in words, for descriptors and --help

    @property
    def read_only(self) -> bool:
        return self.effect == "start"

    @property
    def type_name(self) -> str:
        return {bool: "bool", int: "int", float: "double", str: "string", list: "string[]"}[type(self.default)]

    def constraints(self) -> str:
        """The allowed values in words (``[0, 1]``, ``a | b``, the extra rule)."""
        parts = []
        if self.range is not None:
            parts.append(f"[{_fmt(self.range[0])}, {_fmt(self.range[1])}]")
        if self.choices is not None:
            parts.append(" | ".join(self.choices))
        if self.rule:
            parts.append(self.rule)
        return "; ".join(parts)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and v.is_integer():
        return f"{v:.1f}"
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v)) + "]"
    if isinstance(v, str):
        return f'"{v}"' if v == "" else v
    return str(v)


def _check_device(v: str) -> str | None:
    return None if _DEVICE_RE.match(v) else f"device must be cpu, cuda or cuda:N, got {v!r}"


def _check_input_size(v: int) -> str | None:
    return None if v == 0 or 32 <= v <= 1024 else \
        f"input_size must be 0 (the model's own size) or in [32, 1024], got {v}"


def _check_file(name: str) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        if v and not os.path.isfile(v):
            return f"{name} {v}: file not found"
        return None
    return check


#: A relative or absolute ROS namespace: tokens of letters, digits and _ (not first a digit) joined by /.
_NAMESPACE_RE = re.compile(r"^/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


def _check_cameras(v: list) -> str | None:
    """Each camera a valid ROS namespace (no ``__``, no trailing /), none twice."""
    for name in v:
        if not _NAMESPACE_RE.match(name) or "__" in name:
            return (f"cameras: {name!r} is not a valid ROS namespace (letters, digits and _ separated by /, "
                    "a token not starting with a digit, no __)")
    twice = sorted({n.strip("/") for n in v if sum(m.strip("/") == n.strip("/") for m in v) > 1})
    return f"cameras: {', '.join(map(repr, twice))} given more than once" if twice else None


NODE_PARAMETERS: tuple[Param, ...] = (
    Param("model_path", "", "Classifier: a fillcls checkpoint (.pt) or its ONNX export (.onnx); empty: "
          "$FILLCLS_MODEL, else the package's models/default.onnx (onnxruntime) or models/default.pt (torch)",
          "rebuild", check=_check_file("model_path"), rule="an existing file or empty"),
    Param("device", "cuda", "Torch device; falls back to the CPU with a warning when CUDA is missing",
          "rebuild", check=_check_device, rule="cpu | cuda | cuda:N"),
    Param("fp16", False, "Half-precision inference (CUDA only)", "rebuild"),
    Param("inference_backend", "auto", "Inference engine of the classifier and the learned segmenter: "
          "onnxruntime (no torch imported), torch, or auto (onnxruntime for an .onnx model, torch for a .pt; with "
          "an empty model_path: onnxruntime on the CPU, torch on a CUDA GPU when onnxruntime has no CUDA "
          "provider)", "rebuild", choices=("auto", "onnxruntime", "torch")),
    Param("precision", "auto", "Arithmetic: auto (int8 with onnxruntime on the CPU when the model's int8 copy "
          "<model>.int8.onnx is beside it, written by setup / `make models`, near-ties re-checked in fp32 "
          "within int8_recheck, narrowed to the closest 5 % of its calibration answers when more lie within it; "
          "else fp32); fp32; fp16 (CUDA); bf16 (torch on a CPU with "
          "AMX / AVX512-BF16, else fp32 with a warning); int8 (onnxruntime, the quantised <model>.int8.onnx "
          "beside the model)",
          "rebuild", choices=("auto", "fp32", "fp16", "bf16", "int8")),
    Param("int8_recheck", 0.1, "precision int8: answers whose top two class probabilities differ by less are "
          "computed again in fp32 (the model beside the int8 file); 0: pure int8", "rebuild", range=(0.0, 1.0)),
    Param("cpu_jit", True, "torch (CPU and CUDA): fold BatchNorm into the convolutions and run channels-last "
          "(same outputs, faster)", "rebuild"),
    Param("cpu_threads", 0, "CPU threads of the inference engine; 0: its default (one per core). Set it to the "
          "cores left free by other processes: threads that wait for a busy core slow every frame down many times",
          "rebuild", range=(0, 256)),
    Param("input_size", 0, "Classifier input side in pixels; 0: the size the model was trained at", "retune",
          range=(0, 1024), check=_check_input_size, rule="0 or >= 32"),
    Param("segmentation_backend", "auto", "Container segmentation backend; auto: maskrcnn when its COCO "
          "weights are in the model directory, learned otherwise (the log says which and why)", "rebuild",
          choices=SEGMENTATION_BACKENDS),
    Param("segmentation_score_threshold", 0.5, "Minimum segmentation score of a container", "retune",
          range=(0.0, 1.0)),
    Param("segmentation_model", "", "Weights of the learned / maskrcnn backend; empty: the package's "
          "models/segmenter.pt ($FILLCLS_SEGMENTER) for learned, required for maskrcnn", "rebuild",
          check=_check_file("segmentation_model"), rule="an existing file or empty"),
    Param("segmentation_mask_threshold", 0.5, "Probability above which a pixel belongs to a container mask "
          "(learned, maskrcnn)", "rebuild", range=(0.0, 1.0)),
    Param("maskrcnn_classes", ["cup", "wine glass"], "COCO classes kept by the maskrcnn backend", "rebuild",
          choices=MASKRCNN_CLASSES),
    Param("max_containers", 5, "Maximum containers classified per frame (best scores first)", "retune",
          range=(1, 64)),
    Param("max_pixels", 4096 * 4096, "Largest frame accepted (width x height, raw or compressed); larger "
          "frames are counted as absurd_size bad frames before any pixel is decoded", "live",
          range=(1, 16384 * 16384)),
    Param("tracking", True, "Track containers across frames and publish a fused, stable level per track "
          "(track_id, fused_level, fused_probabilities, track_age)", "tracker"),
    Param("fusion_time_constant", 0.5, "Seconds over which past frames are forgotten in the fused "
          "probabilities", "tracker", range=(0.01, 60.0)),
    Param("fusion_hysteresis", 0.2, "Lead in fused probability a new level needs over the current one",
          "tracker", range=(0.0, 1.0)),
    Param("fusion_confirm_updates", 2, "Consecutive frames with that lead before the fused level changes",
          "tracker", range=(1, 100)),
    Param("track_min_hits", 2, "Frames with a detection before a new track counts as confirmed", "tracker",
          range=(1, 100)),
    Param("track_max_misses", 10, "Consecutive frames a track survives without a detection (a hand in "
          "front)", "tracker", range=(0, 1000)),
    Param("track_max_unseen", 2.0, "Seconds a track survives without a detection", "tracker",
          range=(0.0, 60.0)),
    Param("track_min_iou", 0.1, "Box / mask overlap under which a detection must be close to a track to "
          "match it", "tracker", range=(0.0, 1.0)),
    Param("track_max_center_distance", 0.75, "Largest centre distance of a match, in box diagonals",
          "tracker", range=(0.0, 10.0)),
    Param("depth", False, "Subscribe to depth (sensor_msgs/Image, 16UC1 mm or 32FC1 m) and camera_info "
          "(of the depth image) and publish each container's 3-D centre and size", "start"),
    Param("depth_sync_slop", 0.05, "Largest stamp difference of a colour frame and the depth image paired "
          "with it, seconds", "live", range=(0.0, 1.0)),
    Param("publish_debug_image", True, "Publish ~/debug_image (built only while someone subscribes)"),
    Param("compressed", False, "Subscribe to image/compressed (sensor_msgs/CompressedImage) instead of image",
          "start"),
    Param("qos_reliability", "best_effort", "Reliability of the image subscription", "start",
          choices=("best_effort", "reliable")),
    Param("qos_depth", 1, "Queue depth of the image subscription (1: always the newest frame)", "start",
          range=(1, 100)),
    Param("cameras", [], "Camera namespaces served by this node, e.g. [cam_left, cam_right]; each camera C has "
          "its own topics C/image (C/image/compressed), C/depth, C/camera_info, C/filling_level, C/debug_image and "
          "its own tracker. Each cycle classifies the newest frame of every camera in one batch (older frames are "
          "dropped). Empty: one camera on the relative topics", "start",
          check=_check_cameras, rule="unique ROS namespaces"),
)
PARAMS: dict[str, Param] = {p.name: p for p in NODE_PARAMETERS}


def validate(name: str, value: Any, table: Mapping[str, Param] = PARAMS) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name`` of ``table`` (None: it is). No side effects."""
    p = table.get(name)
    if p is None:
        return None  # not one of ours (e.g. use_sim_time)
    if p.range is not None and not (p.range[0] <= value <= p.range[1]):
        return f"{name} must be in [{_fmt(p.range[0])}, {_fmt(p.range[1])}], got {value}"
    if p.choices is not None:
        bad = [v for v in (value if isinstance(value, (list, tuple)) else [value]) if v not in p.choices]
        if bad:
            return f"{name}: {', '.join(map(repr, bad))} not allowed; choose from {', '.join(p.choices)}"
    return p.check(value) if p.check else None


def validate_all(values: Mapping[str, Any], table: Mapping[str, Param] = PARAMS) -> list[str]:
    """The errors of every value in ``values`` (empty: all acceptable)."""
    return [e for e in (validate(k, v, table) for k, v in values.items()) if e]


def changed_effects(names: Iterable[str]) -> set[str]:
    """The effects (see :data:`EFFECTS`) of changing the parameters ``names``."""
    return {PARAMS[n].effect for n in names if n in PARAMS}


def default_model(values: Mapping[str, Any]) -> str:
    """The classifier used when ``model_path`` is empty: ``$FILLCLS_MODEL``, else the packaged
    ``models/default.onnx`` for onnxruntime or ``models/default.pt`` for torch; ``auto`` takes
    onnxruntime unless the device is a CUDA GPU that only torch can use (checked without
    importing torch: onnxruntime's providers and the NVIDIA device files)."""
    from fillcls.paths import packaged_model

    backend = values["inference_backend"]
    if backend == "auto":
        backend = "onnxruntime"
        if str(values["device"]).startswith("cuda") and os.path.exists("/dev/nvidiactl"):
            try:
                import onnxruntime

                has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
            except ImportError:
                has_cuda = False
            backend = "onnxruntime" if has_cuda else "torch"
    return packaged_model("default.onnx" if backend == "onnxruntime" else "default.pt", "FILLCLS_MODEL")


def estimator_config(values: Mapping[str, Any]):
    """The :class:`fillcls.inference.EstimatorConfig` of parameter ``values`` (all of them)."""
    from fillcls.inference import EstimatorConfig

    kw = {p.name: values[p.name] for p in NODE_PARAMETERS if p.effect in ("rebuild", "retune")}
    kw["model_path"] = kw["model_path"] or default_model(values)
    kw["maskrcnn_classes"] = tuple(kw["maskrcnn_classes"])
    return EstimatorConfig(**kw)


def tracker_config(values: Mapping[str, Any]):
    """The :class:`fillcls.tracking.TrackerConfig` of parameter ``values``."""
    from fillcls.tracking import TrackerConfig

    return TrackerConfig(
        time_constant_s=float(values["fusion_time_constant"]), hysteresis=float(values["fusion_hysteresis"]),
        confirm_updates=int(values["fusion_confirm_updates"]), min_hits=int(values["track_min_hits"]),
        max_misses=int(values["track_max_misses"]), max_unseen_s=float(values["track_max_unseen"]),
        min_iou=float(values["track_min_iou"]), max_centre_distance=float(values["track_max_center_distance"]))


def descriptor(p: Param):
    """The rcl_interfaces ParameterDescriptor of ``p`` (ranges enforced by ROS itself)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    d = ParameterDescriptor(description=p.description, read_only=p.read_only, additional_constraints=p.constraints())
    if p.range is not None and isinstance(p.default, bool) is False and isinstance(p.default, int):
        d.integer_range = [IntegerRange(from_value=int(p.range[0]), to_value=int(p.range[1]), step=1)]
    elif p.range is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(p.range[0]), to_value=float(p.range[1]),
                                                     step=0.0)]
    return d


def help_text(prog: str = "fillcls-node", params: Sequence[Param] = NODE_PARAMETERS, intro: str = "") -> str:
    """``--help`` of an executable: usage and every parameter with its default and range."""
    lines = [f"usage: {prog} [--help] [--ros-args --params-file FILE | -p NAME:=VALUE ...]", ""]
    if intro:
        lines += [intro, ""]
    lines.append("parameters (* can be changed at run time with `ros2 param set`):")
    for p in params:
        star = " " if p.read_only else "*"
        allowed = p.constraints()
        lines.append(f"  {star} {p.name} ({p.type_name}, default {_fmt(p.default)}"
                     + (f", {allowed}" if allowed else "") + ")")
        lines.append(f"      {p.description}")
    return "\n".join(lines)


def markdown_table(params: Sequence[Param] = NODE_PARAMETERS) -> str:
    """The README's parameter table (starred: can be set at run time)."""
    rows = ["| parameter | type | default | allowed | |", "|---|---|---|---|---|"]
    for p in params:
        star = "" if p.read_only else " *"
        allowed = (p.constraints() or "any").replace("|", "\\|")
        rows.append(f"| `{p.name}`{star} | {p.type_name} | `{_fmt(p.default)}` | {allowed} | {p.description} |")
    return "\n".join(rows)


def wants_help(argv: Sequence[str]) -> bool:
    """True if ``--help`` / ``-h`` comes before any ``--ros-args`` in ``argv``."""
    for a in argv:
        if a == "--ros-args":
            return False
        if a in ("-h", "--help"):
            return True
    return False


if __name__ == "__main__":
    print(markdown_table())
