"""training.robustness: the ImageNet-C corruptions and `python -m training compare` (tiny sizes)."""

import json

import numpy as np
import pytest
import torch

from helpers import make_checkpoint
from training import cli
from training.robustness import CORRUPTIONS, corrupt


def test_corruptions_change_images_deterministically():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(3, 3, 32, 32, generator=g) * 200 + 20).to(torch.uint8)
    for kind in CORRUPTIONS:
        y = corrupt(x, kind)
        assert y.shape == x.shape and y.dtype == torch.uint8
        assert torch.equal(y, corrupt(x, kind))  # deterministic
        assert (y.int() - x.int()).abs().float().mean() > 0.5, kind
    assert corrupt(x, "brightness").float().mean() > x.float().mean()
    assert (corrupt(x, "gaussian_blur", 5).float().std() < corrupt(x, "gaussian_blur", 1).float().std())
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(x, "fog")
    with pytest.raises(ValueError, match="severity"):
        corrupt(x, "jpeg", 6)


def test_compare_command(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "m.pt", input_size=16, training={"split": "S2", "strategy": "ST"})
    out = tmp_path / "cmp.json"
    runs = ["--runs", str(tmp_path / "runs"), "--n-samples", "56"]  # own data: other tests check the cache
    assert cli.main(["compare", ckpt, "--preset", "tiny", *runs, "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| S2 | ST | procedural |" in table
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 1 and rows[0]["n"] > 0
    assert all(0 <= rows[0][k] <= 1 for k in ("clean", "pgd", "corruption_mean", *CORRUPTIONS))
    assert set(rows[0]["per_container"]) <= {"C5", "C6", "C8"}  # S2's unseen containers only
    bad = make_checkpoint(tmp_path / "nosplit.pt", input_size=16)
    assert cli.main(["compare", bad, "--preset", "tiny", *runs]) == 2
    assert "names no split" in capsys.readouterr().err
    assert np.isfinite(rows[0]["clean"])
