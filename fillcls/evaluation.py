"""Compare the node's ``filling_level`` answers with ground truth, frame by frame.

Used by the demo (live camera stream) and by the bag evaluation (replayed recordings). Frames are
matched by their header stamp (the node copies the input header); within a frame each true
container is matched to the predicted container whose ROI overlaps it most (IoU >= 0.3).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from .spec import CLASSES
from .tracking import box_iou as iou

MATCH_IOU = 0.3


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def roi_box(roi) -> tuple[int, int, int, int]:
    return roi.x_offset, roi.y_offset, roi.x_offset + roi.width, roi.y_offset + roi.height


def count_matches(true_boxes, pred_boxes, min_iou: float = 0.5) -> int:
    """True boxes matched, in order, each to the still-free predicted box of highest IoU when that
    IoU is at least ``min_iou`` (boxes: x0, y0, x1, y1)."""
    free, matched = list(pred_boxes), 0
    for b in true_boxes:
        best = max(free, key=lambda d: iou(b, d), default=None)
        if best is not None and iou(b, best) >= min_iou:
            matched += 1
            free.remove(best)
    return matched


@dataclass
class FrameResult:
    """One answered frame: true and predicted levels per true container (pred None = not found)."""

    stamp: int
    truth: list[int]
    pred: list[int | None]
    confidence: list[float]
    latency: float | None  # seconds from the image stamp to the answer's arrival

    @property
    def correct(self) -> int:
        return sum(p == t for p, t in zip(self.pred, self.truth))

    def line(self, index: int) -> str:
        """A terminal line: truth vs prediction per container, a tick per correct one."""
        parts = []
        for t, p, c in zip(self.truth, self.pred, self.confidence):
            pred = "not found" if p is None else f"{CLASSES[p]:>7} ({c:.2f})"
            parts.append(f"truth {CLASSES[t]:>7} | pred {pred} {'ok' if p == t else 'WRONG'}")
        lat = f"{self.latency * 1e3:6.1f} ms" if self.latency is not None else ""
        return f"frame {index:4d}  " + ";  ".join(parts or ["no container in truth"]) + f"  {lat}"


def match_frame(truth_msg, pred_msg, latency: float | None = None) -> FrameResult:
    """Match the containers of a ground-truth and a predicted ``FillingLevelArray``."""
    truth, pred, conf = [], [], []
    free = list(pred_msg.containers)
    for t in truth_msg.containers:
        tb = roi_box(t.roi)
        best = max(free, key=lambda p: iou(tb, roi_box(p.roi)), default=None)
        truth.append(int(t.level))
        if best is not None and (len(truth_msg.containers) == 1 == len(pred_msg.containers)
                                 or iou(tb, roi_box(best.roi)) >= MATCH_IOU):
            free.remove(best)
            pred.append(int(best.level))
            conf.append(float(best.confidence))
        else:
            pred.append(None)
            conf.append(0.0)
    return FrameResult(stamp_ns(truth_msg.header), truth, pred, conf, latency)


@dataclass
class Scoreboard:
    """Accumulates :class:`FrameResult` s; :meth:`summary` gives accuracy, confusion, rate, latency."""

    frames: list[FrameResult] = field(default_factory=list)

    def add(self, r: FrameResult) -> None:
        self.frames.append(r)

    def summary(self, elapsed: float | None = None) -> dict:
        n = sum(len(f.truth) for f in self.frames)
        correct = sum(f.correct for f in self.frames)
        found = sum(p is not None for f in self.frames for p in f.pred)
        confusion = [[0] * len(CLASSES) for _ in CLASSES]
        for f in self.frames:
            for t, p in zip(f.truth, f.pred):
                if p is not None:
                    confusion[t][p] += 1
        lat = sorted(f.latency for f in self.frames if f.latency is not None)

        def q(p):
            return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))] if lat else float("nan")

        return {"frames": len(self.frames), "containers": n, "found": found, "correct": correct,
                "accuracy": correct / n if n else float("nan"), "confusion": confusion,
                "latency_p50": q(50), "latency_p95": q(95),
                "latency_mean": statistics.fmean(lat) if lat else float("nan"),
                "rate": len(self.frames) / elapsed if elapsed else float("nan")}


def format_summary(s: dict) -> str:
    """Human-readable summary of :meth:`Scoreboard.summary`."""
    rows = ["truth \\ pred " + " ".join(f"{c:>8}" for c in CLASSES)]
    for name, row in zip(CLASSES, s["confusion"]):
        rows.append(f"{name:>12} " + " ".join(f"{v:8d}" for v in row))
    return "\n".join([
        f"frames answered: {s['frames']}, containers: {s['containers']}, found: {s['found']}",
        f"accuracy: {100 * s['accuracy']:.1f} % ({s['correct']}/{s['containers']})",
        f"rate: {s['rate']:.1f} frames/s; latency (stamp -> answer): p50 {s['latency_p50'] * 1e3:.1f} ms, "
        f"p95 {s['latency_p95'] * 1e3:.1f} ms",
        *rows,
    ])
