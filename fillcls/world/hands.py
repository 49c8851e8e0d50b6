"""A skin-toned hand holding a container: forearm, palm, thumb and four fingers across its front
from one side, drawn into the image and into a hand mask (for the occlusion annotation)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .instances import Instance

#: Fingers across the container (the thumb comes on top of them).
FINGERS = 4


def _grip(inst: Instance, rng: np.random.Generator) -> tuple[float, float]:
    """(local height, radius) where the hand holds: the stem of a stemmed glass (45 %) or the body."""
    spec, radius = inst.spec, inst.radius
    if spec.stemmed and rng.random() < 0.45:
        return inst.stem_height * rng.uniform(0.35, 0.8), inst.stem_radius  # pinch the stem
    relative_height = rng.uniform(0.2, 0.7)
    bottom = inst.cavity_bottom
    height = bottom + relative_height * (inst.height - bottom)
    return height, radius * float(spec.profile(relative_height)) + inst.wall


def _skin_tones(skin: np.ndarray) -> dict[str, tuple[float, ...]]:
    """Outline, highlight, base and shadow colours of a skin colour."""
    return {
        "dark": tuple(float(v) for v in skin * 0.8),
        "light": tuple(float(v) for v in np.minimum(skin * 1.07 + 4, 255)),
        "base": tuple(float(v) for v in skin),
        "shadow": tuple(float(v) for v in skin * 0.9),
    }


def _draw_arm_and_palm(img: np.ndarray, hand_mask: np.ndarray, inst: Instance, rng: np.random.Generator,
                       side: float, grip: tuple[float, float], finger_w: float, tones: dict) -> None:
    """Forearm (a thick line away from the container) and palm (an ellipse) on the holding side."""
    grip_y, grip_r = grip
    palm_x = side * (grip_r + 1.6 * finger_w)
    angle = rng.uniform(-0.9, 0.5)
    arm_end = (palm_x + side * 30 * finger_w * math.cos(angle), grip_y + 30 * finger_w * math.sin(angle))
    palm = inst.to_image(palm_x, grip_y)
    for im, colour, k in ((hand_mask, 255, 3.6), (img, tones["dark"], 3.6), (img, tones["shadow"], 3.3),
                          (img, tones["base"], 2.4)):
        cv2.line(im, palm, inst.to_image(*arm_end), colour, max(1, int(k * finger_w)))
    axes = (max(1, int(2.0 * finger_w)), max(1, int(2.5 * finger_w)))
    for im, colour, d in ((hand_mask, 255, 0), (img, tones["dark"], 0), (img, tones["shadow"], 1),
                          (img, tones["base"], max(1, int(0.5 * finger_w)))):
        cv2.ellipse(im, palm, (max(1, axes[0] - d), max(1, axes[1] - d)), 0, 0, 360, colour, -1)


def _draw_fingers(img: np.ndarray, hand_mask: np.ndarray, strokes: list, finger_w: float, tones: dict) -> None:
    """Each stroke (root, tip) as a finger: outline, skin, a highlight above, a nail at the tip."""
    width = max(1, int(round(finger_w)))
    up = max(1, int(round(finger_w * 0.18)))
    nail = tuple(min(255.0, v * 1.15 + 10) for v in tones["base"])
    for root, tip in strokes:
        cv2.line(hand_mask, root, tip, 255, width)
        cv2.line(img, root, tip, tones["dark"], width)
        cv2.line(img, root, tip, tones["base"], max(1, int(finger_w * 0.8)))
        cv2.line(img, (root[0], root[1] - up), (tip[0], tip[1] - up), tones["light"], max(1, int(finger_w * 0.3)))
        if finger_w >= 4:  # fingernail at the tip
            cv2.circle(img, tip, max(1, int(finger_w * 0.22)), nail, -1)


def draw_hand(img: np.ndarray, hand_mask: np.ndarray, inst: Instance, rng: np.random.Generator) -> None:
    """Draw a hand holding ``inst`` (fingers across its front from one side) into img and hand_mask."""
    px_per_cm = inst.height / inst.spec.height_cm
    finger_w = 1.75 * px_per_cm * rng.uniform(0.85, 1.15)
    side = 1.0 if rng.random() < 0.5 else -1.0
    grip_y, grip_r = _grip(inst, rng)
    reach = grip_r * rng.uniform(0.3, 1.5) + finger_w * 0.3
    finger_slope = rng.uniform(-0.25, 0.25)
    tones = _skin_tones(np.array(inst.look["skin"], np.float32))
    _draw_arm_and_palm(img, hand_mask, inst, rng, side, (grip_y, grip_r), finger_w, tones)
    # thumb (above the fingers), then the fingers, top to bottom
    thumb_y = grip_y + 2.2 * finger_w
    strokes = [(inst.to_image(side * (grip_r + 0.6 * finger_w), thumb_y - 0.3 * finger_w),
                inst.to_image(side * (grip_r - 0.55 * reach), thumb_y + 0.5 * finger_w))]
    for k in range(FINGERS):
        y = grip_y + (1.0 - k) * finger_w * 1.02
        length = reach * (1.0 - 0.12 * abs(k - 1.2))
        strokes.append((inst.to_image(side * (grip_r + 0.8 * finger_w), y),
                        inst.to_image(side * (grip_r - length), y + finger_slope * length)))
    _draw_fingers(img, hand_mask, strokes, finger_w, tones)
