"""Plain helpers shared by the tests (fixtures live in conftest.py): model checkpoints and toy
training data small enough for real training steps on the CPU."""

import torch

from training.config import get_preset
from training.data.base import CropSet


def make_checkpoint(path, input_size=32, model_id="test-model", seed=0, **header):
    """A randomly initialised ResNet-18 classifier checkpoint (project format)."""
    from fillcls import core

    torch.manual_seed(seed)
    model = core.build_model("resnet18")
    core.save_checkpoint(path, model.state_dict(),
                         core.CheckpointHeader(input_size=input_size, model_id=model_id, **header))
    return str(path)


COLOURS = torch.tensor([[220, 40, 40], [40, 220, 40], [40, 40, 220], [150, 150, 150]], dtype=torch.float)


def toy_cropset(n, size, seed=0, containers=("C1", "C2", "C3", "C4")):
    """Noisy crops with a class-coloured patch (learnable in a few steps); classes imbalanced 3:2:2:1."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])[torch.arange(n) % 8]
    images = torch.rand(n, 3, size, size, generator=g) * 90
    q = size // 4
    images[:, :, q:3 * q, q:3 * q] += COLOURS[labels][:, :, None, None] * 0.6
    return CropSet(images.clamp(0, 255).to(torch.uint8), labels,
                   [containers[i % len(containers)] for i in range(n)])


def toy_data(preset, split):
    """(train, test) of toy crops at the preset's size; test containers differ from train ones."""
    return (toy_cropset(48, preset.size, 0, ("C1", "C2", "C3")),
            toy_cropset(24, preset.size, 1, ("C6", "C7")))


def quiet(msg):
    pass


PRESET = get_preset("tiny", epochs=3, batch_size=16, samples_per_epoch=48, lr_transfer=0.02,
                    eval_max=8)
