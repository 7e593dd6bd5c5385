"""What training runs logged: validation, EMA and test tables, learning curves, and which runs predict nothing on a test set (with a diagnosis from their validations).

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

__all__ = ["val_table", "label_models", "selected_step", "plot_val_dice", "ema_vs_student", "test_table", "plot_learning_curves",
           "convergence_table", "collapse_table", "collapse_sentence"]


def val_table(run_dir) -> pd.DataFrame:
    """A run's validation Dice (val.csv) with ``model`` = 'student' (the trained network) or 'ema' (the
    mean-teacher copy, for methods that have one). Columns: step, dataset, dice, model."""
    p = Path(run_dir) / "val.csv"
    if not p.is_file():
        raise VersemiError(f"{run_dir}: no val.csv; was the run trained with validation?")
    return label_models(pd.read_csv(p))


def selected_step(run_dir) -> int | None:
    """The step of the checkpoint the run selected for testing (``DONE.json`` ``best.step``; the last
    validation when a method selects per stage), None when the run kept no best (selection 'last')."""
    best = done_record(run_dir).get("best") or {}
    return None if best.get("step") is None else int(best["step"])


def label_models(val: pd.DataFrame) -> pd.DataFrame:
    """Validation rows (``val.csv`` of a run, or :attr:`versemi.studies.StudyResults.val`) with ``model``
    = 'student' where it is empty (the trained network) and 'ema' for an EMA teacher."""
    df = val.copy()
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


def plot_learning_curves(val: pd.DataFrame, title: str = ""):
    """Validation Dice against steps, one panel per dataset, one line per run and seed (the trained network
    only): the learning-curve study that sets a profile's schedule (``versemi.experiments.curve_configs``).
    ``val``: :attr:`versemi.studies.StudyResults.val`."""
    v = label_models(val)
    v = v[v["model"] == "student"]
    datasets = list(dict.fromkeys(v["dataset"]))
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(3.2 * max(1, len(datasets)), 3.2), sharey=True,
                             squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        sub = v[v["dataset"] == ds]
        for i, (method, g_m) in enumerate(sub.groupby("method", sort=False)):
            for j, (_, g) in enumerate(g_m.groupby("seed", sort=True)):
                ax.plot(g["step"], g["dice"], color=f"C{i}", alpha=0.9, lw=1.2, marker="o", ms=2,
                        label=method if j == 0 else None)
        ax.set_title(ds, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("validation Dice")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def convergence_table(val: pd.DataFrame, schedule: int) -> pd.DataFrame:
    """Per run and dataset (mean over seeds): the best validation Dice over the whole curve, the best within
    the first ``schedule`` steps, and the first step reaching 95 % of the curve's best (how early the run
    converged). ``val``: :attr:`versemi.studies.StudyResults.val`."""
    v = label_models(val)
    v = v[v["model"] == "student"]
    lines = []
    for (method, ds, seed), g in v.groupby(["method", "dataset", "seed"], sort=False):
        best = float(g["dice"].max())
        within = g[g["step"] < schedule]["dice"]
        lines.append({"run": method, "dataset": ds, "seed": seed, "best": best,
                      "best within schedule": float(within.max()) if len(within) else float("nan"),
                      "step reaching 95 % of best": int(g.loc[g["dice"] >= 0.95 * best, "step"].min()) + 1})
    df = pd.DataFrame(lines)
    if df.empty:
        return df
    return df.groupby(["run", "dataset"], sort=False)[["best", "best within schedule",
                                                        "step reaching 95 % of best"]].mean().reset_index()


COLLAPSE_COLUMNS = ["method", "dataset", "seed", "n_cases", "n_empty", "best_val", "best_val_step", "seeds_collapsed",
                    "seeds", "diagnosis"]


def collapse_table(cases: pd.DataFrame, val: pd.DataFrame, threshold: float = 1.0) -> pd.DataFrame:
    """The runs that predict nothing on a test set: one line per (``method``, ``dataset``, ``seed``) whose
    share of empty predictions on that dataset's test cases is at least ``threshold`` (1: every case),
    with what its validations saw of that dataset (``best_val``: the highest validation Dice of any of the
    run's networks, at ``best_val_step``), how many of the method's seeds collapse there
    (``seeds_collapsed`` of ``seeds``), and a ``diagnosis`` computed from these: *never predicted it* (every
    validation Dice 0: training did not get off the ground) or *predicted it during training* (the
    selected network lost it). ``cases``: per-case table with ``method, dataset, seed, empty_pred``;
    ``val``: :attr:`versemi.studies.StudyResults.val` (``method, seed, step, dataset, dice``)."""
    if cases.empty or "empty_pred" not in cases:
        return pd.DataFrame(columns=COLLAPSE_COLUMNS)
    df = cases.assign(seed=cases["seed"] if "seed" in cases else 0)
    share = df.groupby(["method", "dataset", "seed"], sort=False)["empty_pred"].agg(["mean", "size", "sum"])
    seeds = df.groupby(["method", "dataset"])["seed"].nunique()
    hit = share[share["mean"] >= threshold]
    counts = hit.reset_index().groupby(["method", "dataset"])["seed"].nunique()
    rows = []
    for (method, dataset, seed), s in hit.iterrows():
        v = val[(val["method"] == method) & (val["dataset"] == dataset) & (val["seed"] == seed)] if len(val) else val
        best = v.loc[v["dice"].idxmax()] if len(v) and v["dice"].notna().any() else None
        best_val = float(best["dice"]) if best is not None else float("nan")
        if best is None:
            diagnosis = "no validation of this dataset logged"
        elif best_val <= 0:
            diagnosis = f"never predicted it: validation Dice 0 at every one of its {v['step'].nunique()} validation steps"
        else:
            diagnosis = (f"predicted it during training (validation Dice {best_val:.2f} at step {int(best['step'])}); "
                         f"the selected network lost it")
        rows.append({"method": method, "dataset": dataset, "seed": seed, "n_cases": int(s["size"]),
                     "n_empty": int(s["sum"]), "best_val": best_val,
                     "best_val_step": int(best["step"]) if best is not None else None,
                     "seeds_collapsed": int(counts[(method, dataset)]), "seeds": int(seeds[(method, dataset)]),
                     "diagnosis": diagnosis})
    return pd.DataFrame(rows, columns=COLLAPSE_COLUMNS)


def collapse_sentence(collapses: pd.DataFrame) -> str:
    """One sentence of :func:`collapse_table`: none, or each collapsed run with its seed count."""
    if collapses.empty:
        return "No run predicts nothing on a whole test set."
    parts = [f"{r.method} on {r.dataset} (seed {r.seed}; collapses in {r.seeds_collapsed} of {r.seeds} seeds; "
             f"{r.diagnosis})" for r in collapses.itertuples()]
    return f"{len(parts)} run(s) predict nothing on a whole test set: " + "; ".join(parts) + "."
