"""rosbag2 recording and offline evaluation, with ``rosbags`` (no ROS 2 CLI needed).

* :class:`BagRecorder` writes the raw CDR bytes of live topics (raw rclpy subscriptions) to a
  rosbag2 (sqlite3) that ``ros2 bag play`` and ``rosbags`` read;
* ``fillcls-bag record-sequences BAG`` renders procedural videos (:mod:`fillcls.world.sequences`:
  filling, emptying, static, carried, crossing) into a new bag: ``/image`` (sensor_msgs/Image
  rgb8), ``/depth`` (32FC1, metres), ``/camera_info`` and ``/image/ground_truth``, all with the
  frame's header; the sequences (kind, seed, fps, frames, first stamp) are in the bag's metadata
  (``custom_data`` key ``fillcls_sequences``, JSON). Their ground truth extends the convention of
  ``fillcls-camera``: per visible container ``level`` is the nearest class, ``percentage`` the
  true fill percentage (between the classes' while it is being poured: the frame is *settled*
  when it equals the class's, or for UNKNOWN, NaN) and ``track_id`` the container's true identity
  (1, 2, ...). The bag's time runs on from one sequence to the next (:data:`SEQUENCE_GAP_S`
  apart), but each sequence's header stamps lie *before* the previous one's: the clock goes back
  between two sequences, so a tracker starts afresh in each (fillcls' Tracker resets when the
  stamp goes back), as it does in ``bench/bench_sequences.py``;
* ``fillcls-bag evaluate BAG`` replays a bag's camera images through a ``fillcls-node`` process,
  one frame at a time, and prints the accuracy against the bag's ground truth
  (``image/ground_truth``, written by ``fillcls-camera`` for procedural frames); on a sequence bag
  also the per-frame vs fused (tracked) figures of :mod:`fillcls.seqeval` per kind: accuracy,
  flicker, delay after a true change, identity switches;
* ``fillcls-bag info BAG`` lists the topics and message counts (and the sequences).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from rosbags.rosbag2 import Reader, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from .processes import node_params

FILLCLS_TYPES = ("fillcls_msgs/msg/FillingLevel", "fillcls_msgs/msg/FillingLevelArray")
SEQUENCES_KEY = "fillcls_sequences"  # bag metadata (custom_data) key of a sequence bag's sequences
SEQUENCE_START_S = 1.0  # stamp of a sequence bag's first frame (0 would read as "no stamp")
SEQUENCE_GAP_S = 1.0  # seconds between two sequences of a bag
SEQUENCE_TOPICS = {"/image": "sensor_msgs/msg/Image", "/depth": "sensor_msgs/msg/Image",
                   "/camera_info": "sensor_msgs/msg/CameraInfo",
                   "/image/ground_truth": "fillcls_msgs/msg/FillingLevelArray"}


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


def frame_stamp_ns(start_ns: int, index: int, fps: float) -> int:
    """Stamp (ns) of frame ``index`` of a sequence that starts at ``start_ns``."""
    return int(start_ns) + round(index * 1e9 / fps)


def sequence_truth(header, objects: list[dict]):
    """The ground truth of a sequence frame (see the module docstring) as a FillingLevelArray."""
    from fillcls_msgs.msg import FillingLevel, FillingLevelArray
    from sensor_msgs.msg import RegionOfInterest

    from fillcls.spec import CLASSES, LEVEL_PERCENT

    out = FillingLevelArray(header=header, model_id="ground_truth")
    for o in objects:
        level = CLASSES.index(o["level"])
        x0, y0, x1, y1 = (int(v) for v in o["box"])
        probs = [0.0] * len(CLASSES)
        probs[level] = 1.0
        percentage = 100.0 * float(o["fill_fraction"]) if math.isfinite(LEVEL_PERCENT[level]) else math.nan
        out.containers.append(FillingLevel(
            level=level, percentage=percentage, confidence=1.0, probabilities=probs,
            roi=RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0, height=y1 - y0),
            segmentation_score=1.0, track_id=int(o["object_id"])))
    return out


def _frame_messages(seq, frame, header) -> dict:
    """The messages of one sequence frame, by topic."""
    from sensor_msgs.msg import CameraInfo, Image

    from fillcls.image_codec import rgb_to_image_fields, uint8_field

    cam = seq.camera
    depth = frame.depth.astype("<f4")
    return {
        "/image": Image(header=header, **rgb_to_image_fields(frame.rgb)),
        "/depth": Image(header=header, height=depth.shape[0], width=depth.shape[1], encoding="32FC1",
                        is_bigendian=0, step=depth.shape[1] * 4, data=uint8_field(depth)),
        "/camera_info": CameraInfo(header=header, width=cam.width, height=cam.height, distortion_model="plumb_bob",
                                   d=[0.0] * 5, k=[float(v) for v in cam.K], r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
                                   p=[cam.fx, 0.0, cam.cx, 0.0, 0.0, cam.fy, cam.cy, 0.0, 0.0, 0.0, 1.0, 0.0]),
        "/image/ground_truth": sequence_truth(header, frame.objects),
    }


def record_sequences(path, kinds, n: int = 1, frames: int = 30, fps: float = 5.0, seed: int = 0,
                     split: str = "S1", width: int = 640, height: int = 480, frame_id: str = "camera",
                     log=print) -> list[dict]:
    """Render ``n`` sequences of each of ``kinds`` (seeds ``seed``, ``seed + 1``, ...) of ``split``'s
    test containers into a new bag at ``path`` (see the module docstring); returns its sequences."""
    from builtin_interfaces.msg import Time
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Header

    from fillcls.world.containers import SPLITS
    from fillcls.world.sequences import make_sequence

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path}: bag already exists; choose a new path")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    plans = [make_sequence(k, seed + i, SPLITS[split], frames, fps, width, height) for k in kinds for i in range(n)]
    store = typestore()
    writer = Writer(path, version=9)
    writer.open()
    conns = {t: writer.add_connection(t, m, typestore=store) for t, m in SEQUENCE_TOPICS.items()}
    start_ns = round(SEQUENCE_START_S * 1e9)
    spans = [frame_stamp_ns(0, len(q), q.fps) + round(SEQUENCE_GAP_S * 1e9) for q in plans]
    sequences, log_ns = [], start_ns
    try:
        for k, seq in enumerate(plans):
            first = start_ns + sum(spans[k + 1:])  # header stamps: the later sequences' come first
            for frame in seq:
                stamp = frame_stamp_ns(first, frame.index, seq.fps)
                header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=frame_id)
                for topic, msg in _frame_messages(seq, frame, header).items():
                    writer.write(conns[topic], log_ns + stamp - first, serialize_message(msg))
            sequences.append({"kind": seq.kind, "seed": seq.seed, "fps": seq.fps, "frames": len(seq),
                              "start_ns": first, "split": split})
            log(f"{seq.kind} seed {seq.seed}: {len(seq)} frames")
            log_ns += spans[k]
        writer.set_custom_data(SEQUENCES_KEY, json.dumps(sequences))
    finally:
        writer.close()
    return sequences


def bag_sequences(path) -> list[dict]:
    """The sequences of a bag written by :func:`record_sequences` (its metadata); [] for another bag."""
    from ruamel.yaml import YAML  # rosbags' own YAML reader

    meta = Path(path) / "metadata.yaml"
    if not meta.is_file():
        raise FileNotFoundError(f"{path}: no such bag (no metadata.yaml)")
    try:
        info = YAML(typ="safe").load(meta.read_text())["rosbag2_bagfile_information"]
        text = (info.get("custom_data") or {}).get(SEQUENCES_KEY)
    except Exception as exc:
        raise ValueError(f"{meta}: not a rosbag2 metadata file: {exc}") from None
    if not text:
        return []
    try:
        sequences = json.loads(text)
        for s in sequences:
            if not (isinstance(s["kind"], str) and float(s["fps"]) > 0 and int(s["frames"]) >= 1):
                raise ValueError(f"bad sequence {s!r}")
            int(s["start_ns"])
        return sequences
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path}: metadata {SEQUENCES_KEY} is not a list of sequences "
                         f"(kind, fps, frames, start_ns): {exc}") from None


def sequence_runs(sequences: list[dict], truth: dict, answers: dict) -> list:
    """:class:`fillcls.seqeval.Run` s of a sequence bag: ground-truth and answer FillingLevelArrays by stamp."""
    from fillcls.evaluation import roi_box
    from fillcls.seqeval import Answer, Run, Truth
    from fillcls.spec import LEVEL_PERCENT

    def settled(c) -> bool:
        nominal = LEVEL_PERCENT[c.level]
        return not (math.isfinite(nominal) and math.isfinite(c.percentage)) or abs(c.percentage - nominal) < 0.01

    runs = []
    for s in sequences:
        run = Run(s["kind"], float(s["fps"]), int(s["frames"]))
        for i in range(run.n_frames):
            key = frame_stamp_ns(s["start_ns"], i, run.fps)
            if key not in truth:
                continue
            got = answers[key].containers if key in answers else []
            run.add_frame(i, [Truth(int(c.track_id), int(c.level), settled(c), roi_box(c.roi))
                              for c in truth[key].containers],
                          [Answer(roi_box(c.roi), int(c.level), int(c.fused_level) if c.track_id else -1,
                                  int(c.track_id) or None) for c in got])
        runs.append(run)
    return runs


def sequence_report(sequences: list[dict], truth: dict, answers: dict, log=print) -> list[dict]:
    """Log and return the per-kind figures of :mod:`fillcls.seqeval` of a replayed sequence bag."""
    from fillcls.seqeval import markdown, summarise_all

    rows = summarise_all(sequence_runs(sequences, truth, answers))
    tracked = any(c.track_id for m in answers.values() for c in m.containers)
    log("\nper-frame vs fused (tracked) level, per sequence kind:\n" + markdown(rows)
        + ("" if tracked else "(no track ids in the answers: is the node's tracking parameter off?)"))
    return rows


def evaluate_bag(path, image_topic: str, truth_topic: str, params: dict, timeout: float = 10.0,
                 log=print) -> dict:
    """Replay ``image_topic`` of bag ``path`` through a fillcls-node process; score vs ``truth_topic``.

    Frames are sent one at a time and the next one only after the answer (or ``timeout``), so the
    result does not depend on the machine's speed. Returns :meth:`Scoreboard.summary` plus ``sent``
    and, for a bag of :func:`record_sequences`, ``sequences``: the rows of :func:`sequence_report`.
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
        sequences = bag_sequences(path)
        if sequences:
            summary["sequences"] = sequence_report(sequences, truth, answers, log)
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
    p = sub.add_parser("record-sequences", help="render procedural videos with their true level per frame "
                       "(and depth, camera_info) into a new bag")
    p.add_argument("bag", help="new rosbag2 directory")
    p.add_argument("--kinds", default="", help="comma-separated sequence kinds (default: all of "
                   "fillcls.world.sequences.KINDS)")
    p.add_argument("--n", type=int, default=1, help="sequences per kind; seeds SEED, SEED+1, ... (default 1)")
    p.add_argument("--frames", type=int, default=30, help="frames per sequence (default 30)")
    p.add_argument("--fps", type=float, default=5.0, help="frame rate of the sequences (default 5)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--split", default="S1", help="render this split's test containers (default S1)")
    p.add_argument("--width", type=int, default=640, help="frame width (default 640)")
    p.add_argument("--height", type=int, default=480, help="frame height (default 480)")
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
            for q in bag_sequences(args.bag):
                print(f"sequence {q['kind']} seed {q.get('seed', '?')}: {q['frames']} frames at {q['fps']:g} fps")
            return 0
        if args.cmd == "record-sequences":
            from fillcls.world.sequences import KINDS

            kinds = [k.strip() for k in args.kinds.split(",") if k.strip()] or list(KINDS)
            record_sequences(args.bag, kinds, args.n, args.frames, args.fps, args.seed, args.split, args.width,
                             args.height)
            print(f"wrote {args.bag}")
            return 0
        params = node_params(args.model, args.segmentation_backend)
        s = evaluate_bag(args.bag, args.image_topic, args.truth_topic, params, args.timeout)
        return 0 if s["frames"] else 1
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as exc:
        print(f"fillcls-bag: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
