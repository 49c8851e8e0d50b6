#!/usr/bin/env python3
"""GPU check of the paper's setting and of the node on CUDA: latency, accuracy, training speed.

Runs with the machine's ``python3`` from the repository root (no ROS, no venv, no network: it
imports only ``fillcls``, ``training``, torch, numpy, OpenCV and onnxruntime). Sections, in order
(``--sections``), each printed and written to ``--json`` as soon as it ends:

1. ``forward``: bare forward of a random ResNet-18 at 224 px, batch 1 and 4 (numpy in,
   probabilities out: both copies included), fp32 / fp16, eager vs BatchNorm folded + channels-last
   vs + CUDA graphs (the node's torch path on CUDA);
2. ``node``: the node's estimator (:class:`fillcls.inference.FillingEstimator`) end to end on
   640 x 480 procedural frames with one container: one camera (p50 / p95 / p99, stage medians)
   and four cameras batched (``predict_many``), threshold and learned segmenters, the random
   224 px model and the shipped 64 px one;
3. ``accuracy``: the shipped model on S1's 1 198 test crops, CUDA fp32 / fp16 against CPU fp32;
4. ``onnx``: the ONNX exporter on this torch, onnxruntime's providers (CUDA / TensorRT timed
   where installed);
5. ``train``: one split of the paper preset at 224 px on stand-in sources in the real formats
   (a torchvision ResNet-18 state dict for ``imagenet``, a robustness checkpoint for the split's
   ``robust-l2-eps{E}``), a fixed number of SGD steps each: ST, ST->FT (L = 1), PGD-10 AT,
   AT->AFT: img/s, and the estimated wall time of ``python -m training study --preset paper``
   on the real C-CCM from these speeds;
6. ``tests``: the ROS-free test modules with pytest on this machine's torch.

    bench/gpu_check.sh --json out/gpu.json      # on a CUDA machine
    bench/gpu_check.sh --tiny --device cpu      # anywhere, tiny sizes (a check of the script itself)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))  # bench_backends: the S1 test crops, the CPU's name


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


def _stats(ms: list[float]) -> dict[str, float]:
    import numpy as np

    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 3) for q in (50, 95, 99)}


def _timed_ms(f, repeats: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        f()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        out.append(1000 * (time.perf_counter() - t0))
    return out


#: (name, precision, optimize: BatchNorm folded + channels-last, CUDA graphs); the last is the node's
#: torch path on CUDA with precision fp16, the third-last with fp32.
FORWARD_VARIANTS = (("fp32 eager", "fp32", False, False), ("fp16 eager", "fp16", False, False),
                    ("fp32 folded NHWC", "fp32", True, False), ("fp32 folded NHWC graphs", "fp32", True, True),
                    ("fp16 folded NHWC", "fp16", True, False), ("fp16 folded NHWC graphs", "fp16", True, True))


def forward_variants(args, device: str, log) -> dict[str, dict]:
    """Bare forward (numpy batch in, probabilities on the CPU out: the copies in both directions
    included) of a random ResNet-18 at ``args.size`` px, batch 1 and 4, per :data:`FORWARD_VARIANTS`."""
    import numpy as np
    import torch

    from fillcls import backends, core

    torch.manual_seed(0)
    weights = core.build_model("resnet18").state_dict()
    out: dict[str, dict] = {}
    for name, precision, optimize, graphs in FORWARD_VARIANTS:
        if not device.startswith("cuda") and (precision == "fp16" or graphs):
            continue
        model = core.build_model("resnet18")
        model.load_state_dict(weights)
        runner = backends.TorchRunner(model, device, precision, optimize=optimize, cuda_graphs=graphs)
        row = {}
        for batch in (1, 4):
            x = np.random.default_rng(batch).random((batch, 3, args.size, args.size), dtype=np.float32)
            row[f"batch{batch}"] = _stats(_timed_ms(lambda: runner(x), args.repeats))
        row["warnings"] = runner.warnings
        out[name] = row
        log(f"forward {name:24s} {args.size} px: batch 1 p50 {row['batch1']['p50_ms']:6.2f} ms, "
            f"batch 4 p50 {row['batch4']['p50_ms']:6.2f} ms {'; '.join(runner.warnings)}")
    return out


def test_frames(n: int, size: int = 0) -> list:
    """``n`` procedural 640 x 480 frames with one S1 test container each (what the learned
    segmenter was trained on; the threshold backend finds them too)."""
    from fillcls.world import SPLITS, render_frame

    return [render_frame(100 + i, 640, 480, containers=SPLITS["S1"], n_containers=1)[0] for i in range(n)]


def node_latency(args, device: str, log) -> dict[str, dict]:
    """End-to-end latency of the node's estimator (:class:`fillcls.inference.FillingEstimator`:
    segmentation, crops, classifier, results) on 640 x 480 frames with one container: one camera
    (``predict``) and four cameras batched (``predict_many`` of four frames: one segmenter batch
    with ``learned``, one classifier batch), with the stage medians (four cameras: p50 and p95).
    Rows: a random model at ``args.size`` px and the shipped 64 px default, each segmenter and
    precision."""
    import numpy as np
    import torch

    from fillcls import core
    from fillcls.inference import EstimatorConfig, FillingEstimator

    frames = test_frames(8)
    out = {}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.pt")
        torch.manual_seed(0)
        core.save_checkpoint(path, core.build_model("resnet18").state_dict(),
                             core.CheckpointHeader(input_size=args.size, model_id=f"random-{args.size}px"))
        shipped = os.path.join(REPO, "models", "default.pt")
        rows = [(f"{args.size} px threshold", path, "threshold", p) for p in ("fp32", "fp16")]
        rows += [(f"{args.size} px learned", path, "learned", p) for p in ("fp32", "fp16")]
        rows += [("shipped 64 px learned", shipped, "learned", p) for p in ("auto", "fp16")]
        for name, model, seg, precision in rows:
            if precision == "fp16" and not device.startswith("cuda"):
                continue
            est = FillingEstimator(EstimatorConfig(model_path=model, device=device, precision=precision,
                                                   segmentation_backend=seg, inference_backend="torch"))
            stages = {k: [] for k in ("segment", "preprocess", "classify")}
            found = []

            cycle = itertools.cycle(frames)

            def one():
                found.append(len(est.predict(next(cycle))))
                for k, v in est.last_timing.items():
                    stages[k].append(1000 * v)

            single = _timed_ms(one, args.frames)
            stage_p50 = {k: round(float(np.median(v[-args.frames:])), 3) for k, v in stages.items()}
            quad_stages = {k: [] for k in stages}

            def four():
                est.predict_many(frames[:4])  # one batched segmenter forward (learned) and one classifier batch
                for k, v in est.last_timing.items():
                    quad_stages[k].append(1000 * v)

            quad = _timed_ms(four, args.frames)
            quad_p = {k: [round(float(np.percentile(v[-args.frames:], q)), 3) for q in (50, 95)]
                      for k, v in quad_stages.items()}
            row = {"one_camera": _stats(single), "stages_p50_ms": stage_p50,
                   "containers_per_frame": float(np.mean(found[-args.frames:])),
                   "four_cameras": _stats(quad), "four_cameras_stages_p50_p95_ms": quad_p,
                   "precision": est.precision, "device": str(est.device), "warnings": est.warnings}
            out[f"{name} {precision}"] = row
            log(f"node {name} {precision} -> {est.precision} on {est.device}: one camera p50 / p95 / p99 "
                f"{row['one_camera']['p50_ms']:.2f} / {row['one_camera']['p95_ms']:.2f} / "
                f"{row['one_camera']['p99_ms']:.2f} ms (segment {stage_p50['segment']:.2f}, crops "
                f"{stage_p50['preprocess']:.2f}, classify {stage_p50['classify']:.2f}; "
                f"{row['containers_per_frame']:.2f} containers/frame); four cameras batched p50 / p95 "
                f"{row['four_cameras']['p50_ms']:.2f} / {row['four_cameras']['p95_ms']:.2f} ms "
                f"(4 x 30 Hz needs <= 33.3; stages p50/p95 "
                + ", ".join(f"{k} {a:.1f}/{b:.1f}" for k, (a, b) in quad_p.items())
                + f") {'; '.join(est.warnings)}")
    return out


def accuracy(device: str, log) -> dict[str, dict]:
    """The shipped 64 px model on S1's 1 198 test crops (bench/bench_backends.py's set): accuracy
    and top-1 agreement with torch fp32 on the CPU, per CUDA precision (the node's torch path)."""
    import numpy as np

    from bench_backends import s1_test_crops
    from fillcls import backends, core

    t0 = time.perf_counter()
    x, y = s1_test_crops()
    log(f"S1 test crops: {len(y)} in {time.perf_counter() - t0:.1f} s")
    path = os.path.join(REPO, "models", "default.pt")

    def predict(dev, precision):
        runner = backends.TorchRunner(core.load_classifier(path, "cpu")[0], dev, precision)
        return np.concatenate([runner(x[i:i + 64]) for i in range(0, len(x), 64)]).argmax(1)

    ref = predict("cpu", "fp32")
    out = {"cpu fp32": {"accuracy": float((ref == y).mean()), "agreement": 1.0}}
    for precision in ("fp32", "fp16"):
        if device.startswith("cuda"):
            p = predict(device, precision)
            out[f"{device} {precision}"] = {"accuracy": float((p == y).mean()), "agreement": float((p == ref).mean())}
    for k, v in out.items():
        log(f"accuracy shipped model {k}: {100 * v['accuracy']:.2f} %, agreement with CPU fp32 "
            f"{100 * v['agreement']:.2f} %")
    return out


def onnx_check(args, device: str, log) -> dict:
    """ONNX export on this torch (the exporter, a random model at ``args.size`` px), agreement of
    onnxruntime's CPU provider with torch, the providers present, and the CUDA / TensorRT
    providers' forward where present."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from fillcls import backends, core
    from training.onnx_export import export_onnx

    out = {"onnxruntime": ort.__version__, "providers": ort.get_available_providers()}
    log(f"onnxruntime {ort.__version__}, providers {', '.join(out['providers'])}")
    with tempfile.TemporaryDirectory() as d:
        pt, onnx_path = os.path.join(d, "m.pt"), os.path.join(d, "m.onnx")
        torch.manual_seed(0)
        core.save_checkpoint(pt, core.build_model("resnet18").state_dict(),
                             core.CheckpointHeader(input_size=args.size, model_id="random"))
        t0 = time.perf_counter()
        export_onnx(pt, onnx_path)
        out["export_s"] = time.perf_counter() - t0
        x = np.random.default_rng(0).random((4, 3, args.size, args.size), dtype=np.float32)
        ref = backends.TorchRunner(core.load_classifier(pt, "cpu")[0], "cpu")(x)
        cpu = backends.OrtRunner(onnx_path, "cpu")(x)
        out["cpu_max_abs_diff"] = float(np.abs(cpu - ref).max())
        log(f"export to ONNX in {out['export_s']:.1f} s; onnxruntime CPU vs torch: max |diff| "
            f"{out['cpu_max_abs_diff']:.2e}")
        if device.startswith("cuda") and "CUDAExecutionProvider" in out["providers"]:
            for precision in ("fp32", "fp16"):
                r = backends.OrtRunner(onnx_path, device, precision)
                x1 = x[:1]
                ms = _stats(_timed_ms(lambda: r(x1), args.repeats))
                out[f"cuda {precision}"] = {**ms, "providers": r.providers, "max_abs_diff": float(np.abs(r(x) - ref).max())}
                log(f"onnxruntime {precision} on {r.providers[0]}: batch 1 p50 {ms['p50_ms']:.2f} ms")
    return out


#: The test modules that need neither ROS nor ``rosbags`` (test_fuzz, test_image_codec and test_parameters
#: import it; the GPU machines' image lacks it).
ROS_FREE_TESTS = ("test_assets", "test_attack", "test_authors", "test_backends", "test_ccm_import", "test_core",
                  "test_data_ccm", "test_data_procedural", "test_engine", "test_fetch", "test_geometry3d",
                  "test_inference", "test_pbr", "test_photos", "test_pretrain",
                  "test_real_path", "test_robustness", "test_runs", "test_segmentation", "test_seqeval",
                  "test_sequences", "test_sources", "test_tracking", "test_train_cli")


def ros_free_tests(args, log) -> dict:
    """The ROS-free test modules on this machine's torch (pytest; ``-n 8`` with pytest-xdist), bounded by
    ``--test-timeout`` seconds; the output goes to ``pytest.log`` beside ``--json``."""
    import subprocess

    import importlib.util

    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    if importlib.util.find_spec("xdist"):
        cmd += ["-n", str(min(8, os.cpu_count() or 1))]
    if importlib.util.find_spec("pytest_timeout"):
        cmd += ["--timeout", "300"]
    cmd += [f"test/{m}.py" for m in ROS_FREE_TESTS]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=args.test_timeout)
        text, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        text, rc = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or ""), "timeout"
    if args.out_dir:
        with open(os.path.join(args.out_dir, "pytest.log"), "w") as f:
            f.write(text)
    summary = text.strip().splitlines()[-1] if text.strip() else ""
    log(f"ROS-free tests ({len(ROS_FREE_TESTS)} modules) in {time.perf_counter() - t0:.0f} s: rc {rc}, {summary}")
    return {"rc": rc, "summary": summary, "seconds": time.perf_counter() - t0}


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
    p.add_argument("--frames", type=int, default=200, help="frames timed per node configuration")
    p.add_argument("--repeats", type=int, default=200, help="timed calls per bare-forward variant")
    p.add_argument("--sections", default="forward,node,accuracy,onnx,train,tests",
                   help="comma-separated sections to run, in this order (default: all)")
    p.add_argument("--test-timeout", type=float, default=240, help="seconds for the ROS-free tests")
    p.add_argument("--tiny", action="store_true", help="tiny sizes: checks the script on a CPU in a minute")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON (after each section)")
    args = p.parse_args(argv)
    if args.tiny:
        args.size, args.batch, args.steps, args.warmup, args.crops, args.frames, args.repeats = 32, 8, 2, 1, 96, 5, 5
    args.out_dir = os.path.dirname(os.path.abspath(args.json)) if args.json else ""
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
    import torch

    from training.config import get_preset
    from training.runs import resolve_device

    device = resolve_device(args.device)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    from bench_backends import cpu_model

    cpu = cpu_model()
    print(f"torch {torch.__version__}, device {device} ({name}), CPU {cpu} x {os.cpu_count()}, "
          f"python {sys.version.split()[0]}", flush=True)
    results: dict = {"device": device, "device_name": name, "cpu": cpu, "cpus": os.cpu_count(),
                     "torch": torch.__version__, "size": args.size, "batch": args.batch}

    def log(msg):
        print(msg, flush=True)

    def section(key, fn):
        t0 = time.perf_counter()
        try:
            results[key] = fn()
        except Exception as exc:  # one broken section must not hide the others' figures
            import traceback

            traceback.print_exc()
            results[key] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"[{key}: {time.perf_counter() - t0:.0f} s]")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1, default=str)

    wanted = args.sections.split(",")
    if "forward" in wanted:
        section("forward", lambda: forward_variants(args, device, log))
    if "node" in wanted:
        section("node", lambda: node_latency(args, device, log))
    if "accuracy" in wanted:
        section("accuracy", lambda: accuracy(device, log))
    if "onnx" in wanted:
        section("onnx", lambda: onnx_check(args, device, log))
    if "train" in wanted:
        preset = get_preset("paper-synthetic", size=args.size, batch_size=args.batch)

        def train():
            speeds = train_speeds(args, preset, args.split, device, log)
            log(f"PGD-10 AT costs {speeds['ST'] / speeds['AT']:.1f}x ST")
            return {"img_per_s": speeds, "study_s": study_estimate(speeds, get_preset("paper", batch_size=args.batch), log)}

        section("train", train)
    if "tests" in wanted:
        section("tests", lambda: ros_free_tests(args, log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
