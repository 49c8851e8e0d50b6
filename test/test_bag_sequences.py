"""`fillcls-bag record-sequences` and `fillcls-bag evaluate` on its bag (issue 18): topics, counts,
ground truth with identities and true percentages, and the fused figures of a node (tiny model)."""

import math
import re

from fillcls_msgs.msg import FillingLevelArray
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CameraInfo, Image

from fillcls_ros.bag import bag_sequences, main
from rosutil import run_console

FRAMES = 6


def _messages(bag, topic, cls):
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return [(t, deserialize_message(bytes(raw), cls)) for _, t, raw in reader.messages(connections=conns)]


def test_record_sequences_and_evaluate_the_fused_level(tmp_path, tiny_onnx):
    bag = tmp_path / "seq_bag"
    rc, out = run_console("fillcls-bag", "record-sequences", str(bag), "--kinds", "filling,static", "--frames",
                  str(FRAMES), "--width", "160", "--height", "120")
    assert rc == 0, out
    n = 2 * FRAMES
    with Reader(bag) as reader:
        counts = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
    assert counts == {"/image": ("sensor_msgs/msg/Image", n), "/depth": ("sensor_msgs/msg/Image", n),
                      "/camera_info": ("sensor_msgs/msg/CameraInfo", n),
                      "/image/ground_truth": ("fillcls_msgs/msg/FillingLevelArray", n)}
    seq, static = bag_sequences(bag)
    assert (seq["kind"], seq["seed"], seq["fps"], seq["frames"]) == ("filling", 0, 5.0, FRAMES)
    assert static["kind"] == "static" and static["frames"] == FRAMES

    truth = _messages(bag, "/image/ground_truth", FillingLevelArray)
    images = _messages(bag, "/image", Image)
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in truth]
    assert [t for t, _ in truth] == [t for t, _ in images] == sorted(t for t, _ in truth)  # bag time runs on
    # header stamps: 5 fps within a sequence; the clock goes back to the next one (a tracker resets)
    assert stamps[:FRAMES] == [seq["start_ns"] + i * 200_000_000 for i in range(FRAMES)]
    assert stamps[FRAMES:] == [static["start_ns"] + i * 200_000_000 for i in range(FRAMES)]
    assert 0 < stamps[-1] < stamps[0]
    truth = truth[:FRAMES]  # the filling sequence
    assert images[0][1].encoding == "rgb8" and (images[0][1].width, images[0][1].height) == (160, 120)
    levels = [[c.level for c in m.containers] for _, m in truth]
    assert levels[0] == [0] and levels[-1] == [2]  # empty -> full
    assert {c.track_id for _, m in truth for c in m.containers} == {1}  # the true identity
    percentages = [m.containers[0].percentage for _, m in truth]
    assert percentages[0] == 0.0 and math.isclose(percentages[-1], 90.0, rel_tol=1e-6)
    settled = sum(p in (0.0, 50.0) or math.isclose(p, 90.0, rel_tol=1e-6) for p in percentages)
    assert 2 <= settled < FRAMES  # the other frames are pours: between two levels
    depth = _messages(bag, "/depth", Image)[0][1]
    assert depth.encoding == "32FC1" and depth.step == 160 * 4 and len(depth.data) == 160 * 120 * 4
    info = _messages(bag, "/camera_info", CameraInfo)[0][1]
    assert info.k[0] > 0 and info.k[8] == 1.0 and info.width == 160

    rc, out = run_console("fillcls-bag", "info", str(bag))
    assert rc == 0 and f"sequence filling seed 0: {FRAMES} frames at 5 fps" in out, out
    assert f"sequence static seed 0: {FRAMES} frames at 5 fps" in out, out

    # a random tiny classifier: the figures are meaningless, the plumbing is not
    rc, out = run_console("fillcls-bag", "evaluate", str(bag), "--model", tiny_onnx, "--segmentation-backend", "full_frame")
    assert rc == 0, out
    assert f"frames answered: {n}," in out, out
    assert "per-frame vs fused (tracked) level" in out and "no track ids" not in out, out
    row = re.search(r"^\| filling x1 \| (\d+) \| ([\d.]+) % \| ([\d.]+) % \| ([\d.]+) \| ([\d.]+) \| 2 \| .* \| (\d+) \|$",
                    out, re.M)
    assert row, out
    assert int(row.group(1)) == settled  # the pour frames are not scored
    assert int(row.group(6)) == 0  # full_frame: one box, one track
    static_row = re.search(r"^\| static x1 \| (\d+) \| .* \| 0 \| - \| - \| (\d+) \|$", out, re.M)
    assert static_row and int(static_row.group(1)) == FRAMES, out
    assert int(static_row.group(2)) == 0  # the clock went back: a new track from the first frame on


def test_record_sequences_names_bad_arguments(tmp_path, capsys):
    bag = tmp_path / "bad"
    assert main(["record-sequences", str(bag), "--kinds", "filling,pouring"]) == 1
    assert "unknown sequence kind 'pouring'" in capsys.readouterr().err and not bag.exists()
    assert main(["record-sequences", str(bag), "--split", "S9"]) == 1
    assert "split must be one of" in capsys.readouterr().err and not bag.exists()
    bag.mkdir()
    assert main(["record-sequences", str(bag), "--kinds", "static", "--frames", "2"]) == 1
    assert "already exists" in capsys.readouterr().err
