"""Short procedural videos with the true level, box, mask and identity per frame, and a synthetic
depth image (for the tracker, the fused level and :mod:`fillcls.geometry3d`).

Kinds (:data:`KINDS`): ``filling`` (a transparent container filled step by step empty -> half ->
full, pauses between the pours), ``emptying`` (the reverse), ``static`` (nothing changes: flicker),
``carried`` (a hand lifts the container and carries it across the frame) and ``crossing`` (two
containers at different distances swap places, the near one passing in front).

A pinhole :class:`Camera` (60 deg horizontal field of view, ``fx = fy``, principal point at the
centre) looks down at a table ``mount_height`` metres below it, pitched by ``pitch``; the table
ends ``table_far`` metres ahead at a vertical wall. Containers are placed in metres and drawn by
the 2-D renderer where the camera sees them: base centre and axis projected exactly (roll = the
projected axis), the ellipse tilt = sine of the angle the camera looks down at them, the pixel
height = the projected height; their true radius follows from the rendered width. Background,
light and each container's look stay fixed over a sequence; each frame adds its own sensor noise
and a little gain flicker. Frame ``i`` of ``(kind, seed)`` depends only on them (deterministic).

Depth (metres along the optical axis, float32, 0 = no reading): the table plane and the wall;
opaque containers and hands give their front surface; clear glass is seen *through* (the depth
of what is behind it) except at its rim (front and back lip) and where opaque contents (pasta,
rice) fill it; water is seen through. Noise ``1 mm + 1.5 mm * z^2`` and 1 % of pixels without a
reading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from .background import background
from .containers import SPLITS
from .instances import LEVEL_FRACTIONS, Instance, make_instance
from .profiles import CONTAINERS, container_ids
from .scene import render_instances

KINDS: tuple[str, ...] = ("filling", "emptying", "static", "carried", "crossing")
HFOV_DEG = 60.0


@dataclass(frozen=True)
class Camera:
    """Pinhole camera over a table (ROS optical frame: x right, y down, z forward; metres)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    mount_height: float  # camera height above the table (m)
    pitch: float  # downward pitch of the optical axis (rad)
    table_far: float  # distance (m, horizontal) of the table's far edge and of the wall

    @classmethod
    def make(cls, width: int, height: int, mount_height: float, pitch: float, table_far: float) -> Camera:
        f = 0.5 * width / math.tan(math.radians(HFOV_DEG) / 2)
        return cls(width, height, f, f, (width - 1) / 2.0, (height - 1) / 2.0, mount_height, pitch, table_far)

    @property
    def K(self) -> tuple[float, ...]:
        """Row-major 3 x 3 intrinsic matrix (as ``sensor_msgs/CameraInfo.k``)."""
        return (self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0)

    def to_camera(self, p) -> np.ndarray:
        """World points (..., 3; X right, Y up from the table, Z ahead, from the camera's foot) ->
        camera optical frame."""
        p = np.asarray(p, np.float64)
        s, c = math.sin(self.pitch), math.cos(self.pitch)
        dy = p[..., 1] - self.mount_height
        return np.stack([p[..., 0], -dy * c - p[..., 2] * s, -dy * s + p[..., 2] * c], axis=-1)

    def project(self, p) -> np.ndarray:
        """World points (..., 3) -> pixel coordinates (..., 2; pixel centres at integers)."""
        q = self.to_camera(p)
        return np.stack([self.cx + self.fx * q[..., 0] / q[..., 2], self.cy + self.fy * q[..., 1] / q[..., 2]], -1)

    @property
    def table_plane(self) -> tuple[np.ndarray, float]:
        """The table as ``(n, d)`` in the camera frame: ``n . p + d = 0``, ``n`` pointing up."""
        n = self.to_camera([0.0, 1.0, 0.0]) - self.to_camera([0.0, 0.0, 0.0])
        return n, -float(n @ self.to_camera([0.0, 0.0, 0.0]))

    def background_depth(self) -> np.ndarray:
        """Depth (H x W float32) of the table up to ``table_far`` and of the wall beyond it."""
        u = (np.arange(self.width) - self.cx) / self.fx
        v = (np.arange(self.height) - self.cy) / self.fy
        s, c = math.sin(self.pitch), math.cos(self.pitch)
        dir_y = -v[:, None] * c - s + 0.0 * u[None, :]  # world Y of the ray (camera z = 1)
        dir_z = -v[:, None] * s + c + 0.0 * u[None, :]  # world Z (ahead)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_table = np.where(dir_y < 0, self.mount_height / -dir_y, np.inf)
            t_wall = np.where(dir_z > 0, self.table_far / dir_z, np.inf)
        hit_table = t_table * dir_z <= self.table_far
        return np.where(hit_table, t_table, t_wall).astype(np.float32)


@dataclass
class _Object:
    """One container of a sequence: its look (an unplaced Instance) and its path, per frame."""

    object_id: int
    template: Instance
    xs: np.ndarray  # world X of the base centre per frame (m)
    ys: np.ndarray  # base height above the table (m)
    zs: np.ndarray  # world Z (m)
    fractions: np.ndarray  # fill fraction per frame
    filling: str


@dataclass
class SequenceFrame:
    """One frame: ``rgb`` (H x W x 3 uint8), ``depth`` (H x W float32 m) and ``objects``: one
    annotation dict per visible container (those of :func:`.render_frame`, plus ``object_id``,
    ``settled`` (False while the level is being poured), ``centre`` (its axis at mid-height in the
    camera frame, m), ``diameter`` and ``size_height`` (m))."""

    index: int
    stamp_s: float
    rgb: np.ndarray = field(repr=False)
    depth: np.ndarray = field(repr=False)
    objects: list[dict] = field(repr=False)


def _placed(obj: _Object, camera: Camera, i: int) -> tuple[Instance, dict]:
    """The Instance of ``obj`` in frame ``i`` as the camera sees it, and its 3-D truth."""
    t = obj.template
    base = np.array([obj.xs[i], obj.ys[i], obj.zs[i]])
    height_m = t.spec.height_cm / 100.0
    top = base + [0.0, height_m, 0.0]
    (bu, bv), (tu, tv) = camera.project(np.stack([base, top]))
    length = math.hypot(tu - bu, tv - bv)
    horizontal = math.hypot(base[0], base[2])
    tilt = (camera.mount_height - base[1]) / math.hypot(horizontal, camera.mount_height - base[1])
    fraction = float(obj.fractions[i])
    level = min(LEVEL_FRACTIONS, key=lambda k: abs(LEVEL_FRACTIONS[k] - fraction))
    inst = replace(t, cx=bu + 0.5, by=bv + 0.5, height=length, tilt=float(np.clip(tilt, 0.05, 0.9)),
                   angle=-math.asin((tu - bu) / length), fraction=fraction,
                   level=level if t.spec.transparent else "unknown", filling=obj.filling if fraction > 0 else "none")
    centre = camera.to_camera(base + [0.0, height_m / 2, 0.0])
    px_per_m = camera.fx / float(camera.to_camera(base)[2])
    half_width = max(inst.radius, inst.spec.foot * inst.radius) + inst.wall
    settled = any(abs(fraction - f) < 1e-9 for f in LEVEL_FRACTIONS.values())
    return inst, {"object_id": obj.object_id, "settled": settled, "centre": tuple(float(v) for v in centre),
                  "diameter": 2 * half_width / px_per_m, "size_height": height_m, "px_per_m": px_per_m}


def _outer_radius(inst: Instance, y: np.ndarray) -> np.ndarray:
    """Outer radius (px) of ``inst`` at local heights ``y`` (px above its base)."""
    rel = np.clip((y - inst.cavity_bottom) / inst.cavity_h, 0.0, 1.0)
    r = inst.radius * inst.spec.profile(rel) + inst.wall
    r = np.where(y < inst.cavity_bottom, inst.bottom_radius + inst.wall, r)
    if inst.spec.stemmed:
        r = np.where(y < inst.stem_height, inst.stem_radius, r)
        r = np.where(y < max(1.0, 0.02 * inst.height), inst.spec.foot * inst.radius, r)
    return r


def _local(inst: Instance, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local ``(x, y)`` (px) of pixels, as :mod:`.geometry` computes them."""
    px, py = cols + 0.5 - inst.cx, inst.by - 0.5 - rows
    c, s = math.cos(inst.angle), math.sin(inst.angle)
    return px * c + py * s, py * c - px * s


def _surface_depth(camera: Camera, obj_base: np.ndarray, px_per_m: float, inst: Instance, x: np.ndarray,
                   y: np.ndarray, ahead: np.ndarray) -> np.ndarray:
    """Camera depth of points at local ``(x, y)`` px moved ``ahead`` px away from the camera."""
    view = np.array([obj_base[0], 0.0, obj_base[2]])
    view /= np.linalg.norm(view)
    right = np.array([view[2], 0.0, -view[0]])
    height_m = inst.spec.height_cm / 100.0
    pts = (obj_base[None, :] + np.outer(x / px_per_m, right) + np.outer(ahead / px_per_m, view)
           + np.outer(np.clip(y / inst.height, 0, 1) * height_m, [0.0, 1.0, 0.0]))
    return camera.to_camera(pts)[:, 2]


def _object_depth(depth: np.ndarray, camera: Camera, inst: Instance, truth: dict, base: np.ndarray,
                  mask: np.ndarray, hand_mask: np.ndarray | None) -> None:
    """Write what a depth sensor sees of one container into ``depth`` (in place)."""
    rows, cols = np.nonzero(mask)
    x, y = _local(inst, rows.astype(np.float64), cols.astype(np.float64))
    r = _outer_radius(inst, y)
    front = -np.sqrt(np.maximum(r * r - x * x, 0.0))
    y_true = y - inst.tilt * front  # the front surface is lower in the image than the axis
    keep = np.zeros(len(rows), bool)
    z = _surface_depth(camera, base, truth["px_per_m"], inst, x, y_true, front)
    if not inst.spec.transparent:
        keep[:] = True
    else:
        rim_r = inst.rim_radius + inst.wall
        e = np.sqrt((x / rim_r) ** 2 + ((y - inst.height) / max(inst.tilt * rim_r, 1e-6)) ** 2)
        rim = np.abs(e - 1.0) * inst.tilt * rim_r < max(1.5, inst.wall)
        rim_ahead = np.sign(y - inst.height) * np.sqrt(np.maximum(rim_r ** 2 - x * x, 0.0))
        z[rim] = _surface_depth(camera, base, truth["px_per_m"], inst, x[rim], np.full(rim.sum(), inst.height),
                                rim_ahead[rim])
        keep |= rim
        if inst.filling in ("pasta", "rice") and inst.fraction > 0:
            surface_y = inst.cavity_bottom + float(inst.spec.profile.fill_height(inst.fraction)) * inst.cavity_h
            inside = (y_true >= inst.cavity_bottom) & (y <= surface_y) & (np.abs(x) < r - inst.wall) & ~rim
            keep |= inside
    if hand_mask is not None and inst.hand:
        hand = hand_mask[rows, cols] > 0
        z[hand] = np.min(z) - 0.02
        keep |= hand
    depth[rows[keep], cols[keep]] = np.minimum(depth[rows[keep], cols[keep]], z[keep]).astype(np.float32)


def _hand_depth(depth: np.ndarray, hand_mask: np.ndarray, near_z: float) -> None:
    """Hand pixels outside the containers: a little in front of the held container."""
    hand = hand_mask > 0
    depth[hand] = np.minimum(depth[hand], np.float32(near_z - 0.02))


class Sequence:
    """A planned video: ``len(seq)`` frames at ``fps``; ``seq.frame(i)`` renders frame ``i``;
    iterating renders them in order. ``camera`` has the intrinsics of every frame."""

    def __init__(self, kind: str, seed: int, fps: float, camera: Camera, table_y: float, objects: list[_Object],
                 n_frames: int):
        self.kind, self.seed, self.fps, self.camera = kind, seed, fps, camera
        self.table_y, self.objects, self.n_frames = table_y, objects, n_frames
        self._key = [int(seed), KINDS.index(kind)]
        rng = np.random.default_rng(self._key + [1])
        self._background = background(rng, camera.width, camera.height, table_y, camera.height * 0.35)
        self._background_depth = camera.background_depth()

    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self):
        return (self.frame(i) for i in range(self.n_frames))

    def frame(self, i: int) -> SequenceFrame:
        """Render frame ``i`` (0 <= i < len)."""
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame {i} of a {self.n_frames}-frame sequence")
        cam = self.camera
        placed = [_placed(o, cam, i) for o in self.objects]
        insts = [p[0] for p in placed]
        rgb, anns, hand_mask = render_instances(self._background.copy(), insts, np.random.default_rng(self._key + [2]),
                                                self.table_y, cam.height * 0.35)
        rng = np.random.default_rng(self._key + [3, i])
        noisy = rgb.astype(np.float32) * np.float32(rng.uniform(0.98, 1.02))
        noisy += rng.normal(0.0, 2.5, rgb.shape).astype(np.float32)
        rgb = noisy.round().clip(0, 255).astype(np.uint8)
        depth = self._background_depth.copy()
        by_id = {a["container"]: a for a in anns}
        objects = []
        for obj, (inst, truth) in sorted(zip(self.objects, placed), key=lambda p: p[1][0].by):  # far to near
            ann = by_id.get(inst.spec.id)
            if ann is None:
                continue
            base = np.array([obj.xs[i], obj.ys[i], obj.zs[i]])
            _object_depth(depth, cam, inst, truth, base, ann["mask"], hand_mask)
            if hand_mask is not None and inst.hand:
                _hand_depth(depth, hand_mask, float(depth[ann["mask"]].min()))
            objects.append({**ann, **{k: v for k, v in truth.items() if k != "px_per_m"}})
        depth += (0.001 + 0.0015 * depth * depth) * rng.standard_normal(depth.shape).astype(np.float32)
        depth[rng.random(depth.shape) < 0.01] = 0.0
        return SequenceFrame(i, i / self.fps, rgb, depth.astype(np.float32), objects)


def _levels(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Fill fraction per frame: holds at the levels, linear pours of ~n/10 frames between them."""
    steps = [0.0, LEVEL_FRACTIONS["half"], LEVEL_FRACTIONS["full"]]
    if kind == "emptying":
        steps = steps[::-1]
    pour = max(1, n // 10)
    hold = (n - 2 * pour) / 3.0
    out = np.empty(n)
    for i in range(n):
        k, t = divmod(i, hold + pour)
        k = int(min(k, 2))
        if k < 2 and t >= hold:
            a = (t - hold + 1) / (pour + 1)
            out[i] = steps[k] + (steps[k + 1] - steps[k]) * a
        else:
            out[i] = steps[k]
    return out


def _plan_objects(kind: str, rng: np.random.Generator, ids: list[str], camera: Camera, n: int) -> list[_Object]:
    """The containers of a ``kind`` sequence and their paths."""
    count = 2 if kind == "crossing" else 1
    pool = [c for c in ids if CONTAINERS[c].transparent] if kind in ("filling", "emptying") else ids
    if not pool:
        raise ValueError(f"a {kind} sequence needs a transparent container; got {', '.join(ids)}")
    if len(pool) < count:
        raise ValueError(f"a {kind} sequence needs {count} different containers; got {', '.join(ids)}")
    chosen = [pool[int(k)] for k in rng.permutation(len(pool))[:count]]
    t = np.arange(n) / max(n - 1, 1)
    objects = []
    for k, cid in enumerate(chosen):
        spec = CONTAINERS[cid]
        level = None if kind in ("static", "carried", "crossing") else "full"
        template = make_instance(rng, spec, level, None, None, kind == "carried", 0.0, 100.0)
        filling = template.filling if template.filling != "none" else ("water", "pasta", "rice")[int(rng.integers(3))]
        z = rng.uniform(0.5, 0.6) + (0.25 * k if kind == "crossing" else 0.0)
        zs, ys = np.full(n, z), np.zeros(n)
        if kind == "carried":
            sweep = rng.choice([-1.0, 1.0]) * (t - 0.5) * 0.36
            ys = 0.05 + 0.015 * np.sin(2 * np.pi * t * 2.0 + rng.uniform(0, 2 * np.pi))
        elif kind == "crossing":
            sweep = (1.0 if k == 0 else -1.0) * (t - 0.5) * 0.4
        else:
            sweep = np.full(n, rng.uniform(-0.12, 0.12))
        fractions = _levels(kind, n, rng) if kind in ("filling", "emptying") else np.full(n, template.fraction)
        objects.append(_Object(k + 1, template, sweep * z, ys, zs, fractions, filling))
    return objects


def _fits(camera: Camera, objects: list[_Object]) -> bool:
    """True if every container is inside the frame in every frame (first, middle, last checked)."""
    for obj in objects:
        for i in (0, len(obj.xs) // 2, len(obj.xs) - 1):
            inst, _ = _placed(obj, camera, i)
            x0, y0, x1, y1 = inst.image_extent()
            if x0 < 2 or y0 < 2 or x1 > camera.width - 2 or y1 > camera.height - 2:
                return False
    return True


def make_sequence(kind: str, seed: int, containers=SPLITS["S1"], n_frames: int = 40, fps: float = 5.0,
                  width: int = 640, height: int = 480) -> Sequence:
    """Plan a ``kind`` sequence (see :data:`KINDS`) of ``n_frames`` frames at ``fps`` Hz among the
    container ids ``containers`` (default: S1's test containers). Deterministic per
    ``(kind, seed)``. ValueError for an unknown kind, container, or bad size."""
    if kind not in KINDS:
        raise ValueError(f"unknown sequence kind {kind!r}; choose from {', '.join(KINDS)}")
    if n_frames < 2 or not fps > 0 or width < 64 or height < 48:
        raise ValueError(f"need n_frames >= 2, fps > 0, width >= 64, height >= 48; got {n_frames}, {fps}, "
                         f"{width}, {height}")
    ids = container_ids(containers)
    rng = np.random.default_rng([int(seed), KINDS.index(kind)])
    for _ in range(50):
        camera = Camera.make(width, height, rng.uniform(0.22, 0.32), rng.uniform(0.22, 0.34), rng.uniform(1.3, 2.2))
        objects = _plan_objects(kind, rng, ids, camera, n_frames)
        if _fits(camera, objects):
            table_y = float(camera.project([0.0, 0.0, camera.table_far])[1]) + 0.5
            return Sequence(kind, int(seed), float(fps), camera, table_y, objects, int(n_frames))
    raise ValueError(f"could not fit a {kind} sequence of {', '.join(ids)} into {width} x {height}")
