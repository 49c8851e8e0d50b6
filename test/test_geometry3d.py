"""fillcls.geometry3d on the synthetic depth of fillcls.world.sequences (clear glass seen through)."""

import numpy as np
import pytest

from fillcls.geometry3d import Intrinsics, fit_plane, locate
from fillcls.world.sequences import make_sequence


def _errors(kind, containers, seeds, frame=0):
    """(container, method, centre error cm, diameter error cm, height error cm) per container."""
    out = []
    for seed in seeds:
        seq = make_sequence(kind, seed, containers=containers, n_frames=4, width=320, height=240)
        intrinsics = Intrinsics.from_k(seq.camera.K)
        f = seq.frame(frame)
        masks = np.zeros(f.depth.shape, bool)
        for o in f.objects:
            masks |= o["mask"]
        plane = fit_plane(f.depth, intrinsics, exclude=masks)
        n_true, d_true = seq.camera.table_plane
        assert plane is not None and abs(plane[0] @ n_true) > 0.999 and plane[1] == pytest.approx(d_true, abs=0.01)
        for o in f.objects:
            r = locate(o["mask"], f.depth, intrinsics, plane)
            assert r is not None, (seed, o["container"])
            out.append((o["container"], r.method, 100 * float(np.linalg.norm(np.subtract(r.centre, o["centre"]))),
                        100 * (r.diameter - o["diameter"]), 100 * (r.height - o["size_height"])))
    return out


def test_standing_opaque_and_clear_containers():
    for containers in (("C1", "C2"), ("C3", "C4", "C5", "C6", "C7", "C8")):
        errors = _errors("static", containers, range(6))
        centre = [e[2] for e in errors]
        print(containers, [(c, m, round(e, 2), round(d, 2), round(h, 2)) for c, m, e, d, h in errors])
        assert np.median(centre) < 2.0 and max(centre) < 3.5
        assert all(abs(e[3]) < 2.0 and abs(e[4]) < 2.0 for e in errors)


def test_lifted_container_uses_the_rim_or_its_surface():
    errors = _errors("carried", ("C1", "C6", "C7"), range(4), frame=2)
    print([(c, m, round(e, 2)) for c, m, e, _, _ in errors])
    assert all(m in ("rim", "opaque") for _, m, _, _, _ in errors)  # not the table: it is held above it
    assert max(e[2] for e in errors) < 7.0


def test_bad_input():
    intrinsics = Intrinsics(100.0, 100.0, 31.5, 23.5)
    with pytest.raises(ValueError, match="same shape"):
        locate(np.ones((10, 10), bool), np.ones((10, 11), np.float32), intrinsics)
    with pytest.raises(ValueError, match="camera matrix"):
        Intrinsics.from_k([0.0] * 9)
    assert locate(np.zeros((48, 64), bool), np.ones((48, 64), np.float32), intrinsics) is None
    nothing = np.zeros((48, 64), np.float32)  # no depth reading at all
    mask = np.zeros((48, 64), bool)
    mask[10:30, 20:30] = True
    assert fit_plane(nothing, intrinsics) is None and locate(mask, nothing, intrinsics) is None
