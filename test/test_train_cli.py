"""`python -m training`: help of every command, presets, extension hook, study -> report -> export."""

import csv
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from fillcls import core
from helpers import quiet, toy_cropset
from training import cli, engine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("train", "sweep", "study", "evaluate", "report", "export", "presets")


HELP_LOOP = """
import contextlib, io, sys
from training.cli import main
for cmd in sys.argv[1:]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            main([cmd, "--help"])
        except SystemExit as exc:
            assert exc.code == 0, cmd
    print(f"=== {cmd}\\n{buf.getvalue()}")
"""


def test_help_of_every_command():
    """`python -m training [train] --help` as real entry points; every command's help in a third
    process (importing torch once instead of once per command)."""
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in ([sys.executable, "-m", "training", "--help"],
                         [sys.executable, "-m", "training", "train", "--help"],
                         [sys.executable, "-c", HELP_LOOP, *COMMANDS])]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out)
    assert all(c in outs[0] for c in COMMANDS)
    sections = dict(part.split("\n", 1) for part in outs[2].split("=== ")[1:])
    assert set(sections) == set(COMMANDS)
    for c in ("train", "study", "sweep"):
        assert "--epochs" in sections[c] and "--eps-source" in sections[c] and "--resume" in sections[c]
    assert sections["train"].strip() == outs[1].strip()
    assert all(text.startswith("usage: python -m training") for text in sections.values())


def test_presets_command_prints_the_diff(capsys):
    assert cli.main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "cpu: differs from paper" in out and "size" in out and "224" in out
    assert cli.main(["presets", "--show", "cpu"]) == 0
    assert "lr_transfer" in capsys.readouterr().out


def test_preset_overrides_and_run_root():
    args = cli.build_parser().parse_args(
        ["train", "--preset", "tiny", "--strategy", "AT", "--epochs", "5", "--set", "lr_scratch=0.2",
         "--eps-source", "0.5", "--sweep-eps", "0.1,1"])
    name, p = cli.preset_from_args(args)
    assert (name, p.epochs, p.lr_scratch, p.sweep_eps) == ("tiny", 5, 0.2, (0.1, 1.0))
    assert p.eps_source == {"S1": 0.5, "S2": 0.5, "S3": 0.5}
    root = cli.run_root(args, name, p)
    assert os.path.basename(root).startswith("tiny-") and root != os.path.join("runs", "tiny")
    plain = cli.build_parser().parse_args(["train", "--preset", "tiny", "--strategy", "AT",
                                           "--sweep-eps", "0.1"])
    assert cli.run_root(plain, *cli.preset_from_args(plain)) == os.path.join("runs", "tiny")
    with pytest.raises(SystemExit):
        cli.preset_from_args(cli.build_parser().parse_args(["train", "--strategy", "ST", "--set", "nope=1"]))


def test_extension_modules_register_commands(monkeypatch):
    def register(sub):
        p = sub.add_parser("pretrain", help="fake")
        p.set_defaults(func=lambda a: 7)

    monkeypatch.setitem(sys.modules, "training.pretrain", types.SimpleNamespace(register=register))
    assert cli.main(["pretrain"]) == 7

    real = cli.importlib.import_module

    def broken(name):
        if name == "training.segtrain":
            raise ModuleNotFoundError("No module named 'segdeps'", name="segdeps")
        return real(name)

    monkeypatch.setattr(cli.importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser()


def test_study_report_export_evaluate(tmp_path, monkeypatch, capsys):
    """The tiny study on S1 through the CLI (toy data), then report, export, evaluate, resume."""
    monkeypatch.setattr(engine, "load_split", lambda preset, split, cache_dir=None: (
        toy_cropset(24, preset.size, 0, ("C1", "C2", "C3")), toy_cropset(16, preset.size, 1, ("C6", "C7"))))
    runs = str(tmp_path / "runs")
    src = cli.default_source_dir(runs, "tiny")
    torch.manual_seed(1)
    model = core.build_model("resnet18")
    engine.fit(model, toy_cropset(32, 16, 5), epochs=1, lr=0.05, batch_size=16, log=quiet)
    for eps in (0, 0.05, 0.5):
        core.save_checkpoint(os.path.join(src, f"source_resnet18_eps{eps:g}.pt"), model.state_dict(),
                             core.CheckpointHeader(input_size=16))
    common = ["--preset", "tiny", "--runs", runs, "--device", "cpu"]
    assert cli.main(["study", "--split", "S1", *common]) == 0
    root = os.path.join(runs, "tiny")
    report = os.path.join(root, "report")
    with open(os.path.join(report, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert {r["strategy"] for r in rows} == {"ST", "AT", "ST-FT", "ST-AFT", "AT-FT", "AT-AFT"}
    assert {r["container"] for r in rows} == {"C6", "C7", "all"}
    assert all(0 <= float(r["acc"]) <= 1 for r in rows)
    with open(os.path.join(report, "sweeps.csv")) as f:
        sweeps = list(csv.DictReader(f))
    assert sorted(int(r["L"]) for r in sweeps if r["sweep"] == "layers") == [0, 4]
    assert sorted(float(r["eps_source"]) for r in sweeps if r["sweep"] == "eps") == [0.05, 0.5]
    from PIL import Image

    for fig in ("fig5.png", "fig6.png"):
        with Image.open(os.path.join(report, fig)) as im:
            im.verify()
            assert im.size[0] > 100
    assert "| AT→FT |" in open(os.path.join(report, "results.md")).read()

    # everything finished: a re-run trains nothing; report over all splits lists the missing ones
    capsys.readouterr()
    assert cli.main(["study", "--split", "S1", "--dry-run", *common]) == 0
    assert all(line.startswith("done") for line in capsys.readouterr().out.splitlines()[1:])
    assert cli.main(["report", *common]) == 0
    assert "planned runs not finished" in capsys.readouterr().out

    out = str(tmp_path / "model.pt")
    assert cli.main(["export", "--split", "S1", "--strategy", "AT->FT", "--out", out, *common]) == 0
    model, header = core.load_classifier(out)
    assert header.training["strategy"] == "AT→FT" and header.training["split"] == "S1"
    assert header.training["L"] == 1 and header.training["eps_source"] == 0.05
    assert header.input_size == 16 and header.model_id == "tiny-S1-AT-FT_L1_es0.05_et0"
    half = str(tmp_path / "half.pt")  # float16 storage: half the size, same predictions (to fp16 precision)
    assert cli.main(["export", "--split", "S1", "--strategy", "AT->FT", "--out", half, "--half", *common]) == 0
    model16, _ = core.load_classifier(half)
    assert os.path.getsize(half) < 0.6 * os.path.getsize(out)
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model16(x), model(x), atol=2e-2, rtol=2e-2)
    onnx_out = str(tmp_path / "model.onnx")  # the onnxruntime backend's format: same header, same answers
    assert cli.main(["export", "--split", "S1", "--strategy", "AT->FT", "--out", onnx_out, "--format", "onnx",
                     *common]) == 0
    from fillcls import backends

    runner, onnx_header = backends.load_classifier_runner(onnx_out, "onnxruntime")
    assert onnx_header == header
    with torch.no_grad():
        np.testing.assert_allclose(runner(x.numpy()), torch.softmax(model(x), 1).numpy(), atol=1e-4)
    assert cli.main(["evaluate", "--split", "S1", "--checkpoint", out, "--out", str(tmp_path / "m.json"),
                     *common]) == 0
    assert "acc" in capsys.readouterr().out and os.path.isfile(tmp_path / "m.json")

    # a missing source model: a clear error naming the pretrain command
    with pytest.raises(SystemExit, match="pretrain"):
        cli.main(["train", "--split", "S2", "--strategy", "AT-FT", *common])


def test_train_tiny_on_procedural_data(tmp_path, capsys):
    """`train` end to end on the real (procedural) data pipeline of the tiny preset."""
    pytest.importorskip("training.data.procedural")
    runs = str(tmp_path / "runs")
    assert cli.main(["train", "--preset", "tiny", "--strategy", "AT", "--split", "S3", "--runs", runs,
                     "--device", "cpu"]) == 0
    run_dir = os.path.join(runs, "tiny", "S3", "AT_et0.5")
    res = engine.load_result(run_dir)
    assert res is not None and res["n_test"] > 0
    assert set(res["metrics"]["per_container"]) <= {"C1", "C4", "C7"}
    assert os.path.isfile(os.path.join(runs, "cache", os.listdir(os.path.join(runs, "cache"))[0]))
    assert "S3  AT_et0.5" in capsys.readouterr().out
