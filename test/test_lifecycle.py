"""The lifecycle variant of the node, in its own process, driven through every transition."""

import signal

from fillcls_msgs.msg import FillingLevelArray
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from rosutil import NodeProcess, call_service, image_msg, publish_until, spin_until

DISCOVERY_S = 20.0


def _state(node) -> int:
    return call_service(node, GetState, "/fillcls_node/get_state", GetState.Request()).current_state.id


def _transition(node, transition_id) -> bool:
    req = ChangeState.Request(transition=Transition(id=transition_id))
    return call_service(node, ChangeState, "/fillcls_node/change_state", req).success


def test_every_transition(ros, tiny_onnx, two_containers):
    proc = NodeProcess({"model_path": tiny_onnx, "device": "cpu", "segmentation_backend": "threshold",
                        "segmentation_score_threshold": 0.0}, node_exe="fillcls-lifecycle-node")
    answers = []
    sub = ros.create_subscription(FillingLevelArray, "filling_level", answers.append, 10)
    pub = ros.create_publisher(Image, "image", qos_profile_sensor_data)
    frame, _ = two_containers

    def answered(stamp_ns, timeout=10.0) -> bool:
        return publish_until(ros, pub, image_msg(frame, stamp_ns),
                             lambda: any(a.header.stamp.sec == stamp_ns // 10**9 for a in answers), timeout)

    try:
        assert proc.wait_for_output("unconfigured", 60), proc.output
        assert _state(ros) == State.PRIMARY_STATE_UNCONFIGURED
        assert ros.count_subscribers("/image") == 0 and ros.count_publishers("/filling_level") == 0

        assert _transition(ros, Transition.TRANSITION_CONFIGURE), proc.output
        assert _state(ros) == State.PRIMARY_STATE_INACTIVE
        assert spin_until(ros, lambda: ros.count_publishers("/filling_level") == 1, DISCOVERY_S)
        assert ros.count_subscribers("/image") == 0  # inactive: no frames taken

        assert _transition(ros, Transition.TRANSITION_ACTIVATE)
        assert _state(ros) == State.PRIMARY_STATE_ACTIVE
        assert spin_until(ros, lambda: pub.get_subscription_count() == 1, DISCOVERY_S)
        assert answered(11 * 10**9), proc.output

        assert _transition(ros, Transition.TRANSITION_DEACTIVATE)
        assert _state(ros) == State.PRIMARY_STATE_INACTIVE
        assert spin_until(ros, lambda: pub.get_subscription_count() == 0, DISCOVERY_S)  # costs no CPU
        assert not answered(12 * 10**9, timeout=2.0)

        assert _transition(ros, Transition.TRANSITION_CLEANUP)
        assert _state(ros) == State.PRIMARY_STATE_UNCONFIGURED
        assert proc.wait_for_output("models freed", 10)
        assert spin_until(ros, lambda: ros.count_publishers("/filling_level") == 0, DISCOVERY_S)

        for t in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):  # again, from scratch
            assert _transition(ros, t), proc.output
        assert spin_until(ros, lambda: pub.get_subscription_count() == 1, DISCOVERY_S)
        assert answered(13 * 10**9), proc.output

        assert _transition(ros, Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert _state(ros) == State.PRIMARY_STATE_FINALIZED
        assert spin_until(ros, lambda: pub.get_subscription_count() == 0, DISCOVERY_S)
    finally:
        ros.destroy_subscription(sub)
        ros.destroy_publisher(pub)
        assert proc.stop(signal.SIGINT) == 0, proc.output
    assert "Failed to publish log message to rosout" not in proc.output


def test_configure_fails_on_a_bad_model_and_can_be_retried(ros, tmp_path, tiny_model):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    proc = NodeProcess({"model_path": str(broken), "device": "cpu"}, node_exe="fillcls-lifecycle-node",
                       extra_args=["-r", "__ns:=/lc_bad"])
    try:
        assert proc.wait_for_output("unconfigured", 60), proc.output
        req = ChangeState.Request(transition=Transition(id=Transition.TRANSITION_CONFIGURE))
        assert not call_service(ros, ChangeState, "/lc_bad/fillcls_node/change_state", req).success
        assert proc.wait_for_output("broken.pt", 20), proc.output  # the log line may trail the answer
        state = call_service(ros, GetState, "/lc_bad/fillcls_node/get_state", GetState.Request()).current_state.id
        assert state == State.PRIMARY_STATE_UNCONFIGURED
    finally:
        assert proc.stop(signal.SIGINT) == 0, proc.output
