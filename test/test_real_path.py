"""The paper's real setting end to end, on stand-in files in the real formats (tiny sizes, CPU).

A stand-in C-CCM release (non-square PNG crops, CCM file names) goes through ``import-ccm``; a
source directory holds a torchvision ResNet-18 state dict (``resnet18-f37072fd.pth``) and
robustness-format checkpoints (``resnet18_l2_eps{E}.ckpt``); ``study --preset paper`` runs one
split with tiny overrides, then ``report``, ``export`` and the node's ROS-free estimator. Every
transfer run must have loaded its own source's weights and every run must be in the report.
"""

import csv
import dataclasses
import json
import os

import cv2
import numpy as np
import pytest
import torch

from fillcls import core
from fillcls.inference import EstimatorConfig, FillingEstimator
from training import assets, cli
from training.data.ccm import load_manifest

LEVELS = {"empty": 0, "half": 1, "full": 2}
ROBUST_MEAN = (0.4, 0.45, 0.5)
TINY = ["--size", "16", "--epochs", "1", "--batch-size", "8", "--samples-per-epoch", "16",
        "--attack-steps", "1", "--eval-steps", "1", "--eval-max", "4", "--eval-batch-size", "32",
        "--sweep-layers", "0,4", "--sweep-eps", "0.05,0.5", "--sweep-layers-splits", "S1",
        "--sweep-eps-splits", "S1"]


def _release(root, per_container=10):
    """A stand-in C-CCM release: C-CCM/<Cn>/s_fi_fu_b_l_c_<i>.png, non-square crops."""
    rng = np.random.default_rng(0)
    i = 0
    for c in range(1, 9):
        for k in range(per_container):
            level = list(LEVELS)[k % 3]
            fi = 0 if level == "empty" else 1 + k % 3
            name = f"s{k % 3}_fi{fi}_fu{LEVELS[level]}_b{k % 2}_l{k % 2}_c{1 + k % 3}_{i:05d}.png"
            path = root / "C-CCM" / f"C{c}" / name
            os.makedirs(path.parent, exist_ok=True)
            img = rng.integers(0, 255, (20 + k % 5, 12 + k % 3, 3), dtype=np.uint8)  # taller than wide
            assert cv2.imwrite(str(path), img)
            i += 1


def _weights(seed):
    torch.manual_seed(seed)
    return core.build_model("resnet18", 1000).net.state_dict()


def _sources(d):
    """torchvision file for `imagenet`, robustness checkpoints for eps 0.05 and 0.5 (distinct weights)."""
    os.makedirs(d, exist_ok=True)
    files = {"imagenet": _weights(1)}
    torch.save(files["imagenet"], d / "resnet18-f37072fd.pth")
    for seed, eps in ((2, "0.05"), (3, "0.5")):
        sd = _weights(seed)
        ckpt = {"model": {**{f"module.model.{k}": v for k, v in sd.items()},
                          **{f"module.attacker.model.{k}": v for k, v in sd.items()},
                          "module.normalizer.new_mean": torch.tensor(ROBUST_MEAN).view(3, 1, 1),
                          "module.normalizer.new_std": torch.tensor(core.IMAGENET_STD).view(3, 1, 1)},
                "epoch": 90}
        torch.save(ckpt, d / f"resnet18_l2_eps{eps}.ckpt")
        files[f"robust-l2-eps{eps}"] = sd
    return files


@pytest.fixture
def stand_in_imagenet(tmp_path, monkeypatch):
    """The torchvision SHA-256 prefix check, pointed at the stand-in file's own hash."""
    src = tmp_path / "assets"
    files = _sources(src)
    digest = assets.file_digest(src / "resnet18-f37072fd.pth")
    monkeypatch.setitem(assets.REGISTRY, "imagenet", dataclasses.replace(assets.REGISTRY["imagenet"],
                                                                         sha256=digest[:8]))
    return src, files


def _results(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_paper_recipe_on_stand_in_files(tmp_path, stand_in_imagenet, capsys):
    src, files = stand_in_imagenet
    _release(tmp_path / "release")
    manifest = tmp_path / "data" / "manifest.csv"
    # 1. import (the stand-in's counts are not the published ones: --force)
    assert cli.main(["import-ccm", str(tmp_path / "release"), "--out", str(manifest), "--force"]) == 0
    assert len(load_manifest(str(manifest), 16)) == 80
    runs = str(tmp_path / "runs")
    common = ["--preset", "paper", "--runs", runs, "--device", "cpu", "--source-dir", str(src),
              "--trust-pickle", *TINY]
    # the paper preset refuses to run without real data; missing sources: the file and the fetch command
    with pytest.raises(SystemExit, match="paper-synthetic"):
        cli.main(["study", "--split", "S1", *common])
    with pytest.raises(SystemExit, match=r"resnet18-f37072fd.pth \(imagenet(.|\n)*training fetch imagenet"):
        cli.main(["study", "--split", "S1", *common, "--data", str(manifest), "--source-dir",
                  str(tmp_path / "empty")])
    data = ["--data", str(manifest)]
    # 2. one run by source name first: the study finds it finished; rerun from another file: refused
    assert cli.main(["train", "--split", "S1", "--strategy", "AT-FT", "--source", "robust-l2-eps0.5",
                     *common, *data]) == 0
    other = tmp_path / "other" / "resnet18_l2_eps0.5.ckpt"
    os.makedirs(other.parent)
    torch.save({"model": {f"module.model.{k}": v for k, v in _weights(9).items()}}, other)
    with pytest.raises(SystemExit, match="another config(.|\n)*sha256"):
        cli.main(["train", "--split", "S1", "--strategy", "AT-FT", "--source", str(other), *common, *data])
    capsys.readouterr()
    # 3. the study: 6 strategies + L sweep (0, 4) + eps sweep (0.05, 0.5) on S1
    assert cli.main(["study", "--split", "S1", *common, *data]) == 0
    out = capsys.readouterr().out
    assert "S1 AT-FT_L1_es0.5_et0: finished before" in out
    root = cli.run_root(cli.build_parser().parse_args(["report", *common, *data]), "paper",
                        cli.preset_from_args(cli.build_parser().parse_args(["report", *common, *data]))[1])
    names = sorted(os.listdir(os.path.join(root, "S1")))
    assert names == sorted(["ST_et0", "AT_et0.05", "ST-FT_L1_es0_et0", "ST-AFT_L1_es0_et0.05",
                            "AT-FT_L1_es0.05_et0", "AT-AFT_L1_es0.05_et0.05", "ST-FT_L0_es0_et0",
                            "ST-FT_L4_es0_et0", "AT-FT_L1_es0.5_et0"])
    for name in names:
        run = os.path.join(root, "S1", name)
        with open(os.path.join(run, "config.json")) as f:
            cfg = json.load(f)
        if cfg["source"] is None:
            assert name.startswith(("ST_", "AT_"))
            continue
        src_name = cfg["source"]["name"]
        assert src_name == ("imagenet" if cfg["eps_source"] == 0 else f"robust-l2-eps{cfg['eps_source']:g}")
        assert cfg["identity"]["source"]["sha256"] == assets.file_digest(
            src / assets.get(src_name).filename)
        header, sd, _ = core.read_checkpoint(os.path.join(run, "model.pt"))
        if cfg["fixed_layers"] >= 1:  # fixed stem: bit-identical to the source file's
            assert torch.equal(sd["net.conv1.weight"].float(), files[src_name]["conv1.weight"])
            assert torch.equal(sd["net.bn1.running_var"].float(), files[src_name]["bn1.running_var"])
        robust = cfg["eps_source"] > 0
        assert np.allclose(header.mean, ROBUST_MEAN if robust else core.IMAGENET_MEAN)
    # 4. report: every run listed; nothing missing
    assert cli.main(["report", "--split", "S1", *common, *data]) == 0
    assert "not finished" not in capsys.readouterr().out
    rows = _results(os.path.join(root, "report", "results.csv"))
    assert {r["strategy"] for r in rows} == {"ST", "AT", "ST-FT", "ST-AFT", "AT-FT", "AT-AFT"}
    sweeps = _results(os.path.join(root, "report", "sweeps.csv"))
    assert sorted(int(r["L"]) for r in sweeps if r["sweep"] == "layers") == [0, 4]
    assert sorted(float(r["eps_source"]) for r in sweeps if r["sweep"] == "eps") == [0.05, 0.5]
    # 5. export -> the node's estimator answers a frame
    model_path = str(tmp_path / "paper-S1-ATFT.pt")
    assert cli.main(["export", "--split", "S1", "--strategy", "AT-FT", "--out", model_path, *common, *data]) == 0
    _, header = core.load_classifier(model_path)
    assert header.training["source"]["name"] == "robust-l2-eps0.05"
    est = FillingEstimator(EstimatorConfig(model_path=model_path, segmentation_backend="full_frame"))
    frame = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    (result,) = est.predict(frame)
    assert result.label in core.CLASSES and len(result.probabilities) == 4


def test_trainer_crops_are_the_node_crops(tmp_path):
    """A non-square crop: the manifest loader's pixels equal the node's crop rule (full frame box)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (30, 17, 3), dtype=np.uint8)
    (tmp_path / "crops").mkdir()
    assert cv2.imwrite(str(tmp_path / "crops" / "a.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    (tmp_path / "m.csv").write_text("image,container,filling,level,occlusion,transparency,view\n"
                                    "crops/a.png,C3,water,50,0,transparent,1\n")
    loaded = load_manifest(str(tmp_path / "m.csv"), 24).images[0]
    node = core.crop_and_preprocess(img, [(0, 0, 17, 30)], 24, margin=0.0)[0]
    assert torch.equal(core.to_float(loaded), node)
    square = core.crop_image_to_square(img)
    assert square.shape == (30, 30, 3) and not square[:, :6].any() and np.array_equal(square[:, 6:23], img)
