#!/usr/bin/env python
"""Procedural data benchmark: crops generated per second (``make_cropset``) and frames per second.

    .venv/bin/python bench/bench_data.py [--size 112] [--n 2000] [--workers 1 2] [--frames 20]

For each worker count, generates ``--n`` crops at ``--size`` px (best of ``--repeats`` runs,
process pool start included) and prints crops/s; then the CPU time per crop of one process
(``time.process_time``, i.e. what one free core would do) and the render time of 640 x 480
frames. The target of the issue is >= 1,000 crops/s at 112 px on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=112, help="crop size in pixels (default 112)")
    ap.add_argument("--n", type=int, default=2000, help="crops per run (default 2000)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time (default 1 2)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per worker count; the best is reported")
    ap.add_argument("--frames", type=int, default=20, help="640x480 frames to time (0 = skip)")
    ap.add_argument("--seed", type=int, default=0, help="data seed")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from training.data import procedural as P

    torch.set_num_threads(1)
    P._bank()
    P.make_cropset(64, args.size, seed=args.seed + 99, workers=1)  # warm-up
    print(f"procedural crops at {args.size} px, n={args.n}, {os.cpu_count()} CPU(s), "
          f"load average {os.getloadavg()[0]:.1f}")
    for w in args.workers:
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            cs = P.make_cropset(args.n, args.size, seed=args.seed, workers=w)
            best = min(best, time.perf_counter() - t0)
        assert len(cs) == args.n
        print(f"  workers={w}: {args.n / best:8.0f} crops/s  ({best:.2f} s)")
    n = min(args.n, 300)
    c0 = time.process_time()
    for i in range(n):
        P.render_crop(np.random.default_rng([args.seed, i]), args.size)
    cpu = (time.process_time() - c0) / n
    print(f"  CPU time per crop (one process): {1e3 * cpu:.2f} ms  -> {1 / cpu:.0f} crops/s per free core")
    if args.frames:
        t0 = time.perf_counter()
        for i in range(args.frames):
            P.render_frame(np.random.default_rng([args.seed, i]), n_containers=1 + i % 3)
        dt = (time.perf_counter() - t0) / args.frames
        print(f"  640x480 frames (1-3 containers): {1e3 * dt:.1f} ms/frame ({1 / dt:.0f} frames/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
