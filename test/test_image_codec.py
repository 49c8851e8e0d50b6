"""Image message conversion and the bad-frame kinds the node counts."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from fillcls_ros.image_codec import BadFrame, compressed_to_rgb, image_to_rgb, rgb_to_image_fields

RNG = np.random.default_rng(1)
RGB = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)


def msg(arr, encoding, step=None, bigendian=False, data=None):
    h, w = arr.shape[:2]
    row = arr.reshape(h, -1).view(np.uint8)
    step = row.shape[1] if step is None else step
    buf = np.zeros((h, step), np.uint8)
    buf[:, : row.shape[1]] = row
    return SimpleNamespace(encoding=encoding, width=w, height=h, step=step, is_bigendian=bigendian,
                           data=buf.tobytes() if data is None else data)


@pytest.mark.parametrize("encoding,arr", [
    ("rgb8", RGB), ("bgr8", RGB[..., ::-1].copy()),
    ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 255, np.uint8)])),
    ("bgra8", np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 9, np.uint8)])),
])
def test_colour_encodings(encoding, arr):
    assert np.array_equal(image_to_rgb(msg(arr, encoding)), RGB)


def test_step_padding_is_skipped():
    assert np.array_equal(image_to_rgb(msg(RGB, "rgb8", step=5 * 3 + 7)), RGB)


def test_mono_and_16_bit():
    gray = RGB[..., 0]
    out = image_to_rgb(msg(gray, "mono8"))
    assert out.shape == (6, 5, 3) and np.array_equal(out[..., 1], gray)
    rgb16 = RGB.astype(np.uint16) * 257
    assert np.array_equal(image_to_rgb(msg(rgb16, "rgb16")), RGB)
    big = msg(rgb16.byteswap(), "rgb16", bigendian=True)
    assert np.array_equal(image_to_rgb(big), RGB)


@pytest.mark.parametrize("fields,kind", [
    (dict(encoding="weird42"), "encoding"),
    (dict(width=0), "zero_size"),
    (dict(height=100000, width=100000), "absurd_size"),
    (dict(step=4), "step"),
    (dict(data=b"\x00" * 20), "truncated"),
])
def test_bad_frames_have_kinds(fields, kind):
    m = msg(RGB, "rgb8")
    for k, v in fields.items():
        setattr(m, k, v)
    with pytest.raises(BadFrame) as err:
        image_to_rgb(m)
    assert err.value.kind == kind


def test_compressed():
    ok, jpg = cv2.imencode(".png", cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    assert np.array_equal(compressed_to_rgb(SimpleNamespace(format="png", data=jpg.tobytes())), RGB)
    with pytest.raises(BadFrame) as err:
        compressed_to_rgb(SimpleNamespace(format="jpeg", data=b"not a jpeg"))
    assert err.value.kind == "decode"
    with pytest.raises(BadFrame) as err:
        compressed_to_rgb(SimpleNamespace(format="jpeg", data=b""))
    assert err.value.kind == "zero_size"


def test_round_trip_fields():
    f = rgb_to_image_fields(RGB)
    assert np.array_equal(image_to_rgb(SimpleNamespace(**f)), RGB)
