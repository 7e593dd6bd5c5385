"""bench.flops: counted FLOPs of a step and a window, and their fraction of the attainable rate."""

import pandas as pd
import torch

from bench.flops import count_flops, flops_table, main


def test_the_counter_gives_a_convolutions_textbook_flops():
    x = torch.randn(2, 4, 8, 8, 8)
    conv = torch.nn.Conv3d(4, 6, 3, padding=1, bias=False)
    with torch.no_grad():
        assert count_flops(lambda: conv(x)) == 2 * 4 * 6 * 27 * 2 * 8 ** 3


def test_a_training_step_counts_forward_and_backward(tmp_path):
    df = flops_table(["smoke"], ["sup_only"], reps=1).set_index("what")
    step, window = df.loc["train_step"], df.loc["inference_window"]
    # smoke: batch 2 of 32^3 training, one 32^3 window at inference: a step is forward + backward (about 3x
    # the forward) of two samples, so well above twice one window
    assert step.gflop > 4 * window.gflop > 0
    assert (df["seconds"] > 0).all() and (df["of_matmul"] > 0).all()
    assert df.loc["attainable_matmul", "of_matmul"] == 1.0
    assert main(["--out", str(tmp_path), "--profiles", "smoke", "--methods", "sup_only", "--quick"]) == 0
    saved = pd.read_csv(tmp_path / "flops.csv")
    assert {"attainable_conv3d", "train_step", "inference_window"} <= set(saved["what"]) and "torch" in saved.columns
