"""bench/run_speed.py: whole training runs of two commits side by side, and the budget chapter's table of them."""

from __future__ import annotations

import pandas as pd
import pytest

from bench import run_speed
from versemi.cli import parse_overrides
from versemi.companion.budget import run_speed_table
from versemi.config import get_profile
from versemi.utils import VersemiError


def test_both_sides_train_the_same_run_on_the_same_data(smoke_root):
    """Against its own commit the earlier side is the same code: the same config on the same prepared folder
    must give the same model, so both sides' test Dice agree exactly (a side that trained another schedule,
    other data or the other side's code would not)."""
    def worktrees():
        return run_speed.subprocess.check_output(["git", "-C", str(run_speed.ROOT), "worktree", "list"], text=True)

    listed = worktrees()
    df = run_speed.measure(["sup_only:la"], "smoke", "HEAD", repeats=1, threads=1, data_dir=smoke_root / "data",
                           log=lambda *_: None)
    assert df[["run", "side", "repeat"]].values.tolist() == [["sup_only:la", "before", 0], ["sup_only:la", "after", 0]]
    assert (df["wall_s"] > df["train_s"]).all() and (df["train_s"] > 0).all()
    assert {"platform", "torch", "cpus", "commit", "threads", "peak_rss_gb"} <= set(df.columns)
    before, after = df["commit"]
    assert before == after.removesuffix("+dirty")
    if not after.endswith("+dirty"):
        assert df["dice_la"].iloc[0] == df["dice_la"].iloc[1]
    assert worktrees() == listed   # the temporary worktree is gone


def test_both_sides_get_this_checkouts_training_defaults():
    demo = get_profile("demo").train
    got = parse_overrides(run_speed.overrides("demo")[1::2])
    assert got == {k: list(v) if isinstance(v, tuple) else v for k, v in demo.items()}
    assert parse_overrides(run_speed.overrides("demo", steps=7)[1::2])["steps"] == 7


def test_bad_inputs_are_errors_that_say_what():
    with pytest.raises(VersemiError, match="METHOD:DATASETS"):
        run_speed.parse_run("sup_only")
    with pytest.raises(VersemiError, match="no-such-rev"):
        run_speed.add_worktree("no-such-rev", run_speed.ROOT.parent / "never-created")


def test_run_speed_table_folds_repeats_into_medians_and_the_ratio():
    rows = [("versemi:all", side, rep, wall, dice) for rep, (b, a) in enumerate([(30, 10), (33, 12), (36, 11)])
            for side, wall, dice in (("before", b, 0.8), ("after", a, 0.82))]
    df = pd.DataFrame(rows, columns=["run", "side", "repeat", "wall_s", "dice_la"])
    df["commit"] = df["side"].map({"before": "aaa", "after": "bbb"})
    t = run_speed_table(df).iloc[0]
    assert t["before s"] == 33 and t["after s"] == 11 and t["ratio"] == 3 and t["n"] == 3
    assert t["before spread s"] == 6 and t["after spread s"] == 2
    assert t["after Dice %"] == pytest.approx(82.0) and (t["before commit"], t["after commit"]) == ("aaa", "bbb")
