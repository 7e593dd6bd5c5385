"""bench/train_speed.py and bench/allocator.py on a tiny network: the rows are written and the step is ours."""

from __future__ import annotations

import pandas as pd
import pytest

from bench import allocator as allocator_bench
from bench import train_speed
from versemi import allocator


def test_train_speed_writes_both_stages_with_the_machine(tmp_path):
    assert train_speed.main(["--out", str(tmp_path), "--configs", "4,32,2", "--reps", "1"]) in (0, None)
    df = pd.read_csv(tmp_path / "train_speed.csv")
    assert df["what"].tolist() == ["VerSemi stage1 step", "VerSemi stage2 step"]
    assert (df["ours_s"] > 0).all() and (df["reference_s"] > 0).all()
    assert (df["speedup"] - df["reference_s"] / df["ours_s"]).abs().max() < 1e-9
    assert {"platform", "torch", "cpus"} <= set(df.columns)
    # the ratio's two factors: the released call pattern costs more FLOPs (one full forward per prompt), the
    # more so in stage 2 (7 forwards against our 3 backbone passes); efficiency is the rest of the ratio
    assert (df["flop_ratio"] > 1.2).all() and df["flop_ratio"].iloc[1] > df["flop_ratio"].iloc[0]
    assert (df["efficiency_ratio"] * df["flop_ratio"] - df["speedup"]).abs().max() < 1e-9
    # and it computes the same: losses and gradients of our pass-by-pass step equal the released call pattern's
    assert (df["loss_abs_diff"] < 1e-5).all() and (df["grad_rel_diff"] < 1e-4).all(), df


@pytest.mark.skipif(not allocator.is_glibc(), reason="glibc only")
def test_allocator_bench_compares_both_modes_in_their_own_processes(tmp_path):
    assert allocator_bench.main(["--out", str(tmp_path), "--configs", "4,32,2", "--reps", "1"]) == 0
    df = pd.read_csv(tmp_path / "allocator.csv")
    assert df["allocator"].tolist() == ["system", "system", "keep", "keep"]
    system = df[df["allocator"] == "system"]
    assert (system["ours_gain_vs_system"] == 1).all()
    # keeping the memory means fewer pages faulted in by the child (each child imports torch the same way)
    faults = df.groupby("allocator")["child_minor_faults"].first()
    assert faults["keep"] < faults["system"]


def test_bf16_rows_on_a_cpu_take_the_reference_kernels_and_fp32_rows_keep_onednn(monkeypatch):
    import torch

    seen = []
    monkeypatch.setattr(train_speed, "_bench", lambda *a: seen.append(torch.backends.mkldnn.enabled) or [])
    before = torch.backends.mkldnn.enabled
    train_speed.bench(4, 32, 2, 1, None, torch.device("cpu"), amp=True)
    train_speed.bench(4, 32, 2, 1, None, torch.device("cpu"), amp=False)
    assert seen == [False, before] and torch.backends.mkldnn.enabled == before
    # restored after a failing step too
    monkeypatch.setattr(train_speed, "_bench", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        train_speed.bench(4, 32, 2, 1, None, torch.device("cpu"), amp=True)
    assert torch.backends.mkldnn.enabled == before
