"""training.assets: the registry of the paper's real assets, resolve / verify / detect_format."""

import argparse
import dataclasses
import hashlib
import os

import pytest
import torch

from fillcls import core
from training import assets
from training.assets import AssetError, MissingAsset
from training.sources import SourceSpec, load_source_model


@pytest.fixture(autouse=True)
def _default_urls(monkeypatch):
    for env in assets.URL_ENV.values():
        monkeypatch.delenv(env, raising=False)


def _net(num_classes=10, seed=0):
    torch.manual_seed(seed)
    return core.build_model("resnet18", num_classes).net


def test_registry_names_and_urls():
    expected = {"imagenet", "maskrcnn-coco", "c-ccm", "authors-models"} | {
        f"robust-l2-eps{e}" for e in ("0", "0.01", "0.03", "0.05", "0.1", "0.25", "0.5", "1", "3", "5")}
    assert set(assets.REGISTRY) == expected
    assert assets.get("imagenet").url() == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert assets.get("imagenet").sha256 == "f37072fd" and assets.get("imagenet").fmt == "torchvision"
    assert assets.get("maskrcnn-coco").sha256 == "bf2d0c1e" and assets.get("maskrcnn-coco").kind == "segmenter"
    r = assets.get("robust-l2-eps0.05")
    assert (r.filename, r.fmt, r.sha256, r.eps_source) == ("resnet18_l2_eps0.05.ckpt", "robustness", None, 0.05)
    assert r.url().endswith("/resnet18_l2_eps0.05.ckpt")
    assert assets.get("robust-l2-eps3").filename == "resnet18_l2_eps3.ckpt"
    assert assets.get("c-ccm").url() == "https://zenodo.org/api/records/4642577"
    assert assets.get("authors-models").url() == "https://zenodo.org/api/records/4518951"
    for a in assets.REGISTRY.values():
        assert a.kind in assets.KINDS and a.note


def test_base_urls_option_and_env(monkeypatch):
    a = assets.get("robust-l2-eps1")
    assert a.url({"robust": "http://127.0.0.1:1/x/{file}?sig=abc"}) == "http://127.0.0.1:1/x/resnet18_l2_eps1.ckpt?sig=abc"
    monkeypatch.setenv("FILLCLS_TORCHVISION_URL", "http://127.0.0.1:2/tv/")
    assert assets.get("imagenet").url() == "http://127.0.0.1:2/tv/resnet18-f37072fd.pth"
    monkeypatch.setenv("FILLCLS_ZENODO_URL", "http://127.0.0.1:3/api")
    assert assets.get("c-ccm").url() == "http://127.0.0.1:3/api/records/4642577"


def test_groups_inhouse_and_unknown():
    assert assets.expand(["imagenet", "robust-l2"])[:3] == ["imagenet", "robust-l2-eps0", "robust-l2-eps0.01"]
    assert len(assets.expand(["sources", "imagenet"])) == 11
    a = assets.get("inhouse-eps0.5")
    assert (a.filename, a.fmt, a.eps_source) == ("source_resnet18_eps0.5.pt", "project", 0.5)
    assert assets.get("inhouse-resnet50-eps1").filename == "source_resnet50_eps1.pt"
    with pytest.raises(AssetError, match="unknown asset 'robust-l2-eps7'"):
        assets.get("robust-l2-eps7")


def test_resolve_missing_names_file_url_and_command(tmp_path):
    with pytest.raises(MissingAsset) as err:
        assets.resolve("robust-l2-eps0.05", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "resnet18_l2_eps0.05.ckpt") in msg
    assert "huggingface.co" in msg and "resnet18_l2_eps0.05.ckpt" in msg
    assert f"python -m training fetch robust-l2-eps0.05 --dir {tmp_path}" in msg
    with pytest.raises(MissingAsset, match="zenodo.org/records/4642577"):
        assets.resolve("c-ccm", tmp_path)
    with pytest.raises(MissingAsset, match="training pretrain --eps 0.25"):
        assets.resolve("inhouse-eps0.25", tmp_path)
    (tmp_path / "c-ccm").mkdir()
    with pytest.raises(MissingAsset):  # an empty folder is not the dataset
        assets.resolve("c-ccm", tmp_path)
    (tmp_path / "c-ccm" / "x.png").write_bytes(b"x")
    assert assets.resolve("c-ccm", tmp_path) == str(tmp_path / "c-ccm")


def test_verify_prefix_and_first_use_record(tmp_path, monkeypatch):
    path = tmp_path / "resnet18-f37072fd.pth"
    path.write_bytes(b"not the real weights")
    with pytest.raises(AssetError, match="f37072fd") as err:
        assets.verify("imagenet", path)
    assert str(path) in str(err.value)
    digest = hashlib.sha256(b"not the real weights").hexdigest()
    monkeypatch.setitem(assets.REGISTRY, "imagenet",
                        dataclasses.replace(assets.REGISTRY["imagenet"], sha256=digest[:8]))
    assert assets.verify("imagenet", path) == digest

    robust = tmp_path / "resnet18_l2_eps1.ckpt"
    robust.write_bytes(b"first")
    assert assets.verify("robust-l2-eps1", robust) == hashlib.sha256(b"first").hexdigest()
    assert (tmp_path / "resnet18_l2_eps1.ckpt.sha256").exists()
    robust.write_bytes(b"second")
    with pytest.raises(AssetError, match="does not match"):
        assets.verify("robust-l2-eps1", robust)


def _robustness_payload(net, pickled_args=True):
    sd = {f"module.model.{k}": v for k, v in net.state_dict().items()}
    sd["module.normalizer.new_mean"] = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    sd["module.normalizer.new_std"] = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    out = {"model": sd, "epoch": 90}
    if pickled_args:
        out["args"] = argparse.Namespace(eps=3.0, constraint="2")
    return out


def test_detect_format_each_kind(tmp_path):
    net = _net(1000)
    tv = tmp_path / "resnet18-f37072fd.pth"
    torch.save(net.state_dict(), tv)
    assert assets.detect_format(tv) == "torchvision"

    project = tmp_path / "source_resnet18_eps0.5.pt"
    core.save_checkpoint(project, core.build_model("resnet18").state_dict(), core.CheckpointHeader())
    assert assets.detect_format(project) == "project"

    robust = tmp_path / "resnet18_l2_eps3.ckpt"
    torch.save(_robustness_payload(net), robust)
    # pickled args: recognised without unpickling (no --trust-pickle needed to know the format)
    assert assets.detect_format(robust) == "robustness"
    assert assets.detect_format(robust, trust_pickle=True) == "robustness"
    legacy = tmp_path / "legacy.ckpt"
    torch.save(_robustness_payload(net), legacy, _use_new_zipfile_serialization=False)
    assert assets.detect_format(legacy) == "robustness"
    plain = tmp_path / "robust_plain.ckpt"
    torch.save(_robustness_payload(net, pickled_args=False), plain)
    assert assets.detect_format(plain) == "robustness"

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(core.CheckpointError, match=str(junk)):
        assets.detect_format(junk)


def test_identity_and_source_loading(tmp_path):
    net = _net(1000, seed=3)
    path = tmp_path / "resnet18_l2_eps0.05.ckpt"
    torch.save(_robustness_payload(net), path)
    resolved = assets.resolve("robust-l2-eps0.05", tmp_path)
    ident = assets.identity("robust-l2-eps0.05", resolved)
    assert ident == {"name": "robust-l2-eps0.05", "file": "resnet18_l2_eps0.05.ckpt",
                     "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "format": "robustness",
                     "eps_source": 0.05}
    model = load_source_model(SourceSpec(resolved, "resnet18", 0.05, fmt=ident["format"], trust_pickle=True))
    assert torch.equal(model.net.conv1.weight, net.conv1.weight)


def test_paper_source_names_and_spec(tmp_path):
    assert assets.paper_source_name(0) == "imagenet"
    assert assets.paper_source_name(0.05) == "robust-l2-eps0.05"
    assert assets.paper_source_name(1.0) == "robust-l2-eps1"
    with pytest.raises(AssetError, match="eps 2"):
        assets.paper_source_name(2)
    with pytest.raises(MissingAsset, match="fetch robust-l2-eps0.5"):
        assets.source_spec("robust-l2-eps0.5", tmp_path)
    torch.save(_robustness_payload(_net(1000)), tmp_path / "resnet18_l2_eps0.5.ckpt")
    spec = assets.source_spec("robust-l2-eps0.5", tmp_path, trust_pickle=True)
    assert (spec.fmt, spec.eps_source, spec.arch, spec.trust_pickle) == ("robustness", 0.5, "resnet18", True)
    assert load_source_model(spec).net.fc.out_features == 1000
    with pytest.raises(AssetError, match="not a source"):
        assets.source_spec("c-ccm", tmp_path)
