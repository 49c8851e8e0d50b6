"""``python -m training segtrain``: train the node's ``learned`` segmentation backend.

The network (:class:`fillcls.segnet.FillSegNet`, or the larger MobileNetV3 LR-ASPP
:class:`fillcls.segnet.SegLRASPP` with ``--arch``) learns container-foreground masks from the
procedural full camera frames (:func:`training.data.render_frame`) of a split's *training*
containers, and is evaluated on frames of its *test* containers (unseen shapes): mean mask IoU
and box recall / precision at IoU 0.5, with the node's own post-processing
(:func:`fillcls.segnet.instances`). Per-epoch checkpoints; ``--resume`` continues a killed run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from fillcls.atomic import WriteError
from fillcls.core import CheckpointError, read_checkpoint, save_checkpoint
from fillcls.evaluation import count_matches
from fillcls.segnet import (BOX_OUTPUTS, LRASPP_ARCH, SEGNET_ARCH, SEGNET_ARCHS, build_segnet, frame_to_input,
                           instances, load_segnet, segmenter_header, segmenter_outputs)
from fillcls.world import photos
from fillcls.world.photos import PhotoIndexError, PhotosMissingError
from training.runs import (DEFAULT_RUNS, RunDir, RunError, Settings, add_run_options, add_settings_options,
                           copy_file, setting, settings_from_args, setup_device)


def tqdm(iterable, **kw):
    """``tqdm.tqdm`` when installed (a progress bar on a terminal), else ``iterable`` itself."""
    try:
        from tqdm import tqdm as bar
    except ImportError:
        return iterable
    return bar(iterable, **kw)


@dataclass(frozen=True)
class SegConfig(Settings):
    """Settings of one segmenter training run (all overridable on the command line)."""

    WHAT: ClassVar[str] = "segtrain"

    split: str = setting("S1", "train on this split's training containers, evaluate on its test containers")
    train_frames: int = setting(1600, "procedural training frames")
    eval_frames: int = setting(200, "held-out frames of the test containers")
    epochs: int = setting(12, "training epochs")
    batch_size: int = setting(16, "frames per batch")
    lr: float = setting(3e-3, "peak learning rate (one-cycle AdamW)")
    width: int = setting(16, "channels of the first layer (network size)")
    # 320 x 240 input: box recall 94.7 % vs 83.4 % at 160 x 120 (thin flutes)
    input_h: int = setting(240, "network input height")
    input_w: int = setting(320, "network input width")
    frame_w: int = setting(640, "rendered frame width")
    frame_h: int = setting(480, "rendered frame height")
    max_containers: int = setting(3, "at most this many containers per training frame")
    photo_frames: float = setting(0.0, "fraction of training frames whose wall is a real photograph "
                                       "with photographic cut-outs on it (`make photos`, train split)")
    negative_frames: float = setting(0.0, "fraction of training frames that are a real photograph with "
                                          "cut-outs and no container (`make photos`, train split)")
    photo_eval_frames: int = setting(0, "also evaluate on this many frames of the test containers in "
                                        "front of held-out (val) photographs, and count false containers "
                                        "on as many held-out no-container photo frames (0 = skip)")
    pbr_frames: int = setting(0, "path-traced training frames added to the procedural ones (Mitsuba 3, "
                                 "1-3 training containers in front of train photographs; cached)")
    pbr_eval_frames: int = setting(0, "also evaluate on this many path-traced frames of the test containers "
                                      "(1-2 containers, held-out photographs; as bench/eval_segmenter.py)")
    pbr_spp: int = setting(8, "samples per pixel of the path-traced training frames")
    pbr_hand_frames: int = setting(0, "path-traced training frames with a hand holding every container, added "
                                      "to the others (cached apart from them)")
    init: str = setting("", "start from this segmenter checkpoint's weights (same network and width, any "
                            "input size) instead of random ones: fine-tune a finished run on more frames")
    arch: str = setting(SEGNET_ARCH, f"network: {SEGNET_ARCH} (0.3 M parameters) or {LRASPP_ARCH} "
                                     "(MobileNetV3-Large + LR-ASPP, 3.2 M, random init)")
    low_stride: int = setting(4, f"{LRASPP_ARCH}: output stride (4 or 8) of the detail features")
    frames_dir: str = setting("", "a folder of your own labelled frames added to the training frames: "
                                  "NAME.jpg / NAME.png and NAME.mask.png (non-zero = container)")
    frames_repeat: int = setting(1, "how many times each frame of frames_dir is repeated per epoch")
    aspect_jitter: float = setting(0.0, "stretch each training batch's aspect ratio by a random factor in "
                                        "[1/(1+a), 1+a] (zoom in along one axis, crop back): containers "
                                        "taller / wider than the training ones (0 = off)")
    random_shapes: float = setting(0.0, "fraction of procedural containers drawn with a random revolved shape "
                                        "(generic frusta, bowls, stems; aspect 0.4-3) instead of their own")
    box_head: bool = setting(False, "also regress, at every foreground pixel, the box of its container (4 more "
                                    "output channels; instances from the pixels' box votes: touching neighbours "
                                    "apart, a container's parts cut by a hand or a faint stem together)")
    seed: int = setting(0, "seed of frames and training")

    def identity(self) -> dict:
        """The values that decide the result (:meth:`to_dict`; the fields added with the larger
        network are left out while they hold their defaults, so earlier runs still match)."""
        d = self.to_dict_without_defaults(("arch", "frames_dir", "frames_repeat", "aspect_jitter", "random_shapes",
                                           "box_head"))
        if self.arch == SEGNET_ARCH:
            d.pop("low_stride")
        return d

    @property
    def outputs(self) -> int:
        """The network's output channels."""
        return BOX_OUTPUTS if self.box_head else 1

    @property
    def uses_photos(self) -> bool:
        return (self.photo_frames > 0 or self.negative_frames > 0 or self.photo_eval_frames > 0
                or self.pbr_frames > 0 or self.pbr_eval_frames > 0 or self.pbr_hand_frames > 0)

    def validate(self) -> None:
        from fillcls.world.containers import SPLITS

        if self.split not in SPLITS:
            raise ValueError(f"split: unknown split {self.split!r}; choose from {', '.join(SPLITS)}")
        if min(self.train_frames, self.eval_frames, self.epochs, self.batch_size, self.width,
               self.input_h, self.input_w, self.frame_w, self.frame_h, self.max_containers) < 1:
            raise ValueError("frames, epochs, batch_size, width, sizes and max_containers must be >= 1")
        if not (0 <= self.photo_frames and 0 <= self.negative_frames and self.photo_frames + self.negative_frames <= 1):
            raise ValueError("photo_frames and negative_frames must be >= 0 with a sum <= 1")
        if min(self.photo_eval_frames, self.pbr_frames, self.pbr_eval_frames, self.pbr_hand_frames) < 0 \
                or self.pbr_spp < 1:
            raise ValueError("photo_eval_frames, pbr_frames, pbr_eval_frames and pbr_hand_frames must be >= 0, "
                             "pbr_spp >= 1")
        if self.arch not in SEGNET_ARCHS:
            raise ValueError(f"arch: unknown segmenter {self.arch!r}; choose from {', '.join(SEGNET_ARCHS)}")
        if not 0 <= self.random_shapes <= 1:
            raise ValueError("random_shapes must be in [0, 1]")
        if self.low_stride not in (4, 8) or self.frames_repeat < 1 or not 0 <= self.aspect_jitter <= 3:
            raise ValueError("low_stride must be 4 or 8, frames_repeat >= 1 and aspect_jitter in [0, 3]")


#: ``cpu`` (default): FillSegNet on procedural frames only (the shipped segmenter until 2026-11-26); ``photos``:
#: the same with 45 % of the frames in front of real photographs and 20 % photographs without a
#: container (``make photos``; measured worse so far: docs/model_card.md); ``mix``: 30 % photo frames,
#: 10 % negatives and 600 path-traced frames (Mitsuba 3) added, evaluated on path-traced frames too;
#: ``gpu``: the MobileNetV3 LR-ASPP network on 20 x more frames (the first stage of the shipped
#: ``models/segmenter.pt``, with ``--train-frames 12000 --epochs 6``: Makefile, docs/model_card.md);
#: ``tiny``: seconds, tests.
PRESETS: dict[str, SegConfig] = {
    "tiny": SegConfig().replace(train_frames=24, eval_frames=8, epochs=2, batch_size=8, width=8,
                                input_h=60, input_w=80, frame_w=320, frame_h=240),
    "cpu": SegConfig(),
    "photos": SegConfig(photo_frames=0.45, negative_frames=0.2, photo_eval_frames=100),
    "mix": SegConfig(photo_frames=0.3, negative_frames=0.1, photo_eval_frames=100, pbr_frames=600,
                     pbr_eval_frames=60),
    "gpu": SegConfig(arch=LRASPP_ARCH, train_frames=32_000, epochs=8, batch_size=32, lr=2e-3,
                     photo_frames=0.35, negative_frames=0.15, photo_eval_frames=100),
}
#: What a frame of :func:`make_frames` shows: the procedural scene, the scene in front of a photo of
#: the ``train`` / ``val`` split, or a photo of that split with cut-outs and no container.
FRAME_KINDS = ("procedural", "photo", "negative", "photo-val", "negative-val")


def _frame_kind(rng: np.random.Generator, cfg: SegConfig) -> str:
    """The kind of one training frame, drawn with the preset's photo / negative fractions."""
    u = rng.random()
    return "negative" if u < cfg.negative_frames else "photo" if u < cfg.negative_frames + cfg.photo_frames \
        else "procedural"


def _scene(seed, cfg: SegConfig, containers, kind: str):
    """``(rgb, annotations)`` of one frame of ``kind`` (:data:`FRAME_KINDS`; None: a training frame, its
    kind drawn from ``cfg``, its containers' shapes randomised at ``cfg.random_shapes``)."""
    from fillcls.world.photos import no_container_frame
    from training.data import render_frame

    rng = np.random.default_rng(seed)
    shapes = cfg.random_shapes if kind is None else 0.0  # training frames only
    if kind is None:
        kind = _frame_kind(rng, cfg) if cfg.photo_frames or cfg.negative_frames else "procedural"
    split = "val" if kind.endswith("-val") else "train"
    if kind.startswith("negative"):
        return no_container_frame(rng, split, cfg.frame_w, cfg.frame_h)
    n = int(rng.integers(0, cfg.max_containers + 1)) if cfg.max_containers > 1 else 1
    n = max(n, 1) if rng.random() < 0.9 else n  # a few frames without any container
    photo = None if kind == "procedural" else split
    return render_frame(rng if photo else seed, width=cfg.frame_w, height=cfg.frame_h, containers=containers,
                        n_containers=n, photo_split=photo, random_shapes=shapes)


#: Instance label of a foreground pixel whose container (and so box) is not known: no box loss there.
UNKNOWN_INSTANCE = 255


def instance_labels(fg: np.ndarray, boxes) -> np.ndarray:
    """uint8 instance labels of a foreground mask whose containers are known only by their ``boxes``
    (path-traced frames): each foreground pixel takes the smallest box holding it (label = index + 1),
    :data:`UNKNOWN_INSTANCE` where none does; 0 is background."""
    labels = np.where(fg, UNKNOWN_INSTANCE, 0).astype(np.uint8)
    for k in sorted(range(len(boxes)), key=lambda k: -(boxes[k][2] - boxes[k][0]) * (boxes[k][3] - boxes[k][1])):
        x0, y0, x1, y1 = (int(v) for v in boxes[k])
        sub = labels[y0:y1, x0:x1]
        sub[fg[y0:y1, x0:x1]] = k + 1
    return labels


def label_boxes(labels: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The pixel box of each instance label 1, 2, ... up to the largest below :data:`UNKNOWN_INSTANCE`
    (an empty box for a missing label)."""
    boxes = []
    for k in range(1, int(labels[labels < UNKNOWN_INSTANCE].max(initial=0)) + 1):
        ys, xs = np.nonzero(labels == k)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(ys) else (0, 0, 0, 0))
    return boxes


def box_maps(labels: np.ndarray, boxes, out_hw) -> np.ndarray:
    """4 x h x w uint8 box targets at the output size: at each pixel of instance k (``labels``, frame
    size, k = index into ``boxes`` + 1) its distances to ``boxes[k - 1]``'s left, top, right and
    bottom edges as fractions of the frame's width / height, x 255; all 0 elsewhere (no box loss)."""
    H, W = labels.shape
    h, w = out_hw
    small = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
    out = np.zeros((4, h, w), np.float32)
    cx, cy = (np.arange(w) + 0.5) / w, (np.arange(h) + 0.5) / h
    for k, (x0, y0, x1, y1) in enumerate(boxes, 1):
        ys, xs = np.nonzero(small == k)
        if len(ys):
            out[:, ys, xs] = [cx[xs] - x0 / W, cy[ys] - y0 / H, x1 / W - cx[xs], y1 / H - cy[ys]]
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def _sample(rgb: np.ndarray, mask: np.ndarray, cfg: SegConfig, boxes=None) -> tuple[np.ndarray, np.ndarray]:
    """A frame and its foreground mask (any size) as the uint8 network input and soft target. With
    ``cfg.box_head`` ``mask`` holds instance labels (:func:`instance_labels`) of ``boxes`` and the
    target is :data:`BOX_OUTPUTS` x h x w: the soft foreground, then :func:`box_maps`."""
    x = (frame_to_input(rgb, (cfg.input_h, cfg.input_w)) * 255).round().to(torch.uint8).numpy()
    out_hw = (cfg.input_h // 2, cfg.input_w // 2)
    fg = cv2.resize((mask > 0).astype(np.float32), (out_hw[1], out_hw[0]), interpolation=cv2.INTER_AREA)
    fg = (fg * 255).round().astype(np.uint8)
    if not cfg.box_head:
        return x, fg
    return x, np.concatenate([fg[None], box_maps(mask.astype(np.uint8), boxes or [], out_hw)])


def _render(args):
    seed, cfg, containers, kind, keep_rgb = args
    rgb, anns = _scene(seed, cfg, containers, kind)
    labels = np.zeros(rgb.shape[:2], np.uint8)
    for k, a in enumerate(anns, 1):
        labels[a["mask"]] = k
    boxes = [tuple(int(v) for v in a["box"]) for a in anns]
    x, target = _sample(rgb, labels, cfg, boxes)
    return x, target, boxes, rgb if keep_rgb else None


def pbr_frameset(cfg: SegConfig, containers, n: int, kind: str, cache_dir, log=print):
    """``n`` path-traced frames of ``kind`` at half the procedural frame size (cached in
    ``cache_dir``): :func:`fillcls.world.pbr.make_frameset_pbr`'s ``(frames, masks, boxes)``.
    ``kind``: ``train`` (1-3 containers, train photographs, ``pbr_spp``), ``train-hands`` (the
    same, each container held by a hand, other seeds) or ``eval`` (1-2 containers, val
    photographs, 16 spp: bench/eval_segmenter.py's set)."""
    from fillcls.world.pbr import make_frameset_pbr

    train = dict(spp=cfg.pbr_spp, split="train", n_containers=(1, 3))
    kw = {"train": dict(seed=1000 + cfg.seed, **train), "train-hands": dict(seed=2000 + cfg.seed, hands=1.0, **train),
          "eval": dict(seed=11, spp=16, split="val", n_containers=(1, 2))}[kind]
    return make_frameset_pbr(n, containers, width=cfg.frame_w // 2, height=cfg.frame_h // 2, backdrops="photos",
                             cache_dir=cache_dir, log=lambda m: log(f"[segtrain] {m}"), **kw)


def pbr_frames(cfg: SegConfig, containers, n: int, kind: str, cache_dir, log=print):
    """:func:`pbr_frameset` as :func:`make_frames` returns frames (without the frames), and their size."""
    frames, fgs, boxes = pbr_frameset(cfg, containers, n, kind, cache_dir, log)
    rows = [_sample(f, instance_labels(m, b), cfg, b) for f, m, b in zip(frames, fgs, boxes)]
    return (torch.from_numpy(np.stack([r[0] for r in rows])), torch.from_numpy(np.stack([r[1] for r in rows])),
            boxes, None), tuple(frames.shape[1:3])


def _one_thread() -> None:
    """Render workers use one thread each (OpenCV's and torch's pools would oversubscribe the cores:
    16 workers x 16 threads rendered slower than one process)."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def make_frames(cfg: SegConfig, containers, n: int, seed: int, keep_rgb: bool = False, workers: int = 2,
                kind: str | None = "procedural"):
    """Render ``n`` frames of ``kind`` (:data:`FRAME_KINDS`; None: the training mix of ``cfg``):
    uint8 network inputs, uint8 soft targets, true boxes (and frames)."""
    jobs = [(seed * 1_000_003 + i, cfg, tuple(containers), kind, keep_rgb) for i in range(n)]
    if workers > 1 and n >= 16:
        import multiprocessing as mp

        with mp.get_context("forkserver").Pool(workers, initializer=_one_thread) as pool:
            rows = list(tqdm(pool.imap(_render, jobs, chunksize=8), total=n, desc="render", leave=False))
    else:
        rows = [_render(j) for j in tqdm(jobs, desc="render", leave=False)]
    xs = torch.from_numpy(np.stack([r[0] for r in rows]))
    ys = torch.from_numpy(np.stack([r[1] for r in rows]))
    boxes = [r[2] for r in rows]
    return xs, ys, boxes, ([r[3] for r in rows] if keep_rgb else None)


def labelled_frames(cfg: SegConfig):
    """The frames of ``cfg.frames_dir`` as network inputs and soft targets (uint8), each repeated
    ``frames_repeat`` times: each ``NAME.jpg`` / ``NAME.png`` with its ``NAME.mask.png`` (0 background;
    1-254 one label per container, whose box is its pixels' box; 255 a container of unknown box: no box
    loss); ValueError naming the file that cannot be read, lacks its mask or whose mask is of another size."""
    folder = Path(cfg.frames_dir)
    if not folder.is_dir():
        raise ValueError(f"frames_dir: {folder} is not a folder")
    images = sorted(p for p in folder.iterdir()
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png") and not p.name.endswith(".mask.png"))
    if not images:
        raise ValueError(f"frames_dir: {folder} holds no NAME.jpg / NAME.png frames")
    xs, ys = [], []
    for path in images:
        mask_path = path.with_name(path.stem + ".mask.png")
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) if mask_path.is_file() else None
        if bgr is None:
            raise ValueError(f"frames_dir: cannot read {path}")
        if mask is None:
            raise ValueError(f"frames_dir: {path} has no readable mask {mask_path.name}")
        if mask.shape != bgr.shape[:2]:
            raise ValueError(f"frames_dir: {mask_path} is {mask.shape[1]} x {mask.shape[0]}, its frame "
                             f"{bgr.shape[1]} x {bgr.shape[0]}")
        x, y = _sample(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), mask, cfg, label_boxes(mask) if cfg.box_head else None)
        xs.append(x)
        ys.append(y)
    r = cfg.frames_repeat
    ys = torch.from_numpy(np.stack(ys))
    return torch.from_numpy(np.stack(xs)).repeat(r, 1, 1, 1), ys.repeat(r, *([1] * (ys.ndim - 1)))


def box_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Generalised-IoU loss of the predicted boxes (sigmoid of the 4 box channels, B x 4 x h x w) at the
    foreground pixels whose box is known (``target``: B x 5 x h x w in [0, 1]); 0 where there are none."""
    p, t = torch.sigmoid(logits), target[:, 1:]
    valid = (target[:, 0] >= 0.5) & (t[:, 0] + t[:, 2] > 0) & (t[:, 1] + t[:, 3] > 0)
    if not valid.any():
        return logits.sum() * 0
    p, t = p.permute(0, 2, 3, 1)[valid], t.permute(0, 2, 3, 1)[valid]  # N x (l, t, r, b)
    area_p = (p[:, 0] + p[:, 2]) * (p[:, 1] + p[:, 3])
    area_t = (t[:, 0] + t[:, 2]) * (t[:, 1] + t[:, 3])
    lo, hi = torch.minimum(p, t), torch.maximum(p, t)
    inter = (lo[:, 0] + lo[:, 2]) * (lo[:, 1] + lo[:, 3])
    union = area_p + area_t - inter
    enclosing = (hi[:, 0] + hi[:, 2]) * (hi[:, 1] + hi[:, 3])
    giou = inter / union.clamp_min(1e-7) - (enclosing - union) / enclosing.clamp_min(1e-7)
    return (1 - giou).mean()


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy + soft Dice on the foreground (+ :func:`box_loss` for a box head)."""
    if logits.ndim == 4:
        return loss_fn(logits[:, 0], target[:, 0]) + box_loss(logits[:, 1:], target)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum((1, 2))
    dice = 1 - (2 * inter + 1) / (p.sum((1, 2)) + target.sum((1, 2)) + 1)
    return bce + dice.mean()


@torch.inference_mode()
def evaluate(model, xs, ys, boxes, frame_hw, mask_threshold: float = 0.5) -> dict:
    """Mean foreground IoU and box recall / precision at IoU 0.5 (node post-processing), on the
    model's device."""
    model.eval()
    device = next(model.parameters()).device
    ious, tp, n_true, n_pred = [], 0, 0, 0
    t0 = time.perf_counter()
    for i in range(len(xs)):
        prob = torch.sigmoid(model(xs[i: i + 1].to(device).float() / 255))[0].float().cpu().numpy()
        dets = instances(prob, frame_hw, mask_threshold)
        target = ys[i].numpy()
        if prob.ndim == 3:  # a box head: channel 0 is the foreground
            prob, target = prob[0], target[0]
        fg, gt = prob >= mask_threshold, target >= 128
        union = (fg | gt).sum()
        ious.append((fg & gt).sum() / union if union else 1.0)
        n_true += len(boxes[i])
        n_pred += len(dets)
        tp += count_matches(boxes[i], [d[0] for d in dets])
    ms = (time.perf_counter() - t0) / max(1, len(xs)) * 1e3
    return {"mask_iou": float(np.mean(ious)), "box_recall": tp / n_true if n_true else float("nan"),
            "box_precision": tp / n_pred if n_pred else float("nan"), "frames": len(xs),
            "false_per_frame": (n_pred - tp) / max(1, len(xs)),
            "containers": n_true, "ms_per_frame": ms}


def stretch(x: torch.Tensor, y: torch.Tensor, factor: float, gen: torch.Generator):
    """Frames ``x`` (B x 3 x h x w) and targets ``y`` (B x h/2 x w/2, or B x 5 x h/2 x w/2 with box
    channels, rescaled with the frame) with their aspect ratio multiplied by ``factor``: > 1 widens (zoom
    in horizontally), < 1 heightens (zoom in vertically); one random window of the original size is
    kept, so nothing is padded."""
    h, w = x.shape[-2:]
    sh, sw = (1.0, factor) if factor >= 1 else (1.0 / factor, 1.0)
    H, W = max(h, round(h * sh / 2) * 2), max(w, round(w * sw / 2) * 2)
    top = int(torch.randint(0, (H - h) // 2 + 1, (), generator=gen)) * 2
    left = int(torch.randint(0, (W - w) // 2 + 1, (), generator=gen)) * 2
    x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)[..., top:top + h, left:left + w]
    if y.ndim == 4:  # the box distances are fractions of the window: they grow with the zoom
        fg = F.interpolate(y[:, :1], size=(H // 2, W // 2), mode="bilinear", align_corners=False)
        scale = torch.tensor([W / w, H / h, W / w, H / h], device=y.device).view(1, 4, 1, 1)
        dist = (F.interpolate(y[:, 1:], size=(H // 2, W // 2), mode="nearest") * scale).clamp(max=1.0)
        y = torch.cat([fg, dist], 1)
    else:
        y = F.interpolate(y[:, None], size=(H // 2, W // 2), mode="bilinear", align_corners=False)[:, 0]
    return x, y[..., top // 2:(top + h) // 2, left // 2:(left + w) // 2]


def _train_epoch(model, opt, sched, xs, ys, cfg: SegConfig, epoch: int, log) -> None:
    """One epoch over a random permutation of the frames (flip and brightness augmentation); on
    CUDA under bf16 autocast."""
    model.train()
    device = next(model.parameters()).device
    steps_per_epoch = max(1, len(xs) // cfg.batch_size)
    perm = torch.randperm(len(xs))
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    total, t0 = 0.0, time.perf_counter()
    bar = tqdm(range(steps_per_epoch), desc=f"segtrain {cfg.split} epoch {epoch + 1}/{cfg.epochs}", leave=False)
    for s in bar:
        idx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
        x, y = xs[idx].to(device).float() / 255, ys[idx].to(device).float() / 255
        if torch.rand(()) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
            if y.ndim == 4:  # left and right distances swap
                y = y[:, [0, 3, 2, 1, 4]]
        x = x * (0.8 + 0.4 * torch.rand(len(x), 1, 1, 1)).to(device)  # brightness
        if cfg.aspect_jitter:
            a = float(torch.empty(()).uniform_(-1, 1)) * np.log1p(cfg.aspect_jitter)
            x, y = stretch(x, y, float(np.exp(a)), gen)
        with torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x.clamp(0, 1))
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item()
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss.item():.3f}")
    log(f"[segtrain] epoch {epoch + 1}/{cfg.epochs}: loss {total / steps_per_epoch:.4f} "
        f"({steps_per_epoch * cfg.batch_size / (time.perf_counter() - t0):.0f} frames/s)")


def _resume(last: Path, cfg: SegConfig, model, opt, sched, log) -> int:
    """Restore ``last.pt``; the epoch it ends (refuses a state of other settings)."""
    _, state, extra = read_checkpoint(last)
    if extra.get("config") != cfg.identity():
        raise RunError(f"{last} was made with other settings; use --no-resume to start over")
    model.load_state_dict(state)
    opt.load_state_dict(extra["optimizer"])
    sched.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["rng"])
    log(f"[segtrain] resuming {last.parent} after epoch {int(extra['epoch'])}")
    return int(extra["epoch"])


def _init_weights(cfg: SegConfig, log) -> dict:
    """The weights of ``cfg.init``; CheckpointError naming the file if they do not fit these settings."""
    start, header, hw = load_segnet(cfg.init)
    training = header.training or {}
    width, low_stride = int(training.get("width", 16)), training.get("low_stride", cfg.low_stride)
    if header.arch != cfg.arch or (cfg.arch == SEGNET_ARCH and width != cfg.width) or \
            (cfg.arch == LRASPP_ARCH and int(low_stride) != cfg.low_stride):
        raise CheckpointError(f"{cfg.init}: a {header.arch} (width {width}, low stride {low_stride}) segmenter; "
                              f"these settings train a {cfg.arch} (width {cfg.width}, low stride {cfg.low_stride})")
    if segmenter_outputs(header) > cfg.outputs:
        raise CheckpointError(f"{cfg.init}: a segmenter with a box head; these settings train one without "
                              "(add --box-head)")
    # both networks are fully convolutional: weights trained at one input size fine-tune at another
    other = "" if tuple(hw) == (cfg.input_h, cfg.input_w) else \
        f" (trained at {hw[1]} x {hw[0]}, fine-tuned here at {cfg.input_w} x {cfg.input_h})"
    head = " (its foreground channel; the box channels start at random)" \
        if segmenter_outputs(header) < cfg.outputs else ""
    log(f"[segtrain] starting from the weights of {cfg.init}{other}{head}")
    return start.state_dict()


def _load_init(model, init: dict) -> None:
    """Load ``init`` into ``model``; an output layer of fewer channels (a segmenter without a box head)
    fills the first ones and leaves the rest as initialised."""
    state = model.state_dict()
    for k, v in init.items():
        if v.shape != state[k].shape and v.shape[1:] == state[k].shape[1:] and len(v) < len(state[k]):
            v = torch.cat([v.to(state[k].device), state[k][len(v):]])
        state[k] = v
    model.load_state_dict(state)


def _fit(cfg: SegConfig, run: RunDir, xs, ys, train_ids, resume: bool, log, init: dict | None = None,
         device: str = "cpu"):
    """Train the segmenter on (xs, ys) with a per-epoch ``last.pt``; returns (model on the CPU, header)."""
    # on the device before the optimizer exists: a resumed optimizer state follows its parameters
    model = build_segnet(cfg.arch, cfg.width, cfg.low_stride, cfg.outputs).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps_per_epoch = max(1, len(xs) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    last = Path(run.file(RunDir.STATE))
    start = _resume(last, cfg, model, opt, sched, log) if resume and last.exists() else 0
    if init is not None and start == 0:
        _load_init(model, init)
    if device != "cpu":  # the frames fit the GPU's memory: no copy per step
        xs, ys = xs.to(device), ys.to(device)
        torch.backends.cudnn.benchmark = True
    name = "fillsegnet" if cfg.arch == SEGNET_ARCH else "lraspp"
    header = segmenter_header((cfg.input_h, cfg.input_w), cfg.width, model_id=f"{name}-{cfg.split}",
                              training={"split": cfg.split, "train_containers": list(train_ids),
                                        "config": cfg.to_dict(), "low_stride": cfg.low_stride,
                                        "device": device},
                              arch=cfg.arch, outputs=cfg.outputs)
    for epoch in range(start, cfg.epochs):
        _train_epoch(model, opt, sched, xs, ys, cfg, epoch, log)
        save_checkpoint(last, {k: v.cpu() for k, v in model.state_dict().items()}, header, extra={
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
            "epoch": epoch + 1, "config": cfg.identity()})
    return model.cpu(), header


def train(cfg: SegConfig, out_dir: Path, resume: bool = True, log=print, cache_dir=None, device: str = "cpu",
          workers: int = 2) -> dict:
    """Train (or resume, or skip if finished) one segmenter in ``out_dir``; returns the result.

    The run directory follows :class:`training.runs.RunDir`: a finished run of the same settings
    is skipped, an interrupted one resumes from ``last.pt``, a directory holding a run of other
    settings is refused (:class:`RunError`) unless ``resume=False``. Path-traced frames are
    cached in ``cache_dir`` (default ``<DEFAULT_RUNS>/cache``, where the other commands cache).
    ``workers`` processes render the frames; ``device`` trains (neither changes the run's identity)."""
    from training.data import split_containers

    out_dir = Path(out_dir)
    if cfg.uses_photos and not photos.available():
        raise PhotosMissingError(f"segtrain: these settings use real photographs but {photos.photos_root()} has "
                                 "none: run `make photos` first (or use --preset cpu)")
    run = RunDir(out_dir, cfg.identity(), outputs=(str(out_dir / "segmenter.pt"),), what="segmenter run",
                 elsewhere="another --out")
    done = run.begin({"settings": cfg.to_dict()}, resume)
    if done is not None:
        log(f"[segtrain] {out_dir}: already finished, skipped")
        return done
    with run.guard():
        train_ids, test_ids = split_containers(cfg.split)
        torch.manual_seed(cfg.seed)
        init = _init_weights(cfg, log) if cfg.init else None
        own = labelled_frames(cfg) if cfg.frames_dir else None  # a bad file fails before any rendering
        # render everything before torch starts its thread pools (forking after that can hang)
        xs, ys, _, _ = make_frames(cfg, train_ids, cfg.train_frames, cfg.seed, kind=None, workers=workers)
        frame_hw = (cfg.frame_h, cfg.frame_w)
        evals = {"procedural": (make_frames(cfg, test_ids, cfg.eval_frames, cfg.seed + 10_000, workers=workers),
                                frame_hw)}
        if cfg.photo_eval_frames:
            for kind in ("photo-val", "negative-val"):
                evals[kind] = (make_frames(cfg, test_ids, cfg.photo_eval_frames, cfg.seed + 20_000, kind=kind,
                                           workers=workers), frame_hw)
        if cfg.frames_dir:
            xs, ys = torch.cat([xs, own[0]]), torch.cat([ys, own[1]])
            log(f"[segtrain] {len(own[0])} labelled frames (repeats included) from {cfg.frames_dir}")
        cache_dir = cache_dir or os.path.join(DEFAULT_RUNS, "cache")
        for kind, n in (("train", cfg.pbr_frames), ("train-hands", cfg.pbr_hand_frames)):
            if n:
                (px, py, _, _), _ = pbr_frames(cfg, train_ids, n, kind, cache_dir, log)
                xs, ys = torch.cat([xs, px]), torch.cat([ys, py])
        if cfg.pbr_eval_frames:
            evals["pbr-val"] = pbr_frames(cfg, test_ids, cfg.pbr_eval_frames, "eval", cache_dir, log)
        model, header = _fit(cfg, run, xs, ys, train_ids, resume, log, init, device)
        save_checkpoint(out_dir / "segmenter.pt", model.state_dict(), header)
        metrics = {k: evaluate(model, ex, ey, eb, hw) for k, ((ex, ey, eb, _), hw) in evals.items()}
    result = run.finish({"config": cfg.to_dict(), "device": device, "test_containers": list(test_ids), "metrics": metrics["procedural"],
                         "photo_metrics": {k: v for k, v in metrics.items() if k != "procedural"}})
    for kind, m in metrics.items():
        log(f"[segtrain] {cfg.split} {kind} frames of test containers {', '.join(test_ids)}: " + describe_metrics(m))
    return result


def describe_metrics(m: dict) -> str:
    """One line of :func:`evaluate`'s metrics (false containers per frame where no container is true)."""
    if not m["containers"]:
        return (f"{m['false_per_frame']:.3f} false containers per frame ({m['frames']} frames without a "
                f"container, {m['ms_per_frame']:.1f} ms/frame)")
    return (f"mask IoU {m['mask_iou']:.3f}, box recall@0.5 {m['box_recall']:.3f}, precision "
            f"{m['box_precision']:.3f} ({m['containers']} containers, {m['frames']} frames, "
            f"{m['ms_per_frame']:.1f} ms/frame)")


def average_weights(src, other) -> tuple:
    """``(header, state)`` of segmenter ``src`` with every floating-point weight the mean of its
    and segmenter ``other``'s (a "model soup" of two fine-tunes of one network; BatchNorm
    statistics averaged too). CheckpointError naming ``other`` unless it has the same tensors."""
    header, state, _ = read_checkpoint(src)
    other_header, other_state, _ = read_checkpoint(other)
    if other_header.arch != header.arch or other_state.keys() != state.keys() or any(
            other_state[k].shape != v.shape for k, v in state.items()):
        raise CheckpointError(f"{other}: not a {header.arch} segmenter with the tensors of {src}; "
                              "only fine-tunes of one network can be averaged")
    mean = {k: ((v.float() + other_state[k].float()) / 2).to(v.dtype) if v.is_floating_point() else v
            for k, v in state.items()}
    training = {**(header.training or {}), "averaged_with": str(other)}
    return replace(header, training=training), mean


def export(src, dst, half: bool = False, average_with: str = "") -> None:
    """Copy a trained segmenter to ``dst``; ``half``: with its floating-point weights stored as
    float16 (half the file; :func:`load_segnet` computes in float32); ``average_with``: the mean
    of its weights and this segmenter's (:func:`average_weights`)."""
    if not half and not average_with:
        copy_file(src, dst)
        return
    header, state = average_weights(src, average_with) if average_with else read_checkpoint(src)[:2]
    save_checkpoint(dst, {k: v.half() if half and v.is_floating_point() else v for k, v in state.items()}, header)


def run_from_args(args) -> int:
    """``segtrain`` command: train (or resume / skip) and optionally export; returns the exit code."""
    cfg = settings_from_args(args, PRESETS, "seg_")
    out = Path(args.out or f"runs/segmenter/{args.preset}/{cfg.split}")
    try:
        train(cfg, out, resume=args.resume, cache_dir=args.cache_dir, device=setup_device(args),
              workers=args.workers or os.cpu_count() or 2)
        if args.export:
            export(out / "segmenter.pt", args.export, args.half, args.average_with)
            load_segnet(args.export)  # the exported file loads
    except (RunError, WriteError, CheckpointError, PhotosMissingError, PhotoIndexError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.export:
        print(f"[segtrain] exported {args.export}")
    return 0


def register(subparsers) -> None:
    """Add the ``segtrain`` sub-command to ``python -m training``."""
    p = subparsers.add_parser("segtrain", help="train the node's learned segmentation backend",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_options(p, SegConfig, PRESETS, default="cpu", prefix="seg_",
                         preset_help="tiny: seconds (tests); cpu (default): FillSegNet (the shipped "
                                     "segmenter until 2026-11-26), 1600 procedural frames x 12 epochs at 320 x 240, "
                                     "about 13 min; photos: the same with 45 %% of the frames in front of real photographs "
                                     "and 20 %% photographs without a container (`make photos`); mix: 30 %% photo "
                                     "frames, 10 %% negatives + 600 path-traced frames (about 30 min to render once); gpu: the "
                                     "MobileNetV3 LR-ASPP network on 32 000 frames (35 %% photo frames, 15 %% "
                                     "negatives) x 8 epochs, minutes on a GPU with 16 cores rendering",
                         description="override one value of the segmenter preset")
    g = add_run_options(p, runs=False)
    g.add_argument("--workers", type=int, default=0, help="processes rendering the frames (0: one per CPU core)")
    g.add_argument("--out", default="", help="run directory (default runs/segmenter/<preset>/<split>)")
    g.add_argument("--export", default="", help="also copy the trained model here (e.g. models/segmenter.pt)")
    g.add_argument("--half", action="store_true", help="with --export: store the weights as float16")
    g.add_argument("--average-with", default="", metavar="SEGMENTER",
                   help="with --export: export the mean of the trained weights and this segmenter's (the run "
                        "it was fine-tuned from, say: a model soup)")
    p.set_defaults(func=run_from_args)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m training.segtrain")
    register(ap.add_subparsers(dest="cmd", required=True))
    a = ap.parse_args(["segtrain", *sys.argv[1:]])
    raise SystemExit(a.func(a))
