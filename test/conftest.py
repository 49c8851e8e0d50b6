"""Shared fixtures: a private ROS domain per test session, tiny model checkpoints."""

import os
import random

import pytest

from helpers import make_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Keep DDS traffic on this machine and away from other test runs (Kilted ignores ROS_LOCALHOST_ONLY).
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(10, 100)))
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", os.path.join(REPO, "config", "fastdds_shm.xml"))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Path of a random ResNet-18 checkpoint at 32 px (fast on the CPU)."""
    return make_checkpoint(tmp_path_factory.mktemp("models") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory):
    """``tiny_model`` exported to ONNX (fp32): the node runs it with onnxruntime and never imports
    torch, so it starts in about a second."""
    from training.onnx_export import export_onnx

    out = str(tmp_path_factory.mktemp("onnx") / "tiny.onnx")
    export_onnx(tiny_model, out)
    return out


@pytest.fixture(scope="session")
def two_containers():
    """A grey 160 x 120 frame with two coloured 'containers', and their boxes (x0, y0, x1, y1)."""
    import numpy as np

    frame = np.full((120, 160, 3), 128, np.uint8)
    frame[20:100, 20:60] = (200, 40, 40)
    frame[30:90, 100:140] = (40, 40, 200)
    frame.flags.writeable = False
    return frame, [(20, 20, 60, 100), (100, 30, 140, 90)]


@pytest.fixture(scope="module")
def ros():
    """rclpy initialised for this test module, and a probe node of the test process."""
    import rclpy

    rclpy.init()
    node = rclpy.create_node(f"fillcls_probe_{os.getpid()}")
    yield node
    node.destroy_node()
    rclpy.shutdown()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread in the test process: as fast on these tiny models, and no OpenMP slump on
    a shared machine (subprocesses choose their own)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
