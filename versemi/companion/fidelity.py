"""Prompt fidelity: does the prompt steer the segmentation? (the failure-case notebook, 06_failures)

:func:`prompt_fidelity` segments every test volume with every prompt and compares prompt k's prediction
with what prompt k should find on that scan, :func:`versemi.data.truth.prompt_truth` (the one definition;
its module doc derives it from the losses). The phantoms keep the complete hidden label map of every
structure, so on them the right answer is known for every (scan, prompt) pair:

* prompt k = 1..4: the hidden mask of dataset k's target structure (pancreas, left atrium, spleen, lung
  tumour) in this scan; it is empty when the scan does not contain that structure (e.g. the lung-tumour
  prompt on a cardiac MRI);
* prompt 5 (the synthetic task): the union of the targets of the run's task prompts (``tasks``, from the
  run's config: ``RunConfig.task_prompts``) present in this scan, what ``P_agg = max_k p_k`` aggregates; for a run
  on the four datasets the union of the four targets, for a task-specific run the scan's own target.

Where the prompted structure exists, the Dice of the prediction against it is recorded; where it does not,
every predicted voxel is a false positive and the predicted volume is recorded. Each prompt's prediction
is also compared with the own-task prediction (``same_as_own``, ``dice_to_own``): a prompt that is ignored
gives (nearly) the own-task mask back (prompt weakening).

Real data have no hidden labels: there only the own prompt (and prompt 5 of a task-specific run, whose
truth is the scan's own label) are scored; the other prompts' Dice / false-positive columns are NaN (their
predicted volumes are still recorded).

Tables: :func:`fidelity_matrix` (scan dataset x prompt), :func:`fidelity_summary` (headline numbers),
:func:`worst_cases`; figures: :func:`plot_matrices`, :func:`failure_gallery`. The ``*_for_runs`` /
``*_for_run`` functions take run folders (``versemi/runs.py``). Array axis order is that of the prepared
volumes; slices for figures are taken along the last axis.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from tqdm.auto import tqdm

from versemi.companion.figures import best_slice, overlay, save_table
from versemi.data.registry import ALL_DATASETS, DATASETS, SYNTHETIC_TASK, TASK_IDS, TASK_TO_DATASET
from versemi.data.truth import case_dataset, prompt_structures, prompt_truth
from versemi.evaluate import sliding_window_predict
from versemi.runs import load_run_net
from versemi.utils import VersemiError

__all__ = [
    "prompt_name", "prompt_label", "mask_dice", "prompt_fidelity", "MATRIX_VALUES",
    "fidelity_matrix", "fidelity_summary", "worst_cases", "plot_matrices", "failure_gallery",
    "analysis_stride", "fidelity_for_runs", "fidelity_matrices", "SUMMARY_NAMES", "fidelity_summaries",
    "glue_values", "failure_gallery_for_run", "save_matrices", "compare_phrase",
]

Predictor = Callable[[dict, list[int]], Sequence[np.ndarray]]


def prompt_name(prompt: int) -> str:
    """'pancreas' | 'la' | 'spleen' | 'lung' for prompts 1..4, 'synthetic' for prompt 5."""
    if prompt == SYNTHETIC_TASK:
        return "synthetic"
    if prompt not in TASK_TO_DATASET:
        raise VersemiError(f"unknown prompt {prompt!r}; expected 1..{SYNTHETIC_TASK}")
    return TASK_TO_DATASET[prompt]


def prompt_label(prompt: int) -> str:
    """Column label of a prompt in tables and figures, e.g. '3: spleen'."""
    return f"{prompt}: {prompt_name(prompt)}"


# ---------------------------------------------------------------------------------------------- measuring
def mask_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice as ``case_metrics`` gives it (0 for an empty prediction against a non-empty mask); 1 when
    both masks are empty (agreement, used by ``dice_to_own``)."""
    n_p, n_t = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    if n_p + n_t == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred & truth)) / float(n_p + n_t)


def dice_text(pred: np.ndarray | None, truth: np.ndarray | None) -> str:
    """'Dice 0.87' of two (X, Y, Z) masks (0 for an empty prediction of a non-empty truth, as the
    evaluation scores it), '' when either is missing or the truth is empty (nothing to score against)."""
    if pred is None or truth is None or not np.any(truth):
        return ""
    return f"Dice {mask_dice(np.asarray(pred) > 0, np.asarray(truth) > 0):.2f}"


def _voxel_ml(case: dict) -> float:
    sp = case.get("spacing")
    if sp is None:
        return math.nan
    return float(np.prod(np.asarray(sp, dtype=np.float64))) / 1000.0


def _net_predictor(net, patch, stride, batch_size: int, protocol: str) -> Predictor:
    def predict(case: dict, prompts: list[int]):
        labels, _ = sliding_window_predict(net, np.asarray(case["image"]), list(prompts), patch, stride,
                                           protocol=protocol, batch_size=batch_size,
                                           name=str(case.get("name", "image")))
        return labels

    return predict


def prompt_fidelity(net, cases: Iterable[dict], prompts: Sequence[int] = (1, 2, 3, 4, 5), patch=None, stride=None,
                    *, tasks: Sequence[int] = TASK_IDS, predictor: Predictor | None = None, batch_size: int = 8,
                    protocol: str = "paper", model: str | None = None, progress: bool = False) -> pd.DataFrame:
    """Every case x every prompt: what the prediction finds against what the prompt asks for.

    Args:
        net: the network (ignored when ``predictor`` is given).
        cases: dicts as :func:`versemi.data.truth.load_cases` gives (name, dataset/task, image, label,
            spacing, hidden_label, hidden_legend; the last two may be missing or None for real data).
        prompts: the prompts to test (the case's own prompt is always run, for the comparison).
        patch, stride: sliding-window size and step (``sliding_window_predict``; one pass per window
            serves every prompt). A stride coarser than the run's evaluation stride is fine for this
            analysis and makes it cheap.
        tasks: the run's task prompts (``RunConfig.task_prompts``), which define the truth of prompt 5.
        predictor: ``f(case, prompts) -> list of label maps`` replacing the network (for tests and
            other models).
        model: if given, a ``model`` column with this value is added.

    Returns a long DataFrame, one row per (case, prompt): case, dataset, scan_task, prompt,
    prompt_name, structure (what the prompt asks for; '+'-joined structures for prompt 5), own_prompt,
    truth_known, target_voxels, target_present, pred_voxels, pred_ml, dice (where the target is present,
    else NaN), fp_voxels and fp_ml (the predicted volume where the target is absent, else NaN),
    own_pred_voxels (the own prompt's predicted volume), same_as_own (the prediction equals the own-prompt
    one voxel for voxel) and dice_to_own (their agreement; 1 when both are empty).
    """
    prompts = [int(p) for p in prompts]
    tasks = tuple(int(t) for t in tasks)
    if not prompts:
        raise VersemiError("prompt_fidelity: no prompts")
    structure = {p: "+".join(prompt_structures(p, tasks)) for p in prompts}  # also checks prompts and tasks
    if predictor is None:
        if net is None or patch is None or stride is None:
            raise VersemiError("prompt_fidelity: give net, patch and stride (or a predictor)")
        predictor = _net_predictor(net, patch, stride, batch_size, protocol)
    rows = []
    for case in tqdm(list(cases), desc="prompt fidelity", disable=not progress, unit="case"):
        ds = case_dataset(case)
        own = DATASETS[ds].task_id
        run = prompts if own in prompts else prompts + [own]
        preds = [np.asarray(p).astype(bool) for p in predictor(case, run)]
        if len(preds) != len(run):
            raise VersemiError(f"case {case.get('name')!r}: the predictor returned {len(preds)} maps for "
                               f"{len(run)} prompts")
        shape = np.asarray(case["image"]).shape
        if any(p.shape != shape for p in preds):
            raise VersemiError(f"case {case.get('name')!r}: prediction shape differs from the image {shape}")
        own_pred = preds[run.index(own)]
        ml = _voxel_ml(case)
        for k, pred in zip(run, preds):
            if k not in prompts:
                continue
            truth = prompt_truth(case, k, tasks)
            n_pred = int(np.count_nonzero(pred))
            row = {"case": str(case["name"]), "dataset": ds, "scan_task": own, "prompt": k,
                   "prompt_name": prompt_name(k), "structure": structure[k], "own_prompt": k == own,
                   "truth_known": truth is not None, "target_voxels": math.nan, "target_present": pd.NA,
                   "pred_voxels": n_pred, "pred_ml": n_pred * ml, "dice": math.nan, "fp_voxels": math.nan,
                   "fp_ml": math.nan, "own_pred_voxels": int(np.count_nonzero(own_pred)),
                   "same_as_own": bool(np.array_equal(pred, own_pred)),
                   "dice_to_own": mask_dice(pred, own_pred)}
            if truth is not None:
                n_t = int(np.count_nonzero(truth))
                row.update(target_voxels=n_t, target_present=n_t > 0)
                if n_t > 0:
                    row["dice"] = mask_dice(pred, truth)
                else:
                    row.update(fp_voxels=float(n_pred), fp_ml=n_pred * ml)
            rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        raise VersemiError("prompt_fidelity: no cases")
    df["target_present"] = df["target_present"].astype("boolean")
    if model is not None:
        df.insert(0, "model", model)
    return df


# ---------------------------------------------------------------------------------------------- tables
MATRIX_VALUES = ("dice", "fp_voxels", "fp_ml", "pred_voxels", "same_as_own", "dice_to_own")


def fidelity_matrix(df: pd.DataFrame, value: str = "dice", agg: str = "mean") -> pd.DataFrame:
    """Scan dataset x prompt table of ``value`` aggregated over cases.

    value: ``dice`` (over the (case, prompt) pairs whose prompted structure is present), ``fp_voxels`` /
    ``fp_ml`` (over the pairs where it is absent), or ``pred_voxels``, ``same_as_own``, ``dice_to_own``
    (over all pairs). A cell with no such pair is NaN. Rows in task order (pancreas, la, spleen, lung),
    columns labelled like '3: spleen'.
    """
    if value not in MATRIX_VALUES:
        raise VersemiError(f"fidelity_matrix: value must be one of {', '.join(MATRIX_VALUES)}, got {value!r}")
    if "model" in df and df["model"].nunique() > 1:
        raise VersemiError("fidelity_matrix: the table holds several models; select one first")
    d = df.copy()
    d[value] = d[value].astype(float)
    mat = d.pivot_table(index="dataset", columns="prompt", values=value, aggfunc=agg, dropna=False)
    rows = [r for r in ALL_DATASETS if r in set(d["dataset"])]
    cols = sorted(set(d["prompt"]))
    mat = mat.reindex(index=rows, columns=cols)
    mat.columns = [prompt_label(int(c)) for c in mat.columns]
    mat.index.name, mat.columns.name = "scan dataset", "prompt"
    return mat


def fidelity_summary(df: pd.DataFrame) -> dict:
    """Headline numbers of one model's fidelity table.

    own_dice: mean Dice of the own prompt; synthetic_dice: mean Dice of prompt 5 (against the union of the
    run's targets in the scan); cross_dice: mean Dice of other real-task prompts whose structure is present
    in the scan; offtarget_fp_voxels / offtarget_fp_ml: mean predicted volume of prompts whose structure is
    absent; offtarget_empty_rate: the fraction of those that predict nothing (the correct answer);
    ignored_rate: the fraction of other-task prompts whose prediction equals the own-task one, over the
    scans where the own-task prediction is not empty (two empty masks say nothing about the prompt; NaN if
    there is no such scan); n_offtarget: how many absent pairs.
    """
    if "model" in df and df["model"].nunique() > 1:
        raise VersemiError("fidelity_summary: the table holds several models; select one first")
    real = df["prompt"] != SYNTHETIC_TASK
    other = real & ~df["own_prompt"]
    absent = df["target_present"].eq(False).fillna(False).astype(bool) & other
    present_other = df["target_present"].eq(True).fillna(False).astype(bool) & other

    def mean(s) -> float:
        s = pd.to_numeric(s, errors="coerce").dropna()
        return float(s.mean()) if len(s) else math.nan

    return {
        "own_dice": mean(df.loc[df["own_prompt"], "dice"]),
        "synthetic_dice": mean(df.loc[df["prompt"] == SYNTHETIC_TASK, "dice"]),
        "cross_dice": mean(df.loc[present_other, "dice"]),
        "offtarget_fp_voxels": mean(df.loc[absent, "fp_voxels"]),
        "offtarget_fp_ml": mean(df.loc[absent, "fp_ml"]),
        "offtarget_empty_rate": mean((df.loc[absent, "pred_voxels"] == 0).astype(float)),
        "ignored_rate": mean(df.loc[other & (df["own_pred_voxels"] > 0), "same_as_own"].astype(float)),
        "n_offtarget": int(absent.sum()),
    }


def worst_cases(df: pd.DataFrame, n: int = 6, kind: str = "both", off_target_only: bool = False,
                distinct_cases: bool = True) -> pd.DataFrame:
    """The worst (case, prompt) pairs of one model's fidelity table.

    kind ``"dice"``: lowest Dice where the prompted structure exists; ``"fp"``: largest false-positive
    volume (voxels) where it does not (pairs predicting nothing are not failures and are skipped);
    ``"both"``: ceil(n/2) of the first and the rest of the second (filled from the other kind when one
    runs short). Adds ``failure`` ('low Dice' | 'false positive'). off_target_only: skip own prompts.
    Ties in Dice go to the larger structure (the bigger miss). distinct_cases: at most one pair per
    scan in each kind, so a gallery shows different scans. A table of several models gives the worst n of
    each.
    """
    if kind not in ("dice", "fp", "both"):
        raise VersemiError(f"worst_cases: kind must be dice, fp or both, got {kind!r}")
    if "model" in df and df["model"].nunique() > 1:  # the worst n of each model
        return pd.concat([worst_cases(df[df["model"] == m], n, kind, off_target_only, distinct_cases)
                          for m in dict.fromkeys(df["model"])], ignore_index=True)
    d = df[~df["own_prompt"]] if off_target_only else df
    low = d[d["dice"].notna()].sort_values(["dice", "target_voxels", "case", "prompt"],
                                           ascending=[True, False, True, True], kind="mergesort")
    fp = d[d["fp_voxels"].fillna(0) > 0].sort_values(["fp_voxels", "case", "prompt"], ascending=[False, True, True],
                                                      kind="mergesort")
    if distinct_cases:
        low, fp = low.drop_duplicates("case"), fp.drop_duplicates("case")
    low, fp = low.assign(failure="low Dice"), fp.assign(failure="false positive")
    if kind == "dice":
        out = low.head(n)
    elif kind == "fp":
        out = fp.head(n)
    else:
        a = min(len(low), max(math.ceil(n / 2), n - len(fp)))
        out = pd.concat([low.head(a), fp.head(n - a)])
    return out.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- figures
def plot_matrices(mats: dict[str, pd.DataFrame], fmt=".2f", cmap="viridis", center=None,
                  vmin=None, vmax=None, suptitle: str | None = None, cbar_label=None):
    """Side-by-side annotated heatmaps (seaborn) of (scan dataset x prompt) tables; empty cells (NaN:
    no such pair) stay blank. ``fmt``, ``cmap``, ``center`` and ``cbar_label`` may be one value or a
    list with one per panel; ``vmin``/``vmax`` are shared (None: per panel; a panel with a ``center``
    gets limits symmetric about it, so equal values never look like a difference). Columns that are
    empty in a panel (e.g. the synthetic prompt in a false-positive table: its structure is never
    absent) are left out of that panel."""
    def per(v, i):
        return v[i] if isinstance(v, (list, tuple)) else v

    mats = {k: m.astype(float) for k, m in mats.items()}
    fig, axes = plt.subplots(1, len(mats), figsize=(4.4 * len(mats), 3.3), squeeze=False)
    for i, (ax, (title, m)) in enumerate(zip(axes[0], mats.items())):
        m = m.loc[:, m.notna().any(axis=0)] if m.notna().any().any() else m
        label, c = per(cbar_label, i), per(center, i)
        lo, hi = vmin, vmax
        if c is not None and lo is None and hi is None:
            dev = float(np.nanmax(np.abs(m.to_numpy() - c))) if m.notna().any().any() else 0.0
            dev = dev if dev > 0 else 1.0
            lo, hi = c - dev, c + dev
        sns.heatmap(m, annot=True, fmt=per(fmt, i), cmap=per(cmap, i), center=c, vmin=lo, vmax=hi, ax=ax,
                    cbar_kws={"label": label} if label else None, annot_kws={"fontsize": 7}, mask=m.isna())
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.tick_params(axis="y", labelrotation=0)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def failure_gallery(net, cases: Sequence[dict], worst: pd.DataFrame, patch=None, stride=None, *,
                    tasks: Sequence[int] = TASK_IDS, predictor: Predictor | None = None, batch_size: int = 8,
                    protocol: str = "paper", suptitle: str | None = None):
    """Figure with one row per failure of ``worst`` (from :func:`worst_cases`): the image slice, the
    prompted structure's ground truth (green contour; :func:`versemi.data.truth.prompt_truth` with the
    run's ``tasks``) and the prediction (red contour).

    The predictions are recomputed for just these (case, prompt) pairs (same arguments as
    :func:`prompt_fidelity`). The slice (last axis) is the one with the most ground-truth-or-predicted
    voxels.
    """
    if predictor is None:
        if net is None or patch is None or stride is None:
            raise VersemiError("failure_gallery: give net, patch and stride (or a predictor)")
        predictor = _net_predictor(net, patch, stride, batch_size, protocol)
    by_name = {str(c["name"]): c for c in cases}
    n = max(len(worst), 1)
    fig, axes = plt.subplots(n, 3, figsize=(7.2, 2.4 * n), squeeze=False)
    if worst.empty:
        for ax in axes[0]:
            ax.set_axis_off()
        axes[0, 1].text(0.5, 0.5, "no failure to show", ha="center", va="center")
    for i, (_, r) in enumerate(worst.iterrows()):
        case = by_name.get(str(r["case"]))
        if case is None:
            raise VersemiError(f"failure_gallery: case {r['case']!r} is not among the given cases")
        k = int(r["prompt"])
        pred = np.asarray(predictor(case, [k])[0]).astype(bool)
        truth = prompt_truth(case, k, tasks)
        gt = np.zeros_like(pred) if truth is None else truth
        z = best_slice(gt | pred)
        img = np.asarray(case["image"])[..., z]
        score = (f"Dice {r['dice']:.2f}" if r["failure"] == "low Dice"
                 else f"FP {int(r['fp_voxels'])} vox")
        overlay(axes[i, 0], img, title=f"{r['case']} ({r['dataset']}), slice {z}")
        overlay(axes[i, 1], img, label2d=gt[..., z],
                title=f"truth: {r['structure']}" + ("" if gt.any() else " (absent)"))
        overlay(axes[i, 2], img, pred2d=pred[..., z], title=f"prompt {prompt_label(k)}: {score}")
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- runs in
def analysis_stride(cfg, stride=None) -> tuple[int, int, int]:
    """The window step of the fidelity analysis for a run config: None -> half the run's ``eval_patch``;
    ``"eval"`` -> its ``eval_stride``; else the given step (one int or three)."""
    if stride is None:
        return tuple(max(1, int(p) // 2) for p in cfg.eval_patch)
    if isinstance(stride, str):
        if stride != "eval":
            raise VersemiError(f"stride must be None, 'eval' or sizes, got {stride!r}")
        return tuple(int(v) for v in cfg.eval_stride)
    if isinstance(stride, (int, np.integer)):
        return (int(stride),) * 3
    st = tuple(int(v) for v in stride)
    if len(st) != 3 or min(st) < 1:
        raise VersemiError(f"stride must be three positive sizes, got {stride!r}")
    return st


def fidelity_for_runs(runs: dict[str, Path], cases: Sequence[dict], prompts: Sequence[int] = (1, 2, 3, 4, 5),
                      stride=None, device=None, progress: bool = False) -> pd.DataFrame:
    """:func:`prompt_fidelity` of each run's network, concatenated with a ``model`` column.

    The window is the run's ``eval_patch``; the truth of prompt 5 follows the run's task prompts
    (``RunConfig.task_prompts``); ``stride`` is the window step of this analysis (:func:`analysis_stride`): None means
    half the window (16³ for the 32³ windows of the demo profile), coarser than the paper's evaluation stride
    (16/16/4) and the demo's (16/16/8), because every volume is segmented with every prompt here; ``"eval"``
    means the run's own ``eval_stride``.
    """
    parts = []
    for label, run_dir in runs.items():
        net, cfg = load_run_net(run_dir, device=device)
        parts.append(prompt_fidelity(net, cases, prompts, cfg.eval_patch, analysis_stride(cfg, stride),
                                     tasks=cfg.task_prompts, model=label, progress=progress))
    return pd.concat(parts, ignore_index=True)


def failure_gallery_for_run(run_dir, cases: Sequence[dict], worst: pd.DataFrame, model: str | None = None,
                            stride=None, device=None, suptitle: str | None = None):
    """:func:`failure_gallery` with the network of a run (window = its ``eval_patch``, ``stride`` and the
    prompt-5 truth as in :func:`fidelity_for_runs`), for the rows of ``worst`` whose ``model`` is ``model``
    (all if None)."""
    net, cfg = load_run_net(run_dir, device=device)
    if model is not None:
        worst = worst[worst["model"] == model]
    return failure_gallery(net, cases, worst, cfg.eval_patch, analysis_stride(cfg, stride), tasks=cfg.task_prompts,
                           suptitle=suptitle)


def fidelity_matrices(fid: pd.DataFrame, value: str = "dice") -> dict[str, pd.DataFrame]:
    """model -> :func:`fidelity_matrix` of that model's rows (in the table's order of models)."""
    return {m: fidelity_matrix(fid[fid["model"] == m].drop(columns="model"), value)
            for m in dict.fromkeys(fid["model"])}


#: Row names of :func:`fidelity_summary`'s keys in the notebook's table.
SUMMARY_NAMES = {
    "own_dice": "Dice, own prompt",
    "synthetic_dice": "Dice, synthetic prompt 5 (union of the run's targets)",
    "cross_dice": "Dice, other prompt, structure present",
    "offtarget_fp_voxels": "FP voxels, other prompt, structure absent",
    "offtarget_fp_ml": "FP volume (ml), other prompt, structure absent",
    "offtarget_empty_rate": "empty answer rate, structure absent",
    "ignored_rate": "other prompt gives the own-task mask (own mask not empty)",
    "n_offtarget": "(scan, prompt) pairs without the structure",
}


def fidelity_summaries(fid: pd.DataFrame) -> pd.DataFrame:
    """One row per model of :func:`fidelity_summary` (index: model; columns: its keys)."""
    rows = {m: fidelity_summary(fid[fid["model"] == m]) for m in dict.fromkeys(fid["model"])}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "model"
    return out


# ---------------------------------------------------------------------------------------------- out
def save_matrices(mats: dict[str, pd.DataFrame], folder, stem: str) -> list[Path]:
    """Write each matrix with its row index as ``<folder>/<stem>_<slug of its key>.csv``."""
    paths = []
    for key, m in mats.items():
        slug = re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")
        paths.append(save_table(m, Path(folder) / f"{stem}_{slug}.csv", index=True))
    return paths


def glue_values(table: pd.DataFrame, short: dict[str, str], prefix: str = "") -> dict[str, float]:
    """Flatten a (model x metric) table into ``{prefix + metric + '_' + short[model]: value}`` for glue."""
    out = {}
    for model, key in short.items():
        if model not in table.index:
            raise VersemiError(f"glue_values: model {model!r} is not in the table ({', '.join(table.index)})")
        for col, v in table.loc[model].items():
            out[f"{prefix}{col}_{key}"] = float(v)
    return out


def compare_phrase(a: float, b: float, a_name: str, b_name: str, fmt: str = ".3f", unit: str = "") -> str:
    """'lower for A (1.0) than for B (3.0)' / 'higher ...' / 'the same ...' for the prose."""
    u = f" {unit}" if unit else ""
    if any(isinstance(v, float) and math.isnan(v) for v in (a, b)):
        return "not defined for at least one of the two (no such pair)"
    if f"{a:{fmt}}" == f"{b:{fmt}}":
        return f"the same for {a_name} and {b_name} ({a:{fmt}}{u})"
    word = "lower" if a < b else "higher"
    return f"{word} for {a_name} ({a:{fmt}}{u}) than for {b_name} ({b:{fmt}}{u})"
