"""One run bookkeeping (training.runs) and the trainer's hardening: typed settings, one resume
policy for train / pretrain / segtrain, bad manifests, unwritable run directories, full disks."""

import errno
import os
import stat

import pytest
import torch

from fillcls import atomic
from fillcls.core import CheckpointError
from helpers import PRESET, quiet, toy_data
from training import cli, engine, runs
from training.config import FitConfig, Preset, RunConfig, get_preset, resolve_run
from training.data import write_dataset
from training.segtrain import PRESETS as SEG_PRESETS, train as segtrain

HEADER = "image,container,filling,level,occlusion,transparency,view\n"


def test_settings_round_trip_coerce_and_name_the_bad_field():
    p = get_preset("tiny")
    assert Preset.from_dict(p.to_dict()) == p and p.digest() == Preset.from_dict(p.to_dict()).digest()
    q = p.replace(epochs="3", eps_source="0.5", sweep_layers="0,2", hflip="false")
    assert (q.epochs, q.eps_source["S2"], q.sweep_layers, q.hflip) == (3, 0.5, (0, 2), False)
    with pytest.raises(ValueError, match="epochs"):
        p.replace(epochs="many")
    with pytest.raises(ValueError, match="unknown preset field"):
        p.replace(nope=1)
    cfg = resolve_run("tiny", p, "S1", "AT-FT")
    assert isinstance(cfg.settings, Preset)
    back = RunConfig.from_dict(cfg.to_dict())
    assert back.settings == p and back.identity() == cfg.identity()
    fc = cfg.fit_config()
    assert isinstance(fc, FitConfig) and (fc.lr, fc.eps, fc.fixed_layers) == (p.lr_transfer, 0.0, 1)


def test_resolve_device():
    assert runs.resolve_device("cpu") == "cpu"
    assert runs.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_segtrain_refuses_a_run_of_other_settings(tmp_path):
    cfg = SEG_PRESETS["tiny"].replace(train_frames=8, eval_frames=2, epochs=1)
    out = tmp_path / "seg"
    segtrain(cfg, out, log=quiet)
    with pytest.raises(runs.RunError, match="other settings"):
        segtrain(cfg.replace(epochs=2), out, log=quiet)
    assert cli.main(["segtrain", "--preset", "tiny", "--out", str(out), "--train-frames", "8",
                     "--eval-frames", "2", "--epochs", "2"]) == 2
    res = segtrain(cfg.replace(epochs=2), out, resume=False, log=quiet)  # --no-resume starts over
    assert res["config"]["epochs"] == 2


def test_segtrain_init_starts_from_a_finished_run(tmp_path):
    from fillcls.segnet import load_segnet

    cfg = SEG_PRESETS["tiny"].replace(train_frames=8, eval_frames=2, epochs=1)
    segtrain(cfg, tmp_path / "a", log=quiet)
    first = str(tmp_path / "a" / "segmenter.pt")
    logs = []
    segtrain(cfg.replace(init=first, lr=1e-9), tmp_path / "b", log=logs.append)
    assert any("starting from the weights of" in m for m in logs)
    a, _, _ = load_segnet(first)
    b, _, _ = load_segnet(tmp_path / "b" / "segmenter.pt")
    for (name, wa), wb in zip(a.state_dict().items(), b.state_dict().values()):
        if wa.is_floating_point() and "running" not in name:  # lr ~0: the weights barely move
            assert torch.allclose(wa, wb, atol=1e-4), name
    with pytest.raises(CheckpointError, match=r"segmenter.pt: a fillsegnet \(width 8, low stride \d\) segmenter"):
        segtrain(cfg.replace(init=first, width=16), tmp_path / "c", log=quiet)
    logs = []  # another input size: the network is fully convolutional, so it fine-tunes there
    segtrain(cfg.replace(init=first, input_h=72, input_w=96), tmp_path / "e", log=logs.append)
    assert any("trained at 80 x 60, fine-tuned here at 96 x 72" in m for m in logs)
    assert load_segnet(tmp_path / "e" / "segmenter.pt")[2] == (72, 96)
    with pytest.raises(CheckpointError, match="missing.pt"):
        segtrain(cfg.replace(init=str(tmp_path / "missing.pt")), tmp_path / "d", log=quiet)


def _manifest(tmp_path, rows):
    p = tmp_path / "m.csv"
    p.write_text(HEADER + "".join(r + "\n" for r in rows))
    return str(p)


def test_bad_manifest_is_one_error_before_training(tmp_path, capsys):
    ds = write_dataset(str(tmp_path / "ds"), 16, seed=2, size=16)
    good = os.path.join(os.path.dirname(ds), "crops", "000000.png")
    (tmp_path / "trunc.png").write_bytes(open(good, "rb").read()[:60])  # corrupt: truncated PNG
    rows = [f"{good},C5,water,50,0,transparent,1", f"{good},C9,water,50,0,transparent,1",
            "trunc.png,C3,none,0,0,transparent,2", "empty.png,C3,none,0,0,transparent,2"]
    (tmp_path / "empty.png").write_bytes(b"")
    rows += [f"gone{i}.png,C4,rice,90,0,transparent,3" for i in range(12)]
    path = _manifest(tmp_path, rows)
    runs_dir = str(tmp_path / "runs")
    with pytest.raises(SystemExit) as ex:
        cli.main(["train", "--preset", "tiny", "--strategy", "ST", "--data", path, "--runs", runs_dir,
                  "--device", "cpu"])
    msg = str(ex.value.code)
    assert msg.startswith("error: ") and path in msg
    assert "14 image(s) missing, unreadable or corrupt" in msg and "1 row(s) with a container id" in msg
    assert "'C9'" in msg and "trunc.png" in msg and "corrupt" in msg and "empty file" in msg
    assert "... and 5 more" in msg  # the first 10 of 15 problems are listed
    assert not os.path.exists(os.path.join(runs_dir, "tiny"))  # no run directory was made


def _no_run_files(root):
    found = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
             if f in ("config.json", "last.pt", "result.json", "model.pt") or ".tmp" in f]
    return found


def test_unwritable_run_directory_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, stat.S_IRUSR | stat.S_IXUSR)
    try:
        cfg = resolve_run("tiny", PRESET, "S1", "ST")
        train, test = toy_data(PRESET, "S1")
        with pytest.raises(runs.RunError, match=str(ro)):
            engine.run_one(cfg, train, test, engine.run_dir_for(ro, cfg), log=quiet)
    finally:
        os.chmod(ro, stat.S_IRWXU)
    assert os.listdir(ro) == []


def test_read_only_run_file_is_a_clear_error(tmp_path):
    """Works as root too: the run directory path is taken by a plain file."""
    cfg = resolve_run("tiny", PRESET, "S1", "ST")
    (tmp_path / "S1").write_text("not a directory")
    train, test = toy_data(PRESET, "S1")
    with pytest.raises(runs.RunError, match="cannot create the run directory"):
        engine.run_one(cfg, train, test, engine.run_dir_for(tmp_path, cfg), log=quiet)
    assert _no_run_files(tmp_path) == []


def _full_disk_at(monkeypatch, name):
    real = torch.save

    def save(obj, f, *a, **kw):
        target = getattr(f, "name", f)
        if name in os.path.basename(str(target)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save)


def test_full_disk_at_the_first_checkpoint_leaves_no_run(tmp_path, monkeypatch):
    _full_disk_at(monkeypatch, "last.pt")
    cfg = resolve_run("tiny", PRESET, "S1", "ST")
    train, test = toy_data(PRESET, "S1")
    run_dir = engine.run_dir_for(tmp_path, cfg)
    with pytest.raises(runs.RunError, match="No space left") as err:
        engine.run_one(cfg, train, test, run_dir, log=quiet)
    assert "last.pt" in str(err.value) and "nothing of it is kept" in str(err.value)
    assert not os.path.exists(run_dir) and _no_run_files(tmp_path) == []


def test_full_disk_at_the_model_keeps_only_a_resumable_state(tmp_path, monkeypatch):
    _full_disk_at(monkeypatch, "model.pt")
    cfg = resolve_run("tiny", PRESET, "S1", "ST")
    train, test = toy_data(PRESET, "S1")
    run_dir = engine.run_dir_for(tmp_path, cfg)
    with pytest.raises(runs.RunError, match="No space left") as err:
        engine.run_one(cfg, train, test, run_dir, log=quiet)
    assert "model.pt" in str(err.value) and "resume" in str(err.value)
    left = sorted(os.listdir(run_dir))
    assert left == ["config.json", "last.pt", "train.log"]  # no model.pt, no result.json, no temp file
    assert engine.run_status(str(tmp_path), cfg) == "partial"
    monkeypatch.undo()
    logs = []
    res = engine.run_one(cfg, train, test, run_dir, log=logs.append)  # disk freed: finishes the run
    assert res["history"]["resumed_from"] == PRESET.epochs and engine.run_status(str(tmp_path), cfg) == "done"


def test_full_disk_through_the_cli_exits_with_one_line(tmp_path, monkeypatch):
    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "replace", full)
    monkeypatch.setattr(engine, "load_split", lambda preset, split, cache_dir=None: toy_data(preset, split))
    runs_dir = str(tmp_path / "runs")
    with pytest.raises(SystemExit) as ex:
        cli.main(["train", "--preset", "tiny", "--strategy", "ST", "--runs", runs_dir, "--device", "cpu"])
    msg = str(ex.value.code)
    assert msg.startswith("error: ") and "config.json" in msg and "No space left" in msg
    assert _no_run_files(runs_dir) == []
