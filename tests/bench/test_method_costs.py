"""bench.method_costs: every method's networks, parameters and one timed training step, side by side."""

import pandas as pd

from bench.method_costs import main, method_costs


def test_method_costs_time_each_method_against_sup_only(tmp_path):
    df = method_costs("smoke", ["sup_only", "uamt", "caussl"], reps=1)
    assert list(df["method"]) == ["sup_only", "uamt", "caussl"]
    assert (df["step_ms"] > 0).all() and df.loc[df["method"] == "sup_only", "step_vs_sup_only"].item() == 1.0
    caussl = df.set_index("method").loc["caussl"]
    assert caussl.params_trained > caussl.params_eval   # its linear maps are trained too
    uamt = df.set_index("method").loc["uamt"]
    assert uamt.params_all == 2 * uamt.params_eval and uamt.params_trained == uamt.params_eval   # EMA teacher
    assert main(["--out", str(tmp_path), "--profiles", "smoke", "--methods", "sup_only", "dtc", "--quick"]) == 0
    saved = pd.read_csv(tmp_path / "method_costs.csv")
    assert set(saved["method"]) == {"sup_only", "dtc"} and "torch" in saved.columns
