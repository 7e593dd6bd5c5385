"""Body wall, spine and CT finish shared by the phantom builders."""

import numpy as np
import pytest

from versemi.data.phantoms.geometry import Grid
from versemi.data.phantoms.trunk import body_wall, ct_tissue_table, ct_torso, finish_ct, spine
from versemi.data.registry import STRUCTURES as S


def _grid():
    return Grid(np.random.default_rng(0), (64, 56, 12), (6.0, 6.0, 6.0), deform_mm=0.0)


def test_body_wall_layers_from_outside_in():
    g = _grid()
    labels = np.zeros(g.shape, np.uint8)
    cavity, (ca, cb), fat_mm, wall_mm, p = body_wall(np.random.default_rng(1), g, labels, 170.0, 130.0, 0.0, 0.0)
    assert ca == pytest.approx(170.0 - fat_mm - wall_mm) and cb == pytest.approx(130.0 - fat_mm - wall_mm)
    assert 8 <= fat_mm <= 32 and 7 <= wall_mm <= 14 and 2.1 <= p <= 2.6
    row = labels[:, 28, 6]  # a line through the centre along x: air, fat, muscle, inside, muscle, fat, air
    assert row[0] == S["background"] and row[32] == S["body"] and cavity[32, 28, 6]
    outer = [v for i, v in enumerate(row) if i == 0 or v != row[i - 1]]
    assert outer[:4] == [S["background"], S["fat"], S["muscle"], S["body"]]
    assert not (cavity & (labels == S["muscle"])).any()


def test_spine_paints_bone_around_the_canal_and_a_bright_cortex():
    g = _grid()
    labels = np.full(g.shape, S["body"], np.uint8)
    hu_extra = np.zeros(g.shape, np.float32)
    ycan, canal_r = spine(np.random.default_rng(2), g, labels, hu_extra, 0.0, 40.0, 18.0)
    assert 6 <= canal_r <= 9 and ycan > 40.0 + 18.0
    canal = labels == S["spinal_canal"]
    assert canal.any() and (labels == S["bone"]).sum() > canal.sum()
    assert (hu_extra > 0).any() and (labels[hu_extra > 0] == S["bone"]).all()


def test_finish_ct_blurs_adds_noise_and_clips():
    g = _grid()
    hu = np.full(g.shape, 4000.0, np.float32)
    hu[:, :, :6] = -2000.0
    out, sd = finish_ct(np.random.default_rng(3), g, None, hu)
    assert 10 <= sd <= 20 and out.dtype == np.float32
    assert out.min() >= -1024 and out.max() <= 3071


def test_ct_torso_stays_in_the_field_of_view_and_paints_the_wall():
    t = ct_torso(np.random.default_rng(4), (40, 40, 20), (7.5, 7.5, 7.0), deform_mm=(4, 9), a_mm=(135, 175),
                 b_ratio=(0.62, 0.78), y0_mm=(-12, 12))
    fov = 39 * 7.5
    assert t.a <= 0.47 * fov and t.b <= 0.45 * fov and t.b <= t.a
    assert -10 <= t.x0 <= 10 and -12 <= t.y0 <= 12 and -15 <= t.zc <= 15
    assert t.labels.shape == t.hu_extra.shape == t.cavity.shape == (40, 40, 20) and not t.hu_extra.any()
    assert t.ca == pytest.approx(t.a - t.fat_mm - t.wall_mm) and t.cavity.any()
    assert {S["fat"], S["muscle"]} <= set(np.unique(t.labels).tolist())


def test_ct_tissue_table_ranges():
    lut = ct_tissue_table(np.random.default_rng(5), fat_hu=(-115, -85), bone_hu=(250, 450))
    assert lut.shape == (max(S.values()) + 1,) and lut.dtype == np.float32
    assert lut[S["background"]] == -1000 and -115 <= lut[S["fat"]] <= -85 and 250 <= lut[S["bone"]] <= 450
    assert 60 <= lut[S["body"]] <= 90 and 35 <= lut[S["muscle"]] <= 50 and 5 <= lut[S["spinal_canal"]] <= 25
    assert lut[S["liver"]] == 0  # organ values are each builder's
