"""Checked conversion of ``sensor_msgs/Image`` and ``CompressedImage`` contents to RGB arrays.

ROS-free: the functions take the message fields (or any object that has them), validate them and
raise :class:`BadFrame` with a short ``kind`` (``encoding``, ``zero_size``, ``absurd_size``,
``step``, ``truncated``, ``decode``) that the node counts and logs once per kind. Colour
conversions are rosbags-image's (OpenCV underneath).
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
from rosbags.image import image as rbimage

#: Largest frame side accepted, pixels; anything bigger is an ``absurd_size`` bad frame.
MAX_SIDE = 16384
#: Largest frame area accepted, pixels.
MAX_PIXELS = 8192 * 8192
#: Encodings of sensor_msgs/Image the node accepts (anything else is an ``encoding`` bad frame).
SUPPORTED_ENCODINGS = tuple(sorted(set(rbimage.ENCODINGMAP) - {"nv12", "nv21"}))
#: YUV 4:2:0 layouts: 1 channel, height * 3 / 2 rows.
_YUV420 = {"nv12", "nv21"}


class BadFrame(ValueError):
    """An image message that cannot be used; ``kind`` names the problem for counting."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _check_size(width: int, height: int) -> None:
    if width == 0 or height == 0:
        raise BadFrame("zero_size", f"image is {width}x{height}")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise BadFrame("absurd_size", f"image is {width}x{height}, larger than this node accepts "
                       f"(max side {MAX_SIDE}, max {MAX_PIXELS} pixels)")


def image_to_rgb(msg) -> np.ndarray:
    """``sensor_msgs/Image`` (fields encoding, width, height, step, is_bigendian, data) -> H x W x 3 uint8 RGB.

    The returned array may share memory with ``msg.data``; do not write to it.
    Raises :class:`BadFrame` for an unknown encoding, zero or absurd size, a step shorter than a
    row, or data shorter than ``step * height``.
    """
    encoding = str(msg.encoding).lower()
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    _check_size(width, height)
    if encoding not in rbimage.ENCODINGMAP and encoding not in _YUV420:
        raise BadFrame("encoding", f"unsupported encoding {msg.encoding!r} (supported: "
                       f"{', '.join(SUPPORTED_ENCODINGS + tuple(sorted(_YUV420)))})")
    bits, _, typestr, nchan = rbimage.to_cvtype(encoding)
    dtype = np.dtype(typestr)
    rows = height * 3 // 2 if encoding in _YUV420 else height
    row_bytes = width * nchan * dtype.itemsize
    if encoding in ("uyvy", "yuv422", "yuyv", "yuv422_yuy2"):
        row_bytes = width * 2  # 2 bytes a pixel, packed
    if step < row_bytes:
        raise BadFrame("step", f"step {step} is shorter than a row of {width} {encoding} pixels "
                       f"({row_bytes} bytes)")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < step * rows:
        raise BadFrame("truncated", f"{data.size} bytes of data, {step * rows} expected "
                       f"(step {step} x {rows} rows)")
    rowsview = data[: step * rows].reshape(rows, step)[:, :row_bytes]
    if encoding in ("uyvy", "yuv422", "yuyv", "yuv422_yuy2"):
        img = rowsview.reshape(rows, width, 2)
    else:
        img = rowsview.view(dtype).reshape((rows, width) if nchan == 1 else (rows, width, nchan))
        if dtype.itemsize > 1 and bool(msg.is_bigendian) != (sys.byteorder == "big"):
            img = img.byteswap()
    if encoding == "rgb8":
        return img
    if encoding in _YUV420:
        code = cv2.COLOR_YUV2RGB_NV12 if encoding == "nv12" else cv2.COLOR_YUV2RGB_NV21
        return cv2.cvtColor(np.ascontiguousarray(img), code)
    if not img.flags.c_contiguous:
        img = np.ascontiguousarray(img)
    try:
        return np.asarray(rbimage.convert_color(img, encoding, "rgb8"), dtype=np.uint8)
    except (rbimage.ImageError, cv2.error) as exc:
        raise BadFrame("encoding", f"cannot convert {encoding!r} to rgb8: {exc}") from exc


def compressed_to_rgb(msg) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (fields format, data) -> H x W x 3 uint8 RGB."""
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise BadFrame("zero_size", "compressed image has no data")
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise BadFrame("decode", f"cannot decode {data.size} bytes of {msg.format!r} data")
    _check_size(img.shape[1], img.shape[0])
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def rgb_to_image_fields(rgb: np.ndarray) -> dict:
    """The fields of an ``rgb8`` sensor_msgs/Image holding ``rgb`` (H x W x 3 uint8)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    return {"height": h, "width": w, "encoding": "rgb8", "is_bigendian": 0, "step": w * 3,
            "data": rgb.tobytes()}
