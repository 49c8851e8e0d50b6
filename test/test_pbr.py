"""fillcls.world.pbr: the Mitsuba 3 renderer on tiny renders (48 px, 4 samples per pixel)."""

import math

import numpy as np
import pytest

pytest.importorskip("mitsuba")

from fillcls.core import CLASSES  # noqa: E402
from fillcls.world import pbr  # noqa: E402
from fillcls.world.pbr_scene import blob_mesh  # noqa: E402
from fillcls.world.pbr_mesh import body_profile, content_profile, dims, fill_level_y, lathe  # noqa: E402
from fillcls.world.render import CONTAINERS  # noqa: E402


def _volume(geometry):
    """Signed volume of a closed triangle mesh (divergence theorem): > 0 if normals point out."""
    v, f, _ = geometry
    a, b, c = (v[f[:, k]].astype(np.float64) for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


@pytest.mark.parametrize("cid", ["C4", "C5", "C8"])
def test_meshes_closed_outward_and_fill_by_volume(cid):
    spec = CONTAINERS[cid]
    assert _volume(lathe(body_profile(spec)[0])) > 0  # the glass solid, normals out
    d = dims(spec)
    full = _volume(lathe(content_profile(spec, d.height - 1e-6)))
    for fraction in (0.5, 0.9):
        part = _volume(lathe(content_profile(spec, fill_level_y(spec, fraction))))
        assert part / full == pytest.approx(fraction, abs=0.03)
    dry, wet = body_profile(spec, fill_level_y(spec, 0.5))
    assert len(wet) > 1 and wet[0][1] == pytest.approx(fill_level_y(spec, 0.5))


def test_crop_deterministic_and_labelled():
    a, meta = pbr.render_crop_pbr(3, 48, "C5", "half", "water", spp=4, backdrops="procedural")
    b, _ = pbr.render_crop_pbr(3, 48, "C5", "half", "water", spp=4, backdrops="procedural")
    c, _ = pbr.render_crop_pbr(4, 48, "C5", "half", "water", spp=4, backdrops="procedural")
    assert a.shape == (3, 48, 48) and a.dtype.is_floating_point is False
    assert bool((a == b).all()) and not bool((a == c).all())
    assert meta["container"] == "C5" and meta["level"] == "half" and meta["label"] == CLASSES.index("half")
    assert meta["filling"] == "water" and meta["fill_fraction"] == 0.5 and meta["transparent"]
    opaque, m = pbr.render_crop_pbr(1, 48, "C1", "full", "rice", spp=4, backdrops="procedural")
    assert m["level"] == "unknown" and m["label"] == CLASSES.index("unknown") and m["fill_fraction"] == 0.9


def test_frame_masks_boxes_and_projection():
    plan = pbr.plan_frame(2, 64, 48, ["C2", "C7"], 2, backdrops="procedural")
    rgb, anns = pbr.render_plan(plan, 4)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    assert 1 <= len(anns) <= 2
    for ann in anns:
        x0, y0, x1, y1 = ann["box"]
        mask = ann["mask"]
        assert mask.shape == (48, 64) and mask.any()
        assert not mask[:y0].any() and not mask[y1:].any() and not mask[:, :x0].any() and not mask[:, x1:].any()
        assert mask[y0].any() and mask[y1 - 1].any() and mask[:, x0].any() and mask[:, x1 - 1].any()
        assert ann["label"] == CLASSES.index(ann["level"])
        assert (ann["level"] == "unknown") == (not ann["transparent"])
    item = plan["items"][0]
    uv = pbr.project(pbr._outline(item), plan["camera"], 64, 48)
    box = anns[0]["box"]
    assert math.isclose(uv[:, 0].min(), box[0], abs_tol=2.5) and math.isclose(uv[:, 1].max(), box[3], abs_tol=2.5)


def test_hands_hold_and_occlude_without_changing_the_rest():
    plain = pbr.plan_frame(5, 80, 60, ["C5"], 1, backdrops="procedural")
    held = pbr.plan_frame(5, 80, 60, ["C5"], 1, backdrops="procedural", hands=1.0)
    assert held["items"][0]["hand"] and "hand" not in plain["items"][0]
    assert held["camera"] == plain["camera"] and held["seed"] == plain["seed"]  # the rest of the plan is the same
    rgb0, (a0,) = pbr.render_plan(plain, 4)
    rgb1, (a1,) = pbr.render_plan(held, 4)
    again, (a2,) = pbr.render_plan(pbr.plan_frame(5, 80, 60, ["C5"], 1, backdrops="procedural", hands=1.0), 4)
    assert (again == rgb1).all() and a2["occlusion"] == a1["occlusion"]  # deterministic
    assert (a1["mask"] == a0["mask"]).all() and a1["box"] == a0["box"]  # the silhouette, hidden part included
    assert a0["occlusion"] == 0 and not a0["occluded"]
    assert 0.05 < a1["occlusion"] < 0.9 and a1["occluded"]
    assert np.abs(rgb1.astype(int) - rgb0).mean() > 3  # the hand is drawn
    assert all(_volume(blob_mesh(b)) > 0 for b in held["items"][0]["hand"]["blobs"])  # faces point outwards


def test_hands_sheet_command(tmp_path):
    import cv2

    from training.data.__main__ import main

    out = tmp_path / "hands.png"
    assert main(["contact-sheet", "--renderer", "pbr", "--hands", "1", "--spp", "1", "--out", str(out)]) == 0
    assert cv2.imread(str(out)).shape == (360, 720, 3)  # 2 x 3 frames of 240 x 180


def test_cropset_cache_and_errors(tmp_path):
    imgs, labels, metas = pbr.make_cropset_pbr(2, 32, seed=1, containers=["C3"], spp=2, backdrops="procedural",
                                               cache_dir=tmp_path)
    assert imgs.shape == (2, 3, 32, 32) and len(metas) == 2 and list(tmp_path.glob("pbr_*.npz"))
    again, labels2, _ = pbr.make_cropset_pbr(2, 32, seed=1, containers=["C3"], spp=2, backdrops="procedural",
                                             cache_dir=tmp_path)
    assert bool((again == imgs).all()) and bool((labels2 == labels).all())
    with pytest.raises(ValueError, match="C9"):
        pbr.render_crop_pbr(0, 32, "C9")
    with pytest.raises(ValueError, match="transparent"):
        pbr.render_crop_pbr(0, 32, "C5", "unknown")
    with pytest.raises(ValueError, match="backdrops"):
        pbr.render_crop_pbr(0, 32, "C5", backdrops="moon")


def test_generate_pbr_manifest_and_frameset(tmp_path):
    """`python -m training.data generate --renderer pbr` writes a manifest the trainer loads;
    make_frameset_pbr returns frames, foreground masks and boxes, cached per chunk."""
    from training.data import load_manifest
    from training.data.__main__ import main

    out = tmp_path / "pbr"
    assert main(["generate", "--renderer", "pbr", "--n", "2", "--size", "32", "--spp", "2", "--containers", "C4",
                 "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    crops = load_manifest(str(out / "manifest.csv"), 32)
    assert crops.images.shape == (2, 3, 32, 32) and set(m["container"] for m in crops.meta) == {"C4"}
    assert main(["generate", "--renderer", "pbr", "--n", "2", "--out", str(out)]) == 2  # needs --size
    assert main(["generate", "--n", "3", "--size", "32", "--containers", "C1", "--out", str(tmp_path / "p")]) == 0
    mix = tmp_path / "mix" / "manifest.csv"
    assert main(["merge", str(mix), str(out / "manifest.csv"), str(tmp_path / "p" / "manifest.csv")]) == 0
    both = load_manifest(str(mix), 32)
    assert len(both) == 5 and bool((both.images[:2] == crops.images).all())
    assert main(["merge", str(mix), str(tmp_path / "none.csv")]) == 2

    frames, fgs, boxes = pbr.make_frameset_pbr(2, ["C2"], seed=3, spp=2, width=64, height=48, n_containers=(1, 1),
                                               backdrops="procedural", cache_dir=tmp_path / "frames")
    assert frames.shape == (2, 48, 64, 3) and fgs.shape == (2, 48, 64) and len(boxes) == 2
    for fg, bx in zip(fgs, boxes):
        assert len(bx) == 1 and fg.any() == bool(bx)
        x0, y0, x1, y1 = bx[0]
        assert fg[y0:y1, x0:x1].sum() == fg.sum()
    again = pbr.make_frameset_pbr(2, ["C2"], seed=3, spp=2, width=64, height=48, n_containers=(1, 1),
                                  backdrops="procedural", cache_dir=tmp_path / "frames")
    assert (again[0] == frames).all() and len(list((tmp_path / "frames").glob("*.npz"))) == 1
