"""``fillcls-demo`` (``make demo``): camera -> node -> live filling levels beside the ground truth.

Starts ``fillcls-camera`` streaming procedural frames of the test containers of a split (shapes the
default model never saw) as a real ``sensor_msgs/Image`` topic, starts ``fillcls-node`` on the
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

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"


def node_params(model: str = "", backend: str = "", **extra) -> dict:
    """Parameters of the demo's node: CPU, the default models (the node's own default segmentation
    backend, ``learned`` with the shipped ``models/segmenter.pt``) unless given."""
    params = {"device": "cpu", "model_path": model or str(MODELS / "default.pt"), "publish_debug_image": True,
              "max_containers": 5,
              # camera, node and probe share the CPU: one classifier thread never waits for a busy core
              "cpu_threads": 1, **extra}
    if backend:
        params["segmentation_backend"] = backend
    return params


def check_models(model: str) -> None:
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: classifier missing. The repository ships it; rebuild it with `make models` "
            "(see README, 'Default models')")


def run(args) -> int:
    import numpy as np
    import rclpy
    from fillcls_msgs.msg import FillingLevelArray
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from .bag import BagRecorder
    from .evaluation import Scoreboard, format_summary, match_frame, stamp_ns
    from .image_codec import image_to_rgb
    from .processes import RosProcess

    params = node_params(args.model, args.segmentation_backend)
    check_models(params["model_path"])
    procedural = args.source == "procedural"
    has_truth = args.source in ("procedural", "synthetic")
    print(f"[demo] node: model {params['model_path']}, segmentation "
          f"{params.get('segmentation_backend', 'learned (models/segmenter.pt)')}, CPU")
    node = RosProcess("fillcls-node", params)
    try:
        rclpy.init()
        probe = rclpy.create_node("fillcls_demo")
    except Exception:
        node.stop()
        raise
    truths, answers, arrival = {}, {}, {}
    debug = {}

    def on_answer(m):
        k = stamp_ns(m.header)
        answers[k] = m
        arrival[k] = time.time()

    probe.create_subscription(FillingLevelArray, "filling_level", on_answer, 100)
    probe.create_subscription(FillingLevelArray, "image/ground_truth",
                              lambda m: truths.__setitem__(stamp_ns(m.header), m), 100)
    if args.debug_image:
        probe.create_subscription(Image, "fillcls_node/debug_image",
                                  lambda m: debug.__setitem__("last", m), qos_profile_sensor_data)
    camera = None
    board = Scoreboard()
    recorder = None
    try:
        if args.record:
            recorder = BagRecorder(probe, args.record, {
                "/image": "sensor_msgs/msg/Image", "/image/ground_truth": "fillcls_msgs/msg/FillingLevelArray",
                "/filling_level": "fillcls_msgs/msg/FillingLevelArray"})
        end = time.monotonic() + 90
        while time.monotonic() < end and probe.count_publishers("filling_level") == 0:
            if not node.alive():
                raise RuntimeError(f"fillcls-node exited:\n{node.output[-3000:]}")
            rclpy.spin_once(probe, timeout_sec=0.1)
        if not node.wait_for_output("listening on", 60):
            raise RuntimeError(f"fillcls-node did not start:\n{node.output[-3000:]}")
        cam_params = {"source": args.source, "rate": args.rate, "split": args.split, "seed": args.seed,
                      "containers": args.containers, "count": args.frames, "loop": False,
                      "width": args.width, "height": args.height,
                      "wait_for_subscribers": 1}
        print(f"[demo] camera: {args.source} frames"
              + (f" of split {args.split}'s test containers (unseen shapes)" if procedural else "")
              + f", {args.width}x{args.height} at {args.rate:g} Hz, {args.frames} frames")
        camera = RosProcess("fillcls-camera", cam_params)
        t_first = None
        shown = set()
        deadline = time.monotonic() + args.frames / args.rate + 90
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            rclpy.spin_once(probe, timeout_sec=0.02)
            for k in sorted(set(answers) - shown):
                if has_truth and k not in truths:
                    continue
                shown.add(k)
                last_new = time.monotonic()
                t_first = t_first or arrival[k]
                latency = arrival[k] - k * 1e-9
                if has_truth:
                    r = match_frame(truths[k], answers[k], latency)
                    board.add(r)
                    print(r.line(len(shown)), flush=True)
                else:
                    levels = ", ".join(f"{c.level} ({c.confidence:.2f})" for c in answers[k].containers)
                    print(f"frame {len(shown):4d}  pred {levels or 'no container'}  {latency * 1e3:.1f} ms")
            cam_done = not camera.alive() or "source exhausted" in camera.output or (
                args.frames and len(shown) >= args.frames)
            if cam_done and time.monotonic() - last_new > 3.0:
                break
            if not node.alive():
                raise RuntimeError(f"fillcls-node exited:\n{node.output[-3000:]}")
        elapsed = (max(arrival.values()) - t_first) if len(arrival) > 1 and t_first else None
        print()
        if has_truth:
            s = board.summary(elapsed)
            s["rate"] = (len(board.frames) - 1) / elapsed if elapsed else float("nan")
            print(format_summary(s))
            skipped = len(truths) - len(shown)
            print(f"frames streamed: {len(truths)}, answered: {len(shown)}"
                  + (f" ({skipped} skipped: the node drops frames that arrive while it is busy and always "
                     "works on the newest one)" if skipped > 0 else ""))
        else:
            print(f"frames answered: {len(shown)}")
        if args.debug_image and "last" in debug:
            import cv2

            rgb = image_to_rgb(debug["last"])
            Path(args.debug_image).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(args.debug_image), np.ascontiguousarray(rgb[..., ::-1]))
            print(f"[demo] debug image saved to {args.debug_image}")
        if recorder:
            print(f"[demo] recorded {args.record}: " + ", ".join(f"{t} {n}" for t, n in recorder.counts.items()))
        return 0 if shown else 1
    finally:
        if recorder:
            recorder.close()
        if camera:
            camera.stop()
        node.stop()
        probe.destroy_node()
        rclpy.try_shutdown()


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
    ap.add_argument("--model", default="", help="classifier checkpoint (default: models/default.pt)")
    ap.add_argument("--segmentation-backend", default="", help="node backend: learned (default), "
                    "threshold, full_frame, maskrcnn")
    ap.add_argument("--debug-image", default="", help="save the node's last debug image to this PNG")
    ap.add_argument("--record", default="", help="record camera, ground truth and node output to this new bag")
    args = ap.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_shm.xml"))
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
