#!/usr/bin/env python
"""Independent check of segmenters on real photographs nothing here was trained or tuned on.

scikit-image's sample photographs are reserved for this (docs/data.md): 14 photographs with no
container (a portrait, a brick wall, grass, gravel, a cat, a rocket, coins, text, ...) and one
real cup (``coffee.png``: an espresso cup on a saucer, its box annotated by hand below). For each
segmenter, as the node runs it (score >= ``--score``): false containers per no-container photo,
and on the cup photo the number of detections and the best box IoU with the cup. This is the
check issue 16 opened with; use it to report, never to choose settings.

The photographs come from the scikit-image wheel on the package index (``pip download``, no
install), unpacked once into ``runs/skimage``.

    .venv/bin/python bench/independent_photos.py [MODEL ...] [--backend learned] [--score 0.5]
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import zipfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench_backends import cpu_model  # noqa: E402

WHEEL = "scikit-image==0.26.0"
NEGATIVES = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "grass.png", "gravel.png",
             "hubble_deep_field.jpg", "moon.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg",
             "coins.png", "page.png", "text.png")
CUP_PHOTO = "coffee.png"
CUP_BOX = (172, 18, 410, 300)  # the cup with its handle, x0 y0 x1 y1 in the 600 x 400 photo (by hand)


def photos_dir(root: str) -> str:
    """``root/data`` holding the sample photographs, downloaded and unpacked on first use."""
    out = os.path.join(root, "data")
    if all(os.path.isfile(os.path.join(out, n)) for n in (*NEGATIVES, CUP_PHOTO)):
        return out
    wheels = glob.glob(os.path.join(root, "scikit_image-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "--only-binary", ":all:", "-q", "-d", root]
        if subprocess.run(cmd).returncode != 0:
            raise SystemExit(f"error: `{' '.join(cmd)}` failed: the sample photographs come from that wheel")
        wheels = glob.glob(os.path.join(root, "scikit_image-*.whl"))
    os.makedirs(out, exist_ok=True)
    with zipfile.ZipFile(wheels[0]) as z:
        for name in (*NEGATIVES, CUP_PHOTO):
            with z.open(f"skimage/data/{name}") as src, open(os.path.join(out, name), "wb") as dst:
                dst.write(src.read())
    return out


def load_rgb(path: str) -> np.ndarray:
    import cv2

    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"error: {path}: not an image")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def check(segment, data: str, score: float) -> dict:
    """False containers per no-container photo (and per photo), detections and best IoU on the cup."""
    from fillcls.evaluation import iou

    per = {n: sum(d.score >= score for d in segment(load_rgb(os.path.join(data, n)))) for n in NEGATIVES}
    cup = [d for d in segment(load_rgb(os.path.join(data, CUP_PHOTO))) if d.score >= score]
    return {"false_per_photo": sum(per.values()) / len(per), "false": per, "cup_detections": len(cup),
            "cup_best_iou": max((iou(d.box, CUP_BOX) for d in cup), default=0.0)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=["models/segmenter.onnx"], help="learned segmenter files")
    ap.add_argument("--backend", default="learned", choices=("learned", "threshold"),
                    help="segmentation backend (threshold: the models are ignored)")
    ap.add_argument("--score", type=float, default=0.5, help="the node's segmentation_score_threshold")
    ap.add_argument("--dir", default=os.path.join(REPO, "runs", "skimage"), help="where the photographs are kept")
    args = ap.parse_args(argv)
    from fillcls.segmentation import make_segmenter

    data = photos_dir(args.dir)
    print(f"# independent photographs (scikit-image {WHEEL.split('==')[1]} samples), score >= {args.score}; "
          f"CPU: {cpu_model()}")
    print("| segmenter | false containers per no-container photo (14) | photos with any | cup photo: detections | best IoU with the cup |")
    print("|---|---:|---:|---:|---:|")
    for model in (args.models if args.backend == "learned" else ["-"]):
        kw = {"model": model, "inference_backend": "auto"} if args.backend == "learned" else {}
        r = check(make_segmenter(args.backend, **kw), data, args.score)
        name = model if args.backend == "learned" else args.backend
        print(f"| {name} | {r['false_per_photo']:.2f} | {sum(v > 0 for v in r['false'].values())} | "
              f"{r['cup_detections']} | {r['cup_best_iou']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
