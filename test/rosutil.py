"""Helpers for tests that run real ROS 2 processes: start/stop a node, spin until a condition."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

BIN = os.path.dirname(sys.executable)


class NodeProcess:
    """``fillcls-node`` in its own process, with its output collected in ``self.output``."""

    def __init__(self, params: dict, extra_args=(), node_exe="fillcls-node"):
        fd, self.params_file = tempfile.mkstemp(suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            f.write("/**:\n  ros__parameters:\n")
            for k, v in params.items():
                f.write(f"    {k}: {v!r}\n" if isinstance(v, str) else f"    {k}: {str(v).lower() if isinstance(v, bool) else v}\n")
        cmd = [os.path.join(BIN, node_exe), "--ros-args", "--params-file", self.params_file, *extra_args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_output(self, text: str, timeout: float = 60.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.output:
                return True
            if self.proc.poll() is not None:
                time.sleep(0.2)
                return text in self.output
            time.sleep(0.05)
        return False

    def stop(self, sig=signal.SIGINT, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._reader.join(5)
        os.unlink(self.params_file)
        return rc


def spin_until(node, predicate, timeout: float) -> bool:
    """Spin ``node`` until ``predicate()`` is true or ``timeout`` seconds pass."""
    import rclpy

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        rclpy.spin_once(node, timeout_sec=0.05)
    return predicate()


def image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera", encoding="rgb8"):
    """A sensor_msgs/Image of an RGB array (``bgr8`` swaps the channels)."""
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import Image

    arr = rgb[..., ::-1] if encoding == "bgr8" else rgb
    arr = np.ascontiguousarray(arr)
    m = Image(height=arr.shape[0], width=arr.shape[1], encoding=encoding, is_bigendian=0,
              step=arr.shape[1] * 3, data=arr.tobytes())
    m.header.stamp = Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    m.header.frame_id = frame_id
    return m
