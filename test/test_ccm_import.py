"""training.data.ccm_import on stand-in C-CCM trees generated in tmp_path."""

import os

import cv2
import numpy as np
import pytest

from fillcls.world.containers import CCM_CLASS_COUNTS, CCM_CONTAINER_COUNTS
from training.data.ccm import counts, load_manifest, read_manifest
from training.data.ccm_import import (CCMLayoutError, CountMismatchError, import_ccm, main,
                                      parse_container_map)

LEVEL_CODE = {"empty": 0, "half": 1, "full": 2}


def _png(path, value=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.full((6, 4, 3), value, np.uint8))


def _quiet(_):
    pass


def _tree(root, plan):
    """plan: {container: {level: n}}; CCM-named crops in per-container folders (C-CCM/C3/...)."""
    want_c, want_k = {}, {}
    i = 0
    for cid, levels in plan.items():
        for level, n in levels.items():
            for _ in range(n):
                fu = LEVEL_CODE[level]
                fi = 0 if level == "empty" else 1 + i % 3
                name = f"s{i % 3}_fi{fi}_fu{fu}_b{i % 2}_l{i % 2}_c{1 + i % 3}_{i:05d}.png"
                _png(root / "C-CCM" / cid / name, i % 255)
                i += 1
            want_c[cid] = want_c.get(cid, 0) + n
            cls = "unknown" if cid in ("C1", "C2") else level
            want_k[cls] = want_k.get(cls, 0) + n
    return want_c, want_k


PLAN = {"C1": {"half": 2, "full": 1}, "C2": {"empty": 1}, "C3": {"empty": 1, "half": 2, "full": 2},
        "C4": {"half": 1, "full": 1}, "C5": {"empty": 1, "half": 1}, "C6": {"full": 2},
        "C7": {"half": 2}, "C8": {"empty": 1, "full": 1}}


def test_folder_layout_writes_manifest(tmp_path):
    want_c, want_k = _tree(tmp_path / "release", PLAN)
    out = tmp_path / "data" / "manifest.csv"
    res = import_ccm(tmp_path / "release", out, reference=(want_c, want_k), log=_quiet)
    assert res.manifest == str(out) and not res.mismatches
    got = counts(str(out))
    assert got["containers"] == want_c
    assert {k: v for k, v in got["classes"].items() if v} == want_k
    rows = read_manifest(str(out))
    assert all(not os.path.isabs(r) for r in (line.split(",")[0] for line in out.read_text().splitlines()[1:]))
    c1 = [r for r in rows if r["container"] == "C1"]
    assert {r["class"] for r in c1} == {"unknown"} and {r["transparency"] for r in c1} == {"opaque"}
    assert {r["level"] for r in c1} == {"half", "full"}  # the true level is kept, the label is unknown
    c3 = [r for r in rows if r["container"] == "C3"]
    assert {r["filling"] for r in c3 if r["class"] == "empty"} == {"none"}
    assert {r["filling"] for r in c3 if r["class"] != "empty"} <= {"pasta", "rice", "water"}
    assert {r["view"] for r in rows} <= {"1", "2", "3"}
    cs = load_manifest(str(out), 8)
    assert len(cs) == sum(want_c.values())


def test_mismatch_refused_unless_forced_and_dry_run(tmp_path, capsys):
    _tree(tmp_path / "release", PLAN)
    out = tmp_path / "manifest.csv"
    lines = []
    res = import_ccm(tmp_path / "release", out, dry_run=True, log=lines.append)
    text = "\n".join(lines)
    assert "1623" in text and "3262" in text  # the published counts beside ours
    assert "container C1: 3 crops, published 1623" in text
    assert res.manifest is None and not out.exists()
    with pytest.raises(CountMismatchError, match="--force"):
        import_ccm(tmp_path / "release", out, log=_quiet)
    assert not out.exists()
    assert import_ccm(tmp_path / "release", out, force=True, log=_quiet).manifest == str(out)
    assert main([str(tmp_path / "release"), "--out", str(out), "--dry-run"]) == 1
    assert "counts differ" in capsys.readouterr().out


def test_published_counts_pass_without_force(tmp_path):
    """10,216 (empty) files laid out with exactly C-CCM's counts: the check passes."""
    transparent = [c for c in CCM_CONTAINER_COUNTS if c not in ("C1", "C2")]
    total_t = sum(CCM_CONTAINER_COUNTS[c] for c in transparent)
    left = {k: CCM_CLASS_COUNTS[k] for k in ("empty", "half", "full")}
    root = tmp_path / "c-ccm"
    for j, cid in enumerate(CCM_CONTAINER_COUNTS):
        n = CCM_CONTAINER_COUNTS[cid]
        if cid in ("C1", "C2"):
            split = {"opaque": n}
        elif cid == transparent[-1]:
            split = dict(left)
        else:
            split = {k: round(n * CCM_CLASS_COUNTS[k] / total_t) for k in ("empty", "half")}
            split["full"] = n - sum(split.values())
        for level, m in split.items():
            left[level] = left.get(level, 0) - m
            folder = root / cid / level
            folder.mkdir(parents=True)
            for i in range(m):
                (folder / f"{i:05d}.png").touch()
    out = tmp_path / "manifest.csv"
    res = import_ccm(root, out, log=_quiet)
    assert not res.mismatches and res.manifest == str(out)
    assert res.counts["containers"] == CCM_CONTAINER_COUNTS and res.counts["classes"] == CCM_CLASS_COUNTS
    assert any("without occlusion" in n for n in res.notes)


def test_csv_annotations(tmp_path):
    root = tmp_path / "release"
    rows = [("C3", 3, 2, 1, 1), ("4", 0, 0, 0, 2), ("C1", 2, 1, 0, 3), ("C7", 1, 1, 1, 1)]
    lines = ["image,container id,filling type,filling level,hand occlusion,view"]
    for i, (cid, fi, fu, occ, view) in enumerate(rows):
        _png(root / "crops" / f"{i:06d}.png")
        lines.append(f"crops/{i:06d}.png,{cid},{fi},{fu},{occ},{view}")
    (root / "annotations.csv").write_text("\n".join(lines) + "\n")
    (root / "ccm_train_annotation.csv").write_text("id,container id,filling level\n0,2,1\n")
    out = tmp_path / "m.csv"
    res = import_ccm(root, out, force=True, log=_quiet)
    got = {r["image"].split("/")[-1]: r for r in read_manifest(str(out))}
    assert (got["000000.png"]["container"], got["000000.png"]["filling"], got["000000.png"]["class"]) == ("C3", "water", "full")
    assert got["000000.png"]["occlusion"] == 1.0 and got["000000.png"]["view"] == "1"
    assert (got["000001.png"]["container"], got["000001.png"]["class"]) == ("C4", "empty")
    assert got["000002.png"]["class"] == "unknown"
    assert any("ccm_train_annotation.csv" in n and "no image column" in n for n in res.notes)

    # a CSV that disagrees with the path is an error, not a silent choice
    _png(root / "C5" / "half" / "x.png")
    (root / "more.csv").write_text("file,container,level\nC5/half/x.png,C5,90\n")
    with pytest.raises(CCMLayoutError, match="conflicting level"):
        import_ccm(root, out, force=True, log=_quiet)


def test_wrong_layout_fails_loudly_with_first_paths(tmp_path):
    root = tmp_path / "release"
    for i in range(14):
        _png(root / "images" / f"frame_{i:04d}.png")
    with pytest.raises(CCMLayoutError) as err:
        import_ccm(root, tmp_path / "m.csv", force=True, log=_quiet)
    msg = str(err.value)
    assert "14 problem(s) among 14 images" in msg and "and 4 more" in msg
    assert "frame_0000.png: no container id" in msg
    assert "Importing the real C-CCM" in msg
    assert len(err.value.bad) == 14
    assert not (tmp_path / "m.csv").exists()


def test_container_ids_outside_c1_c8_and_map(tmp_path):
    root = tmp_path / "release"
    _png(root / "C3" / "empty" / "a.png")
    _png(root / "C10" / "full" / "b.png")
    with pytest.raises(CCMLayoutError, match=r"container C10 outside C1..C8"):
        import_ccm(root, tmp_path / "m.csv", force=True, log=_quiet)
    res = import_ccm(root, tmp_path / "m.csv", force=True, container_map=parse_container_map("10=C7"), log=_quiet)
    assert res.counts["containers"] == {"C3": 1, "C7": 1}


def test_opaque_level(tmp_path):
    root = tmp_path / "release"
    _png(root / "C2" / "opaque" / "a.png")
    res = import_ccm(root, tmp_path / "m.csv", force=True, log=_quiet)
    assert res.counts["classes"]["unknown"] == 1
    _png(root / "C4" / "opaque" / "b.png")  # opaque on a transparent container: refused
    with pytest.raises(CCMLayoutError, match="transparent container C4"):
        import_ccm(root, tmp_path / "m.csv", force=True, log=_quiet)


def test_bad_container_map_option():
    with pytest.raises(Exception, match="expected ID=C<n>"):
        parse_container_map("10=seven")
