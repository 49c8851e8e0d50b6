"""In-house source pretraining: tiny ladder end to end, skip when finished, resume after a kill."""

import os

import pytest
import torch

from fillcls import core
from training import pretrain
from training.sources import find_source, load_source_model, source_path


def _cli(*argv):
    from training.cli import main

    return main(["pretrain", *argv])


def test_tiny_ladder_end_to_end_then_skipped(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    assert _cli("--preset", "tiny", "--runs", runs, "--eps", "0", "0.5") == 0
    out_dir = os.path.join(runs, "sources", "tiny")  # the trainer's default --source-dir
    for eps in (0.0, 0.5):
        spec = find_source(out_dir, "resnet18", eps)
        model = load_source_model(spec)
        header, _, _ = core.read_checkpoint(spec.path)
        assert header.kind == "source" and header.input_size == 16
        assert list(header.classes) == ["ifs000", "ifs001", "ifs002", "ifs003"]
        assert model.net.fc.out_features == 4
        t = header.training
        assert t["dataset"] == "fractals" and t["eps_source"] == eps and t["n_classes"] == 4
        assert 0.0 <= t["source_acc"] <= 1.0
        assert (t["source_robust_acc"] is None) == (eps == 0)
        for key in ("epochs", "lr", "size", "per_class"):
            assert key in t
    assert "| 0.5 |" in capsys.readouterr().out
    mtime = os.path.getmtime(source_path(out_dir, "resnet18", 0.5))
    p = pretrain.PRESETS["tiny"]
    results = pretrain.pretrain_ladder(p, [0, 0.5], out_dir, preset_name="tiny",
                                       cache_dir=os.path.join(runs, "cache"))
    assert all(r["skipped"] for r in results)
    assert os.path.getmtime(source_path(out_dir, "resnet18", 0.5)) == mtime
    assert pretrain.status(p, 0.5, out_dir) == "done"
    # other settings: refused unless --no-resume
    with pytest.raises(pretrain.PretrainError, match="other settings"):
        pretrain.pretrain_ladder(p.replace(epochs=1), [0.5], out_dir, preset_name="tiny")
    assert _cli("--preset", "tiny", "--runs", runs, "--eps", "0.5", "--epochs", "1") == 2


class Killed(Exception):
    pass


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    p = pretrain.PRESETS["tiny"].replace(n_classes=3, per_class=8, test_per_class=2)
    cache = str(tmp_path / "cache")

    def kill_after_first_epoch(epoch, history):
        if epoch == 0:
            raise Killed()

    killed = str(tmp_path / "killed")
    with pytest.raises(Killed):
        pretrain.pretrain_ladder(p, [0.05], killed, cache_dir=cache, on_epoch=kill_after_first_epoch)
    assert not os.path.exists(source_path(killed, "resnet18", 0.05))
    assert pretrain.status(p, 0.05, killed) == "partial"
    (res,) = pretrain.pretrain_ladder(p, [0.05], killed, cache_dir=cache)
    assert not res["skipped"]
    log = open(os.path.join(killed, "runs", "eps0.05", "train.log")).read()
    assert "resuming after epoch 1/2" in log

    straight = str(tmp_path / "straight")
    pretrain.pretrain_ladder(p, [0.05], straight, cache_dir=cache)
    _, a, _ = core.read_checkpoint(source_path(killed, "resnet18", 0.05))
    _, b, _ = core.read_checkpoint(source_path(straight, "resnet18", 0.05))
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k


def test_presets_and_default_ladder():
    from training.config import get_preset

    assert pretrain.PRESETS["cpu"].size == get_preset("cpu").size
    assert pretrain.default_ladder("cpu") == (0.0, 0.05, 0.25, 0.5, 1.0)
    assert pretrain.PRESETS["paper"].size == 224 and pretrain.PRESETS["paper"].n_classes == 1000
    args = pretrain.build_parser().parse_args(["--preset", "tiny", "--epochs", "3", "--set", "lr=0.2"])
    p = pretrain.preset_from_args(args)
    assert p.epochs == 3 and p.lr == 0.2 and p.size == 16
