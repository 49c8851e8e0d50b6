#!/usr/bin/env python
"""The segmenter as the node runs it, on frames it never saw (issue 16 item 3).

For one segmenter file (default: the shipped ``models/segmenter.onnx``, onnxruntime backend), with
the node's own post-processing (``fillcls.segmentation.learned`` + ``select`` at the score
threshold(s) given), on the *test* containers of ``--split`` (unseen shapes):

* ``procedural``: 640 x 480 frames of the 2-D renderer (its own backdrops);
* ``procedural+photo``: the same in front of held-out (``val``) photographs with cut-outs;
* ``pbr``: path-traced 320 x 240 frames (Mitsuba 3, held-out photo backdrops; cached in
  ``runs/cache``; slow: about 10 s a frame on 2 cores at 16 spp);
* ``pbr+hands`` (``--pbr-hands N``): the same with a hand holding every container;
* ``negatives``: held-out real photographs with cut-outs and no container at all (640 x 480).

Prints box recall / precision at IoU 0.5, false containers per frame (on the negatives also per
held-out background photo: a few backgrounds can carry the whole figure), and ms per 640 x 480
frame (segmentation only), with the CPU model. Needs ``make photos``.

    .venv/bin/python bench/eval_segmenter.py [--model models/segmenter.onnx] [--pbr 40] [--score 0.5,0.7]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench_backends import cpu_model as _cpu_name  # noqa: E402


def cpu_model() -> str:
    """The CPU's model name and core count."""
    return f"{_cpu_name()}, {os.cpu_count()} cores"


def frame_sets(args, test_ids, backgrounds: list[str]):
    """{name: (frames, true boxes)} of the benchmark; ``backgrounds`` receives the held-out
    background photo of each negative frame."""
    from fillcls.world.photos import no_container_frame
    from fillcls.world.render import render_frame

    sets = {}
    if args.procedural:
        hand_kw = {} if args.hands is None else {"hand_prob": args.hands}
        rows = [render_frame(np.random.default_rng([args.seed, i]), 640, 480, test_ids, 1 + i % 3, **hand_kw)
                for i in range(args.procedural)]
        sets["procedural"] = ([r[0] for r in rows], [[a["box"] for a in r[1]] for r in rows])
        rows = [render_frame(np.random.default_rng([args.seed + 1, i]), 640, 480, test_ids, 1 + i % 3,
                             photo_split="val", **hand_kw) for i in range(args.procedural)]
        sets["procedural+photo"] = ([r[0] for r in rows], [[a["box"] for a in r[1]] for r in rows])
    for name, n, seed, hands in (("pbr", args.pbr, 11, 0.0), ("pbr+hands", args.pbr_hands, 12, 1.0)):
        if n:
            from fillcls.world.pbr import make_frameset_pbr

            frames, _, boxes = make_frameset_pbr(n, test_ids, seed=seed, spp=args.spp, split="val",
                                                 cache_dir=args.cache_dir, log=print, hands=hands)
            sets[name] = (list(frames), boxes)
    if args.negatives:
        sets["negatives"] = ([no_container_frame(np.random.default_rng([args.seed + 2, i]), "val",
                                                 chosen=backgrounds)[0]
                              for i in range(args.negatives)], [[] for _ in range(args.negatives)])
    return sets


def per_background(dets_per_frame, backgrounds: list[str]) -> dict[str, dict]:
    """False containers per held-out background photo of the negative frames: {photo: {frames, false}}."""
    out: dict[str, dict] = {}
    for dets, name in zip(dets_per_frame, backgrounds):
        row = out.setdefault(name, {"frames": 0, "false": 0})
        row["frames"] += 1
        row["false"] += len(dets)
    return dict(sorted(out.items()))


def score(dets_per_frame, boxes_per_frame) -> dict:
    """Box recall / precision at IoU 0.5 and false containers per frame."""
    from fillcls.evaluation import count_matches

    tp = n_true = n_pred = 0
    for dets, boxes in zip(dets_per_frame, boxes_per_frame):
        n_true += len(boxes)
        n_pred += len(dets)
        tp += count_matches(boxes, [d.box for d in dets])
    frames = max(1, len(boxes_per_frame))
    return {"recall": tp / n_true if n_true else None, "precision": tp / n_pred if n_pred else None,
            "false_per_frame": (n_pred - tp) / frames, "containers": n_true, "frames": len(boxes_per_frame)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(REPO, "models", "segmenter.onnx"))
    ap.add_argument("--backend", default="auto", help="torch, onnxruntime or auto (by the file)")
    ap.add_argument("--split", default="S1")
    ap.add_argument("--containers", choices=("test", "train"), default="test",
                    help="the split's test containers (unseen shapes; the benchmark) or its training ones "
                         "(for tuning post-processing without touching the test set)")
    ap.add_argument("--hands", type=float, default=None,
                    help="procedural sets: probability of a hand holding each container (default: the renderer's)")
    ap.add_argument("--procedural", type=int, default=100, help="frames of each procedural set (0: skip)")
    ap.add_argument("--pbr", type=int, default=40, help="path-traced frames (0: skip)")
    ap.add_argument("--pbr-hands", type=int, default=0, help="path-traced frames with every container held by "
                    "a hand (boxes: the whole container, its hidden part included; 0: skip)")
    ap.add_argument("--negatives", type=int, default=100, help="no-container photo frames (0: skip)")
    ap.add_argument("--spp", type=int, default=16)
    ap.add_argument("--score", default="0.5", help="segmentation score thresholds (comma-separated)")
    ap.add_argument("--max-containers", type=int, default=5)
    ap.add_argument("--mask-threshold", type=float, default=0.5, help="the node's segmentation_mask_threshold")
    ap.add_argument("--seed", type=int, default=500)
    ap.add_argument("--cache-dir", default=os.path.join(REPO, "runs", "cache"))
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)

    from fillcls import segmentation
    from fillcls.world.containers import split_containers
    from fillcls.world.photos import PhotosMissingError, available

    if not available():
        print("error: no photographs: run `make photos` first", file=sys.stderr)
        return 2
    test_ids = list(split_containers(args.split)[1 if args.containers == "test" else 0])
    backgrounds: list[str] = []  # filled by frame_sets
    try:
        sets = frame_sets(args, test_ids, backgrounds)
    except PhotosMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seg = segmentation.make_segmenter("learned", model=args.model, inference_backend=args.backend, threads=0,
                                      mask_threshold=args.mask_threshold)
    print(f"# segmenter {args.model} (mask threshold {args.mask_threshold:g}) on {args.split}'s {args.containers} containers {', '.join(test_ids)}; CPU: {cpu_model()}")
    raw, ms = {}, []
    for name, (frames, _) in sets.items():
        dets = []
        for rgb in frames:
            t0 = time.perf_counter()
            dets.append(seg(rgb))
            if rgb.shape[:2] == (480, 640):
                ms.append((time.perf_counter() - t0) * 1e3)
        raw[name] = dets
    results = {"model": args.model, "split": args.split, "cpu": cpu_model(),
               "ms_per_640x480_frame_p50": float(np.median(ms)) if ms else None, "sets": {}}
    notes = []
    print("| score threshold | frames | containers | box recall@0.5 | precision | false containers / frame |")
    print("|---|---|---:|---:|---:|---:|")
    for thr in [float(v) for v in args.score.split(",")]:
        for name, (frames, boxes) in sets.items():
            chosen = [segmentation.select(d, thr, args.max_containers) for d in raw[name]]
            s = score(chosen, boxes)
            results["sets"][f"{name}@{thr:g}"] = s
            pct = lambda v: "–" if v is None else f"{100 * v:.1f} %"  # noqa: E731
            print(f"| {thr:g} | {name} ({s['frames']}) | {s['containers']} | {pct(s['recall'])} | "
                  f"{pct(s['precision'])} | {s['false_per_frame']:.3f} |")
            if name == "negatives":
                rows = s["per_background"] = per_background(chosen, backgrounds)
                notes.append(f"negatives at score >= {thr:g}, false containers / frames per held-out background: "
                             + "; ".join(f"{k} {v['false']} / {v['frames']}" for k, v in rows.items()))
    for line in notes:  # after the table
        print(line)
    if ms:
        print(f"segmentation p50 {results['ms_per_640x480_frame_p50']:.1f} ms per 640 x 480 frame")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
