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


def test_fastest_protocol_within_the_dice_tolerance():
    df = pd.DataFrame({"what": ["paper_eager", "paper_compiled", "fast_eager_overlap0.25", "whole_eager"],
                       "seconds": [10.0, 5.0, 2.0, 1.0], "ratio": [1.0, 2.0, 5.0, 10.0], "compile_s": [0, 30, 0, 0],
                       "dice": [90.0, 90.0, 89.8, 89.0], "delta_dice": [0.0, 0.0, -0.2, -1.0],
                       "max_abs_delta_dice": [0.0, 0.0, 0.6, 3.0], "label_fraction_differing": [0, 0, 0.01, 0.02],
                       "windows": [24.0, 24.0, 8.0, 3.3]})
    best = B.fastest_within(df)
    assert best["what"] == "fast_eager_overlap0.25"          # whole is faster but 1 point off on average
    assert B.fastest_within(df, tolerance=1.0)["what"] == "whole_eager"
    assert B.fastest_within(df, tolerance=-1) is None
    t = B.protocols_table(df)
    assert list(t.columns)[:3] == ["what", "seconds", "ratio"] and "mean ΔDice" in t and "max |ΔDice|" in t


def test_memory_table_compares_equal_batches_only():
    df = pd.DataFrame({"side": ["ours (VerSemi.train_step)", "released call pattern"] * 2,
                       "stage": ["stage1", "stage1", "stage2", "stage2"], "config": ["f=16 patch=96^3"] * 4,
                       "batch": ["8+8", "8+8", "8+8", "4+4"], "peak_rss_gb": [6.0, 15.0, 8.0, 14.0],
                       "peak_above_start_gb": [5.0, 14.0, 7.0, 13.0], "step_s": [20.0, 60.0, 30.0, 50.0]})
    ck = pd.DataFrame({"side": ["ours (VerSemi.train_step), activation checkpointing"], "stage": ["stage1"],
                       "config": ["f=16 patch=96^3"], "batch": ["8+8"], "peak_rss_gb": [4.0],
                       "peak_above_start_gb": [3.5], "step_s": [25.0]})
    t = B.memory_table(pd.concat([df, ck], ignore_index=True))
    frac, slow = t["ours / released (peak above start)"], t["s/step / ours"]
    assert abs(frac.iloc[0] - 5 / 14) < 1e-12 and frac.iloc[1] == 1.0 and abs(frac.iloc[4] - 3.5 / 14) < 1e-12
    assert math.isnan(frac.iloc[2]) and frac.iloc[3] == 1.0   # stage 2 ran at different batches: no ratio for ours
    assert slow.iloc[0] == 1.0 and slow.iloc[1] == 3.0 and slow.iloc[4] == 1.25 and slow.iloc[3:4].isna().all()
    killed = pd.concat([df, df.iloc[[3]].assign(batch="8+8", status="killed by signal 9 (out of memory?)")])
    killed["status"] = killed["status"].fillna("ran")
    t = B.memory_table(killed)
    frac = t["ours / released (peak above start)"]   # a killed released 8+8 is no reference
    assert math.isnan(frac.iloc[2]) and math.isnan(frac.iloc[4]) and "status" in t


def test_memory_table_takes_medians_over_repeated_processes():
    one = {"side": "ours (VerSemi.train_step)", "stage": "stage1", "config": "c", "batch": "8+8", "status": "ran"}
    ref = {**one, "side": "released call pattern"}
    df = pd.DataFrame([{**one, "peak_rss_gb": p + 1, "peak_above_start_gb": p, "step_s": s}
                       for p, s in [(5.0, 20.0), (6.0, 22.0), (9.0, 21.0)]]
                      + [{**ref, "peak_rss_gb": p + 1, "peak_above_start_gb": p, "step_s": 60.0} for p in (12.0, 14.0)])
    t = B.memory_table(df)
    assert len(t) == 2 and list(t["n"]) == [3, 2]
    assert t["peak above start GB"].iloc[0] == 6.0 and t["s/step"].iloc[0] == 21.0
    assert t["peak spread GB"].iloc[0] == 4.0 and t["peak spread GB"].iloc[1] == 2.0
    assert t["ours / released (peak above start)"].iloc[0] == 6.0 / 13.0
