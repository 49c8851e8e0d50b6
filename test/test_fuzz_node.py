"""Issue 14, process level: the node takes a few hundred fuzzed messages over DDS and still answers.

Two node processes run side by side (``compressed`` false and true: the parameter picks one
subscription), renamed so that their outputs and diagnostics stay apart. Each gets its fuzzed
messages over a reliable topic, paced so that its queue never overflows; then it must be alive,
have counted every message in /diagnostics, and answer a valid frame.
"""

import signal
import time

import cv2
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from fillcls_msgs.msg import FillingLevelArray
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from fillcls import fuzz
from rosutil import NodeProcess, image_msg, spin_until

N_EACH = 160  # fuzzed messages per node (plus the frames and two bombs)
QUEUE = 100  # the node's qos_depth; at most QUEUE - 20 messages are in flight
DISCOVERY_S = 30.0
RELIABLE = QoSProfile(depth=1000, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def nodes(tiny_onnx):
    """Both node processes, started together (start-up is the slow part)."""
    common = {"model_path": tiny_onnx, "device": "cpu", "segmentation_backend": "threshold",
              "segmentation_score_threshold": 0.0, "qos_reliability": "reliable", "qos_depth": QUEUE,
              "cpu_threads": 1, "publish_debug_image": False}
    procs = {name: NodeProcess({**common, "compressed": name == "compressed"},
                               ["-r", f"__node:=fuzz_{name}", "-r", f"filling_level:=filling_level_{name}"])
             for name in ("raw", "compressed")}
    for proc in procs.values():
        assert proc.wait_for_output("listening on", 90), proc.output
    yield procs
    for proc in procs.values():
        assert proc.stop(signal.SIGINT) == 0, proc.output[-3000:]


class Sender:
    """Publishes to one node and reads its answers and diagnostics (in the test process)."""

    def __init__(self, ros, name):
        self.node, self.name = ros, name
        self.compressed = name == "compressed"
        self.pub = ros.create_publisher(CompressedImage if self.compressed else Image,
                                        "image/compressed" if self.compressed else "image", RELIABLE)
        self.answers, self.diag = {}, {}
        self.subs = [ros.create_subscription(FillingLevelArray, f"filling_level_{name}", self._on_answer, 10),
                     ros.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)]

    def _on_answer(self, msg):
        self.answers[msg.header.stamp.sec] = msg

    def _on_diag(self, arr):
        for st in arr.status:
            if st.name.startswith(f"fuzz_{self.name}:"):
                self.diag = {kv.key: kv.value for kv in st.values}

    def received(self) -> int:
        return int(self.diag.get("frames_received", 0))

    def send_paced(self, messages) -> int:
        """Publish ``messages`` with at most QUEUE - 20 not yet counted by the node; returns how many."""
        assert spin_until(self.node, lambda: self.pub.get_subscription_count() > 0 and self.diag, DISCOVERY_S)
        start = self.received()
        for i, msg in enumerate(messages):
            assert spin_until(self.node, lambda: i - (self.received() - start) < QUEUE - 20, 30.0), self.diag
            self.pub.publish(msg)
            rclpy.spin_once(self.node, timeout_sec=0)
        return i + 1

    def valid_frame(self, frame, sec):
        msg = image_msg(frame, sec * 10**9)
        if self.compressed:
            ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            msg = CompressedImage(header=msg.header, format="jpeg", data=jpg.tobytes())
        return msg


def _messages(compressed: bool):
    msgs = [(CompressedImage if m.compressed else Image)(**m.fields)
            for m in fuzz.fuzz_messages(N_EACH, seed=43, compressed=compressed)]
    if compressed:
        msgs += [CompressedImage(format="png", data=fuzz.png_bomb(s, s)) for s in (10000, 20000)]
    else:  # the frames that ended the node in issue 14
        msgs += [Image(encoding=e, width=w, height=h, step=w, data=bytes(w * h * 2))
                 for e, w, h in (("nv12", 63, 48), ("nv12", 64, 3), ("nv12", 64, 1), ("nv21", 1, 1))]
    return msgs


@pytest.mark.parametrize("name", ["raw", "compressed"])
def test_node_survives_fuzzed_messages(ros, nodes, name, two_containers):
    sender = Sender(ros, name)
    messages = _messages(name == "compressed")
    start = time.monotonic()
    sent = sender.send_paced(messages)
    assert spin_until(ros, lambda: sender.received() >= sent, 30.0), (sent, sender.diag)
    proc = nodes[name]
    assert proc.alive(), proc.output[-3000:]
    bad = {k[len("bad_frames_"):]: int(v) for k, v in sender.diag.items() if k.startswith("bad_frames_")}
    assert "inference" not in bad, bad
    assert sum(bad.values()) + int(sender.diag["frames_published"]) >= sent, sender.diag
    expected = {"decode", "absurd_size", "zero_size", "format"} if name == "compressed" else \
        {"encoding", "odd_size", "step", "truncated", "zero_size", "absurd_size"}
    assert expected <= set(bad), bad
    msg = sender.valid_frame(two_containers[0], 1000)
    deadline = time.monotonic() + 20.0
    while 1000 not in sender.answers and time.monotonic() < deadline:
        sender.pub.publish(msg)
        spin_until(ros, lambda: 1000 in sender.answers, 0.5)
    assert 1000 in sender.answers, f"no answer to a valid frame after {sent} fuzzed messages:\n{proc.output[-2000:]}"
    assert len(sender.answers[1000].containers) == 2
    print(f"{name}: {sent} messages in {time.monotonic() - start:.1f} s, bad frames {bad}")
