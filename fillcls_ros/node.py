"""``fillcls_node``: camera images in, ``fillcls_msgs/FillingLevelArray`` out on ``filling_level``.

A thin rclpy shell over :class:`fillcls_ros.inference.FillingEstimator`. Run it as
``fillcls-node --ros-args --params-file config/filling.yaml`` or with
``ros2 launch fillcls_ros filling.launch.py``.

Topics: subscribes ``image`` (sensor_msgs/Image) or ``image/compressed``
(sensor_msgs/CompressedImage, parameter ``compressed``); publishes ``filling_level``
(FillingLevelArray, input header copied), ``~/debug_image`` (only built while subscribed) and
``/diagnostics`` (frame counters, bad frames per kind, timings, once a second).
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter

import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from fillcls_msgs.msg import FillingLevel, FillingLevelArray
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from . import segmentation
from .core import CheckpointError, packaged_model
from .image_codec import BadFrame, compressed_to_rgb, image_to_rgb, rgb_to_image_fields
from .inference import EstimatorConfig, FillingEstimator, describe, draw_debug
from .spin import spin_main

#: Seconds between two log lines about bad frames of the same kind.
BAD_FRAME_LOG_PERIOD = 10.0


def default_model_path() -> str:
    """The model used when ``model_path`` is empty: ``$FILLCLS_MODEL``, else the package's
    ``models/default.pt`` (installed share directory, or the source tree)."""
    return packaged_model("default.pt", "FILLCLS_MODEL")


def _descriptor(description: str, *, read_only: bool = False, int_range=None, float_range=None,
                additional: str = "") -> ParameterDescriptor:
    d = ParameterDescriptor(description=description, read_only=read_only,
                            additional_constraints=additional)
    if int_range:
        d.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    if float_range:
        d.floating_point_range = [FloatingPointRange(from_value=float(float_range[0]),
                                                     to_value=float(float_range[1]), step=0.0)]
    return d


class FillingNode(Node):
    """Filling-level node; raises CheckpointError / ValueError from ``__init__`` on a bad config."""

    #: Parameters that define the estimator: a change rebuilds it (and is rejected if that fails).
    ESTIMATOR_PARAMS = ("model_path", "device", "fp16", "input_size", "segmentation_backend",
                        "segmentation_score_threshold", "max_containers", "cpu_jit",
                        "segmentation_model", "segmentation_mask_threshold", "maskrcnn_classes")

    def __init__(self, **kwargs):
        super().__init__("fillcls_node", **kwargs)
        backends = ", ".join(sorted(segmentation.BACKENDS))
        self.declare_parameter("model_path", "", _descriptor(
            "Classifier checkpoint (fillcls format); empty: $FILLCLS_MODEL or the package's models/default.pt"))
        self.declare_parameter("device", "cuda", _descriptor(
            "Torch device: cpu, cuda or cuda:N; falls back to the CPU with a warning when CUDA is missing",
            additional="cpu | cuda | cuda:N"))
        self.declare_parameter("fp16", False, _descriptor("Half-precision inference (CUDA only)"))
        self.declare_parameter("cpu_jit", True, _descriptor(
            "On the CPU, run a TorchScript-frozen copy of the model (same outputs, ~15 % faster)"))
        self.declare_parameter("cpu_threads", 0, _descriptor(
            "PyTorch CPU threads; 0: PyTorch's default (one per core). Set it to the cores left free by "
            "other processes: threads that wait for a busy core slow every frame down many times",
            int_range=(0, 256)))
        self.declare_parameter("input_size", 0, _descriptor(
            "Classifier input side in pixels; 0: the size the model was trained at", int_range=(0, 1024)))
        self.declare_parameter("segmentation_backend", EstimatorConfig.segmentation_backend, _descriptor(
            f"Container segmentation backend: {backends}", additional=backends))
        self.declare_parameter("segmentation_score_threshold", 0.5, _descriptor(
            "Minimum segmentation score of a container", float_range=(0.0, 1.0)))
        self.declare_parameter("segmentation_model", "", _descriptor(
            "Weights of the learned / maskrcnn backend; empty: the package's models/segmenter.pt "
            "($FILLCLS_SEGMENTER) for learned, required for maskrcnn"))
        self.declare_parameter("segmentation_mask_threshold", 0.5, _descriptor(
            "Probability above which a pixel belongs to a container mask (learned, maskrcnn)",
            float_range=(0.0, 1.0)))
        self.declare_parameter("maskrcnn_classes", ["cup", "wine glass"], _descriptor(
            "COCO classes kept by the maskrcnn backend: cup, wine glass, bottle, bowl"))
        self.declare_parameter("max_containers", 5, _descriptor(
            "Maximum containers classified per frame (best scores first)", int_range=(1, 64)))
        self.declare_parameter("publish_debug_image", True, _descriptor(
            "Publish ~/debug_image (built only while someone subscribes)"))
        self.declare_parameter("compressed", False, _descriptor(
            "Subscribe to image/compressed (sensor_msgs/CompressedImage) instead of image", read_only=True))
        self.declare_parameter("qos_reliability", "best_effort", _descriptor(
            "Reliability of the image subscription: best_effort or reliable", read_only=True,
            additional="best_effort | reliable"))
        self.declare_parameter("qos_depth", 1, _descriptor(
            "Queue depth of the image subscription (1: always the newest frame)", read_only=True,
            int_range=(1, 100)))

        self._default_threads = torch.get_num_threads()
        self._set_threads(self.get_parameter("cpu_threads").value)
        self.estimator = FillingEstimator(self._estimator_config({}))
        for w in self.estimator.warnings:
            self.get_logger().warning(w)
        self.get_logger().info(f"model {self.estimator.config.model_path}: {describe(self.estimator.header)} "
                               f"on {self.estimator.device}")
        self.add_on_set_parameters_callback(self._on_set_parameters)

        reliability = self.get_parameter("qos_reliability").value
        if reliability not in ("best_effort", "reliable"):
            raise ValueError(f"parameter qos_reliability must be best_effort or reliable, got {reliability!r}")
        qos = QoSProfile(depth=self.get_parameter("qos_depth").value, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort"
                         else ReliabilityPolicy.RELIABLE)
        self.compressed = bool(self.get_parameter("compressed").value)
        if self.compressed:
            self.sub = self.create_subscription(CompressedImage, "image/compressed", self._on_compressed, qos)
        else:
            self.sub = self.create_subscription(Image, "image", self._on_image, qos)
        self.pub = self.create_publisher(FillingLevelArray, "filling_level", 10)
        self.debug_pub = self.create_publisher(Image, "~/debug_image", 1)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.counters: Counter[str] = Counter()
        self.bad_frames: Counter[str] = Counter()
        self._bad_logged: dict[str, float] = {}
        self._last_latency = float("nan")
        self._last_callback = float("nan")  # seconds spent in the last frame's callback
        self.diag_timer = self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f"listening on {self.sub.topic_name} ({reliability}, depth {qos.depth}), "
                               f"publishing {self.pub.topic_name}")

    # ---------------------------------------------------------------- parameters
    def _estimator_config(self, overrides: dict) -> EstimatorConfig:
        def get(name):
            return overrides[name] if name in overrides else self.get_parameter(name).value

        return EstimatorConfig(
            model_path=get("model_path") or default_model_path(), device=get("device"), fp16=get("fp16"),
            input_size=get("input_size"), segmentation_backend=get("segmentation_backend"),
            segmentation_score_threshold=get("segmentation_score_threshold"),
            max_containers=get("max_containers"), cpu_jit=get("cpu_jit"),
            segmentation_model=get("segmentation_model"),
            segmentation_mask_threshold=get("segmentation_mask_threshold"),
            maskrcnn_classes=tuple(get("maskrcnn_classes")))

    def _set_threads(self, n: int) -> None:
        torch.set_num_threads(int(n) or self._default_threads)

    def _on_set_parameters(self, params) -> SetParametersResult:
        result = self._change_estimator({p.name: p.value for p in params if p.name in self.ESTIMATOR_PARAMS})
        for p in params:  # only once the whole change is accepted
            if p.name == "cpu_threads" and result.successful:
                self._set_threads(p.value)
                self.get_logger().info(f"PyTorch CPU threads: {torch.get_num_threads()}")
        return result

    def _change_estimator(self, changes: dict) -> SetParametersResult:
        """Rebuild (or retune) the estimator for ``changes``; a failure leaves the running one in place."""
        if not changes:
            return SetParametersResult(successful=True)
        cfg = self._estimator_config(changes)
        heavy = any(n in changes for n in ("model_path", "device", "fp16", "segmentation_backend", "cpu_jit",
                                           "segmentation_model", "segmentation_mask_threshold",
                                           "maskrcnn_classes"))
        try:
            if heavy:
                estimator = FillingEstimator(cfg)
            else:  # thresholds, limits, size: keep the loaded model
                estimator = self.estimator
                estimator.config = cfg
                estimator.input_size = int(cfg.input_size) or estimator.header.input_size
        except (CheckpointError, ValueError) as exc:
            self.get_logger().error(f"rejected parameter change {changes}: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        for w in estimator.warnings if heavy else ():
            self.get_logger().warning(w)
        self.estimator = estimator
        self.get_logger().info(f"parameters changed: {changes}")
        return SetParametersResult(successful=True)

    # ---------------------------------------------------------------- frames
    def _on_image(self, msg: Image) -> None:
        self._process(msg, image_to_rgb)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._process(msg, compressed_to_rgb)

    def _bad_frame(self, kind: str, message: str) -> None:
        self.bad_frames[kind] += 1
        now = time.monotonic()
        if now - self._bad_logged.get(kind, -math.inf) >= BAD_FRAME_LOG_PERIOD:
            self._bad_logged[kind] = now
            self.get_logger().warning(f"bad frame ({kind}, {self.bad_frames[kind]} so far), skipped: {message}")

    def _process(self, msg, convert) -> None:
        self.counters["received"] += 1
        t_start = time.perf_counter()
        try:
            rgb = convert(msg)
        except BadFrame as exc:
            self._bad_frame(exc.kind, str(exc))
            return
        try:
            results = self.estimator.predict(rgb)
        except Exception as exc:  # never die on a frame; count and report it
            self._bad_frame("inference", f"{type(exc).__name__}: {exc}")
            return
        out = FillingLevelArray(header=msg.header, model_id=self.estimator.model_id)
        for r in results:
            x, y, w, h = r.roi
            out.containers.append(FillingLevel(
                level=r.level, percentage=r.percentage, confidence=r.confidence,
                probabilities=[float(p) for p in r.probabilities],
                roi=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h, do_rectify=False),
                segmentation_score=r.segmentation_score))
        self.pub.publish(out)
        self.counters["published"] += 1
        stamp = msg.header.stamp
        self._last_latency = self.get_clock().now().nanoseconds * 1e-9 - (stamp.sec + stamp.nanosec * 1e-9)
        self._last_callback = time.perf_counter() - t_start
        if self.get_parameter("publish_debug_image").value and self.debug_pub.get_subscription_count() > 0:
            self.debug_pub.publish(Image(header=msg.header, **rgb_to_image_fields(draw_debug(rgb, results))))

    def _publish_diagnostics(self) -> None:
        values = {"frames_received": self.counters["received"], "frames_published": self.counters["published"],
                  "bad_frames": sum(self.bad_frames.values()), "model_id": self.estimator.model_id,
                  "device": str(self.estimator.device), "last_latency_s": f"{self._last_latency:.4f}",
                  "time_callback_s": f"{self._last_callback:.4f}"}
        values.update({f"bad_frames_{k}": v for k, v in sorted(self.bad_frames.items())})
        values.update({f"time_{k}_s": f"{v:.4f}" for k, v in self.estimator.last_timing.items()})
        level = DiagnosticStatus.WARN if self.bad_frames else DiagnosticStatus.OK
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: filling level",
                                  message="bad frames received" if self.bad_frames else "ok",
                                  hardware_id=str(self.estimator.device),
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        self.diag_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                              status=[status]))


def _goodbye(node: FillingNode) -> str:
    return (f"shutting down after {node.counters['received']} frames ({node.counters['published']} published, "
            f"{sum(node.bad_frames.values())} bad)")


def main(args=None) -> int:
    """Entry point of ``fillcls-node``; exit code 0 on SIGINT/SIGTERM, 1 on a bad configuration."""
    return spin_main(FillingNode, (CheckpointError, ValueError), "fillcls_node", _goodbye, args)


if __name__ == "__main__":
    sys.exit(main())
