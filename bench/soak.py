#!/usr/bin/env python
"""Soak test (issue 14): fuzzed image messages mixed with valid frames, sent to two node processes.

Two ``fillcls-node`` processes run side by side, one subscribed to ``image`` and one to
``image/compressed`` (parameter ``compressed``). For ``--seconds`` this script sends them
``--messages`` fuzzed messages from :mod:`fillcls.fuzz` (half each, at an even rate; bombs
included) over a reliable topic, with a valid synthetic 640x480 frame after every
``--valid-every`` of them. It prints the CPU model, crashes (node exits), bad frames per kind (from
/diagnostics), answered valid frames, and each node's RSS at start / peak / end (VmRSS sampled,
VmHWM: the kernel's peak).

    .venv/bin/python bench/soak.py [--messages 10000] [--seconds 300] [--backend learned]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", os.path.join(REPO, "config", "fastdds_shm.xml"))
os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))

QUEUE = 100  # the nodes' qos_depth: at most QUEUE - 20 messages are in flight to a node


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo and the number of cores."""
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return f"{names[0] if names else 'unknown CPU'} ({os.cpu_count()} cores)"


def memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of process ``pid`` in MiB; (nan, nan) once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            vals = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
        return tuple(int(vals[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))
    except (OSError, KeyError):
        return float("nan"), float("nan")


class Target:
    """One node process, its publisher, and what it answered / reported."""

    def __init__(self, ros, name: str, args):
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        from fillcls_ros.processes import RosProcess, node_params

        self.name, self.compressed = name, name == "compressed"
        params = node_params(args.model, args.backend, compressed=self.compressed, qos_reliability="reliable",
                             qos_depth=QUEUE, publish_debug_image=False)
        self.proc = RosProcess("fillcls-node", params, ["-r", f"__node:=soak_{name}"])
        qos = QoSProfile(depth=1000, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = ros.create_publisher(CompressedImage if self.compressed else Image,
                                        "image/compressed" if self.compressed else "image", qos)
        self.diag: dict = {}
        self.sent = self.valid_sent = 0
        self.answered: set = set()
        self.rss_start = self.rss_peak = 0.0
        self.exit_code = None

    def received(self) -> int:
        return int(self.diag.get("frames_received", 0))

    def ready(self) -> bool:
        return self.pub.get_subscription_count() > 0 and bool(self.diag)

    def can_send(self) -> bool:
        return self.sent + self.valid_sent - self.received() < QUEUE - 20

    def sample(self) -> None:
        rss, _ = memory_mib(self.proc.pid)
        if rss > self.rss_peak:
            self.rss_peak = rss
        if self.exit_code is None and not self.proc.alive():
            self.exit_code = self.proc.proc.returncode
            print(f"CRASH: {self.name} node exited with code {self.exit_code} after {self.sent} fuzzed "
                  f"messages:\n{self.proc.output[-3000:]}", flush=True)


def valid_messages(n: int):
    """``n`` synthetic 640x480 frames (grey, two coloured containers, noise) as
    (rgb8 Image fields, JPEG bytes)."""
    import cv2
    import numpy as np

    from fillcls.image_codec import rgb_to_image_fields

    rng, frames = np.random.default_rng(0), []
    for _ in range(n):
        rgb = np.full((480, 640, 3), 128, np.uint8)
        x = int(rng.integers(40, 200))
        rgb[120:400, x:x + 120] = (200, 40, 40)
        rgb[160:380, x + 260:x + 380] = (40, 40, 200)
        rgb = np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        frames.append((rgb_to_image_fields(rgb), jpg.tobytes()))
    return frames


def wire(ros, targets) -> None:
    """Subscriptions that route answers and diagnostics to their target."""
    from diagnostic_msgs.msg import DiagnosticArray
    from fillcls_msgs.msg import FillingLevelArray

    def on_diag(arr):
        for st in arr.status:
            for t in targets:
                if st.name.startswith(f"soak_{t.name}:"):
                    t.diag = {kv.key: kv.value for kv in st.values}

    def on_answer(msg):
        for t in targets:
            if msg.header.frame_id == f"soak_{t.name}":
                t.answered.add(msg.header.stamp.sec)

    ros.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    ros.create_subscription(FillingLevelArray, "filling_level", on_answer, 100)


def spin_for(ros, seconds: float, targets) -> None:
    import rclpy

    end = time.monotonic() + seconds
    while True:
        rclpy.spin_once(ros, timeout_sec=max(0.0, min(0.02, end - time.monotonic())))
        for t in targets:
            t.sample()
        if time.monotonic() >= end:
            return


def start(ros, targets, timeout: float = 120.0) -> None:
    """Wait until every node listens and reports; record its starting RSS."""
    end = time.monotonic() + timeout
    while not all(t.ready() for t in targets):
        spin_for(ros, 0.2, targets)
        for t in targets:
            if not t.proc.alive() or time.monotonic() > end:
                sys.exit(f"{t.name} node not ready:\n{t.proc.output[-3000:]}")
    for t in targets:
        t.rss_start = memory_mib(t.proc.pid)[0]
        t.rss_peak = t.rss_start


def _message(target, fm, valid, k: int):
    """The ROS message for fuzzed message ``fm``, or for valid frame ``k`` when ``fm`` is None."""
    from sensor_msgs.msg import CompressedImage, Image

    if fm is not None:
        return (CompressedImage if fm.compressed else Image)(**fm.fields)
    fields, jpg = valid[k % len(valid)]
    msg = CompressedImage(format="jpeg", data=jpg) if target.compressed else Image(**fields)
    msg.header.stamp.sec, msg.header.frame_id = k, f"soak_{target.name}"
    return msg


def soak(ros, targets, args) -> float:
    """Send the fuzzed messages at an even rate until all are sent or ``--seconds`` pass."""
    from fillcls import fuzz

    valid = valid_messages(8)
    streams = [fuzz.fuzz_messages(args.messages // 2, args.seed + i, compressed=t.compressed)
               for i, t in enumerate(targets)]
    pending = [next(s, None) for s in streams]
    t0 = time.monotonic()
    interval = args.seconds / max(args.messages, 1)
    while any(p is not None for p in pending) and time.monotonic() - t0 < args.seconds:
        for i, t in enumerate(targets):
            due = t.sent * 2 * interval <= time.monotonic() - t0
            if pending[i] is None or t.exit_code is not None or not due or not t.can_send():
                continue
            t.pub.publish(_message(t, pending[i], valid, 0))
            t.sent += 1
            pending[i] = next(streams[i], None)
            if t.sent % args.valid_every == 0:
                t.valid_sent += 1
                t.pub.publish(_message(t, None, valid, t.valid_sent))
        spin_for(ros, 0.001, targets)
    elapsed = time.monotonic() - t0
    end = time.monotonic() + 30.0  # let the nodes work through what is in flight
    while time.monotonic() < end and any(t.exit_code is None and t.received() < t.sent + t.valid_sent
                                         for t in targets):
        spin_for(ros, 0.2, targets)
    spin_for(ros, 2.0, targets)
    return elapsed


def report(targets, elapsed: float, args) -> None:
    print(f"cpu: {cpu_model()}")
    print(f"{sum(t.sent for t in targets)} fuzzed messages (planned {args.messages}) and "
          f"{sum(t.valid_sent for t in targets)} valid frames sent in {elapsed:.1f} s "
          f"(limit {args.seconds:.0f} s), seed {args.seed}, backend {args.backend or 'the node default'}")
    for t in targets:
        rss_end, hwm = memory_mib(t.proc.pid)
        bad = {k[len("bad_frames_"):]: int(v) for k, v in sorted(t.diag.items()) if k.startswith("bad_frames_")}
        print(f"{t.name} node: crashes {0 if t.exit_code is None else 1}"
              f"{'' if t.exit_code is None else f' (exit code {t.exit_code})'}; frames received "
              f"{t.received()}, published {t.diag.get('frames_published', 0)}; valid frames answered "
              f"{len(t.answered)}/{t.valid_sent}")
        print(f"  bad frames: {sum(bad.values())} " + ", ".join(f"{k} {v}" for k, v in bad.items()))
        print(f"  RSS MiB: start {t.rss_start:.0f}, peak {t.rss_peak:.0f} sampled / {hwm:.0f} VmHWM, "
              f"end {rss_end:.0f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10000, help="fuzzed messages, half to each node")
    ap.add_argument("--seconds", type=float, default=300.0, help="sending time (an even rate)")
    ap.add_argument("--valid-every", type=int, default=25, help="a valid frame after this many fuzzed ones")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--backend", default="", help="segmentation backend (default: the node's, learned)")
    ap.add_argument("--model", default="", help="classifier (default: the packaged models/default.pt)")
    args = ap.parse_args(argv)
    import rclpy

    rclpy.init()
    ros = rclpy.create_node("fillcls_soak")
    targets = [Target(ros, name, args) for name in ("raw", "compressed")]
    try:
        wire(ros, targets)
        start(ros, targets)
        elapsed = soak(ros, targets, args)
        report(targets, elapsed, args)
    finally:
        codes = [t.proc.stop(signal.SIGINT) for t in targets]
        ros.destroy_node()
        rclpy.shutdown()
    print(f"node exit codes on SIGINT: {codes}")
    return 0 if all(t.exit_code is None for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
