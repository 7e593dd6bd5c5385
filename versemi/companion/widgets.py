"""The explorer of prompts and predictions (the explorer notebook, 07_explorer).

Two forms:

* :func:`static_explorer` / :func:`static_explorers` — for the published book, no kernel: every (prompt,
  slice) image is rendered in advance into ``Image`` widgets held in ``Stack`` widgets, and the prompt
  buttons and the slice slider are linked to the stacks' ``selected_index`` with ``jslink``, which runs in
  the browser;
* :func:`live_explorer` / :func:`live_explorer_for_run` — in JupyterLab with a kernel: pick dataset, case,
  slice, prompt and the layer (prediction overlay or probability map); the network runs on demand (one
  sliding-window pass per (case, prompt), cached) and a metric readout compares the prediction with what
  the prompt should find where that is known, over the volume and on the shown slice; its parts carry
  the CSS classes of :data:`LIVE_CLASSES` (tested in JupyterLab by tests/companion/test_lab.py).

What each prompt should find is :func:`versemi.data.truth.prompt_truth` with the run's task prompts
(``RunConfig.task_prompts``). The explorer data: :func:`explorer_cases`,
:func:`predict_prompts` (all prompts from one backbone pass per window batch), :func:`prompt_scores`,
:func:`explorer_predictions`, and the figure :func:`plot_prompt_grid`. Volumes are (X, Y, Z); the
explorers show the three planes (:data:`versemi.companion.figures.PLANES`).
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable, Sequence
from functools import partial

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from versemi.companion.datasummary import example_cases
from versemi.companion.fidelity import dice_text, mask_dice, prompt_name
from versemi.companion.figures import PLANES, best_slice, cut, overlay, save_figure, three_planes
from versemi.data.registry import DATASETS, SYNTHETIC_TASK, TASK_IDS
from versemi.data.truth import prompt_truth
from versemi.evaluate import case_metrics, sliding_window_predict
from versemi.runs import load_run_net

__all__ = [
    "PROMPTS", "PROMPT_NAMES", "PLANES", "LIVE_CLASSES", "cut", "slice_readout", "render_slice_png", "slice_indices",
    "static_explorer", "live_explorer",
    "explorer_cases", "predict_prompts", "prompt_scores", "explorer_predictions", "static_explorers",
    "plot_prompt_grid", "plot_planes", "live_explorer_for_run",
]

PROMPTS = (*TASK_IDS, SYNTHETIC_TASK)
#: Button / column names of the prompts.
PROMPT_NAMES = {**{p: prompt_name(p) for p in TASK_IDS}, SYNTHETIC_TASK: "synthetic (Task#5)"}


# ---------------------------------------------------------------------------------------------- widgets
def render_slice_png(image2d: np.ndarray, label2d=None, pred2d=None, prob2d=None, size: float = 2.6,
                     title: str | None = None) -> bytes:
    """PNG bytes of one slice drawn by :func:`versemi.companion.figures.overlay`: grey image, label contour
    (green), prediction contour (red), and the foreground probability as a heat map when ``prob2d`` is
    given; ``title`` above it."""
    fig = Figure(figsize=(size, size), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0, 0, 1, 0.9 if title else 1])
    overlay(ax, image2d, label2d, pred2d, prob2d=prob2d, linewidth=1.0)
    if title:
        fig.suptitle(title, fontsize=8, y=0.98)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def slice_indices(depth: int, n: int) -> list[int]:
    """``n`` slice positions spread over an axis of ``depth`` voxels (fewer if the volume is thinner)."""
    n = max(1, min(n, depth))
    return sorted({int(round(v)) for v in np.linspace(depth * 0.15, depth * 0.85 - 1, n)})


def static_explorer(image: np.ndarray, preds: dict[int, np.ndarray], label: np.ndarray | None = None,
                    n_slices: int = 9, title: str = "", probs: dict[int, np.ndarray] | None = None,
                    labels: dict[int, np.ndarray | None] | None = None, planes=tuple(PLANES)) -> W.Widget:
    """A kernel-free explorer of one case: prompt buttons, and per plane a slice slider over precomputed
    images, the planes side by side (axial, coronal, sagittal by default).

    image: (X, Y, Z) volume; preds: prompt id -> (X, Y, Z) prediction; label: one (X, Y, Z) mask drawn
    in green under every prompt, or labels: prompt id -> the mask that prompt should find (None or
    missing: no green contour for it); probs (optional): prompt id -> (X, Y, Z) foreground probability
    shown instead of the contour when given. All switching happens in the browser through ``jslink``.
    """
    prompts = sorted(preds)
    positions = {pl: slice_indices(image.shape[PLANES[pl]], n_slices) for pl in planes}
    sliders = {pl: W.IntSlider(value=len(pos) // 2, min=0, max=len(pos) - 1, description=pl, continuous_update=True)
               for pl, pos in positions.items()}
    buttons = W.ToggleButtons(options=[(PROMPT_NAMES.get(p, str(p)), i) for i, p in enumerate(prompts)],
                              value=0, description="prompt")
    per_prompt = []
    for p in prompts:
        truth = labels.get(p) if labels is not None else label
        score = dice_text(preds[p], truth)   # the volume's Dice under this prompt, where there is a truth
        views = []
        for pl, pos in positions.items():
            imgs = []
            for i in pos:
                png = render_slice_png(cut(image, pl, i), None if truth is None else cut(truth, pl, i),
                                       cut(preds[p], pl, i), None if probs is None else cut(probs[p], pl, i),
                                       title=" | ".join(t for t in (PROMPT_NAMES.get(p, str(p)), f"{pl} {i}", score)
                                                        if t))
                imgs.append(W.Image(value=png, format="png"))
            inner = W.Stack(imgs, selected_index=sliders[pl].value)
            W.jslink((sliders[pl], "value"), (inner, "selected_index"))
            views.append(inner)
        per_prompt.append(W.HBox(views))
    outer = W.Stack(per_prompt, selected_index=0)
    W.jslink((buttons, "index"), (outer, "selected_index"))
    head = W.HTML(f"<b>{title}</b> &nbsp; <span style='color:#00a000'>label</span> / "
                  f"<span style='color:#e02020'>prediction</span>")
    return W.VBox([head, buttons, W.HBox(list(sliders.values())), outer])


#: CSS classes of the live explorer's parts (role -> class on the widget's DOM element), stable names for
#: styling and for the JupyterLab browser test (tests/companion/test_lab.py).
LIVE_CLASSES = {role: f"versemi-live-{role}" for role in
                ("dataset", "case", "prompt", "layer", "plane", "slice", "image", "readout")}
LIVE_CLASSES["explorer"] = "versemi-live"


def slice_readout(pred2d: np.ndarray, truth2d: np.ndarray | None, plane: str, index: int) -> str:
    """One line on the shown 2-D slice: plane and index, voxels predicted, and, where the prompt's truth is
    known, the voxels it holds there and the slice's Dice (``mask_dice``: 1 when both are empty)."""
    n_pred = int(np.count_nonzero(pred2d))
    head = f"{plane} slice {int(index)}: {n_pred} voxels predicted"
    if truth2d is None:
        return head
    return f"{head}, {int(np.count_nonzero(truth2d))} true, slice Dice {mask_dice(pred2d > 0, truth2d > 0):.3f}"


def live_explorer(cases: dict[str, list[dict]], predict: Callable[[dict, int], tuple[np.ndarray, np.ndarray]],
                  truth: Callable[[dict, int], np.ndarray | None] | None = None) -> W.Widget:
    """An explorer that runs the model on demand (needs a kernel).

    cases: dataset name -> list of case dicts (``name``, ``image`` (X, Y, Z), ``label``);
    predict(case, prompt) -> (label_map, foreground prob map); truth(case, prompt) -> the mask of the
    prompted structure if known (phantoms know every structure), else None (default: the case's label
    under its own prompt only).

    The image is the selected slice (titled case | prompt | plane index | the volume's Dice); the readout
    gives the volume's Dice / Jaccard / 95HD / ASD (voxels) against the truth, or "no reference", and a line naming the case and
    prompt with the shown slice's :func:`slice_readout`. Every control carries a class of :data:`LIVE_CLASSES`.
    """
    cache: dict = {}
    ds = W.Dropdown(options=list(cases), description="dataset")
    case = W.Dropdown(description="case")
    prompt = W.Dropdown(options=[(v, k) for k, v in PROMPT_NAMES.items()], description="prompt")
    layer = W.ToggleButtons(options=["prediction", "probability"], description="show")
    plane = W.ToggleButtons(options=list(PLANES), description="plane")
    z = W.IntSlider(description="slice", min=0, max=1)
    img = W.Image(format="png", layout=W.Layout(width="320px"))  # the PNG's own width (4 in at 80 dpi)
    readout = W.HTML()
    for role, w in (("dataset", ds), ("case", case), ("prompt", prompt), ("layer", layer), ("plane", plane),
                    ("slice", z), ("image", img), ("readout", readout)):
        w.add_class(LIVE_CLASSES[role])

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
        z.max = c["image"].shape[PLANES[plane.value]] - 1
        key = (ds.value, case.value, prompt.value)
        if key not in cache:
            cache[key] = predict(c, prompt.value)
        pred, prob = cache[key]
        zi = min(z.value, z.max)
        gt = truth(c, prompt.value) if truth else (c["label"] if prompt.value == c["task"] else None)
        pl = plane.value
        gt2d = None if gt is None else cut(gt, pl, zi)
        img.value = render_slice_png(cut(c["image"], pl, zi), gt2d, cut(pred, pl, zi),
                                     cut(prob, pl, zi) if layer.value == "probability" else None, size=4,
                                     title=" | ".join(t for t in (c["name"], PROMPT_NAMES.get(prompt.value, str(prompt.value)),
                                                                  f"{pl} {zi}", dice_text(pred, gt)) if t))
        if gt is None:
            volume = f"{int(pred.sum())} voxels predicted; no reference for this prompt"
        else:
            m = case_metrics(pred, gt)
            volume = (f"Dice {m['dice']:.3f} | Jaccard {m['jaccard']:.3f} | 95HD {m['hd95']:.1f} | "
                      f"ASD {m['asd']:.2f} (voxels){' | empty prediction' if m['empty_pred'] else ''}")
        line = (f"{c['name']} under prompt {PROMPT_NAMES.get(prompt.value, prompt.value)}, "
                f"{slice_readout(cut(pred, pl, zi), gt2d, pl, zi)}")
        readout.value = f"{volume}<br>{html.escape(line)}"

    ds.observe(on_ds, "value")
    for w in (case, prompt, layer, plane, z):
        w.observe(redraw, "value")
    on_ds()
    if case.options:
        z.value = current()["image"].shape[-1] // 2
    redraw()
    box = W.VBox([W.HBox([ds, case]), W.HBox([prompt, layer]), plane, z, img, readout])
    box.add_class(LIVE_CLASSES["explorer"])
    return box


# ---------------------------------------------------------------------------------------------- explorer data
def explorer_cases(prepared, split: str = "test", per_dataset: int = 1, ratio: int = 10) -> dict[str, list[dict]]:
    """dataset -> its first ``per_dataset`` cases of ``split``, loaded with hidden labels
    (:func:`versemi.companion.datasummary.example_cases`), in the form :func:`live_explorer` takes."""
    out: dict[str, list[dict]] = {}
    for c in example_cases(prepared, split=split, ratio=ratio, per_dataset=per_dataset, hidden=True):
        out.setdefault(c["dataset"], []).append(c)
    return out


def predict_prompts(net, cfg, image: np.ndarray, prompts: Sequence[int] = PROMPTS) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Segment ``image`` (X, Y, Z) under every prompt with one backbone pass per window batch (the run's
    evaluation patch and stride). Returns (prompt -> (X, Y, Z) uint8 label map, prompt -> (X, Y, Z) float32
    foreground probability). Runs on the network's device."""
    prompts = [int(p) for p in prompts]
    labels, probs = sliding_window_predict(net, image, prompts, patch_size=cfg.eval_patch, stride=cfg.eval_stride,
                                           batch_size=4)
    return ({p: lab for p, lab in zip(prompts, labels)},
            {p: prob[1].astype(np.float32) for p, prob in zip(prompts, probs)})


def prompt_scores(case: dict, preds: dict[int, np.ndarray], tasks: Sequence[int] = TASK_IDS) -> pd.DataFrame:
    """One row per prompt: voxels predicted, voxels that the prompt should find
    (:func:`versemi.data.truth.prompt_truth` with the run's task prompts ``tasks``), Dice against that truth
    (NaN when the truth is empty or unknown: then any voxel is a false positive)."""
    rows = []
    for p, pred in preds.items():
        t = prompt_truth(case, p, tasks)
        n_pred = int(np.count_nonzero(pred))
        n_true = None if t is None else int(np.count_nonzero(t))
        dice = np.nan
        if t is not None and n_true:
            dice = mask_dice(pred > 0, t > 0)
        rows.append({"dataset": case["dataset"], "case": case["name"], "prompt": int(p),
                     "prompt name": PROMPT_NAMES.get(int(p), str(p)), "own prompt": int(p) == int(case["task"]),
                     "predicted voxels": n_pred, "truth voxels": n_true, "dice": dice})
    return pd.DataFrame(rows)


def explorer_predictions(run_dir, prepared, split: str = "test", prompts: Sequence[int] = PROMPTS,
                         device=None) -> list[dict]:
    """The run's network on the first ``split`` case of every dataset under every prompt (one shared
    backbone pass per window batch). Returns one dict per dataset: ``case`` (see :func:`explorer_cases`),
    ``tasks`` (the run's task prompts), ``preds`` / ``probs`` (prompt -> (X, Y, Z) label map / foreground
    probability) and ``scores`` (:func:`prompt_scores`)."""
    net, cfg = load_run_net(run_dir, device=device)
    tasks = cfg.task_prompts
    out = []
    for cs in explorer_cases(prepared, split=split, per_dataset=1, ratio=cfg.ratio).values():
        c = cs[0]
        preds, probs = predict_prompts(net, cfg, c["image"], prompts)
        out.append({"case": c, "tasks": tasks, "preds": preds, "probs": probs,
                    "scores": prompt_scores(c, preds, tasks)})
    return out


def static_explorers(items: Sequence[dict], n_slices: int = 9, caption: str = ""):
    """Kernel-free explorers of :func:`explorer_predictions`: per dataset a :func:`static_explorer` (prompt
    buttons and slice slider jslinked to Stacks of precomputed ~200 px PNG Images; the green contour is what
    the selected prompt should find, absent where that is unknown), one Tab page per dataset."""
    pages, titles = [], []
    for it in items:
        c = it["case"]
        head = f"{DATASETS[c['dataset']].title}: {c['name']}" + (f" ({caption})" if caption else "")
        truths = {p: prompt_truth(c, p, it["tasks"]) for p in it["preds"]}
        pages.append(static_explorer(c["image"], it["preds"], labels=truths, n_slices=n_slices, title=head))
        titles.append(c["dataset"])
    tab = W.Tab(children=pages)
    tab.titles = tuple(titles)
    return tab


def plot_prompt_grid(items: Sequence[dict], title: str = "", out_png=None):
    """Rows = datasets (one case each), columns = prompts: the slice with most of the case's own target,
    the truth of that prompt in green and the prediction in red; the panel title gives the Dice (or the
    false-positive voxel count when the prompt should find nothing)."""
    prompts = sorted(items[0]["preds"]) if items else []
    fig, axes = plt.subplots(len(items), len(prompts), figsize=(1.9 * len(prompts), 2.0 * len(items)),
                             squeeze=False)
    for row, it in zip(axes, items):
        c = it["case"]
        own = prompt_truth(c, c["task"], it["tasks"])
        z = best_slice(own if own is not None else c["image"] > 0)
        sc = it["scores"].set_index("prompt")
        for ax, p in zip(row, prompts):
            t = prompt_truth(c, p, it["tasks"])
            s = sc.loc[p]
            if s["truth voxels"] is None or pd.isna(s["truth voxels"]):
                note = f"{int(s['predicted voxels'])} vox (no truth)"
            elif s["truth voxels"] == 0:
                note = f"{int(s['predicted voxels'])} false-pos. vox"
            else:
                note = f"Dice {s['dice']:.2f}"
            overlay(ax, c["image"][..., z], None if t is None else t[..., z], it["preds"][p][..., z],
                    title=f"{c['dataset']} | {PROMPT_NAMES.get(p, p)}\n{note}")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    if out_png is not None:
        save_figure(fig, out_png)
    return fig


def plot_planes(items: Sequence[dict], title: str = "", out_png=None):
    """Rows = datasets (one case each, :func:`explorer_predictions`): the case under its own prompt in the
    axial, coronal and sagittal planes through its target (:func:`versemi.companion.figures.three_planes`),
    truth green, prediction red, the volume's Dice in each row's title. Returns the Figure."""
    fig, axes = plt.subplots(len(items), 3, figsize=(7.4, 2.55 * max(1, len(items))), squeeze=False)
    for row, it in zip(axes, items):
        c = it["case"]
        own = int(c["task"])
        truth = prompt_truth(c, own, it["tasks"])
        three_planes(c["image"], truth, it["preds"][own],
                     title=f"{DATASETS[c['dataset']].short_title}: {c['name']} ({PROMPT_NAMES.get(own, own)})",
                     axes=row, score=dice_text(it["preds"][own], truth))
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    if out_png is not None:
        save_figure(fig, out_png)
    return fig


def _predict_one(net, cfg, case: dict, prompt: int) -> tuple[np.ndarray, np.ndarray]:
    """The live explorer's ``predict``: (label map, foreground probability) of one case under one prompt."""
    lab, prob = sliding_window_predict(net, case["image"], int(prompt), patch_size=cfg.eval_patch,
                                       stride=cfg.eval_stride, batch_size=4)
    return lab, prob[1]


def live_explorer_for_run(run_dir, prepared, split: str = "test", per_dataset: int = 3, device=None):
    """The kernel-backed :func:`live_explorer` over the first ``per_dataset`` ``split`` cases of every
    dataset: the run's network predicts on demand, the truth of each prompt is
    :func:`versemi.data.truth.prompt_truth` with the run's task prompts."""
    net, cfg = load_run_net(run_dir, device=device)
    cases = explorer_cases(prepared, split=split, per_dataset=per_dataset, ratio=cfg.ratio)
    return live_explorer(cases, partial(_predict_one, net, cfg), truth=partial(prompt_truth, tasks=cfg.task_prompts))
