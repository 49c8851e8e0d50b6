"""Inference backends: onnxruntime vs torch agreement, ONNX metadata, torch-free import, int8."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from fillcls import backends, core, spec
from fillcls.inference import EstimatorConfig, FillingEstimator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def onnx_pair(tiny_model, tiny_onnx):
    """(tiny .pt, its fp32 .onnx export) at 32 px."""
    return tiny_model, tiny_onnx


def test_metadata_round_trip(onnx_pair):
    pt, onnx_path = onnx_pair
    header, precision = backends.read_onnx_header(onnx_path)
    assert header == core.read_checkpoint(pt)[0] and precision == "fp32"
    assert backends.model_format(onnx_path) == "onnx" and backends.model_format(pt) == "torch"
    assert backends.resolve_backend("auto", onnx_path) == "onnxruntime"
    assert backends.resolve_backend("auto", pt) == "torch"


def test_ort_matches_torch_on_random_crops(onnx_pair):
    pt, onnx_path = onnx_pair
    ort_runner, header = backends.load_classifier_runner(onnx_path, "onnxruntime")
    torch_runner, _ = backends.load_classifier_runner(pt, "torch", optimize=False)
    fused, _ = backends.load_classifier_runner(pt, "torch", optimize=True)
    x = np.random.default_rng(0).random((16, 3, 32, 32), dtype=np.float32)
    ref = torch_runner(x)
    for probs in (ort_runner(x), fused(x)):
        assert np.array_equal(probs.argmax(1), ref.argmax(1))
        np.testing.assert_allclose(probs, ref, atol=1e-4)


def test_numpy_crops_match_torch_crops(two_containers):
    rng = np.random.default_rng(1)
    for side, size in ((90, 32), (300, 64), (48, 224)):
        crop = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        ref = core.resize_uint8(crop, size).permute(1, 2, 0).numpy().astype(int)
        got = spec.resize_uint8_np(crop, size).astype(int)
        diff = np.abs(got - ref)
        assert diff.max() <= 2 and (diff > 0).mean() < 0.1, (side, size, diff.max(), (diff > 0).mean())
    frame, boxes = two_containers
    a = core.crop_and_preprocess(frame, boxes, 32).numpy()
    b = spec.crop_and_preprocess_np(frame, boxes, 32)
    assert a.shape == b.shape and np.abs(a - b).max() <= 2 / 255 + 1e-6


def test_estimators_agree_on_frames(onnx_pair, two_containers):
    pt, onnx_path = onnx_pair
    frame, _ = two_containers
    kw = dict(segmentation_backend="threshold", segmentation_score_threshold=0.0)
    t = FillingEstimator(EstimatorConfig(pt, inference_backend="torch", **kw))
    o = FillingEstimator(EstimatorConfig(onnx_path, inference_backend="auto", **kw))
    assert t.backend == "torch" and o.backend == "onnxruntime" and o.model_id == t.model_id == "test-model"
    rt, ro = t.predict(frame), o.predict(frame)
    assert [r.box for r in rt] == [r.box for r in ro] and [r.level for r in rt] == [r.level for r in ro]
    np.testing.assert_allclose([r.probabilities for r in ro], [r.probabilities for r in rt], atol=2e-3)


def test_shipped_models_agree_on_procedural_frames():
    from fillcls.world import SPLITS, render_frame

    models = os.path.join(REPO, "models")
    if not all(os.path.isfile(os.path.join(models, f)) for f in ("default.onnx", "segmenter.onnx")):
        pytest.skip("models/*.onnx not exported")
    ests = [FillingEstimator(EstimatorConfig(os.path.join(models, f"default.{ext}"), inference_backend=b,
                                             precision="fp32",  # not the int8 copy `make models` may have made
                                             segmentation_model=os.path.join(models, f"segmenter.{ext}")))
            for ext, b in (("pt", "torch"), ("onnx", "onnxruntime"))]
    for seed in range(3):
        frame, _ = render_frame(seed, containers=SPLITS["S1"], n_containers=2)
        rt, ro = (e.predict(frame) for e in ests)
        assert [r.box for r in rt] == [r.box for r in ro] and len(rt) > 0
        assert [r.level for r in rt] == [r.level for r in ro]
        np.testing.assert_allclose([r.probabilities for r in ro], [r.probabilities for r in rt], atol=0.02)
        # the score is the mean probability of a container's pixels: a few pixels at the mask threshold or
        # at the box-vote boundary (fillcls.segnet.box_instances) may change sides between runtimes
        assert all(abs(a.segmentation_score - b.segmentation_score) < 5e-3 for a, b in zip(rt, ro))


def test_onnxruntime_estimator_imports_no_torch(onnx_pair):
    _, onnx_path = onnx_pair
    code = f"""
import sys, numpy as np
from fillcls.inference import EstimatorConfig, FillingEstimator
est = FillingEstimator(EstimatorConfig({onnx_path!r}, inference_backend="onnxruntime",
                                       segmentation_backend="threshold", segmentation_score_threshold=0.0))
frame = np.full((120, 160, 3), 128, np.uint8); frame[20:100, 20:60] = (200, 40, 40)
assert len(est.predict(frame)) == 1
print("torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_int8_runs_and_mostly_agrees(onnx_pair, tmp_path):
    pt, onnx_path = onnx_pair
    rng = np.random.default_rng(2)
    calib = rng.random((32, 3, 32, 32), dtype=np.float32)
    q = backends.quantize_int8(onnx_path, str(tmp_path / "tiny.int8.onnx"), calib)
    assert backends.read_onnx_header(q)[1] == "int8"
    runner = backends.OrtRunner(q, precision="int8")
    x = rng.random((64, 3, 32, 32), dtype=np.float32)
    ref = backends.OrtRunner(onnx_path)(x)
    got = runner(x)
    assert got.shape == ref.shape and np.allclose(got.sum(1), 1, atol=1e-4)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.75  # random weights: a loose bound
    import onnx

    model = onnx.load(q)
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert convs[0].input[1] not in dq_outputs and convs[-1].input[1] not in dq_outputs  # fp32 ends
    assert any(n.input[1] in dq_outputs for n in convs[1:-1])  # the rest is int8
    with pytest.raises(spec.CheckpointError, match="tiny.int8.onnx not found"):
        backends.OrtRunner(onnx_path, precision="int8")


def test_int8_calibration_in_passes_bounded_by_memory(onnx_pair, tmp_path, monkeypatch):
    """Large inputs are calibrated a few batches at a time (onnxruntime keeps every activation of a
    pass in memory: 1024 crops at 224 px did not fit in 24 GiB); the histograms of the passes are
    merged into one int8 model that agrees with the one-pass model."""
    assert backends._calibration_stride(64, 16, 64) == 64  # the shipped 64 px model: one pass
    assert backends._calibration_stride(64, 16, 224) == 4  # 224 px: 16 passes of 64 crops
    assert backends._calibration_stride(5, 16, 224) == 5 and backends._calibration_stride(63, 16, 224) == 3
    _, onnx_path = onnx_pair
    rng = np.random.default_rng(7)
    calib = rng.random((64, 3, 32, 32), dtype=np.float32)
    one = backends.quantize_int8(onnx_path, str(tmp_path / "one.int8.onnx"), calib)
    passes = []
    monkeypatch.setattr(backends, "CALIBRATION_PIXELS", 2 * 16 * 32 * 32)  # two batches of 16 per pass
    from onnxruntime.quantization import calibrate

    collect = calibrate.HistogramCalibrater.collect_data
    monkeypatch.setattr(calibrate.HistogramCalibrater, "collect_data",
                        lambda self, reader: passes.append(1) or collect(self, reader))
    strided = backends.quantize_int8(onnx_path, str(tmp_path / "strided.int8.onnx"), calib)
    assert len(passes) == 2
    x = rng.random((64, 3, 32, 32), dtype=np.float32)
    a, b = backends.OrtRunner(one, precision="int8")(x), backends.OrtRunner(strided, precision="int8")(x)
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.9 and np.abs(a - b).max() < 0.1


def test_int8_recheck_recomputes_near_ties_in_fp32(onnx_pair, tmp_path):
    _, onnx_path = onnx_pair
    rng = np.random.default_rng(3)
    d = tmp_path / "m"
    d.mkdir()
    fp32 = str(d / "tiny.onnx")
    shutil.copy(onnx_path, fp32)
    runner, _ = backends.load_classifier_runner(fp32, precision="auto")  # no int8 copy yet: fp32
    assert runner.precision == "fp32" and "no int8 copy" in backends.describe_runner(runner)
    backends.quantize_int8(fp32, backends.int8_sibling(fp32), rng.random((32, 3, 32, 32), dtype=np.float32))
    x = rng.random((64, 3, 32, 32), dtype=np.float32)
    ref = backends.OrtRunner(fp32)(x)
    pure = backends.OrtRunner(fp32, precision="int8")(x)
    top2 = np.sort(pure, 1)[:, -2:]
    near = top2[:, 1] - top2[:, 0] < 1.0  # margin 1: every answer is recomputed -> exactly fp32
    runner = backends.OrtRunner(fp32, precision="int8", recheck_margin=1.0)
    assert np.allclose(runner(x), ref, atol=1e-6) and runner.rechecked == near.sum() == 64
    small = backends.OrtRunner(fp32, precision="int8", recheck_margin=0.05)
    got = small(x)
    redo = (top2[:, 1] - top2[:, 0]) < 0.05
    assert np.allclose(got[redo], ref[redo], atol=1e-6) and np.allclose(got[~redo], pure[~redo], atol=1e-6)
    assert small.rechecked == redo.sum() and small.answered == 64
    alone = backends.OrtRunner(backends.int8_sibling(fp32), precision="int8", recheck_margin=0.1)
    assert alone.recheck is None and "not re-checked" in alone.warnings[0]
    # the random model answers near-ties: the int8 copy records it, and auto narrows the re-check to
    # the closest AUTO_RECHECK_SHARE of its calibration answers
    q = backends.int8_sibling(fp32)
    rate = backends.near_tie_rate(q, backends.INT8_RECHECK_MARGIN)
    top2 = np.sort(backends.OrtRunner(q, precision="int8")(rng.random((32, 3, 32, 32), dtype=np.float32)), 1)
    assert rate > backends.AUTO_RECHECK_SHARE and backends.near_tie_rate(q, 1.01) == 1.0
    assert (top2[:, -1] - top2[:, -2] < 0.1).mean() > backends.AUTO_RECHECK_SHARE
    margin = backends.near_tie_margin(q, backends.AUTO_RECHECK_SHARE)
    assert 0 <= margin < backends.INT8_RECHECK_MARGIN
    assert abs(backends.near_tie_rate(q, margin) - backends.AUTO_RECHECK_SHARE) < 1e-6
    auto, _ = backends.load_classifier_runner(fp32, precision="auto")
    assert auto.precision == "int8" and auto.recheck is not None and auto.recheck_margin == margin
    assert "the closest 5 %" in backends.describe_runner(auto)
    assert backends.load_classifier_runner(fp32, precision="auto", int8_recheck=0)[0].precision == "int8"  # pure int8
    model = onnx.load(q)  # a confident model's copy: few near-ties recorded -> auto = int8 + re-check
    next(p for p in model.metadata_props if p.key == backends.META_NEAR_TIES).value = '{"gap_percentiles": [0.5, 1]}'
    onnx.save(model, q)
    assert backends.near_tie_rate(q, 0.1) == 0.0
    auto, _ = backends.load_classifier_runner(fp32, precision="auto")
    assert auto.precision == "int8" and auto.recheck is not None and auto.recheck_margin == backends.INT8_RECHECK_MARGIN
    assert "precision auto -> int8" in backends.describe_runner(auto)
    est = FillingEstimator(EstimatorConfig(fp32, segmentation_backend="threshold"))  # auto is the default
    assert est.precision == "int8" and est.backend == "onnxruntime"
    pt_runner, _ = backends.load_classifier_runner(onnx_pair[0], "torch", precision="auto")
    assert pt_runner.precision == "fp32"


def test_int8_copy_of_an_existing_export(onnx_pair, tmp_path, capsys):
    """`python -m training.onnx_export --int8-of` (what setup runs for the shipped model) writes the
    copy `auto` picks, skips it when up to date, and refuses what is not an fp32 classifier."""
    from training import onnx_export

    fp32 = str(tmp_path / "tiny.onnx")
    shutil.copy(onnx_pair[1], fp32)
    assert onnx_export.main(["--int8-of", fp32, "--calibration-crops", "24"]) == 0
    q = backends.int8_sibling(fp32)
    assert backends.read_onnx_header(q) == (backends.read_onnx_header(fp32)[0], "int8")
    assert backends.resolve_precision("auto", "onnxruntime", fp32, int8_recheck=0)[0] == "int8"
    assert 0 <= backends.near_tie_rate(q, 0.1) <= 1  # recorded on the 16 crops of the one whole batch
    before = os.path.getmtime(q)
    assert onnx_export.main(["--int8-of", fp32, "--if-missing"]) == 0 and os.path.getmtime(q) == before
    assert "up to date" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        onnx_export.main(["--int8-of", q])
    assert exc.value.code == 2 and "tiny.int8.onnx: not an fp32 classifier" in capsys.readouterr().err


def test_bad_onnx_files_name_the_file(tmp_path, onnx_pair):
    pt, onnx_path = onnx_pair
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(spec.CheckpointError, match="broken.onnx"):
        FillingEstimator(EstimatorConfig(str(bad), inference_backend="onnxruntime"))
    with pytest.raises(spec.CheckpointError, match="tiny.pt: a PyTorch checkpoint"):
        backends.load_classifier_runner(pt, "onnxruntime")
    with pytest.raises(spec.CheckpointError, match="an ONNX model"):
        backends.load_classifier_runner(onnx_path, "torch")
    with pytest.raises(spec.CheckpointError, match="missing.onnx"):
        backends.load_classifier_runner(str(tmp_path / "missing.onnx"), "auto")
    with pytest.raises(ValueError, match="precision must be one of"):
        backends.load_classifier_runner(onnx_path, "onnxruntime", precision="int4")
    with pytest.raises(ValueError, match="needs inference_backend 'onnxruntime'"):
        backends.load_classifier_runner(pt, "torch", precision="int8")
    plain = tmp_path / "plain.onnx"
    import onnx

    model = onnx.load(onnx_path)
    del model.metadata_props[:]
    onnx.save(model, str(plain))
    with pytest.raises(spec.CheckpointError, match="plain.onnx: an ONNX model without a fillcls header"):
        backends.OrtRunner(str(plain))


def test_bf16_falls_back_with_a_warning_or_runs(tiny_model):
    runner, _ = backends.load_classifier_runner(tiny_model, "torch", precision="bf16")
    ok, _ = backends.cpu_bf16_support()
    assert runner.precision == ("bf16" if ok else "fp32")
    assert ok or any("bf16" in w for w in runner.warnings)
    probs = runner(np.random.default_rng(3).random((2, 3, 32, 32), dtype=np.float32))
    assert probs.shape == (2, 4) and np.allclose(probs.sum(1), 1, atol=1e-2)
    json.dumps(runner.warnings)


def test_folded_channels_last_runner_matches_plain_eager(tiny_model):
    """``optimize`` (BatchNorm folded, channels-last) changes no answer, on any device."""
    model, _ = core.load_classifier(tiny_model, "cpu")
    x = np.random.default_rng(4).random((3, 3, 32, 32), dtype=np.float32)
    plain = backends.TorchRunner(model, "cpu", optimize=False)(x)
    folded = backends.TorchRunner(model, "cpu", optimize=True)
    assert folded.channels_last
    np.testing.assert_allclose(folded(x), plain, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_graphs_match_eager(tiny_model, precision):
    """CUDA-graph replay gives eager's answers for every batch size (padded to a power of two)."""
    eager = backends.TorchRunner(core.load_classifier(tiny_model, "cpu")[0], "cuda", precision, cuda_graphs=False)
    graphs = backends.TorchRunner(core.load_classifier(tiny_model, "cpu")[0], "cuda", precision)
    rng = np.random.default_rng(5)
    for n in (1, 3, 5, 2, 3, 40):
        x = rng.random((n, 3, 32, 32), dtype=np.float32)
        # not bit-equal: folded BatchNorm, channels-last and cuDNN's TF32 convolutions (fp32 on an H100:
        # up to 1.7e-4 apart; 99.9 % top-1 agreement on S1, bench/gpu_check.py)
        np.testing.assert_allclose(graphs(x), eager(x), atol=2e-3)
    assert not graphs.graphs.failed and not graphs.warnings
    assert sorted(key[0] for key in graphs.graphs.graphs) == [1, 2, 4, 8]  # 40 > MAX_BATCH: eager


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available")
def test_gpu_provider_choice_and_fp16_copy_without_a_gpu(onnx_pair, monkeypatch):
    """What a GPU build of onnxruntime would be given (TensorRT first with fp16 when asked, then CUDA
    on the requested device), the CPU fallback with its warning, and the fp16 copy the CUDA provider
    runs: fp16 convolutions, fp32 input and output, the fp32 model's answers (ORT's CPU provider runs
    it here, casting where it lacks fp16 kernels)."""
    import onnxruntime as ort
    from onnx import TensorProto, shape_inference

    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: gpu)
    warnings = []
    assert backends._providers("cuda:1", True, warnings) == [
        ("TensorrtExecutionProvider", {"device_id": 1, "trt_fp16_enable": True}),
        ("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: gpu[1:])
    assert backends._providers("cuda", False, warnings) == [("CUDAExecutionProvider", {"device_id": 0}),
                                                             "CPUExecutionProvider"]
    assert backends._providers("cpu", False, warnings) == ["CPUExecutionProvider"] and not warnings
    monkeypatch.setattr(ort, "get_available_providers", lambda: gpu[2:])
    assert backends._providers("cuda", True, warnings) == ["CPUExecutionProvider"]
    assert len(warnings) == 1 and "no CUDA provider" in warnings[0]

    _, onnx_path = onnx_pair
    copy = shape_inference.infer_shapes(onnx.load_from_string(backends._fp16_copy(onnx_path)))
    g = copy.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    convs = [n for n in g.node if n.op_type == "Conv"]
    assert len(convs) == 20 and all(types[n.input[0]] == types[n.input[1]] == TensorProto.FLOAT16 for n in convs)
    assert [types[v.name] for v in [*g.input, *g.output]] == [TensorProto.FLOAT, TensorProto.FLOAT]

    monkeypatch.setattr(ort, "get_available_providers", lambda: gpu[1:])  # a CUDA build without TensorRT
    runner = backends.OrtRunner(onnx_path, device="cuda", precision="fp16")
    assert runner.precision == "fp16" and not runner.warnings
    x = np.random.default_rng(6).random((4, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(runner(x), backends.OrtRunner(onnx_path)(x), atol=2e-2)
