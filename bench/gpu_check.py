#!/usr/bin/env python3
"""GPU check of the paper's setting: training speed, node latency and the full study's wall time.

Runs with the machine's ``python3`` from the repository root (no ROS, no venv, no network: it
imports only ``fillcls``, ``training``, torch, numpy and OpenCV), on stand-in source files in the
real formats (a torchvision ResNet-18 state dict for ``imagenet``, a robustness checkpoint for the
split's ``robust-l2-eps{E}``) and the procedural crops of the ``paper-synthetic`` preset:

1. one split of the paper preset at 224 px, a fixed number of SGD steps each: ST (from scratch),
   ST->FT (from ``imagenet``, L = 1), PGD-10 AT (from scratch) and AT->AFT (from the robust source):
   img/s of each;
2. the node's estimator (:class:`fillcls.inference.FillingEstimator`, segmentation ``threshold``,
   one container) on 640 x 480 frames: end-to-end latency p50 / p95 in fp32 and fp16 (CUDA);
3. the estimated wall time of ``python -m training study --preset paper`` on the real C-CCM
   (every run of the plan, its train-set size from the published counts, 30 epochs, evaluation
   with the test-time PGD-10 attack) from these speeds.

    bench/gpu_check.sh                 # on a CUDA machine
    bench/gpu_check.sh --tiny          # anywhere, tiny sizes (a check of the script itself)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def stand_in_sources(directory: str, eps: float) -> dict:
    """``resnet18-f37072fd.pth`` (torchvision format) and ``resnet18_l2_eps{eps}.ckpt`` (robustness
    format) with random weights; returns the SourceSpecs (the imagenet hash check pointed at the file)."""
    import dataclasses

    import torch

    from fillcls import core
    from training import assets

    sd = core.build_model("resnet18", 1000).net.state_dict()
    torch.save(sd, os.path.join(directory, "resnet18-f37072fd.pth"))
    robust = {f"module.model.{k}": v for k, v in sd.items()}
    robust |= {f"module.attacker.model.{k}": v for k, v in sd.items()}
    robust["module.normalizer.new_mean"] = torch.tensor(core.IMAGENET_MEAN).view(3, 1, 1)
    robust["module.normalizer.new_std"] = torch.tensor(core.IMAGENET_STD).view(3, 1, 1)
    torch.save({"model": robust, "epoch": 90}, os.path.join(directory, f"resnet18_l2_eps{eps:g}.ckpt"))
    digest = assets.file_digest(os.path.join(directory, "resnet18-f37072fd.pth"))
    assets.REGISTRY["imagenet"] = dataclasses.replace(assets.REGISTRY["imagenet"], sha256=digest[:8])
    return {"imagenet": assets.source_spec("imagenet", directory),
            "robust": assets.source_spec(assets.paper_source_name(eps), directory)}


def train_speeds(args, preset, split: str, device: str, log) -> dict[str, float]:
    """img/s of ``args.steps`` SGD steps (after ``args.warmup`` not counted) for each strategy."""
    import torch

    from training import data as tdata
    from training import engine
    from training.config import resolve_run

    n = max(args.crops, args.batch * 2)
    t0 = time.perf_counter()
    crops = tdata.make_cropset(n, preset.size, seed=0)
    log(f"data: {n} procedural crops at {preset.size} px in {time.perf_counter() - t0:.1f} s")
    train, _ = tdata.split_cropset(crops, split)
    with tempfile.TemporaryDirectory() as d:
        specs = stand_in_sources(d, float(preset.eps_source[split]))
        out = {}
        for strategy in ("ST", "ST-FT", "AT", "AT-AFT"):
            cfg = resolve_run("paper-synthetic", preset, split, strategy)
            src = specs["imagenet" if cfg.eps_source == 0 else "robust"] if cfg.eps_source is not None else None
            model = engine.build_run_model(cfg, src)
            fit = cfg.fit_config().replace(epochs=1, samples_per_epoch=args.batch * (args.warmup + args.steps),
                                           batch_size=args.batch)
            times = []

            def on_step(epoch, step, loss, times=times):
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter())

            engine.fit(model, train, fit, device=device, log=lambda m: None, on_step=on_step)
            span = times[-1] - times[args.warmup - 1] if args.warmup else times[-1] - times[0]
            steps = len(times) - max(args.warmup, 1)
            out[strategy] = steps * args.batch / span
            log(f"{strategy:7s} ({'PGD-%d eps %g' % (fit.attack_steps, fit.eps) if fit.eps else 'clean'}, "
                f"L={fit.fixed_layers}): {out[strategy]:8.1f} img/s ({steps} steps of {args.batch})")
    return out


def node_latency(args, device: str, log) -> dict[str, dict]:
    """p50 / p95 ms of FillingEstimator.predict on a 640 x 480 frame with one container."""
    import numpy as np

    from fillcls import core
    from fillcls.inference import EstimatorConfig, FillingEstimator

    frame = np.full((480, 640, 3), 128, np.uint8)
    frame[120:400, 260:380] = (40, 90, 200)  # one "container" for the threshold backend
    out = {}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.pt")
        model = core.build_model("resnet18")
        core.save_checkpoint(path, model.state_dict(), core.CheckpointHeader(input_size=args.size))
        for precision in ("fp32", "fp16"):
            if precision == "fp16" and not device.startswith("cuda"):
                continue
            est = FillingEstimator(EstimatorConfig(model_path=path, device=device, fp16=precision == "fp16",
                                                   segmentation_backend="threshold"))
            for _ in range(5):
                est.predict(frame)
            ts = []
            for _ in range(args.frames):
                t0 = time.perf_counter()
                res = est.predict(frame)
                ts.append(1000 * (time.perf_counter() - t0))
            p50, p95 = (float(np.percentile(ts, q)) for q in (50, 95))
            out[precision] = {"p50_ms": p50, "p95_ms": p95, "containers": len(res), "device": str(est.device)}
            log(f"node {precision} on {est.device}: p50 {p50:.1f} ms, p95 {p95:.1f} ms "
                f"({len(res)} container(s), {args.frames} frames 640x480, {est.precision})")
    return out


def study_estimate(speeds: dict[str, float], preset, log) -> float:
    """Seconds of the full paper study on C-CCM at these speeds (train + eval of every planned run)."""
    from fillcls.world.containers import CCM_CONTAINER_COUNTS, split_containers
    from training.config import SPLIT_NAMES, STRATEGIES
    from training.engine import plan_study

    total, n_runs = 0.0, 0
    for cfg in plan_study("paper", preset, SPLIT_NAMES):
        _, test_ids = split_containers(cfg.split)
        n_test = sum(CCM_CONTAINER_COUNTS[c] for c in test_ids)
        n_train = sum(CCM_CONTAINER_COUNTS.values()) - n_test
        st = STRATEGIES[cfg.strategy]
        kind = ("AT-AFT" if st.transfer else "AT") if st.adversarial else ("ST-FT" if st.transfer else "ST")
        n_seen = (preset.samples_per_epoch or n_train) * preset.epochs
        attack = n_test if not preset.eval_max else min(n_test, preset.eval_max)
        # evaluation: a clean pass (~3x a training step's speed) + PGD-10 on the attacked crops
        total += n_seen / speeds[kind] + n_test / (3 * speeds["ST"]) + attack / speeds["AT"]
        n_runs += 1
    log(f"estimated wall time of `study --preset paper` on C-CCM ({n_runs} runs, {preset.epochs} epochs, "
        f"{preset.eval_steps}-step test attack): {total / 3600:.1f} h on this device")
    return total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (default)")
    p.add_argument("--split", default="S1", choices=("S1", "S2", "S3"))
    p.add_argument("--size", type=int, default=224, help="input size (default 224, the paper's)")
    p.add_argument("--batch", type=int, default=64, help="batch size (default 64, the preset's)")
    p.add_argument("--steps", type=int, default=20, help="timed SGD steps per strategy")
    p.add_argument("--warmup", type=int, default=3, help="untimed SGD steps first")
    p.add_argument("--crops", type=int, default=512, help="procedural crops to render")
    p.add_argument("--frames", type=int, default=100, help="frames timed per node precision")
    p.add_argument("--tiny", action="store_true", help="tiny sizes: checks the script on a CPU in a minute")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON")
    args = p.parse_args(argv)
    if args.tiny:
        args.size, args.batch, args.steps, args.warmup, args.crops, args.frames = 32, 8, 2, 1, 96, 5
    import torch

    from training.config import get_preset
    from training.runs import resolve_device

    device = resolve_device(args.device)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__}, device {device} ({name}), python {sys.version.split()[0]}", flush=True)
    preset = get_preset("paper-synthetic", size=args.size, batch_size=args.batch)

    def log(msg):
        print(msg, flush=True)

    speeds = train_speeds(args, preset, args.split, device, log)
    log(f"PGD-10 AT costs {speeds['ST'] / speeds['AT']:.1f}x ST")
    latency = node_latency(args, device, log)
    estimate = study_estimate(speeds, get_preset("paper", batch_size=args.batch), log)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "device_name": name, "torch": torch.__version__, "size": args.size,
                       "batch": args.batch, "img_per_s": speeds, "node": latency, "study_s": estimate}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
