"""bench/memory.py: each side's step in its own process, with its peak memory (a tiny configuration)."""

from __future__ import annotations

from bench import memory


def test_each_side_in_its_own_process_and_ours_keeps_one_pass_alive():
    ours = memory.measure("ours", "stage2", 4, 32, 2, 1, 1, None)
    ref = memory.measure("authors", "stage2", 4, 32, 2, 1, 1, None)
    for row in (ours, ref):
        assert row["status"] == "ran" and row["peak_rss_gb"] > row["peak_above_start_gb"] >= 0 and row["step_s"] > 0
        assert row["batch"] == "2+2" and row["stage"] == "stage2"
    assert ours["side"].startswith("ours") and ref["side"] == "released call pattern"
    ckpt = memory.measure("ours-ckpt", "stage1", 4, 32, 2, 1, 1, None)
    assert ckpt["status"] == "ran" and ckpt["side"].endswith("activation checkpointing") and ckpt["step_s"] > 0
    # seven full forwards in one graph against one backbone pass at a time
    assert ours["peak_rss_gb"] < ref["peak_rss_gb"]
