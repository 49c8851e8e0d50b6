"""``python -m training compare``: classifiers side by side on their splits' unseen test containers.

For each model (a project checkpoint: a run's ``model.pt`` or an export) the split it was trained on
is read from its header; the model is then tested on that split's *test* containers (shapes it never
saw) of both renderers:

* ``procedural``: the 2-D renderer's test crops of the preset (as ``train`` / ``evaluate`` use),
* ``pbr``: path-traced crops (:func:`fillcls.world.pbr.make_cropset_pbr`, held-out photo backdrops),

and reports clean accuracy, accuracy under L2 PGD (the preset's ``eval_eps`` of the split,
``eval_steps`` steps) and under four common corruptions at one severity, with the parameters of
ImageNet-C (Hendrycks & Dietterich, ICLR 2019) scaled to the crop size: Gaussian noise, Gaussian
blur, brightness, JPEG. Prints a markdown table; ``--json`` keeps every figure.

    python -m training compare runs/cpu/S1/ST_et0/model.pt runs/cpu/S1/AT-FT_L1_es0.05_et0/model.pt \\
        --preset cpu --pbr 320 --json runs/compare.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

#: ImageNet-C parameters at severities 1..5 (224 px images, values in [0, 1]).
SEVERITIES = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),  # std of additive noise
    "gaussian_blur": (1, 2, 3, 4, 6),  # sigma in pixels at 224 px
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),  # added to V of HSV
    "jpeg": (25, 18, 15, 10, 7),  # JPEG quality
}
CORRUPTIONS = tuple(SEVERITIES)


def corrupt(images: torch.Tensor, kind: str, severity: int = 3, seed: int = 0) -> torch.Tensor:
    """``images`` (N x 3 x S x S uint8) under one corruption of ImageNet-C at ``severity`` (1..5);
    the blur's sigma is scaled by S / 224. Deterministic per ``seed``."""
    if kind not in SEVERITIES:
        raise ValueError(f"unknown corruption {kind!r}; choose from {', '.join(CORRUPTIONS)}")
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be in 1..5, got {severity}")
    c = SEVERITIES[kind][severity - 1]
    x = images.permute(0, 2, 3, 1).numpy()  # N x S x S x 3 RGB uint8
    if kind == "gaussian_noise":
        noise = np.random.default_rng(seed).normal(0.0, c, x.shape)
        out = np.clip(x / 255.0 + noise, 0, 1) * 255
    elif kind == "gaussian_blur":
        sigma = c * x.shape[1] / 224.0
        out = np.stack([cv2.GaussianBlur(im, (0, 0), sigma) for im in x])
    elif kind == "brightness":
        out = []
        for im in x:
            hsv = cv2.cvtColor(im.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
            hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
            out.append(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255)
        out = np.stack(out)
    else:
        out = []
        for im in x:
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(im, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(c)])
            out.append(cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
        out = np.stack(out)
    out = np.asarray(out)
    return torch.from_numpy(np.clip(out + 0.5, 0, 255).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()


def pbr_test_set(containers: Sequence[str], size: int, n: int, cache_dir: str, seed: int = 7, spp: int = 16,
                 chunk: int = 40, log: Callable[[str], None] = print):
    """The ``containers``' crops among ``n`` path-traced crops of all eight containers (held-out photo
    backdrops, rendered at 64 px in chunks of ``chunk`` and cached; resized to ``size``):
    a :class:`training.data.CropSet`."""
    from fillcls.core import CLASSES, resize_uint8
    from fillcls.world.pbr import make_cropset_pbr
    from training.data.base import CropSet

    images, labels, metas, t0 = [], [], [], time.perf_counter()
    for start in range(0, n, chunk):
        x, y, m = make_cropset_pbr(min(chunk, n - start), 64, seed=seed, spp=spp, split="val",
                                   cache_dir=cache_dir, start=start)
        images.append(x)
        labels.append(y)
        metas += m
        log(f"[compare] pbr crops {start + len(m)}/{n} ({time.perf_counter() - t0:.0f} s)")
    x, y = torch.cat(images), torch.cat(labels)
    keep = [i for i, m in enumerate(metas) if m["container"] in containers]
    x = x[keep]
    if size != 64:
        x = torch.stack([resize_uint8(im.permute(1, 2, 0).numpy(), size) for im in x])
    return CropSet(images=x, labels=y[keep], containers=[metas[i]["container"] for i in keep], classes=list(CLASSES))


def score(model, test_set, eps: float, preset, severity: int = 3) -> dict:
    """Clean / PGD / corruption accuracies of ``model`` on one CropSet."""
    from training import engine

    options = engine.eval_options(preset)
    m = engine.evaluate(model, test_set, eps=eps, **options)
    row = {"n": len(test_set), "clean": m["acc"], "pgd": m["robust_acc"], "per_container": m["per_container"]}
    for kind in CORRUPTIONS:
        corrupted = dataclasses.replace(test_set, images=corrupt(test_set.images, kind, severity))
        row[kind] = engine.evaluate(model, corrupted, **options)["acc"]
    row["corruption_mean"] = float(np.mean([row[k] for k in CORRUPTIONS]))
    return row


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def markdown(rows: list[dict]) -> str:
    """The comparison as a markdown table (one line per model and renderer)."""
    head = ("| split | model | renderer | crops | clean | PGD (ε) | noise | blur | brightness | JPEG | "
            "corruptions mean |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['split']} | {r['name']} | {r['renderer']} | {r['n']} | {_pct(r['clean'])} | "
                     f"{_pct(r['pgd'])} ({r['eps']:g}) | {_pct(r['gaussian_noise'])} | {_pct(r['gaussian_blur'])} | "
                     f"{_pct(r['brightness'])} | {_pct(r['jpeg'])} | {_pct(r['corruption_mean'])} |")
    return "\n".join(lines)


def compare(paths: Sequence[str], preset, cache_dir: str, n_pbr: int, severity: int = 3,
            log: Callable[[str], None] = print) -> list[dict]:
    """One row per (model, renderer): see the module docstring."""
    from fillcls import core
    from training import engine
    from training.data import split_containers

    rows = []
    for path in paths:
        model, header = core.load_classifier(path, "cpu")
        split = (header.training or {}).get("split")
        if split not in ("S1", "S2", "S3"):
            raise ValueError(f"{path}: its header names no split (training.split), so its unseen containers are unknown")
        if header.input_size != preset.size:
            raise ValueError(f"{path} takes {header.input_size} px crops but the preset makes {preset.size} px ones: "
                             f"add --size {header.input_size}")
        name = f"{header.training.get('strategy', '?')}" + (f" ε_s {header.training['eps_source']:g}"
                                                            if header.training.get("eps_source") else "")
        eps = float(preset.eval_eps.get(split, 0.0))
        sets = {"procedural": engine.load_split(preset, split, cache_dir)[1]}
        if n_pbr:
            sets["pbr"] = pbr_test_set(split_containers(split)[1], preset.size, n_pbr, cache_dir, log=log)
        for renderer, test_set in sets.items():
            row = {"path": path, "split": split, "name": name, "renderer": renderer, "eps": eps,
                   **score(model, test_set, eps, preset, severity)}
            log(f"[compare] {path} {renderer}: clean {_pct(row['clean'])} %, PGD {_pct(row['pgd'])} %, "
                f"corruptions {_pct(row['corruption_mean'])} %")
            rows.append(row)
    return rows


def run(args: argparse.Namespace, ctx: dict) -> int:
    """``compare`` command (``ctx``: the preset context of :mod:`training.cli`); returns the exit code."""
    from fillcls.atomic import atomic_write
    from fillcls.core import CheckpointError

    try:
        rows = compare(args.models, ctx["preset"], ctx["cache_dir"], args.pbr, args.severity)
    except (ValueError, CheckpointError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = markdown(rows)
    print(table)
    if args.json:
        text = json.dumps({"severity": args.severity, "rows": rows}, indent=1)
        atomic_write(args.json, lambda f: f.write(text))
    if args.markdown:
        atomic_write(args.markdown, lambda f: f.write(table + "\n"))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``compare`` options of its own (the preset and run options come from :mod:`training.cli`)."""
    p.add_argument("models", nargs="+", help="project checkpoints (a run's model.pt or an exported .pt)")
    p.add_argument("--pbr", type=int, default=0, metavar="N",
                   help="also test on the unseen containers among N path-traced crops of all eight (0: skip)")
    p.add_argument("--severity", type=int, default=3, choices=range(1, 6), help="corruption severity (ImageNet-C)")
    p.add_argument("--json", default="", help="write every figure here")
    p.add_argument("--markdown", default="", help="write the table here")
