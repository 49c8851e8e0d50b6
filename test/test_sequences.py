"""fillcls.world.sequences: deterministic short videos with per-frame truth and synthetic depth."""

import numpy as np
import pytest

from fillcls.world.sequences import KINDS, make_sequence


def _small(kind, seed=0, **kw):
    return make_sequence(kind, seed, n_frames=kw.pop("n_frames", 20), width=160, height=120, **kw)


def test_deterministic_and_annotated():
    for kind in KINDS:
        a, b = _small(kind).frame(7), _small(kind).frame(7)
        assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth, b.depth)
        assert a.rgb.shape == (120, 160, 3) and a.rgb.dtype == np.uint8 and a.depth.dtype == np.float32
        assert a.stamp_s == pytest.approx(7 / 5.0)
        assert len(a.objects) == (2 if kind == "crossing" else 1)
        for o in a.objects:
            x0, y0, x1, y1 = o["box"]
            assert o["mask"].shape == (120, 160) and o["mask"][y0:y1, x0:x1].any()
            assert o["object_id"] in (1, 2) and o["level"] in ("empty", "half", "full", "unknown")
            assert o["diameter"] > 0 and o["size_height"] > 0 and o["centre"][2] > 0
    assert not np.array_equal(_small("static").frame(0).rgb, _small("static", seed=1).frame(0).rgb)


def test_filling_and_emptying_levels():
    levels = [f.objects[0]["level"] for f in _small("filling", n_frames=30)]
    assert levels[0] == "empty" and levels[-1] == "full" and "half" in levels
    changes = [i for i in range(1, 30) if levels[i] != levels[i - 1]]
    assert len(changes) == 2  # empty -> half -> full, each once
    seq = _small("emptying", n_frames=30)
    fractions = [f.objects[0]["fill_fraction"] for f in seq]
    assert fractions[0] == pytest.approx(0.9) and fractions[-1] == 0.0 and np.all(np.diff(fractions) <= 0)
    settled = [f.objects[0]["settled"] for f in seq]
    assert not all(settled) and settled[0] and settled[-1]


def test_static_carried_crossing_motion():
    static = _small("static")
    f0, f9 = static.frame(0), static.frame(9)
    assert f0.objects[0]["box"] == f9.objects[0]["box"] and not np.array_equal(f0.rgb, f9.rgb)  # sensor noise only
    carried = _small("carried")
    xs = [f.objects[0]["centre"][0] for f in carried]
    assert abs(xs[-1] - xs[0]) > 0.1 and carried.frame(0).objects[0]["occluded"]
    crossing = _small("crossing")
    first = {o["object_id"]: o["centre"][0] for o in crossing.frame(0).objects}
    last = {o["object_id"]: o["centre"][0] for o in crossing.frame(19).objects}
    assert (first[1] - first[2]) * (last[1] - last[2]) < 0  # they swapped sides


def test_depth_sees_through_clear_glass():
    seq = _small("static", containers=("C7",))
    f = seq.frame(0)
    table = seq.camera.background_depth()
    inside = f.objects[0]["mask"] & (f.depth > 0)
    through = np.abs(f.depth[inside] - table[inside]) < 0.02
    assert 0.3 < through.mean() < 1.0  # mostly the table behind, not all: the rim (and contents)
    opaque = _small("static", containers=("C1",)).frame(0)
    inside = opaque.objects[0]["mask"] & (opaque.depth > 0)
    assert (np.abs(opaque.depth[inside] - table[inside]) < 0.02).mean() < 0.1


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown sequence kind"):
        make_sequence("juggling", 0)
    with pytest.raises(ValueError, match="transparent"):
        make_sequence("filling", 0, containers=("C1",))
    with pytest.raises(ValueError, match="2 different"):
        make_sequence("crossing", 0, containers=("C7",))
    with pytest.raises(IndexError):
        _small("static").frame(20)
