"""``fillcls-camera``: a camera publisher for demos, tests and benchmarks.

Publishes ``image`` (sensor_msgs/Image) at ``rate`` Hz (after ``wait_for_subscribers`` image
subscribers have matched, when that parameter is > 0) from one of these sources (parameter
``source``):

* ``synthetic``: coloured containers on a plain background (cheap; for benchmarks and tests);
* ``procedural``: the trainer's procedural camera frames of the test containers of ``split``
  (unseen shapes), with their ground truth;
* a folder of images (``.png``, ``.jpg``, ...), played in name order;
* a video file (anything OpenCV reads).

For the synthetic and procedural sources it also publishes the ground truth on
``image/ground_truth`` as a ``fillcls_msgs/FillingLevelArray`` with the frame's header (true
level, true box as ROI, confidence 1).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np
from fillcls_msgs.msg import FillingLevel, FillingLevelArray
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, RegionOfInterest

from fillcls.spec import LEVEL_PERCENT
from fillcls.world import SPLITS, render_frame
from fillcls.image_codec import rgb_to_image_fields
from . import parameters
from .spin import spin_main

#: What the camera logs when it stops publishing (its ``count`` reached, or a non-looping source exhausted).
CAMERA_DONE = "camera done"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def synthetic_frame(index: int, width: int = 640, height: int = 480, containers: int = 1):
    """A deterministic frame with ``containers`` coloured upright boxes on a grey background.

    Returns ``(rgb, truth)``; ``truth`` is a list of ``(level, box)`` with levels 0..3 cycling.
    """
    rng = np.random.default_rng(index)
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:] = rng.integers(90, 140, 3, dtype=np.uint8)
    truth = []
    slot = width // max(1, containers)
    margin = max(2, width // 40)  # clear of the frame edges, where a detector's box is ambiguous
    for i in range(containers):
        w = int(slot * rng.uniform(0.3, 0.6))
        h = int(height * rng.uniform(0.35, 0.7))
        x0 = i * slot + margin + int(rng.integers(0, max(1, slot - w - 2 * margin)))
        y0 = margin + int(rng.integers(0, max(1, height - h - 2 * margin)))
        level = (index + i) % 4
        colour = rng.integers(0, 256, 3)
        colour[i % 3] = 255
        rgb[y0 : y0 + h, x0 : x0 + w] = colour.astype(np.uint8)
        if level in (1, 2):  # a darker "content" band up to the level; its full channel stays
            fill = int(h * (0.5 if level == 1 else 0.9))  # at 255, so it never matches the grey background
            band = colour // 2
            band[i % 3] = 255
            rgb[y0 + h - fill : y0 + h, x0 : x0 + w] = band.astype(np.uint8)
        truth.append((level, (x0, y0, x0 + w, y0 + h)))
    return rgb, truth


class FrameSource:
    """Iterates ``(rgb, truth or None)`` frames from a source spec (see module docstring)."""

    def __init__(self, source: str, width: int, height: int, containers: int = 1, split: str = "S1",
                 seed: int = 0, loop: bool = True):
        self.source, self.width, self.height = source, width, height
        self.containers, self.split, self.seed, self.loop = containers, split, seed, loop
        self.index = 0
        self.files: list[Path] = []
        self.video = None
        if source in ("synthetic", "procedural"):
            if source == "procedural" and split not in SPLITS:
                raise ValueError(f"parameter split must be one of {', '.join(SPLITS)}, got {split!r}")
        elif os.path.isdir(source):
            self.files = sorted(p for p in Path(source).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise ValueError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        elif os.path.isfile(source):
            self.video = cv2.VideoCapture(source)
            if not self.video.isOpened():
                raise ValueError(f"{source}: OpenCV cannot open this video file")
        else:
            raise ValueError(f"source {source!r} is neither 'synthetic', 'procedural', a folder nor a file")

    def next(self):
        """The next frame, or None when a non-looping source is exhausted."""
        i = self.index
        self.index += 1
        if self.source == "synthetic":
            return synthetic_frame(self.seed * 1_000_003 + i, self.width, self.height, self.containers)
        if self.source == "procedural":
            rgb, anns = render_frame(self.seed * 1_000_003 + i, width=self.width, height=self.height,
                                     containers=SPLITS[self.split], n_containers=self.containers)
            return rgb, [(a["label"], tuple(a["box"])) for a in anns]
        if self.files:
            if i >= len(self.files) and not self.loop:
                return None
            path = self.files[i % len(self.files)]
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"{path}: cannot read this image")
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None
        ok, bgr = self.video.read()
        if not ok and self.loop:
            self.video.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self.video.read()
        return (cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None) if ok else None


def truth_message(header, truth) -> FillingLevelArray:
    """Ground truth as a FillingLevelArray (confidence 1, one-hot probabilities, true boxes)."""
    out = FillingLevelArray(header=header, model_id="ground_truth")
    for level, (x0, y0, x1, y1) in truth:
        probs = [0.0] * 4
        probs[level] = 1.0
        out.containers.append(FillingLevel(
            level=level, percentage=LEVEL_PERCENT[level], confidence=1.0, probabilities=probs,
            roi=RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0, height=y1 - y0),
            segmentation_score=1.0))
    return out


CAMERA_PARAMETERS: tuple[parameters.Param, ...] = (
    parameters.Param("source", "synthetic", "synthetic, procedural, a folder of images or a video file",
                     "start"),
    parameters.Param("rate", 30.0, "Frames per second", "start", range=(0.001, 1000.0)),
    parameters.Param("width", 640, "Frame width (synthetic, procedural)", "start", range=(16, 8192)),
    parameters.Param("height", 480, "Frame height (synthetic, procedural)", "start", range=(16, 8192)),
    parameters.Param("containers", 1, "Containers per synthetic / procedural frame", "start", range=(1, 16)),
    parameters.Param("split", "S1", "procedural: frames of this split's test containers", "start",
                     choices=tuple(SPLITS)),
    parameters.Param("seed", 0, "Seed of the synthetic / procedural frames", "start", range=(0, 2**31 - 1)),
    parameters.Param("loop", True, "Start again when a folder or video ends", "start"),
    parameters.Param("count", 0, "Stop after this many frames (0: never)", "start", range=(0, 2**31 - 1)),
    parameters.Param("encoding", "rgb8", "Encoding of the published images", "start", choices=("rgb8", "bgr8")),
    parameters.Param("frame_id", "camera", "header.frame_id of the published images", "start"),
    parameters.Param("wait_for_subscribers", 0, "Start once this many image subscribers (and one ground-truth "
                     "subscriber) matched; 0: at once", "start", range=(0, 64)),
)


class CameraNode(Node):
    """Publishes frames of a :class:`FrameSource` at a fixed rate (see module docstring)."""

    def __init__(self, **kwargs):
        super().__init__("fillcls_camera", **kwargs)
        p = {q.name: self.declare_parameter(q.name, q.default, parameters.descriptor(q)).value
             for q in CAMERA_PARAMETERS}
        errors = parameters.validate_all(p, {q.name: q for q in CAMERA_PARAMETERS})
        if errors:
            raise ValueError("; ".join(errors))
        self.params = p
        self.frames = FrameSource(p["source"], p["width"], p["height"], p["containers"], p["split"],
                                  p["seed"], p["loop"])
        self.pub = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.truth_pub = self.create_publisher(FillingLevelArray, "image/ground_truth", 100)
        self.sent = 0
        self._ready_since = None  # wait_for_subscribers: when all subscribers were first seen
        self.timer = self.create_timer(1.0 / p["rate"], self._tick)
        self.get_logger().info(f"publishing {p['source']} frames on {self.pub.topic_name} at {p['rate']:g} Hz")

    def _subscribers_ready(self) -> bool:
        """True once ``wait_for_subscribers`` image subscribers (and a ground-truth one) matched."""
        n = self.params["wait_for_subscribers"]
        if n <= 0:
            return True
        if self.pub.get_subscription_count() >= n and self.truth_pub.get_subscription_count() >= 1:
            now = self.get_clock().now().nanoseconds
            self._ready_since = self._ready_since or now
            return now - self._ready_since > 5e8  # let the matches settle on both sides
        return False

    def _finish(self, why: str) -> None:
        """Stop publishing and say so (``CAMERA_DONE``: what the demo waits for)."""
        self.timer.cancel()
        self.get_logger().info(f"{CAMERA_DONE}: {why}")

    def _tick(self):
        if self.sent == 0 and not self._subscribers_ready():
            return
        if self.params["count"] and self.sent >= self.params["count"]:
            self._finish(f"count {self.sent} reached")
            return
        frame = self.frames.next()
        if frame is None:
            self._finish(f"source exhausted after {self.sent} frames")
            return
        rgb, truth = frame
        if self.params["encoding"] == "bgr8":
            rgb = rgb[..., ::-1]
        msg = Image(**rgb_to_image_fields(rgb))
        if self.params["encoding"] == "bgr8":
            msg.encoding = "bgr8"
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.params["frame_id"]
        if truth is not None:
            self.truth_pub.publish(truth_message(msg.header, truth))
        self.pub.publish(msg)
        self.sent += 1


def main(args=None) -> int:
    """Entry point of ``fillcls-camera``; exit code 0 on SIGINT/SIGTERM, 1 on a bad parameter.
    ``--help`` lists the parameters and exits."""
    if parameters.wants_help(sys.argv[1:] if args is None else args):
        print(parameters.help_text("fillcls-camera", CAMERA_PARAMETERS, __doc__.strip().split("\n\n")[0].replace("``", "")))
        return 0
    return spin_main(CameraNode, (ValueError, ImportError), "fillcls_camera", args=args)


if __name__ == "__main__":
    sys.exit(main())
