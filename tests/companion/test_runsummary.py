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
