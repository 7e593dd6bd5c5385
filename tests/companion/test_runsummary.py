"""versemi.companion.runsummary: validation, EMA and test tables of a run folder."""

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from versemi.companion import runsummary as R
from versemi.utils import VersemiError


def _run(tmp_path, name="run", ema=True):
    d = tmp_path / name
    d.mkdir()
    rows = []
    for step in (3, 6):
        for ds in ("pancreas", "la"):
            rows.append({"step": step, "dataset": ds, "dice": 0.1 * step, "model": None})
            if ema:
                rows.append({"step": step, "dataset": ds, "dice": 0.1 * step + 0.05, "model": "ema"})
    pd.DataFrame(rows).to_csv(d / "val.csv", index=False)
    summary = {"n": 2, "dice_mean": 0.5, "dice_std": 0.1, "jaccard_mean": 0.4, "hd95_mean": 3.0, "asd_mean": 1.0,
               "n_empty_pred": 0}
    (d / "DONE.json").write_text(json.dumps({"test": {"pancreas": summary, "la": {**summary, "dice_mean": 0.7}},
                                             "train_seconds": 12.5}))
    return d


def test_val_table_and_ema_vs_student(tmp_path):
    val = R.val_table(_run(tmp_path))
    assert set(val["model"]) == {"student", "ema"} and list(val.columns) == ["step", "dataset", "dice", "model"]
    ema = R.ema_vs_student(val)
    assert list(ema.columns) == ["step", "dataset", "student", "ema", "ema - student"] and len(ema) == 4
    assert np.allclose(ema["ema - student"], 0.05)
    no_teacher = R.ema_vs_student(R.val_table(_run(tmp_path, "plain", ema=False)))
    assert no_teacher.empty and "ema - student" in no_teacher.columns
    ax = R.plot_val_dice(val, title="val")
    styles = {ln.get_label(): ln.get_linestyle() for ln in ax.get_lines()}
    assert styles["pancreas (student)"] == "-" and styles["pancreas (ema)"] == "--"
    assert ax.get_title() == "val"
    plt.close("all")
    with pytest.raises(VersemiError, match="no val.csv"):
        R.val_table(tmp_path / "missing")


def test_test_table_reads_done_json(tmp_path):
    t = R.test_table({"VerSemi 10%": _run(tmp_path)})
    assert list(t["method"]) == ["VerSemi 10%"] * 2 and list(t["dataset"]) == ["pancreas", "la"]
    assert list(t["dice"]) == [0.5, 0.7] and (t["train seconds"] == 12.5).all()
    assert {"dice std", "jaccard", "hd95", "asd", "empty predictions", "n"} <= set(t.columns)
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(VersemiError, match="DONE.json"):
        R.test_table({"x": tmp_path / "unfinished"})


def test_selected_step_is_the_recorded_best_checkpoint(tmp_path):
    d = _run(tmp_path)
    assert R.selected_step(d) is None                       # no best recorded (selection 'last')
    done = json.loads((d / "DONE.json").read_text())
    (d / "DONE.json").write_text(json.dumps({**done, "best": {"score": 0.6, "step": 6}}))
    assert R.selected_step(d) == 6


def test_collapse_table_finds_runs_that_predict_nothing_and_tells_why():
    rows = []
    for seed in (1, 2):
        for i in range(3):
            rows.append({"method": "A", "dataset": "lung", "seed": seed, "case": f"c{i}", "empty_pred": seed == 1})
            rows.append({"method": "B", "dataset": "lung", "seed": seed, "case": f"c{i}", "empty_pred": True})
            rows.append({"method": "B", "dataset": "la", "seed": seed, "case": f"c{i}", "empty_pred": i == 0})
    cases = pd.DataFrame(rows)
    val = pd.DataFrame([
        *[{"method": "A", "seed": 1, "step": s, "dataset": "lung", "dice": 0.0, "model": m}
          for s in (99, 199) for m in (None, "ema")],
        {"method": "B", "seed": 1, "step": 99, "dataset": "lung", "dice": 0.0, "model": None},
        {"method": "B", "seed": 1, "step": 199, "dataset": "lung", "dice": 0.4, "model": None},
    ])
    t = R.collapse_table(cases, val)
    # A collapses in seed 1 only; B in both seeds on lung; nobody on la (one empty case of three is no collapse)
    assert sorted(zip(t["method"], t["seed"])) == [("A", 1), ("B", 1), ("B", 2)] and set(t["dataset"]) == {"lung"}
    a = t[t["method"] == "A"].iloc[0]
    assert a["n_empty"] == a["n_cases"] == 3 and (a["seeds_collapsed"], a["seeds"]) == (1, 2)
    assert a["diagnosis"].startswith("never predicted it") and "2 validation steps" in a["diagnosis"]
    b1 = t[(t["method"] == "B") & (t["seed"] == 1)].iloc[0]
    assert b1["best_val"] == 0.4 and b1["best_val_step"] == 199 and "lost it" in b1["diagnosis"]
    b2 = t[(t["method"] == "B") & (t["seed"] == 2)].iloc[0]
    assert b2["diagnosis"] == "no validation of this dataset logged" and b2["seeds_collapsed"] == 2
    assert "3 run(s)" in R.collapse_sentence(t) and "collapses in 2 of 2 seeds" in R.collapse_sentence(t)
    assert R.collapse_sentence(R.collapse_table(cases[cases["method"] == "C"], val)).startswith("No run")
