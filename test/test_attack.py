"""L2 PGD (training.attack): the ball, the box, eps = 0, the step size, modes, and that it attacks."""

import pytest
import torch
import torch.nn.functional as F

from fillcls import core
from training.attack import L2Step, eval_mode, perturb, pgd
from helpers import toy_cropset


def _norms(d):
    return d.flatten(1).norm(dim=1)


@pytest.fixture(scope="module")
def trained():
    """A ResNet-18 fitted to the toy crops (16 px), and a batch of them."""
    from training.engine import fit

    torch.manual_seed(0)
    model = core.build_model("resnet18")
    data = toy_cropset(64, 16, seed=0)
    fit(model, data, epochs=4, lr=0.05, batch_size=16, seed=0, log=lambda m: None)
    model.eval()
    x = core.to_float(data.images[:32])
    return model, x, data.labels[:32]


@pytest.mark.parametrize("eps", [0.05, 0.5, 3.0, 50.0])
def test_delta_in_ball_and_box(trained, eps):
    model, x, y = trained
    x = x.clone()
    x[:8] = (x[:8] > 0.5).float()  # many pixels on the box's faces: the clamp matters
    delta = pgd(model, x, y, eps, steps=3, generator=torch.Generator().manual_seed(0))
    assert delta.shape == x.shape and not delta.requires_grad
    assert (_norms(delta) <= eps * (1 + 1e-5) + 1e-6).all()
    adv = x + delta
    assert adv.min() >= -1e-6 and adv.max() <= 1 + 1e-6
    assert _norms(delta).max() > 0


def test_eps_zero_gives_x(trained):
    model, x, y = trained
    delta = pgd(model, x, y, 0.0)
    assert torch.equal(x + delta, x)
    assert torch.equal(perturb(model, x, y, 0.0), x)
    with pytest.raises(ValueError):
        pgd(model, x, y, -1.0)


def test_loss_rises_against_trained_model(trained):
    model, x, y = trained
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y).item()
    eps = 1.0
    delta = pgd(model, x, y, eps, steps=5, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    noise = noise * eps / _norms(noise).view(-1, 1, 1, 1)
    with torch.no_grad():
        adv = F.cross_entropy(model(x + delta), y).item()
        rnd = F.cross_entropy(model((x + noise).clamp(0, 1)), y).item()
    assert adv > clean + 0.1 and adv > rnd


def test_step_size_rule():
    """No random start, one step from a point far from the box faces: ||delta|| = step_factor*eps/steps
    (or eps once the step overshoots the ball)."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    x = torch.full((4, 3, 8, 8), 0.5)
    y = torch.tensor([0, 1, 2, 3])
    for factor, expected in ((0.5, 0.5), (2.5, 1.0)):
        d = pgd(model, x, y, 0.1, steps=1, random_start=False, step_factor=factor)
        assert torch.allclose(_norms(d), torch.full((4,), 0.1 * expected), rtol=1e-4)
    d = pgd(model, x, y, 0.1, steps=4, step_size=0.01, random_start=False)
    assert torch.allclose(_norms(d), torch.full((4,), 0.04), rtol=1e-3)  # gradient fixed: linear model


def test_random_start_inside_ball():
    x = torch.rand(16, 3, 8, 8)
    g = L2Step(x, 0.3, 0.1)
    p = g.random_perturb(x, torch.Generator().manual_seed(0))
    assert (_norms(p - x) <= 0.3 * (1 + 1e-5)).all() and p.min() >= 0 and p.max() <= 1


def test_modes_restored_and_no_side_effects(trained):
    """The attack runs the model in eval mode (BN statistics untouched), gives each module its own
    flag back (fixed modules stay in eval), and leaves no parameter gradient."""
    model, x, y = trained
    model.train()
    model.net.layer1.eval()
    model.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    hook = model.net.bn1.register_forward_hook(lambda m, i, o: seen.append(m.training))
    pgd(model, x[:8], y[:8], 0.5, steps=2)
    hook.remove()
    assert seen and not any(seen)
    assert model.training and model.net.layer2.training and not model.net.layer1.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    with eval_mode(model):
        assert not model.training
    model.eval()
