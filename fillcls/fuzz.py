"""Seeded generator of hostile ``sensor_msgs/Image`` and ``CompressedImage`` contents.

One home for the fuzzed messages of ``test/test_fuzz.py``, ``test/test_fuzz_node.py`` and
``bench/soak.py`` (issue 14). ROS-free: each :class:`FuzzMessage` holds the message fields with
values a real message can carry (uint32 sizes, uint8 ``is_bigendian``, str encodings, bytes data),
so the same message goes through :mod:`fillcls.image_codec` directly or over DDS.

Raw images: every encoding of ``sensor_msgs/image_encodings.hpp`` plus garbage names, random
sizes (zero, odd, absurd), steps (exact, padded, short, huge), byte lengths (exact, truncated,
longer, empty), endianness flags and payloads. Compressed images: garbage, empty, valid PNG (grey,
RGB, RGBA, 16-bit), JPEG, BMP, WebP, TIFF, PPM, truncated and header-only JPEG, mutated bytes,
formats whose size is not read (PFM, PAM, Radiance HDR, Sun raster, GIF), PNG bombs (a valid 10000 x 10000 or
20000 x 20000 PNG of zeros, built with zlib) and JPEG / PNG headers patched to huge sizes.
"""

from __future__ import annotations

import functools
import re
import struct
import zlib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Iterator

import cv2
import numpy as np

#: Every encoding named in ROS 2 ``sensor_msgs/image_encodings.hpp``.
ROS_ENCODINGS = (
    "rgb8", "rgba8", "rgb16", "rgba16", "bgr8", "bgra8", "bgr16", "bgra16", "mono8", "mono16",
    *(f"{d}C{c}" for d in ("8U", "8S", "16U", "16S", "32S", "32F", "64F") for c in (1, 2, 3, 4)),
    *(f"bayer_{p}{b}" for b in (8, 16) for p in ("rggb", "bggr", "gbrg", "grbg")),
    "yuv422", "uyvy", "yuyv", "yuv422_yuy2", "nv12", "nv21", "nv24")
#: Encoding names no camera should send.
GARBAGE_ENCODINGS = ("", "RGB8", "Mono16", "rgb", "8UC0", "8UC5", "8UC99", "32FC", "bayer_rggb32",
                     "yuv420", "i420", "jpeg", "rgb8 ", "rgb8\x01", "m\u00f6no8", "x" * 300)
#: Compressed formats OpenCV can write, used to make valid payloads.
_VALID_EXTS = (".png", ".jpg", ".bmp", ".webp", ".tiff", ".ppm")
_GENERIC = re.compile(r"(8U|8S|16U|16S|32S|32F|64F)C([0-9]+)")
_UINT32 = 2**32 - 1


@dataclass
class FuzzMessage:
    """One generated message: ``kind`` says how it was made, ``fields`` are the message's."""

    kind: str
    compressed: bool
    fields: dict

    def as_msg(self) -> SimpleNamespace:
        """An object with the message fields (what :mod:`fillcls.image_codec` reads)."""
        return SimpleNamespace(**self.fields)


def layout(encoding: str) -> tuple[int, float]:
    """(bytes a pixel, rows per image row) of ``encoding`` as a camera would lay it out."""
    if encoding in ("nv12", "nv21"):
        return 1, 1.5
    if encoding == "nv24":
        return 1, 3.0
    if encoding in ("yuv422", "uyvy", "yuyv", "yuv422_yuy2"):
        return 2, 1.0
    m = _GENERIC.fullmatch(encoding)
    if m:
        return int(m.group(1)[:-1]) // 8 * max(int(m.group(2)), 1), 1.0
    chans = 4 if encoding[:4] in ("rgba", "bgra") else 3 if encoding[:3] in ("rgb", "bgr") else 1
    return chans * (2 if encoding.endswith("16") else 1), 1.0


# ------------------------------------------------------------------------- compressed payloads
def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@functools.lru_cache(maxsize=4)
def png_bomb(width: int, height: int, bit_depth: int = 8) -> bytes:
    """A valid greyscale PNG of ``width`` x ``height`` zeros: a few hundred KB that decode to GBs.

    The zlib stream is one fully flushed deflate block of zero rows repeated (identical bytes
    each time) and a tail; the Adler-32 of n zero bytes is (n mod 65521) << 16 | 1.
    """
    row_len = 1 + (width * bit_depth + 7) // 8  # filter byte 0 + the row's zero pixels
    block_rows = max(1, min(height, (1 << 22) // row_len))
    full, rest = divmod(height, block_rows)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(bytes(row_len * block_rows)) + comp.flush(zlib.Z_FULL_FLUSH)
    tail = comp.compress(bytes(row_len * rest)) + comp.flush(zlib.Z_FINISH)
    adler = ((row_len * height) % 65521) << 16 | 1
    idat = b"\x78\xda" + block * full + tail + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def patch_png_size(png: bytes, width: int, height: int) -> bytes:
    """``png`` with its IHDR claiming ``width`` x ``height`` (CRC fixed: only the size lies)."""
    ihdr = png[12:29]
    body = struct.pack(">II", width, height) + ihdr[12:]
    return png[:8] + _png_chunk(b"IHDR", body) + png[33:]


def patch_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its first SOF0/1/2 marker claiming ``width`` x ``height``."""
    for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2"):
        i = jpeg.find(marker)
        if i >= 0:
            return jpeg[: i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9:]
    return jpeg


def _random_image(rng: np.random.Generator, max_side: int = 48) -> np.ndarray:
    h, w = (int(v) for v in rng.integers(1, max_side + 1, 2))
    chans = int(rng.choice([1, 3, 4]))
    depth = np.uint16 if rng.random() < 0.2 else np.uint8
    img = rng.integers(0, np.iinfo(depth).max, (h, w, chans), dtype=depth, endpoint=True)
    return img[..., 0] if chans == 1 else img


def _encode(rng: np.random.Generator, ext: str, max_side: int = 48) -> bytes:
    img = _random_image(rng, max_side)
    if ext in (".jpg", ".bmp", ".webp", ".ppm"):
        img = (img >> 8).astype(np.uint8) if img.dtype == np.uint16 else img
        if ext in (".jpg", ".ppm") and img.ndim == 3 and img.shape[2] == 4:
            img = img[..., :3]
        if ext == ".ppm" and img.ndim == 2:
            img = np.dstack([img] * 3)
    ok, buf = cv2.imencode(ext, img)
    assert ok, ext
    return buf.tobytes()


def valid_compressed(rng: np.random.Generator) -> tuple[str, bytes]:
    """(format name, bytes) of a small valid image in one of the formats OpenCV writes."""
    ext = str(rng.choice(_VALID_EXTS))
    return ext[1:], _encode(rng, ext)


def _header_only_jpeg(rng: np.random.Generator) -> bytes:
    jpg = _encode(rng, ".jpg")
    sos = jpg.find(b"\xff\xda")
    return jpg[: sos + 2 + int(rng.integers(0, 14))]


def _mutate(rng: np.random.Generator, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 17))):
        buf[int(rng.integers(0, len(buf)))] = int(rng.integers(0, 256))
    return bytes(buf)


def _bomb(rng: np.random.Generator) -> tuple[str, bytes]:
    r = rng.random()
    if r < 0.4:
        side = 10000 if rng.random() < 0.7 else 20000
        return f"png_bomb_{side}", png_bomb(side, side)
    if r < 0.7:
        w, h = (int(v) for v in rng.choice([16000, 30000, 65535], 2))
        return "jpeg_bomb", patch_jpeg_size(_encode(rng, ".jpg"), w, h)
    w, h = (int(v) for v in rng.choice([9000, 20000, 100000, 2**31 - 1, _UINT32], 2))
    return "png_size_lie", patch_png_size(_encode(rng, ".png"), w, h)


def _unmeasured(rng: np.random.Generator) -> bytes:
    ext = str(rng.choice([".pfm", ".hdr", ".pam", ".ras", ".gif"]))
    img = rng.random((int(rng.integers(1, 17)), int(rng.integers(1, 17)), 3), dtype=np.float32)
    ok, buf = cv2.imencode(ext, img if ext in (".pfm", ".hdr") else (img * 255).astype(np.uint8))
    assert ok, ext
    return buf.tobytes()


def _compressed_payload(rng: np.random.Generator, bombs: bool) -> tuple[str, bytes]:
    r = rng.random()
    if r < 0.12:
        return "garbage", rng.bytes(int(rng.integers(1, 4097)))
    if r < 0.15:
        return "empty", b""
    if r < 0.40:
        return valid_compressed(rng)
    if r < 0.55:
        fmt, data = valid_compressed(rng)
        return f"truncated_{fmt}", data[: int(rng.integers(0, len(data)))]
    if r < 0.62:
        return "jpeg_header_only", _header_only_jpeg(rng)
    if r < 0.82:
        fmt, data = valid_compressed(rng)
        return f"mutated_{fmt}", _mutate(rng, data)
    if r < 0.87:
        return "unmeasured_format", _unmeasured(rng)
    if r < 0.92 or not bombs:
        return "magic_then_garbage", (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00",
                                      b"RIFF\x00\x00\x00\x00WEBP")[int(rng.integers(0, 5))] \
            + rng.bytes(int(rng.integers(0, 64)))
    return _bomb(rng)


def fuzz_compressed(rng: np.random.Generator, bombs: bool = True) -> FuzzMessage:
    """One fuzzed ``CompressedImage`` (``msg.format`` is random too: it must not be trusted)."""
    kind, data = _compressed_payload(rng, bombs)
    fmt = str(rng.choice(["jpeg", "png", "rgb8; jpeg compressed bgr8", "", "tiff", "bogus\u00e9"]))
    return FuzzMessage(f"compressed:{kind}", True, {"format": fmt, "data": data})


# ------------------------------------------------------------------------------ raw images
def _raw_size(rng: np.random.Generator) -> tuple[int, int, str]:
    r = rng.random()
    if r < 0.75:
        return int(rng.integers(1, 49)), int(rng.integers(1, 49)), "small"
    if r < 0.83:
        other = int(rng.integers(0, 49))
        return (0, other, "zero") if rng.random() < 0.5 else (other, 0, "zero")
    big = [16385, 65536, 100000, 2**31, _UINT32, 9000, 12000]
    w, h = int(rng.choice(big)), int(rng.integers(1, 20000))
    return (w, h, "large") if rng.random() < 0.5 else (h, w, "large")


def _raw_step(rng: np.random.Generator, row_bytes: int) -> tuple[int, str]:
    r = rng.random()
    if r < 0.6:
        return row_bytes, "exact"
    if r < 0.75:
        return row_bytes + int(rng.integers(1, 17)), "padded"
    if r < 0.88:
        return int(rng.integers(0, max(row_bytes, 1))), "short"
    return int(rng.choice([0, 1, 2**16, 2**31, _UINT32])), "odd_step"


def _raw_data(rng: np.random.Generator, size: int, small: bool) -> tuple[bytes, str]:
    if not small:  # absurd sizes: never allocate what the header claims
        return rng.bytes(int(rng.integers(0, 4096))), "short_payload"
    r = rng.random()
    n, label = size, "exact"
    if r < 0.15:
        n, label = int(rng.integers(0, max(size, 1))), "truncated"
    elif r < 0.25:
        n, label = size + int(rng.integers(1, 256)), "longer"
    elif r < 0.3:
        n, label = 0, "empty"
    fill = rng.random()
    data = bytes(n) if fill < 0.2 else (b"\xff" * n if fill < 0.3 else rng.bytes(n))
    return data, label


def fuzz_image(rng: np.random.Generator) -> FuzzMessage:
    """One fuzzed ``sensor_msgs/Image`` (every ROS encoding, garbage names, random layout)."""
    pool = ROS_ENCODINGS if rng.random() < 0.85 else GARBAGE_ENCODINGS
    encoding = str(pool[int(rng.integers(0, len(pool)))])
    if encoding in GARBAGE_ENCODINGS:
        bpp, rows_per = int(rng.integers(1, 9)), 1.0
    else:
        bpp, rows_per = layout(encoding)
    width, height, size_kind = _raw_size(rng)
    step, step_kind = _raw_step(rng, width * bpp)
    rows = int(height * rows_per)
    small = size_kind != "large" and step <= 4096
    data, data_kind = _raw_data(rng, step * rows, small)
    big_endian = int(rng.choice([0, 1, 1, int(rng.integers(2, 256))])) if bpp > 1 else 0
    fields = {"height": height, "width": width, "encoding": encoding, "is_bigendian": big_endian,
              "step": step, "data": data}
    return FuzzMessage(f"raw:{encoding}:{size_kind}:{step_kind}:{data_kind}", False, fields)


def fuzz_messages(n: int, seed: int = 0, compressed: bool | None = None,
                  bombs: bool = True) -> Iterator[FuzzMessage]:
    """``n`` fuzzed messages from ``seed``: raw and compressed alternating at random
    (``compressed`` True / False: only that type); ``bombs`` False leaves out the PNG/JPEG bombs."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        is_compressed = rng.random() < 0.5 if compressed is None else compressed
        yield fuzz_compressed(rng, bombs) if is_compressed else fuzz_image(rng)
