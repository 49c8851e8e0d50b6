"""Containers tracked across frames, with a fused, stable filling level (ROS-free, torch-free).

:class:`Tracker` takes each frame's detections (box, optional mask, the classifier's per-frame
probabilities in the order of :data:`fillcls.spec.CLASSES`) and returns one :class:`TrackView`
per live track:

* **association**: an optimal assignment (Hungarian, :func:`assign`) on a cost made of
  ``1 - IoU`` (mask IoU when both masks exist and the track is still, box IoU otherwise, the
  track's box moved by its velocity first), the centre distance normalised by the box diagonal,
  the log ratio of box areas and (``appearance_weight``) how much the detection's class
  probabilities differ from the track's fused ones; pairs farther than ``max_centre_distance``
  diagonals with an IoU under ``min_iou`` are never matched. The velocity (smoothed over the hits)
  follows, per axis, the box edge that moved less, so a box cut short by an occluder or a partial
  segmentation does not throw the prediction off;
* **tracks**: an unmatched detection starts a *tentative* track (confirmed after ``min_hits``
  hits; a tentative track that misses is dropped); a confirmed track survives up to
  ``max_misses`` missed frames and ``max_unseen_s`` seconds (a hand passing in front); ids are
  1, 2, 3, ... in order of creation, never reused;
* **fusion**: a recursive Bayesian update in log space with forgetting,
  ``log_post <- lambda * log_post + log(clip(p, prob_floor, 1))`` with
  ``lambda = exp(-dt / time_constant_s)`` (``dt``: seconds since the track's last update, so a
  miss forgets more) or ``exp(-1 / time_constant_frames)`` per update;
* **hysteresis**: the fused level moves to another class only when that class's fused probability
  exceeds the current level's by ``hysteresis`` for ``confirm_updates`` consecutive updates.

Everything is deterministic (no randomness; ties broken by index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .spec import CLASSES

_NO_MATCH = 1e6  # cost of a pair that must not be matched


@dataclass(frozen=True)
class TrackerConfig:
    """Parameters of :class:`Tracker` (see the module docstring)."""

    time_constant_s: float = 0.5  # forgetting time constant (s); used when time_constant_frames is 0
    time_constant_frames: float = 0.0  # > 0: forgetting per update instead of per second
    hysteresis: float = 0.2  # fused-probability lead a new level needs over the current one
    confirm_updates: int = 2  # consecutive updates with that lead before the fused level changes
    prob_floor: float = 1e-3  # per-frame probabilities are clipped to [prob_floor, 1]
    min_hits: int = 2  # hits before a tentative track is confirmed
    max_misses: int = 10  # consecutive missed frames a confirmed track survives
    max_unseen_s: float = 2.0  # seconds a confirmed track survives without a hit
    min_iou: float = 0.1  # IoU under which a pair needs to be close (max_centre_distance) to match
    max_centre_distance: float = 0.75  # centre distance limit, in box diagonals
    distance_weight: float = 1.0  # weight of the normalised centre distance in the cost
    size_weight: float = 0.5  # weight of |log(area ratio)| in the cost
    appearance_weight: float = 0.5  # weight of 1 - Bhattacharyya(track's fused, detection's probabilities)

    def check(self) -> None:
        """ValueError naming the first parameter out of its range."""
        rules = [
            ("time_constant_s", self.time_constant_s > 0 or self.time_constant_frames > 0, "> 0"),
            ("time_constant_frames", self.time_constant_frames >= 0, ">= 0"),
            ("hysteresis", 0 <= self.hysteresis < 1, "in [0, 1)"),
            ("confirm_updates", self.confirm_updates >= 1, ">= 1"),
            ("prob_floor", 0 < self.prob_floor < 1.0 / len(CLASSES), f"in (0, {1.0 / len(CLASSES)})"),
            ("min_hits", self.min_hits >= 1, ">= 1"),
            ("max_misses", self.max_misses >= 0, ">= 0"),
            ("max_unseen_s", self.max_unseen_s >= 0, ">= 0"),
            ("min_iou", 0 <= self.min_iou <= 1, "in [0, 1]"),
            ("max_centre_distance", self.max_centre_distance >= 0, ">= 0"),
            ("distance_weight", self.distance_weight >= 0, ">= 0"),
            ("size_weight", self.size_weight >= 0, ">= 0"),
            ("appearance_weight", self.appearance_weight >= 0, ">= 0"),
        ]
        for name, ok, rule in rules:
            if not (ok and math.isfinite(float(getattr(self, name)))):
                raise ValueError(f"tracker parameter {name} must be {rule}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Detection:
    """One container of a frame: box ``(x0, y0, x1, y1)`` (pixels, exclusive), the per-frame class
    probabilities (order of CLASSES) and, optionally, its H x W bool mask."""

    box: tuple[float, float, float, float]
    probabilities: Sequence[float]
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class TrackView:
    """What the tracker says about one live track after an update.

    ``detection``: index of the detection matched this frame (-1: missed, then ``probabilities`` is
    None and ``level`` is -1); ``frames``: updates since the track was born (this one included);
    ``hits``: updates with a detection; ``misses``: consecutive misses up to now.
    """

    track_id: int
    detection: int
    box: tuple[float, float, float, float]
    probabilities: tuple[float, ...] | None
    level: int
    fused_probabilities: tuple[float, ...]
    fused_level: int
    age_s: float
    frames: int
    hits: int
    misses: int
    confirmed: bool

    @property
    def fused_label(self) -> str:
        return CLASSES[self.fused_level]


class _Track:
    """Internal state of one track."""

    def __init__(self, track_id: int, stamp: float, det: Detection, log_p: np.ndarray):
        self.id, self.born, self.last_hit = track_id, stamp, stamp
        self.box = np.asarray(det.box, np.float64)
        self.mask = det.mask
        self.velocity = np.zeros(2)  # px / s of the box centre
        self.log_post = log_p.copy()
        self.fused_level = int(np.argmax(log_p))
        self.lead = 0  # consecutive updates a challenger led by the hysteresis margin
        self.frames = self.hits = 1
        self.misses = 0

    def predicted_box(self, stamp: float) -> np.ndarray:
        shift = self.velocity * (stamp - self.last_hit)
        return self.box + np.concatenate([shift, shift])

    def fused(self) -> np.ndarray:
        z = self.log_post - self.log_post.max()
        p = np.exp(z)
        return p / p.sum()


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``(x0, y0, x1, y1)`` boxes (0 for empty ones)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def box_ious(box: Sequence[float], boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``(x0, y0, x1, y1)`` box with each row of the N x 4 array ``boxes`` (:func:`box_iou`
    for many boxes at once)."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks of the same shape."""
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 0.0


def assign(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost assignment of a rows x cols cost matrix (Hungarian method, shortest augmenting
    paths, O(n^2 m)); pairs ``(row, col)`` sorted by row, ``min(rows, cols)`` of them."""
    cost = np.asarray(cost, np.float64)
    transposed = cost.shape[0] > cost.shape[1]
    c = cost.T if transposed else cost
    n, m = c.shape
    if n == 0:
        return []
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    owner = np.zeros(m + 1, int)  # owner[j]: row (1-based) assigned to column j; column 0 is virtual
    way = np.zeros(m + 1, int)
    for i in range(1, n + 1):
        owner[0], j0 = i, 0
        minv, used = np.full(m + 1, np.inf), np.zeros(m + 1, bool)
        while owner[j0] != 0:
            used[j0] = True
            i0 = owner[j0]
            free = ~used[1:]
            cur = c[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            candidates = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[owner[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
        while j0:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    pairs = [(int(owner[j]) - 1, j - 1) for j in range(1, m + 1) if owner[j]]
    pairs = [(b, a) for a, b in pairs] if transposed else pairs
    return sorted(pairs)


def _check_detection(k: int, det: Detection) -> np.ndarray:
    """The log of the clipped probabilities of detection ``k``; ValueError naming it when bad."""
    p = np.asarray(det.probabilities, np.float64)
    if p.shape != (len(CLASSES),) or not np.isfinite(p).all() or (p < 0).any():
        raise ValueError(f"detection {k}: probabilities must be {len(CLASSES)} finite non-negative numbers "
                         f"(order {', '.join(CLASSES)}), got {det.probabilities!r}")
    x0, y0, x1, y1 = (float(v) for v in det.box)
    if not (all(math.isfinite(v) for v in (x0, y0, x1, y1)) and x1 > x0 and y1 > y0):
        raise ValueError(f"detection {k}: box must be finite (x0, y0, x1, y1) with x1 > x0, y1 > y0, got {det.box!r}")
    return p


class Tracker:
    """Tracks containers across frames and fuses their filling level (see the module docstring).

    ``update`` must get non-decreasing stamps; a stamp earlier than the previous one (a bag that
    loops, a simulation clock reset) clears all tracks first and counts one in ``resets``.
    """

    def __init__(self, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self.config.check()
        self.tracks: list[_Track] = []
        self.next_id = 1
        self.last_stamp: float | None = None
        self.resets = 0

    def reset(self) -> None:
        """Forget every track (ids keep counting up)."""
        self.tracks = []
        self.last_stamp = None

    def _forgetting(self, dt: float) -> float:
        cfg = self.config
        if cfg.time_constant_frames > 0:
            return math.exp(-1.0 / cfg.time_constant_frames)
        return math.exp(-max(dt, 0.0) / cfg.time_constant_s)

    def _cost(self, track: _Track, det: Detection, stamp: float) -> float:
        cfg = self.config
        pb = track.predicted_box(stamp)
        db = np.asarray(det.box, np.float64)
        still = math.hypot(*track.velocity) * (stamp - track.last_hit) < 2.0  # masks cannot be moved
        if still and track.mask is not None and det.mask is not None and track.mask.shape == det.mask.shape:
            iou = mask_iou(track.mask, det.mask)
        else:
            iou = box_iou(pb, db)
        diag = 0.5 * (math.hypot(pb[2] - pb[0], pb[3] - pb[1]) + math.hypot(db[2] - db[0], db[3] - db[1]))
        dist = math.hypot((pb[0] + pb[2] - db[0] - db[2]) / 2, (pb[1] + pb[3] - db[1] - db[3]) / 2) / max(diag, 1e-9)
        if iou < cfg.min_iou and dist > cfg.max_centre_distance:
            return _NO_MATCH
        area_ratio = ((pb[2] - pb[0]) * (pb[3] - pb[1])) / ((db[2] - db[0]) * (db[3] - db[1]))
        cost = (1.0 - iou) + cfg.distance_weight * dist + cfg.size_weight * abs(math.log(max(area_ratio, 1e-9)))
        if cfg.appearance_weight > 0:
            p = np.clip(np.asarray(det.probabilities, np.float64), 0.0, None)
            bc = float(np.sum(np.sqrt(track.fused() * p / max(p.sum(), 1e-12))))
            cost += cfg.appearance_weight * (1.0 - bc)
        return cost

    def _hit(self, track: _Track, stamp: float, det: Detection, log_p: np.ndarray) -> None:
        cfg = self.config
        dt = stamp - track.last_hit
        box = np.asarray(det.box, np.float64)
        if dt > 0:
            edges = (box - track.box).reshape(2, 2)  # [[dx0, dy0], [dx1, dy1]]
            # per axis the edge that moved less: a box cut short by an occluder or a segmentation
            # that lost part of the container moves one edge only; a container moving moves both
            shift = np.where(np.abs(edges[0]) <= np.abs(edges[1]), edges[0], edges[1]) / dt
            track.velocity = shift if track.hits == 1 else 0.5 * track.velocity + 0.5 * shift
        track.log_post = self._forgetting(dt) * track.log_post + log_p
        fused = track.fused()
        best = int(np.argmax(fused))
        if best != track.fused_level and fused[best] - fused[track.fused_level] > cfg.hysteresis:
            track.lead += 1
            if track.lead >= cfg.confirm_updates:
                track.fused_level, track.lead = best, 0
        else:
            track.lead = 0
        track.box, track.mask, track.last_hit = box, det.mask, stamp
        track.hits += 1
        track.misses = 0

    def _alive(self, track: _Track, stamp: float) -> bool:
        cfg = self.config
        if track.hits < cfg.min_hits:
            return track.misses == 0
        return track.misses <= cfg.max_misses and stamp - track.last_hit <= cfg.max_unseen_s

    def update(self, stamp_s: float, detections: Sequence[Detection]) -> list[TrackView]:
        """Associate ``detections`` (one frame, taken at ``stamp_s`` seconds) with the tracks, fuse
        their levels and return a view of every live track, by track id."""
        stamp = float(stamp_s)
        if not math.isfinite(stamp):
            raise ValueError(f"stamp_s must be a finite number of seconds, got {stamp_s!r}")
        if self.last_stamp is not None and stamp < self.last_stamp:
            self.reset()
            self.resets += 1
        self.last_stamp = stamp
        logs = [np.log(np.clip(_check_detection(k, d), self.config.prob_floor, 1.0)) for k, d in enumerate(detections)]
        cost = np.array([[self._cost(t, d, stamp) for d in detections] for t in self.tracks]).reshape(
            len(self.tracks), len(detections))
        matched = {ti: di for ti, di in assign(cost) if cost[ti, di] < _NO_MATCH}
        for ti, track in enumerate(self.tracks):
            track.frames += 1
            if ti in matched:
                self._hit(track, stamp, detections[matched[ti]], logs[matched[ti]])
            else:
                track.misses += 1
        owner = {di: self.tracks[ti] for ti, di in matched.items()}
        self.tracks = [t for t in self.tracks if self._alive(t, stamp)]
        for di, det in enumerate(detections):
            if di not in owner:
                track = _Track(self.next_id, stamp, det, logs[di])
                self.next_id += 1
                self.tracks.append(track)
                owner[di] = track
        index = {id(t): di for di, t in owner.items()}
        return [self._view(t, stamp, index.get(id(t), -1), detections) for t in self.tracks]

    def _view(self, t: _Track, stamp: float, di: int, detections: Sequence[Detection]) -> TrackView:
        probs = tuple(float(v) for v in detections[di].probabilities) if di >= 0 else None
        return TrackView(t.id, di, tuple(float(v) for v in t.box), probs, int(np.argmax(probs)) if probs else -1,
                         tuple(float(v) for v in t.fused()), t.fused_level, stamp - t.born, t.frames, t.hits,
                         t.misses, t.hits >= self.config.min_hits)
