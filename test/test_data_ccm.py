"""Crop manifests: writing, loading, validation errors, counts and the command line."""

import csv
import os
import subprocess
import sys

import pytest
import torch

from fillcls.core import CLASSES
from training import data as D
from training.data.__main__ import main as cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = "image,container,filling,level,occlusion,transparency,view\n"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    return D.write_dataset(str(out), 24, seed=4, size=32)


def test_manifest_round_trip_is_exact(dataset):
    loaded = D.load_manifest(dataset, 32)
    made = D.make_cropset(24, 32, seed=4)
    assert torch.equal(loaded.images, made.images)  # PNG is lossless
    assert torch.equal(loaded.labels, made.labels) and list(loaded.containers) == list(made.containers)
    for row, m in zip(loaded.meta, made.meta):
        assert row["filling"] == m["filling"] and row["transparent"] == m["transparent"]
        assert row["occlusion"] == pytest.approx(m["occlusion"], abs=1e-3)
    assert D.counts(dataset) == D.counts(loaded) == D.counts(made)
    assert D.load_manifest(dataset, 16).images.shape == (24, 3, 16, 16)


def test_native_size_crops_load_at_any_size(tmp_path):
    path = D.write_dataset(str(tmp_path), 6, seed=1)  # crops kept at their native side
    rows = list(csv.DictReader(open(path)))
    assert [r["image"] for r in rows] == [f"crops/{i:06d}.png" for i in range(6)]
    cs = D.load_manifest(path, 24)
    assert cs.images.shape == (6, 3, 24, 24)
    for r, y in zip(rows, cs.labels.tolist()):  # opaque rows keep their true level, load as unknown
        assert (r["transparency"] == "opaque") == (y == CLASSES.index("unknown"))


def _manifest(tmp_path, rows, name="m.csv"):
    p = tmp_path / name
    p.write_text(HEADER + "".join(r + "\n" for r in rows))
    return str(p)


def test_missing_and_unreadable_images_are_all_listed(tmp_path, dataset):
    good = os.path.join(os.path.dirname(dataset), "crops", "000000.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    path = _manifest(tmp_path, [f"{good},C5,water,50,0,transparent,1",
                                "gone1.png,C5,water,50,0,transparent,1",
                                "broken.png,C3,none,0,0,transparent,2",
                                "sub/gone2.png,C1,rice,90,1,opaque,3"])
    with pytest.raises(D.MissingImagesError) as err:
        D.load_manifest(path, 16)
    msg = str(err.value)
    assert path in msg and "3 image(s)" in msg
    for name in ("gone1.png", "broken.png", "gone2.png"):
        assert name in msg
    assert len(err.value.bad) == 3 and isinstance(err.value, FileNotFoundError)


@pytest.mark.parametrize("row,column", [
    ("a.png,X9,water,50,0,transparent,1", "container"),
    ("a.png,C5,milk,50,0,transparent,1", "filling"),
    ("a.png,C5,water,70,0,transparent,1", "level"),
    ("a.png,C5,water,50,2,transparent,1", "occlusion"),
    ("a.png,C5,water,50,0,glassy,1", "transparency"),
    ("a.png,C5,water,50,0,transparent,", "view"),
])
def test_bad_rows_name_row_and_column(tmp_path, row, column):
    path = _manifest(tmp_path, ["a.png,C5,water,50,0,transparent,1", row])
    with pytest.raises(D.ManifestError) as err:
        D.read_manifest(path)
    assert "row 3" in str(err.value) and repr(column) in str(err.value) and path in str(err.value)


def test_missing_column_and_level_words(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("image,container,level\na.png,C1,50\n")
    with pytest.raises(D.ManifestError, match="missing column"):
        D.read_manifest(str(p))
    rows = D.read_manifest(_manifest(tmp_path, ["a.png,C5,water,half,0.25,transparent,2",
                                                "b.png,C1,pasta,90,1,opaque,c1",
                                                "c.png,C4,none,0%,0,transparent,4"]))
    assert [r["class"] for r in rows] == ["half", "unknown", "empty"]
    assert rows[0]["occluded"] and rows[0]["occlusion"] == 0.25
    assert rows[1]["level"] == "full"  # the annotation is kept, the class follows the paper
    assert D.read_manifest(_manifest(tmp_path, ["b.png,C1,pasta,90,1,opaque,1"]),
                           opaque_unknown=False)[0]["class"] == "full"


def test_counts_command_as_a_subprocess(dataset):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "training.data", "counts", dataset], capture_output=True,
                       text=True, cwd=REPO, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    c = D.counts(dataset)
    assert f"{c['total']} crops" in out
    for cid, n in c["containers"].items():
        line = next(ln for ln in out.splitlines() if ln.startswith(cid + " "))
        assert D.CONTAINER_NAMES[cid] in line and f" {n} " in line
        assert str(D.CCM_CONTAINER_COUNTS[cid]) in line  # reference beside it
    assert "10216" in out and str(D.CCM_CLASS_COUNTS["unknown"]) in out


def test_cli_errors_and_help(tmp_path, capsys):
    assert cli(["counts", str(tmp_path / "nope.csv")]) == 2
    assert "not found" in capsys.readouterr().err
    for cmd in ("generate", "frames", "counts", "contact-sheet"):
        with pytest.raises(SystemExit) as ex:
            cli([cmd, "--help"])
        assert ex.value.code == 0
        assert "usage" in capsys.readouterr().out


def test_cli_generate_and_contact_sheet(tmp_path, capsys):
    assert cli(["generate", "--out", str(tmp_path / "g"), "--n", "5", "--seed", "2", "--size", "24",
                "--containers", "C6,C7"]) == 0
    assert set(D.counts(str(tmp_path / "g" / "manifest.csv"))["containers"]) == {"C6", "C7"}
    assert cli(["contact-sheet", "--out", str(tmp_path / "s.png"), "--per-level", "1", "--tile", "32"]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    assert cli(["frames", "--out", str(tmp_path / "f"), "--n", "2", "--width", "160", "--height", "120",
                "--split", "S1", "--n-containers", "2"]) == 0
    assert len(open(tmp_path / "f" / "frames.jsonl").read().splitlines()) == 2


def test_opaque_level_and_unknown_container_ids_listed(tmp_path):
    rows = D.read_manifest(_manifest(tmp_path, ["a.png,C1,water,opaque,0,opaque,1",
                                                "b.png,C3,none,opaque,0,transparent,1"]))
    assert [r["class"] for r in rows] == ["unknown", "unknown"] and rows[0]["level"] == "unknown"
    path = _manifest(tmp_path, ["a.png,C5,water,50,0,transparent,1", "b.png,C9,water,50,0,transparent,1",
                                "c.png,C12,none,0,0,transparent,1"])
    for read in (D.read_manifest, D.counts):
        with pytest.raises(D.MissingImagesError) as err:
            read(path)
        msg = str(err.value)
        assert path in msg and "2 row(s) with a container id outside C1" in msg
        assert "row 3: unknown container id 'C9'" in msg and "row 4: unknown container id 'C12'" in msg
