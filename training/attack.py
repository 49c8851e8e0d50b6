"""L2 projected gradient descent (PGD), the one attack of the trainer (Madry et al., ICLR 2018).

Built like MadryLab ``robustness``: a :class:`L2Step` knows the geometry of the threat model
(random start, normalised ascent step, projection onto the ball and onto ``[0, 1]``) and
:func:`pgd` runs the loop against any model. The model and the training loop know nothing of the
attack; the trainer only calls :func:`pgd`.

Images live in ``[0, 1]`` (normalisation is a layer inside the model), so ``eps`` is an L2 radius
in pixel space, per image (over all ``C x H x W`` values).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn
import torch.nn.functional as F

#: Default step size as a multiple of ``eps / steps`` (robustness' 2.5 * eps / steps rule).
STEP_FACTOR = 2.5
DEFAULT_STEPS = 10


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of every sample of a batch, shaped to broadcast against it (B x 1 x 1 x 1)."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))


class L2Step:
    """Geometry of the L2 ball of radius ``eps`` around ``x0`` intersected with ``[0, 1]``."""

    def __init__(self, x0: torch.Tensor, eps: float, step_size: float):
        self.x0 = x0
        self.eps = float(eps)
        self.step_size = float(step_size)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest point to ``x`` with ``||x - x0|| <= eps`` per sample, then clamped to [0, 1].

        Clamping moves every coordinate towards ``x0`` (which is in [0, 1]), so it cannot leave the ball.
        """
        delta = x - self.x0
        delta = delta * torch.clamp(self.eps / (_per_sample_norm(delta) + 1e-12), max=1.0)
        return torch.clamp(self.x0 + delta, 0.0, 1.0)

    def step(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Ascent step of length ``step_size`` along the per-sample normalised gradient."""
        return x + self.step_size * grad / (_per_sample_norm(grad) + 1e-12)

    def random_perturb(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A point drawn uniformly from the ball around ``x`` (then projected onto [0, 1])."""
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        direction = noise / (_per_sample_norm(noise) + 1e-12)
        d = x[0].numel()
        u = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), generator=generator, dtype=x.dtype,
                       device=x.device)
        return self.project(x + self.eps * u.pow(1.0 / d) * direction)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module of ``model`` in eval mode, then restore each module's own flag.

    Restoring per module keeps modules that the trainer fixed (frozen BatchNorm) in eval mode.
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = DEFAULT_STEPS,
    step_size: float | None = None,
    random_start: bool = True,
    step_factor: float = STEP_FACTOR,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L2 PGD: the perturbation ``delta`` that (approximately) maximises the loss of ``model``.

    Solves ``max_delta loss(model(x + delta), y)`` s.t. ``||delta||_2 <= eps`` per sample and
    ``x + delta`` in ``[0, 1]``, with ``steps`` normalised-gradient ascent steps of size
    ``step_size`` (default ``step_factor * eps / steps``, i.e. 2.5 * eps / steps) from a random
    start in the ball (``random_start``; drawn with ``generator`` for repeatable runs). The model
    runs in eval mode during the attack (BatchNorm uses its running statistics) and gets its own
    mode back, module by module; no parameter gradient is accumulated. ``loss_fn`` defaults to
    the summed cross-entropy.

    Returns ``delta`` (detached, the shape of ``x``) with ``||delta||_2 <= eps`` and ``x + delta``
    in ``[0, 1]`` (up to float rounding, ~1e-7); ``eps == 0``, or ``steps == 0`` without a random
    start, gives zeros, i.e. ``x + delta == x``.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    x = x.detach()
    if eps == 0 or (steps <= 0 and not random_start):
        return torch.zeros_like(x)
    if step_size is None:
        step_size = step_factor * eps / max(steps, 1)
    loss_fn = loss_fn or (lambda logits, target: F.cross_entropy(logits, target, reduction="sum"))
    geometry = L2Step(x, eps, step_size)
    x_adv = geometry.random_perturb(x, generator) if random_start else x.clone()
    with eval_mode(model), torch.enable_grad():
        for _ in range(steps):
            x_adv = x_adv.detach().requires_grad_(True)
            loss = loss_fn(model(x_adv), y)
            (grad,) = torch.autograd.grad(loss, [x_adv])
            x_adv = geometry.project(geometry.step(x_adv.detach(), grad))
    return (x_adv.detach() - x)


def perturb(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **kwargs) -> torch.Tensor:
    """``x + pgd(model, x, y, eps, **kwargs)``: the adversarial images themselves."""
    return x + pgd(model, x, y, eps, **kwargs)
