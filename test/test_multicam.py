"""Several cameras in one node: one classifier forward for the frames of all cameras
(FillingEstimator.predict_many), the ``cameras`` parameter and the per-camera topics."""

import re
import signal

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from fillcls_msgs.msg import FillingLevelArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from fillcls.inference import EstimatorConfig, FillingEstimator
from fillcls_ros import parameters
from rosutil import NodeProcess, call_service, image_msg, publish_until, spin_until

DISCOVERY_S = 20.0
START_S = 120.0  # model load and warm-up on a busy machine


def _ns(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def test_predict_many_equals_one_predict_per_frame(tiny_model, two_containers):
    frame, _ = two_containers
    one = frame.copy()
    one[:, 90:] = 128  # only the left container
    empty = np.full_like(frame, 128)
    est = FillingEstimator(EstimatorConfig(tiny_model, segmentation_backend="threshold",
                                           segmentation_score_threshold=0.0))
    frames = [frame, empty, one, np.ascontiguousarray(frame[:, ::-1])]
    many = est.predict_many(frames)
    assert est.last_batch_size == 5 and [len(r) for r in many] == [2, 0, 1, 2]
    for f, got in zip(frames, many):
        alone = est.predict(f)
        assert [(r.box, r.level) for r in got] == [(r.box, r.level) for r in alone]
        for a, b in zip(got, alone):
            np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
            assert a.segmentation_score == b.segmentation_score
    assert est.predict_many([]) == []


@pytest.mark.parametrize("cameras, ok", [([], True), (["cam_left", "robot/cam_right"], True),
                                         (["a", ""], False), (["2cam"], False), (["a b"], False),
                                         (["a/"], False), (["cam", "cam"], False), (["a", "/a"], False)])
def test_camera_names_are_checked(cameras, ok):
    error = parameters.validate("cameras", cameras)
    assert (error is None) == ok, error
    if not ok:
        assert error.startswith("cameras: ") and "\n" not in error


def test_bad_camera_list_refuses_start_up():
    proc = NodeProcess({"device": "cpu", "cameras": ["cam", "cam"]})
    proc.proc.wait(90)
    assert proc.stop() == 1, proc.output
    (line,) = [x for x in proc.output.splitlines() if "cannot start" in x]
    assert "cameras: 'cam' given more than once" in line, proc.output


def test_two_cameras_answer_on_their_own_topics(ros, tiny_onnx, two_containers):
    frame, _ = two_containers
    proc = NodeProcess({"model_path": tiny_onnx, "device": "cpu", "segmentation_backend": "threshold",
                        "segmentation_score_threshold": 0.0, "cameras": ["a", "b"]}, extra_args=["-r", "__ns:=/mc"])
    pubs = {c: ros.create_publisher(Image, f"/mc/{c}/image", qos_profile_sensor_data) for c in "ab"}
    got = {c: {} for c in "ab"}
    subs = [ros.create_subscription(FillingLevelArray, f"/mc/{c}/filling_level",
                                    lambda m, c=c: got[c].__setitem__(_ns(m), m), 10) for c in "ab"]
    try:
        assert proc.wait_for_output("listening on", START_S), proc.output
        assert spin_until(ros, lambda: all(p.get_subscription_count() for p in pubs.values())
                          and all(s.get_publisher_count() for s in subs), DISCOVERY_S), proc.output
        sent = {"a": image_msg(frame, 5 * 10**9 + 1, frame_id="cam_a"),
                "b": image_msg(np.ascontiguousarray(frame[:, 80:]), 6 * 10**9 + 2, frame_id="cam_b")}

        def answered(stamps) -> bool:
            return all(stamps[c] in got[c] for c in stamps)

        assert _publish_both(ros, pubs, sent, lambda: answered({"a": 5 * 10**9 + 1, "b": 6 * 10**9 + 2})), \
            proc.output
        a, b = got["a"][5 * 10**9 + 1], got["b"][6 * 10**9 + 2]
        assert a.header.frame_id == "cam_a" and len(a.containers) == 2
        assert b.header.frame_id == "cam_b" and len(b.containers) == 1  # only the right container
        assert 6 * 10**9 + 2 not in got["a"] and 5 * 10**9 + 1 not in got["b"]

        bad = Image(height=120, width=160, encoding="rgb8", step=480, data=bytes(100))  # truncated
        bad.header.stamp, bad.header.frame_id = Time(sec=7), "cam_a"
        sent = {"a": bad, "b": image_msg(frame, 8 * 10**9, frame_id="cam_b")}
        assert _publish_both(ros, pubs, sent, lambda: answered({"b": 8 * 10**9})), proc.output
        assert 7 * 10**9 not in got["a"]
        assert proc.wait_for_output("a: 100 bytes of data", 10), proc.output  # counted and logged for camera a
        assert publish_until(ros, pubs["a"], image_msg(frame, 9 * 10**9), lambda: 9 * 10**9 in got["a"])
    finally:
        for x in subs:
            ros.destroy_subscription(x)
        for x in pubs.values():
            ros.destroy_publisher(x)
        assert proc.stop(signal.SIGINT) == 0, proc.output
    assert re.search(r"shutting down after \d+ frames \(\d+ published, [1-9]\d* bad, \d+ dropped\)", proc.output), \
        proc.output


def _publish_both(ros, pubs, msgs, done, timeout: float = 20.0) -> bool:
    """Publish each camera's message every 0.5 s (best effort may drop one) until ``done()``."""
    for _ in range(int(timeout / 0.5)):
        for c, m in msgs.items():
            pubs[c].publish(m)
        if spin_until(ros, done, 0.5):
            return True
    return done()


def test_lifecycle_node_serves_several_cameras(ros, tiny_onnx, two_containers):
    frame, _ = two_containers
    proc = NodeProcess({"model_path": tiny_onnx, "device": "cpu", "segmentation_backend": "threshold",
                        "cameras": ["left", "right"]}, node_exe="fillcls-lifecycle-node",
                       extra_args=["-r", "__ns:=/mcl"])
    got = []
    sub = ros.create_subscription(FillingLevelArray, "/mcl/right/filling_level", got.append, 10)
    pub = ros.create_publisher(Image, "/mcl/right/image", qos_profile_sensor_data)
    try:
        assert proc.wait_for_output("unconfigured", START_S), proc.output
        for t in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            req = ChangeState.Request(transition=Transition(id=t))
            assert call_service(ros, ChangeState, "/mcl/fillcls_node/change_state", req, START_S).success, proc.output
        assert spin_until(ros, lambda: pub.get_subscription_count() == 1
                          and ros.count_subscribers("/mcl/left/image") == 1, DISCOVERY_S), proc.output
        assert publish_until(ros, pub, image_msg(frame, 3 * 10**9), lambda: bool(got)), proc.output
        assert got[0].header.stamp.sec == 3
    finally:
        ros.destroy_subscription(sub)
        ros.destroy_publisher(pub)
        assert proc.stop(signal.SIGINT) == 0, proc.output
