"""Grids, smooth random fields and implicit shapes of the phantoms."""

import numpy as np
import pytest

from versemi.data.phantoms.geometry import N_CODES, Grid, rotation, smooth_fields, uniform
from versemi.data.registry import STRUCTURES


def test_smooth_fields_have_unit_variance_and_are_smooth():
    rng = np.random.default_rng(0)
    axes = [np.arange(24, dtype=np.float32) - 11.5] * 3
    f = smooth_fields(rng, axes, corr=6.0, n=16)
    assert f.shape == (16, 24, 24, 24) and f.dtype == np.float32
    assert 0.7 < float(f.var()) < 1.3 and abs(float(f.mean())) < 0.3
    neighbours = np.corrcoef(f[:, :-1].ravel(), f[:, 1:].ravel())[0, 1]
    assert neighbours > 0.9  # 1 mm apart with a 6 mm correlation length
    again = smooth_fields(np.random.default_rng(0), axes, corr=6.0, n=16)
    assert np.array_equal(f, again)


def test_rotation_is_proper_and_turns_x_into_y():
    r = rotation(rx=12.0, ry=-30.0, rz=75.0)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(rotation(rz=90.0) @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)


def test_undeformed_grid_and_implicit_shapes():
    g = Grid(np.random.default_rng(1), (41, 41, 41), (1.0, 1.0, 1.0), deform_mm=0.0)
    assert g.extent == [(-20.0, 20.0)] * 3
    np.testing.assert_array_equal(g.X[:, 0, 0], np.arange(-20, 21, dtype=np.float32))
    e = g.ellipsoid((0.0, 0.0, 0.0), (12.0, 8.0, 6.0))
    assert e[20, 20, 20] == 0 and e[32, 20, 20] == pytest.approx(1.0)
    assert int((e <= 1).sum()) == pytest.approx(4 / 3 * np.pi * 12 * 8 * 6, rel=0.05)
    turned = g.ellipsoid((0.0, 0.0, 0.0), (12.0, 8.0, 6.0), rotation(rz=90.0))
    assert turned[20, 32, 20] == pytest.approx(1.0)  # the long axis now runs along y
    c = g.cylinder(0.0, 0.0, 10.0, 5.0)
    assert c[30, 20, 0] == pytest.approx(1.0) and c[20, 25, 40] == pytest.approx(1.0)
    d = g.tube([[-15.0, 0.0, 0.0], [0.0, 0.0, 0.0], [15.0, 0.0, 0.0]], [3.0, 3.0, 3.0])
    assert d[20, 20, 20] == pytest.approx(-3.0, abs=0.2) and d[20, 23, 20] == pytest.approx(0.0, abs=0.2)
    assert np.isinf(d[20, 40, 40])  # far from the tube: not evaluated


def test_codes_and_uniform_draws():
    assert N_CODES == max(STRUCTURES.values()) + 1
    rng = np.random.default_rng(2)
    draws = [uniform(rng, 3.0, 4.0) for _ in range(50)]
    assert all(isinstance(v, float) and 3.0 <= v < 4.0 for v in draws)
