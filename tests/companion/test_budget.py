"""The budget chapter's readers of the committed benchmark CSVs."""

import math

import pandas as pd
import pytest

from versemi.companion import budget as B
from versemi.utils import VersemiError


def speed_csv(tmp_path):
    pd.DataFrame({"what": ["VerSemi stage1 step", "VerSemi stage2 step"], "config": ["f=8 patch=32^3 b", "f=8 patch=32^3 b"],
                  "reference": ["x", "x"], "reference_s": [2.0, 6.0], "ours_s": [1.0, 2.0], "speedup": [2.0, 3.0],
                  "platform": ["Linux-y", "Linux-y"], "torch": ["2.13.0+cpu"] * 2, "cpus": [2, 2], "cuda": [None, None]}
                 ).to_csv(tmp_path / "train_speed.csv", index=False)


def test_read_bench_and_tables(tmp_path):
    assert B.read_bench(tmp_path, "train") is None
    speed_csv(tmp_path)
    df = B.read_bench(tmp_path, "train")
    t = B.train_speed_table(df)
    assert t["ratio"].tolist() == [2.0, 3.0] and "ours s/step" in t
    assert B.machine_of(df) == "Linux-y, torch 2.13.0+cpu, 2 CPUs"
    assert B.ratio_of(df, "VerSemi stage2 step", "f=8") == 3.0
    assert math.isnan(B.ratio_of(df, "VerSemi stage2 step", "f=16"))
    with pytest.raises(VersemiError, match="unknown benchmark"):
        B.read_bench(tmp_path, "gpu")
