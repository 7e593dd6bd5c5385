"""Figures of the comparison and ablation tables: every test case as a point, beside the means.

Input: the long per-case table of :func:`versemi.runs.collect_case_metrics`. Dice and Jaccard are drawn
in %, distances in voxels. The functions return a matplotlib Figure; it is written to disk only through
:func:`versemi.companion.figures.save_figure`. Every case point is drawn by
:func:`versemi.companion.figures.tip_points` with a tooltip naming the case, the row, the seed and the
value (:func:`case_tip`), so :func:`versemi.companion.figures.hover_html` of the same Figure names each
point on hover in the book.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from versemi.companion.figures import tip_points
from versemi.companion.tables import (
    DATASET_TITLES,
    GROUPS,
    METRIC_NAMES,
    METRIC_NAMES_RAW,
    PCT_METRICS,
    ordered_datasets,
    ordered_rows,
    with_rows,
)
from versemi.experiments import FULL_MODEL
from versemi.utils import VersemiError

JITTER = 0.15   # half-width of the strip's jitter (in category units), drawn from a fixed seed


def _axis_label(metric: str, scale: float) -> str:
    return METRIC_NAMES[metric] if scale == 100.0 else METRIC_NAMES_RAW[metric]


def case_tip(row, label: str, metric: str, scale: float) -> str:
    """The tooltip of one case point: 'case | run | seed s | Dice 87.1 %' (distances in voxels; an empty
    prediction says so)."""
    unit = " %" if scale == 100.0 else ""
    seed = f" | seed {int(row['seed'])}" if "seed" in row and pd.notna(row["seed"]) else ""
    empty = " (empty prediction)" if bool(row.get("empty", row.get("empty_pred", False))) else ""
    return f"{row['case']} | {label}{seed} | {METRIC_NAMES_RAW[metric]} {row['value']:.1f}{unit}{empty}"


def _jitter(n: int, salt: str) -> np.ndarray:
    rng = np.random.default_rng(int.from_bytes(salt.encode()[:8].ljust(8, b"\0"), "little"))
    return rng.uniform(-JITTER, JITTER, n)


def plot_case_scores(case_df: pd.DataFrame, metric: str = "dice", datasets: Sequence[str] | None = None,
                     title: str = "", col_wrap: int = 2, rows: str = "config"):
    """Per-case box + strip plot of ``metric`` by table row (``rows``: see
    :func:`~versemi.companion.tables.with_rows`), one panel per dataset (seaborn).

    Cases with an empty prediction (scored 0) are drawn as red crosses so they are visible, not hidden.
    Returns the matplotlib Figure.
    """
    df = with_rows(case_df, rows)
    if datasets is not None:
        df = df[df["dataset"].isin(list(datasets))]
    if df.empty:
        raise VersemiError("no cases to plot")
    scale = 100.0 if metric in PCT_METRICS else 1.0
    df = df.assign(value=df[metric].astype(float) * scale,
                   empty=np.asarray(df.get("empty_pred", False), dtype=bool))
    order = ordered_rows(df)
    ds_list = ordered_datasets(df["dataset"])
    ncols = min(col_wrap, len(ds_list))
    nrows = math.ceil(len(ds_list) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 0.32 * len(order) * nrows + 1.6 * nrows),
                             squeeze=False, sharex=True)
    palette = dict(zip(GROUPS, sns.color_palette("tab10", len(GROUPS))))
    for ax, ds in zip(axes.flat, ds_list):
        sub = df[df["dataset"] == ds]
        rows_here = [r for r in order if (sub["row"] == r).any()]
        colors = {r: palette.get(sub[sub["row"] == r]["group"].iloc[0], "grey") for r in rows_here}
        with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib 3.11's deprecated `vert`
            warnings.filterwarnings("ignore", message=".*vert: bool was deprecated.*")
            sns.boxplot(data=sub, x="value", y="row", order=rows_here, hue="row", hue_order=rows_here,
                        palette=colors, ax=ax, fliersize=0, width=0.6, linewidth=0.8, legend=False,
                        boxprops={"alpha": 0.45})
        for k, r in enumerate(rows_here):
            pts = sub[(sub["row"] == r) & ~sub["empty"]]
            if len(pts):
                tip_points(ax, pts["value"], k + _jitter(len(pts), f"{ds}{r}"),
                           [case_tip(c, r, metric, scale) for _, c in pts.iterrows()], color="black", s=9,
                           alpha=0.8, zorder=4, linewidths=0)
        if sub["empty"].any():
            e = sub[sub["empty"]]
            tip_points(ax, e["value"], [rows_here.index(r) for r in e["row"]],
                       [case_tip(c, c["row"], metric, scale) for _, c in e.iterrows()], marker="x", color="red",
                       s=28, label="empty prediction (scored 0)", zorder=5)
            ax.legend(loc="lower left", fontsize=7, frameon=True)
        ax.set_title(DATASET_TITLES.get(ds, ds))
        ax.set_xlabel(_axis_label(metric, scale))
        ax.set_ylabel("")
    for ax in list(axes.flat)[len(ds_list):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_ablation(case_df: pd.DataFrame, reference_label: str = FULL_MODEL, metric: str = "dice",
                  labels: Sequence[str] | None = None, title: str = ""):
    """Bar plot of the mean ``metric`` per ablation (run key, column ``method``) and dataset with the
    per-case values as points; a dashed line marks the full model's mean averaged over datasets.
    Returns the Figure."""
    order = [reference_label] + [lab for lab in (labels or dict.fromkeys(case_df["method"]))
                                 if lab != reference_label]
    df = case_df[case_df["method"].isin(order)]
    if df.empty:
        raise VersemiError("no cases to plot")
    scale = 100.0 if metric in PCT_METRICS else 1.0
    df = df.assign(value=df[metric].astype(float) * scale)
    hue_order = ordered_datasets(df["dataset"])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(order)), 3.8))
    sns.barplot(data=df, x="method", y="value", hue="dataset", order=order, hue_order=hue_order, ax=ax,
                errorbar=None, alpha=0.6)
    width = 0.8 / len(hue_order)   # seaborn's dodged bars: the hue levels share 0.8 of a category
    for i, m in enumerate(order):
        for j, ds in enumerate(hue_order):
            pts = df[(df["method"] == m) & (df["dataset"] == ds)]
            if len(pts):
                x = i - 0.4 + width * (j + 0.5) + _jitter(len(pts), f"{m}{ds}") * width / (2 * JITTER) * 0.6
                tip_points(ax, x, pts["value"], [case_tip(c, m, metric, scale) for _, c in pts.iterrows()],
                           color="black", s=9, alpha=0.7, zorder=4, linewidths=0)
    full = df[df["method"] == reference_label].groupby("dataset")["value"].mean().mean()
    ax.axhline(full, ls="--", lw=1, color="grey", label=f"{reference_label}: mean over datasets")
    ax.set_xlabel("")
    ax.set_ylabel(_axis_label(metric, scale))
    ax.tick_params(axis="x", rotation=20)
    for t in ax.get_xticklabels():
        t.set_horizontalalignment("right")
    ax.legend(fontsize=7, ncol=3, loc="lower left")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
