"""Feature and prompt-fidelity analyses behind the t-SNE (05) and failure-case (06) notebooks.

Two questions about a trained task-prompted network:

1. **Do its image features separate the datasets?** :func:`extract_features` pools, per test volume,
   the network's prompt-independent features: ``global`` (the controller's image input: BatchNorm + ReLU
   + global average pool of the bottleneck for the dynamic head; the plain GAP of the bottleneck for the
   other heads), and the global averages of ``decoder`` (the last up-step, f channels) and ``prehead``
   (the 8-channel pre-classifier output that the dynamic head convolves). :func:`tsne_embedding` maps
   them to 2-D (scikit-learn t-SNE, fixed seed) and :func:`silhouette` scores how well the datasets
   separate, on the embedding and on the features themselves.

2. **Does the prompt steer the segmentation?** :func:`prompt_fidelity` segments every test volume with
   every prompt and compares prompt k's prediction with what prompt k asks for on that scan. The
   phantoms keep the complete hidden label map of every structure (DESIGN.md §4), so the right answer
   is known for every (scan, prompt) pair:

   * prompt k = 1..4: the hidden mask of dataset k's target structure (pancreas, left atrium, spleen,
     lung tumour) in this scan; it is empty when the scan does not contain that structure (e.g. the
     lung-tumour prompt on a cardiac MRI);
   * prompt 5 (the synthetic task): the scan's own dataset target. The synthetic task is trained on
     CutMix images whose target is the union of the mixed samples' labelled targets, i.e. "the
     foreground of whichever task each region came from"; on an unmixed scan that is its own target.

   Where the prompted structure exists, the Dice of the prediction against it is recorded; where it
   does not, every predicted voxel is a false positive and the predicted volume is recorded. Each
   prompt's prediction is also compared with the own-task prediction (``same_as_own``, ``dice_to_own``):
   a prompt that is ignored gives (nearly) the own-task mask back (prompt weakening).

   Real data have no hidden labels: there only the own prompt and the synthetic prompt (whose truth is
   the scan's own label) are scored, and the other prompts' Dice / false-positive columns are NaN
   (their predicted volumes are still recorded).

Array axis order is that of the prepared volumes; slices for figures are taken along the last axis.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from versemi.data.registry import DATASETS, SYNTHETIC_TASK, TASK_TO_DATASET
from versemi.utils import VersemiError

__all__ = [
    "TARGET_STRUCTURE", "DATASET_ORDER", "prompt_name", "prompt_label", "load_cases", "prompt_truth",
    "Features", "extract_features", "standardise", "tsne_embedding", "silhouette", "tsne_analysis",
    "plot_tsne", "prompt_fidelity", "fidelity_matrix", "fidelity_summary", "worst_cases",
    "plot_matrices", "failure_gallery", "data_note", "features_for_runs", "fidelity_for_runs",
    "fidelity_matrices", "fidelity_summaries", "glue_values", "failure_gallery_for_run", "silhouette_glue",
    "silhouette_verdict", "silhouette_table", "save_figure", "save_table", "save_matrices", "compare_phrase",
    "analysis_stride",
]

#: The hidden-label structure that each dataset's label exposes (names of ``STRUCTURES``).
TARGET_STRUCTURE: dict[str, str] = {"pancreas": "pancreas", "la": "left_atrium", "spleen": "spleen",
                                    "lung": "tumour"}
DATASET_ORDER: tuple[str, ...] = tuple(sorted(DATASETS, key=lambda d: DATASETS[d].task_id))
FEATURES = ("global", "decoder", "prehead")


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


# ---------------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------------
def _read_hidden(path: Path) -> tuple[np.ndarray | None, dict | None]:
    """The hidden label map and its legend of a prepared case (None, None when it has none)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "hidden_label" not in f:
                return None, None
            hidden = f["hidden_label"][()]
            legend = f.attrs.get("hidden_legend")
    except OSError as e:
        raise VersemiError(f"{path}: cannot read the hidden labels ({e})") from None
    if legend is None:
        from versemi.data.anatomy import STRUCTURES

        return hidden, dict(STRUCTURES)
    if isinstance(legend, bytes):
        legend = legend.decode()
    return hidden, {str(k): int(v) for k, v in json.loads(legend).items()}


def load_cases(prepared_dir, ratio: int = 10, split: str = "test", datasets="all") -> list[dict]:
    """The cases of ``split`` with their hidden labels where the prepared files have them.

    Each dict holds what :func:`versemi.data.loaders.load_split_cases` gives (name, task, dataset,
    image, label, spacing) plus ``hidden_label`` (uint8 codes or None) and ``hidden_legend``
    ({structure: code} or None).
    """
    from versemi.data.loaders import load_split_cases
    from versemi.data.prepare import load_manifest

    prepared_dir = Path(prepared_dir)
    manifest = load_manifest(prepared_dir)
    files = {(ds, c["name"]): c["file"] for ds, e in manifest["datasets"].items() for c in e["cases"]}
    cases = load_split_cases(prepared_dir, datasets, ratio, split)
    for c in cases:
        hidden, legend = _read_hidden(prepared_dir / files[(c["dataset"], c["name"])])
        if hidden is not None and hidden.shape != c["image"].shape:
            raise VersemiError(f"{prepared_dir / files[(c['dataset'], c['name'])]}: hidden label shape "
                               f"{hidden.shape} != image shape {c['image'].shape}")
        c["hidden_label"], c["hidden_legend"] = hidden, legend
    return cases


def _case_dataset(case: dict) -> str:
    ds = case.get("dataset") or TASK_TO_DATASET.get(int(case.get("task", 0)))
    if ds not in DATASETS:
        raise VersemiError(f"case {case.get('name')!r}: unknown dataset/task ({case.get('dataset')!r}, "
                           f"{case.get('task')!r})")
    return ds


def prompt_truth(case: dict, prompt: int) -> np.ndarray | None:
    """The boolean mask that ``prompt`` should find on ``case``, or None when it is unknown.

    Prompts 1..4: the hidden mask of that dataset's target structure (all False when the scan does not
    contain it). Prompt 5 (synthetic) and the scan's own prompt: its own target, from the hidden labels or,
    without them (real data), from the label. Other prompts on a case without hidden labels: None.
    """
    ds = _case_dataset(case)
    own = DATASETS[ds].task_id
    hidden, legend = case.get("hidden_label"), case.get("hidden_legend")
    wanted = ds if prompt in (own, SYNTHETIC_TASK) else prompt_name(prompt)
    if hidden is not None:
        legend = legend or {}
        code = legend.get(TARGET_STRUCTURE[wanted])
        if code is None:  # the structure is not in this legend: it cannot be in the scan
            return np.zeros(hidden.shape, dtype=bool)
        return np.asarray(hidden) == int(code)
    if wanted == ds and case.get("label") is not None:
        return np.asarray(case["label"]) == 1
    return None


# ---------------------------------------------------------------------------------------------------
# features and t-SNE
# ---------------------------------------------------------------------------------------------------
@dataclass
class Features:
    """Pooled features of a set of volumes.

    meta: one row per volume (case, dataset, task, n_windows). arrays: ``global`` (N, 16f),
    ``decoder`` (N, f), ``prehead`` (N, 8), rows aligned with ``meta``.
    """

    meta: pd.DataFrame
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.meta)


def _tile_windows(image: np.ndarray, patch: Sequence[int], mode: str) -> np.ndarray:
    """(n, *patch) windows: the volume zero padded to at least the patch (centred, like the sliding
    window), then either tiled (stride = patch; the last tile on an axis ends at the border) or its
    central crop."""
    from versemi.evaluate import window_starts

    pads = [(max(p - s, 0) // 2, max(p - s, 0) - max(p - s, 0) // 2) for s, p in zip(image.shape, patch)]
    img = np.pad(image, pads, mode="constant") if any(sum(p) for p in pads) else image
    if mode == "center":
        starts = [[(d - p) // 2] for d, p in zip(img.shape, patch)]
    else:
        starts = [window_starts(d, p, p) for d, p in zip(img.shape, patch)]
    px, py, pz = patch
    return np.stack([img[x:x + px, y:y + py, z:z + pz] for x in starts[0] for y in starts[1] for z in starts[2]])


def extract_features(net, cases: Iterable[dict], patch, mode: str = "tiles", batch_size: int = 4,
                     device=None, progress: bool = False) -> Features:
    """Pooled, prompt-independent features of each volume.

    For every case the volume is cut into windows of ``patch`` (the run's ``eval_patch``):
    ``mode="tiles"`` (default) tiles the whole volume with stride = patch (the last tile on an axis is
    shifted to end at the border, so tiles may overlap a little), ``mode="center"`` takes the central
    window only. Each window goes through the network (prompt = the case's own task; the features used
    here do not depend on the prompt); per window ``global`` is the controller's image input and
    ``decoder`` / ``prehead`` are global averages over the window; the volume's vector is the mean over
    its windows (each window weighs the same). Tiling makes the vector describe the whole scan rather
    than whatever sits in its centre, at the cost of a few forward passes per volume.
    """
    from tqdm.auto import tqdm

    from versemi.evaluate import _check_patch
    from versemi.utils import get_device

    if mode not in ("tiles", "center"):
        raise VersemiError(f"extract_features: mode must be 'tiles' or 'center', got {mode!r}")
    patch = _check_patch(patch, "extract_features")
    dev = next(net.parameters()).device if device is None else get_device(str(device))
    rows, acc = [], {k: [] for k in FEATURES}
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        with torch.inference_mode():
            for case in tqdm(list(cases), desc="features", disable=not progress, unit="case"):
                ds = _case_dataset(case)
                image = np.asarray(case["image"], dtype=np.float32)
                if image.ndim != 3 or not np.isfinite(image).all():
                    raise VersemiError(f"case {case.get('name')!r}: image must be a finite 3-D array, "
                                       f"got shape {image.shape}")
                wins = torch.from_numpy(_tile_windows(image, patch, mode))
                sums = {k: 0.0 for k in FEATURES}
                for b0 in range(0, len(wins), batch_size):
                    x = wins[b0:b0 + batch_size, None].to(dev)
                    _, feats = net(x, int(DATASETS[ds].task_id), return_features=True)
                    pooled = {"global": feats["global"], "decoder": feats["decoder"].mean(dim=(2, 3, 4)),
                              "prehead": feats["prehead"].mean(dim=(2, 3, 4))}
                    for k in FEATURES:
                        sums[k] = sums[k] + pooled[k].float().sum(0).cpu()
                for k in FEATURES:
                    acc[k].append((sums[k] / len(wins)).numpy())
                rows.append({"case": str(case["name"]), "dataset": ds, "task": DATASETS[ds].task_id,
                             "n_windows": len(wins)})
    finally:
        for m, training in modes:
            m.training = training
    if not rows:
        raise VersemiError("extract_features: no cases")
    return Features(pd.DataFrame(rows), {k: np.stack(v).astype(np.float64) for k, v in acc.items()})


def standardise(X) -> np.ndarray:
    """Per-feature z-score (constant features become 0), so no channel dominates the distances."""
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit_transform(np.asarray(X, dtype=np.float64))


def tsne_embedding(X, seed: int = 2333, perplexity: float | None = None, standardize: bool = True) -> np.ndarray:
    """2-D t-SNE of the rows of X (scikit-learn, PCA initialisation, ``random_state=seed``).

    perplexity: default ``min(30, max(2, (n - 1) / 3))``, so that small sets (the smoke profile's 8
    volumes) get a valid value below n and large ones sklearn's usual 30. Features are standardised
    first unless ``standardize=False``.
    """
    from sklearn.manifold import TSNE

    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    if X.ndim != 2 or n < 3:
        raise VersemiError(f"tsne_embedding: need a 2-D array of at least 3 rows, got shape {X.shape}")
    if perplexity is None:
        perplexity = min(30.0, max(2.0, (n - 1) / 3.0))
    if not 0 < perplexity < n:
        raise VersemiError(f"tsne_embedding: perplexity must be in (0, {n}), got {perplexity}")
    Z = standardise(X) if standardize else X
    tsne = TSNE(n_components=2, perplexity=float(perplexity), init="pca", learning_rate="auto",
                random_state=int(seed), method="exact" if n < 200 else "barnes_hut")
    return tsne.fit_transform(Z).astype(np.float64)


def silhouette(X, labels) -> float:
    """Mean silhouette (Euclidean) of ``labels`` on the rows of X; NaN when undefined (fewer than 2
    groups, or as many groups as rows)."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    k = len(np.unique(labels))
    if k < 2 or k > len(labels) - 1:
        return math.nan
    return float(silhouette_score(np.asarray(X, dtype=np.float64), labels, metric="euclidean"))


def tsne_analysis(features: dict[str, Features], seed: int = 2333,
                  feature_names: Sequence[str] = ("global", "decoder")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """t-SNE and silhouettes of several models' features.

    Returns ``(embedding, scores)``: embedding has one row per (model, feature, volume) with columns
    model, feature, case, dataset, x, y; scores one row per (model, feature, space) with space
    'features (standardised)' or 't-SNE 2-D' and the silhouette of the dataset labels there.
    """
    emb_rows, score_rows = [], []
    for model, fe in features.items():
        labels = fe.meta["dataset"].to_numpy()
        for name in feature_names:
            if name not in fe.arrays:
                raise VersemiError(f"tsne_analysis: unknown feature {name!r}; have {', '.join(fe.arrays)}")
            X = fe.arrays[name]
            Y = tsne_embedding(X, seed)
            score_rows.append({"model": model, "feature": name, "space": "features (standardised)",
                               "dim": X.shape[1], "silhouette": silhouette(standardise(X), labels)})
            score_rows.append({"model": model, "feature": name, "space": "t-SNE 2-D", "dim": 2,
                               "silhouette": silhouette(Y, labels)})
            for (_, m), (x, y) in zip(fe.meta.iterrows(), Y):
                emb_rows.append({"model": model, "feature": name, "case": m["case"], "dataset": m["dataset"],
                                 "x": float(x), "y": float(y)})
    return pd.DataFrame(emb_rows), pd.DataFrame(score_rows)


def plot_tsne(embedding: pd.DataFrame, scores: pd.DataFrame | None = None, suptitle: str | None = None):
    """Grid of t-SNE scatter plots (rows: feature, columns: model), coloured by dataset."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    models = list(dict.fromkeys(embedding["model"]))
    feats = list(dict.fromkeys(embedding["feature"]))
    order = [d for d in DATASET_ORDER if d in set(embedding["dataset"])]
    palette = dict(zip(DATASET_ORDER, sns.color_palette("colorblind", len(DATASET_ORDER))))
    fig, axes = plt.subplots(len(feats), len(models), figsize=(3.6 * len(models), 3.3 * len(feats)),
                             squeeze=False)
    for i, f in enumerate(feats):
        for j, m in enumerate(models):
            ax = axes[i, j]
            sub = embedding[(embedding["model"] == m) & (embedding["feature"] == f)]
            sns.scatterplot(data=sub, x="x", y="y", hue="dataset", hue_order=order, palette=palette, ax=ax,
                            s=28, legend=(i == 0 and j == len(models) - 1))
            title = f"{m}\n{f} features"
            if scores is not None:
                s = scores[(scores["model"] == m) & (scores["feature"] == f) & (scores["space"] == "t-SNE 2-D")]
                if len(s):
                    title += f" (silhouette {s['silhouette'].iloc[0]:.2f})"
            ax.set_title(title, fontsize=8)
            ax.set_xlabel("t-SNE 1")
            ax.set_ylabel("t-SNE 2")
            ax.set_xticks([])
            ax.set_yticks([])
    leg = axes[0, -1].get_legend()
    if leg is not None:
        leg.set_bbox_to_anchor((1.02, 1.0))
        leg._loc = 2  # upper left of the anchor, outside the axes
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------
# prompt fidelity
# ---------------------------------------------------------------------------------------------------
Predictor = Callable[[dict, list[int]], Sequence[np.ndarray]]


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice as ``case_metrics`` gives it (0 for an empty prediction against a non-empty mask); 1 when
    both masks are empty (agreement, used by ``dice_to_own``)."""
    n_p, n_t = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    if n_p + n_t == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred & truth)) / float(n_p + n_t)


def _voxel_ml(case: dict) -> float:
    sp = case.get("spacing")
    if sp is None:
        return math.nan
    return float(np.prod(np.asarray(sp, dtype=np.float64))) / 1000.0


def _net_predictor(net, patch, stride, batch_size: int, protocol: str) -> Predictor:
    from versemi.evaluate import sliding_window_predict

    def predict(case: dict, prompts: list[int]):
        labels, _ = sliding_window_predict(net, np.asarray(case["image"]), list(prompts), patch, stride,
                                           protocol=protocol, batch_size=batch_size,
                                           name=str(case.get("name", "image")))
        return labels

    return predict


def prompt_fidelity(net, cases: Iterable[dict], prompts: Sequence[int] = (1, 2, 3, 4, 5), patch=None, stride=None,
                    *, predictor: Predictor | None = None, batch_size: int = 8, protocol: str = "paper",
                    model: str | None = None, progress: bool = False) -> pd.DataFrame:
    """Every case x every prompt: what the prediction finds against what the prompt asks for.

    Args:
        net: the network (ignored when ``predictor`` is given).
        cases: dicts as :func:`load_cases` gives (name, dataset/task, image, label, spacing,
            hidden_label, hidden_legend; the last two may be missing or None for real data).
        prompts: the prompts to test (the case's own prompt is always run, for the comparison).
        patch, stride: sliding-window size and step (``sliding_window_predict``; one pass per window
            serves every prompt). A stride coarser than the run's evaluation stride is fine for this
            analysis and makes it cheap.
        predictor: ``f(case, prompts) -> list of label maps`` replacing the network (for tests and
            other models).
        model: if given, a ``model`` column with this value is added.

    Returns a long DataFrame, one row per (case, prompt): case, dataset, scan_task, prompt,
    prompt_name, structure (what the prompt asks for on this scan), own_prompt, truth_known,
    target_voxels, target_present, pred_voxels, pred_ml, dice (where the target is present, else NaN),
    fp_voxels and fp_ml (the predicted volume where the target is absent, else NaN), own_pred_voxels (the
    own prompt's predicted volume), same_as_own (the prediction equals the own-prompt one voxel for
    voxel) and dice_to_own (their agreement; 1 when both are empty).
    """
    from tqdm.auto import tqdm

    prompts = [int(p) for p in prompts]
    if not prompts:
        raise VersemiError("prompt_fidelity: no prompts")
    for p in prompts:
        prompt_name(p)
    if predictor is None:
        if net is None or patch is None or stride is None:
            raise VersemiError("prompt_fidelity: give net, patch and stride (or a predictor)")
        predictor = _net_predictor(net, patch, stride, batch_size, protocol)
    rows = []
    for case in tqdm(list(cases), desc="prompt fidelity", disable=not progress, unit="case"):
        ds = _case_dataset(case)
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
            truth = prompt_truth(case, k)
            n_pred = int(np.count_nonzero(pred))
            wanted = ds if k in (own, SYNTHETIC_TASK) else prompt_name(k)
            row = {"case": str(case["name"]), "dataset": ds, "scan_task": own, "prompt": k,
                   "prompt_name": prompt_name(k), "structure": TARGET_STRUCTURE[wanted], "own_prompt": k == own,
                   "truth_known": truth is not None, "target_voxels": math.nan, "target_present": pd.NA,
                   "pred_voxels": n_pred, "pred_ml": n_pred * ml, "dice": math.nan, "fp_voxels": math.nan,
                   "fp_ml": math.nan, "own_pred_voxels": int(np.count_nonzero(own_pred)),
                   "same_as_own": bool(np.array_equal(pred, own_pred)),
                   "dice_to_own": _dice(pred, own_pred)}
            if truth is not None:
                n_t = int(np.count_nonzero(truth))
                row.update(target_voxels=n_t, target_present=n_t > 0)
                if n_t > 0:
                    row["dice"] = _dice(pred, truth)
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
    rows = [r for r in DATASET_ORDER if r in set(d["dataset"])]
    cols = sorted(set(d["prompt"]))
    mat = mat.reindex(index=rows, columns=cols)
    mat.columns = [prompt_label(int(c)) for c in mat.columns]
    mat.index.name, mat.columns.name = "scan dataset", "prompt"
    return mat


def fidelity_summary(df: pd.DataFrame) -> dict:
    """Headline numbers of one model's fidelity table.

    own_dice: mean Dice of the own prompt; synthetic_dice: mean Dice of prompt 5; cross_dice: mean Dice
    of other real-task prompts whose structure is present in the scan; offtarget_fp_voxels /
    offtarget_fp_ml: mean predicted volume of prompts whose structure is absent; offtarget_empty_rate:
    the fraction of those that predict nothing (the correct answer); ignored_rate: the fraction of
    other-task prompts whose prediction equals the own-task one, over the scans where the own-task
    prediction is not empty (two empty masks say nothing about the prompt; NaN if there is no such
    scan); n_offtarget: how many absent pairs.
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


def plot_matrices(mats: dict[str, pd.DataFrame], fmt=".2f", cmap="viridis", center=None,
                  vmin=None, vmax=None, suptitle: str | None = None, cbar_label=None):
    """Side-by-side annotated heatmaps (seaborn) of (scan dataset x prompt) tables; empty cells (NaN:
    no such pair) stay blank. ``fmt``, ``cmap``, ``center`` and ``cbar_label`` may be one value or a
    list with one per panel; ``vmin``/``vmax`` are shared (None: per panel; a panel with a ``center``
    gets limits symmetric about it, so equal values never look like a difference). Columns that are
    empty in a panel (e.g. the synthetic prompt in a false-positive table: its structure is never
    absent) are left out of that panel."""
    import matplotlib.pyplot as plt
    import seaborn as sns

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


def _best_slice(mask: np.ndarray) -> int:
    counts = mask.reshape(-1, mask.shape[-1]).sum(0)
    return int(np.argmax(counts)) if counts.any() else mask.shape[-1] // 2


def failure_gallery(net, cases: Sequence[dict], worst: pd.DataFrame, patch=None, stride=None, *,
                    predictor: Predictor | None = None, batch_size: int = 8, protocol: str = "paper",
                    suptitle: str | None = None):
    """Figure with one row per failure of ``worst`` (from :func:`worst_cases`): the image slice, the
    prompted structure's ground truth (green contour) and the prediction (red contour).

    The predictions are recomputed for just these (case, prompt) pairs (same arguments as
    :func:`prompt_fidelity`). The slice (last axis) is the one with the most ground-truth-or-predicted
    voxels.
    """
    import matplotlib.pyplot as plt

    from versemi.viz import overlay

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
        truth = prompt_truth(case, k)
        gt = np.zeros_like(pred) if truth is None else truth
        z = _best_slice(gt | pred)
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


# ---------------------------------------------------------------------------------------------------
# notebook-level helpers (runs in, tables and figures out)
# ---------------------------------------------------------------------------------------------------
def data_note(profile: str, cases: Sequence[dict]) -> str:
    """'demo profile, phantom data' (every case carries hidden labels) or '<profile> profile, real data':
    what every caption says about its numbers."""
    phantom = bool(cases) and all(c.get("hidden_label") is not None for c in cases)
    return f"{profile} profile, {'phantom' if phantom else 'real'} data"


def features_for_runs(runs: dict[str, Path], cases: Sequence[dict], mode: str = "tiles", device=None,
                      progress: bool = False) -> dict[str, Features]:
    """label -> :func:`extract_features` of that run's network (windows of the run's ``eval_patch``)."""
    from versemi.train import load_run_net

    out = {}
    for label, run_dir in runs.items():
        net, cfg = load_run_net(run_dir, device=device)
        out[label] = extract_features(net, cases, cfg.eval_patch, mode=mode, progress=progress)
    return out


def fidelity_for_runs(runs: dict[str, Path], cases: Sequence[dict], prompts: Sequence[int] = (1, 2, 3, 4, 5),
                      stride=None, device=None, progress: bool = False) -> pd.DataFrame:
    """:func:`prompt_fidelity` of each run's network, concatenated with a ``model`` column.

    The window is the run's ``eval_patch``; ``stride`` is the window step of this analysis: None means half
    the window (16³ for the 32³ windows of the demo profile), coarser than the paper's evaluation stride
    (16/16/4) and the demo's (16/16/8), because every volume is segmented with every prompt here;
    ``"eval"`` means the run's own ``eval_stride``.
    """
    from versemi.train import load_run_net

    parts = []
    for label, run_dir in runs.items():
        net, cfg = load_run_net(run_dir, device=device)
        st = analysis_stride(cfg, stride)
        parts.append(prompt_fidelity(net, cases, prompts, cfg.eval_patch, st, model=label, progress=progress))
    return pd.concat(parts, ignore_index=True)


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


def fidelity_matrices(fid: pd.DataFrame, value: str = "dice") -> dict[str, pd.DataFrame]:
    """model -> :func:`fidelity_matrix` of that model's rows (in the table's order of models)."""
    return {m: fidelity_matrix(fid[fid["model"] == m].drop(columns="model"), value)
            for m in dict.fromkeys(fid["model"])}


SUMMARY_NAMES = {
    "own_dice": "Dice, own prompt",
    "synthetic_dice": "Dice, synthetic prompt 5 (own target)",
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


def glue_values(table: pd.DataFrame, short: dict[str, str], prefix: str = "") -> dict[str, float]:
    """Flatten a (model x metric) table into ``{prefix + metric + '_' + short[model]: value}`` for glue."""
    out = {}
    for model, key in short.items():
        if model not in table.index:
            raise VersemiError(f"glue_values: model {model!r} is not in the table ({', '.join(table.index)})")
        for col, v in table.loc[model].items():
            out[f"{prefix}{col}_{key}"] = float(v)
    return out


def failure_gallery_for_run(run_dir, cases: Sequence[dict], worst: pd.DataFrame, model: str | None = None,
                            stride=None, device=None, suptitle: str | None = None):
    """:func:`failure_gallery` with the network of a run (window = its ``eval_patch``, ``stride`` as in
    :func:`fidelity_for_runs`), for the rows of ``worst`` whose ``model`` is ``model`` (all if None)."""
    from versemi.train import load_run_net

    net, cfg = load_run_net(run_dir, device=device)
    if model is not None:
        worst = worst[worst["model"] == model]
    return failure_gallery(net, cases, worst, cfg.eval_patch, analysis_stride(cfg, stride), suptitle=suptitle)


def silhouette_glue(scores: pd.DataFrame, short: dict[str, str]) -> dict[str, float]:
    """``{'sil_<tsne|raw>_<feature>_<short[model]>': silhouette}`` from :func:`tsne_analysis` scores."""
    space_key = {"t-SNE 2-D": "tsne", "features (standardised)": "raw"}
    out = {}
    for _, r in scores.iterrows():
        if r["model"] in short:
            out[f"sil_{space_key[r['space']]}_{r['feature']}_{short[r['model']]}"] = float(r["silhouette"])
    return out


def silhouette_table(scores: pd.DataFrame) -> pd.DataFrame:
    """(feature, space) x model table of the silhouettes of :func:`tsne_analysis`."""
    t = scores.pivot_table(index=["feature", "space"], columns="model", values="silhouette", sort=False)
    return t[list(dict.fromkeys(scores["model"]))]


def silhouette_verdict(scores: pd.DataFrame, a: str, b: str, feature: str = "global",
                       space: str = "t-SNE 2-D") -> str:
    """A phrase for the prose saying which of models a and b separates the datasets better, e.g.
    'higher for VerSemi 10% (0.41) than for Uni-Sup-only 10% (0.22)'."""
    def get(m):
        s = scores[(scores["model"] == m) & (scores["feature"] == feature) & (scores["space"] == space)]
        if s.empty:
            raise VersemiError(f"silhouette_verdict: no score for {m!r} / {feature!r} / {space!r}")
        return float(s["silhouette"].iloc[0])

    sa, sb = get(a), get(b)
    if math.isnan(sa) or math.isnan(sb):
        return "undefined for at least one model (too few volumes or datasets)"
    if abs(sa - sb) < 0.005:
        return f"the same for {a} and {b} ({sa:.2f})"
    hi, lo = ((a, sa), (b, sb)) if sa > sb else ((b, sb), (a, sa))
    return f"higher for {hi[0]} ({hi[1]:.2f}) than for {lo[0]} ({lo[1]:.2f})"


def save_figure(fig, path) -> Path:
    """Write a figure as PNG (parent folders created); returns the path. The figure stays open so the
    notebook still shows it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    return path


def save_table(df: pd.DataFrame, path, index: bool = True) -> Path:
    """Write a table as CSV (parent folders created); returns the path."""
    from versemi.utils import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=index)
    return path


def save_matrices(mats: dict[str, pd.DataFrame], folder, stem: str) -> list[Path]:
    """Write each matrix as ``<folder>/<stem>_<slug of its key>.csv``."""
    import re

    paths = []
    for key, m in mats.items():
        slug = re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")
        paths.append(save_table(m, Path(folder) / f"{stem}_{slug}.csv"))
    return paths


def compare_phrase(a: float, b: float, a_name: str, b_name: str, fmt: str = ".3f", unit: str = "") -> str:
    """'lower for A (1.0) than for B (3.0)' / 'higher ...' / 'the same ...' for the prose."""
    u = f" {unit}" if unit else ""
    if any(isinstance(v, float) and math.isnan(v) for v in (a, b)):
        return "not defined for at least one of the two (no such pair)"
    if f"{a:{fmt}}" == f"{b:{fmt}}":
        return f"the same for {a_name} and {b_name} ({a:{fmt}}{u})"
    word = "lower" if a < b else "higher"
    return f"{word} for {a_name} ({a:{fmt}}{u}) than for {b_name} ({b:{fmt}}{u})"
