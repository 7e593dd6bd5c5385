"""Tests for versemi.evaluate: sliding-window protocols, medpy-equal metrics, LCC, per-case CSV."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from medpy.metric import binary as mb
from scipy import ndimage
from torch.nn import functional as F

from versemi.evaluate import (
    CSV_COLUMNS,
    case_metrics,
    evaluate_cases,
    largest_component,
    sliding_window_predict,
    summarize,
    window_starts,
)
from versemi.model import VerSemiNet
from versemi.utils import VersemiError

PATCH = (32, 32, 32)
STRIDE = (8, 8, 4)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    n = VerSemiNet(n_filters=4)
    # non-trivial BatchNorm statistics so eval mode is visibly different from train mode
    with torch.no_grad():
        for m in n.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return n


def _volume(shape, seed=0):
    rng = np.random.default_rng(seed)
    v = ndimage.gaussian_filter(rng.normal(size=shape), 2.0) * 5
    return v.astype(np.float32)


def reference_predict(net, image, task_id, patch, stride_xy, stride_z):
    """One window at a time, numpy accumulation: the authors' test_single_case, written for the test."""
    w, h, d = image.shape
    pads = [max(p - s, 0) for p, s in zip(patch, image.shape)]
    lr = [(p // 2, p - p // 2) for p in pads]
    img = np.pad(image, lr, mode="constant") if any(pads) else image
    ww, hh, dd = img.shape
    nx = math.ceil((ww - patch[0]) / stride_xy) + 1
    ny = math.ceil((hh - patch[1]) / stride_xy) + 1
    nz = math.ceil((dd - patch[2]) / stride_z) + 1
    score = np.zeros((2,) + img.shape, np.float32)
    cnt = np.zeros(img.shape, np.float32)
    was_training = net.training
    net.eval()
    with torch.no_grad():
        for ix in range(nx):
            xs = min(stride_xy * ix, ww - patch[0])
            for iy in range(ny):
                ys = min(stride_xy * iy, hh - patch[1])
                for iz in range(nz):
                    zs = min(stride_z * iz, dd - patch[2])
                    win = img[xs:xs + patch[0], ys:ys + patch[1], zs:zs + patch[2]]
                    out = net(torch.from_numpy(np.ascontiguousarray(win))[None, None].float(),
                              torch.tensor([int(task_id)]))
                    prob = F.softmax(out, dim=1)[0].numpy()
                    sl = (slice(xs, xs + patch[0]), slice(ys, ys + patch[1]), slice(zs, zs + patch[2]))
                    score[(slice(None),) + sl] = score[(slice(None),) + sl] + prob
                    cnt[sl] = cnt[sl] + 1
    net.train(was_training)
    score = score / cnt[None]
    label = np.argmax(score, axis=0)
    crop = tuple(slice(a, a + n) for (a, _), n in zip(lr, (w, h, d)))
    return label[crop], score[(slice(None),) + crop]


# --------------------------------------------------------------------------------------- inference
def test_window_starts_match_authors_enumeration():
    assert window_starts(40, 32, 8) == [0, 8]
    assert window_starts(33, 32, 4) == [0, 1]
    assert window_starts(32, 32, 4) == [0]
    assert window_starts(112, 96, 16) == [0, 16]
    assert window_starts(100, 96, 16) == [0, 4]


@pytest.mark.parametrize("shape", [(40, 36, 33), (40, 21, 33)])  # the second is padded on axis 1 (5 + 6)
def test_paper_protocol_equals_unbatched_numpy_loop(net, shape):
    img = _volume(shape, seed=1)
    ref_lab, ref_prob = reference_predict(net, img, 2, PATCH, STRIDE[0], STRIDE[2])
    net.train()
    lab1, prob1 = sliding_window_predict(net, img, 2, PATCH, STRIDE, batch_size=1)
    assert net.training and all(m.training for m in net.modules())  # previous mode restored
    net.eval()
    assert lab1.dtype == np.uint8 and lab1.shape == shape
    assert prob1.dtype == np.float32 and prob1.shape == (2,) + shape
    # one window per forward: the same network calls, the same float32 sums in the same order
    np.testing.assert_allclose(prob1, ref_prob, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(lab1, ref_lab)
    assert 0 < ref_lab.sum() < ref_lab.size  # both classes present: the label comparison means something

    lab8, prob8 = sliding_window_predict(net, img, 2, PATCH, STRIDE, batch_size=8)
    np.testing.assert_allclose(prob8, ref_prob, rtol=0, atol=1e-5)
    # batched convolutions round differently (~1e-7); labels must agree wherever the decision is not a tie
    decided = np.abs(ref_prob[1] - ref_prob[0]) > 1e-4
    np.testing.assert_array_equal(lab8[decided], ref_lab[decided])
    assert decided.mean() > 0.99


def test_batch_size_does_not_change_result(net):
    img = _volume((40, 36, 33), seed=2)
    base_lab, base_prob = sliding_window_predict(net, img, 1, PATCH, STRIDE, batch_size=3)
    for bs in (5, 64):
        lab, prob = sliding_window_predict(net, img, 1, PATCH, STRIDE, batch_size=bs)
        np.testing.assert_allclose(prob, base_prob, rtol=0, atol=1e-5)
        decided = np.abs(base_prob[1] - base_prob[0]) > 1e-4
        np.testing.assert_array_equal(lab[decided], base_lab[decided])


def test_compiled_network_gives_the_same_prediction(net):
    """compile=True: same windows and labels as eager, probabilities to float32 rounding; a weight change
    is never served by the old compilation; a short last batch is padded (4 windows, batch 3)."""
    img = _volume((40, 36, 33), seed=4)
    eager_lab, eager_prob = sliding_window_predict(net, img, 2, PATCH, STRIDE, batch_size=3)
    lab, prob = sliding_window_predict(net, img, 2, PATCH, STRIDE, batch_size=3, compile=True)
    np.testing.assert_allclose(prob, eager_prob, rtol=0, atol=1e-5)
    decided = np.abs(eager_prob[1] - eager_prob[0]) > 1e-4
    np.testing.assert_array_equal(lab[decided], eager_lab[decided])
    assert 0 < eager_lab.sum() < eager_lab.size

    # the weights change in place (as an optimizer step would): the frozen compilation must not be reused
    torch.manual_seed(5)
    other = VerSemiNet(n_filters=4)
    with torch.no_grad():
        saved = {k: v.clone() for k, v in net.state_dict().items()}
        net.load_state_dict(other.state_dict())
    try:
        new_eager_lab, new_eager_prob = sliding_window_predict(net, img, 2, PATCH, STRIDE, batch_size=3)
        new_lab, new_prob = sliding_window_predict(net, img, 2, PATCH, STRIDE, batch_size=3, compile=True)
        assert np.abs(new_eager_prob - eager_prob).max() > 1e-3  # the change is visible
        np.testing.assert_allclose(new_prob, new_eager_prob, rtol=0, atol=1e-5)
    finally:
        with torch.no_grad():
            net.load_state_dict(saved)


def test_compile_failure_falls_back_to_eager(net, monkeypatch):
    import versemi.evaluate as ev

    def broken(*args, **kwargs):
        def run(x):
            raise RuntimeError("no C++ compiler found")
        return run

    monkeypatch.setattr(ev, "_compiled_softmax", broken)
    img = _volume((40, 36, 33), seed=6)
    ref_lab, ref_prob = sliding_window_predict(net, img, 1, PATCH, STRIDE, batch_size=2)
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler found.*eagerly"):
        lab, prob = sliding_window_predict(net, img, 1, PATCH, STRIDE, batch_size=2, compile=True)
    np.testing.assert_array_equal(lab, ref_lab)
    np.testing.assert_array_equal(prob, ref_prob)


def test_prompt_list_equals_separate_calls(net):
    img = _volume((40, 21, 33), seed=3)
    tasks = [1, 2, 5]
    labs, probs = sliding_window_predict(net, img, tasks, PATCH, STRIDE, batch_size=4)
    assert isinstance(labs, list) and len(labs) == len(probs) == 3
    for t, lab, prob in zip(tasks, labs, probs):
        lab1, prob1 = sliding_window_predict(net, img, t, PATCH, STRIDE, batch_size=4)
        np.testing.assert_allclose(prob, prob1, rtol=0, atol=1e-6)
        decided = np.abs(prob1[1] - prob1[0]) > 1e-4
        np.testing.assert_array_equal(lab[decided], lab1[decided])
    assert not np.allclose(probs[0], probs[2])  # prompts matter


def test_fast_protocol_shapes_and_normalisation(net):
    for shape in [(40, 36, 33), (40, 21, 33)]:
        img = _volume(shape, seed=4)
        lab, prob = sliding_window_predict(net, img, 2, PATCH, protocol="fast", batch_size=4, overlap=0.5)
        assert lab.shape == shape and lab.dtype == np.uint8
        assert prob.shape == (2,) + shape and prob.dtype == np.float32
        np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-5)
        np.testing.assert_array_equal(lab, np.argmax(prob, 0))
        labs, probs = sliding_window_predict(net, img, [2, 5], PATCH, protocol="fast", batch_size=4)
        np.testing.assert_allclose(probs[0], prob, atol=1e-6)


def test_paper_probs_sum_to_one_and_labels_are_argmax(net):
    img = _volume((40, 36, 33), seed=5)
    lab, prob = sliding_window_predict(net, img, 3, PATCH, STRIDE)
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(lab, np.argmax(prob, 0))


def test_input_validation(net):
    img = _volume((40, 36, 33))
    with pytest.raises(VersemiError, match="divisible by 16"):
        sliding_window_predict(net, img, 2, (40, 32, 32), STRIDE)
    with pytest.raises(VersemiError, match="divisible by 16"):
        sliding_window_predict(net, img, 2, (16, 32, 32), STRIDE)
    with pytest.raises(VersemiError, match="3-D"):
        sliding_window_predict(net, img[0], 2, PATCH, STRIDE)
    bad = img.copy()
    bad[3, 4, 5] = np.nan
    with pytest.raises(VersemiError, match="case_7.*non-finite"):
        sliding_window_predict(net, bad, 2, PATCH, STRIDE, name="case_7")
    with pytest.raises(VersemiError, match="protocol"):
        sliding_window_predict(net, img, 2, PATCH, STRIDE, protocol="nnunet")
    with pytest.raises(VersemiError, match="task ids"):
        sliding_window_predict(net, img, 9, PATCH, STRIDE)
    with pytest.raises(VersemiError, match="stride"):
        sliding_window_predict(net, img, 2, PATCH, (8, 0, 4))
    with pytest.raises(VersemiError, match="batch_size"):
        sliding_window_predict(net, img, 2, PATCH, STRIDE, batch_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(VersemiError, match="CUDA"):
            sliding_window_predict(net, img, 2, PATCH, STRIDE, amp="bf16")


# --------------------------------------------------------------------------------------- metrics
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


# --------------------------------------------------------------------------------------- per-case CSV
def test_evaluate_cases_writes_csv(net, tmp_path):
    cases = []
    for k, shape in enumerate([(40, 36, 33), (40, 21, 33)]):
        img = _volume(shape, seed=10 + k)
        ref_lab, _ = reference_predict(net, img, 2, PATCH, STRIDE[0], STRIDE[2])
        label = np.zeros(shape, np.uint8)
        label[5:25, 5:18, 4:30] = 1
        cases.append((f"case{k}", img, label, (1.0, 1.0, 2.5)))
    cases.append(("blank", _volume((40, 36, 33), seed=12), np.zeros((40, 36, 33), np.uint8), None))
    out = tmp_path / "sub" / "metrics.csv"
    df = evaluate_cases(net, iter(cases), 2, out, PATCH, STRIDE, "paper", progress=False)
    assert out.is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["metrics.csv"]  # no temp file left
    back = pd.read_csv(out)
    assert list(back.columns) == list(CSV_COLUMNS) == list(df.columns)
    assert list(back["case"]) == ["case0", "case1", "blank"]
    assert (back["task"] == 2).all() and (back["seconds"] > 0).all()
    # metrics equal case_metrics on the prediction (voxel units by default)
    lab0, _ = sliding_window_predict(net, cases[0][1], 2, PATCH, STRIDE)
    m0 = case_metrics(lab0, cases[0][2] == 1)
    for k in ("dice", "jaccard", "hd95", "asd"):
        assert back.loc[0, k] == pytest.approx(m0[k], rel=1e-9, abs=1e-12)
    assert back.loc[0, "n_gt_voxels"] == 20 * 13 * 26
    assert back.loc[0, "n_pred_voxels"] == int(lab0.sum())
    assert bool(back.loc[2, "empty_gt"]) and back.loc[2, "n_gt_voxels"] == 0

    s = summarize(df)
    assert s["n"] == 3 and s["n_empty_gt"] == 1
    assert s["dice_mean"] == pytest.approx(df["dice"].mean())
    assert s["dice_std"] == pytest.approx(np.std(df["dice"].to_numpy(), ddof=0))
    assert s["n_empty_pred"] == int(df["empty_pred"].sum())

    # mismatched label is a user error naming the case; the existing CSV is left intact
    bad = [("broken_case", cases[0][1], cases[0][2][:-1], None)]
    with pytest.raises(VersemiError, match="broken_case"):
        evaluate_cases(net, bad, 2, out, PATCH, STRIDE, "paper", progress=False)
    assert pd.read_csv(out).shape[0] == 3


def test_evaluate_cases_lcc_and_mm(net, tmp_path):
    img = _volume((40, 36, 33), seed=20)
    label = np.zeros(img.shape, np.uint8)
    label[5:25, 5:18, 4:30] = 1
    cases = [("c", img, label, (1.0, 1.0, 2.5))]
    df_mm = evaluate_cases(net, cases, 5, tmp_path / "a.csv", PATCH, STRIDE, "paper", lcc=True,
                           progress=False, in_mm=True)
    lab, _ = sliding_window_predict(net, img, 5, PATCH, STRIDE)
    lcc = largest_component(lab)
    m = case_metrics(lcc, label == 1, (1.0, 1.0, 2.5))
    assert df_mm.loc[0, "n_pred_voxels"] == int(lcc.sum())
    assert df_mm.loc[0, "hd95"] == pytest.approx(m["hd95"])
    with pytest.raises(VersemiError, match="spacing"):
        evaluate_cases(net, [("c", img, label, None)], 5, tmp_path / "b.csv", PATCH, STRIDE, "paper",
                       progress=False, in_mm=True)
