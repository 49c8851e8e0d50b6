"""rosbag2 recording and offline evaluation, with ``rosbags`` (no ROS 2 CLI needed).

* :class:`BagRecorder` writes the raw CDR bytes of live topics (raw rclpy subscriptions) to a
  rosbag2 (sqlite3) that ``ros2 bag play`` and ``rosbags`` read;
* ``fillcls-bag evaluate BAG`` replays a bag's camera images through a ``fillcls-node`` process,
  one frame at a time, and prints the accuracy against the bag's ground truth
  (``image/ground_truth``, written by ``fillcls-camera`` for procedural frames);
* ``fillcls-bag info BAG`` lists the topics and message counts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from rosbags.rosbag2 import Reader, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from .processes import node_params

FILLCLS_TYPES = ("fillcls_msgs/msg/FillingLevel", "fillcls_msgs/msg/FillingLevelArray")


def _msg_dir() -> Path:
    """Directory of the installed (or source) ``fillcls_msgs`` .msg files."""
    candidates = [Path(sys.prefix) / "share" / "fillcls_msgs" / "msg",
                  Path(__file__).resolve().parent.parent / "fillcls_msgs" / "msg"]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.insert(0, Path(get_package_share_directory("fillcls_msgs")) / "msg")
    except Exception:
        pass
    for c in candidates:
        if (c / "FillingLevel.msg").is_file():
            return c
    raise FileNotFoundError("fillcls_msgs .msg files not found (looked in "
                            + ", ".join(map(str, candidates)) + ")")


def typestore():
    """A ROS 2 Kilted typestore that also knows the fillcls_msgs types."""
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for name in FILLCLS_TYPES:
        text = (_msg_dir() / f"{name.rsplit('/', 1)[1]}.msg").read_text()
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def message_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Name``."""
    import importlib

    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


class BagRecorder:
    """Records ``topics`` (``{topic: msgtype string}``) seen by ``node`` into a new bag at ``path``."""

    def __init__(self, node, path: str | os.PathLike, topics: dict[str, str]):
        from rclpy.qos import qos_profile_sensor_data

        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path}: bag already exists; choose a new path")
        self.store = typestore()
        self.writer = Writer(self.path, version=9)
        self.writer.open()
        self.counts = {t: 0 for t in topics}
        self.subs = []
        for topic, msgtype in topics.items():
            conn = self.writer.add_connection(topic, msgtype, typestore=self.store)
            cls = message_class(msgtype)
            qos = qos_profile_sensor_data if cls.__name__ in ("Image", "CompressedImage") else 100
            self.subs.append(node.create_subscription(
                cls, topic, lambda data, c=conn, t=topic: self._write(c, t, data), qos, raw=True))

    def _write(self, conn, topic, data: bytes) -> None:
        self.writer.write(conn, time.time_ns(), data)
        self.counts[topic] += 1

    def close(self) -> None:
        self.writer.close()


def read_messages(path: str | os.PathLike, topics=None):
    """Yield ``(topic, msgtype, timestamp_ns, raw bytes)`` of a bag, in time order."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such bag")
    with Reader(path) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        for conn, t, raw in reader.messages(connections=conns):
            yield conn.topic, conn.msgtype, t, bytes(raw)


def bag_info(path) -> dict[str, tuple[str, int]]:
    with Reader(Path(path)) as reader:
        return {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}


def evaluate_bag(path, image_topic: str, truth_topic: str, params: dict, timeout: float = 10.0,
                 log=print) -> dict:
    """Replay ``image_topic`` of bag ``path`` through a fillcls-node process; score vs ``truth_topic``.

    Frames are sent one at a time and the next one only after the answer (or ``timeout``), so the
    result does not depend on the machine's speed. Returns :meth:`Scoreboard.summary` plus ``sent``.
    """
    import rclpy
    from fillcls_msgs.msg import FillingLevelArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CompressedImage, Image

    from fillcls.evaluation import Scoreboard, format_summary, match_frame, stamp_ns
    from .processes import RosProcess, wait_for_node

    info = bag_info(path)
    for topic in (image_topic, truth_topic):
        if topic not in info:
            raise ValueError(f"{path}: no topic {topic!r} in this bag (topics: {', '.join(info)})")
    truth = {}
    for _, _, _, raw in read_messages(path, [truth_topic]):
        msg = deserialize_message(raw, FillingLevelArray)
        truth[stamp_ns(msg.header)] = msg
    msgtype = info[image_topic][0]
    image_cls = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage}.get(msgtype)
    if image_cls is None:
        raise ValueError(f"{path}: topic {image_topic} holds {msgtype}, not an image")
    params = {**params, "compressed": image_cls is CompressedImage, "qos_reliability": "reliable"}
    node_proc = RosProcess("fillcls-node", params)
    rclpy.init()
    probe = rclpy.create_node("fillcls_bag_eval")
    answers = {}
    probe.create_subscription(FillingLevelArray, "filling_level",
                              lambda m: answers.__setitem__(stamp_ns(m.header), m), 100)
    topic = "image/compressed" if image_cls is CompressedImage else "image"
    pub = probe.create_publisher(image_cls, topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    board = Scoreboard()
    sent = 0
    try:
        wait_for_node(probe, node_proc, pub)
        for _, _, _, raw in read_messages(path, [image_topic]):
            header = deserialize_message(raw, image_cls).header
            key = stamp_ns(header)
            if key not in truth:
                continue
            t0 = time.monotonic()
            pub.publish(raw)
            sent += 1
            while key not in answers and time.monotonic() - t0 < timeout and node_proc.alive():
                rclpy.spin_once(probe, timeout_sec=0.02)
            if key in answers:
                r = match_frame(truth[key], answers[key], time.monotonic() - t0)
                board.add(r)
                log(r.line(sent))
            elif not node_proc.alive():
                raise RuntimeError("fillcls-node exited during the replay:\n" + node_proc.output[-2000:])
        summary = board.summary()
        summary["sent"] = sent
        log(format_summary(summary))
        return summary
    finally:
        probe.destroy_node()
        rclpy.try_shutdown()
        node_proc.stop()


def main(argv=None) -> int:
    """Entry point of ``fillcls-bag``."""
    ap = argparse.ArgumentParser(prog="fillcls-bag", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("info", help="topics and message counts of a bag")
    p.add_argument("bag", help="rosbag2 directory")
    p = sub.add_parser("evaluate", help="replay a bag's images through fillcls-node and score them")
    p.add_argument("bag", help="rosbag2 directory (e.g. recorded by `fillcls-demo --record`)")
    p.add_argument("--image-topic", default="/image", help="camera topic in the bag")
    p.add_argument("--truth-topic", default="/image/ground_truth", help="ground-truth FillingLevelArray topic")
    p.add_argument("--model", default="", help="classifier checkpoint (default: the node's default model)")
    p.add_argument("--segmentation-backend", default="", help="node's backend (default: the demo's)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "info":
            for topic, (msgtype, count) in bag_info(args.bag).items():
                print(f"{topic:32s} {msgtype:40s} {count}")
            return 0
        params = node_params(args.model, args.segmentation_backend)
        s = evaluate_bag(args.bag, args.image_topic, args.truth_topic, params, args.timeout)
        return 0 if s["frames"] else 1
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as exc:
        print(f"fillcls-bag: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
