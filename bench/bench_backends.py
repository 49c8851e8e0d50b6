#!/usr/bin/env python
"""Backends benchmark: torch vs onnxruntime, fp32 / bf16 / int8 (/ fp16 on a GPU), in one run.

For each backend and precision: bare forward (batch 1) of a random ResNet-18 at 224 px and of the
shipped 64 px model (or ``--model``, a trained checkpoint of any input size), the limit set by the
machine's fp32 matmul peak (1.82 GFLOP / measured sgemm GFLOP/s), accuracy on S1's test crops at
that model's size (``make_cropset(4800, size, seed 0)`` split S1, the README's 1 198 crops) and
top-1 agreement with torch fp32, time from process start to the first
answer on a frame and the RSS of that process (a fresh subprocess per configuration).

    .venv/bin/python bench/bench_backends.py [--threads 2] [--repeats 30] [--skip-accuracy] [--model PT]
    .venv/bin/python bench/bench_backends.py --int8-variants   # the int8 calibration study only

``--int8-variants`` quantises the shipped model in each of the ways tried for the int8 default
(calibration method and size, percentile, per-channel weights, QDQ / QOperator, fp32 first conv
and fc, symmetric activations, reduce_range, quant_pre_process) and prints agreement with torch
fp32, accuracy and forward time of each on S1's test crops (calibration: training crops only).

The node end to end per backend: ``bench/bench_node.py --inference-backend onnxruntime --precision int8``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
RESNET18_GFLOP = 1.82  # multiply-adds x 2 of one 224 px forward
#: (backend, precision, int8_recheck): int8 pure, with near-ties recomputed in fp32 at the default
#: margin, and what ``precision: auto`` (the node's default) makes of it (None: INT8_RECHECK_MARGIN)
CONFIGS = (("torch", "fp32", 0.0), ("torch", "bf16", 0.0), ("onnxruntime", "fp32", 0.0), ("onnxruntime", "int8", 0.0),
           ("onnxruntime", "int8", None), ("onnxruntime", "auto", None), ("onnxruntime", "fp16", 0.0))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def sgemm_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of an n x n float32 matmul with torch on ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def median_ms(runner, x, repeats: int) -> float:
    for _ in range(5):
        runner(x)
    return 1e3 * statistics.median(_timed(lambda: runner(x)) for _ in range(repeats))


RANDOM = "random ResNet-18 224 px"


def make_models(tmp: str, trained_name: str, trained: str) -> dict:
    """{name: (pt, onnx)}: a random ResNet-18 at 224 px and the ``trained`` checkpoint (named
    ``trained_name``), each exported to ONNX with an int8 copy (calibrated on S1 training crops)."""
    import torch

    from fillcls import core
    from training.onnx_export import export_onnx

    torch.manual_seed(0)
    rnd = os.path.join(tmp, "random224.pt")
    core.save_checkpoint(rnd, core.build_model("resnet18").state_dict(),
                         core.CheckpointHeader(input_size=224, model_id="bench-random"))
    models = {RANDOM: rnd, trained_name: trained}
    out = {}
    for name, pt in models.items():
        onnx_path = os.path.join(tmp, os.path.basename(pt)[:-3] + ".onnx")
        # the trained model as `export --int8` writes it; the random one is timed only
        export_onnx(pt, onnx_path, int8=True, **({"calibration_crops": 64} if pt == rnd else {}))
        out[name] = (pt, onnx_path)
    return out


def load_runner(pt: str, onnx_path: str, backend: str, precision: str, threads: int, recheck: float):
    from fillcls import backends

    path = onnx_path if backend == "onnxruntime" else pt
    runner, header = backends.load_classifier_runner(path, backend, "cuda" if precision == "fp16" else "cpu",
                                                     precision, threads, int8_recheck=recheck)
    return runner, header


def s1_test_crops(size: int = 64):
    """(N x 3 x size x size float32 in [0, 1], labels) of S1's test containers (the README's figure;
    cached in runs/cache)."""
    import numpy as np

    from training.data.ccm import split_cropset
    from training.data.procedural import make_cropset

    _, test = split_cropset(make_cropset(4800, size, seed=0, cache_dir=os.path.join(REPO, "runs", "cache")), "S1")
    return test.images.numpy().astype(np.float32) / np.float32(255.0), test.labels.numpy()


START_CODE = """
import os, sys, time, json
t0 = float(sys.argv[1])
import numpy as np
from fillcls.inference import EstimatorConfig, FillingEstimator
est = FillingEstimator(EstimatorConfig(sys.argv[2], inference_backend=sys.argv[3], precision=sys.argv[4],
                                       int8_recheck=float(sys.argv[6]),
                                       segmentation_backend="threshold", cpu_threads=int(sys.argv[5])))
frame = np.full((480, 640, 3), 128, np.uint8); frame[100:380, 250:390] = (200, 60, 40)
res = est.predict(frame)
first = time.time() - t0
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) / 1024
print(json.dumps({"first_answer_s": first, "rss_mib": rss, "torch_imported": "torch" in sys.modules,
                  "found": len(res), "warnings": est.warnings}))
"""


def start_to_first_answer(model: str, backend: str, precision: str, threads: int, recheck: float) -> dict:
    """Start a fresh Python, build the estimator, answer one frame: seconds since exec, RSS."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", START_CODE, repr(time.time()), model, backend, precision,
                          str(threads), str(recheck)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


INT8_VARIANTS = (  # (label, quantize_static options); "ends": first conv and fc kept in fp32
    ("min-max, 256", dict(method="MinMax", n=256)),
    ("entropy, 256", dict(method="Entropy", n=256)),
    ("percentile 99.99, 256 (previous default)", dict(n=256, pct=99.99)),
    ("percentile 99.999, 256", dict(n=256, pct=99.999)),
    ("percentile 99.9, 256", dict(n=256, pct=99.9)),
    ("percentile 99.99, 256, per-tensor weights", dict(n=256, pct=99.99, per_channel=False)),
    ("percentile 99.99, 256, QOperator", dict(n=256, pct=99.99, fmt="QOperator")),
    ("percentile 99.99, 256, no quant_pre_process", dict(n=256, pct=99.99, pre=False)),
    ("percentile 99.99, 256, symmetric activations", dict(n=256, pct=99.99, sym=True)),
    ("percentile 99.99, 256, reduce_range", dict(n=256, pct=99.99, reduce_range=True)),
    ("percentile 99.99, 256, ends fp32", dict(n=256, pct=99.99, ends=True)),
    ("percentile 99.9, 256, ends fp32", dict(n=256, pct=99.9, ends=True)),
    ("percentile 99.9, 1024, ends fp32 (export --int8)", dict(n=1024, pct=99.9, ends=True)),
)


def int8_variants(threads: int, repeats: int) -> None:
    """Quantise the shipped model in each way of INT8_VARIANTS and print a table: top-1 agreement
    with torch fp32 and accuracy on S1's test crops, batch-1 forward."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from fillcls import backends
    from training.onnx_export import calibration_set, export_onnx

    tmp = tempfile.mkdtemp(prefix="bench_int8_")
    src, pre = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "pre.onnx")
    export_onnx(os.path.join(REPO, "models", "default.pt"), src, fp16_weights=False)  # weights as initializers
    quant_pre_process(src, pre, skip_symbolic_shape=True)
    crops, labels = s1_test_crops()
    calib = calibration_set(64, 1024)
    torch_runner, _ = backends.load_classifier_runner(os.path.join(REPO, "models", "default.pt"), "torch")
    ref = np.concatenate([torch_runner(crops[i:i + 64]).argmax(1) for i in range(0, len(crops), 64)])
    print(f"torch fp32: accuracy {100 * (ref == labels).mean():.2f} % of {len(labels)}")
    print("\n| int8 variant | agreement | accuracy | forward (64 px) |\n|---|---:|---:|---:|")
    for label, v in INT8_VARIANTS:
        model = pre if v.get("pre", True) else src
        batches = iter([calib[i:i + 16] for i in range(0, v["n"], 16)])

        class Reader(CalibrationDataReader):
            def get_next(self):
                b = next(batches, None)
                return None if b is None else {"image": b}

        out = os.path.join(tmp, "q.onnx")
        extra = {"ActivationSymmetric": v.get("sym", False)}
        if v.get("method", "Percentile") == "Percentile":
            extra["CalibPercentile"] = v["pct"]
        quantize_static(model, out, Reader(), quant_format=getattr(QuantFormat, v.get("fmt", "QDQ")),
                        per_channel=v.get("per_channel", True), reduce_range=v.get("reduce_range", False),
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, v.get("method", "Percentile")),
                        nodes_to_exclude=backends._fp32_ends(onnx.load(model)) if v.get("ends") else [],
                        extra_options=extra)
        m = onnx.load(out)
        backends.set_metadata(m, backends.read_onnx_header(src)[0], "int8")
        onnx.save(m, out)
        runner = backends.OrtRunner(out, threads=threads)
        pred = np.concatenate([runner(crops[i:i + 64]).argmax(1) for i in range(0, len(crops), 64)])
        ms = median_ms(runner, crops[:1], repeats)
        print(f"| {label} | {100 * (pred == ref).mean():.2f} % | {100 * (pred == labels).mean():.2f} % | "
              f"{ms:.1f} ms |", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--model", default=os.path.join(REPO, "models", "default.pt"),
                    help="trained checkpoint measured beside the random 224 px one (default: the shipped model)")
    ap.add_argument("--int8-variants", action="store_true", help="only the int8 calibration study")
    args = ap.parse_args(argv)
    import numpy as np
    import onnxruntime as ort
    import torch

    from fillcls import backends, core

    torch.set_num_threads(args.threads)
    bf16, why = backends.cpu_bf16_support()
    gflops = sgemm_gflops(args.threads)
    limit_ms = RESNET18_GFLOP / gflops * 1e3
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical), torch capability "
          f"{torch.backends.cpu.get_cpu_capability()}, bf16: {bf16} ({why}); onnxruntime {ort.__version__} "
          f"providers {ort.get_available_providers()}")
    if args.int8_variants:
        int8_variants(args.threads, args.repeats)
        return 0
    print(f"fp32 sgemm peak ({args.threads} threads): {gflops:.0f} GFLOP/s -> ResNet-18 224 px limit "
          f"{limit_ms:.1f} ms (target: forward <= 2.5 x = {2.5 * limit_ms:.1f} ms)")
    tmp = tempfile.mkdtemp(prefix="bench_backends_")
    size = core.read_checkpoint(args.model)[0].input_size
    trained = f"trained {os.path.basename(args.model)} {size} px"
    models = make_models(tmp, trained, args.model)
    crops, labels = (None, None) if args.skip_accuracy else s1_test_crops(size)
    gpu = "CUDAExecutionProvider" in ort.get_available_providers()
    rows, ref_pred = [], None
    for backend, precision, recheck in CONFIGS:
        if precision == "fp16" and not gpu:
            continue
        recheck = backends.INT8_RECHECK_MARGIN if recheck is None else recheck
        row = {"config": f"{backend} {precision}" + (" (the default)" if precision == "auto" else
                                                      f" + fp32 re-check < {recheck:g}" if recheck else "")}
        for name, (pt, onnx_path) in models.items():
            row[name] = ""  # the table's column order
            try:
                runner, header = load_runner(pt, onnx_path, backend, precision, args.threads, recheck)
            except Exception as exc:  # report and go on: one configuration must not stop the others
                row[name] = f"error: {exc}"
                continue
            x = np.random.default_rng(0).random((1, 3, header.input_size, header.input_size), dtype=np.float32)
            if not recheck:
                ms = median_ms(runner, x, args.repeats)
                row[name] = f"{ms:.1f} ms" + (f" ({runner.precision}!)" if runner.precision != precision else "")
            if name == trained and crops is not None:
                pred = np.concatenate([runner(crops[i:i + 64]).argmax(1) for i in range(0, len(crops), 64)])
                ref_pred = pred if ref_pred is None else ref_pred
                row["accuracy"] = f"{100 * (pred == labels).mean():.2f} % of {len(labels)}"
                row["agree"] = f"{100 * (pred == ref_pred).mean():.2f} %"
                if getattr(runner, "recheck", None) is not None:
                    row["agree"] += (f" ({100 * runner.rechecked / runner.answered:.1f} % re-run in fp32"
                                     f"{f' at < {runner.recheck_margin:.3g}' if precision == 'auto' else ''})")
            if recheck and name == RANDOM:
                row[name] = "n/a (random weights: their near-ties say nothing about a trained model's)"
            elif recheck and crops is not None:  # per crop, batch 1: int8 plus the fp32 re-runs it makes
                t0 = time.perf_counter()
                for i in range(len(crops)):
                    runner(crops[i:i + 1])
                row[name] = f"{1e3 * (time.perf_counter() - t0) / len(crops):.1f} ms (mean over S1 test crops)"
        start = start_to_first_answer(models[trained][1 if backend == "onnxruntime" else 0],
                                      backend, precision, args.threads, recheck)
        row["start->answer"] = (f"{start['first_answer_s']:.2f} s, RSS {start['rss_mib']:.0f} MiB, "
                                f"torch imported: {start['torch_imported']}") if "error" not in start else start["error"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| config | " + " | ".join(k for k in rows[0] if k != "config") + " |")
    for row in rows:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")
    print(f"\ntargets: forward (224 px) <= {2.5 * limit_ms:.1f} ms; start -> first answer <= 1.5 s; RSS <= 350 MiB; "
          "agreement >= 99.5 % (int8 >= 98 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
