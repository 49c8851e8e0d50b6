"""Tracks, fused levels and 3-D positions from the node process, on a rendered sequence with depth."""

import signal
import statistics

import numpy as np
from builtin_interfaces.msg import Time
from fillcls_msgs.msg import FillingLevelArray
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from fillcls.world.sequences import make_sequence
from rosutil import NodeProcess, image_msg, publish_until, spin_until


def _depth_msg(depth: np.ndarray, stamp: Time) -> Image:
    m = Image(height=depth.shape[0], width=depth.shape[1], encoding="32FC1", is_bigendian=0,
              step=depth.shape[1] * 4, data=np.ascontiguousarray(depth, np.float32).tobytes())
    m.header.stamp, m.header.frame_id = stamp, "camera"
    return m


def test_track_ids_fused_levels_and_positions(ros):
    seq = make_sequence("static", 3, n_frames=8, width=320, height=240)
    proc = NodeProcess({"device": "cpu", "depth": True, "max_containers": 3}, extra_args=["-r", "__ns:=/trk"])
    pubs = {t: ros.create_publisher(m, f"/trk/{t}", qos_profile_sensor_data)
            for t, m in (("image", Image), ("depth", Image))}
    info_pub = ros.create_publisher(CameraInfo, "/trk/camera_info", 10)
    got = {}
    sub = ros.create_subscription(FillingLevelArray, "/trk/filling_level",
                                  lambda m: got.__setitem__(m.header.stamp.sec, m), 10)
    try:
        assert proc.wait_for_output("listening on", 60), proc.output
        assert spin_until(ros, lambda: all(p.get_subscription_count() for p in pubs.values())
                          and sub.get_publisher_count() > 0, 20.0)
        truth = {}
        for f in seq:
            sec = 100 + f.index
            stamp = Time(sec=sec)
            info_pub.publish(CameraInfo(k=[float(v) for v in np.ravel(seq.camera.K)], width=320, height=240))
            pubs["depth"].publish(_depth_msg(f.depth, stamp))
            spin_until(ros, lambda: False, 0.1)
            publish_until(ros, pubs["image"], image_msg(f.rgb, sec * 10**9), lambda: sec in got, timeout=10.0)
            truth[sec] = f.objects
        answered = [m for m in got.values() if m.containers]
        assert len(answered) >= 5, proc.output[-2000:]
        ids = {c.track_id for m in answered for c in m.containers}
        assert min(ids) >= 1 and len(ids) <= len(seq.objects) + 1  # one identity per container (+1 spurious)
        errors, trailing = [], {}
        for sec, m in sorted(got.items()):
            for c in m.containers:
                # hysteresis: the fused level may trail the most probable one by more than the margin
                # for fewer than confirm_updates (2) consecutive updates, then it must follow
                gap = max(c.fused_probabilities) - c.fused_probabilities[c.fused_level]
                trailing[c.track_id] = trailing.get(c.track_id, 0) + 1 if gap > 0.2 + 1e-6 else 0
                assert trailing[c.track_id] < 2, (sec, c.track_id, list(c.fused_probabilities), c.fused_level)
                if c.has_position:
                    assert c.position_method in ("opaque", "table", "rim")
                    errors.append(min(np.linalg.norm(np.subtract([c.center.x, c.center.y, c.center.z], o["centre"]))
                                      for o in truth[sec]))
        # metres: the right place in the right units (the estimate's accuracy is test_geometry3d's subject).
        # The frames show one cocktail glass 0.20 m across; the LR-ASPP segmenter's mask of it is 74 of
        # its 100 px wide, which puts the rim estimate 0.10 m off (FillSegNet's fuller mask: closer)
        assert len(errors) >= 5 and statistics.median(errors) < 0.15, errors
        last = max(answered, key=lambda m: m.header.stamp.sec)
        assert max(c.track_frames for c in last.containers) >= 5
    finally:
        ros.destroy_subscription(sub)
        assert proc.stop(signal.SIGINT) == 0, proc.output
