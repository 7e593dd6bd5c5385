"""bench.method_resources: each method's peak memory, step time and FLOPs, each in a process of its own."""

import pandas as pd
import pytest

from bench.method_resources import main, method_resources
from versemi.utils import VersemiError


def test_each_method_is_measured_in_its_own_process_and_saved(tmp_path):
    assert main(["--out", str(tmp_path), "--profile", "smoke", "--methods", "sup_only", "versemi"]) == 0
    df = pd.read_csv(tmp_path / "method_resources.csv").set_index("method")
    assert list(df.index) == ["sup_only", "versemi"] and (df["profile"] == "smoke").all()
    assert (df["peak_gb"] > 0).all() and (df["step_s"] > 0).all() and (df["device"] == "cpu").all()
    # a VerSemi step runs the network on labeled + unlabeled + synthetic batches: more work than Sup-only's
    assert df.loc["versemi", "gflop_step"] > 1.5 * df.loc["sup_only", "gflop_step"]
    assert df.loc["versemi", "unlabeled_batch"] > 0 and df.loc["sup_only", "unlabeled_batch"] == 0
    # a bigger configuration counts proportionally more operations (the count is of the step, not a constant)
    wide = method_resources("smoke", ["sup_only"], overrides={"batch_size": 4}).iloc[0]
    assert wide["gflop_step"] == pytest.approx(2 * df.loc["sup_only", "gflop_step"], rel=0.05)


def test_a_failing_method_names_itself():
    with pytest.raises(VersemiError, match="no_such_method"):
        method_resources("smoke", ["no_such_method"])


def test_measuring_a_few_methods_keeps_the_others_and_a_failure_is_reported_after_the_rest(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--profile", "smoke", "--methods", "sup_only"]) == 0
    first = pd.read_csv(tmp_path / "method_resources.csv")
    assert main(["--out", str(tmp_path), "--profile", "smoke", "--methods", "no_such_method", "mean_teacher"]) == 1
    df = pd.read_csv(tmp_path / "method_resources.csv").set_index("method")
    assert set(df.index) == {"sup_only", "mean_teacher"}            # kept, and the one measured after the failure
    assert df.loc["sup_only", "step_s"] == pytest.approx(first.set_index("method").loc["sup_only", "step_s"])
    assert "no_such_method" in capsys.readouterr().err
