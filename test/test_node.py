"""The node in its own process, talking to this test process over real ROS 2 topics."""

import math
import signal
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from fillcls_msgs.msg import FillingLevel, FillingLevelArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from rosutil import NodeProcess, call_service, image_msg, publish_until, spin_until

DISCOVERY_S = 20.0


@pytest.fixture(scope="module")
def node_proc(tiny_model):
    proc = NodeProcess({"model_path": tiny_model, "device": "cpu", "segmentation_backend": "threshold",
                        "segmentation_score_threshold": 0.0, "max_containers": 5})
    assert proc.wait_for_output("listening on", 60), proc.output
    yield proc
    rc = proc.stop(signal.SIGINT)
    assert rc == 0, proc.output
    assert "shutting down after" in proc.output
    assert "Failed to publish log message to rosout" not in proc.output, proc.output


class Probe:
    """Publisher of images and collector of the node's outputs, inside the test process."""

    def __init__(self, node):
        self.node = node
        self.pub = node.create_publisher(Image, "image", qos_profile_sensor_data)
        self.results = {}
        self.diagnostics = []
        self.debug = []
        self.subs = [
            node.create_subscription(FillingLevelArray, "filling_level", self._on_result, 10),
            node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10),
        ]

    def _on_result(self, msg):
        s = msg.header.stamp
        self.results[s.sec * 10**9 + s.nanosec] = msg

    def wait_connected(self):
        assert spin_until(self.node, lambda: self.pub.get_subscription_count() > 0
                          and self.subs[0].get_publisher_count() > 0, DISCOVERY_S), "node not discovered"

    def send_until_answered(self, rgb, stamp_ns, encoding="rgb8", timeout=20.0):
        """Publish the frame every 0.5 s (best effort may drop one) until its answer arrives."""
        msg = image_msg(rgb, stamp_ns, encoding=encoding)
        deadline = 0.0
        end = time.monotonic() + timeout
        while stamp_ns not in self.results and time.monotonic() < end:
            if time.monotonic() >= deadline:
                self.pub.publish(msg)
                deadline = time.monotonic() + 0.5
            rclpy.spin_once(self.node, timeout_sec=0.05)
        return self.results.get(stamp_ns)


@pytest.fixture(scope="module")
def probe(ros, node_proc):
    p = Probe(ros)
    p.wait_connected()
    return p


def test_answers_with_same_header_and_valid_content(probe, two_containers):
    frame, boxes = two_containers
    stamp = 1_700_000_000_123_456_789
    out = probe.send_until_answered(frame, stamp, encoding="bgr8")
    assert out is not None, "no FillingLevelArray for the frame"
    assert out.header.frame_id == "camera"
    assert out.model_id == "test-model"
    assert len(out.containers) == 2
    for c, box in zip(out.containers, boxes):
        probs = list(c.probabilities)
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert c.level == int(np.argmax(probs)) and c.confidence == pytest.approx(max(probs))
        expected = {FillingLevel.EMPTY: 0.0, FillingLevel.HALF: 50.0, FillingLevel.FULL: 90.0}
        if c.level == FillingLevel.UNKNOWN:
            assert math.isnan(c.percentage)
        else:
            assert c.percentage == expected[c.level]
        assert abs(c.roi.x_offset - box[0]) <= 2 and abs(c.roi.width - (box[2] - box[0])) <= 3
        assert 0.0 < c.segmentation_score <= 1.0


def _set(node, **values):
    req = SetParameters.Request()
    for name, v in values.items():
        if isinstance(v, bool):
            pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=v)
        elif isinstance(v, int):
            pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)
        elif isinstance(v, float):
            pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)
        else:
            pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=v)
        req.parameters.append(Parameter(name=name, value=pv))
    return call_service(node, SetParameters, "/fillcls_node/set_parameters", req).results


def test_parameter_validation_from_another_node(probe, tmp_path, two_containers):
    node = probe.node
    (bad_device,) = _set(node, device="tpu")
    assert not bad_device.successful and "cuda:N" in bad_device.reason
    (bad_range,) = _set(node, segmentation_score_threshold=2.0)
    assert not bad_range.successful
    (bad_backend,) = _set(node, segmentation_backend="nope")
    assert not bad_backend.successful and "nope" in bad_backend.reason
    missing = str(tmp_path / "missing.pt")
    (bad_model,) = _set(node, model_path=missing)
    assert not bad_model.successful and "missing.pt" in bad_model.reason
    (bad_size,) = _set(node, input_size=1)
    assert not bad_size.successful and "input_size" in bad_size.reason
    (read_only,) = _set(node, qos_depth=5)
    assert not read_only.successful
    (ok,) = _set(node, max_containers=1)
    assert ok.successful
    got = call_service(node, GetParameters, "/fillcls_node/get_parameters",
                GetParameters.Request(names=["max_containers", "device"])).values
    assert got[0].integer_value == 1 and got[1].string_value == "cpu"
    frame, _ = two_containers
    out = probe.send_until_answered(frame, 1_700_000_001_000_000_000)
    assert out is not None and len(out.containers) == 1  # the new limit is in force
    (ok,) = _set(node, max_containers=5)
    assert ok.successful
    (bad_threads,) = _set(node, cpu_threads=-1)
    assert not bad_threads.successful
    (ok,) = _set(node, cpu_threads=1)
    assert ok.successful
    out = probe.send_until_answered(frame, 1_700_000_002_000_000_000)
    assert out is not None and len(out.containers) == 2  # still answering after the thread change


def test_bad_frames_are_counted_and_node_survives(probe, node_proc, two_containers):
    frame, _ = two_containers
    bad = []
    m = image_msg(frame, 1); m.encoding = "weird42"; bad.append(m)
    m = image_msg(frame, 2); m.step = 10; bad.append(m)
    m = image_msg(frame, 3); m.data = m.data[:100]; bad.append(m)
    m = image_msg(frame, 4); m.width = 0; m.data = b""; bad.append(m)
    m = image_msg(frame, 5); m.width = m.height = 60000; bad.append(m)
    for msg in bad:
        for _ in range(3):
            probe.pub.publish(msg)
            rclpy.spin_once(probe.node, timeout_sec=0.1)
    out = probe.send_until_answered(frame, 1_700_000_002_000_000_000)
    assert out is not None, "node stopped answering after bad frames"
    assert node_proc.proc.poll() is None

    def counts():
        for arr in reversed(probe.diagnostics):
            for st in arr.status:
                if st.name.startswith("fillcls_node"):
                    return {kv.key: kv.value for kv in st.values}
        return {}

    kinds = ["encoding", "step", "truncated", "zero_size", "absurd_size"]
    assert spin_until(probe.node, lambda: all(int(counts().get(f"bad_frames_{k}", 0)) >= 1 for k in kinds),
                      10.0), counts()
    for k in kinds:
        assert f"bad frame ({k}" in node_proc.output  # logged once per kind


def test_camera_process_to_node_process(ros, node_proc):
    """Three processes: the camera publisher, the node, and this test listening to both."""
    truth, results = {}, {}
    key = lambda m: m.header.stamp.sec * 10**9 + m.header.stamp.nanosec  # noqa: E731
    subs = [ros.create_subscription(FillingLevelArray, "image/ground_truth",
                                    lambda m: truth.__setitem__(key(m), m), 100),
            ros.create_subscription(FillingLevelArray, "filling_level",
                                    lambda m: results.__setitem__(key(m), m), 100)]
    camera = NodeProcess({"source": "synthetic", "rate": 10.0, "containers": 1, "width": 320,
                          "height": 240}, node_exe="fillcls-camera")
    try:
        matched = lambda: [k for k in results if k in truth]  # noqa: E731
        assert spin_until(ros, lambda: len(matched()) >= 3, 40.0), camera.output
        for k in matched():
            (t,) = truth[k].containers
            assert len(results[k].containers) >= 1
            r = results[k].containers[0]
            assert abs(r.roi.x_offset - t.roi.x_offset) <= 3 and abs(r.roi.height - t.roi.height) <= 4
    finally:
        assert camera.stop(signal.SIGINT) == 0, camera.output
        for s in subs:
            ros.destroy_subscription(s)


def test_camera_says_when_its_count_is_reached():
    """A camera with ``count`` stops after that many frames and says so (the demo waits for it: a node
    that skipped a frame otherwise kept the demo streaming until its 90 s deadline)."""
    from fillcls_ros.camera import CAMERA_DONE

    camera = NodeProcess({"source": "synthetic", "rate": 20.0, "count": 3, "width": 160, "height": 120},
                         node_exe="fillcls-camera")
    try:
        assert camera.wait_for_output(f"{CAMERA_DONE}: count 3 reached", 60), camera.output
    finally:
        assert camera.stop(signal.SIGINT) == 0, camera.output


def test_compressed_input_and_sigterm(ros, tiny_model, two_containers):
    import cv2
    from sensor_msgs.msg import CompressedImage

    proc = NodeProcess({"model_path": tiny_model, "device": "cpu", "compressed": True},
                       extra_args=["-r", "__ns:=/compressed_test"])
    try:
        assert proc.wait_for_output("listening on", 60), proc.output
        assert "/compressed_test/image/compressed" in proc.output
        pub = ros.create_publisher(CompressedImage, "/compressed_test/image/compressed", qos_profile_sensor_data)
        got = []
        sub = ros.create_subscription(FillingLevelArray, "/compressed_test/filling_level", got.append, 10)
        assert spin_until(ros, lambda: pub.get_subscription_count() > 0 and sub.get_publisher_count() > 0,
                          DISCOVERY_S)
        frame, _ = two_containers
        msg = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", frame)[1].tobytes())
        msg.header.stamp.sec = 42
        publish_until(ros, pub, msg, lambda: bool(got))
        assert got and got[0].header.stamp.sec == 42 and len(got[0].containers) == 1  # full_frame
    finally:
        assert proc.stop(signal.SIGTERM) == 0, proc.output
    assert "shutting down" in proc.output
    assert "Failed to publish log message to rosout" not in proc.output, proc.output


def test_bad_model_refuses_to_start(tmp_path):
    corrupt = tmp_path / "broken.pt"
    corrupt.write_bytes(b"not a checkpoint")
    proc = NodeProcess({"model_path": str(corrupt), "device": "cpu"})
    rc = proc.proc.wait(60)
    proc.stop()
    assert rc == 1
    assert "broken.pt" in proc.output and "cannot start" in proc.output
    assert "Traceback" not in proc.output


def test_out_of_range_parameter_refuses_to_start(tiny_model):
    proc = NodeProcess({"model_path": tiny_model, "device": "cpu", "input_size": 5000})
    rc = proc.proc.wait(60)
    proc.stop()
    assert rc == 1 and "cannot start" in proc.output and "input_size" in proc.output, proc.output
    assert "Traceback" not in proc.output


def test_default_node_on_the_cpu_runs_without_torch(ros, two_containers):
    """The default configuration on the CPU: the shipped ONNX models on onnxruntime, no torch loaded."""
    proc = NodeProcess({"device": "cpu"}, extra_args=["-r", "__ns:=/ort_test"])
    try:
        assert proc.wait_for_output("listening on", 60), proc.output
        assert "onnxruntime" in proc.output, proc.output
        with open(f"/proc/{proc.proc.pid}/maps") as f:
            assert "libtorch" not in f.read(), "torch was loaded by the onnxruntime node"
        pub = ros.create_publisher(Image, "/ort_test/image", qos_profile_sensor_data)
        got = []
        sub = ros.create_subscription(FillingLevelArray, "/ort_test/filling_level", got.append, 10)
        assert spin_until(ros, lambda: pub.get_subscription_count() > 0 and sub.get_publisher_count() > 0,
                          DISCOVERY_S)
        frame, _ = two_containers
        msg = image_msg(frame, 77 * 10**9)
        publish_until(ros, pub, msg, lambda: bool(got))
        assert got and got[0].header.stamp.sec == 77 and got[0].model_id
    finally:
        assert proc.stop(signal.SIGINT) == 0, proc.output


def test_sigint_during_inference_stops_the_node(ros, tiny_model, two_containers):
    """A signal that lands while a frame is being classified ends the node (not a 'bad frame')."""
    proc = NodeProcess({"model_path": tiny_model, "device": "cpu", "input_size": 1024, "max_containers": 2,
                        "segmentation_backend": "threshold", "cpu_threads": 1}, extra_args=["-r", "__ns:=/slow"])
    pub = ros.create_publisher(Image, "/slow/image", qos_profile_sensor_data)
    frame, _ = two_containers
    try:
        assert proc.wait_for_output("listening on", 60), proc.output
        assert spin_until(ros, lambda: pub.get_subscription_count() > 0, DISCOVERY_S)
        t_end = time.monotonic() + 4.0  # each frame takes ~1 s: the node is nearly always classifying
        while time.monotonic() < t_end:
            pub.publish(image_msg(frame, 5 * 10**9))
            spin_until(ros, lambda: False, 0.05)
    finally:
        ros.destroy_publisher(pub)
        rc = proc.stop(signal.SIGINT)
    assert rc == 0, proc.output
    assert "_Stop" not in proc.output and "shutting down after" in proc.output, proc.output
