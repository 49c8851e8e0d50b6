"""Pack what a GPU segmenter run needs into a folder small enough to travel to a lent GPU machine.

Writes ``OUT/photos`` (the *train* split of ``make photos``, backgrounds at most 960 px as JPEG,
cut-outs at most 320 px on their long side as lossy WebP with alpha, with its own ``index.json``: point
``$FILLCLS_PHOTOS`` at it) and ``OUT/frames`` (``--pbr N`` path-traced training frames of the
``mix`` preset from the render cache as ``NAME.jpg`` + ``NAME.mask.png`` with one label per
container, for ``segtrain --frames-dir``). Validation photographs are never packed: they stay here
for the evaluation. ``--quality travel``: smaller images (backgrounds at most 720 px).

    .venv/bin/python scripts/pack_gpu_data.py --out .gpu --pbr 300
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fillcls.world import photos  # noqa: E402


def _shrink(img, longest: int):
    h, w = img.shape[:2]
    f = longest / max(h, w)
    return img if f >= 1 else cv2.resize(img, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)


#: (background's longest side, its JPEG quality, cut-outs' WebP quality, path-traced frames' JPEG quality)
QUALITY = {"default": (960, 88, 85, 85),
           # small enough to travel beside the repository to a lent GPU machine (64 MiB in all)
           "travel": (720, 74, 72, 76)}


def pack_photos(out: Path, quality: str = "default") -> int:
    """The train-split photos, shrunk, with an index of them alone; returns the bytes written."""
    side, jpeg, webp, _ = QUALITY[quality]
    root = photos.photos_root()
    index = json.loads((root / "index.json").read_text())
    rows = [r for r in index["photos"] if r["split"] == "train"]
    for r in rows:
        img = cv2.imread(str(root / r["file"]), cv2.IMREAD_UNCHANGED)
        if r["kind"] == "cutout":
            r["file"] = str(Path(r["file"]).with_suffix(".webp"))
        dst = out / r["file"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        if r["kind"] == "background":
            cv2.imwrite(str(dst), _shrink(img, side), [cv2.IMWRITE_JPEG_QUALITY, jpeg])
        else:
            cv2.imwrite(str(dst), _shrink(img, 320), [cv2.IMWRITE_WEBP_QUALITY, webp])
    (out / "index.json").write_text(json.dumps({**index, "photos": rows}, indent=1))
    return sum(f.stat().st_size for f in out.rglob("*") if f.is_file())


def pack_frames(out: Path, n: int, cache_dir: str, quality: str = "default") -> int:
    """``n`` cached path-traced training frames of the ``mix`` preset as jpg + mask png (one label per
    container, for a box head: :func:`training.segtrain.instance_labels`)."""
    from training.data import split_containers
    from training.segtrain import PRESETS, instance_labels, pbr_frameset

    cfg = PRESETS["mix"]
    train_ids, _ = split_containers(cfg.split)
    frames, masks, boxes = pbr_frameset(cfg, train_ids, n, "train", cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, (f, m, b) in enumerate(zip(frames, masks, boxes)):
        cv2.imwrite(str(out / f"pbr{i:04d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, QUALITY[quality][3]])
        cv2.imwrite(str(out / f"pbr{i:04d}.mask.png"), instance_labels(m, b))
    return sum(f.stat().st_size for f in out.iterdir())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".gpu", help="folder to write (emptied first)")
    ap.add_argument("--pbr", type=int, default=300, help="path-traced training frames to pack (0: none)")
    ap.add_argument("--cache-dir", default=os.path.join("runs", "cache"))
    ap.add_argument("--quality", choices=sorted(QUALITY), default="default",
                    help="travel: smaller images (backgrounds <= 720 px), for a pack that must travel to a GPU "
                         "machine beside the repository within 64 MiB")
    a = ap.parse_args(argv)
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    size = pack_photos(out / "photos", a.quality)
    print(f"photos: {size / 2**20:.1f} MiB in {out / 'photos'}")
    if a.pbr:
        size = pack_frames(out / "frames", a.pbr, a.cache_dir, a.quality)
        print(f"path-traced frames: {a.pbr}, {size / 2**20:.1f} MiB in {out / 'frames'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
