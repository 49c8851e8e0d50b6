"""``fillcls_node``: camera images in, ``fillcls_msgs/FillingLevelArray`` out on ``filling_level``.

A thin rclpy shell over :class:`fillcls.inference.FillingEstimator`. Run it as
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
from collections import Counter, deque

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from fillcls_msgs.msg import FillingLevel, FillingLevelArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from geometry_msgs.msg import Point, Vector3
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from fillcls.image_codec import BadFrame, compressed_to_rgb, image_to_rgb, rgb_to_image_fields
from fillcls.backends import describe_runner
from fillcls.geometry3d import Intrinsics, depth_to_metres, fit_plane, locate
from fillcls.inference import FillingEstimator, describe, draw_debug
from fillcls.spec import LEVEL_PERCENT
from fillcls.tracking import Detection, Tracker
from fillcls.spec import CheckpointError

from . import parameters
from .spin import spin_main

#: Seconds between two log lines about bad frames of the same kind.
BAD_FRAME_LOG_PERIOD = 10.0


class FillingBehaviour:
    """What the plain and the lifecycle node share: parameters, the estimator, the topics, the
    frame callback and diagnostics. Mixed into an rclpy ``Node`` or ``LifecycleNode``."""

    def _init_filling(self) -> None:
        """Declare and check the parameters (raises ValueError naming a bad one); no model yet."""
        for p in parameters.NODE_PARAMETERS:
            self.declare_parameter(p.name, p.default, parameters.descriptor(p))
        errors = parameters.validate_all(self._values())
        if errors:
            raise ValueError("; ".join(errors))
        self.estimator: FillingEstimator | None = None
        self.sub = self.pub = self.debug_pub = self.diag_pub = self.diag_timer = None
        self._default_threads: int | None = None
        self._change_error = ""
        self.counters: Counter[str] = Counter()
        self.bad_frames: Counter[str] = Counter()
        self._bad_logged: dict[str, float] = {}
        self._last_latency = float("nan")
        self._last_callback = float("nan")  # seconds spent in the last frame's callback
        self.tracker = self._make_tracker(self._values())
        self._depths: deque = deque(maxlen=8)  # (stamp s, depth message), newest last
        self._camera_info = None
        self.depth_subs: list = []
        self.add_on_set_parameters_callback(self._validate_change)
        self.add_post_set_parameters_callback(self._apply_change)

    def _load(self) -> None:
        """The estimator (the models) from the current parameters."""
        self.estimator = self._build_estimator(self._values())

    def _create_publishers(self, create_publisher) -> None:
        self.pub = create_publisher(FillingLevelArray, "filling_level", 10)
        self.debug_pub = create_publisher(Image, "~/debug_image", 1)
        self.diag_pub = create_publisher(DiagnosticArray, "/diagnostics", 10)

    def _subscribe(self) -> None:
        """The image subscription and the diagnostics timer: from here on frames cost CPU."""
        values = self._values()
        qos = QoSProfile(depth=values["qos_depth"], history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.BEST_EFFORT if values["qos_reliability"] == "best_effort"
                         else ReliabilityPolicy.RELIABLE)
        self.compressed = bool(values["compressed"])
        if self.compressed:
            self.sub = self.create_subscription(CompressedImage, "image/compressed", self._on_compressed, qos)
        else:
            self.sub = self.create_subscription(Image, "image", self._on_image, qos)
        if values["depth"]:
            self.depth_subs = [
                self.create_subscription(Image, "depth", lambda m: self._depths.append((_stamp_s(m.header), m)),
                                         QoSProfile(depth=2, reliability=qos.reliability)),
                self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, 10)]
        self.diag_timer = self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f"listening on {self.sub.topic_name} ({values['qos_reliability']}, depth "
                               f"{qos.depth}), publishing {self.pub.topic_name}")

    def _unsubscribe(self) -> None:
        for sub in self.depth_subs:
            self.destroy_subscription(sub)
        self.depth_subs = []
        if self.sub is not None:
            self.destroy_subscription(self.sub)
        if self.diag_timer is not None:
            self.destroy_timer(self.diag_timer)
        self.sub = self.diag_timer = None

    # ---------------------------------------------------------------- parameters
    def _values(self) -> dict:
        return {p.name: self.get_parameter(p.name).value for p in parameters.NODE_PARAMETERS}

    def _build_estimator(self, values: dict) -> FillingEstimator:
        estimator = FillingEstimator(parameters.estimator_config(values))
        self._set_threads(values["cpu_threads"])
        for w in estimator.warnings:
            self.get_logger().warning(w)
        self.get_logger().info(f"model {estimator.config.model_path}: {describe(estimator.header)}; "
                               f"{describe_runner(estimator.runner)}")
        self.get_logger().info(f"segmentation: {getattr(estimator.segment, 'description', values['segmentation_backend'])}")
        return estimator

    def _set_threads(self, n: int) -> None:
        """Torch's process-wide CPU threads (0: its default); torch is not imported for this
        (onnxruntime gets its threads through the estimator config)."""
        if "torch" not in sys.modules or (n == 0 and self._default_threads is None):
            return
        import torch

        if self._default_threads is None:
            self._default_threads = torch.get_num_threads()
        torch.set_num_threads(int(n) or self._default_threads)

    def _validate_change(self, params) -> SetParametersResult:
        """Accept or refuse a change (the set-parameters callback): checks only, no side effects."""
        errors = parameters.validate_all({p.name: p.value for p in params})
        if errors:
            self.get_logger().error(f"rejected parameter change: {'; '.join(errors)}")
            return SetParametersResult(successful=False, reason="; ".join(errors))
        return SetParametersResult(successful=True)

    def _apply_change(self, params) -> None:
        """Apply an accepted change (the post-set callback): new threads, settings or estimator.

        A rebuild that still fails (e.g. a corrupt model file) keeps the running estimator, logs
        the error and reports it in ``/diagnostics``.
        """
        changes = {p.name: p.value for p in params}
        effects = parameters.changed_effects(changes)
        if "tracker" in effects:
            self.tracker = self._make_tracker(self._values())
        if self.estimator is None:  # not configured yet (lifecycle): the next configure reads them
            return
        if "rebuild" in effects:
            try:
                self.estimator = self._build_estimator(self._values())
                self._change_error = ""
            except (CheckpointError, ValueError, OSError) as exc:
                self._change_error = f"parameter change {changes} not applied: {exc}"
                self.get_logger().error(self._change_error)
                return
        elif "retune" in effects:  # thresholds, limits, size: keep the loaded model
            cfg = parameters.estimator_config(self._values())
            self.estimator.config = cfg
            self.estimator.input_size = int(cfg.input_size) or self.estimator.header.input_size
        if effects - {"live"}:
            self.get_logger().info(f"parameters changed: {changes}")

    def _make_tracker(self, values: dict) -> Tracker | None:
        return Tracker(parameters.tracker_config(values)) if values["tracking"] else None

    # ---------------------------------------------------------------- frames
    def _on_image(self, msg: Image) -> None:
        self._process(msg, image_to_rgb)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._process(msg, compressed_to_rgb)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self._camera_info = Intrinsics.from_k(msg.k)
        except ValueError as exc:
            self._bad_frame("camera_info", str(exc))

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
            rgb = convert(msg, max_pixels=self.get_parameter("max_pixels").value)
        except BadFrame as exc:
            self._bad_frame(exc.kind, str(exc))
            return
        stamp_s = _stamp_s(msg.header)
        try:
            results = self.estimator.predict(rgb)
            out = FillingLevelArray(header=msg.header, model_id=self.estimator.model_id,
                                    containers=[self._level_message(r) for r in results])
            self._add_tracks(out.containers, results, stamp_s or time.time())
            if self.depth_subs:
                self._add_positions(out.containers, results, stamp_s)
        except Exception as exc:  # never die on a frame; count and report it
            self._bad_frame("inference", f"{type(exc).__name__}: {exc}")
            return
        self.pub.publish(out)
        self.counters["published"] += 1
        self._last_latency = self.get_clock().now().nanoseconds * 1e-9 - stamp_s
        self._last_callback = time.perf_counter() - t_start
        if self.get_parameter("publish_debug_image").value and self.debug_pub.get_subscription_count() > 0:
            self.debug_pub.publish(Image(header=msg.header, **rgb_to_image_fields(draw_debug(rgb, results))))

    @staticmethod
    def _level_message(r) -> FillingLevel:
        x, y, w, h = r.roi
        return FillingLevel(level=r.level, percentage=r.percentage, confidence=r.confidence,
                            probabilities=[float(p) for p in r.probabilities],
                            roi=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h, do_rectify=False),
                            segmentation_score=r.segmentation_score)

    def _add_tracks(self, levels: list, results: list, stamp_s: float) -> None:
        """Track ids and fused levels into the messages of this frame's containers."""
        if self.tracker is None:
            return
        views = self.tracker.update(stamp_s, [Detection(r.box, r.probabilities, r.mask) for r in results])
        for v in views:
            if v.detection < 0:
                continue
            m = levels[v.detection]
            m.track_id, m.fused_level = v.track_id, v.fused_level
            m.fused_percentage = LEVEL_PERCENT[v.fused_level]
            m.fused_probabilities = [float(p) for p in v.fused_probabilities]
            m.track_age, m.track_frames = float(v.age_s), v.frames

    def _paired_depth(self, stamp_s: float):
        """The depth image (metres) nearest in time to ``stamp_s`` within ``depth_sync_slop``, or None."""
        slop = self.get_parameter("depth_sync_slop").value
        best = min(self._depths, key=lambda d: abs(d[0] - stamp_s), default=None)
        if best is None or abs(best[0] - stamp_s) > slop or self._camera_info is None:
            return None
        try:
            return depth_to_metres(best[1])
        except ValueError as exc:
            self._bad_frame("depth", str(exc))
            return None

    def _add_positions(self, levels: list, results: list, stamp_s: float) -> None:
        """3-D centre and size of each container from the paired depth image (see fillcls.geometry3d)."""
        depth = self._paired_depth(stamp_s)
        if depth is None or not results:
            return
        masks = [_mask_like(r, depth.shape) for r in results]
        plane = fit_plane(depth, self._camera_info, exclude=np.logical_or.reduce(masks))
        for m, mask in zip(levels, masks):
            obj = locate(mask, depth, self._camera_info, plane)
            if obj is None:
                continue
            m.has_position, m.position_method = True, obj.method
            m.center = Point(x=obj.centre[0], y=obj.centre[1], z=obj.centre[2])
            m.size = Vector3(x=obj.diameter, y=obj.height, z=obj.diameter)

    def _publish_diagnostics(self) -> None:
        values = {"frames_received": self.counters["received"], "frames_published": self.counters["published"],
                  "bad_frames": sum(self.bad_frames.values()), "model_id": self.estimator.model_id,
                  "device": str(self.estimator.device), "last_latency_s": f"{self._last_latency:.4f}",
                  "time_callback_s": f"{self._last_callback:.4f}"}
        values.update({f"bad_frames_{k}": v for k, v in sorted(self.bad_frames.items())})
        values.update({f"time_{k}_s": f"{v:.4f}" for k, v in self.estimator.last_timing.items()})
        if self._change_error:
            values["parameter_error"] = self._change_error
        problems = [m for m, bad in (("bad frames received", self.bad_frames),
                                     ("last parameter change not applied", self._change_error)) if bad]
        status = DiagnosticStatus(level=DiagnosticStatus.WARN if problems else DiagnosticStatus.OK,
                                  name=f"{self.get_name()}: filling level",
                                  message="; ".join(problems) or "ok",
                                  hardware_id=str(self.estimator.device),
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        self.diag_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                              status=[status]))


def _stamp_s(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def _mask_like(result, shape: tuple[int, int]) -> np.ndarray:
    """The result's mask (its box when the backend gives none) at the depth image's size."""
    if result.mask is not None:
        mask = result.mask.astype(np.uint8)
    else:
        mask = np.zeros(shape, np.uint8)
        x0, y0, x1, y1 = result.box
        mask[y0:y1, x0:x1] = 1
    if mask.shape != shape:
        mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return mask.astype(bool)


class FillingNode(FillingBehaviour, Node):
    """Filling-level node; raises CheckpointError / ValueError from ``__init__`` on a bad config.

    Parameters come from :data:`fillcls_ros.parameters.NODE_PARAMETERS`: a change is validated
    (without side effects) in the set-parameters callback and applied once accepted, in the
    post-set callback (a new estimator for model / device / backend changes).
    """

    def __init__(self, **kwargs):
        super().__init__("fillcls_node", **kwargs)
        self._init_filling()
        self._load()
        self._create_publishers(self.create_publisher)
        self._subscribe()


def _goodbye(node: FillingBehaviour) -> str:
    return (f"shutting down after {node.counters['received']} frames ({node.counters['published']} published, "
            f"{sum(node.bad_frames.values())} bad)")


def main(args=None) -> int:
    """Entry point of ``fillcls-node``; exit code 0 on SIGINT/SIGTERM, 1 on a bad configuration.
    ``--help`` lists the parameters and exits."""
    if parameters.wants_help(sys.argv[1:] if args is None else args):
        print(parameters.help_text("fillcls-node", intro=__doc__.strip().split("\n\n")[0].replace("``", "")))
        return 0
    return spin_main(FillingNode, (CheckpointError, ValueError), "fillcls_node", _goodbye, args)


if __name__ == "__main__":
    sys.exit(main())
