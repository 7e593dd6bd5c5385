"""bench/head_costs.py: the timing of the head variants, on a tiny network."""

from __future__ import annotations

import pandas as pd

from bench import head_costs


def test_head_costs_multi_and_none_are_smaller_than_dynamic():
    costs = head_costs.head_variant_costs(n_filters=2, patch=(32, 32, 32), batch=1, reps=1).set_index("head")
    assert (costs["forward_ms"] > 0).all() and (costs["train_step_ms"] > 0).all()
    assert costs.loc["dynamic", "forward_vs_dynamic_%"] == 0
    assert costs.loc["multi", "params_total"] < costs.loc["dynamic", "params_total"]
    assert set(costs["device"]) == {"cpu"} or costs["device"].iloc[0].startswith("cuda")
    assert (costs["patch"] == "32x32x32").all() and (costs["reps"] == 1).all()


def test_main_writes_the_profile_lines_with_the_machine_and_keeps_the_others(tmp_path):
    old = pd.DataFrame({"profile": ["paper"] * 3, "head": ["dynamic", "multi", "none"], "forward_ms": [1.0] * 3,
                        "train_step_ms": [2.0] * 3})
    old.to_csv(tmp_path / "head_costs.csv", index=False)
    assert head_costs.main(["--out", str(tmp_path), "--profiles", "smoke", "--quick"]) == 0
    df = pd.read_csv(tmp_path / "head_costs.csv")
    assert df["profile"].tolist() == ["paper"] * 3 + ["smoke"] * 3
    smoke = df[df["profile"] == "smoke"]
    assert (smoke["n_filters"] == 4).all() and (smoke["batch"] == 2).all() and (smoke["reps"] == 1).all()
    assert {"platform", "python", "torch", "cpus", "cuda"} <= set(df.columns)
