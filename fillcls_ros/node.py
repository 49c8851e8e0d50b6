"""``fillcls_node``: camera images in, ``fillcls_msgs/FillingLevelArray`` out on ``filling_level``.

A thin rclpy shell over :class:`fillcls.inference.FillingEstimator`. Run it as
``fillcls-node --ros-args --params-file config/filling.yaml`` or with
``ros2 launch fillcls_ros filling.launch.py``.

Topics: subscribes ``image`` (sensor_msgs/Image) or ``image/compressed``
(sensor_msgs/CompressedImage, parameter ``compressed``); publishes ``filling_level``
(FillingLevelArray, input header copied), ``~/debug_image`` (only built while subscribed) and
``/diagnostics`` (frame counters, bad frames per kind, timings, once a second).

Several cameras (parameter ``cameras``, e.g. ``[cam_left, cam_right]``): each camera ``C`` has its
own ``C/image`` (``C/image/compressed``), ``C/depth``, ``C/camera_info``, ``C/filling_level``,
``C/debug_image`` and tracker. Frames are processed in cycles: a frame only replaces its camera's
pending frame (a replaced one is counted as dropped) and wakes the cycle, which runs once the
executor has taken every frame that arrived meanwhile and classifies the newest frame of every
camera with one :meth:`~fillcls.inference.FillingEstimator.predict_many` (one classifier forward).
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from fillcls_msgs.msg import FillingLevel, FillingLevelArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
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


@dataclass(eq=False)
class CameraChannel:
    """One camera of the node: its topics, tracker, depth pairing, publishers, subscriptions and
    (several cameras) the newest frame waiting for the next cycle."""

    name: str  # "": the single camera on the node's relative topics
    tracker: Tracker | None = None
    depths: deque = field(default_factory=lambda: deque(maxlen=8))  # (stamp s, depth message), newest last
    intrinsics: Intrinsics | None = None
    pub: Any = None
    debug_pub: Any = None
    subs: list = field(default_factory=list)  # the image subscription first
    pending: tuple | None = None  # (message, converter) not processed yet
    counters: Counter = field(default_factory=Counter)  # received, published, dropped, bad

    def topic(self, name: str) -> str:
        """``name`` under this camera's namespace (the relative ``name`` for the single camera)."""
        return f"{self.name}/{name}" if self.name else name

    @property
    def debug_topic(self) -> str:
        return self.topic("debug_image") if self.name else "~/debug_image"


def _declare(node, p: parameters.Param) -> None:
    """Declare ``p`` on ``node``. An empty list default has no ROS type (rclpy would make it a byte
    array) and a params file's ``[]`` reads as "not set": declared as a string array, set to ``[]``
    when not given, and made read-only only after that."""
    if not (isinstance(p.default, list) and not p.default):
        node.declare_parameter(p.name, p.default, parameters.descriptor(p))
        return
    d = parameters.descriptor(p)
    d.read_only = False
    if node.declare_parameter(p.name, Parameter.Type.STRING_ARRAY, d).type_ == Parameter.Type.NOT_SET:
        node.set_parameters([Parameter(p.name, Parameter.Type.STRING_ARRAY, [])])
    if p.read_only:
        final = copy.deepcopy(node.describe_parameter(p.name))
        final.read_only = True
        node.set_descriptor(p.name, final)


class FillingBehaviour:
    """What the plain and the lifecycle node share: parameters, the estimator, the topics, the
    frame callbacks and diagnostics. Mixed into an rclpy ``Node`` or ``LifecycleNode``."""

    def _init_filling(self) -> None:
        """Declare and check the parameters (raises ValueError naming a bad one); no model yet."""
        for p in parameters.NODE_PARAMETERS:
            _declare(self, p)
        values = self._values()
        errors = parameters.validate_all(values)
        if errors:
            raise ValueError("; ".join(errors))
        self.estimator: FillingEstimator | None = None
        self.diag_pub = self.diag_timer = self._cycle_guard = None
        self._default_threads: int | None = None
        self._change_error = ""
        self.counters: Counter[str] = Counter()
        self.bad_frames: Counter[str] = Counter()
        self._bad_logged: dict[str, float] = {}
        self._last_latency = float("nan")
        self._last_callback = float("nan")  # seconds spent in the last frame's callback (cycle)
        self.multi = bool(values["cameras"])  # several cameras: frames processed in cycles
        self.cameras = [CameraChannel(n, self._make_tracker(values)) for n in values["cameras"] or [""]]
        self.cycle_frames: Counter[int] = Counter()  # frames per cycle -> cycles
        self.batch_sizes: Counter[int] = Counter()  # crops per classifier forward -> cycles
        self._use_depth = False
        self.add_on_set_parameters_callback(self._validate_change)
        self.add_post_set_parameters_callback(self._apply_change)

    def _load(self) -> None:
        """The estimator (the models) from the current parameters."""
        self.estimator = self._build_estimator(self._values())

    def _create_publishers(self, create_publisher) -> None:
        for ch in self.cameras:
            ch.pub = create_publisher(FillingLevelArray, ch.topic("filling_level"), 10)
            ch.debug_pub = create_publisher(Image, ch.debug_topic, 1)
        self.diag_pub = create_publisher(DiagnosticArray, "/diagnostics", 10)

    def _destroy_publishers(self, destroy: Callable) -> None:
        """Destroy every publisher with ``destroy`` (the node's own destroy method)."""
        for pub in [p for ch in self.cameras for p in (ch.pub, ch.debug_pub)] + [self.diag_pub]:
            if pub is not None:
                destroy(pub)
        for ch in self.cameras:
            ch.pub = ch.debug_pub = None
        self.diag_pub = None

    def _subscribe(self) -> None:
        """The image subscriptions and the diagnostics timer: from here on frames cost CPU."""
        values = self._values()
        qos = QoSProfile(depth=values["qos_depth"], history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.BEST_EFFORT if values["qos_reliability"] == "best_effort"
                         else ReliabilityPolicy.RELIABLE)
        self.compressed = bool(values["compressed"])
        msg_type, topic, convert = ((CompressedImage, "image/compressed", compressed_to_rgb) if self.compressed
                                    else (Image, "image", image_to_rgb))
        self._use_depth = bool(values["depth"])
        for ch in self.cameras:
            ch.subs = [self.create_subscription(msg_type, ch.topic(topic),
                                                lambda m, ch=ch: self._on_frame(ch, m, convert), qos)]
            if self._use_depth:
                ch.subs += [
                    self.create_subscription(Image, ch.topic("depth"),
                                             lambda m, ch=ch: ch.depths.append((_stamp_s(m.header), m)),
                                             QoSProfile(depth=2, reliability=qos.reliability)),
                    self.create_subscription(CameraInfo, ch.topic("camera_info"),
                                             lambda m, ch=ch: self._on_camera_info(ch, m), 10)]
        if self.multi:
            self._cycle_guard = self.create_guard_condition(self._cycle)
        self.diag_timer = self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(
            f"listening on {', '.join(ch.subs[0].topic_name for ch in self.cameras)} ({values['qos_reliability']}, "
            f"depth {qos.depth}), publishing {', '.join(ch.pub.topic_name for ch in self.cameras)}"
            + (f" ({len(self.cameras)} cameras, one batch per cycle)" if self.multi else ""))

    def _unsubscribe(self) -> None:
        for ch in self.cameras:
            for sub in ch.subs:
                self.destroy_subscription(sub)
            ch.subs, ch.pending = [], None
        if self._cycle_guard is not None:
            self.destroy_guard_condition(self._cycle_guard)
        if self.diag_timer is not None:
            self.destroy_timer(self.diag_timer)
        self.diag_timer = self._cycle_guard = None

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
            for ch in self.cameras:
                ch.tracker = self._make_tracker(self._values())
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
    def _on_frame(self, ch: CameraChannel, msg, convert) -> None:
        """A colour frame of camera ``ch``: processed at once (one camera) or kept as the camera's
        newest for the next cycle (several cameras; a frame still waiting is dropped)."""
        self.counters["received"] += 1
        ch.counters["received"] += 1
        if not self.multi:
            self._process([(ch, msg, convert)])
            return
        if ch.pending is not None:
            self.counters["dropped"] += 1
            ch.counters["dropped"] += 1
        ch.pending = (msg, convert)
        self._cycle_guard.trigger()

    def _cycle(self) -> None:
        """The guard condition's callback: the newest frame of every camera that has one, in one
        batch. The executor runs it after the image callbacks that were ready with it, so frames
        that arrived together are batched together."""
        items = [(ch, *ch.pending) for ch in self.cameras if ch.pending is not None]
        for ch in self.cameras:
            ch.pending = None
        if items:
            self._process(items)

    def _on_camera_info(self, ch: CameraChannel, msg: CameraInfo) -> None:
        try:
            ch.intrinsics = Intrinsics.from_k(msg.k)
        except ValueError as exc:
            self._bad_frame("camera_info", str(exc), ch)

    def _bad_frame(self, kind: str, message: str, ch: CameraChannel | None = None) -> None:
        self.bad_frames[kind] += 1
        if ch is not None:
            ch.counters["bad"] += 1
            message = f"{ch.name}: {message}" if ch.name else message
        now = time.monotonic()
        if now - self._bad_logged.get(kind, -math.inf) >= BAD_FRAME_LOG_PERIOD:
            self._bad_logged[kind] = now
            self.get_logger().warning(f"bad frame ({kind}, {self.bad_frames[kind]} so far), skipped: {message}")

    def _process(self, items: list) -> None:
        """Decode the ``(camera, message, converter)`` frames, classify them with one
        :meth:`~fillcls.inference.FillingEstimator.predict_many` and publish each camera's answer.
        A bad frame is counted and skipped without stopping the others."""
        t_start = time.perf_counter()
        max_pixels = self.get_parameter("max_pixels").value
        frames = []
        for ch, msg, convert in items:
            try:
                frames.append((ch, msg, convert(msg, max_pixels=max_pixels)))
            except BadFrame as exc:
                self._bad_frame(exc.kind, str(exc), ch)
        if not frames:
            return
        try:
            results = self.estimator.predict_many([rgb for _, _, rgb in frames])
        except Exception as exc:  # never die on a frame; count and report it
            for ch, _, _ in frames:
                self._bad_frame("inference", f"{type(exc).__name__}: {exc}", ch)
            return
        if self.multi:
            self.cycle_frames[len(frames)] += 1
            self.batch_sizes[self.estimator.last_batch_size] += 1
        for (ch, msg, rgb), found in zip(frames, results):
            self._answer(ch, msg, rgb, found, t_start)

    def _answer(self, ch: CameraChannel, msg, rgb: np.ndarray, results: list, t_start: float) -> None:
        """Tracks and positions of one frame's ``results``; publish them (and the debug image)."""
        stamp_s = _stamp_s(msg.header)
        try:
            out = FillingLevelArray(header=msg.header, model_id=self.estimator.model_id,
                                    containers=[self._level_message(r) for r in results])
            self._add_tracks(ch, out.containers, results, stamp_s or time.time())
            if self._use_depth:
                self._add_positions(ch, out.containers, results, stamp_s)
        except Exception as exc:  # never die on a frame; count and report it
            self._bad_frame("inference", f"{type(exc).__name__}: {exc}", ch)
            return
        ch.pub.publish(out)
        self.counters["published"] += 1
        ch.counters["published"] += 1
        self._last_latency = self.get_clock().now().nanoseconds * 1e-9 - stamp_s
        self._last_callback = time.perf_counter() - t_start
        if self.get_parameter("publish_debug_image").value and ch.debug_pub.get_subscription_count() > 0:
            ch.debug_pub.publish(Image(header=msg.header, **rgb_to_image_fields(draw_debug(rgb, results))))

    @staticmethod
    def _level_message(r) -> FillingLevel:
        x, y, w, h = r.roi
        return FillingLevel(level=r.level, percentage=r.percentage, confidence=r.confidence,
                            probabilities=[float(p) for p in r.probabilities],
                            roi=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h, do_rectify=False),
                            segmentation_score=r.segmentation_score)

    @staticmethod
    def _add_tracks(ch: CameraChannel, levels: list, results: list, stamp_s: float) -> None:
        """Track ids and fused levels (camera ``ch``'s tracker) into the messages of a frame's containers."""
        if ch.tracker is None:
            return
        views = ch.tracker.update(stamp_s, [Detection(r.box, r.probabilities, r.mask) for r in results])
        for v in views:
            if v.detection < 0:
                continue
            m = levels[v.detection]
            m.track_id, m.fused_level = v.track_id, v.fused_level
            m.fused_percentage = LEVEL_PERCENT[v.fused_level]
            m.fused_probabilities = [float(p) for p in v.fused_probabilities]
            m.track_age, m.track_frames = float(v.age_s), v.frames

    def _paired_depth(self, ch: CameraChannel, stamp_s: float):
        """Camera ``ch``'s depth image (metres) nearest in time to ``stamp_s`` within
        ``depth_sync_slop``, or None."""
        slop = self.get_parameter("depth_sync_slop").value
        best = min(ch.depths, key=lambda d: abs(d[0] - stamp_s), default=None)
        if best is None or abs(best[0] - stamp_s) > slop or ch.intrinsics is None:
            return None
        try:
            return depth_to_metres(best[1])
        except ValueError as exc:
            self._bad_frame("depth", str(exc), ch)
            return None

    def _add_positions(self, ch: CameraChannel, levels: list, results: list, stamp_s: float) -> None:
        """3-D centre and size of each container from the paired depth image (see fillcls.geometry3d)."""
        depth = self._paired_depth(ch, stamp_s)
        if depth is None or not results:
            return
        masks = [_mask_like(r, depth.shape) for r in results]
        plane = fit_plane(depth, ch.intrinsics, exclude=np.logical_or.reduce(masks))
        for m, mask in zip(levels, masks):
            obj = locate(mask, depth, ch.intrinsics, plane)
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
        if self.multi:
            values.update(self._camera_diagnostics())
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

    def _camera_diagnostics(self) -> dict:
        """Several cameras: the counters of each, the frames dropped (replaced before their cycle)
        and the histograms ``size:cycles`` of frames per cycle and crops per classifier forward."""
        values = {"cameras": ", ".join(ch.name for ch in self.cameras), "frames_dropped": self.counters["dropped"],
                  "cycle_frames": _histogram(self.cycle_frames), "batch_sizes": _histogram(self.batch_sizes)}
        for ch in self.cameras:
            values.update({f"{ch.name}/frames_{k}": ch.counters[k] for k in ("received", "published", "dropped", "bad")})
        return values


def _histogram(counts: Counter) -> str:
    """``"1:20 2:310"``: each value and how often it was seen."""
    return " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))


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
    dropped = f", {node.counters['dropped']} dropped" if node.multi else ""
    return (f"shutting down after {node.counters['received']} frames ({node.counters['published']} published, "
            f"{sum(node.bad_frames.values())} bad{dropped})")


def main(args=None) -> int:
    """Entry point of ``fillcls-node``; exit code 0 on SIGINT/SIGTERM, 1 on a bad configuration.
    ``--help`` lists the parameters and exits."""
    if parameters.wants_help(sys.argv[1:] if args is None else args):
        print(parameters.help_text("fillcls-node", intro=__doc__.strip().split("\n\n")[0].replace("``", "")))
        return 0
    return spin_main(FillingNode, (CheckpointError, ValueError), "fillcls_node", _goodbye, args)


if __name__ == "__main__":
    sys.exit(main())
