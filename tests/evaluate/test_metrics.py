"""Tests for versemi.evaluate.metrics: medpy-equal case metrics, spacing, empty-mask conventions, LCC."""

from __future__ import annotations

import math

import numpy as np
import pytest
from medpy.metric import binary as mb
from scipy import ndimage

from versemi.evaluate.metrics import case_metrics, largest_component
from versemi.utils import VersemiError


def _random_mask(rng, shape):
    kind = rng.integers(0, 5)
    if kind == 0:  # smoothed-noise blobs of varied size
        m = ndimage.gaussian_filter(rng.normal(size=shape), rng.uniform(1.0, 3.0))
        m = m > np.quantile(m, rng.uniform(0.6, 0.98))
    elif kind == 1:  # ellipsoid, possibly cut by the border
        grid = np.indices(shape).astype(float)
        c = [rng.uniform(-2, s + 2) for s in shape]
        r = [rng.uniform(2, s / 1.5) for s in shape]
        m = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r)) <= 1
    elif kind == 2:  # box touching one or more borders
        m = np.zeros(shape, bool)
        lo = [rng.integers(0, s // 2) * rng.integers(0, 2) for s in shape]
        hi = [rng.integers(lo_ + 1, s + 1) for lo_, s in zip(lo, shape)]
        m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    elif kind == 3:  # a few scattered voxels (tiny objects)
        m = np.zeros(shape, bool)
        k = int(rng.integers(1, 6))
        idx = tuple(rng.integers(0, s, size=k) for s in shape)
        m[idx] = True
    else:  # thin sheet (anisotropic object)
        m = np.zeros(shape, bool)
        ax = rng.integers(0, 3)
        sl = [slice(None)] * 3
        p = rng.integers(0, shape[ax])
        sl[ax] = slice(p, p + rng.integers(1, 3))
        m[tuple(sl)] = True
        m &= ndimage.gaussian_filter(rng.normal(size=shape), 2) > 0
    if not m.any():
        m[tuple(rng.integers(0, s) for s in shape)] = True
    return m


def test_case_metrics_equal_medpy_on_random_cases():
    rng = np.random.default_rng(2024)
    n_checked = 0
    for i in range(60):
        shape = tuple(int(s) for s in rng.integers(12, 34, size=3))
        gt = _random_mask(rng, shape)
        if rng.random() < 0.4:  # a prediction that overlaps the truth: perturbed copy
            pred = ndimage.binary_dilation(gt, iterations=int(rng.integers(0, 3))) ^ (rng.random(shape) < 0.02)
            if not pred.any():
                pred = gt.copy()
        else:
            pred = _random_mask(rng, shape)
        spacing = None
        if i % 3 == 1:
            spacing = tuple(float(s) for s in rng.uniform(0.4, 3.0, size=3))
        elif i % 3 == 2:
            spacing = (0.625, 0.625, 2.5)
        m = case_metrics(pred, gt, spacing)
        assert not m["empty_pred"] and not m["empty_gt"]
        assert m["dice"] == pytest.approx(mb.dc(pred, gt), abs=1e-12)
        assert m["jaccard"] == pytest.approx(mb.jc(pred, gt), abs=1e-12)
        assert m["hd95"] == pytest.approx(mb.hd95(pred, gt, voxelspacing=spacing), abs=1e-6)
        assert m["asd"] == pytest.approx(mb.asd(pred, gt, voxelspacing=spacing), abs=1e-6)
        n_checked += 1
    assert n_checked >= 50


def test_case_metrics_spacing_is_in_mm():
    gt = np.zeros((30, 30, 30), bool)
    gt[10:20, 10:20, 10:20] = True
    pred = np.roll(gt, 3, axis=2)  # shifted 3 voxels along the last axis
    vox = case_metrics(pred, gt)
    mm = case_metrics(pred, gt, spacing=(1.0, 1.0, 2.0))
    assert vox["hd95"] == pytest.approx(3.0)
    assert mm["hd95"] == pytest.approx(6.0)
    assert mm["dice"] == vox["dice"] == pytest.approx(2 * 7 / 20)
    assert mm["asd"] == pytest.approx(mb.asd(pred, gt, voxelspacing=(1.0, 1.0, 2.0)))
    with pytest.raises(VersemiError, match="spacing"):
        case_metrics(pred, gt, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(VersemiError, match="shape"):
        case_metrics(pred[:-1], gt)


def test_empty_conventions_are_flagged():
    gt = np.zeros((20, 20, 20), bool)
    gt[5:9, 5:9, 5:9] = True
    empty = np.zeros_like(gt)
    m = case_metrics(empty, gt)
    assert m == {"dice": 0.0, "jaccard": 0.0, "hd95": 0.0, "asd": 0.0, "empty_pred": True, "empty_gt": False}
    m = case_metrics(gt, empty)
    assert m["dice"] == 0.0 and m["jaccard"] == 0.0 and math.isnan(m["hd95"]) and math.isnan(m["asd"])
    assert m["empty_gt"] and not m["empty_pred"]
    m = case_metrics(empty, empty)
    assert m == {"dice": 0.0, "jaccard": 0.0, "hd95": 0.0, "asd": 0.0, "empty_pred": True, "empty_gt": True}


def test_largest_component_full_connectivity():
    m = np.zeros((10, 10, 10), np.uint8)
    m[1:4, 1:4, 1:4] = 1          # 27 voxels
    m[4, 4, 4] = 1                # touches the cube only by a corner: same component with 26-connectivity
    m[7:9, 7:9, 7:9] = 1          # 8 voxels, separate
    out = largest_component(m)
    assert out.dtype == m.dtype
    assert out.sum() == 28 and out[4, 4, 4] == 1 and out[8, 8, 8] == 0
    assert largest_component(np.zeros((5, 5, 5), bool)).sum() == 0
