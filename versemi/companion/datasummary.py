"""What the prepared data hold: the tables and figures of the data notebook (01_data).

Everything here reads what ``versemi prepare`` wrote (the prepared folder's ``manifest.json`` and case
files, ``versemi/data/prepare.py``) and returns pandas DataFrames or matplotlib Figures; the notebook only
calls these functions and saves / displays the results (``versemi/companion/figures.py``).

* tables: :func:`preprocessing_table`, :func:`split_table`, :func:`case_table`, :func:`dataset_stats`,
  :func:`hidden_structure_table`, :func:`case_counts`;
* cases: :func:`example_cases` (the first cases of a split, optionally with their hidden labels);
* figures: :func:`plot_mid_slices`, :func:`plot_intensity_histograms`, :func:`plot_hidden_labels`.

Volumes are (X, Y, Z) arrays in the prepared HDF5 axis order; slices are taken along the last axis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from versemi.companion.figures import best_slice, save_figure
from versemi.data.prepare import load_case, load_manifest
from versemi.data.registry import ALL_DATASETS, DATASETS, TASK_TO_DATASET, authors_split
from versemi.utils import VersemiError

__all__ = [
    "SPLIT_COLUMNS", "TARGET_STRUCTURES", "preprocessing_table", "split_table", "case_table", "dataset_stats",
    "hidden_structure_table", "case_counts", "example_cases", "plot_mid_slices", "plot_intensity_histograms",
    "plot_hidden_labels",
]

SPLIT_COLUMNS = ("labeled", "unlabeled", "unlabeled_train", "val", "test")
#: The structure each dataset labels (hidden-label names, from the registry), in the paper's dataset order.
TARGET_STRUCTURES: tuple[str, ...] = tuple(DATASETS[d].structure for d in ALL_DATASETS)


def _ordered(datasets: Iterable[str]) -> list[str]:
    """Dataset names in the paper's order (unknown names last)."""
    order = {d: i for i, d in enumerate(ALL_DATASETS)}
    return sorted(datasets, key=lambda d: order.get(d, 99))


def _fmt_vec(v, digits: int = 2) -> str:
    return " x ".join(f"{float(x):.{digits}f}".rstrip("0").rstrip(".") for x in v)


# ---------------------------------------------------------------------------------------------- tables
def preprocessing_table(prepared) -> pd.DataFrame:
    """One row per dataset: modality, intensity rule (HU window or z-score), target spacing (mm) and its
    rule, crop rule, minimum size and resampling, from the manifest's preprocessing records."""
    m = load_manifest(prepared)
    rows = []
    for ds in _ordered(m["datasets"]):
        e = m["datasets"][ds]
        p = e["preprocessing"]
        if p.get("window_hu"):
            lo, hi = p["window_hu"]
            intensity = f"clip HU to [{lo:g}, {hi:g}], scale to [0, 1]"
        else:
            intensity = p.get("intensity", "")
        ts = p.get("target_spacing")
        spacing = (f"{_fmt_vec(ts)} ({p.get('spacing_rule', '')})" if ts else "native (not resampled)")
        crop = p.get("crop", "")
        if p.get("margin_mm") is not None and "margin" in crop:
            crop = crop.replace("margin", f"{p['margin_mm']:g} mm", 1)
        rows.append({"dataset": ds, "task": e["task"], "title": e["title"], "modality": e["modality"],
                     "intensity": intensity, "target spacing (mm)": spacing, "crop": crop,
                     "min size (voxels)": p.get("min_size"), "resample": p.get("resample", ""),
                     "prep version": p.get("version", m.get("prep_version", ""))})
    return pd.DataFrame(rows)


def split_table(prepared, ratios: Sequence[int] = (10, 20)) -> pd.DataFrame:
    """Case counts per dataset and labeled ratio: labeled / unlabeled (of which val and unlabeled_train) /
    test as prepared, beside the authors' list sizes; ``complete`` says whether every case of the authors'
    lists is present (False for the phantom profiles with fewer cases)."""
    m = load_manifest(prepared)
    rows = []
    for r in ratios:
        key = str(int(r))
        for ds in _ordered(m["datasets"]):
            e = m["datasets"][ds]
            if key not in e["splits"]:
                raise VersemiError(f"{prepared}: dataset {ds!r} has no {key}% split; ratios there: "
                                   f"{', '.join(e['splits'])}")
            s = e["splits"][key]
            a = authors_split(ds)
            rows.append({"dataset": ds, "ratio (%)": int(r), **{k: len(s[k]) for k in SPLIT_COLUMNS},
                         "authors labeled": len(a[f"labeled_{key}"]), "authors unlabeled": len(a[f"unlabeled_{key}"]),
                         "authors test": len(a["test"]), "complete": bool(e["complete"]),
                         "missing authors' cases": e["counts"]["missing_authors_cases"],
                         "excluded": len(e.get("excluded", []))})
    return pd.DataFrame(rows)


def case_table(prepared, max_voxels: int = 100_000) -> pd.DataFrame:
    """One row per prepared case: dataset, name, labeled, shape, spacing, intensity statistics (mean, std,
    1st / 99th percentile over an every-k-th-voxel subsample of at most ``max_voxels``), label fraction,
    and for phantoms whether the hidden complete label holds each dataset's target structure
    (``has_pancreas``, ``has_left_atrium``, ``has_spleen``, ``has_tumour``; None without hidden labels)."""
    prepared = Path(prepared)
    m = load_manifest(prepared)
    rows = []
    for ds in _ordered(m["datasets"]):
        for c in m["datasets"][ds]["cases"]:
            d = load_case(prepared / c["file"])
            img = np.asarray(d["image"], dtype=np.float32).ravel()
            sub = img[::max(1, img.size // max_voxels)]
            p1, p99 = np.percentile(sub, [1, 99])
            row = {"dataset": ds, "case": c["name"], "labeled": bool(c["labeled"]),
                   "shape": "x".join(str(s) for s in c["shape"]), "nx": c["shape"][0], "ny": c["shape"][1],
                   "nz": c["shape"][2], "spacing (mm)": _fmt_vec(c["spacing"], 3),
                   "mean": float(sub.mean()), "std": float(sub.std()), "p1": float(p1), "p99": float(p99),
                   "label fraction": c.get("label_fraction")}
            hidden, legend = d["hidden_label"], d["hidden_legend"]
            for struct in TARGET_STRUCTURES:
                row[f"has_{struct}"] = (bool(np.any(hidden == legend[struct])) if hidden is not None and legend
                                        else None)
            rows.append(row)
    return pd.DataFrame(rows)


def _shape_of(g: pd.DataFrame, how: str) -> str:
    return "x".join(str(int(g[a].agg(how))) for a in ("nx", "ny", "nz"))


def dataset_stats(cases: pd.DataFrame) -> pd.DataFrame:
    """Per dataset (from :func:`case_table`): case counts, shape range, spacing, intensity statistics
    (median over cases of the per-case mean / std / p1 / p99) and the mean label fraction."""
    rows = []
    for ds in _ordered(cases["dataset"].unique()):
        g = cases[cases["dataset"] == ds]
        spacings = g["spacing (mm)"].value_counts()
        rows.append({"dataset": ds, "modality": DATASETS[ds].modality if ds in DATASETS else "",
                     "cases": len(g), "labeled on disk": int(g["labeled"].sum()),
                     "shape min": _shape_of(g, "min"), "shape max": _shape_of(g, "max"),
                     "spacing (mm)": spacings.index[0] + (" (varies)" if len(spacings) > 1 else ""),
                     "intensity mean": float(g["mean"].median()), "intensity std": float(g["std"].median()),
                     "intensity p1": float(g["p1"].median()), "intensity p99": float(g["p99"].median()),
                     "label fraction": float(pd.to_numeric(g["label fraction"]).mean())})
    return pd.DataFrame(rows)


def hidden_structure_table(cases: pd.DataFrame) -> pd.DataFrame:
    """Per dataset (from :func:`case_table`): the fraction of its scans whose hidden complete label map holds
    each dataset's target structure (phantoms only; empty for real data). E.g. pancreas-set scans also hold
    the spleen, so the spleen prompt has something to find in them."""
    cols = [f"has_{s}" for s in TARGET_STRUCTURES]
    known = cases.dropna(subset=cols)
    if known.empty:
        return pd.DataFrame(columns=["dataset", "cases", *TARGET_STRUCTURES])
    rows = []
    for ds in _ordered(known["dataset"].unique()):
        g = known[known["dataset"] == ds]
        rows.append({"dataset": ds, "cases": len(g),
                     **{s: float(g[f"has_{s}"].astype(bool).mean()) for s in TARGET_STRUCTURES}})
    return pd.DataFrame(rows)


def case_counts(prepared, ratios: Sequence[int] = (10, 20)) -> dict[str, int]:
    """Flat counts for glue: ``n_cases``, ``n_cases_<ds>``, ``n_test_<ds>``, and per ratio
    ``n_labeled_<r>`` / ``n_unlabeled_<r>`` (all datasets) and ``n_labeled_<r>_<ds>``."""
    m = load_manifest(prepared)
    out: dict[str, int] = {"n_cases": 0}
    for ds, e in m["datasets"].items():
        out[f"n_cases_{ds}"] = len(e["cases"])
        out["n_cases"] += len(e["cases"])
        first = next(iter(e["splits"].values()))
        out[f"n_test_{ds}"] = len(first["test"])
    for r in ratios:
        key = str(int(r))
        out[f"n_labeled_{key}"] = out[f"n_unlabeled_{key}"] = 0
        for ds, e in m["datasets"].items():
            s = e["splits"][key]
            out[f"n_labeled_{key}_{ds}"] = len(s["labeled"])
            out[f"n_labeled_{key}"] += len(s["labeled"])
            out[f"n_unlabeled_{key}"] += len(s["unlabeled"])
    return out


# ---------------------------------------------------------------------------------------------- cases
def example_cases(prepared, split: str = "labeled", ratio: int = 10, per_dataset: int = 1,
                  hidden: bool = False) -> list[dict]:
    """The first ``per_dataset`` cases of ``split`` (manifest order) of every dataset, loaded.

    Each dict: name, dataset, task, image (X, Y, Z) float32, label (X, Y, Z) uint8 or None, spacing, and
    with ``hidden=True`` also hidden_label (X, Y, Z) uint8 or None and hidden_legend (structure -> code) or
    None, the keys :func:`versemi.data.truth.prompt_truth` reads. A dataset whose split is empty falls back
    to its test cases.
    """
    prepared = Path(prepared)
    m = load_manifest(prepared)
    out = []
    for ds in _ordered(m["datasets"]):
        e = m["datasets"][ds]
        s = e["splits"][str(int(ratio))]
        names = (s.get(split) or s["test"])[:per_dataset]
        files = {c["name"]: c["file"] for c in e["cases"]}
        for n in names:
            d = load_case(prepared / files[n])
            c = {"name": n, "dataset": ds, "task": int(d["attrs"]["task"]), "image": d["image"],
                 "label": d["label"], "spacing": tuple(d["attrs"]["spacing"])}
            if hidden:
                c["hidden_label"], c["hidden_legend"] = d["hidden_label"], d["hidden_legend"]
            out.append(c)
    return out


# ---------------------------------------------------------------------------------------------- figures
def _get(case, key, default=None):
    """A field of a case dict or of a case object (``versemi.data.readers`` cases)."""
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


def _title(ds: str) -> str:
    return DATASETS[ds].title if ds in DATASETS else ds


def plot_mid_slices(cases, out_png=None):
    """One column per dataset (its first case): the middle slice along the last axis, label contour in red.

    cases: dicts or case objects with image, label (or None), name, and dataset or task.
    Returns the matplotlib Figure; saves it to ``out_png`` when given.
    """
    first: dict[str, object] = {}
    for c in cases:
        first.setdefault(_dataset_of(c), c)
    chosen = [first[d] for d in _ordered(first)]
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.2 * len(chosen), 3.4), squeeze=False)
    for ax, case in zip(axes[0], chosen):
        image = np.asarray(_get(case, "image"))
        z = image.shape[-1] // 2
        ax.imshow(image[..., z].T, cmap="gray", origin="lower")
        label = _get(case, "label")
        if label is not None and np.asarray(label)[..., z].any():
            ax.contour(np.asarray(label)[..., z].T, levels=[0.5], colors="red", linewidths=1.0)
        ax.set_title(f"{_title(_dataset_of(case))}\n{_get(case, 'name', '')}  slice {z}/{image.shape[-1]}",
                     fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    if out_png is not None:
        save_figure(fig, out_png)
    return fig


def plot_intensity_histograms(cases, bins: int = 64, max_voxels: int = 200_000):
    """One panel per dataset: voxel intensity histogram of all its cases, with the label's voxels overlaid.

    Deterministic subsampling (every k-th voxel) keeps it fast on large volumes. Returns the Figure.
    """
    groups: dict[str, list] = {}
    for c in cases:
        groups.setdefault(_dataset_of(c), []).append(c)
    names = _ordered(groups)
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
        ax.set_title(_title(ds), fontsize=8)
        ax.set_xlabel("intensity (prepared)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _structure_colors(n_codes: int) -> np.ndarray:
    base = [matplotlib.colormaps["tab20"](i) for i in range(20)] + \
           [matplotlib.colormaps["Set3"](i) for i in range(12)]
    return np.array([(0, 0, 0, 0)] + base[: max(0, n_codes - 1)])


def plot_hidden_labels(cases: Sequence[dict], title: str = "", out_png=None):
    """One panel per case (e.g. one per dataset from :func:`example_cases` with ``hidden=True``): the slice
    with the most voxels of the dataset's own target, the image in grey under the complete hidden label
    map coloured by structure (same colour per structure in every panel), the exposed label outlined in
    white, and one legend of the structures shown. Returns the Figure."""
    cases = [c for c in cases if c.get("hidden_label") is not None and c.get("hidden_legend")]
    if not cases:
        raise VersemiError("plot_hidden_labels: no case with a hidden complete label map (real data have none)")
    legend = cases[0]["hidden_legend"]
    names = {code: name for name, code in legend.items()}
    n_codes = max(legend.values()) + 1
    colors = _structure_colors(n_codes)
    cmap = ListedColormap(colors)
    fig, axes = plt.subplots(1, len(cases), figsize=(3.0 * len(cases), 3.6), squeeze=False)
    shown: set[int] = set()
    for ax, c in zip(axes[0], cases):
        hid = np.asarray(c["hidden_label"])
        z = best_slice(hid == legend[DATASETS[c["dataset"]].structure])
        ax.imshow(np.asarray(c["image"])[..., z].T, cmap="gray", origin="lower")
        sl = hid[..., z]
        ax.imshow(np.ma.masked_equal(sl, 0).T, cmap=cmap, vmin=-0.5, vmax=n_codes - 0.5, origin="lower",
                  alpha=0.6, interpolation="nearest")
        if c.get("label") is not None and np.asarray(c["label"])[..., z].any():
            ax.contour(np.asarray(c["label"])[..., z].T, levels=[0.5], colors="white", linewidths=1.0)
        shown |= {int(v) for v in np.unique(sl) if v}
        ax.set_title(f"{DATASETS[c['dataset']].title}\n{c['name']} slice {z}", fontsize=8)
        ax.set_axis_off()
    handles = [Patch(color=colors[k], label=names.get(k, str(k))) for k in sorted(shown)]
    handles.append(Patch(facecolor="none", edgecolor="0.2", label="exposed label (white outline)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(8, len(handles)), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.12 + 0.04 * (len(handles) // 8), 1, 0.95 if title else 1))
    if out_png is not None:
        save_figure(fig, out_png)
    return fig


def unseen_site(data_dir, profile: str, seed: int, prepared) -> tuple[pd.DataFrame | None, str]:
    """The unseen-site test set (``versemi/data/external.py``: BTCV spleen, or its phantoms) described
    against the MSD spleen (:func:`versemi.data.external.site_shift`), and a sentence for the page; ``(None,
    why)`` when the profile has no such set (real data without a BTCV download: the sentence says what to do)."""
    from versemi.data.external import ensure_external, load_external_manifest, site_shift
    from versemi.utils import VersemiError

    try:
        external = ensure_external(data_dir, profile, seed)
    except VersemiError as e:
        return None, f"no unseen-site test set for this profile: {e}"
    shift = site_shift(prepared, external)
    manifest = load_external_manifest(external)
    kind = "phantoms written in the BTCV layout" if manifest.get("phantoms") else "BTCV scans"
    return shift, (f"{len(manifest['cases'])} {kind}, prepared like the MSD spleen (same spacing, window and "
                   f"crop rule); scored with the spleen prompt in the SOTA chapter")
