"""The node's parameter table: one source for declarations, validation, --help, README and YAML."""

import re
import subprocess
from pathlib import Path

import pytest

from fillcls_ros import parameters
from fillcls_ros.camera import CAMERA_PARAMETERS
from fillcls_ros.processes import BIN

ROOT = Path(__file__).resolve().parents[1]


def test_readme_parameter_table_is_generated_from_the_table():
    assert parameters.markdown_table() in (ROOT / "README.md").read_text(), \
        "README's parameter table is stale: paste `python -m fillcls_ros.parameters` into it"


def test_params_file_sets_every_parameter_to_its_default():
    import yaml

    doc = yaml.safe_load((ROOT / "config" / "filling.yaml").read_text())
    values = doc["/**"]["ros__parameters"]
    assert set(values) == set(parameters.PARAMS)
    for name, value in values.items():
        assert value == parameters.PARAMS[name].default, name


@pytest.mark.parametrize("name, value, ok", [
    ("input_size", 0, True), ("input_size", 32, True), ("input_size", 1, False), ("input_size", 31, False),
    ("input_size", 2000, False), ("device", "cuda:1", True), ("device", "tpu", False),
    ("segmentation_backend", "threshold", True), ("segmentation_backend", "nope", False),
    ("maskrcnn_classes", ["cup", "bowl"], True), ("maskrcnn_classes", ["cup", "cat"], False),
    ("segmentation_score_threshold", 1.0, True), ("segmentation_score_threshold", 1.5, False),
    ("max_pixels", 0, False), ("cpu_threads", -1, False), ("model_path", "", True),
    ("model_path", "/no/such/model.pt", False), ("use_sim_time", True, True),
])
def test_validation_rules(name, value, ok):
    error = parameters.validate(name, value)
    assert (error is None) == ok, error
    if not ok:
        assert name in error


def test_every_effect_is_known_and_estimator_fields_exist():
    from fillcls.inference import EstimatorConfig

    fields = set(EstimatorConfig.__dataclass_fields__)
    for p in parameters.NODE_PARAMETERS + CAMERA_PARAMETERS:
        assert p.effect in parameters.EFFECTS, p.name
        if p in parameters.NODE_PARAMETERS and p.effect in ("rebuild", "retune"):
            assert p.name in fields, p.name
    values = {p.name: p.default for p in parameters.NODE_PARAMETERS}
    cfg = parameters.estimator_config({**values, "model_path": "m.pt"})
    assert cfg.model_path == "m.pt" and cfg.maskrcnn_classes == ("cup", "wine glass")


def test_default_model_follows_the_inference_backend(monkeypatch):
    monkeypatch.delenv("FILLCLS_MODEL", raising=False)
    values = {p.name: p.default for p in parameters.NODE_PARAMETERS}
    for backend, device, suffix in (("torch", "cpu", "default.pt"), ("onnxruntime", "cpu", "default.onnx"),
                                    ("auto", "cpu", "default.onnx")):
        cfg = parameters.estimator_config({**values, "inference_backend": backend, "device": device})
        assert cfg.model_path.endswith(suffix), (backend, cfg.model_path)
    monkeypatch.setenv("FILLCLS_MODEL", "/x/y.onnx")
    assert parameters.estimator_config(values).model_path == "/x/y.onnx"


@pytest.mark.parametrize("exe, table", [("fillcls-node", parameters.NODE_PARAMETERS),
                                        ("fillcls-lifecycle-node", parameters.NODE_PARAMETERS),
                                        ("fillcls-camera", CAMERA_PARAMETERS)])
def test_help_lists_parameters_and_exits(exe, table):
    p = subprocess.run([f"{BIN}/{exe}", "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    for q in table:
        assert re.search(rf"^  [ *] {q.name} \(", p.stdout, re.M), q.name
    assert "listening" not in p.stdout + p.stderr and "publishing" not in p.stderr


@pytest.mark.parametrize("exe", ["fillcls-demo", "fillcls-bag"])
def test_other_executables_have_help(exe):
    p = subprocess.run([f"{BIN}/{exe}", "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "usage:" in p.stdout, p.stderr
