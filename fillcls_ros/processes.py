"""Run fillcls executables as child processes (demo, bag evaluation, benchmarks, tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from .parameters import PARAMS, default_model

BIN = os.path.dirname(sys.executable)


def node_params(model: str = "", backend: str = "", **extra) -> dict:
    """Parameters of the node run by the demo and the bag evaluation: CPU, the packaged default
    models (the node's own default segmentation and inference backends) unless given."""
    defaults = {p.name: p.default for p in PARAMS.values()}
    params = {"device": "cpu", "model_path": model or default_model({**defaults, "device": "cpu", **extra}),
              "publish_debug_image": True, "max_containers": 5,
              # camera, node and probe share the CPU: one classifier thread never waits for a busy core
              "cpu_threads": 1, **extra}
    if backend:
        params["segmentation_backend"] = backend
    return params


def check_model(model: str) -> None:
    """Raise FileNotFoundError naming ``model`` and how to rebuild it if it is missing."""
    if not os.path.isfile(model):
        raise FileNotFoundError(
            f"{model}: classifier missing. The repository ships it; rebuild it with `make models` "
            "(see README, 'Default models')")


def write_params(params: dict, node: str = "/**") -> str:
    """A temporary ROS parameters YAML file with ``params`` for ``node``; returns its path."""
    fd, path = tempfile.mkstemp(suffix=".yaml", prefix="fillcls_params_")
    with os.fdopen(fd, "w") as f:
        f.write(f"{node}:\n  ros__parameters:\n")
        for k, v in params.items():
            if isinstance(v, bool):
                v = str(v).lower()
            elif isinstance(v, str):
                v = repr(v)
            f.write(f"    {k}: {v}\n")
    return path


class RosProcess:
    """An executable of this package (``fillcls-node``, ``fillcls-camera``) run with ``params``.

    Output is collected in :attr:`output`; :meth:`stop` sends SIGINT and returns the exit code.
    """

    def __init__(self, executable: str, params: dict, extra_args=(), env: dict | None = None):
        self.params_file = write_params(params)
        self.cmd = [os.path.join(BIN, executable), "--ros-args", "--params-file", self.params_file,
                    *extra_args]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for_output(self, text: str, timeout: float = 60.0) -> bool:
        """True once ``text`` appears in the output (False on timeout or exit without it)."""
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
        """Send ``sig`` (if still running), wait, and return the exit code (kill after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._reader.join(5)
        if os.path.exists(self.params_file):
            os.unlink(self.params_file)
        return rc


def wait_for_node(probe, proc: RosProcess, image_pub, timeout: float = 90.0) -> None:
    """Spin ``probe`` until the node process subscribes to ``image_pub``'s topic and publishes
    ``filling_level`` (discovery can take seconds); RuntimeError with its output otherwise."""
    import rclpy

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not proc.alive():
            raise RuntimeError(f"{os.path.basename(proc.cmd[0])} exited:\n{proc.output[-3000:]}")
        if image_pub.get_subscription_count() > 0 and probe.count_publishers("filling_level") > 0:
            time.sleep(0.5)  # let the reverse direction of the match settle
            return
        rclpy.spin_once(probe, timeout_sec=0.1)
    raise RuntimeError(f"node not ready after {timeout:.0f} s:\n{proc.output[-3000:]}")
