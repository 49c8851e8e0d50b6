"""Mitsuba 3 scenes of the physically based renderer (:mod:`.pbr`): materials, textures, the
container's meshes (:mod:`.pbr_mesh`), backdrop, table, lights, and the two renders (a path-traced
colour image and a flat object-id pass for the masks).

Materials: glass is a smooth dielectric (IOR 1.5; the green tumbler tinted), the transparent
plastic cups a rough dielectric (IOR 1.49, frosted); below a liquid's surface the container's inner
surface is a glass/water interface (IOR 1.5 / 1.33) and the liquid's surface an air/water one
(1.33), so no two surfaces coincide; rice and pasta are opaque diffuse fills with a grain texture;
C1 is red plastic, C2 white paper with a blue band. The variant is ``cuda_ad_rgb`` when a GPU
works, else ``scalar_rgb`` (``$FILLCLS_MITSUBA_VARIANT`` overrides).
"""

from __future__ import annotations

import functools
import os

import cv2
import numpy as np

from .pbr_mesh import body_profile, content_profile, dims, lathe
from .render import ContainerSpec

GLASS_IOR, PLASTIC_IOR, WATER_IOR = 1.5, 1.49, 1.33
#: Glass tints (transmittance per interface) and opaque cup colours, linear RGB.
TINTS = {"C4": (0.55, 0.86, 0.62)}
C1_RED = (0.55, 0.025, 0.03)
C2_WHITE, C2_BAND = (0.8, 0.79, 0.76), (0.06, 0.13, 0.42)


@functools.lru_cache(maxsize=1)
def mitsuba():
    """The ``mitsuba`` module with its variant set (``cuda_ad_rgb`` if usable, else ``scalar_rgb``)."""
    try:
        import mitsuba as mi
    except ImportError as exc:  # pragma: no cover - mitsuba is in requirements.txt
        raise ImportError("the physically based renderer needs Mitsuba 3: pip install -r requirements.txt") from exc
    wanted = os.environ.get("FILLCLS_MITSUBA_VARIANT")
    for variant in ([wanted] if wanted else ["cuda_ad_rgb", "scalar_rgb"]):
        try:
            mi.set_variant(variant)
            if variant.startswith("cuda"):
                mi.load_dict({"type": "scene"})  # fails early without a working GPU / driver
            return mi
        except Exception as exc:  # noqa: BLE001 - any failure: try the next variant
            if wanted:
                raise RuntimeError(f"FILLCLS_MITSUBA_VARIANT={wanted}: cannot use it ({exc})") from exc
    raise RuntimeError("no usable Mitsuba variant")  # pragma: no cover


def srgb_to_linear(img: np.ndarray) -> np.ndarray:
    """uint8 sRGB -> float32 linear."""
    x = img.astype(np.float32) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(img: np.ndarray) -> np.ndarray:
    """float linear -> uint8 sRGB (clipped)."""
    x = np.clip(img, 0.0, 1.0)
    y = np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)


def bitmap(rgb: np.ndarray) -> dict:
    """A repeating, bilinear bitmap texture of a uint8 sRGB image."""
    mi = mitsuba()
    return {"type": "bitmap", "bitmap": mi.Bitmap(srgb_to_linear(rgb)), "raw": True, "wrap_mode": "repeat"}


def rgb(value) -> dict:
    return {"type": "rgb", "value": [float(v) for v in value]}


def grain_texture(rng: np.random.Generator, filling: str, size: int = 256) -> np.ndarray:
    """A tileable uint8 texture of rice grains or pasta pieces (``filling``), 1 texel ~ uv/size."""
    rice = filling == "rice"
    gap = np.array([150, 140, 120] if rice else [120, 80, 30], np.float32) * rng.uniform(0.7, 1.0)
    base = np.array([238, 232, 215] if rice else [232, 176, 80], np.float32) * rng.uniform(0.85, 1.05, 3)
    img = np.empty((size, size, 3), np.float32)
    img[:] = gap
    n, axes = (260, (13, 4.5)) if rice else (70, (26, 9))
    for _ in range(n):
        x, y = rng.uniform(0, size, 2)
        angle = rng.uniform(0, 180)
        colour = (base * rng.uniform(0.8, 1.05)).tolist()
        for dx in (-size, 0, size):  # wrap around: tileable
            for dy in (-size, 0, size):
                centre = (int(x + dx), int(y + dy))
                cv2.ellipse(img, centre, (int(axes[0] * rng.uniform(0.8, 1.2)), int(axes[1])), angle, 0, 360,
                            colour, -1, cv2.LINE_AA)
                if not rice:
                    cv2.ellipse(img, centre, (int(axes[0]) - 3, 2), angle, 0, 360, (base * 0.75).tolist(), 1,
                                cv2.LINE_AA)
    img = cv2.GaussianBlur(img, (3, 3), 0) * rng.uniform(0.9, 1.0, (size, size, 1))
    return np.clip(img, 0, 255).astype(np.uint8)


def _glass(spec: ContainerSpec, ext_ior: float = 1.0) -> dict:
    tint = rgb(TINTS.get(spec.id, (0.985, 0.99, 0.985)))
    if spec.material == "plastic":
        return {"type": "roughdielectric", "distribution": "ggx", "alpha": 0.015 + 0.2 * spec.frosted,
                "int_ior": PLASTIC_IOR, "ext_ior": ext_ior, "specular_transmittance": tint}
    return {"type": "dielectric", "int_ior": GLASS_IOR, "ext_ior": ext_ior, "specular_transmittance": tint}


def _opaque(spec: ContainerSpec) -> dict:
    if spec.id == "C1":
        return {"type": "plastic", "diffuse_reflectance": rgb(C1_RED), "int_ior": PLASTIC_IOR}
    return {"type": "diffuse", "reflectance": rgb(C2_WHITE)}


def _mesh(name: str, geometry, bsdf: dict, emitter: dict | None = None):
    """A Mitsuba mesh of ``(vertices, faces, texcoords)`` with smooth normals."""
    mi = mitsuba()
    verts, faces, tex = geometry
    props = mi.Properties()
    props["bsdf"] = mi.load_dict(bsdf)
    if emitter is not None:
        props["emitter"] = mi.load_dict(emitter)
    mesh = mi.Mesh(name, len(verts), len(faces), props=props, has_vertex_normals=True, has_vertex_texcoords=True)
    params = mi.traverse(mesh)
    params["vertex_positions"] = verts.ravel()
    params["faces"] = faces.ravel()
    params["vertex_texcoords"] = tex.ravel()
    params.update()
    mesh.recompute_vertex_normals()
    return mesh


def _moved(geometry, x: float, z: float, yaw: float):
    verts, faces, tex = geometry
    c, s = np.cos(yaw), np.sin(yaw)
    v = verts.copy()
    v[:, 0], v[:, 2] = verts[:, 0] * c - verts[:, 2] * s + x, verts[:, 0] * s + verts[:, 2] * c + z
    return v.astype(np.float32), faces, tex


def container_parts(item: dict, rng: np.random.Generator) -> list[tuple[str, tuple, dict]]:
    """``(name, geometry, bsdf)`` of every mesh of one placed container ``item`` (keys: spec, x, z,
    yaw, filling, level_y): body, wet inner surface and liquid surface, or a grain fill; band."""
    spec: ContainerSpec = item["spec"]
    filling, level_y, k = item["filling"], item["level_y"], item["index"]
    liquid = filling == "water" and level_y is not None
    dry, wet = body_profile(spec, level_y if liquid else None)
    parts = []
    if spec.transparent:
        parts.append(("body", lathe(dry), _glass(spec)))
        if liquid:
            parts.append(("wet", lathe(wet), _glass(spec, WATER_IOR)))
    else:
        parts.append(("body", lathe(dry), _opaque(spec)))
        if spec.id == "C2":
            d = dims(spec)
            ys = np.linspace(0.45, 0.58, 6) * d.height
            band = np.stack([d.inner(spec, ys) + d.wall + 0.01, ys], 1)  # walking up: normal out
            parts.append(("band", lathe(band), {"type": "diffuse", "reflectance": rgb(C2_BAND)}))
    if liquid:
        top = content_profile(spec, level_y)[-2:]
        parts.append(("water", lathe(top, uv="planar"), {"type": "dielectric", "int_ior": WATER_IOR}))
    elif filling in ("rice", "pasta") and level_y is not None:
        grains = bitmap(grain_texture(rng, filling))
        body = content_profile(spec, level_y, inset=0.02)
        scale = 3.0 if filling == "rice" else 6.0
        parts.append(("fill", lathe(body[:-1], uv_scale=scale), {"type": "diffuse", "reflectance": grains}))
        parts.append(("filltop", lathe(body[-2:], uv="planar", uv_scale=scale),
                      {"type": "diffuse", "reflectance": grains}))
    return [(f"c{k}_{name}", _moved(geo, item["x"], item["z"], item["yaw"]), bsdf) for name, geo, bsdf in parts]


def _quad(centre, right, up, half_w: float, half_h: float, uv_rep=(1.0, 1.0)):
    """A rectangle (two triangles) facing ``cross(right, up)``."""
    c, r, u = (np.asarray(a, np.float64) for a in (centre, right, up))
    verts = np.array([c - r * half_w - u * half_h, c + r * half_w - u * half_h, c + r * half_w + u * half_h,
                      c - r * half_w + u * half_h], np.float32)
    tex = np.array([[0, uv_rep[1]], [uv_rep[0], uv_rep[1]], [uv_rep[0], 0], [0, 0]], np.float32)
    return verts, np.array([[0, 1, 2], [0, 2, 3]], np.uint32), tex


def blob_mesh(blob: dict, n_lat: int = 10, n_lon: int = 16):
    """``(vertices, faces, texcoords)`` of a blob: a unit sphere whose two halves along local x are
    pushed apart by ``stretch`` (a capsule; 0: an ellipsoid), mapped by the rows of ``axes`` (the
    local x / y / z axes, scaled, right-handed) to ``centre`` (world cm)."""
    lat = np.linspace(0, np.pi, n_lat + 1)
    lon = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(lat, lon, indexing="ij")
    unit = np.stack([np.cos(t), np.sin(t) * np.cos(p), np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
    unit[:, 0] += np.sign(unit[:, 0]) * blob["stretch"]
    verts = np.asarray(blob["centre"]) + unit @ np.asarray(blob["axes"])
    faces = []
    for i in range(n_lat):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, e = a + n_lon, b + n_lon
            faces += [[a, c, b], [b, c, e]]
    return verts.astype(np.float32), np.asarray(faces, np.uint32), np.zeros((len(verts), 2), np.float32)


def scene_dict(plan: dict, mask_pass: int | None = None, occluders: bool = False) -> dict:
    """The Mitsuba scene of a ``plan`` (:func:`fillcls.world.pbr.plan_frame`). ``mask_pass=p``:
    the flat id pass ``p`` (containers ``3p .. 3p+2`` emit pure red / green / blue, all else black,
    direct visibility only; the hands are left out unless ``occluders``)."""
    cam = plan["camera"]
    mi = mitsuba()
    sensor = {"type": "perspective", "fov": cam["fov"], "fov_axis": "x",
              "to_world": mi.ScalarTransform4f().look_at(origin=cam["origin"], target=cam["target"], up=[0, 1, 0]),
              "film": {"type": "hdrfilm", "width": plan["width"], "height": plan["height"],
                       "rfilter": {"type": "box" if mask_pass is not None else "gaussian"}},
              "sampler": {"type": "independent"}}
    scene: dict = {"type": "scene", "sensor": sensor}
    black = {"type": "diffuse", "reflectance": rgb((0, 0, 0))}
    rng = np.random.default_rng(plan["texture_seed"])
    for name, geo, bsdf in _surroundings(plan):
        scene[name] = _mesh(name, geo, black if mask_pass is not None else bsdf)
    for item in plan["items"]:
        emit = None
        if mask_pass is not None:
            colour = np.zeros(3)
            if item["index"] // 3 == mask_pass:
                colour[item["index"] % 3] = 1.0
            emit = {"type": "area", "radiance": rgb(colour)}
        for name, geo, bsdf in container_parts(item, rng):
            scene[name] = _mesh(name, geo, black if mask_pass is not None else bsdf, emit)
        hand = item.get("hand")
        if hand and (mask_pass is None or occluders):
            skin = {"type": "plastic", "diffuse_reflectance": rgb(hand["skin"]), "int_ior": 1.4}
            for j, blob in enumerate(hand["blobs"]):
                name = f"h{item['index']}_{j}"
                scene[name] = _mesh(name, blob_mesh(blob), black if mask_pass is not None else skin)
    if mask_pass is not None:
        scene["integrator"] = {"type": "path", "max_depth": 1}
        return scene
    scene["integrator"] = {"type": "path", "max_depth": 14, "rr_depth": 8}
    light = plan["light"]
    scene["env"] = {"type": "envmap", "bitmap": mi.Bitmap(srgb_to_linear(plan["envmap"])), "scale": light["env"]}
    scene["lamp"] = {"type": "sphere", "center": light["position"], "radius": light["radius"],
                     "emitter": {"type": "area", "radiance": rgb(light["radiance"])}}
    return scene


def _surroundings(plan: dict):
    """Backdrop (a photo rectangle behind the containers, facing the camera) and table."""
    cam = plan["camera"]
    forward = np.asarray(cam["target"], float) - np.asarray(cam["origin"], float)
    forward[1] = 0.0
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    back = plan["backdrop_distance"]
    size = plan["backdrop_size"]
    centre = np.asarray(cam["target"], float) + forward * back
    centre[1] = size * 0.5 - 1.0
    wall = _quad(centre, right, [0, 1, 0], size * 0.75, size * 0.5)
    table_c = np.asarray(cam["target"], float) + forward * (back - size) * 0.5
    table_c[1] = 0.0
    reps = plan["table_repeat"]
    table = _quad(table_c, -right, -forward, size, size * 0.5 + back, (reps, reps * 0.5))
    return [("backdrop", wall, {"type": "diffuse", "reflectance": bitmap(plan["backdrop"])}),
            ("table", table, plan["table_bsdf"] | {"reflectance" if plan["table_bsdf"]["type"] == "diffuse"
                                                   else "diffuse_reflectance": bitmap(plan["table"])})]


def render(scene: dict, spp: int, seed: int) -> np.ndarray:
    """Render ``scene`` (a dict) with ``spp`` samples per pixel: float32 H x W x 3 linear RGB."""
    mi = mitsuba()
    loaded = mi.load_dict(scene)
    return np.asarray(mi.render(loaded, spp=int(spp), seed=int(seed) & 0x7FFFFFFF), np.float32)[..., :3]
