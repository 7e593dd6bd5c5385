"""The one place figures and tables are written to disk, and the drawing primitives the figures share.

Every PNG and CSV that the notebooks, the book build and the result exports save goes through
:func:`save_figure` / :func:`save_table`: written through a temporary file and renamed (never seen
half-written), parent folders created, one resolution for every figure.

Shared drawing pieces: :func:`overlay` (a slice with the truth and prediction contours), :func:`best_slice`
(which slice to show), :data:`PLANES` / :func:`cut` / :func:`three_planes` (axial, coronal and sagittal
views of a volume with a score in the title), :func:`loss_curves` (a run's ``metrics.csv`` with its
validation points marked), :func:`tip_points` / :func:`hover_html` (points that name themselves on hover
in the published HTML: an inline SVG with one ``<title>`` per point, no script, works offline),
:data:`COLORS` (one colour per dataset) and :func:`method_figure` (the method overview of the book's
intro). Volumes are (X, Y, Z) arrays in the prepared HDF5 axis order; a slice is drawn transposed with
the origin at the lower left.
"""

from __future__ import annotations

import hashlib
import io
import xml.etree.ElementTree as ET
from collections.abc import Sequence
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
            title: str | None = None, prob2d: np.ndarray | None = None, linewidth: float = 0.9):
    """Draw one (X, Y) slice on ``ax``: the grey image, the foreground probability ``prob2d`` as a heat map
    when given, the truth contour (green) and the prediction contour (red); an empty or missing mask draws
    no contour. Returns ``ax``."""
    ax.imshow(image2d.T, cmap="gray", origin="lower")
    if prob2d is not None:
        ax.imshow(prob2d.T, cmap="magma", origin="lower", alpha=0.55, vmin=0, vmax=1)
    if label2d is not None and np.any(label2d):
        ax.contour(label2d.T, levels=[0.5], colors="#00d000", linewidths=linewidth)
    if pred2d is not None and np.any(pred2d):
        ax.contour(pred2d.T, levels=[0.5], colors="#ff3030", linewidths=linewidth)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    return ax


#: The three planes of a volume (X, Y, Z) and the axis each one cuts: axial (fixed z), coronal (fixed y),
#: sagittal (fixed x). A cut is drawn with its first remaining axis horizontal and the second upwards.
PLANES = {"axial": 2, "coronal": 1, "sagittal": 0}


def cut(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """The 2-D slice of an (X, Y, Z) ``volume`` at ``index`` of ``plane``'s axis (:data:`PLANES`)."""
    return np.take(volume, int(index), axis=PLANES[plane])


def centre(mask: np.ndarray | None, shape: Sequence[int]) -> tuple[int, int, int]:
    """The voxel (x, y, z) the three planes go through: for each axis the slice with the most foreground
    of ``mask`` (X, Y, Z) (the middle one of equally large slices), the volume's middle where ``mask`` is
    missing or empty."""
    if mask is None or not np.any(mask):
        return tuple(int(n) // 2 for n in shape)
    m = np.asarray(mask) > 0
    at = []
    for ax in range(3):
        area = m.sum(axis=tuple(a for a in range(3) if a != ax))
        best = np.flatnonzero(area == area.max())
        at.append(int(best[len(best) // 2]))   # the middle one of equally large slices
    return tuple(at)


def three_planes(image: np.ndarray, label: np.ndarray | None = None, pred: np.ndarray | None = None,
                 title: str = "", axes=None, at: Sequence[int] | None = None, score: str = ""):
    """Axial, coronal and sagittal slices of an (X, Y, Z) case through ``at`` (default :func:`centre` of the
    truth, else of the prediction), each with the truth (green) and prediction (red) contours; the middle
    panel's title is ``title | score`` (callers pass the volume's Dice,
    :func:`versemi.companion.fidelity.dice_text`). ``axes``: three Axes to draw into (default a new 1 x 3
    figure). Returns the Figure."""
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(7.2, 2.6))
    fig = axes[0].figure
    at = tuple(at) if at is not None else centre(label if label is not None and np.any(label) else pred,
                                                 image.shape)
    for ax, plane in zip(axes, PLANES):
        i = at[PLANES[plane]]
        overlay(ax, cut(image, plane, i), None if label is None else cut(label, plane, i),
                None if pred is None else cut(pred, plane, i), title=f"{plane} {i}")
    head = " | ".join(t for t in (title, score) if t)
    if head:
        axes[1].set_title(f"{head}\n{axes[1].get_title()}", fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------- training
LOSS_SKIP = ("step", "stage", "lr", "seconds", "cons_weight", "certain_fraction")  # metrics.csv columns that are not losses


def loss_curves(metrics: pd.DataFrame, terms=None, smooth: int = 10, ax=None, val: pd.DataFrame | None = None,
                selected_step: int | None = None):
    """Per-term training loss curves of a run's ``metrics.csv`` (one row per step): each term's rolling
    mean over ``smooth`` steps, the total ``loss`` thicker, a dotted line where a new stage begins.
    ``terms``: the columns to draw (default: every column that is not in :data:`LOSS_SKIP`).

    ``val`` (optional; the run's ``val.csv``: step, dataset, dice, model): the validation points marked on
    a second axis (validation Dice, right), one marker per validation and dataset (the trained network;
    an EMA teacher's points hollow); ``selected_step``: the step of the checkpoint that was selected
    (``DONE.json`` ``best.step``), drawn as a dashed line. Returns ``ax`` (the loss axis)."""
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
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    if val is not None and len(val):
        right = ax.twinx()
        model = val["model"].astype(object).fillna("student") if "model" in val else pd.Series("student", val.index)
        for (ds, m), g in val.assign(model=model).groupby(["dataset", "model"], sort=False):
            color = COLORS.get(ds, "k")
            right.scatter(g["step"], g["dice"], s=16, marker="o", label=f"val {ds}" + (" (EMA)" if m == "ema" else ""),
                          facecolors="none" if m == "ema" else color, edgecolors=color, zorder=4)
        if selected_step is not None:
            right.axvline(selected_step, color="#444", ls="--", lw=0.9, label=f"selected (step {int(selected_step)})")
        right.set_ylim(-0.02, 1.02)
        right.set_ylabel("validation Dice")
        right.legend(fontsize=6, loc="upper right", ncol=2)
    return ax


# ---------------------------------------------------------------------------------------------- hover
def tip_points(ax, x, y, tips: Sequence[str], **scatter_kw):
    """``ax.scatter(x, y, **scatter_kw)`` whose points name themselves on hover in :func:`hover_html`: point
    ``i`` gets the tooltip ``tips[i]``. The tips are kept on the figure (``fig._versemi_tips``, gid ->
    texts), so that a PNG of the same figure is unchanged. Returns the PathCollection."""
    x, y, tips = list(x), list(y), [str(t) for t in tips]
    if not (len(x) == len(y) == len(tips)):
        raise ValueError(f"tip_points: {len(x)} x, {len(y)} y and {len(tips)} tips")
    coll = ax.scatter(x, y, **scatter_kw)
    store = ax.figure.__dict__.setdefault("_versemi_tips", {})
    gid = f"vtip{len(store)}"
    coll.set_gid(gid)
    store[gid] = tips
    return coll


class HoverFigure:
    """An inline SVG (text) shown as HTML by Jupyter and by the book: each tipped point is wrapped in
    ``<g><title>tip</title>...</g>``, which browsers show as a tooltip (no script, no network)."""

    def __init__(self, svg: str):
        self.svg = svg

    def _repr_html_(self) -> str:
        return f'<div class="versemi-hover" style="max-width:100%;overflow-x:auto">{self.svg}</div>'

    def __str__(self) -> str:
        return self.svg


_SVG = "http://www.w3.org/2000/svg"
ET.register_namespace("", _SVG)
ET.register_namespace("xlink", "http://www.w3.org/1999/xlink")


def hover_html(fig, close: bool = False) -> HoverFigure:
    """``fig`` as an inline SVG whose :func:`tip_points` carry their tooltips (one ``<title>`` per point, in
    the order they were given). Ids are made unique per figure, so several can share one page. ``close``:
    close ``fig`` afterwards (a notebook then shows the SVG only, not also the inline PNG)."""
    tips = getattr(fig, "_versemi_tips", {})
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    if close:
        plt.close(fig)
    text = buf.getvalue()
    salt = hashlib.sha1(text.encode()).hexdigest()[:8]
    root = ET.fromstring(text)
    parents = {c: p for p in root.iter() for c in p}
    for el in root.iter():
        if el.get("id") is not None:
            el.set("id", f"{salt}-{el.get('id')}")
    for gid, texts in tips.items():
        group = next((e for e in root.iter(f"{{{_SVG}}}g") if e.get("id") == f"{salt}-{gid}"), None)
        if group is None:
            raise ValueError(f"hover_html: the points {gid!r} were not drawn (outside the axes?)")
        marks = [e for e in group.iter() if e.tag in (f"{{{_SVG}}}use", f"{{{_SVG}}}path")
                 and parents.get(e) is not None and parents[e].tag != f"{{{_SVG}}}defs"]
        if len(marks) != len(texts):
            raise ValueError(f"hover_html: {len(marks)} points drawn for {gid!r}, {len(texts)} tips")
        for el, tip in zip(marks, texts):
            parent = parents[el]
            k = list(parent).index(el)
            wrap = ET.Element(f"{{{_SVG}}}g", {"class": "versemi-tip"})
            ET.SubElement(wrap, f"{{{_SVG}}}title").text = tip
            parent.remove(el)
            wrap.append(el)
            parent.insert(k, wrap)
    out = ET.tostring(root, encoding="unicode")
    # references to the renamed ids (clip paths, markers)
    out = out.replace('url(#', f'url(#{salt}-').replace('href="#', f'href="#{salt}-')
    return HoverFigure(out)


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
