#!/usr/bin/env python
"""Per-frame vs fused (tracked) filling level on procedural videos of S1's test containers.

Renders ``--n`` sequences of each kind of :mod:`fillcls.world.sequences` (filling, emptying,
static, carried, crossing), runs :class:`fillcls.inference.FillingEstimator` (shipped
``models/default.pt``, ``learned`` segmentation, CPU) frame by frame and
:class:`fillcls.tracking.Tracker` on its answers, and prints:

* accuracy per frame vs fused, over the true containers of the frames where the level is settled
  (not being poured); a container not found (box IoU < 0.3) counts as wrong for both;
* level changes per minute on static scenes (per frame vs fused): flicker;
* delay between a true level change (filling / emptying) and the fused level reaching the new
  level, in frames and seconds (and the same for the per-frame answer);
* identity switches: changes of the track id matched to one true container (carried, crossing);
* the CPU model; and a markdown table (``--markdown FILE`` also writes it to a file).

    .venv/bin/python bench/bench_sequences.py [--n 2] [--frames 30] [--fps 5] [--tau 1.0]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from fillcls.inference import EstimatorConfig, FillingEstimator  # noqa: E402
from fillcls.paths import packaged_model  # noqa: E402
from fillcls.spec import CLASSES  # noqa: E402
from fillcls.tracking import Detection, Tracker, TrackerConfig, box_iou  # noqa: E402
from fillcls.world.containers import SPLITS  # noqa: E402
from fillcls.world.sequences import KINDS, make_sequence  # noqa: E402


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _match(objects, results) -> dict:
    """True object id -> index of the result whose box overlaps it most (IoU >= 0.3), one to one."""
    pairs = sorted(((box_iou(o["box"], r.box), o["object_id"], k) for o in objects for k, r in enumerate(results)),
                   reverse=True)
    out, used = {}, set()
    for iou, oid, k in pairs:
        if iou >= 0.3 and oid not in out and k not in used:
            out[oid] = k
            used.add(k)
    return out


def run_sequence(estimator, seq, config: TrackerConfig) -> list[dict]:
    """One record per (frame, true container): truth, per-frame level, fused level, track id."""
    tracker = Tracker(config)
    records = []
    for frame in seq:
        results = estimator.predict(frame.rgb)
        views = tracker.update(frame.stamp_s, [Detection(r.box, r.probabilities, r.mask) for r in results])
        by_det = {v.detection: v for v in views if v.detection >= 0}
        matched = _match(frame.objects, results)
        for o in frame.objects:
            k = matched.get(o["object_id"])
            view = by_det.get(k) if k is not None else None
            records.append({"frame": frame.index, "object": o["object_id"], "truth": CLASSES.index(o["level"]),
                            "settled": o["settled"], "level": results[k].level if k is not None else -1,
                            "fused": view.fused_level if view else -1, "track": view.track_id if view else None})
    return records


def _series(records, oid, key):
    return [r[key] for r in records if r["object"] == oid]


def _changes(values) -> int:
    seen = [v for v in values if v is not None and v != -1]
    return sum(a != b for a, b in zip(seen, seen[1:]))


def _delays(records, oid, key) -> list[int | None]:
    """Frames from each change of the true level to ``key`` first showing the new level."""
    truth, answer = _series(records, oid, "truth"), _series(records, oid, key)
    out = []
    for t in range(1, len(truth)):
        if truth[t] != truth[t - 1]:
            later = [i for i in range(t, len(truth)) if answer[i] == truth[t] and truth[i] == truth[t]]
            out.append(later[0] - t if later else None)
    return out


def summarise(kind: str, runs: list[list[dict]], fps: float, n_frames: int) -> dict:
    settled = [r for rec in runs for r in rec if r["settled"]]
    row = {"kind": kind, "n": len(runs), "truths": len(settled),
           "acc_frame": sum(r["level"] == r["truth"] for r in settled) / max(len(settled), 1),
           "acc_fused": sum(r["fused"] == r["truth"] for r in settled) / max(len(settled), 1)}
    minutes = n_frames / fps / 60.0
    objects = [(rec, oid) for rec in runs for oid in sorted({r["object"] for r in rec})]
    row["flicker_frame"] = statistics.mean(_changes(_series(rec, o, "level")) / minutes for rec, o in objects)
    row["flicker_fused"] = statistics.mean(_changes(_series(rec, o, "fused")) / minutes for rec, o in objects)
    row["id_switches"] = sum(_changes(_series(rec, o, "track")) for rec, o in objects)
    delays = {key: [d for rec, o in objects for d in _delays(rec, o, key)] for key in ("level", "fused")}
    row["changes"] = len(delays["fused"])
    for key, values in delays.items():
        reached = [d for d in values if d is not None]
        row[f"delay_{key}"] = statistics.median(reached) if reached else None
        row[f"missed_{key}"] = len(values) - len(reached)
    return row


def markdown(rows: list[dict], fps: float, config: TrackerConfig) -> str:
    head = ("| sequences | settled truths | accuracy per frame | accuracy fused | level changes/min per frame | "
            "fused | true changes | delay per frame | delay fused (never reached) | id switches |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        def delay(key):
            if not r["changes"]:
                return "-"
            d = r[f"delay_{key}"]
            text = "n/a" if d is None else f"{d:.1f} fr ({d / fps:.1f} s)"
            return text + (f" ({r[f'missed_{key}']})" if key == "fused" else "")
        lines.append(f"| {r['kind']} x{r['n']} | {r['truths']} | {100 * r['acc_frame']:.1f} % | "
                     f"{100 * r['acc_fused']:.1f} % | {r['flicker_frame']:.1f} | {r['flicker_fused']:.1f} | "
                     f"{r['changes']} | {delay('level')} | {delay('fused')} | {r['id_switches']} |")
    foot = (f"\nTracker: time constant {config.time_constant_s} s, hysteresis {config.hysteresis}, "
            f"{config.confirm_updates} confirming updates; {fps:g} frames/s; CPU: {cpu_model()}.\n")
    return head + "\n".join(lines) + "\n" + foot


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2, help="sequences per kind (default 2)")
    p.add_argument("--frames", type=int, default=30, help="frames per sequence (default 30)")
    p.add_argument("--fps", type=float, default=5.0, help="frame rate of the sequences (default 5)")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds (default all)")
    p.add_argument("--seed", type=int, default=1000, help="first seed (default 1000)")
    p.add_argument("--tau", type=float, default=1.0, help="tracker time constant, seconds (default 1.0)")
    p.add_argument("--hysteresis", type=float, default=0.2, help="tracker hysteresis margin (default 0.2)")
    p.add_argument("--confirm", type=int, default=2, help="tracker confirming updates (default 2)")
    p.add_argument("--model", default=packaged_model("default.pt", "FILLCLS_MODEL"))
    p.add_argument("--markdown", help="also write the markdown table to this file")
    args = p.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    config = TrackerConfig(time_constant_s=args.tau, hysteresis=args.hysteresis, confirm_updates=args.confirm)
    config.check()
    estimator = FillingEstimator(EstimatorConfig(model_path=args.model, device="cpu", segmentation_backend="learned"))
    print(f"model {args.model}; CPU: {cpu_model()}")
    t0, rows = time.perf_counter(), []
    for kind in kinds:
        runs = []
        for s in range(args.n):
            seq = make_sequence(kind, args.seed + s, containers=SPLITS["S1"], n_frames=args.frames, fps=args.fps)
            runs.append(run_sequence(estimator, seq, config))
        rows.append(summarise(kind, runs, args.fps, args.frames))
        print(f"{kind}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    table = markdown(rows, args.fps, config)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
