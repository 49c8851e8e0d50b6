"""Source models from disk (torchvision, robustness, project formats), fractals, image folders."""

import argparse
import os

import numpy as np
import pytest
import torch

from fillcls import core
from training.sources import (SourceSpec, find_source, list_sources, load_source_model,
                              read_source_weights, source_path)


def _net(num_classes=10, seed=0):
    torch.manual_seed(seed)
    return core.build_model("resnet18", num_classes).net


def _assert_same(model, net):
    ref = net.state_dict()
    got = model.net.state_dict()
    assert set(got) == set(ref)
    for k in ref:
        assert torch.equal(got[k], ref[k]), k


def _robustness_payload(net, key="model", mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3)):
    """A MadryLab robustness checkpoint: module.model.*, module.normalizer.*, module.attacker.*."""
    sd = {}
    for k, v in net.state_dict().items():
        sd[f"module.model.{k}"] = v
        sd[f"module.attacker.model.{k}"] = v + 1.0 if v.is_floating_point() else v
    sd["module.normalizer.new_mean"] = torch.tensor(mean).view(3, 1, 1)
    sd["module.normalizer.new_std"] = torch.tensor(std).view(3, 1, 1)
    sd["module.attacker.normalize.new_mean"] = torch.tensor(mean).view(3, 1, 1)
    sd["module.attacker.normalize.new_std"] = torch.tensor(std).view(3, 1, 1)
    return {key: sd, "epoch": 90, "optimizer": {}, "schedule": None,
            "args": argparse.Namespace(eps=3.0, constraint="2", arch="resnet18")}


def test_torchvision_plain_state_dict(tmp_path):
    net = _net(1000)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(net.state_dict(), path)
    for fmt in ("torchvision", "auto"):
        model = load_source_model(SourceSpec(str(path), "resnet18", 0.0, fmt=fmt))
        _assert_same(model, net)
        assert model.net.fc.out_features == 1000
        assert torch.allclose(model.normalize.mean.flatten(), torch.tensor(core.IMAGENET_MEAN))


def test_torchvision_dataparallel_prefix(tmp_path):
    net = _net(7)
    path = tmp_path / "dp.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    _assert_same(load_source_model(SourceSpec(str(path), fmt="auto")), net)


def test_robustness_checkpoint_needs_trust_pickle(tmp_path):
    net = _net(1000, seed=1)
    path = tmp_path / "resnet18_l2_eps3.ckpt"
    torch.save(_robustness_payload(net), path)
    with pytest.raises(core.CheckpointError, match="trust-pickle") as err:
        load_source_model(SourceSpec(str(path), "resnet18", 3.0, fmt="robustness"))
    assert str(path) in str(err.value)
    for fmt in ("robustness", "auto"):
        model = load_source_model(SourceSpec(str(path), "resnet18", 3.0, fmt=fmt, trust_pickle=True))
        _assert_same(model, net)  # module.model.* kept, attacker copy (weights + 1) dropped
        assert torch.allclose(model.normalize.mean.flatten(), torch.tensor([0.4, 0.5, 0.6]))
        assert torch.allclose(model.normalize.std.flatten(), torch.tensor([0.2, 0.25, 0.3]))


def test_robustness_state_dict_key_variant_weights_only(tmp_path):
    net = _net(10, seed=2)
    payload = _robustness_payload(net, key="state_dict")
    del payload["args"]  # only tensors and plain values: loads with weights_only=True
    path = tmp_path / "robust.pt"
    torch.save(payload, path)
    w = read_source_weights(SourceSpec(str(path), fmt="auto"))
    assert w.fmt == "robustness" and w.num_classes == 10
    _assert_same(load_source_model(SourceSpec(str(path), fmt="auto")), net)


def test_project_format_and_find_source(tmp_path):
    torch.manual_seed(3)
    model = core.build_model("resnet18", 5)
    header = core.CheckpointHeader(classes=tuple(f"c{i}" for i in range(5)), input_size=16,
                                   kind="source", training={"eps_source": 0.5})
    path = source_path(tmp_path, "resnet18", 0.5)
    core.save_checkpoint(path, model.state_dict(), header)
    spec = find_source(tmp_path, "resnet18", 0.5)
    assert spec.path == path and spec.eps_source == 0.5
    for fmt in ("project", "auto"):
        loaded = load_source_model(SourceSpec(path, "resnet18", 0.5, fmt=fmt))
        _assert_same(loaded, model.net)
    assert [s.eps_source for s in list_sources(tmp_path)] == [0.5]
    with pytest.raises(core.CheckpointError, match="eps_source=1"):
        find_source(tmp_path, "resnet18", 1.0)
    with pytest.raises(core.CheckpointError, match="project"):
        load_source_model(SourceSpec(path, fmt="torchvision"))


def test_mismatches_name_the_file(tmp_path):
    net = _net(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    with pytest.raises(core.CheckpointError, match="do not fit resnet50") as err:
        load_source_model(SourceSpec(str(path), "resnet50", fmt="auto"))
    assert str(path) in str(err.value)
    broken = tmp_path / "broken.pth"
    sd = net.state_dict()
    sd.pop("layer1.0.conv1.weight")
    torch.save(sd, broken)
    with pytest.raises(core.CheckpointError, match=str(broken)):
        load_source_model(SourceSpec(str(broken), fmt="auto"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(core.CheckpointError, match=str(junk)):
        load_source_model(SourceSpec(str(junk), fmt="auto"))
    with pytest.raises(core.CheckpointError, match="not found"):
        load_source_model(SourceSpec(str(tmp_path / "missing.pth"), fmt="auto"))
    torch.save({"module.model.conv1.weight": torch.zeros(1)}, tmp_path / "r.pt")
    with pytest.raises(core.CheckpointError, match="robustness"):
        load_source_model(SourceSpec(str(tmp_path / "r.pt"), fmt="torchvision"))


# ---------------------------------------------------------------------------------------------
# Fractals and image folders
# ---------------------------------------------------------------------------------------------


def test_fractals_deterministic_and_cached(tmp_path):
    from training.data.fractals import fractal_set, fractal_splits

    a = fractal_set(3, 4, 16, seed=5)
    b = fractal_set(3, 4, 16, seed=5)
    c = fractal_set(3, 4, 16, seed=6)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert a.images.shape == (12, 3, 16, 16) and a.images.dtype == torch.uint8
    assert list(a.classes) == ["ifs000", "ifs001", "ifs002"] and a.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    tr, te = fractal_splits(3, 4, 2, 16, seed=5, cache_dir=tmp_path)
    assert torch.equal(tr.images, a.images)  # the train split is fractal_set(split="train")
    assert not any(torch.equal(x, y) for x in te.images for y in tr.images)  # held-out images differ
    assert len(list(tmp_path.glob("fractals_*.npz"))) == 1
    tr2, te2 = fractal_splits(3, 4, 2, 16, seed=5, cache_dir=tmp_path)
    assert torch.equal(tr2.images, tr.images) and torch.equal(te2.images, te.images)


def test_fractal_classes_are_distinct():
    from training.data.fractals import class_ifs, filling_rate, fractal_set

    ifs = [class_ifs(0, k) for k in range(6)]
    assert all(filling_rate(f, np.random.default_rng(0)) >= 0.15 for f in ifs)
    assert len({f.params.tobytes() for f in ifs}) == 6
    # without augmentation, an image is nearer to its own class mean than to the others
    s = fractal_set(6, 10, 24, seed=0, augment=False, color="white")
    x = s.images.float().flatten(1) / 255
    means = torch.stack([x[s.labels == k].mean(0) for k in range(6)])
    pred = torch.cdist(x, means).argmin(1)
    assert (pred == s.labels).float().mean() >= 0.9
    # with the default colour / geometry augmentation images of a class still vary
    s = fractal_set(2, 4, 24, seed=0)
    assert len({bytes(im.numpy()) for im in s.images}) == 8


def test_image_folder(tmp_path):
    from PIL import Image

    from training.data.folder import folder_splits, load_image_folder

    rng = np.random.default_rng(0)
    for cls, colour in (("cat", 200), ("dog", 30)):
        os.makedirs(tmp_path / "imgs" / cls)
        for i in range(5):
            arr = np.clip(rng.normal(colour, 5, (20 + i, 30, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / "imgs" / cls / f"{i}.png")
    (tmp_path / "imgs" / "notes.txt").write_text("ignored")
    cs = load_image_folder(tmp_path / "imgs", 12)
    assert cs.images.shape == (10, 3, 12, 12) and list(cs.classes) == ["cat", "dog"]
    assert cs.images[cs.labels == 0].float().mean() > 150 > 60 > cs.images[cs.labels == 1].float().mean()
    tr, te = folder_splits(tmp_path / "imgs", 12, test_per_class=2, cache_dir=tmp_path / "cache")
    assert len(tr) == 6 and len(te) == 4 and te.class_counts().tolist() == [2, 2]
    tr2, _ = folder_splits(tmp_path / "imgs", 12, test_per_class=2, cache_dir=tmp_path / "cache")
    assert torch.equal(tr.images, tr2.images) and len(list((tmp_path / "cache").glob("*.pt"))) == 2


def test_trusted_pickle_with_classes_of_missing_packages(tmp_path, monkeypatch):
    """robustness checkpoints may pickle objects of packages (cox, robustness) that are not installed."""
    import sys

    (tmp_path / "fake_cox_mod.py").write_text(
        "class Parameters(dict):\n    pass\n\nclass Store:\n    def __init__(self, x):\n        self.x = x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fake_cox_mod

    net = _net(10, seed=4)
    payload = _robustness_payload(net)
    payload["args"] = fake_cox_mod.Parameters(eps=3.0)
    payload["store"] = fake_cox_mod.Store(1)
    path = tmp_path / "cox.ckpt"
    torch.save(payload, path)
    monkeypatch.delitem(sys.modules, "fake_cox_mod")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    with pytest.raises(core.CheckpointError, match="trust-pickle"):
        load_source_model(SourceSpec(str(path), fmt="auto"))
    _assert_same(load_source_model(SourceSpec(str(path), fmt="auto", trust_pickle=True)), net)


def test_project_format_on_a_torchvision_file_hints_auto(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(_net(3).state_dict(), path)
    with pytest.raises(core.CheckpointError, match="format 'auto'") as err:
        load_source_model(SourceSpec(str(path), fmt="project"))
    assert str(path) in str(err.value)


def test_tiny_imagenet_layout(tmp_path):
    from PIL import Image

    from training.data.folder import folder_splits

    root = tmp_path / "tiny-imagenet"
    for k, wnid in enumerate(("n01", "n02")):
        os.makedirs(root / "train" / wnid / "images")
        for i in range(3):
            Image.new("RGB", (10, 8), (100 * k, 50, 50)).save(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
    os.makedirs(root / "val" / "images")
    lines = []
    for i, wnid in enumerate(("n02", "n01", "n02")):
        Image.new("RGB", (8, 8), (0, 0, 0)).save(root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t8\t8")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    tr, te = folder_splits(root, 8)
    assert list(tr.classes) == ["n01", "n02"] and tr.class_counts().tolist() == [3, 3]
    assert te.labels.tolist() == [0, 1, 1]
