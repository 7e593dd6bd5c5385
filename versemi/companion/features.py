"""Do a network's image features separate the datasets? (the t-SNE notebook, 05_tsne)

:func:`extract_features` pools, per test volume, the network's prompt-independent features
(``VerSemiNet(..., return_features=True)`` in ``versemi/model.py``): ``global`` (the controller's image
input: BatchNorm + ReLU + global average pool of the bottleneck for the dynamic head; the plain GAP of the
bottleneck for the other heads), and the global averages of ``decoder`` (the last up-step, f channels) and
``prehead`` (the 8-channel pre-classifier output that the dynamic head convolves). :func:`tsne_embedding`
maps them to 2-D (scikit-learn t-SNE, fixed seed) and :func:`silhouette` scores how well the datasets
separate, on the embedding and on the features themselves. :func:`tsne_analysis` does both for several
models; :func:`plot_tsne`, :func:`silhouette_table`, :func:`silhouette_glue` and
:func:`silhouette_verdict` turn the result into the page's figure, table and prose.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from versemi.data.registry import ALL_DATASETS, DATASETS
from versemi.data.truth import case_dataset
from versemi.evaluate import check_patch, window_starts
from versemi.runs import load_run_net
from versemi.utils import VersemiError, get_device

__all__ = [
    "FEATURES", "Features", "extract_features", "standardise", "tsne_embedding", "silhouette", "tsne_analysis",
    "plot_tsne", "features_for_runs", "silhouette_glue", "silhouette_table", "silhouette_verdict",
]

FEATURES = ("global", "decoder", "prehead")


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
    if mode not in ("tiles", "center"):
        raise VersemiError(f"extract_features: mode must be 'tiles' or 'center', got {mode!r}")
    patch = check_patch(patch, "extract_features")
    dev = next(net.parameters()).device if device is None else get_device(str(device))
    rows, acc = [], {k: [] for k in FEATURES}
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        with torch.inference_mode():
            for case in tqdm(list(cases), desc="features", disable=not progress, unit="case"):
                ds = case_dataset(case)
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


# ---------------------------------------------------------------------------------------------- t-SNE
def standardise(X) -> np.ndarray:
    """Per-feature z-score (constant features become 0), so no channel dominates the distances."""
    return StandardScaler().fit_transform(np.asarray(X, dtype=np.float64))


def tsne_embedding(X, seed: int = 2333, perplexity: float | None = None, standardize: bool = True) -> np.ndarray:
    """2-D t-SNE of the rows of X (scikit-learn, PCA initialisation, ``random_state=seed``).

    perplexity: default ``min(30, max(2, (n - 1) / 3))``, so that small sets (the smoke profile's 8
    volumes) get a valid value below n and large ones sklearn's usual 30. Features are standardised
    first unless ``standardize=False``.
    """
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
    models = list(dict.fromkeys(embedding["model"]))
    feats = list(dict.fromkeys(embedding["feature"]))
    order = [d for d in ALL_DATASETS if d in set(embedding["dataset"])]
    palette = dict(zip(ALL_DATASETS, sns.color_palette("colorblind", len(ALL_DATASETS))))
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


# ---------------------------------------------------------------------------------------------- runs in, tables out
def features_for_runs(runs: dict[str, Path], cases: Sequence[dict], mode: str = "tiles", device=None,
                      progress: bool = False) -> dict[str, Features]:
    """label -> :func:`extract_features` of that run's network (windows of the run's ``eval_patch``)."""
    out = {}
    for label, run_dir in runs.items():
        net, cfg = load_run_net(run_dir, device=device)
        out[label] = extract_features(net, cases, cfg.eval_patch, mode=mode, progress=progress)
    return out


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
