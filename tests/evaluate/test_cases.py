"""Tests for versemi.evaluate.cases: the per-case CSV (and its summary), LCC and mm options."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from versemi.evaluate.cases import evaluate_cases
from versemi.evaluate.inference import sliding_window_predict
from versemi.evaluate.metrics import CSV_COLUMNS, case_metrics, largest_component, summarize
from versemi.utils import VersemiError

from .helpers import PATCH, STRIDE, reference_predict, volume


def test_evaluate_cases_writes_csv(net, tmp_path):
    cases = []
    for k, shape in enumerate([(40, 36, 33), (40, 21, 33)]):
        img = volume(shape, seed=10 + k)
        ref_lab, _ = reference_predict(net, img, 2, PATCH, STRIDE[0], STRIDE[2])
        label = np.zeros(shape, np.uint8)
        label[5:25, 5:18, 4:30] = 1
        cases.append((f"case{k}", img, label, (1.0, 1.0, 2.5)))
    cases.append(("blank", volume((40, 36, 33), seed=12), np.zeros((40, 36, 33), np.uint8), None))
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
    img = volume((40, 36, 33), seed=20)
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


def test_package_reexports_the_public_api():
    import versemi.evaluate as ev
    from versemi.evaluate import cases, inference, metrics

    assert ev.sliding_window_predict is inference.sliding_window_predict
    assert ev.window_starts is inference.window_starts and ev.PROTOCOLS == ("paper", "fast", "whole")
    assert ev.check_patch is inference.check_patch and ev.net_device is inference.net_device
    assert ev.case_metrics is metrics.case_metrics and ev.summarize is metrics.summarize
    assert ev.largest_component is metrics.largest_component
    assert ev.METRICS == ("dice", "jaccard", "hd95", "asd") and ev.CSV_COLUMNS is metrics.CSV_COLUMNS
    assert ev.evaluate_cases is cases.evaluate_cases
    assert sorted(ev.__all__) == sorted(n for n in ev.__all__ if hasattr(ev, n))
