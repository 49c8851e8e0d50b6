"""training.authors: released models in each expected variant -> node checkpoints."""

import argparse
import os
import pickle
import sys
import types

import pytest
import torch
import torchvision

from fillcls import core
from training.authors import (class_permutation, describe_name, import_authors_model,
                              import_authors_models, main)

MEAN = torch.tensor(core.IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(core.IMAGENET_STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def released():
    """A 4-class torchvision ResNet-18 as the authors would have trained it (eval mode)."""
    torch.manual_seed(5)
    net = torchvision.models.resnet18(num_classes=4)
    for m in net.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    return torch.rand(2, 3, 32, 32)


def _expected(net, x, mean=MEAN, std=STD):
    with torch.no_grad():
        return net((x - mean) / std)


def _ours(path, x):
    model, header = core.load_classifier(path)
    with torch.no_grad():
        return model(x), header


def test_plain_state_dict_and_header(tmp_path, released, images):
    src = tmp_path / "S1_AT-FT_eps0.05.pth"
    torch.save(released.state_dict(), src)
    out = tmp_path / "node.pt"
    header = import_authors_model(src, out)
    got, h = _ours(out, images)
    assert torch.allclose(got, _expected(released, images), atol=1e-5)
    assert (h.arch, h.input_size, h.model_id, tuple(h.classes)) == ("resnet18", 224, "authors-S1_AT-FT_eps0.05", core.CLASSES)
    assert h.training["split"] == "S1" and h.training["strategy"] == "AT-FT" and h.training["eps"] == 0.05
    assert h.training["variant"] == "state dict" and len(h.training["sha256"]) == 64
    assert header.model_id == h.model_id


@pytest.mark.parametrize("variant", ["dataparallel", "under_state_dict", "robustness"])
def test_weights_only_variants(tmp_path, released, images, variant):
    sd = released.state_dict()
    mean, std = MEAN, STD
    if variant == "dataparallel":
        payload = {f"module.{k}": v for k, v in sd.items()}
    elif variant == "under_state_dict":
        payload = {"state_dict": sd, "epoch": 30, "best_acc": 0.8}
    else:
        mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.3, 0.25]).view(1, 3, 1, 1)
        payload = {"model": {**{f"module.model.{k}": v for k, v in sd.items()},
                             **{f"module.attacker.model.{k}": v * 0 for k, v in sd.items()},
                             "module.normalizer.new_mean": mean.view(3, 1, 1),
                             "module.normalizer.new_std": std.view(3, 1, 1)}, "epoch": 30}
    src = tmp_path / f"{variant}.pt"
    torch.save(payload, src)
    out = tmp_path / "node.pt"
    import_authors_model(src, out)
    got, h = _ours(out, images)
    assert torch.allclose(got, _expected(released, images, mean, std), atol=1e-5)
    assert h.training["variant"] == {"dataparallel": "state dict", "under_state_dict": "state dict under 'state_dict'",
                                     "robustness": "robustness state dict under 'model'"}[variant]


def test_pickled_model_needs_trust(tmp_path, released, images):
    src = tmp_path / "whole_model.pth"
    torch.save({"model": released, "args": argparse.Namespace(lr=0.005)}, src)
    out = tmp_path / "node.pt"
    with pytest.raises(core.CheckpointError, match="--trust-pickle") as err:
        import_authors_model(src, out)
    assert str(src) in str(err.value) and not out.exists()
    import_authors_model(src, out, trust_pickle=True)
    got, h = _ours(out, images)
    assert torch.allclose(got, _expected(released, images), atol=1e-5)
    assert h.training["variant"] == "pickled nn.Module under 'model'"


def test_pickled_module_of_uninstalled_class(tmp_path, released, images):
    """A whole model pickled from the authors' own code (not installed here) is read as a stub."""
    mod = types.ModuleType("authors_private_code")

    class Wrapper(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.model = net

    Wrapper.__module__, Wrapper.__qualname__ = "authors_private_code", "Wrapper"
    mod.Wrapper = Wrapper
    sys.modules["authors_private_code"] = mod
    try:
        src = tmp_path / "wrapped.pth"
        torch.save(Wrapper(released), src)
    finally:
        del sys.modules["authors_private_code"]
    out = tmp_path / "node.pt"
    with pytest.raises(core.CheckpointError, match="--trust-pickle"):
        import_authors_model(src, out)
    import_authors_model(src, out, trust_pickle=True)
    got, h = _ours(out, images)
    assert torch.allclose(got, _expected(released, images), atol=1e-5)
    assert h.training["variant"].endswith("pickled module of an uninstalled class")  # model.* keys


def test_class_order_permutes_head(tmp_path, released, images):
    src = tmp_path / "m.pth"
    torch.save(released.state_dict(), src)
    out = tmp_path / "node.pt"
    order = ["opaque", "90", "empty", "half"]  # what the released outputs would mean
    import_authors_model(src, out, class_order=order)
    got, _ = _ours(out, images)
    ref = _expected(released, images)
    assert torch.allclose(got, ref[:, class_permutation(order)], atol=1e-5)
    assert class_permutation(order) == [2, 3, 1, 0]
    with pytest.raises(ValueError, match="class_order"):
        class_permutation(["empty", "half", "full", "full"])


def test_wrong_head_and_not_a_model(tmp_path):
    src = tmp_path / "ten.pth"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), src)
    with pytest.raises(core.CheckpointError, match="10 outputs, expected 4"):
        import_authors_model(src, tmp_path / "x.pt")
    junk = tmp_path / "junk.pth"
    torch.save({"weights": [1, 2, 3]}, junk)
    with pytest.raises(core.CheckpointError, match=str(junk)):
        import_authors_model(junk, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_folder_and_cli(tmp_path, released, capsys):
    rel = tmp_path / "release"
    rel.mkdir()
    torch.save(released.state_dict(), rel / "S2_ST.pth")
    torch.save({"state_dict": released.state_dict()}, rel / "S3_AT-AFT.pth.tar")
    done = import_authors_models([str(rel)], str(tmp_path / "out"))
    assert sorted(os.path.basename(d) for _, d, _ in done) == ["authors-S2_ST.pt", "authors-S3_AT-AFT.pt"]
    assert main([str(rel / "S2_ST.pth"), "--out", str(tmp_path / "one.pt")]) == 0
    assert "authors-S2_ST" in capsys.readouterr().out
    assert main([str(tmp_path / "missing.pth"), "--out", str(tmp_path / "two.pt")]) == 1
    assert "not found" in capsys.readouterr().err


def test_describe_name():
    assert describe_name("S3_AT-AFT_eps0.5") == {"split": "S3", "strategy": "AT-AFT", "eps": 0.5}
    assert describe_name("resnet18_S2_STtoFT") == {"split": "S2", "strategy": "ST-FT"}
    assert describe_name("model") == {}
