"""`fillcls-demo` and `fillcls-bag` end to end: camera, node and probe as real ROS 2 processes (issue 7).

A random 32 px classifier, run by onnxruntime (the node's CPU default), keeps this fast; the accuracy it gets is meaningless, the plumbing is not:
every streamed frame must be answered and scored, the bag must hold every topic, and the offline
replay must score the same frames again.
"""

import re

from fillcls_ros.bag import bag_info
from rosutil import run_console

FRAMES = 6


def test_demo_streams_scores_records_and_replays(tmp_path, tiny_onnx):
    bag, png = tmp_path / "demo_bag", tmp_path / "debug.png"
    rc, out = run_console("fillcls-demo", "--frames", str(FRAMES), "--rate", "2", "--split", "S2",
                  "--model", tiny_onnx, "--segmentation-backend", "threshold", "--width", "320",
                  "--height", "240", "--record", str(bag), "--debug-image", str(png))
    assert rc == 0, out
    assert "split S2's test containers C5, C6, C8" in out  # the tiny model says nothing of its training
    # best effort, depth 1: a busy node may skip a frame, never answer one twice or lose the count
    streamed = re.search(r"frames streamed: (\d+), answered: (\d+)", out)
    assert streamed and int(streamed.group(1)) == FRAMES, out
    answered = int(streamed.group(2))
    assert FRAMES // 2 <= answered <= FRAMES, out
    assert len(re.findall(r"^frame\s+\d+ .*truth", out, re.M)) == answered, out
    m = re.search(r"frames answered: (\d+), containers: (\d+)", out)
    assert m and int(m.group(1)) == answered and int(m.group(2)) >= answered, out
    acc = re.search(r"accuracy: ([\d.]+) %", out)
    assert acc and 0 <= float(acc.group(1)) <= 100
    assert re.search(r"rate: [\d.]+ frames/s; latency \(stamp -> answer\): p50 [\d.]+ ms", out)
    assert png.is_file() and png.stat().st_size > 1000

    info = bag_info(bag)
    assert info["/image"] == ("sensor_msgs/msg/Image", FRAMES)
    assert info["/image/ground_truth"] == ("fillcls_msgs/msg/FillingLevelArray", FRAMES)
    assert info["/filling_level"][1] == answered

    # the replay sends one frame at a time and waits for its answer: every frame is scored
    rc, out = run_console("fillcls-bag", "evaluate", str(bag), "--model", tiny_onnx,
                  "--segmentation-backend", "threshold")
    assert rc == 0, out
    assert f"frames answered: {FRAMES}," in out, out
    assert re.search(r"accuracy: [\d.]+ %", out)


def test_demo_names_a_missing_source_and_model(tmp_path):
    rc, out = run_console("fillcls-demo", "--source", str(tmp_path / "nope"))
    assert rc == 2 and "nope: no such file or folder" in out
    rc, out = run_console("fillcls-demo", "--model", str(tmp_path / "missing.pt"), "--frames", "1")
    assert rc == 1 and "missing.pt" in out


def test_demo_says_which_test_containers_the_model_saw():
    from fillcls_ros.demo import describe_containers, seen_containers

    default_s1 = {"split": "S1", "data": {"data": "synthetic"}}  # the shipped model's training record
    seen = seen_containers(default_s1)
    assert seen == ("C1", "C2", "C3", "C4", "C5")
    assert describe_containers("S3", seen) == \
        "split S3's test containers C1 (seen in training), C4 (seen in training), C7 (unseen)"
    assert "unseen" not in describe_containers("S1", ())
    assert seen_containers({"split": "S1", "data": {"data": "manifest.csv"}}) == ()  # real data: unknown


def test_demo_counts_the_frames_a_folder_has(tmp_path):
    import numpy as np
    import cv2

    from fillcls_ros.demo import source_frames

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    assert source_frames(str(tmp_path), 60) == "3 frames (all of the source)"
    assert source_frames("procedural", 60) == "60 frames"
