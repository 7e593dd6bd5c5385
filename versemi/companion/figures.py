"""The one place figures and tables are written to disk, and the drawing primitives the figures share.

Every PNG and CSV that the notebooks, the book build and the result exports save goes through
:func:`save_figure` / :func:`save_table`: written through a temporary file and renamed (never seen
half-written), parent folders created, one resolution for every figure.

Shared drawing pieces: :func:`overlay` (a slice with the truth and prediction contours), :func:`best_slice`
(which slice to show), :func:`loss_curves` (a run's ``metrics.csv``), :data:`COLORS` (one colour per
dataset) and :func:`method_figure` (the method overview of the book's intro). Volumes are (X, Y, Z)
arrays in the prepared HDF5 axis order; slices are taken along the last axis and drawn transposed with
the origin at the lower left.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from versemi.model import VerSemiNet, count_parameters
from versemi.utils import atomic_path

DPI = 120   # dots per inch of every saved figure

#: One colour per dataset (and the synthetic prompt) in every figure.
COLORS = {"pancreas": "#d95f02", "la": "#1b9e77", "spleen": "#7570b3", "lung": "#e7298a", "synthetic": "#666666"}


# ---------------------------------------------------------------------------------------------- savers
def save_figure(fig, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` to ``path`` (the format from the suffix, PNG by default; ``bbox_inches='tight'``)
    and return the path. The figure stays open, so a notebook still shows it."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    with atomic_path(path, suffix=path.suffix or ".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt)
    return path


def save_table(df: pd.DataFrame, path: str | Path, index: bool = False, float_format: str | None = None) -> Path:
    """Write ``df`` as CSV and return the path. MultiIndex columns are flattened to ``'a | b'``."""
    path = Path(path)
    out = df
    if isinstance(df.columns, pd.MultiIndex):
        out = df.copy()
        out.columns = [" | ".join(str(c) for c in col if str(c)) for col in df.columns]
    with atomic_path(path, suffix=".csv") as tmp:
        out.to_csv(tmp, index=index, float_format=float_format)
    return path


# ---------------------------------------------------------------------------------------------- slices
def best_slice(mask: np.ndarray) -> int:
    """Index along the last axis with the most foreground voxels of ``mask`` (X, Y, Z) (the middle slice
    when the mask is empty)."""
    mask = np.asarray(mask)
    area = mask.reshape(-1, mask.shape[-1]).sum(axis=0)
    return int(np.argmax(area)) if area.any() else mask.shape[-1] // 2


def overlay(ax, image2d: np.ndarray, label2d: np.ndarray | None = None, pred2d: np.ndarray | None = None,
            title: str | None = None):
    """Draw one (X, Y) slice on ``ax``: the grey image with the truth contour (green) and the prediction
    contour (red); an empty or missing mask draws no contour. Returns ``ax``."""
    ax.imshow(image2d.T, cmap="gray", origin="lower")
    if label2d is not None and label2d.any():
        ax.contour(label2d.T, levels=[0.5], colors="#00d000", linewidths=0.9)
    if pred2d is not None and pred2d.any():
        ax.contour(pred2d.T, levels=[0.5], colors="#ff3030", linewidths=0.9)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    return ax


# ---------------------------------------------------------------------------------------------- training
LOSS_SKIP = ("step", "stage", "lr", "seconds", "cons_weight", "certain_fraction")  # metrics.csv columns that are not losses


def loss_curves(metrics: pd.DataFrame, terms=None, smooth: int = 10, ax=None):
    """Per-term training loss curves of a run's ``metrics.csv`` (one row per step): each term's rolling
    mean over ``smooth`` steps, the total ``loss`` thicker, a dotted line where a new stage begins.
    ``terms``: the columns to draw (default: every column that is not in :data:`LOSS_SKIP`). Returns ``ax``."""
    terms = terms or [c for c in metrics.columns if c not in LOSS_SKIP]
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for t in terms:
        if t in metrics:
            s = metrics[t].rolling(smooth, min_periods=1).mean()
            ax.plot(metrics["step"], s, label=t, lw=1.8 if t == "loss" else 1.0)
    for step in metrics.groupby("stage", sort=False)["step"].min().iloc[1:]:
        ax.axvline(step, color="k", ls=":", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7, ncol=2)
    return ax


# ---------------------------------------------------------------------------------------------- method
def _box(ax, xy, w, h, text, color="#e8eef7", fontsize=8):
    ax.add_patch(FancyBboxPatch(xy, w, h, boxstyle="round,pad=0.02", fc=color, ec="#334", lw=0.8))
    ax.text(xy[0] + w / 2, xy[1] + h / 2, text, ha="center", va="center", fontsize=fontsize, wrap=True)


def _arrow(ax, a, b, text=None):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=9, lw=0.8, color="#334"))
    if text:
        ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.02, text, fontsize=7, ha="center")


def method_figure(out: str | Path | None = None):
    """A schematic of VerSemi: the task-prompted V-Net with its dynamic head (top; the parameter count is
    that of ``versemi.model.VerSemiNet`` at f = 16) and the training signals (bottom): L_sup, the synthetic
    Task#5 on a CutMix of two tasks, L_aux, and the unlabeled consistency with P_agg = max_k. Drawn from
    scratch with matplotlib; saved to ``out`` (:func:`save_figure`) when given; returns the Figure."""
    fig, ax = plt.subplots(figsize=(10, 5.2))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    # network
    _box(ax, (0.02, 0.72), 0.12, 0.16, "3D patch\nx (B,1,D,H,W)")
    _box(ax, (0.19, 0.72), 0.16, 0.16, "V-Net encoder\n5 stages, IN+ReLU\nf, 2f, 4f, 8f, 16f")
    _box(ax, (0.40, 0.72), 0.16, 0.16, "V-Net decoder\nadditive skips\n(scales 4, 3, 2)")
    _box(ax, (0.61, 0.72), 0.13, 0.16, "pre-classifier\nBN+ReLU+1x1x1\nf -> 8")
    _box(ax, (0.79, 0.72), 0.19, 0.16, "dynamic head\n1x1x1: 8-8-8-2\nper-sample weights", "#fde9d9")
    _box(ax, (0.40, 0.50), 0.16, 0.12, "global branch\nBN+ReLU+GAP\n(B, 16f)")
    _box(ax, (0.61, 0.50), 0.13, 0.12, "controller\n1x1x1 conv\n-> 180 params", "#fde9d9")
    _box(ax, (0.79, 0.50), 0.19, 0.12, "task prompt (one-hot)\n1 pancreas 2 LA 3 spleen\n4 lung tumour 5 synthetic",
         "#e5f5e0")
    _arrow(ax, (0.14, 0.80), (0.19, 0.80))
    _arrow(ax, (0.35, 0.80), (0.40, 0.80))
    _arrow(ax, (0.56, 0.80), (0.61, 0.80))
    _arrow(ax, (0.74, 0.80), (0.79, 0.80))
    _arrow(ax, (0.30, 0.72), (0.40, 0.58), "bottleneck")
    _arrow(ax, (0.56, 0.56), (0.61, 0.56))
    _arrow(ax, (0.79, 0.54), (0.74, 0.54))
    _arrow(ax, (0.68, 0.62), (0.85, 0.72), "weights, biases")
    n_params = count_parameters(VerSemiNet(n_filters=16, num_tasks=4))
    ax.text(0.5, 0.95, f"Task-prompted V-Net ({n_params:,} parameters at f = 16)", ha="center", fontsize=10,
            weight="bold")
    # training signals
    ax.text(0.5, 0.42, "Training signals", ha="center", fontsize=10, weight="bold")
    _box(ax, (0.02, 0.08), 0.21, 0.28, "L_sup\nDice + CE of each\nlabeled sample with\nits own prompt", "#f2f2f2")
    _box(ax, (0.265, 0.08), 0.22, 0.28, "synthetic Task#5\nx_mix = x_a M + x_b (1-M)\n(cube side 2/3)\n"
         "L_syn = Dice(F(x_mix, 5), y_mix)", "#f2f2f2")
    _box(ax, (0.515, 0.08), 0.22, 0.28, "L_aux (prompt weakening)\nprompt a -> y_a M\nprompt b -> y_b (1-M)\n"
         "(same task: y_mix)", "#f2f2f2")
    _box(ax, (0.765, 0.08), 0.215, 0.28, "unlabeled stage\nx_u M + x_l (1-M)\nP_agg = max_k p_k\n"
         "L_unsup = Dice(F(., 5), P_agg)", "#f2f2f2")
    if out is not None:
        save_figure(fig, out)
    return fig


class Prose(str):
    """Text glued into a page's prose: its plain-text form is the text itself (a ``str`` is shown by its repr,
    so ``{glue:text}`` would print it between quote marks)."""

    def __repr__(self) -> str:
        return str.__str__(self)

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(str.__str__(self))


def glue_value(key: str, value) -> None:
    """``myst_nb.glue(key, value, display=False)``, text as :class:`Prose` (bare in the prose), numbers and
    rich objects (Markdown, figures) unchanged, so ``{glue:text}`key:.1f``` format specs keep working."""
    from myst_nb import glue

    glue(key, Prose(value) if isinstance(value, str) and not isinstance(value, Prose) else value, display=False)
