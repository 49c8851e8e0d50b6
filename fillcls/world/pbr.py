"""A physically based renderer of the target domain (issue 16 item 2), next to the 2-D one.

Mitsuba 3 path-traces the eight CCM containers as lathe meshes of their profiles
(:mod:`.pbr_mesh`: real sizes, glass with a real wall thickness, stems and feet) with dielectric
glass (IOR 1.5), water (IOR 1.33, its surface at the profile's volume-fraction fill height
``Profile.fill_height``), rice / pasta as opaque textured fills and the opaque cups C1 / C2
(:mod:`.pbr_scene`), on a table in front of a backdrop — a real photograph (``make photos``,
:mod:`.photos`) or a procedural pattern — lit by an environment map made from a photo and a
spherical lamp (left for view 1, right for view 2), seen from a camera at the elevation of the CCM
view; optionally a skin-toned hand (forearm, palm, thumb, four fingers) holding a container from
one side (``hands``: the probability per container). Outputs match the 2-D renderer (:mod:`.render`):

* :func:`render_frame_pbr` -> ``(rgb uint8 H x W x 3, annotations)`` with ``container``, ``name``,
  ``label``, ``level``, ``filling``, ``fill_fraction``, ``box`` (x0, y0, x1, y1, exclusive, tight
  around the mask), ``mask`` (H x W bool, from a flat object-id pass: the container's silhouette,
  the part behind a hand included, as the 2-D renderer's), ``occlusion`` (the fraction of the
  mask a hand hides, from a second id pass with the hands), ``occluded``, ``transparent``,
  ``view``, ``backdrop``;
* :func:`render_crop_pbr` -> a crop made as the node makes it: ``crop_square(frame, box,
  DEFAULT_MARGIN)`` then ``resize_uint8``;
* :func:`make_cropset_pbr`: ``n`` crops, sample ``i`` from ``(seed, i)``, cached as one ``.npz``;
* :func:`make_frameset_pbr`: ``n`` frames with foreground masks and boxes, cached per chunk.

Deterministic per seed (numpy ``default_rng``; the Mitsuba sampler seed comes from it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Sequence

import cv2
import numpy as np
import torch

from ..atomic import atomic_path
from ..core import CLASSES, DEFAULT_MARGIN, crop_square, resize_uint8
from . import photos
from .pbr_mesh import body_profile, dims, fill_level_y
from .pbr_scene import linear_to_srgb, render, scene_dict
from .profiles import container_ids as _ids
from .raster import as_rng as _rng, save_png
from .render import CONTAINERS, FILLINGS, LEVEL_FRACTIONS, TRANSPARENT_LEVEL_P, VIEWS

#: Bump whenever the rendering changes (invalidates caches).
PBR_VERSION = 2
#: Camera elevation (degrees) of each CCM view: 1 / 2 side cameras, 3 frontal, 4 higher.
VIEW_ELEVATION = {1: (4.0, 15.0), 2: (4.0, 15.0), 3: (7.0, 20.0), 4: (13.0, 27.0)}
BACKDROPS = ("auto", "photos", "procedural")
MASK_SPP = 4
#: Linear RGB reflectance of the hands' skin, light to dark.
SKIN = ((0.70, 0.42, 0.32), (0.55, 0.36, 0.24), (0.42, 0.24, 0.15), (0.18, 0.09, 0.055))


def _pick(rng, spec, level, filling, view) -> tuple[str, float, str, int]:
    """(class name, true fill fraction, filling, view); opaque containers are ``unknown``."""
    if level is not None and level not in CLASSES:
        raise ValueError(f"level must be one of {', '.join(CLASSES)}, got {level!r}")
    if level is None or level == "unknown":
        names = list(TRANSPARENT_LEVEL_P)
        visible = names[int(rng.choice(len(names), p=list(TRANSPARENT_LEVEL_P.values())))]
        if level == "unknown" and spec.transparent:
            raise ValueError(f"{spec.id} ({spec.name}) is transparent: its level cannot be 'unknown'")
    else:
        visible = level
    fraction = LEVEL_FRACTIONS[visible]
    if filling is not None and filling not in FILLINGS:
        raise ValueError(f"filling must be one of {', '.join(FILLINGS)}, got {filling!r}")
    filling = "none" if fraction == 0 else filling or FILLINGS[int(rng.integers(len(FILLINGS)))]
    view = int(rng.choice(VIEWS)) if view is None else int(view)
    if view not in VIEW_ELEVATION:
        raise ValueError(f"view must be one of {VIEWS}, got {view}")
    return (visible if spec.transparent else "unknown"), fraction, filling, view


def _pattern(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A procedural wall / table texture (checks, stripes, noise or wood-like grain), uint8 RGB."""
    grey = rng.uniform(40, 220)
    a, b = grey + rng.uniform(-35, 35, 3), grey * rng.uniform(0.5, 1.3) + rng.uniform(-25, 25, 3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    kind = int(rng.integers(4))
    period = rng.uniform(8, 40)
    if kind == 0:
        t = ((xx // period + yy // period) % 2).astype(np.float32)
    elif kind == 1:
        t = (np.sin(xx / period * math.pi + rng.uniform(0, 6)) > 0).astype(np.float32)
    elif kind == 2:
        t = cv2.resize(rng.random((max(2, height // 16), max(2, width // 16))).astype(np.float32), (width, height))
    else:
        t = 0.5 + 0.5 * np.sin(xx / period + 3 * np.sin(yy / (period * 3)) + rng.normal(0, 0.3, (height, width)))
    img = a * t[..., None] + b * (1 - t[..., None]) + rng.normal(0, 6, (height, width, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _textures(rng: np.random.Generator, backdrops: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(backdrop 384 x 256, table 256 x 256, envmap 128 x 64, source) for one scene."""
    if backdrops not in BACKDROPS:
        raise ValueError(f"backdrops must be one of {BACKDROPS}, got {backdrops!r}")
    use_photos = backdrops == "photos" or (backdrops == "auto" and photos.available())
    if use_photos:
        wall = photos.background_crop(rng, 384, 256, split)
        env = photos.background_crop(rng, 128, 64, split)
        table = photos.background_crop(rng, 256, 256, split) if rng.random() < 0.4 else _pattern(rng, 256, 256)
        source = "photo"
    else:
        wall, env, table, source = _pattern(rng, 384, 256), _pattern(rng, 128, 64), _pattern(rng, 256, 256), "procedural"
    return wall, table, env, source


def _outline(item: dict) -> np.ndarray:
    """World points (N x 3) on the container's outer surface (for camera fitting)."""
    prof = body_profile(item["spec"])[0]
    theta = np.linspace(0, 2 * math.pi, 16, endpoint=False)
    r, y = prof[:, :1], prof[:, 1:]
    pts = np.stack([r * np.cos(theta) + item["x"], np.broadcast_to(y, (len(prof), 16)),
                    r * np.sin(theta) + item["z"]], -1)
    return pts.reshape(-1, 3)


def project(points: np.ndarray, camera: dict, width: int, height: int) -> np.ndarray:
    """Pixel coordinates (N x 2) of world ``points`` through Mitsuba's perspective ``camera``
    (look-at ``origin`` -> ``target``, y up, horizontal ``fov`` in degrees)."""
    o, t = np.asarray(camera["origin"], float), np.asarray(camera["target"], float)
    forward = (t - o) / np.linalg.norm(t - o)
    left = np.cross([0.0, 1.0, 0.0], forward)
    left /= np.linalg.norm(left)
    up = np.cross(forward, left)
    rel = np.asarray(points, float) - o
    z = rel @ forward
    focal = 0.5 * width / math.tan(math.radians(camera["fov"]) / 2)
    return np.stack([0.5 * width - focal * (rel @ left) / z, 0.5 * height - focal * (rel @ up) / z], -1)


def _camera(rng, items, view, width, height, extent_px, spread=0.0) -> dict:
    """A camera at the view's elevation that shows ``items`` ``extent_px`` wide or high (the
    larger), centred (``spread``: random shift as a fraction of the free space)."""
    pts = np.concatenate([_outline(it) for it in items])
    centre = np.array([pts[:, 0].mean(), pts[:, 1].max() * 0.5, pts[:, 2].mean()])
    elev = math.radians(rng.uniform(*VIEW_ELEVATION[view]))
    azim = math.radians(rng.uniform(-25, 25))
    direction = np.array([math.sin(azim) * math.cos(elev), math.sin(elev), -math.cos(azim) * math.cos(elev)])
    cam = {"fov": float(rng.uniform(30, 50)), "target": centre, "origin": centre + 60 * direction}
    shift = rng.uniform(-1, 1, 2)
    for _ in range(4):  # distance for the size, then the target for the centring
        uv = project(pts, cam, width, height)
        size = max(np.ptp(uv[:, 0]), np.ptp(uv[:, 1]))
        dist = np.linalg.norm(cam["origin"] - cam["target"]) * size / extent_px
        mid = (uv.min(0) + uv.max(0)) / 2 - np.array([width, height]) / 2
        free = (np.array([width, height]) - np.ptp(uv, 0)) / 2
        mid -= spread * np.maximum(free, 0) * shift
        focal = 0.5 * width / math.tan(math.radians(cam["fov"]) / 2)
        fwd = (cam["target"] - cam["origin"]) / np.linalg.norm(cam["target"] - cam["origin"])
        left = np.cross([0.0, 1.0, 0.0], fwd)
        left /= np.linalg.norm(left)
        up = np.cross(fwd, left)
        cam["target"] = cam["target"] + (-left * mid[0] - up * mid[1]) * dist / focal
        cam["origin"] = cam["target"] + dist * direction
    return {"fov": cam["fov"], "origin": [float(v) for v in cam["origin"]],
            "target": [float(v) for v in cam["target"]]}


def _light(rng, view: int, camera: dict, width: int, height: int) -> dict:
    """A large spherical lamp (left for view 1, right for view 2), raised until it is out of view."""
    t, o = np.asarray(camera["target"]), np.asarray(camera["origin"])
    fwd = (t - o) / np.linalg.norm(t - o)
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    side = -1.0 if view == 1 else 1.0 if view == 2 else rng.uniform(-1, 1)
    pos = t + right * side * rng.uniform(40, 80) + np.array([0, 1, 0]) * rng.uniform(40, 90) - fwd * rng.uniform(-10, 50)
    radius, irradiance = rng.uniform(10, 22), rng.uniform(0.6, 2.5)  # large: fewer fireflies through glass
    for _ in range(40):
        u, v = project(pos[None], camera, width, height)[0]
        r_px = radius * 0.5 * width / math.tan(math.radians(camera["fov"]) / 2) / max(np.dot(pos - o, fwd), 1e-3)
        if np.dot(pos - o, fwd) <= radius or not (-r_px < u < width + r_px and -r_px < v < height + r_px):
            break
        pos = pos + np.array([0.0, 15.0, 0.0]) - fwd * 10.0
    dist2 = float(np.sum((pos - t) ** 2))
    colour = np.array([1.0, rng.uniform(0.85, 1.0), rng.uniform(0.7, 1.0)])
    return {"position": [float(v) for v in pos], "radius": float(radius), "env": float(rng.uniform(0.7, 1.6)),
            "radiance": (colour * irradiance * dist2 / (math.pi * radius ** 2)).tolist()}


def _items(rng, ids, n, level, filling, view) -> list[dict]:
    """``n`` containers side by side on the table (x across, gaps of 1-6 cm, z jitter)."""
    items, x = [], 0.0
    for k in range(n):
        spec = CONTAINERS[ids[int(rng.integers(len(ids)))]]
        name, fraction, fill, view_k = _pick(rng, spec, level, filling, view)
        d = dims(spec)
        half = max(d.radius * float(spec.profile(1.0)) + d.wall, d.foot_r, d.radius + d.wall)
        x += half + (rng.uniform(1, 6) if k else 0)
        items.append({"index": k, "spec": spec, "level": name, "fraction": fraction, "filling": fill, "view": view_k,
                      "x": x, "z": rng.uniform(-3, 3), "yaw": rng.uniform(0, 2 * math.pi),
                      "level_y": fill_level_y(spec, fraction) if fraction > 0 else None})
        x += half
    for it in items:
        it["x"] -= x / 2
    return items


def _capsule(a, b, radius: float) -> dict:
    """A capsule from ``a`` to ``b`` as a blob (see :func:`fillcls.world.pbr_scene.blob_mesh`)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ux = (b - a) / max(np.linalg.norm(b - a), 1e-6)
    uy = np.cross(ux, [0.0, 0.0, 1.0] if abs(ux[2]) < 0.9 else [1.0, 0.0, 0.0])
    uy /= np.linalg.norm(uy)
    return {"centre": ((a + b) / 2).tolist(), "axes": (np.stack([ux, uy, np.cross(ux, uy)]) * radius).tolist(),
            "stretch": float(np.linalg.norm(b - a) / 2 / radius)}


def _hand(rng: np.random.Generator, item: dict, camera: dict) -> dict:
    """A hand holding ``item`` from the camera's left or right: four fingers wrapped around the
    front of the body, a thumb above them, the palm on the side and a forearm leaving the frame
    (world cm); ``{"skin": linear RGB, "blobs": [...]}``."""
    spec = item["spec"]
    d = dims(spec)
    axis = np.array([item["x"], 0.0, item["z"]])
    fwd = axis - np.asarray(camera["origin"], float)
    fwd[1] = 0.0
    fwd /= np.linalg.norm(fwd)
    side = np.cross(fwd, [0.0, 1.0, 0.0]) * (1.0 if rng.random() < 0.5 else -1.0)
    up = np.array([0.0, 1.0, 0.0])
    finger = rng.uniform(0.7, 0.95)

    def outer(y: float) -> float:  # the body's outer radius at height y
        rel = float(np.clip((y - d.cavity_bottom) / d.cavity_h, 0.05, 1.0))
        return d.radius * float(spec.profile(rel)) + d.wall

    rim = d.height - 1.2 * finger  # no finger above the rim
    y0 = max(min(d.cavity_bottom + rng.uniform(0.15, 0.5) * d.cavity_h, rim - 3 * 2.05 * finger),
             d.cavity_bottom - 2.05 * finger)
    reach = rng.uniform(0.3, 0.9)
    blobs = []
    for i in range(4):
        y = y0 + i * 2.05 * finger
        if y > rim:
            break
        r = outer(y)
        c = axis + up * y
        knuckle = c + side * (r + finger) - fwd * (0.35 * r)
        front = c - fwd * (r + finger) + side * (0.35 * r)
        tip = c - fwd * (0.8 * r + finger) - side * (reach * r)
        width = finger * (1.0 - 0.08 * abs(i - 1.0))
        blobs += [_capsule(knuckle, front, width), _capsule(front, tip, width * 0.95)]
    r = outer(y0 + 3 * finger)
    palm = axis + up * (y0 + 3 * finger) + side * (r + finger + 1.3) + fwd * (0.2 * r)
    blobs.append({"centre": palm.tolist(), "axes": np.stack([side * 1.4, up * 4.3, np.cross(side, up) * 3.8]).tolist(),
                  "stretch": 0.0})
    top = min(y0 + 3 * 2.05 * finger + 1.6 * finger, d.height - 0.5 * finger)
    r_top = outer(top)
    blobs.append(_capsule(palm + up * 2.5 - fwd * 2.0, axis + up * top - fwd * (r_top + finger) + side * 0.2 * r_top,
                          finger * 1.15))
    elbow = palm + side * rng.uniform(14, 22) - up * rng.uniform(6, 14) - fwd * rng.uniform(2, 8)
    blobs.append(_capsule(palm, elbow, rng.uniform(2.6, 3.3)))
    skin = np.asarray(SKIN[int(rng.integers(len(SKIN)))]) * rng.uniform(0.9, 1.08)
    return {"skin": skin.tolist(), "blobs": blobs}


def add_hands(plan: dict, probability: float) -> dict:
    """Give each container of ``plan`` a holding hand with ``probability`` (drawn from the plan's
    own seed, so the rest of the plan does not change); returns ``plan``."""
    if probability > 0:
        rng = np.random.default_rng([plan["seed"], 0x4A4E])
        for item in plan["items"]:
            item["hand"] = _hand(rng, item, plan["camera"]) if rng.random() < probability else None
    return plan


def plan_frame(seed, width: int, height: int, containers=None, n_containers: int = 1, level=None, filling=None,
               view=None, backdrops: str = "auto", split: str = "train", extent=(0.45, 0.85),
               hands: float = 0.0) -> dict:
    """Every random choice of one scene (containers, camera, light, textures, ``hands``: the
    probability of a hand holding each container) as a dict."""
    rng = _rng(seed)
    items = _items(rng, _ids(containers), max(1, int(n_containers)), level, filling, view)
    view0 = items[0]["view"]
    wall, table, env, source = _textures(rng, backdrops, split)
    camera = _camera(rng, items, view0, width, height, rng.uniform(*extent) * min(width, height) * 1.2, spread=0.8)
    glossy = rng.random() < 0.4
    plan = {"width": int(width), "height": int(height), "items": items if n_containers else [], "camera": camera,
            "light": _light(rng, view0, camera, width, height), "backdrop": wall, "table": table, "envmap": env,
            "backdrop_source": source, "backdrop_distance": float(rng.uniform(15, 60)), "backdrop_size": 400.0,
            "table_repeat": float(rng.uniform(2, 8)), "texture_seed": int(rng.integers(1 << 31)),
            "table_bsdf": {"type": "plastic", "int_ior": 1.5} if glossy else {"type": "diffuse"},
            "seed": int(rng.integers(1 << 31)), "exposure": float(rng.uniform(0.14, 0.26)),
            "noise": float(rng.uniform(0, 3))}
    return add_hands(plan, hands)


def _develop(linear: np.ndarray, plan: dict) -> np.ndarray:
    """Fireflies (pixels over 3x their 5x5 median) replaced by the median, exposure (mean
    luminance -> ``plan['exposure']``), sRGB, camera noise: uint8 RGB."""
    weights = np.array([0.2126, 0.7152, 0.0722], np.float32)
    median = cv2.medianBlur(np.ascontiguousarray(linear, np.float32), 5)
    fireflies = (linear @ weights) > 3.0 * (median @ weights) + 0.03
    linear = np.where(fireflies[..., None], median, linear)
    lum = linear @ weights
    gain = plan["exposure"] / max(float(np.mean(np.minimum(lum, np.percentile(lum, 99.5)))), 1e-6)
    img = linear_to_srgb(linear * gain).astype(np.float32)
    img += np.random.default_rng(plan["seed"]).normal(0, plan["noise"], img.shape)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def masks(plan: dict, occluders: bool = False) -> list[np.ndarray]:
    """One H x W bool mask per item: pixels at least half covered by it (flat id passes); the
    hands hide the containers only with ``occluders``."""
    out = []
    for p in range((len(plan["items"]) + 2) // 3):
        cover = render(scene_dict(plan, mask_pass=p, occluders=occluders), MASK_SPP, plan["seed"] + 1)
        out += [cover[..., c] >= 0.5 for c in range(3)]
    return out[:len(plan["items"])]


def _annotation(item: dict, mask: np.ndarray, source: str, visible: np.ndarray | None = None) -> dict:
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    spec = item["spec"]
    occlusion = 0.0 if visible is None else float(1.0 - (visible & mask).sum() / mask.sum())
    return {"container": spec.id, "name": spec.name, "label": CLASSES.index(item["level"]), "level": item["level"],
            "filling": item["filling"], "fill_fraction": item["fraction"],
            "box": (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1), "mask": mask, "occlusion": occlusion,
            "occluded": occlusion > 0, "transparent": spec.transparent, "view": item["view"], "backdrop": source}


def render_plan(plan: dict, spp: int) -> tuple[np.ndarray, list[dict]]:
    """Render a :func:`plan_frame` plan: ``(rgb, annotations)`` (items with an empty mask left out)."""
    rgb = _develop(render(scene_dict(plan), spp, plan["seed"]), plan)
    full = masks(plan)
    visible = masks(plan, occluders=True) if any(it.get("hand") for it in plan["items"]) else [None] * len(full)
    anns = [_annotation(it, m, plan["backdrop_source"], v)
            for it, m, v in zip(plan["items"], full, visible) if m.any()]
    return rgb, anns


def render_frame_pbr(seed, width: int = 320, height: int = 240, containers: Sequence[str] | None = None,
                     n_containers: int = 1, spp: int = 32, level: str | None = None, filling: str | None = None,
                     view: int | None = None, backdrops: str = "auto", split: str = "train", hands: float = 0.0):
    """A path-traced camera frame (H x W x 3 uint8 RGB) with ``n_containers`` containers side by
    side, and their annotations (see the module doc; like :func:`fillcls.world.render.render_frame`).
    ``backdrops``: ``photos`` (needs ``make photos``), ``procedural`` or ``auto`` (photos if fetched);
    ``split``: which photos (``train`` / ``val``); ``hands``: the probability of a hand holding
    each container. ``n_containers=0``: the empty scene."""
    plan = plan_frame(seed, width, height, containers, n_containers, level, filling, view, backdrops, split,
                      hands=hands)
    return render_plan(plan, spp)


def _jittered(rng, box, jitter):
    if not jitter > 0:
        return box
    w, h = box[2] - box[0], box[3] - box[1]
    s = rng.uniform(-jitter, jitter, 4) * np.array([w, h, w, h])
    new = (box[0] + s[0], box[1] + s[1], box[2] + s[2], box[3] + s[3])
    return new if new[2] > new[0] + 1 and new[3] > new[1] + 1 else box


def render_crop_pbr(seed, size: int | None, container: str | None = None, level: str | None = None,
                    filling: str | None = None, view: int | None = None, spp: int = 32, box_jitter: float = 0.03,
                    scale: tuple[float, float] = (0.7, 1.3), backdrops: str = "auto", split: str = "train"):
    """One path-traced container crop (3 x size x size uint8 tensor) and its annotations, made as
    the node does: a square canvas around the container is rendered, its mask's box (each side
    moved by up to ``box_jitter``) goes through ``crop_square(canvas, box, DEFAULT_MARGIN)`` and
    ``resize_uint8(crop, size)``; the square's side before the resize is ``size`` x U(``scale``)
    (min 40). ``size=None`` returns the square crop at that side."""
    rng = _rng(seed)
    ids = _ids([container] if container else None)
    side = max(40.0, (size or 112) * rng.uniform(*scale))
    canvas = int(math.ceil(side * (1.0 + 4.0 * box_jitter))) + 6
    plan = plan_frame(rng, canvas, canvas, ids, 1, level, filling, view, backdrops, split)
    plan["camera"] = _camera(rng, plan["items"], plan["items"][0]["view"], canvas, canvas,
                             side / (1.0 + 2.0 * DEFAULT_MARGIN))
    plan["light"] = _light(rng, plan["items"][0]["view"], plan["camera"], canvas, canvas)
    rgb, anns = render_plan(plan, spp)
    if not anns:
        raise RuntimeError(f"render_crop_pbr: the container is not visible (seed {seed!r}); please report")
    crop = crop_square(rgb, _jittered(rng, anns[0]["box"], box_jitter), DEFAULT_MARGIN)
    t = resize_uint8(crop, size) if size else torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)
    meta = {k: v for k, v in anns[0].items() if k not in ("mask", "box")}
    meta["side"] = int(crop.shape[0])
    return t.contiguous(), meta


def _cache_file(cache_dir, stem: str, settings: dict) -> str:
    """``<cache_dir>/<stem>_<hash of settings>.npz``."""
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(os.fspath(cache_dir), f"{stem}_{key}.npz")


def _photo_key(use_photos: bool) -> dict:
    """The photo set's part of a cache key (none with procedural backdrops)."""
    return {"photos": photos.fingerprint()} if use_photos else {}


def make_cropset_pbr(n: int, size: int, seed: int = 0, containers: Sequence[str] | None = None, spp: int = 32,
                     backdrops: str = "auto", split: str = "train", cache_dir=None, start: int = 0):
    """Crops ``start .. start+n-1`` (sample ``i`` = ``render_crop_pbr((seed, i), size, ...)`` with
    a container drawn uniformly from ``containers``): ``(images uint8 N x 3 x size x size,
    labels int64 N, metas)``. With ``cache_dir``, one ``.npz`` per (settings, seed range)."""
    ids = _ids(containers)
    use_photos = backdrops == "photos" or (backdrops == "auto" and photos.available())
    settings = {"n": int(n), "size": int(size), "seed": int(seed), "start": int(start), "containers": ids,
                "spp": int(spp), "backdrops": "photos" if use_photos else "procedural", "split": split,
                "version": PBR_VERSION, **_photo_key(use_photos)}
    path = _cache_file(cache_dir, f"pbr_{n}x{size}_s{seed}", settings) if cache_dir else None
    if path and os.path.exists(path):
        with np.load(path, allow_pickle=False) as z:
            return torch.from_numpy(z["images"]), torch.from_numpy(z["labels"]), json.loads(str(z["metas"]))
    images, labels, metas = [], [], []
    for i in range(start, start + n):
        rng = np.random.default_rng([seed, i])
        t, meta = render_crop_pbr(rng, size, ids[int(rng.integers(len(ids)))], spp=spp,
                                  backdrops=settings["backdrops"], split=split)
        images.append(t.numpy())
        labels.append(meta["label"])
        metas.append(meta)
    images_np = np.stack(images) if images else np.zeros((0, 3, size, size), np.uint8)
    labels_np = np.asarray(labels, np.int64)
    if path:
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, images=images_np, labels=labels_np, metas=json.dumps(metas))
    return torch.from_numpy(images_np), torch.from_numpy(labels_np), metas


def make_frameset_pbr(n: int, containers: Sequence[str] | None = None, seed: int = 11, spp: int = 16,
                      split: str = "train", n_containers: tuple[int, int] = (1, 2), width: int = 320,
                      height: int = 240, backdrops: str = "auto", cache_dir=None, chunk: int = 10, log=None,
                      hands: float = 0.0):
    """``n`` path-traced frames (frame ``i`` from ``default_rng([seed, i])`` with
    U{``n_containers``} containers of ``containers``; photo backdrops of ``split``): ``(frames
    uint8 N x H x W x 3, foreground masks bool N x H x W, boxes per frame)``. With ``cache_dir``,
    one ``.npz`` per ``chunk`` frames, so an interrupted render keeps what it finished. ``hands``:
    the probability of a hand holding each container (the foreground masks include the hands'
    occluded parts of the containers, not the hands)."""
    ids = _ids(containers)
    use_photos = backdrops == "photos" or (backdrops == "auto" and photos.available())
    chunk = max(1, min(chunk, n))
    frames, fgs, boxes = [], [], []
    for start in range(0, n, chunk):
        settings = {"kind": "frames", "n": chunk, "start": start, "seed": int(seed), "containers": ids,
                    "spp": int(spp), "split": split, "n_containers": list(n_containers), "width": int(width),
                    "height": int(height), "backdrops": "photos" if use_photos else "procedural",
                    "version": PBR_VERSION, **({"hands": float(hands)} if hands else {}), **_photo_key(use_photos)}
        path = _cache_file(cache_dir, f"pbr_frames_{start}_s{seed}", settings) if cache_dir else None
        if path and os.path.exists(path):
            with np.load(path, allow_pickle=False) as z:
                rgbs, masks_, bxs = list(z["frames"]), list(z["masks"]), json.loads(str(z["boxes"]))
        else:
            rgbs, masks_, bxs = [], [], []
            for i in range(start, start + chunk):
                rng = np.random.default_rng([seed, i])
                rgb, anns = render_frame_pbr(rng, width, height, ids, int(rng.integers(n_containers[0],
                                                                                        n_containers[1] + 1)),
                                             spp=spp, backdrops=settings["backdrops"], split=split, hands=hands)
                fg = np.zeros((height, width), bool)
                for a in anns:
                    fg |= a["mask"]
                rgbs.append(rgb)
                masks_.append(fg)
                bxs.append([list(a["box"]) for a in anns])
            if path:
                os.makedirs(os.fspath(cache_dir), exist_ok=True)
                with atomic_path(path, suffix=".npz") as tmp:
                    np.savez(tmp, frames=np.stack(rgbs), masks=np.stack(masks_), boxes=json.dumps(bxs))
            if log:
                log(f"rendered pbr frames {start}..{start + chunk - 1} of {n}")
        frames += rgbs
        fgs += masks_
        boxes += bxs
    return (np.stack(frames[:n]) if n else np.zeros((0, height, width, 3), np.uint8),
            np.stack(fgs[:n]) if n else np.zeros((0, height, width), bool),
            [[tuple(b) for b in bx] for bx in boxes[:n]])


def frames_sheet_pbr(path: str | None = None, n: int = 6, width: int = 240, height: int = 180, spp: int = 32,
                     seed: int = 0, hands: float = 1.0, backdrops: str = "auto", columns: int = 3) -> np.ndarray:
    """A grid of ``n`` path-traced frames (one container each, held by a hand with probability
    ``hands``), each box drawn with its level and hand occlusion."""
    tiles = []
    for i in range(n):
        rgb, anns = render_frame_pbr(np.random.default_rng([seed, i]), width, height, spp=spp, backdrops=backdrops,
                                     hands=hands)
        tile = rgb.copy()
        for a in anns:
            x0, y0, x1, y1 = a["box"]
            cv2.rectangle(tile, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 0), 1)
            cv2.putText(tile, f"{a['container']} {a['level']} occl {a['occlusion']:.2f}", (4, 14),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % columns)
    sheet = np.concatenate([np.concatenate(tiles[r:r + columns], 1) for r in range(0, len(tiles), columns)], 0)
    if path:
        save_png(path, sheet)
    return sheet


def contact_sheet_pbr(path: str | None = None, tile: int = 96, spp: int = 32, seed: int = 0,
                      backdrops: str = "auto") -> np.ndarray:
    """Rows C1..C8, columns empty / half (water, rice) / full (water, pasta): PBR crops."""
    columns = [("empty", None), ("half", "water"), ("half", "rice"), ("full", "water"), ("full", "pasta")]
    head_w, head_h, gap = 120, 20, 2
    sheet = np.full((head_h + len(CONTAINERS) * (tile + gap), head_w + len(columns) * (tile + gap), 3), 255, np.uint8)
    for j, (level, filling) in enumerate(columns):
        cv2.putText(sheet, f"{level} {filling or ''}", (head_w + j * (tile + gap) + 4, 14),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for r, cid in enumerate(CONTAINERS):
        y = head_h + r * (tile + gap)
        cv2.putText(sheet, cid, (6, y + tile // 2 - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(sheet, CONTAINERS[cid].name, (6, y + tile // 2 + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.33,
                    (0, 0, 0), 1, cv2.LINE_AA)
        for j, (level, filling) in enumerate(columns):
            t, _ = render_crop_pbr(np.random.default_rng([seed, r, j]), tile, cid, level, filling, spp=spp,
                                   backdrops=backdrops)
            x = head_w + j * (tile + gap)
            sheet[y:y + tile, x:x + tile] = t.permute(1, 2, 0).numpy()
    if path:
        save_png(path, sheet)
    return sheet
