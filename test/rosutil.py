"""Helpers for tests that run real ROS 2 processes: start/stop a node, spin until a condition."""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np

from fillcls_ros.processes import BIN, RosProcess  # noqa: F401


def run_console(*args, timeout: float = 240):
    """Run the console script ``args[0]`` of this venv with ``args[1:]``; ``(return code, stdout + stderr)``."""
    proc = subprocess.run([os.path.join(BIN, args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc.returncode, proc.stdout + proc.stderr


class NodeProcess(RosProcess):
    """``fillcls-node`` (or ``node_exe``) in its own process, output in ``self.output``."""

    def __init__(self, params: dict, extra_args=(), node_exe="fillcls-node"):
        super().__init__(node_exe, params, extra_args)


def spin_until(node, predicate, timeout: float) -> bool:
    """Spin ``node`` until ``predicate()`` is true or ``timeout`` seconds pass."""
    import rclpy

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        rclpy.spin_once(node, timeout_sec=0.05)
    return predicate()


def publish_until(node, pub, msg, done, timeout: float = 20.0, period: float = 0.5) -> bool:
    """Publish ``msg`` every ``period`` s (best effort may drop one), spinning ``node``, until
    ``done()`` or ``timeout``; returns ``done()``."""
    for _ in range(max(1, int(timeout / period))):
        pub.publish(msg)
        if spin_until(node, done, period):
            return True
    return done()


def image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera", encoding="rgb8"):
    """A sensor_msgs/Image of an RGB array (``bgr8`` swaps the channels)."""
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import Image

    from fillcls.image_codec import uint8_field

    arr = rgb[..., ::-1] if encoding == "bgr8" else rgb
    arr = np.ascontiguousarray(arr)
    m = Image(height=arr.shape[0], width=arr.shape[1], encoding=encoding, is_bigendian=0,
              step=arr.shape[1] * 3, data=uint8_field(arr))
    m.header.stamp = Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    m.header.frame_id = frame_id
    return m


def call_service(node, srv_type, name: str, request, timeout: float = 60.0, discovery: float = 20.0):
    """Call service ``name`` from ``node`` and spin until it answers; returns the response."""
    client = node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=discovery), name
    future = client.call_async(request)
    assert spin_until(node, future.done, timeout), f"{name} did not answer"
    node.destroy_client(client)
    return future.result()
