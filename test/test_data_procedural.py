"""Procedural C-CCM-like data: geometry, determinism, labels, frames, datasets, cache."""

import numpy as np
import pytest
import torch

from fillcls.core import CLASSES, crop_square, resize_uint8
from training import data as D
from training.data import procedural as P

UNKNOWN = CLASSES.index("unknown")


# ---------------------------------------------------------------- geometry


def test_cone_half_volume_is_filled_to_79_percent_of_its_height():
    cone = P.Profile(lambda h: h)
    assert cone.fill_height(0.5) == pytest.approx(0.5 ** (1 / 3), abs=1e-4)  # ~0.794
    assert cone.fill_height(0.9) == pytest.approx(0.9 ** (1 / 3), abs=1e-4)
    assert cone.volume_fraction(0.5) == pytest.approx(0.125, abs=1e-4)
    # the cocktail glass is (almost) a cone
    assert D.CONTAINERS["C8"].profile.fill_height(0.5) == pytest.approx(0.5 ** (1 / 3), abs=0.01)


def test_cylinder_and_frustum_fill_heights():
    cyl = P.Profile(lambda h: np.ones_like(h))
    for f in (0.0, 0.25, 0.5, 0.9, 1.0):
        assert cyl.fill_height(f) == pytest.approx(f, abs=1e-4)
    # frustum r = 0.5 + 0.5 h: V(h) = ((0.5 + 0.5 h)^3 - 0.125) / (1 - 0.125)
    fr = P.Profile(lambda h: 0.5 + 0.5 * h)
    h = fr.fill_height(0.5)
    assert ((0.5 + 0.5 * h) ** 3 - 0.125) / 0.875 == pytest.approx(0.5, abs=1e-4)
    assert h > 0.5  # wider at the top: more volume up there, so half of it is reached above mid-height


def test_every_container_fills_monotonically():
    for spec in D.CONTAINERS.values():
        h50, h90 = spec.profile.fill_height(0.5), spec.profile.fill_height(0.9)
        assert 0 < h50 < h90 < 1, spec.id
        assert spec.profile.volume_fraction(h50) == pytest.approx(0.5, abs=1e-3)
    # a flute narrows towards the bottom: half its volume is well above half its height
    assert D.CONTAINERS["C6"].profile.fill_height(0.5) > 0.6


# ---------------------------------------------------------------- containers and splits


def test_containers_splits_and_counts():
    names = ["red cup", "small white cup", "small transparent cup", "green glass", "wine glass",
             "champagne flute", "beer cup", "cocktail glass"]
    assert [D.CONTAINERS[f"C{i + 1}"].name for i in range(8)] == names
    assert [c for c, s in D.CONTAINERS.items() if not s.transparent] == ["C1", "C2"]
    assert D.split_containers("S1") == (("C1", "C2", "C3", "C4", "C5"), ("C6", "C7", "C8"))
    assert D.split_containers("S3")[1] == ("C1", "C4", "C7")
    assert sum(D.CCM_CONTAINER_COUNTS.values()) == sum(D.CCM_CLASS_COUNTS.values()) == 10216
    with pytest.raises(ValueError):
        D.split_containers("S4")


def test_plan_follows_ccm_proportions():
    pairs = D.plan(10216, seed=3)
    by_c = {c: sum(1 for p in pairs if p[0] == c) for c in D.CONTAINERS}
    assert by_c == D.CCM_CONTAINER_COUNTS
    classes = {k: 0 for k in CLASSES}
    for c, lvl in pairs:
        classes["unknown" if not D.CONTAINERS[c].transparent else lvl] += 1
    for k, ref in D.CCM_CLASS_COUNTS.items():
        assert abs(classes[k] - ref) <= 0.01 * 10216, (k, classes[k], ref)
    assert D.plan(50, seed=3) == D.plan(50, seed=3) != D.plan(50, seed=4)
    assert {c for c, _ in D.plan(100, containers=["C6", "C7"])} == {"C6", "C7"}


# ---------------------------------------------------------------- crops


def test_render_crop_is_deterministic_and_uses_the_node_preprocessing():
    a, ma = D.render_crop(7, 48)
    b, mb = D.render_crop(7, 48)
    c, _ = D.render_crop(8, 48)
    assert a.shape == (3, 48, 48) and a.dtype == torch.uint8
    assert torch.equal(a, b) and ma == mb
    assert not torch.equal(a, c)
    # size=None gives the square crop before the resize; size=112 is resize_uint8 of it
    native, _ = D.render_crop(11, None)
    small, _ = D.render_crop(11, 112)
    assert native.shape[1] == native.shape[2] >= 40
    assert torch.equal(small, resize_uint8(native, 112))


def test_opaque_containers_are_always_unknown():
    for cid in ("C1", "C2"):
        for i, level in enumerate((None, "empty", "half", "full", "unknown")):
            _, m = D.render_crop(100 + i, 32, container=cid, level=level)
            assert m["label"] == UNKNOWN and m["level"] == "unknown" and not m["transparent"]
            if level in P.LEVEL_FRACTIONS:  # the hidden content is still annotated
                assert m["fill_fraction"] == P.LEVEL_FRACTIONS[level]


def test_transparent_labels_match_levels():
    for i, level in enumerate(("empty", "half", "full")):
        for cid in ("C3", "C6", "C8"):
            _, m = D.render_crop(i, 32, container=cid, level=level)
            assert m["label"] == CLASSES.index(level) and m["level"] == level
            assert m["fill_fraction"] == P.LEVEL_FRACTIONS[level]
            assert (m["filling"] == "none") == (level == "empty")
    with pytest.raises(ValueError):
        D.render_crop(0, 32, container="C5", level="unknown")


def test_hand_occlusion_is_annotated():
    _, with_hand = D.render_crop(5, 48, container="C7", hand=True)
    _, without = D.render_crop(5, 48, container="C7", hand=False)
    assert with_hand["occluded"] and 0 < with_hand["occlusion"] < 1
    assert not without["occluded"] and without["occlusion"] == 0


# ---------------------------------------------------------------- frames


def test_render_frame_masks_boxes_and_restrictions():
    rgb, anns = D.render_frame(4, width=320, height=240, containers=["C6", "C7", "C8"], n_containers=3)
    assert rgb.shape == (240, 320, 3) and rgb.dtype == np.uint8
    assert 1 <= len(anns) <= 3
    union = np.zeros((240, 320), int)
    for a in anns:
        assert a["container"] in ("C6", "C7", "C8")
        m = a["mask"]
        assert m.shape == (240, 320) and m.dtype == bool and m.any()
        ys, xs = np.nonzero(m)
        assert a["box"] == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert 0 <= a["occlusion"] <= 1 and a["occluded"] == (a["occlusion"] > 0)
        assert set(a) >= {"label", "level", "filling", "fill_fraction", "transparent", "view"}
        union += m
    assert union.max() == 1  # containers never overlap
    again, anns2 = D.render_frame(4, width=320, height=240, containers=["C6", "C7", "C8"], n_containers=3)
    assert np.array_equal(rgb, again) and [a["box"] for a in anns] == [a["box"] for a in anns2]


def test_empty_frame_and_crop_from_frame():
    rgb, anns = D.render_frame(1, width=160, height=120, n_containers=0)
    assert rgb.shape == (120, 160, 3) and anns == []
    rgb, anns = D.render_frame(2, n_containers=1, containers=["C1"])
    assert anns[0]["label"] == UNKNOWN
    crop = resize_uint8(crop_square(rgb, anns[0]["box"]), 32)
    assert crop.shape == (3, 32, 32)


# ---------------------------------------------------------------- datasets


def test_make_cropset_determinism_labels_and_splits():
    cs = D.make_cropset(40, 24, seed=5)
    assert cs.images.shape == (40, 3, 24, 24) and len(cs.meta) == 40
    assert torch.equal(cs.images, D.make_cropset(40, 24, seed=5).images)
    assert not torch.equal(cs.images, D.make_cropset(40, 24, seed=6).images)
    for y, c, m in zip(cs.labels.tolist(), cs.containers, cs.meta):
        assert m["container"] == c and m["label"] == y
        assert (y == UNKNOWN) == (not D.CONTAINERS[c].transparent)
    train, test = D.split_cropset(cs, "S2")
    assert len(train) + len(test) == 40
    assert set(test.containers) <= {"C5", "C6", "C8"} and not set(train.containers) & {"C5", "C6", "C8"}
    only = D.make_cropset(10, 16, seed=1, containers=["C6"])
    assert set(only.containers) == {"C6"}


def test_parallel_generation_gives_the_same_bytes():
    serial = D.make_cropset(130, 16, seed=2, workers=1)
    parallel = D.make_cropset(130, 16, seed=2, workers=2)
    assert torch.equal(serial.images, parallel.images)
    assert serial.meta == parallel.meta


def test_cache_is_written_and_reused(tmp_path, monkeypatch):
    cs = D.make_cropset(12, 16, seed=9, cache_dir=str(tmp_path))
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1

    def boom(*a, **k):
        raise AssertionError("regenerated despite the cache")

    monkeypatch.setattr(P, "render_crop", boom)
    again = D.make_cropset(12, 16, seed=9, cache_dir=str(tmp_path))
    assert torch.equal(cs.images, again.images) and cs.containers == again.containers
    assert cs.meta == again.meta and torch.equal(cs.labels, again.labels)
    with pytest.raises(AssertionError):  # another key is not served from the cache
        D.make_cropset(12, 16, seed=10, cache_dir=str(tmp_path))
