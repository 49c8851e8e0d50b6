"""Per-frame vs fused (tracked) answers scored on videos with a true level per frame (ROS-free).

One definition of the sequence figures, used by ``bench/bench_sequences.py`` (estimator + tracker
offline) and by ``fillcls-bag evaluate`` (a recorded sequence bag replayed through the node):

* **matching**: in each frame, true containers and answers are paired one to one, greedily by box
  IoU (highest first), pairs under :data:`MATCH_IOU` never; a true container without a partner is
  *not found* (wrong for both answers, no track id);
* **accuracy** per frame and fused, over the true containers of the *settled* frames (the level is
  not being poured);
* **flicker**: changes of the per-frame / fused level of one true container per minute of its
  sequence (frames where it was not found are skipped), averaged over the containers; on
  ``static`` scenes every change is a false one;
* **delay**: for each change of the true level, the frames from that change until the answer first
  shows the new level (while the truth still holds it); the median over the changes reached, and
  the count of changes never reached;
* **identity switches**: changes of the track id matched to one true container.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Sequence

from .tracking import box_iou

MATCH_IOU = 0.3  # least box IoU of a true container and the answer paired with it


@dataclass(frozen=True)
class Truth:
    """One true container in a frame: identity, level (index into CLASSES), settled, box (x0, y0, x1, y1)."""

    object_id: int
    level: int
    settled: bool
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class Answer:
    """One answered container: box, per-frame level, fused level (-1: none) and track id (None: none)."""

    box: tuple[float, float, float, float]
    level: int
    fused: int = -1
    track: int | None = None


@dataclass(frozen=True)
class Record:
    """One (frame, true container): truth and the answers matched to it (-1 / None: not found)."""

    frame: int
    object: int
    truth: int
    settled: bool
    level: int
    fused: int
    track: int | None


@dataclass
class Run:
    """The records of one sequence: its ``kind``, frame rate and length (frames)."""

    kind: str
    fps: float
    n_frames: int
    records: list[Record] = field(default_factory=list)

    def add_frame(self, index: int, truths: Sequence[Truth], answers: Sequence[Answer]) -> None:
        """Match frame ``index``'s answers to its true containers and record them."""
        pairs = match(truths, answers)
        for t in truths:
            a = answers[pairs[t.object_id]] if t.object_id in pairs else None
            self.records.append(Record(index, t.object_id, t.level, t.settled, a.level if a else -1,
                                       a.fused if a else -1, a.track if a else None))


def match(truths: Sequence[Truth], answers: Sequence[Answer]) -> dict[int, int]:
    """True object id -> index of its answer: one to one, greedily by box IoU, IoU >= MATCH_IOU."""
    pairs = sorted(((box_iou(t.box, a.box), t.object_id, k) for t in truths for k, a in enumerate(answers)),
                   key=lambda p: (-p[0], p[1], p[2]))
    out: dict[int, int] = {}
    used: set[int] = set()
    for iou, oid, k in pairs:
        if iou >= MATCH_IOU and oid not in out and k not in used:
            out[oid] = k
            used.add(k)
    return out


def changes(values: Sequence) -> int:
    """Changes between consecutive values, skipping -1 and None (not found)."""
    seen = [v for v in values if v is not None and v != -1]
    return sum(a != b for a, b in zip(seen, seen[1:]))


def delays(truth: Sequence[int], answer: Sequence[int]) -> list[int | None]:
    """For each change of ``truth``: frames until ``answer`` first equals the new level while the
    truth still holds it (None: never)."""
    out: list[int | None] = []
    for t in range(1, len(truth)):
        if truth[t] != truth[t - 1]:
            later = [i for i in range(t, len(truth)) if answer[i] == truth[t] and truth[i] == truth[t]]
            out.append(later[0] - t if later else None)
    return out


def _series(run: Run, oid: int, key: str) -> list:
    return [getattr(r, key) for r in run.records if r.object == oid]


def summarise(kind: str, runs: Sequence[Run]) -> dict:
    """The figures of ``runs`` (one kind, one frame rate: the first run's): a row of :func:`markdown`."""
    settled = [r for run in runs for r in run.records if r.settled]
    fps = runs[0].fps if runs else float("nan")
    row = {"kind": kind, "n": len(runs), "fps": fps, "truths": len(settled),
           "acc_frame": sum(r.level == r.truth for r in settled) / max(len(settled), 1),
           "acc_fused": sum(r.fused == r.truth for r in settled) / max(len(settled), 1)}
    objects = [(run, oid) for run in runs for oid in sorted({r.object for r in run.records})]

    def per_minute(run: Run, oid: int, key: str) -> float:
        return changes(_series(run, oid, key)) / (run.n_frames / run.fps / 60.0)

    row["flicker_frame"] = statistics.mean(per_minute(r, o, "level") for r, o in objects) if objects else 0.0
    row["flicker_fused"] = statistics.mean(per_minute(r, o, "fused") for r, o in objects) if objects else 0.0
    row["id_switches"] = sum(changes(_series(run, o, "track")) for run, o in objects)
    found = {key: [d for run, o in objects for d in delays(_series(run, o, "truth"), _series(run, o, key))]
             for key in ("level", "fused")}
    row["changes"] = len(found["fused"])
    for key, values in found.items():
        reached = [d for d in values if d is not None]
        row[f"delay_{key}"] = statistics.median(reached) if reached else None
        row[f"missed_{key}"] = len(values) - len(reached)
    return row


def summarise_all(runs: Sequence[Run]) -> list[dict]:
    """One :func:`summarise` row per kind, in the order the kinds first appear."""
    kinds = list(dict.fromkeys(run.kind for run in runs))
    return [summarise(k, [run for run in runs if run.kind == k]) for k in kinds]


def markdown(rows: Sequence[dict], footer: str = "") -> str:
    """The rows as a markdown table (delays in frames and seconds), then ``footer``."""
    head = ("| sequences | settled truths | accuracy per frame | accuracy fused | level changes/min per frame | "
            "fused | true changes | delay per frame | delay fused (never reached) | id switches |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        def delay(key):
            if not r["changes"]:
                return "-"
            d = r[f"delay_{key}"]
            text = "n/a" if d is None else f"{d:.1f} fr ({d / r['fps']:.1f} s)"
            return text + (f" ({r[f'missed_{key}']})" if key == "fused" else "")
        lines.append(f"| {r['kind']} x{r['n']} | {r['truths']} | {100 * r['acc_frame']:.1f} % | "
                     f"{100 * r['acc_fused']:.1f} % | {r['flicker_frame']:.1f} | {r['flicker_fused']:.1f} | "
                     f"{r['changes']} | {delay('level')} | {delay('fused')} | {r['id_switches']} |")
    return head + "\n".join(lines) + "\n" + (f"\n{footer}\n" if footer else "")
