"""The ROS-free inference core: segmentation backends, batching, results, device handling."""

import math

import numpy as np
import pytest
import torch

from fillcls import core, segmentation
from fillcls.inference import EstimatorConfig, FillingEstimator, draw_debug, resolve_device


def test_full_frame_backend():
    dets = segmentation.make_segmenter("full_frame")(np.zeros((48, 64, 3), np.uint8))
    assert [(d.box, d.score) for d in dets] == [((0, 0, 64, 48), 1.0)]


def test_threshold_backend_finds_both_boxes_in_order(two_containers):
    frame, boxes = two_containers
    dets = segmentation.make_segmenter("threshold")(frame)
    assert len(dets) == 2
    for det, box in zip(dets, boxes):  # left to right
        assert all(abs(a - b) <= 2 for a, b in zip(det.box, box)), (det.box, box)
        assert det.mask.shape == frame.shape[:2] and det.mask[box[1] + 5, box[0] + 5]
    assert segmentation.make_segmenter("threshold")(np.full((120, 160, 3), 90, np.uint8)) == []


def test_select_threshold_and_limit():
    dets = [segmentation.Detection((0, 0, 1, 1), s) for s in (0.2, 0.9, 0.6, 0.9)]
    kept = segmentation.select(dets, 0.5, 2)
    assert [d.score for d in kept] == [0.9, 0.9] and kept[0] is dets[1]
    assert segmentation.select(dets, 0.95, 5) == []


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown segmentation backend 'nope'.*full_frame"):
        segmentation.make_segmenter("nope")


def test_estimator_results(tiny_model, two_containers):
    frame, boxes = two_containers
    est = FillingEstimator(EstimatorConfig(tiny_model, segmentation_backend="threshold",
                                           segmentation_score_threshold=0.0))
    results = est.predict(frame)
    assert len(results) == 2 and est.model_id == "test-model"
    for r in results:
        assert sum(r.probabilities) == pytest.approx(1.0, abs=1e-5)
        assert r.level == int(np.argmax(r.probabilities)) and r.confidence == max(r.probabilities)
        p = core.LEVEL_PERCENT[r.level]
        assert (math.isnan(r.percentage) and math.isnan(p)) or r.percentage == p
        x, y, w, h = r.roi
        assert 0 <= x and 0 <= y and x + w <= 160 and y + h <= 120
    # batch == single: each crop classified alone gives the same probabilities
    for r, box in zip(results, boxes):
        alone = est.classify(core.crop_and_preprocess(frame, [r.box], est.input_size))[0]
        assert torch.allclose(alone, torch.tensor(r.probabilities), atol=1e-4)
    est.config.max_containers = 1
    assert len(est.predict(frame)) == 1
    debug = draw_debug(frame, results)
    assert debug.shape == frame.shape and not np.array_equal(debug, frame)


def test_device_resolution():
    assert resolve_device("cpu") == (torch.device("cpu"), None)
    with pytest.raises(ValueError, match="cpu', 'cuda' or 'cuda:N'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        dev, warning = resolve_device("cuda:0")
        assert dev.type == "cpu" and "CUDA is not available" in warning


def test_estimator_bad_model_names_file(tmp_path):
    with pytest.raises(core.CheckpointError, match="missing.pt"):
        FillingEstimator(EstimatorConfig(str(tmp_path / "missing.pt")))


def test_fp16_on_cpu_warns(tiny_model):
    est = FillingEstimator(EstimatorConfig(tiny_model, fp16=True, input_size=40))
    assert not est.fp16 and any("fp16" in w for w in est.warnings)
    assert est.input_size == 40 and any("input_size 40" in w for w in est.warnings)
