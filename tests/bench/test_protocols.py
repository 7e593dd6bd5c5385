"""bench/protocols.py: the evaluation protocols side by side on one network (a tiny one here)."""

from __future__ import annotations

import math

import numpy as np
import torch

from bench import protocols
from versemi.evaluate.inference import window_starts
from versemi.model import VerSemiNet


def _cases():
    rng = np.random.default_rng(0)
    out = []
    for shape in [(45, 40, 33), (36, 50, 40)]:
        label = np.zeros(shape, np.uint8)
        label[10:30, 12:30, 8:25] = 1
        image = (label + 0.5 * rng.normal(size=shape)).astype(np.float32)
        out.append({"image": image, "label": label, "task": 2})
    return out


def test_compare_rows_baseline_and_window_counts():
    torch.manual_seed(0)
    net = VerSemiNet(n_filters=4)
    cases, patch, stride = _cases(), (32, 32, 32), (8, 8, 4)
    df = protocols.compare(net, cases, patch, stride, batch_size=2, repeats=1,
                           names=["fast_eager_overlap0.5", "whole_eager"]).set_index("what")
    assert list(df.index) == ["paper_eager", "fast_eager_overlap0.5", "whole_eager"]
    base = df.loc["paper_eager"]
    assert base["ratio"] == 1.0 and base["delta_dice"] == 0.0 and base["label_fraction_differing"] == 0.0
    assert ((df["dice"] >= 0) & (df["dice"] <= 100)).all() and (df["seconds"] > 0).all()
    assert ((df["label_fraction_differing"] >= 0) & (df["label_fraction_differing"] <= 1)).all()
    assert (df["max_abs_delta_dice"] >= df["delta_dice"].abs() - 1e-12).all()
    # windows: the paper grid of the authors' enumeration; whole: the padded volume in patches
    paper = sum(math.prod(len(window_starts(max(d, p), p, s)) for d, p, s in zip(c["image"].shape, patch, stride))
                for c in cases)
    assert base["windows"] == paper
    assert df.loc["whole_eager", "windows"] == (48 * 48 * 48 + 48 * 64 * 48) / 32 ** 3
    assert df.loc["fast_eager_overlap0.5", "windows"] < paper
