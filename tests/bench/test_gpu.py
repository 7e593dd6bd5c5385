"""bench/gpu.py in its CPU dry-run mode: the rows the GPU call writes, on a tiny network."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from bench import gpu
from versemi.utils import VersemiError


def test_dry_run_writes_training_and_evaluation_rows_with_the_device(tmp_path):
    assert gpu.main(["--out", str(tmp_path), "--dry-run"]) == 0
    train = pd.read_csv(tmp_path / "train_speed_dryrun.csv")
    assert set(train["precision"]) == {"fp32", "bf16 autocast"} and len(train) == 4
    assert (train["ours_s"] > 0).all() and train["device"].str.startswith("cpu").all()
    ev = pd.read_csv(tmp_path / "eval_speed_dryrun.csv")
    assert {"paper_eager", "paper_compiled_steady", "fast_eager_overlap0.5"} <= set(ev["what"])
    assert (ev["bench_total_s"] > 0).all()
    res = pd.read_csv(tmp_path / "method_resources_dryrun.csv")
    assert list(res["method"]) == ["sup_only", "versemi"] and (res["gflop_step"] > 0).all()
    assert not (tmp_path / "train_speed_cuda.csv").exists() and not (tmp_path / "method_resources.csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real thing")
def test_without_cuda_the_real_run_says_how_to_dry_run(tmp_path):
    with pytest.raises(VersemiError, match="--dry-run"):
        gpu.main(["--out", str(tmp_path)])
