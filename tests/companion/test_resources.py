"""versemi.companion.resources: the paper sweep's resources and cost in the reproducibility chapter."""

import pandas as pd
import pytest

from versemi.companion import resources as R
from versemi.methods import method_names
from versemi.studies import SEEDS
from versemi.utils import VersemiError


def _line(method, step_s, gflop, device="cpu", peak=1.0, steps=10):
    return {"profile": "paper", "method": method, "row": method, "batch": 2, "unlabeled_batch": 2,
            "patch": "96x96x96", "n_filters": 16, "steps": steps, "params_all": 1, "peak_gb": peak,
            "memory": "x", "step_s": step_s, "gflop_step": gflop, "device": device, "threads": 2,
            "platform": "p", "cpus": 2, "cuda": "NVIDIA Test" if device == "cuda" else None}


def test_the_chapter_shows_the_committed_measurement():
    text = R.PAGE.read_text()
    body = text.split(R.BEGIN, 1)[1].split(R.END, 1)[0]
    assert body.strip() == R.resources_markdown().strip(), "run `python -m versemi.companion.resources`"


def test_every_method_of_the_sweep_is_measured():
    res = R.load_resources()
    assert set(res["method"]) <= set(method_names())   # no line of a method that is gone
    runs = R.sweep_runs()
    assert set(runs["seed"]) == set(SEEDS)
    per_seed = runs.groupby("seed").size()
    assert per_seed.nunique() == 1 and per_seed.iloc[0] == runs["label"].nunique()   # same runs for each seed
    assert set(runs["method"]) <= set(res["method"])
    table = R.sweep_table(runs, res)
    assert table["runs"].sum() == len(runs) and (table["hours"] > 0).all()


def test_sweep_hours_and_flops_are_each_runs_steps_times_its_methods_step():
    res = pd.DataFrame([_line("a", 2.0, 100.0), _line("b", 0.5, 10.0)])
    runs = pd.DataFrame({"seed": [1, 1, 2], "label": ["x", "y", "x"], "method": ["a", "b", "a"],
                         "row": ["a", "b", "a"], "steps": [3600, 7200, 1800]})
    table = R.sweep_table(runs, res).set_index("method")
    assert table.loc["a", "hours"] == pytest.approx((3600 + 1800) * 2.0 / 3600)
    assert table.loc["b", "pflop"] == pytest.approx(7200 * 10.0 / 1e6)
    assert R.sweep_hours(runs, res) == pytest.approx(3.0 + 1.0)
    with pytest.raises(VersemiError, match="'c'"):
        R.sweep_table(pd.concat([runs, runs.assign(method="c")]), res)


def test_a_gpu_measurement_is_preferred_and_reported_in_gpu_hours(tmp_path):
    with pytest.raises(VersemiError, match="bench.method_resources"):
        R.load_resources(tmp_path)
    pd.DataFrame([_line(m, 1.0, 1.0) for m in method_names()]).to_csv(tmp_path / "method_resources.csv")
    assert R.hours_unit(R.load_resources(tmp_path)) == "CPU hours"
    cpu_text = R.resources_markdown(tmp_path)
    assert "CPU hours" in cpu_text and "No GPU has measured" in cpu_text
    pd.DataFrame([_line(m, 0.1, 1.0, "cuda") for m in method_names()]).to_csv(tmp_path / "method_resources_cuda.csv")
    res = R.load_resources(tmp_path)
    assert (res["device"] == "cuda").all() and R.device_text(res) == "GPU (NVIDIA Test)"
    text = R.resources_markdown(tmp_path)
    assert "GPU hours" in text and "No GPU has measured" not in text


def test_update_page_rewrites_only_the_generated_section(tmp_path):
    pd.DataFrame([_line(m, 1.0, 1.0) for m in method_names()]).to_csv(tmp_path / "method_resources.csv")
    page = tmp_path / "page.md"
    page.write_text(f"before\n{R.BEGIN}\nstale\n{R.END}\nafter\n")
    R.update_page(page, tmp_path)
    text = page.read_text()
    assert text.startswith("before\n") and text.endswith(f"{R.END}\nafter\n") and "stale" not in text
    assert R.resources_markdown(tmp_path) in text
    page.write_text("no markers")
    with pytest.raises(VersemiError, match="markers"):
        R.update_page(page, tmp_path)
