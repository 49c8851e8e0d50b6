#!/usr/bin/env python
"""Per-frame vs fused (tracked) filling level on procedural videos of S1's test containers.

Renders ``--n`` sequences of each kind of :mod:`fillcls.world.sequences` (filling, emptying,
static, carried, crossing), runs :class:`fillcls.inference.FillingEstimator` (shipped
``models/default.pt``, ``learned`` segmentation, CPU) frame by frame and
:class:`fillcls.tracking.Tracker` on its answers, and prints:

the figures of :mod:`fillcls.seqeval` (the same definitions as ``fillcls-bag evaluate`` on a
bag written by ``fillcls-bag record-sequences``):

* accuracy per frame vs fused, over the true containers of the frames where the level is settled
  (not being poured); a container not found (box IoU < 0.3) counts as wrong for both;
* level changes per minute (per frame vs fused): flicker, all false on static scenes;
* delay between a true level change (filling / emptying) and the answer first showing the new
  level, in frames and seconds (per frame and fused);
* identity switches: changes of the track id matched to one true container (carried, crossing);
* the CPU model; and a markdown table (``--markdown FILE`` also writes it to a file).

    .venv/bin/python bench/bench_sequences.py [--n 3] [--frames 30] [--fps 5] [--seed 0] [--tau S]

The tracker defaults (:class:`fillcls.tracking.TrackerConfig`) were tuned on seeds 100-105; the
reported figures (docs/tracking.md) are those of seeds 0, 1, 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench_backends import cpu_model as _cpu_name  # noqa: E402
from fillcls.inference import EstimatorConfig, FillingEstimator  # noqa: E402
from fillcls.paths import packaged_model  # noqa: E402
from fillcls.spec import CLASSES  # noqa: E402
from fillcls.seqeval import Answer, Run, Truth, markdown, summarise  # noqa: E402
from fillcls.tracking import Detection, Tracker, TrackerConfig  # noqa: E402
from fillcls.world.containers import SPLITS  # noqa: E402
from fillcls.world.sequences import KINDS, make_sequence  # noqa: E402


def cpu_model() -> str:
    """The CPU's model name and core count."""
    return f"{_cpu_name()} ({os.cpu_count()} cores)"


def run_sequence(estimator, seq, config: TrackerConfig) -> Run:
    """Estimator and tracker over the frames of ``seq``: a :class:`fillcls.seqeval.Run`."""
    tracker = Tracker(config)
    run = Run(seq.kind, seq.fps, len(seq))
    for frame in seq:
        results = estimator.predict(frame.rgb)
        views = tracker.update(frame.stamp_s, [Detection(r.box, r.probabilities, r.mask) for r in results])
        by_det = {v.detection: v for v in views if v.detection >= 0}
        answers = [Answer(r.box, r.level, by_det[k].fused_level if k in by_det else -1,
                          by_det[k].track_id if k in by_det else None) for k, r in enumerate(results)]
        truths = [Truth(o["object_id"], CLASSES.index(o["level"]), o["settled"], tuple(o["box"]))
                  for o in frame.objects]
        run.add_frame(frame.index, truths, answers)
    return run


def footer(config: TrackerConfig, fps: float) -> str:
    """The tracker settings, frame rate and CPU under the table."""
    return (f"Tracker: time constant {config.time_constant_s} s, hysteresis {config.hysteresis}, "
            f"{config.confirm_updates} confirming updates; {fps:g} frames/s; CPU: {cpu_model()}.")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = TrackerConfig()
    p.add_argument("--n", type=int, default=3, help="sequences per kind (default 3)")
    p.add_argument("--frames", type=int, default=30, help="frames per sequence (default 30)")
    p.add_argument("--fps", type=float, default=5.0, help="frame rate of the sequences (default 5)")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds (default all)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0; the defaults were tuned on 100+)")
    p.add_argument("--tau", type=float, default=defaults.time_constant_s,
                   help="tracker time constant, seconds (default %(default)s)")
    p.add_argument("--hysteresis", type=float, default=defaults.hysteresis,
                   help="tracker hysteresis margin (default %(default)s)")
    p.add_argument("--confirm", type=int, default=defaults.confirm_updates,
                   help="tracker confirming updates (default %(default)s)")
    p.add_argument("--model", default=packaged_model("default.pt", "FILLCLS_MODEL"))
    p.add_argument("--markdown", help="also write the markdown table to this file")
    args = p.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    config = replace(defaults, time_constant_s=args.tau, hysteresis=args.hysteresis, confirm_updates=args.confirm)
    config.check()
    estimator = FillingEstimator(EstimatorConfig(model_path=args.model, device="cpu", segmentation_backend="learned"))
    print(f"model {args.model}; CPU: {cpu_model()}")
    t0, rows = time.perf_counter(), []
    for kind in kinds:
        runs = []
        for s in range(args.n):
            seq = make_sequence(kind, args.seed + s, containers=SPLITS["S1"], n_frames=args.frames, fps=args.fps)
            runs.append(run_sequence(estimator, seq, config))
        rows.append(summarise(kind, runs))
        print(f"{kind}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    table = markdown(rows, footer(config, args.fps))
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
