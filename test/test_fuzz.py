"""Issue 14: thousands of fuzzed image messages through the ROS-free decode + predict path.

Only :class:`BadFrame` may ever come out of ``image_to_rgb`` / ``compressed_to_rgb``; what decodes
is an H x W x 3 uint8 frame that ``FillingEstimator.predict`` accepts. Bombs are refused from
their header, before any pixel is decoded.
"""

import os
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest

from fillcls import fuzz, image_codec
from fillcls.image_codec import BadFrame, compressed_to_rgb, image_to_rgb
from fillcls.inference import EstimatorConfig, FillingEstimator
from fillcls.paths import packaged_model

N_MESSAGES = 2400
#: Frames sent on to the classifier: every decoded frame up to this many (tiny sizes, fast).
N_PREDICT = 48
KINDS = {"encoding", "zero_size", "absurd_size", "odd_size", "step", "truncated", "format", "decode"}


@pytest.fixture(scope="module")
def estimator():
    return FillingEstimator(EstimatorConfig(
        model_path=packaged_model("default.pt", "FILLCLS_MODEL"), device="cpu",
        segmentation_backend="threshold", segmentation_score_threshold=0.0, cpu_jit=False))


def _decode(m):
    return (compressed_to_rgb if m.compressed else image_to_rgb)(m.as_msg())


def test_fuzzed_messages_raise_only_bad_frame(estimator):
    kinds, decoded, encodings, sorts, escaped = Counter(), [], set(), set(), []
    for m in fuzz.fuzz_messages(N_MESSAGES, seed=14):
        sorts.add(m.kind.split(":")[1] if m.compressed else "raw")
        if not m.compressed:
            encodings.add(m.fields["encoding"])
        try:
            rgb = _decode(m)
        except BadFrame as exc:
            kinds[exc.kind] += 1
            continue
        except Exception as exc:  # collected, so the failure names every message that escaped
            escaped.append(f"{m.kind}: {type(exc).__name__}: {exc}"[:300])
            continue
        assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8, (m.kind, rgb.shape, rgb.dtype)
        if not m.compressed:
            assert rgb.shape[:2] == (m.fields["height"], m.fields["width"]), m.kind
        decoded.append((m.kind, rgb))
    assert not escaped, f"{len(escaped)} messages raised something else than BadFrame:\n" + "\n".join(escaped[:20])
    assert set(fuzz.ROS_ENCODINGS) <= encodings
    assert {"png_bomb_10000", "png_bomb_20000", "jpeg_bomb", "garbage", "jpeg_header_only"} <= sorts
    assert set(kinds) == KINDS, kinds
    assert len(decoded) > 300 and sum(kinds.values()) > 1500, (len(decoded), kinds)
    for kind, rgb in decoded[:N_PREDICT]:
        results = estimator.predict(np.ascontiguousarray(rgb))
        assert all(0 <= r.level <= 3 for r in results), kind


def test_bombs_are_refused_before_decoding(monkeypatch):
    decoded = []
    imdecode = image_codec.cv2.imdecode

    def spy(*args):
        decoded.append(args[0].size)
        return imdecode(*args)

    monkeypatch.setattr(image_codec.cv2, "imdecode", spy)
    ok, jpg = image_codec.cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    ok, png = image_codec.cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    bombs = [fuzz.png_bomb(10000, 10000), fuzz.png_bomb(20000, 20000),
             fuzz.patch_jpeg_size(jpg.tobytes(), 16000, 16000), fuzz.patch_png_size(png.tobytes(), 9000, 9000)]
    for data in bombs:
        with pytest.raises(BadFrame) as err:
            compressed_to_rgb(fuzz.FuzzMessage("bomb", True, {"format": "png", "data": data}).as_msg())
        assert err.value.kind == "absurd_size"
    assert decoded == []
    compressed_to_rgb(fuzz.FuzzMessage("ok", True, {"format": "png", "data": png.tobytes()}).as_msg())
    assert decoded == [png.size]  # the spy sees what is decoded


def test_peak_memory_while_bombs_arrive():
    """20 bombs (10000² and 20000² PNG) in a fresh process: the peak RSS grows by less than 64 MB
    (decoding one 20000² bomb alone would take 1.2 GB)."""
    code = textwrap.dedent("""
        import resource
        from types import SimpleNamespace
        from fillcls import fuzz
        from fillcls.image_codec import BadFrame, compressed_to_rgb
        bombs = [fuzz.png_bomb(10000, 10000), fuzz.png_bomb(20000, 20000)]
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for i in range(20):
            try:
                compressed_to_rgb(SimpleNamespace(format="png", data=bombs[i % 2]))
            except BadFrame as exc:
                assert exc.kind == "absurd_size", exc
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) < 64, out.stdout
