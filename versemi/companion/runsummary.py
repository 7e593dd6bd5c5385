"""What a training run logged: the validation, EMA and test tables of the training notebook (02_train).

Everything here reads what the trainer and :func:`versemi.runs.finish_run` wrote into a run folder
(``val.csv``, ``DONE.json``; ``metrics.csv`` is drawn by :func:`versemi.companion.figures.loss_curves`)
and returns pandas DataFrames or matplotlib Axes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from versemi.companion.figures import COLORS
from versemi.runs import done_record
from versemi.utils import VersemiError

__all__ = ["val_table", "plot_val_dice", "ema_vs_student", "test_table"]


def val_table(run_dir) -> pd.DataFrame:
    """A run's validation Dice (val.csv) with ``model`` = 'student' (the trained network) or 'ema' (the
    mean-teacher copy, for methods that have one). Columns: step, dataset, dice, model."""
    p = Path(run_dir) / "val.csv"
    if not p.is_file():
        raise VersemiError(f"{run_dir}: no val.csv; was the run trained with validation?")
    df = pd.read_csv(p)
    df["model"] = df["model"].astype(object).fillna("student").astype(str)  # all-empty: a float column
    return df


def plot_val_dice(val: pd.DataFrame, ax=None, title: str = ""):
    """Validation Dice per dataset over steps: the student solid, the EMA teacher (if any) dashed."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for (ds, model), g in val.groupby(["dataset", "model"], sort=False):
        ax.plot(g["step"], g["dice"], marker="o", ms=3, ls="--" if model == "ema" else "-",
                color=COLORS.get(ds), label=f"{ds} ({model})")
    ax.set_xlabel("step")
    ax.set_ylabel("validation Dice")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def ema_vs_student(val: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and validation step: the student's and the EMA teacher's Dice and their difference
    (ema - student). Empty when the run has no teacher."""
    if "ema" not in set(val["model"]):
        return pd.DataFrame(columns=["step", "dataset", "student", "ema", "ema - student"])
    wide = val.pivot_table(index=["step", "dataset"], columns="model", values="dice").reset_index()
    wide.columns.name = None
    wide["ema - student"] = wide["ema"] - wide["student"]
    return wide[["step", "dataset", "student", "ema", "ema - student"]]


def test_table(runs: dict[str, Path]) -> pd.DataFrame:
    """label -> run folder  ->  one row per (run, test set) from DONE.json: n cases, Dice / Jaccard / 95HD /
    ASD mean and std, empty predictions, and the run's training seconds."""
    rows = []
    for label, run_dir in runs.items():
        done = done_record(run_dir)
        for ds, s in (done.get("test") or {}).items():
            rows.append({"method": label, "dataset": ds, "n": s["n"], "dice": s["dice_mean"],
                         "dice std": s["dice_std"], "jaccard": s["jaccard_mean"], "hd95": s["hd95_mean"],
                         "asd": s["asd_mean"], "empty predictions": s["n_empty_pred"],
                         "train seconds": done.get("train_seconds")})
    return pd.DataFrame(rows)
