#!/usr/bin/env python
"""Training benchmark: images per second of standard (ST) and PGD adversarial (AT) training.

Measured in one run, at the preset's input size and batch size (default: the ``cpu`` preset):

* raw: forward + backward + SGD step on a batch already in memory (float, in [0, 1]);
* ST: :func:`training.engine.fit` (uint8 gather, flip, conversion per batch, balanced sampling);
* AT: ``fit`` with L2 PGD of ``--steps`` steps (default 10) per batch;
* eval: forward-only speed (evaluation).

It prints whether the data pipeline keeps >= 90 % of the raw speed and whether AT costs at most
``steps + 1.2`` times ST, then estimates the preset's whole study (main table + sweeps) from these
speeds (every run at full cost, fixed layers ignored: an upper bound for the sweeps).

    .venv/bin/python bench/bench_train.py [--preset cpu] [--batches 12] [--steps 10] [--threads 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def raw_speed(model, x, y, batches: int) -> float:
    """img/s of forward + backward + step on ``x`` (one warm-up batch not counted)."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    model.train()
    for i in range(batches + 1):
        if i == 1:
            t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return batches * len(x) / (time.perf_counter() - t0)


def fit_speed(model, data, batch: int, batches: int, **kw) -> float:
    """img/s of the second of two ``fit`` epochs of ``batches`` batches (the first warms up)."""
    from training.engine import fit

    hist = fit(model, data, epochs=2, lr=1e-3, batch_size=batch, samples_per_epoch=batch * batches,
               log=lambda m: None, **kw)
    return hist["img_per_s"][-1]


def eval_speed(model, x, batches: int) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        model(x)
        t0 = time.perf_counter()
        for _ in range(batches):
            model(x)
    return batches * len(x) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu", help="preset giving size, batch size and arch (default cpu)")
    ap.add_argument("--size", type=int, default=0, help="input size (default: the preset's)")
    ap.add_argument("--batch", type=int, default=0, help="batch size (default: the preset's)")
    ap.add_argument("--batches", type=int, default=12, help="timed batches per measurement")
    ap.add_argument("--steps", type=int, default=10, help="PGD steps of the AT measurement")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    import torch

    from fillcls import core
    from training.config import get_preset
    from training.data.base import CropSet
    from training.engine import plan_study

    if args.threads:
        torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    size, batch = args.size or preset.size, args.batch or preset.batch_size
    print(f"{preset.arch}, {size} px, batch {batch}, {torch.get_num_threads()} threads, {args.device}")
    g = torch.Generator().manual_seed(0)
    n = max(4 * batch, 256)
    data = CropSet(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
                   torch.randint(0, 4, (n,), generator=g), ["C1"] * n)
    x = core.to_float(data.images[:batch]).to(args.device)
    y = data.labels[:batch].to(args.device)

    def model():
        torch.manual_seed(0)
        return core.build_model(preset.arch).to(args.device)

    eps = 0.5
    raw = raw_speed(model(), x, y, args.batches)
    st = fit_speed(model(), data, batch, args.batches, device=args.device)
    at_batches = max(2, args.batches // 3)
    at = fit_speed(model(), data, batch, at_batches, eps=eps, attack_steps=args.steps, device=args.device)
    ev = eval_speed(model(), x, args.batches)
    print(f"raw forward/backward : {raw:8.1f} img/s")
    print(f"ST  (fit, pipeline)  : {st:8.1f} img/s   pipeline = {100 * st / raw:.0f}% of raw "
          f"-> {'OK' if st >= 0.9 * raw else 'BELOW'} (>= 90%)")
    print(f"AT  (fit, PGD-{args.steps:<2d})   : {at:8.1f} img/s   AT/ST time = {st / at:.2f}x "
          f"-> {'OK' if st / at <= args.steps + 1.2 else 'ABOVE'} (<= {args.steps + 1.2:.1f}x)")
    print(f"eval (forward only)  : {ev:8.1f} img/s")

    # estimate of the preset's study from these speeds
    if preset.attack_steps != args.steps:
        at_p = fit_speed(model(), data, batch, at_batches, eps=eps, attack_steps=preset.attack_steps,
                         device=args.device)
        print(f"AT  (fit, PGD-{preset.attack_steps:<2d})   : {at_p:8.1f} img/s (the preset's attack)")
    else:
        at_p = at
    if not preset.samples_per_epoch:
        print("(the preset draws one train set per epoch: estimate skipped, set samples_per_epoch)")
        return 0
    per_run = preset.epochs * preset.samples_per_epoch
    attack_eval = (preset.eval_max or 0) * preset.eval_steps / (st * 0.8)  # one PGD step ~ 0.8 train step
    total = {"main": 0.0, "sweeps": 0.0}
    runs = plan_study(args.preset, preset, ("S1", "S2", "S3"))
    for cfg in runs:
        secs = per_run / (at_p if cfg.eps_target > 0 else st) + (attack_eval if cfg.eval_eps else 0.0)
        total["main" if cfg.group == "main" else "sweeps"] += secs
    n_main = sum(c.group == "main" for c in runs)
    print(f"estimate for `python -m training study --preset {args.preset}`: {n_main} main runs "
          f"{total['main'] / 60:.0f} min + {len(runs) - n_main} sweep runs <= {total['sweeps'] / 60:.0f} min "
          f"= {sum(total.values()) / 60:.0f} min (data generation and test-set forward passes not included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
