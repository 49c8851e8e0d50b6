"""Node start-up: time from starting ``fillcls-node`` (its default models, CPU) to its first
``filling_level`` answer, with frames already flowing, and its RSS then; per inference backend,
in one run.

    .venv/bin/python bench/bench_start.py [--backends onnxruntime torch]

DDS discovery is part of the figure and depends on the environment: with Fast DDS' defaults a
node and its camera find each other at once; with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` or
the shared-memory profile (what the tests use) it takes about 2.4 s more here. The settings in
force are printed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    return f"{name} ({os.cpu_count()} logical)"


def first_answer(backend: str, timeout: float = 90.0) -> tuple[float, float]:
    """(seconds from process start to the first answer, RSS MiB then) of a node on ``backend``."""
    import numpy as np
    import rclpy
    from fillcls_msgs.msg import FillingLevelArray
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from fillcls.image_codec import rgb_to_image_fields
    from fillcls_ros.processes import BIN, write_params

    probe = rclpy.create_node(f"bench_start_{backend}")
    pub = probe.create_publisher(Image, "image", qos_profile_sensor_data)
    got: list[float] = []
    sub = probe.create_subscription(FillingLevelArray, "filling_level", lambda m: got.append(time.monotonic()), 10)
    rgb = np.full((480, 640, 3), 120, np.uint8)
    rgb[100:400, 200:320] = (200, 40, 40)
    msg = Image(**rgb_to_image_fields(rgb))
    params = write_params({"device": "cpu", "inference_backend": backend})
    t0 = time.monotonic()
    node = subprocess.Popen([os.path.join(BIN, "fillcls-node"), "--ros-args", "--params-file", params],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not got and time.monotonic() - t0 < timeout and node.poll() is None:
            pub.publish(msg)
            rclpy.spin_once(probe, timeout_sec=0.01)
        if not got:
            raise RuntimeError(f"{backend}: no answer within {timeout:.0f} s")
        with open(f"/proc/{node.pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
        return got[0] - t0, rss
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(30)
        probe.destroy_subscription(sub)
        probe.destroy_node()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", nargs="+", default=["onnxruntime", "torch"])
    args = ap.parse_args(argv)
    import rclpy

    print(f"CPU: {cpu_model()}; ROS_AUTOMATIC_DISCOVERY_RANGE={os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE', '')!r}"
          f", FASTDDS_DEFAULT_PROFILES_FILE={os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE', '')!r}")
    rclpy.init()
    try:
        for backend in args.backends:
            seconds, rss = first_answer(backend)
            print(f"{backend:12s} start -> first answer {seconds:.2f} s, RSS {rss:.0f} MiB "
                  f"(targets: <= 1.5 s, <= 350 MiB)")
    finally:
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
