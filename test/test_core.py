"""The shared core: crop geometry, preprocessing (one definition for node and trainer), checkpoints."""

import numpy as np
import pytest
import torch

from fillcls import core
from helpers import make_checkpoint


def test_square_box_enlarges_and_squares():
    x0, y0, x1, y1 = core.square_box((100, 50, 140, 150), margin=0.1)  # 40 x 100 box
    assert x1 - x0 == y1 - y0 == 120  # longer side 100, enlarged by 10 % each side
    assert (x0 + x1) / 2 == pytest.approx(120, abs=0.5) and (y0 + y1) / 2 == pytest.approx(100, abs=0.5)


def test_square_box_rejects_empty_box():
    with pytest.raises(ValueError):
        core.square_box((10, 10, 10, 20))


def test_crop_square_pads_outside_with_zeros():
    img = np.full((20, 30, 3), 200, np.uint8)
    crop = core.crop_square(img, (0, 0, 10, 10), margin=0.5)  # 20 x 20 square centred at (5, 5)
    assert crop.shape == (20, 20, 3)
    assert (crop[:5, :, :] == 0).all() and (crop[:, :5, :] == 0).all()
    assert (crop[5:, 5:, :] == 200).all()


def test_crop_square_inside_is_a_view_of_the_image():
    img = np.arange(100 * 100 * 3, dtype=np.uint8).reshape(100, 100, 3)
    crop = core.crop_square(img, (40, 40, 60, 60), margin=0.0)
    assert np.array_equal(crop, img[40:60, 40:60])


def test_preprocessing_identical_for_node_and_trainer():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes = [(10, 20, 50, 100), (100, 10, 150, 60)]
    node_batch = core.crop_and_preprocess(frame, boxes, 32)
    # The trainer stores resize_uint8 crops (CropSet) and converts them with to_float per batch.
    stored = torch.stack([core.resize_uint8(core.crop_square(frame, b), 32) for b in boxes])
    assert stored.dtype == torch.uint8
    assert torch.equal(node_batch, core.to_float(stored))
    assert node_batch.shape == (2, 3, 32, 32) and 0.0 <= node_batch.min() and node_batch.max() <= 1.0


def test_normalisation_is_inside_the_model():
    model = core.build_model().eval()
    x = torch.rand(1, 3, 32, 32)
    manual = (x - torch.tensor(core.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(core.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), model.net(manual), atol=1e-5)


def test_batch_equals_single():
    torch.manual_seed(0)
    model = core.build_model().eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        batch = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    assert torch.allclose(batch, single, atol=1e-4)


def test_fixed_modules_by_L():
    model = core.build_model()
    assert core.fixed_modules(model, 0) == []
    assert core.fixed_modules(model, 1) == [model.net.conv1, model.net.bn1, model.net.layer1]
    assert model.net.fc not in core.fixed_modules(model, 4)
    with pytest.raises(ValueError):
        core.fixed_modules(model, 5)


def test_checkpoint_round_trip(tmp_path):
    path = make_checkpoint(tmp_path / "m.pt", input_size=48, model_id="abc", training={"strategy": "ST"})
    model, header = core.load_classifier(path)
    assert header.input_size == 48 and header.model_id == "abc" and header.training == {"strategy": "ST"}
    assert not model.training
    ref = core.build_model()
    torch.manual_seed(0)
    ref = core.build_model()
    for k, v in ref.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_checkpoint_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(core.CheckpointError, match="nope.pt.*not found"):
        core.load_classifier(missing)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(core.CheckpointError, match="corrupt.pt"):
        core.load_classifier(corrupt)
    plain = tmp_path / "plain.pt"
    torch.save(core.build_model().state_dict(), plain)  # a bare state dict, not our format
    with pytest.raises(core.CheckpointError, match="plain.pt.*not a fillcls-checkpoint"):
        core.load_classifier(plain)
    wrong_classes = tmp_path / "classes.pt"
    model = core.build_model(num_classes=3)
    core.save_checkpoint(wrong_classes, model.state_dict(),
                         core.CheckpointHeader(classes=("a", "b", "c")))
    with pytest.raises(core.CheckpointError, match="classes.pt.*classes"):
        core.load_classifier(wrong_classes)
    wrong_arch = tmp_path / "arch.pt"
    core.save_checkpoint(wrong_arch, core.build_model().state_dict(), core.CheckpointHeader(arch="resnet50"))
    with pytest.raises(core.CheckpointError, match="arch.pt.*do not fit resnet50"):
        core.load_classifier(wrong_arch)


def test_checkpoint_loads_with_weights_only(tmp_path):
    path = make_checkpoint(tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)  # no pickled objects beyond tensors and builtins
    assert payload["format"] == core.CHECKPOINT_FORMAT
