"""Plotting helpers shared by the notebooks: the method diagram, loss curves, metric plots, overlays."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg") if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline") else None
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

COLORS = {"pancreas": "#d95f02", "la": "#1b9e77", "spleen": "#7570b3", "lung": "#e7298a", "synthetic": "#666666"}


def _box(ax, xy, w, h, text, color="#e8eef7", fontsize=8):
    ax.add_patch(FancyBboxPatch(xy, w, h, boxstyle="round,pad=0.02", fc=color, ec="#334", lw=0.8))
    ax.text(xy[0] + w / 2, xy[1] + h / 2, text, ha="center", va="center", fontsize=fontsize, wrap=True)


def _arrow(ax, a, b, text=None):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=9, lw=0.8, color="#334"))
    if text:
        ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.02, text, fontsize=7, ha="center")


def method_figure(out: str | Path | None = None):
    """A schematic of VerSemi: the task-prompted V-Net with its dynamic head (top) and the training
    signals (bottom): L_sup, the synthetic Task#5 on a CutMix of two tasks, L_aux, and the unlabeled
    consistency with P_agg = max_k. Drawn from scratch with matplotlib; returns the Figure."""
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
    from versemi.model import VerSemiNet, count_parameters

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
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=130, bbox_inches="tight")
    return fig


def loss_curves(metrics: pd.DataFrame, terms=None, smooth: int = 10, ax=None):
    """Per-term training loss curves from a run's metrics.csv (rolling mean over ``smooth`` steps)."""
    skip = {"step", "stage", "lr", "seconds", "cons_weight", "certain_fraction"}
    terms = terms or [c for c in metrics.columns if c not in skip]
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


def overlay(ax, image2d: np.ndarray, label2d: np.ndarray | None = None, pred2d: np.ndarray | None = None,
            title: str | None = None):
    """Grey image with the label contour (green) and the prediction contour (red)."""
    ax.imshow(image2d.T, cmap="gray", origin="lower")
    if label2d is not None and label2d.any():
        ax.contour(label2d.T, levels=[0.5], colors="#00d000", linewidths=0.9)
    if pred2d is not None and pred2d.any():
        ax.contour(pred2d.T, levels=[0.5], colors="#ff3030", linewidths=0.9)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    return ax
