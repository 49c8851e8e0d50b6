#!/usr/bin/env python
"""Several cameras, one node: N simulated 640x480 cameras -> one ``fillcls-node`` -> this probe.

For each N of ``--cameras`` (default 1, 2, 4) a fresh ``fillcls-node`` serves the cameras
``cam0 .. cam<N-1>`` (node parameter ``cameras``: the newest frame of every camera is classified in
one batch per cycle) with the default models and backends on the CPU. This process publishes each
camera's frames at ``--rate`` Hz (pre-rendered procedural frames with one container each; the
stamp is set at publication) and collects the answers on ``cam<i>/filling_level``. It prints, per
camera: frames sent, answered rate, end-to-end latency p50 / p95 (stamp -> answer received here:
the node's work plus two local DDS hops), frames dropped (sent, never answered: replaced in the
DDS queue or in the node before their cycle; the node's own count in brackets); per N: the
frames per cycle and the crops per classifier forward seen (``size:cycles``), and the node's CPU.

    .venv/bin/python bench/bench_multicam.py [--cameras 1,2,4] [--rate 15] [--seconds 20] \
        [--node-threads 0] [--markdown FILE]

Answered frames at the camera rate for every camera mean the node keeps up; below it, each
camera still gets its newest frame answered (no backlog: latency stays flat) and the rest is
dropped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_backends import cpu_model  # noqa: E402  (sets sys.path to the repository)
from bench_node import pct, proc_stats  # noqa: E402  (sets the ROS environment defaults)

WIDTH, HEIGHT = 640, 480


def render_frames(n: int, seed: int = 0) -> list:
    """``n`` pre-rendered procedural 640x480 frames with one test container (split S1) each."""
    from fillcls.world import SPLITS, render_frame

    return [render_frame(seed + i, WIDTH, HEIGHT, containers=SPLITS["S1"], n_containers=1)[0] for i in range(n)]


def image_messages(frames: list, camera: int) -> list:
    """sensor_msgs/Image of each frame, frame_id ``cam<camera>`` (the stamp is set when published)."""
    from sensor_msgs.msg import Image

    from fillcls.image_codec import rgb_to_image_fields

    out = []
    for rgb in frames:
        m = Image(**rgb_to_image_fields(rgb))
        m.header.frame_id = f"cam{camera}"
        out.append(m)
    return out


class Probe:
    """The cameras' publishers (one timer each) and the answers' subscriptions, in one rclpy node."""

    def __init__(self, node, n: int, rate: float, frames: list):
        from builtin_interfaces.msg import Time
        from diagnostic_msgs.msg import DiagnosticArray
        from fillcls_msgs.msg import FillingLevelArray
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        self.node, self.n, self.Time = node, n, Time
        self.publishing = False
        self.sent = [[] for _ in range(n)]  # stamps (s) of the frames sent by each camera
        self.answers = [{} for _ in range(n)]  # stamp (s) -> latency (s) per camera
        self.diag: dict = {}
        self.msgs = [image_messages(frames[i:] + frames[:i], i) for i in range(n)]
        self.pubs = [node.create_publisher(Image, f"cam{i}/image", qos_profile_sensor_data) for i in range(n)]
        self.subs = [node.create_subscription(FillingLevelArray, f"cam{i}/filling_level",
                                              lambda m, i=i: self._on_answer(i, m), 100) for i in range(n)]
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.timers = [node.create_timer(1.0 / rate, lambda i=i: self._publish(i)) for i in range(n)]

    def _publish(self, i: int) -> None:
        if not self.publishing:
            return
        now = time.time()
        msg = self.msgs[i][len(self.sent[i]) % len(self.msgs[i])]
        msg.header.stamp = self.Time(sec=int(now), nanosec=int((now % 1) * 1e9))
        self.pubs[i].publish(msg)
        self.sent[i].append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)

    def _on_answer(self, i: int, msg) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.answers[i][stamp] = time.time() - stamp

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            if "filling level" in st.name:
                self.diag = {kv.key: kv.value for kv in st.values}

    def connected(self) -> bool:
        return bool(self.diag) and all(p.get_subscription_count() for p in self.pubs) and \
            all(s.get_publisher_count() for s in self.subs)

    def spin(self, seconds: float, until=lambda: False) -> None:
        import rclpy

        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            rclpy.spin_once(self.node, timeout_sec=0.02)


def _histogram(text: str) -> dict[int, int]:
    return {int(k): int(v) for k, v in (kv.split(":") for kv in text.split())} if text else {}


def _delta(end: str, start: str) -> str:
    """The ``size:cycles`` histogram of the measured window (end minus start snapshot)."""
    a, b = _histogram(end), _histogram(start)
    return " ".join(f"{k}:{a[k] - b.get(k, 0)}" for k in sorted(a) if a[k] > b.get(k, 0)) or "-"


def run(n: int, args) -> dict:
    """Start a node for ``n`` cameras, drive it for ``args.seconds`` and measure; the result row."""
    import rclpy

    from fillcls_ros.processes import RosProcess

    node = RosProcess("fillcls-node", {"device": "cpu", "publish_debug_image": False, "cpu_threads": args.node_threads,
                                       "cameras": [f"cam{i}" for i in range(n)]})
    probe_node = rclpy.create_node(f"bench_multicam_{n}")
    probe = Probe(probe_node, n, args.rate, args.frames)
    try:
        probe.spin(120, probe.connected)
        if not probe.connected():
            raise RuntimeError(f"node for {n} camera(s) not ready:\n{node.output[-3000:]}")
        probe.publishing = True  # warm-up: discovery of every path, first cycles
        probe.spin(30, lambda: all(len(a) >= 5 for a in probe.answers))
        start_diag, t_wall, t0 = dict(probe.diag), time.time(), time.monotonic()
        cpu0, _ = proc_stats(node.pid)
        probe.spin(args.seconds)
        elapsed, t_end, cpu1 = time.monotonic() - t0, time.time(), proc_stats(node.pid)[0]
        probe.publishing = False
        probe.spin(2.0)  # answers still in flight; one more diagnostics message
        end_diag = probe.diag
    finally:
        rc = node.stop()
        probe_node.destroy_node()
    cams = []
    for i in range(n):
        sent = [s for s in probe.sent[i] if t_wall <= s < t_end]
        lat = [probe.answers[i][s] for s in sent if s in probe.answers[i]]
        node_dropped = int(end_diag.get(f"cam{i}/frames_dropped", 0)) - int(start_diag.get(f"cam{i}/frames_dropped", 0))
        cams.append({"sent": len(sent), "answered_hz": len(lat) / elapsed, "p50": pct(lat, 50), "p95": pct(lat, 95),
                     "dropped": len(sent) - len(lat), "node_dropped": node_dropped})
    return {"n": n, "cams": cams, "elapsed": elapsed, "cpu": 100 * (cpu1 - cpu0) / elapsed, "rc": rc,
            "cycle_frames": _delta(end_diag.get("cycle_frames", ""), start_diag.get("cycle_frames", "")),
            "batch_sizes": _delta(end_diag.get("batch_sizes", ""), start_diag.get("batch_sizes", "")),
            "timing": {k[5:-2]: float(v) for k, v in end_diag.items() if k.startswith("time_")}}


def markdown(rows: list, header: str) -> str:
    """The results as a markdown table (one line per camera) and the per-N batch figures."""
    lines = [header, "", "| cameras | camera | sent | answered Hz | latency p50 ms | p95 ms | dropped (node) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        for i, c in enumerate(r["cams"]):
            lines.append(f"| {r['n']} | cam{i} | {c['sent']} | {c['answered_hz']:.1f} | {c['p50'] * 1e3:.0f} | "
                         f"{c['p95'] * 1e3:.0f} | {c['dropped']} ({c['node_dropped']}) |")
    lines += ["", "| cameras | frames per cycle (size:cycles) | crops per forward (size:cycles) | node CPU % | "
              "last cycle ms (segment / preprocess / classify) |", "|---|---|---|---|---|"]
    for r in rows:
        t = r["timing"]
        stages = " / ".join(f"{t.get(k, float('nan')) * 1e3:.1f}" for k in ("segment", "preprocess", "classify"))
        lines.append(f"| {r['n']} | {r['cycle_frames']} | {r['batch_sizes']} | {r['cpu']:.0f} | {stages} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", default="1,2,4", help="comma-separated numbers of cameras, one run each")
    ap.add_argument("--rate", type=float, default=15.0, help="frame rate of each camera (Hz)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured duration per number of cameras")
    ap.add_argument("--node-threads", type=int, default=0, help="the node's cpu_threads parameter (0: one per core)")
    ap.add_argument("--markdown", help="also write the markdown tables to this file")
    args = ap.parse_args(argv)
    try:
        counts = [int(x) for x in args.cameras.split(",")]
        if not counts or min(counts) < 1 or args.rate <= 0 or args.seconds <= 0:
            raise ValueError
    except ValueError:
        ap.error(f"--cameras must be positive integers separated by commas, --rate and --seconds positive "
                 f"(got {args.cameras!r}, {args.rate}, {args.seconds})")
    import rclpy

    from fillcls.atomic import atomic_write

    args.frames = render_frames(8)
    header = (f"CPU: {cpu_model()} ({os.cpu_count()} logical cores); {WIDTH}x{HEIGHT} rgb8 procedural frames, "
              f"one container, {args.rate:g} Hz per camera, {args.seconds:g} s measured per run; node: default "
              f"models and backends, device cpu, cpu_threads {args.node_threads}")
    print(header, flush=True)
    rclpy.init()
    rows = []
    try:
        for n in counts:
            rows.append(run(n, args))
            r = rows[-1]
            print(f"{n} camera(s): " + "; ".join(f"cam{i} {c['answered_hz']:.1f} Hz, p50 {c['p50'] * 1e3:.0f} ms, "
                                                 f"p95 {c['p95'] * 1e3:.0f} ms, {c['dropped']} dropped"
                                                 for i, c in enumerate(r["cams"]))
                  + f"; frames per cycle {r['cycle_frames']}; crops per forward {r['batch_sizes']}", flush=True)
    finally:
        rclpy.try_shutdown()
    table = markdown(rows, header)
    print()
    print(table)
    if args.markdown:
        atomic_write(args.markdown, lambda f: f.write(table + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
