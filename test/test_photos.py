"""fillcls.world.photos: the loader on a tiny stand-in index (always runs) and, when `make photos`
has run, sanity checks of the real index."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fillcls.world import photos

VAL_COLOUR = (250, 0, 250)


def _write(root, name, img):
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return name


@pytest.fixture()
def stand_in(tmp_path):
    """Two train backgrounds, one magenta val background, two train and one val cut-out."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(2):
        img = rng.integers(0, 200, (60, 90, 3), dtype=np.uint8)
        rows.append({"file": _write(tmp_path, f"backgrounds/b{i}.jpg", img), "kind": "background", "split": "train"})
    val = np.zeros((50, 80, 3), np.uint8)
    val[:] = VAL_COLOUR[::-1]  # BGR on disk
    rows.append({"file": _write(tmp_path, "backgrounds/v.png", val), "kind": "background", "split": "val"})
    for i, split in enumerate(("train", "train", "val")):
        rgba = np.zeros((30, 20, 4), np.uint8)
        rgba[5:25, 4:16] = (0, 200, 0, 255)
        rows.append({"file": _write(tmp_path, f"cutouts/c{i}.png", rgba), "kind": "cutout", "split": split})
    for r in rows:
        r.update(package="stand-in", licence="CC0-1.0")
    (tmp_path / "index.json").write_text(json.dumps({"version": 1, "photos": rows}))
    return tmp_path


def test_index_and_splits(stand_in):
    assert len(photos.load_index(stand_in)) == 6
    assert [p.split for p in photos.photos("background", "val", stand_in)] == ["val"]
    assert len(photos.photos("cutout", "train", stand_in)) == 2
    assert photos.available(stand_in)


def test_background_crop_deterministic_and_split(stand_in):
    a = photos.background_crop(7, 64, 48, "train", stand_in)
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, photos.background_crop(7, 64, 48, "train", stand_in))
    v = photos.background_crop(3, 32, 24, "val", stand_in)
    assert np.abs(v.astype(int) - VAL_COLOUR).max() <= 2  # only the val photo
    with pytest.raises(ValueError):
        photos.background_crop(0, 0, 10, "train", stand_in)


def test_cutout_paste_and_negative_frame(stand_in):
    c = photos.cutout(1, 40, "train", stand_in)
    assert c.ndim == 3 and c.shape[2] == 4 and 20 <= max(c.shape[:2]) <= 40
    frame = np.zeros((50, 50, 3), np.uint8)
    mask = photos.paste(frame, c, 30, 30)  # clipped at the border
    assert mask.shape == (50, 50) and not mask[:30, :].any() and mask.any()
    assert (frame[mask] > 0).any()
    f, anns = photos.no_container_frame(5, "val", 80, 60, (2, 2), stand_in)
    assert f.shape == (60, 80, 3) and anns == []
    chosen = []
    g, _ = photos.no_container_frame(5, "val", 80, 60, (2, 2), stand_in, chosen=chosen)
    assert np.array_equal(f, g)  # asking which background was drawn changes nothing
    val_backgrounds = [Path(p.path).name for p in photos.photos("background", "val", stand_in)]
    assert len(chosen) == 1 and chosen[0] in val_backgrounds
    avoid = np.zeros((60, 80), bool)
    avoid[20:40, 30:50] = True
    frame = photos.background_crop(0, 80, 60, "train", stand_in)
    before = frame.copy()
    assert photos.paste_distractors(frame, 0, 6, "train", avoid=avoid, root=stand_in) > 0
    assert (frame != before).any(axis=2)[avoid].sum() <= 0.05 * avoid.sum() * 2  # visible + blended edge


def test_missing_and_malformed(tmp_path):
    with pytest.raises(photos.PhotosMissingError, match="make photos"):
        photos.load_index(tmp_path / "nowhere")
    assert not photos.available(tmp_path / "nowhere")
    (tmp_path / "index.json").write_text(json.dumps({"photos": [{"file": "x.png", "kind": "poster", "split": "train"}]}))
    with pytest.raises(photos.PhotoIndexError, match="index.json"):
        photos.load_index(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(photos.PhotoIndexError, match="make photos"):
        photos.load_index(tmp_path)


@pytest.mark.skipif(not photos.available(), reason="data/photos absent: run `make photos`")
def test_real_index():
    """The fetched photos: both kinds in both splits, every file readable, licences recorded."""
    index = photos.load_index()
    data = json.loads((photos.photos_root() / "index.json").read_text())["photos"]
    assert all(row["licence"] and row["package"] for row in data)
    for kind in photos.KINDS:
        for split in photos.SPLITS:
            assert photos.photos(kind, split)
    assert len({p.path for p in index}) == len(index)
    frame, _ = photos.no_container_frame(0, "val", 160, 120)
    assert frame.shape == (120, 160, 3)


def test_render_frame_photo_backdrop(stand_in, monkeypatch):
    """The 2-D renderer in front of a (val: magenta) photo: the same containers and masks as the
    procedural backdrop; without ``photo_split`` the frame is what it always was."""
    from fillcls.world.render import render_frame

    monkeypatch.setenv("FILLCLS_PHOTOS", str(stand_in))
    plain, anns = render_frame(4, 160, 120, n_containers=2)
    same, _ = render_frame(4, 160, 120, n_containers=2, photo_split=None)
    assert np.array_equal(plain, same)
    photo, photo_anns = render_frame(4, 160, 120, n_containers=2, photo_split="val")
    assert [a["box"] for a in photo_anns] == [a["box"] for a in anns]
    assert all(np.array_equal(a["mask"], b["mask"]) for a, b in zip(anns, photo_anns))
    outside = ~np.any([a["mask"] for a in anns], axis=0)
    magenta = (photo[..., 0] > 150) & (photo[..., 1] < 90) & (photo[..., 2] > 150)
    assert magenta[outside].mean() > 0.1 and magenta[~outside].mean() < magenta[outside].mean()  # glass shows it
    assert not ((plain[..., 0] > 150) & (plain[..., 1] < 90) & (plain[..., 2] > 150))[outside].mean() > 0.1


def test_pbr_cache_follows_the_photo_set(stand_in, monkeypatch, tmp_path):
    """Path-traced crops in front of photographs are cached per photo set: after the index changes
    (another val photo) the next call renders anew instead of serving the old crops."""
    pytest.importorskip("mitsuba")
    from fillcls.world.pbr import make_cropset_pbr

    monkeypatch.setenv("FILLCLS_PHOTOS", str(stand_in))
    cache = tmp_path / "cache"
    kw = dict(containers=["C3"], spp=1, backdrops="photos", split="val", cache_dir=cache)
    first, _, _ = make_cropset_pbr(1, 32, seed=2, **kw)
    again, _, _ = make_cropset_pbr(1, 32, seed=2, **kw)
    assert bool((again == first).all()) and len(list(cache.glob("pbr_*.npz"))) == 1
    index = json.loads((stand_in / "index.json").read_text())
    green = np.zeros((50, 80, 3), np.uint8)
    green[:] = (0, 220, 0)
    for row in index["photos"]:
        if row["kind"] == "background" and row["split"] == "val":
            row["file"] = _write(stand_in, "backgrounds/v2.png", green)
    (stand_in / "index.json").write_text(json.dumps(index))
    changed, _, _ = make_cropset_pbr(1, 32, seed=2, **kw)
    assert len(list(cache.glob("pbr_*.npz"))) == 2 and not bool((changed == first).all())


def test_segtrain_with_photos(stand_in, monkeypatch, tmp_path):
    """segtrain's photo mix (with path-traced frames): trains, and reports false containers per
    held-out negative frame and recall on path-traced frames; without photos it stops with one
    error naming `make photos`."""
    pytest.importorskip("mitsuba")
    from helpers import quiet
    from training.segtrain import PRESETS, train

    cfg = PRESETS["tiny"].replace(train_frames=12, eval_frames=4, epochs=1, photo_frames=0.5,
                                  negative_frames=0.25, photo_eval_frames=4, pbr_frames=2, pbr_eval_frames=1,
                                  pbr_spp=1, pbr_hand_frames=1)
    monkeypatch.setenv("FILLCLS_PHOTOS", str(tmp_path / "none"))
    with pytest.raises(photos.PhotosMissingError, match="make photos"):
        train(cfg, tmp_path / "run", log=quiet)
    monkeypatch.setenv("FILLCLS_PHOTOS", str(stand_in))
    result = train(cfg, tmp_path / "run", log=quiet, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("pbr_frames_*.npz"))) == 3  # training, with hands, evaluation
    assert result["photo_metrics"]["pbr-val"]["frames"] == 1 and result["photo_metrics"]["pbr-val"]["containers"] >= 1
    neg = result["photo_metrics"]["negative-val"]
    assert neg["containers"] == 0 and neg["frames"] == 4 and neg["false_per_frame"] >= 0
    assert result["photo_metrics"]["photo-val"]["containers"] > 0


def test_cutout_source_dataset(stand_in, tmp_path, monkeypatch):
    """training.data.cutouts: one class per train cut-out (val ones never), deterministic and
    cached; fractals+cutouts shifts the cut-out labels; `pretrain --data cutouts` trains a source
    model end to end, and without photos stops with one error naming `make photos`."""
    from fillcls import core
    from training.cli import main
    from training.data import cutouts
    from training.sources import find_source

    train, test = cutouts.cutout_splits(0, 3, 2, 16, seed=1, cache_dir=tmp_path / "cache", root=stand_in)
    assert train.classes == ("c0", "c1") and len(train) == 6 and len(test) == 4
    assert train.images.shape == (6, 3, 16, 16) and train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert len(list((tmp_path / "cache").glob("cutouts_*.npz"))) == 1
    again, _ = cutouts.cutout_splits(0, 3, 2, 16, seed=1, root=stand_in)
    assert np.array_equal(again.images.numpy(), train.images.numpy())
    assert not np.array_equal(test.images[:2].numpy(), train.images[:2].numpy())  # independent draws
    # the green cut-out is visible on the random backgrounds
    green = (train.images[:, 1].int() - train.images[:, 0].int() > 100).float().mean(dim=(1, 2))
    assert (green > 0.02).all()
    with pytest.raises(ValueError, match="n_classes"):
        cutouts.class_photos(5, stand_in)
    mixed, _ = cutouts.mixed_splits(2, 4, 1, 16, seed=0, root=stand_in)
    assert mixed.classes == ("ifs000", "ifs001", "c0", "c1") and len(mixed) == 8 + 2 * 4
    assert mixed.labels[8:].tolist() == [2] * 4 + [3] * 4

    monkeypatch.setenv("FILLCLS_PHOTOS", str(stand_in))
    runs = str(tmp_path / "runs")
    args = ["pretrain", "--preset", "tiny", "--runs", runs, "--eps", "0", "--data", "cutouts", "--n-classes", "0"]
    assert main(args) == 0
    spec = find_source(f"{runs}/sources/tiny", "resnet18", 0.0)
    header, _, _ = core.read_checkpoint(spec.path)
    assert header.classes == ("c0", "c1") and header.training["dataset"] == "cutouts"
    assert main([*args, "--no-resume", "--n-classes", "3"]) == 2  # the stand-in has two train cut-outs
    monkeypatch.setenv("FILLCLS_PHOTOS", str(tmp_path / "none"))
    assert main([*args, "--no-resume", "--data", "fractals+cutouts", "--n-classes", "2"]) == 2

