"""Image message conversion and the bad-frame kinds the node counts."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from fillcls.image_codec import BadFrame, compressed_to_rgb, image_to_rgb, rgb_to_image_fields

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
    from sensor_msgs.msg import Image  # the field value passes the generated setter's type check

    assert np.array_equal(image_to_rgb(Image(**f)), RGB) and Image(**f).data.typecode == "B"


# ---------------------------------------------------------------- issue 14: hostile frames
def raw(encoding, width, height, step=None, data=None, bpp=1, rows=None):
    step = width * bpp if step is None else step
    rows = height if rows is None else rows
    return SimpleNamespace(encoding=encoding, width=width, height=height, step=step, is_bigendian=0,
                           data=bytes(step * rows) if data is None else data)


@pytest.mark.parametrize("encoding,width,height", [
    ("nv12", 63, 48), ("nv12", 64, 3), ("nv12", 64, 1), ("nv21", 1, 1),  # the frames that killed the node
    ("yuv422", 5, 4), ("uyvy", 1, 1), ("yuyv", 3, 2), ("yuv422_yuy2", 7, 7),
])
def test_sizes_an_encoding_cannot_have(encoding, width, height):
    bpp, rows = (1, height * 3 // 2 + 1) if encoding.startswith("nv") else (2, height)
    with pytest.raises(BadFrame) as err:
        image_to_rgb(raw(encoding, width, height, bpp=bpp, rows=rows))
    assert err.value.kind == "odd_size" and encoding in str(err.value)


def test_yuv_frames_convert():
    grey = image_to_rgb(raw("nv12", 64, 48, data=bytes([128]) * (64 * 72)))
    assert grey.shape == (48, 64, 3) and grey.dtype == np.uint8 and abs(int(grey[0, 0, 0]) - 130) < 8
    assert image_to_rgb(raw("nv21", 2, 2, rows=3)).shape == (2, 2, 3)
    assert image_to_rgb(raw("uyvy", 4, 3, bpp=2)).shape == (3, 4, 3)
    assert image_to_rgb(raw("bayer_rggb8", 5, 3)).shape == (3, 5, 3)
    big = raw("bayer_grbg16", 4, 4, bpp=2)
    big.is_bigendian = 1
    assert image_to_rgb(big).shape == (4, 4, 3)


@pytest.mark.parametrize("encoding", ["8UC1", "8UC3", "16UC1", "32FC1", "32FC3", "64FC4", "nv24", "8uc3"])
def test_encodings_without_colour_meaning_are_refused(encoding):
    with pytest.raises(BadFrame) as err:
        image_to_rgb(raw(encoding, 4, 4, bpp=8))
    assert err.value.kind == "encoding" and "rgb8" in str(err.value)


def test_max_pixels():
    m = msg(RGB, "rgb8")  # 5 x 6 = 30 pixels
    assert image_to_rgb(m, max_pixels=30).shape == (6, 5, 3)
    with pytest.raises(BadFrame) as err:
        image_to_rgb(m, max_pixels=29)
    assert err.value.kind == "absurd_size" and "29" in str(err.value)
    ok, png = cv2.imencode(".png", RGB)
    c = SimpleNamespace(format="png", data=png.tobytes())
    assert compressed_to_rgb(c, max_pixels=30).shape == (6, 5, 3)
    with pytest.raises(BadFrame) as err:
        compressed_to_rgb(c, max_pixels=29)
    assert err.value.kind == "absurd_size"
    for bad in (0, -1, 2.5, "100"):
        with pytest.raises(ValueError, match="max_pixels"):
            image_to_rgb(m, max_pixels=bad)


def test_compressed_formats_and_lies():
    from fillcls.fuzz import patch_jpeg_size, patch_png_size

    for ext in (".jpg", ".bmp", ".webp", ".tiff", ".ppm"):
        ok, buf = cv2.imencode(ext, RGB)
        out = compressed_to_rgb(SimpleNamespace(format="jpeg", data=buf.tobytes()))  # format is not trusted
        assert out.shape == (6, 5, 3), ext
    ok, pfm = cv2.imencode(".pfm", RGB.astype(np.float32))
    with pytest.raises(BadFrame) as err:
        compressed_to_rgb(SimpleNamespace(format="pfm", data=pfm.tobytes()))
    assert err.value.kind == "format" and "PFM" in str(err.value)
    ok, jpg = cv2.imencode(".jpg", RGB)
    ok, png = cv2.imencode(".png", RGB)
    for data in (patch_jpeg_size(jpg.tobytes(), 30000, 30000), patch_png_size(png.tobytes(), 2**31, 2)):
        with pytest.raises(BadFrame) as err:
            compressed_to_rgb(SimpleNamespace(format="", data=data))
        assert err.value.kind == "absurd_size"
    header_only = jpg.tobytes()[: jpg.tobytes().find(b"\xff\xda")]
    with pytest.raises(BadFrame) as err:
        compressed_to_rgb(SimpleNamespace(format="jpeg", data=header_only))
    assert err.value.kind == "decode"


def test_png_chunk_claiming_gigabytes_is_refused():
    """OpenCV allocates a chunk's declared length before reading it: refuse the lie first."""
    ok, png = cv2.imencode(".png", RGB)
    data = bytearray(png.tobytes())
    assert data[37:41] == b"IDAT"
    data[33:37] = (2**31).to_bytes(4, "big")
    with pytest.raises(BadFrame) as err:
        compressed_to_rgb(SimpleNamespace(format="png", data=bytes(data)))
    assert err.value.kind == "decode" and "IDAT" in str(err.value)


def test_data_that_is_no_buffer():
    m = msg(RGB, "rgb8")
    m.data = list(m.data)  # a sequence of ints still works
    assert np.array_equal(image_to_rgb(m), RGB)
    m.data = [1000] * 90
    with pytest.raises(BadFrame):
        image_to_rgb(m)
