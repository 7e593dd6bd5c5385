"""Figures of the data chapter: mid slices with label contours, intensity histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from versemi.data.registry import DATASETS, TASK_TO_DATASET


def _get(case, key, default=None):
    if isinstance(case, dict):
        return case.get(key, default)
    return getattr(case, key, default)


def _dataset_of(case) -> str:
    ds = _get(case, "dataset")
    if ds:
        return ds
    task = _get(case, "task")
    if task is None:
        attrs = _get(case, "attrs") or {}
        task = attrs.get("task")
    return TASK_TO_DATASET.get(int(task), "?") if task is not None else "?"


def _first_per_dataset(cases) -> list:
    seen = {}
    for c in cases:
        seen.setdefault(_dataset_of(c), c)
    order = {d: i for i, d in enumerate(DATASETS)}
    return [seen[d] for d in sorted(seen, key=lambda d: order.get(d, 99))]


def plot_mid_slices(cases, out_png=None):
    """One column per dataset (its first case): the middle slice along the last axis, label contour in red.

    cases: dicts or RawCase-like objects with image, label (or None), name, and dataset or task.
    Returns the matplotlib Figure; saves it to ``out_png`` when given.
    """
    import matplotlib.pyplot as plt

    chosen = _first_per_dataset(cases)
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.2 * len(chosen), 3.4), squeeze=False)
    for ax, case in zip(axes[0], chosen):
        image = np.asarray(_get(case, "image"))
        z = image.shape[-1] // 2
        ax.imshow(image[..., z].T, cmap="gray", origin="lower")
        label = _get(case, "label")
        if label is not None and np.asarray(label)[..., z].any():
            ax.contour(np.asarray(label)[..., z].T, levels=[0.5], colors="red", linewidths=1.0)
        ds = _dataset_of(case)
        title = DATASETS[ds].title if ds in DATASETS else ds
        ax.set_title(f"{title}\n{_get(case, 'name', '')}  slice {z}/{image.shape[-1]}", fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    if out_png is not None:
        Path(out_png).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_png, dpi=100)
    return fig


def plot_intensity_histograms(cases, bins: int = 64, max_voxels: int = 200_000):
    """One panel per dataset: voxel intensity histogram of all its cases, with the label's voxels overlaid.

    Deterministic subsampling (every k-th voxel) keeps it fast on large volumes. Returns the Figure.
    """
    import matplotlib.pyplot as plt

    groups: dict[str, list] = {}
    for c in cases:
        groups.setdefault(_dataset_of(c), []).append(c)
    order = {d: i for i, d in enumerate(DATASETS)}
    names = sorted(groups, key=lambda d: order.get(d, 99))
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)
    for ax, ds in zip(axes[0], names):
        allv, fgv = [], []
        for c in groups[ds]:
            img = np.asarray(_get(c, "image")).ravel()
            k = max(1, img.size // max_voxels)
            allv.append(img[::k])
            lab = _get(c, "label")
            if lab is not None:
                fgv.append(img[np.asarray(lab).ravel() > 0])
        allv = np.concatenate(allv)
        lo, hi = float(allv.min()), float(allv.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
        ax.hist(allv, bins=edges, density=True, color="0.6", label="all voxels")
        if fgv and sum(len(v) for v in fgv):
            ax.hist(np.concatenate(fgv), bins=edges, density=True, histtype="step", color="red", label="label")
        ax.set_title(DATASETS[ds].title if ds in DATASETS else ds, fontsize=8)
        ax.set_xlabel("intensity (prepared)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
