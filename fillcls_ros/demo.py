"""``fillcls-demo`` (``make demo``): camera -> node -> live filling levels beside the ground truth.

Starts ``fillcls-camera`` streaming procedural frames of the test containers of a split (with the
default S1, shapes the default model never saw; the demo says which containers the model saw in
training) as a real ``sensor_msgs/Image`` topic, starts ``fillcls-node`` on the
project's default models, prints the level it publishes for every frame beside the ground truth,
and ends with the accuracy, rate and latency it measured. ``--source`` streams a folder of images
or a video file instead (no ground truth: predictions only); ``--record`` writes a rosbag2 of the
camera, ground-truth and node topics that ``fillcls-bag evaluate`` replays.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from fillcls.spec import CLASSES
from fillcls.evaluation import Scoreboard, format_summary, match_frame, stamp_ns
from fillcls.paths import share_file


def model_training(path: str) -> dict:
    """The ``training`` record of a classifier's header (.pt or .onnx; {} if it has none)."""
    from fillcls.backends import read_model_header

    return read_model_header(path).training or {}


def seen_containers(training: dict) -> tuple[str, ...]:
    """Container ids a model was trained on, from its header's training record (() if unknown)."""
    from fillcls.world import split_containers

    if training.get("train_containers"):
        return tuple(training["train_containers"])
    if training.get("split") and training.get("data", {}).get("data", "synthetic") == "synthetic":
        return split_containers(training["split"])[0]
    return ()


def describe_containers(split: str, seen: tuple[str, ...]) -> str:
    """"split S3's test containers C1, C4 (seen in training), C7 (unseen)"."""
    from fillcls.world import SPLITS

    test = SPLITS[split]
    if not seen:
        return f"split {split}'s test containers {', '.join(test)}"
    parts = [f"{c} ({'seen in training' if c in seen else 'unseen'})" for c in test]
    return f"split {split}'s test containers {', '.join(parts)}"


def source_frames(source: str, frames: int) -> str:
    """How many frames a camera source will stream, in words (a folder or video may be shorter)."""
    from .camera import IMAGE_SUFFIXES

    available = None
    if os.path.isdir(source):
        available = sum(1 for p in Path(source).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    elif os.path.isfile(source):
        import cv2

        video = cv2.VideoCapture(source)
        n = int(video.get(cv2.CAP_PROP_FRAME_COUNT)) if video.isOpened() else 0
        available = n if n > 0 else None
    if available is not None and (frames == 0 or available < frames):
        return f"{available} frames (all of the source)"
    return f"{frames} frames" if frames else "frames until the source ends"


class Demo:
    """One demo run: the node and camera processes, a probe node collecting answers and truths."""

    def __init__(self, args):
        import rclpy
        from fillcls_msgs.msg import FillingLevelArray
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from .processes import RosProcess, check_model, node_params

        self.args = args
        self.params = node_params(args.model, args.segmentation_backend)
        check_model(self.params["model_path"])
        self.has_truth = args.source in ("procedural", "synthetic")
        print(f"[demo] node: model {self.params['model_path']}, segmentation "
              f"{self.params.get('segmentation_backend', 'auto (the node default)')}, CPU")
        self.node = RosProcess("fillcls-node", self.params)
        self.camera = self.recorder = None
        self.truths, self.answers, self.arrival, self.debug = {}, {}, {}, {}
        try:
            rclpy.init()
            self.probe = rclpy.create_node("fillcls_demo")
        except Exception:
            self.node.stop()
            raise
        self.probe.create_subscription(FillingLevelArray, "filling_level", self._on_answer, 100)
        self.probe.create_subscription(FillingLevelArray, "image/ground_truth",
                                       lambda m: self.truths.__setitem__(stamp_ns(m.header), m), 100)
        if args.debug_image:
            self.probe.create_subscription(Image, "fillcls_node/debug_image",
                                           lambda m: self.debug.__setitem__("last", m), qos_profile_sensor_data)

    def _on_answer(self, m) -> None:
        k = stamp_ns(m.header)
        self.answers[k] = m
        self.arrival[k] = time.time()

    def wait_for_node(self) -> None:
        import rclpy

        end = time.monotonic() + 90
        while time.monotonic() < end and self.probe.count_publishers("filling_level") == 0:
            self.check_node()
            rclpy.spin_once(self.probe, timeout_sec=0.1)
        if not self.node.wait_for_output("listening on", 60):
            raise RuntimeError(f"fillcls-node did not start:\n{self.node.output[-3000:]}")

    def check_node(self) -> None:
        if not self.node.alive():
            raise RuntimeError(f"fillcls-node exited:\n{self.node.output[-3000:]}")

    def start_camera(self) -> None:
        from .processes import RosProcess

        a = self.args
        what = f"{a.source} frames"
        if a.source == "procedural":
            what += " of " + describe_containers(a.split, seen_containers(model_training(self.params["model_path"])))
        print(f"[demo] camera: {what}, {a.width}x{a.height} at {a.rate:g} Hz, {source_frames(a.source, a.frames)}")
        self.camera = RosProcess("fillcls-camera", {
            "source": a.source, "rate": a.rate, "split": a.split, "seed": a.seed, "containers": a.containers,
            "count": a.frames, "loop": False, "width": a.width, "height": a.height, "wait_for_subscribers": 1})

    def stream(self, board) -> list:
        """Print each answer (beside its truth) as it arrives, until the camera is done; returns the
        stamps answered, in order."""
        import rclpy

        from .camera import CAMERA_DONE

        shown: list = []
        deadline = time.monotonic() + self.args.frames / self.args.rate + 90
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            rclpy.spin_once(self.probe, timeout_sec=0.02)
            for k in sorted(set(self.answers) - set(shown)):
                if self.has_truth and k not in self.truths:
                    continue
                shown.append(k)
                last_new = time.monotonic()
                self._print_answer(k, len(shown), board)
            cam_done = not self.camera.alive() or CAMERA_DONE in self.camera.output or (
                self.args.frames and len(shown) >= self.args.frames)
            if cam_done and time.monotonic() - last_new > 3.0:
                break
            self.check_node()
        return shown

    def _print_answer(self, k: int, n: int, board) -> None:
        latency = self.arrival[k] - k * 1e-9
        if self.has_truth:
            r = match_frame(self.truths[k], self.answers[k], latency)
            board.add(r)
            print(r.line(n), flush=True)
        else:
            levels = ", ".join(f"{CLASSES[c.level]} ({c.confidence:.2f})" for c in self.answers[k].containers)
            print(f"frame {n:4d}  pred {levels or 'no container'}  {latency * 1e3:.1f} ms", flush=True)

    def summary(self, board, shown: list) -> None:
        t_first = self.arrival[shown[0]] if shown else None
        elapsed = (max(self.arrival.values()) - t_first) if len(self.arrival) > 1 and t_first else None
        print()
        if not self.has_truth:
            print(f"frames answered: {len(shown)}")
            return
        s = board.summary(elapsed)
        s["rate"] = (len(board.frames) - 1) / elapsed if elapsed else float("nan")
        print(format_summary(s))
        skipped = len(self.truths) - len(shown)
        print(f"frames streamed: {len(self.truths)}, answered: {len(shown)}"
              + (f" ({skipped} skipped: the node drops frames that arrive while it is busy and always "
                 "works on the newest one)" if skipped > 0 else ""))

    def save_debug_image(self) -> None:
        import cv2
        import numpy as np

        from fillcls.image_codec import image_to_rgb

        if "last" not in self.debug:
            return
        rgb = image_to_rgb(self.debug["last"])
        Path(self.args.debug_image).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(self.args.debug_image), np.ascontiguousarray(rgb[..., ::-1]))
        print(f"[demo] debug image saved to {self.args.debug_image}")

    def close(self) -> None:
        import rclpy

        if self.recorder:
            self.recorder.close()
        if self.camera:
            self.camera.stop()
        self.node.stop()
        self.probe.destroy_node()
        rclpy.try_shutdown()


def run(args) -> int:
    """Run the demo (see the module docstring); 0 when at least one frame was answered."""
    from .bag import BagRecorder

    demo = Demo(args)
    board = Scoreboard()
    try:
        if args.record:
            demo.recorder = BagRecorder(demo.probe, args.record, {
                "/image": "sensor_msgs/msg/Image", "/image/ground_truth": "fillcls_msgs/msg/FillingLevelArray",
                "/filling_level": "fillcls_msgs/msg/FillingLevelArray"})
        demo.wait_for_node()
        demo.start_camera()
        shown = demo.stream(board)
        demo.summary(board, shown)
        if args.debug_image:
            demo.save_debug_image()
        if demo.recorder:
            print(f"[demo] recorded {args.record}: "
                  + ", ".join(f"{t} {n}" for t, n in demo.recorder.counts.items()))
        return 0 if shown else 1
    finally:
        demo.close()


def main(argv=None) -> int:
    """Entry point of ``fillcls-demo`` / ``python -m fillcls_ros.demo``."""
    ap = argparse.ArgumentParser(prog="fillcls-demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="procedural",
                    help="procedural (default), synthetic, a folder of images or a video file")
    ap.add_argument("--split", default="S1", help="split whose test containers are shown (S1, S2, S3)")
    ap.add_argument("--frames", type=int, default=60, help="frames to stream (0: until the source ends)")
    ap.add_argument("--rate", type=float, default=5.0, help="camera rate in Hz")
    ap.add_argument("--containers", type=int, default=1, help="containers per procedural frame")
    ap.add_argument("--seed", type=int, default=7, help="seed of the procedural frames")
    ap.add_argument("--width", type=int, default=640, help="frame width")
    ap.add_argument("--height", type=int, default=480, help="frame height")
    ap.add_argument("--model", default="", help="classifier, .onnx or .pt (default: the node's, models/default.onnx)")
    ap.add_argument("--segmentation-backend", default="", help="node backend: auto (default), learned, "
                    "threshold, full_frame, maskrcnn")
    ap.add_argument("--debug-image", default="", help="save the node's last debug image to this PNG")
    ap.add_argument("--record", default="", help="record camera, ground truth and node output to this new bag")
    args = ap.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", share_file("config", "fastdds_shm.xml"))
    if args.source not in ("procedural", "synthetic") and not os.path.exists(args.source):
        print(f"fillcls-demo: --source {args.source}: no such file or folder", file=sys.stderr)
        return 2
    try:
        return run(args)
    except (FileNotFoundError, FileExistsError, RuntimeError, ValueError) as exc:
        print(f"fillcls-demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
