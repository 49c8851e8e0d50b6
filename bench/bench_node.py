#!/usr/bin/env python
"""Node benchmark: ``fillcls-camera`` (640x480 at 30 Hz) -> ``fillcls-node`` -> this probe.

Runs both as real processes for ``--seconds`` and prints frames sent / received / published,
end-to-end latency (image stamp -> filling_level arrival at the probe, i.e. publish plus one
local DDS hop) p50/p95/p99, the node's CPU % and RSS, its stage timings, and one bare classifier
forward at the same input size measured in the same run (before the node starts).

    .venv/bin/python bench/bench_node.py [--size 224] [--seconds 30] [--backend threshold] \
        [--inference-backend onnxruntime] [--precision int8]

``--backend`` is the node's segmentation backend; ``--inference-backend`` / ``--precision`` are
passed as the node parameters ``inference_backend`` / ``precision``.

The classifier has random weights (speed does not depend on them) unless ``--model`` is given.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", os.path.join(REPO, "config", "fastdds_shm.xml"))
os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
BIN = os.path.dirname(sys.executable)


def bare_forward(model_path: str, size: int, threads: int, repeats: int = 30, backend: str = "torch",
                 precision: str = "fp32", int8_recheck: float = 0.0) -> tuple[float, str]:
    """(median seconds of one batch-1 forward at ``size`` px, the runner's description) with the
    node's runner (:func:`fillcls.backends.load_classifier_runner`: ``backend``, ``precision``,
    ``threads``; what ``precision: auto`` picked and why)."""
    import numpy as np

    from fillcls.backends import describe_runner, load_classifier_runner

    if backend != "onnxruntime":
        import torch

        torch.set_num_threads(threads)
    runner, _ = load_classifier_runner(model_path, backend, "cpu", precision, threads, int8_recheck=int8_recheck)
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    times = []
    for i in range(repeats + 5):
        t0 = time.perf_counter()
        runner(x)
        if i >= 5:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), describe_runner(runner)


def proc_stats(pid: int) -> tuple[float, float]:
    """(user+system CPU seconds, RSS MiB) of process ``pid`` from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
    return cpu, rss


def params_file(values: dict) -> str:
    fd, path = tempfile.mkstemp(suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write("/**:\n  ros__parameters:\n")
        for k, v in values.items():
            f.write(f"    {k}: {str(v).lower() if isinstance(v, bool) else repr(v) if isinstance(v, str) else v}\n")
    return path


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))] if values else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=0, help="classifier input size (px); default: the "
                    "--model's training size, 224 for the random model")
    ap.add_argument("--source", default="synthetic", help="camera source: synthetic (flat shapes, found by "
                    "the threshold backend) or procedural (C-CCM-like scenes, for the learned backend)")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured duration")
    ap.add_argument("--rate", type=float, default=30.0, help="camera rate (Hz)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--containers", type=int, default=1, help="containers per frame")
    ap.add_argument("--backend", default="threshold", help="segmentation backend of the node")
    ap.add_argument("--model", default="", help="checkpoint (default: random ResNet-18 at --size)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the bare forward")
    ap.add_argument("--inference-backend", default="torch", choices=("torch", "onnxruntime", "auto"),
                    help="the node's inference_backend parameter (onnxruntime: the model is exported to ONNX first)")
    ap.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16", "int8", "fp16"),
                    help="the node's precision parameter (int8 / auto: an int8 copy is made too)")
    ap.add_argument("--int8-recheck", type=float, default=None,
                    help="the node's int8_recheck parameter (default: 0 for the random model, whose near-ties "
                         "say nothing about a trained model's, else the node's default)")
    ap.add_argument("--node-threads", type=int, default=0, help="the node's cpu_threads parameter (0: one "
                    "per core)")
    args = ap.parse_args(argv)

    import rclpy
    from fillcls_msgs.msg import FillingLevelArray
    from diagnostic_msgs.msg import DiagnosticArray

    tmp = tempfile.mkdtemp(prefix="bench_node_")
    model = args.model
    if model and not args.size:
        from fillcls import backends

        args.size = backends.load_classifier_runner(model)[1].input_size
    args.size = args.size or 224
    if not model:
        import torch

        from fillcls import core

        torch.manual_seed(0)
        model = os.path.join(tmp, "bench.pt")
        core.save_checkpoint(model, core.build_model("resnet18").state_dict(),
                             core.CheckpointHeader(input_size=args.size, model_id="bench-random"))
    if args.inference_backend == "onnxruntime" and not model.endswith(".onnx"):
        from training.onnx_export import export_onnx

        onnx_model = os.path.join(tmp, os.path.basename(model)[:-3] + ".onnx")
        export_onnx(model, onnx_model, int8=args.precision in ("int8", "auto"), calibration_crops=128)  # speed only
        model = onnx_model
    if args.int8_recheck is None:
        from fillcls.backends import INT8_RECHECK_MARGIN

        args.int8_recheck = INT8_RECHECK_MARGIN if args.model else 0.0
    forward, runner_text = bare_forward(model, args.size, args.threads, backend=args.inference_backend,
                                        precision=args.precision, int8_recheck=args.int8_recheck)
    print(f"bare forward (batch 1, {args.size} px, {args.threads} threads, {args.inference_backend} "
          f"{args.precision}): {forward * 1e3:.1f} ms\nclassifier runner: {runner_text}")

    node_params = params_file({"model_path": model, "device": "cpu", "input_size": args.size,
                               "segmentation_backend": args.backend, "publish_debug_image": False,
                               "cpu_threads": args.node_threads, "inference_backend": args.inference_backend,
                               "precision": args.precision, "int8_recheck": args.int8_recheck})
    cam_params = params_file({"source": args.source, "rate": args.rate, "width": args.width,
                              "height": args.height, "containers": args.containers})
    node = subprocess.Popen([os.path.join(BIN, "fillcls-node"), "--ros-args", "--params-file", node_params],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rclpy.init()
    probe = rclpy.create_node("bench_probe")
    latencies, arrivals, found, diag = [], [], [], {}

    def on_level(msg):
        now = time.time()
        latencies.append(now - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))
        arrivals.append(now)
        found.append(len(msg.containers))

    def on_diag(msg):
        for st in msg.status:
            if "filling level" in st.name:
                diag.update({kv.key: kv.value for kv in st.values})

    probe.create_subscription(FillingLevelArray, "filling_level", on_level, 100)
    probe.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    end = time.monotonic() + 90
    while time.monotonic() < end and not diag:  # the node is up once it reports diagnostics
        rclpy.spin_once(probe, timeout_sec=0.1)
    if not diag:
        print("node did not start", file=sys.stderr)
        node.kill()
        return 1
    camera = subprocess.Popen([os.path.join(BIN, "fillcls-camera"), "--ros-args", "--params-file", cam_params],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 30
    while time.monotonic() < end and len(latencies) < 10:  # discovery + warm-up
        rclpy.spin_once(probe, timeout_sec=0.1)
    start_diag = dict(diag)
    latencies.clear()
    arrivals.clear()
    found.clear()
    cpu0, _ = proc_stats(node.pid)
    cam0, _ = proc_stats(camera.pid)
    t0 = time.monotonic()
    rss_max = 0.0
    while time.monotonic() - t0 < args.seconds:
        rclpy.spin_once(probe, timeout_sec=0.05)
        rss_max = max(rss_max, proc_stats(node.pid)[1])
    elapsed = time.monotonic() - t0
    cpu1, rss = proc_stats(node.pid)
    cam1, _ = proc_stats(camera.pid)
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        rclpy.spin_once(probe, timeout_sec=0.05)
    camera.send_signal(signal.SIGINT)
    node.send_signal(signal.SIGINT)
    camera.wait(20)
    node.wait(20)

    received = int(diag.get("frames_received", 0)) - int(start_diag.get("frames_received", 0))
    published = int(diag.get("frames_published", 0)) - int(start_diag.get("frames_published", 0))
    rate = len(latencies) / elapsed
    # A backlog would show as latency growing over the run: compare the first and last thirds.
    third = max(1, len(latencies) // 3)
    early, late = statistics.median(latencies[:third]), statistics.median(latencies[-third:])
    p50 = pct(latencies, 50)
    print(f"camera {args.source} {args.width}x{args.height} at {args.rate:g} Hz, {args.containers} container(s), "
          f"backend {args.backend}, input {args.size} px, node cpu_threads {args.node_threads}, "
          f"{elapsed:.1f} s measured")
    print(f"containers found per frame: {statistics.mean(found) if found else 0:.2f} "
          f"(the camera draws {args.containers})")
    print(f"frames received by node: {received} ({received / elapsed:.1f} Hz)")
    print(f"frames published:        {published} ({published / elapsed:.1f} Hz); at probe {len(latencies)} "
          f"({rate:.1f} Hz)")
    print(f"answered {rate:.1f} of the camera's {args.rate:g} Hz ({100 * rate / args.rate:.0f} %); latency "
          f"trend {1e3 * (late - early):+.1f} ms from the first to the last third")
    print(f"e2e latency ms: p50 {p50 * 1e3:.1f}  p95 {pct(latencies, 95) * 1e3:.1f}  "
          f"p99 {pct(latencies, 99) * 1e3:.1f}  (first third {early * 1e3:.1f}, last third {late * 1e3:.1f})")
    print(f"node CPU: {100 * (cpu1 - cpu0) / elapsed:.0f} % (of one core)   RSS: {rss:.0f} MiB (max {rss_max:.0f}); "
          f"camera CPU: {100 * (cam1 - cam0) / elapsed:.0f} %")
    print("node stage times (last frame) ms: " + ", ".join(
        f"{k[5:-2]} {float(v) * 1e3:.1f}" for k, v in diag.items() if k.startswith("time_")))
    print(f"bare forward ms: {forward * 1e3:.1f}; e2e p50 / forward = {p50 / forward:.2f} (target <= 1.5)")
    print(f"targets: answers the camera's {args.rate:g} Hz (>= 95 % of its frames): "
          f"{'PASS' if rate >= 0.95 * args.rate else 'FAIL'}; no growing backlog (last third < 2 x first + 20 ms): "
          f"{'PASS' if late < 2 * early + 0.02 else 'FAIL'}; p50 <= 1.5 x forward: "
          f"{'PASS' if p50 <= 1.5 * forward else 'FAIL'}")
    probe.destroy_node()
    rclpy.try_shutdown()
    for p in (node_params, cam_params):
        os.unlink(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
