"""The ipywidgets explorer of prompts and predictions.

Two forms:

* :func:`live_explorer` — in JupyterLab with a kernel: pick dataset, case, slice, prompt and the layer
  (prediction overlay or probability map); the network runs on demand (one sliding-window pass per
  (case, prompt), cached) and a metric readout compares the prediction with the label of the prompted
  structure where it is known.
* :func:`static_explorer` — for the published book, no kernel: every (prompt, slice) image is rendered
  in advance into ``Image`` widgets held in ``Stack`` widgets, and the prompt buttons and the slice
  slider are linked to the stacks' ``selected_index`` with ``jslink``, which runs in the browser.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import ipywidgets as W
import numpy as np

from versemi.data.registry import DATASETS

PROMPT_NAMES = {**{d.task_id: d.name for d in DATASETS.values()}, 5: "synthetic (Task#5)"}


def render_slice_png(image2d: np.ndarray, label2d=None, pred2d=None, prob2d=None, size: float = 2.6,
                     title: str | None = None) -> bytes:
    """PNG bytes of one slice: grey image, label contour (green), prediction contour (red), or the
    foreground probability as a heat map when ``prob2d`` is given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size, size), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0, 0, 1, 0.9 if title else 1])
    ax.imshow(image2d.T, cmap="gray", origin="lower")
    if prob2d is not None:
        ax.imshow(prob2d.T, cmap="magma", origin="lower", alpha=0.55, vmin=0, vmax=1)
    if label2d is not None and np.any(label2d):
        ax.contour(label2d.T, levels=[0.5], colors="#00d000", linewidths=1.0)
    if pred2d is not None and np.any(pred2d):
        ax.contour(pred2d.T, levels=[0.5], colors="#ff3030", linewidths=1.0)
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=8, y=0.98)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def slice_indices(depth: int, n: int) -> list[int]:
    """``n`` slice positions spread over the last axis (fewer if the volume is thinner)."""
    n = max(1, min(n, depth))
    return sorted({int(round(v)) for v in np.linspace(depth * 0.15, depth * 0.85 - 1, n)})


def static_explorer(image: np.ndarray, preds: dict[int, np.ndarray], label: np.ndarray | None = None,
                    n_slices: int = 9, title: str = "", probs: dict[int, np.ndarray] | None = None,
                    labels: dict[int, np.ndarray | None] | None = None) -> W.Widget:
    """A kernel-free explorer of one case: prompt buttons x slice slider over precomputed images.

    image: (X, Y, Z) volume; preds: prompt id -> (X, Y, Z) prediction; label: one (X, Y, Z) mask drawn
    in green under every prompt, or labels: prompt id -> the mask that prompt should find (None or
    missing: no green contour for it); probs (optional): prompt id -> (X, Y, Z) foreground probability
    shown instead of the contour when given. Slices are taken along the last axis. All switching
    happens in the browser through ``jslink``.
    """
    zs = slice_indices(image.shape[-1], n_slices)
    prompts = sorted(preds)
    slider = W.IntSlider(value=len(zs) // 2, min=0, max=len(zs) - 1, description="slice", continuous_update=True)
    buttons = W.ToggleButtons(options=[(PROMPT_NAMES.get(p, str(p)), i) for i, p in enumerate(prompts)],
                              value=0, description="prompt")
    per_prompt = []
    for p in prompts:
        truth = labels.get(p) if labels is not None else label
        imgs = []
        for z in zs:
            png = render_slice_png(image[..., z], None if truth is None else truth[..., z], preds[p][..., z],
                                   None if probs is None else probs[p][..., z],
                                   title=f"{PROMPT_NAMES.get(p, p)} | z={z}")
            imgs.append(W.Image(value=png, format="png"))
        inner = W.Stack(imgs, selected_index=slider.value)
        W.jslink((slider, "value"), (inner, "selected_index"))
        per_prompt.append(inner)
    outer = W.Stack(per_prompt, selected_index=0)
    W.jslink((buttons, "index"), (outer, "selected_index"))
    head = W.HTML(f"<b>{title}</b> &nbsp; <span style='color:#00a000'>label</span> / "
                  f"<span style='color:#e02020'>prediction</span>")
    return W.VBox([head, buttons, slider, outer])


def live_explorer(cases: dict[str, list[dict]], predict: Callable[[dict, int], tuple[np.ndarray, np.ndarray]],
                  truth: Callable[[dict, int], np.ndarray | None] | None = None) -> W.Widget:
    """An explorer that runs the model on demand (needs a kernel).

    cases: dataset name -> list of case dicts (``name``, ``image`` (X, Y, Z), ``label``);
    predict(case, prompt) -> (label_map, foreground prob map); truth(case, prompt) -> the mask of the
    prompted structure if known (phantoms know every structure), else None.
    """
    from versemi.evaluate import case_metrics

    cache: dict = {}
    ds = W.Dropdown(options=list(cases), description="dataset")
    case = W.Dropdown(description="case")
    prompt = W.Dropdown(options=[(v, k) for k, v in PROMPT_NAMES.items()], description="prompt")
    layer = W.ToggleButtons(options=["prediction", "probability"], description="show")
    z = W.IntSlider(description="slice", min=0, max=1)
    img = W.Image(format="png")
    readout = W.HTML()

    def current():
        return next(c for c in cases[ds.value] if c["name"] == case.value)

    def on_ds(_=None):
        case.options = [c["name"] for c in cases[ds.value]]
        c = cases[ds.value][0]
        case.value = c["name"]
        prompt.value = c["task"]

    def redraw(_=None):
        if case.value is None:
            return
        c = current()
        z.max = c["image"].shape[-1] - 1
        key = (ds.value, case.value, prompt.value)
        if key not in cache:
            cache[key] = predict(c, prompt.value)
        pred, prob = cache[key]
        zi = min(z.value, z.max)
        gt = truth(c, prompt.value) if truth else (c["label"] if prompt.value == c["task"] else None)
        img.value = render_slice_png(c["image"][..., zi], None if gt is None else gt[..., zi], pred[..., zi],
                                     prob[..., zi] if layer.value == "probability" else None, size=4)
        if gt is None:
            readout.value = f"{int(pred.sum())} voxels predicted; no reference for this prompt"
        else:
            m = case_metrics(pred, gt)
            readout.value = (f"Dice {m['dice']:.3f} | Jaccard {m['jaccard']:.3f} | 95HD {m['hd95']:.1f} | "
                             f"ASD {m['asd']:.2f} (voxels){' | empty prediction' if m['empty_pred'] else ''}")

    ds.observe(on_ds, "value")
    for w in (case, prompt, layer, z):
        w.observe(redraw, "value")
    on_ds()
    if case.options:
        z.value = current()["image"].shape[-1] // 2
    redraw()
    return W.VBox([W.HBox([ds, case]), W.HBox([prompt, layer]), z, img, readout])

