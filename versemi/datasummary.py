"""Tables and figures behind the data, training and explorer notebooks (01_data, 02_train, 07_explorer).

Everything here reads what earlier stages wrote (the prepared folder's ``manifest.json`` and case files,
a run folder's ``metrics.csv`` / ``val.csv`` / ``DONE.json``) and returns pandas DataFrames, matplotlib
Figures or ipywidgets; the notebooks only call these functions and save / display the results.

Sections:

* data tables: :func:`preprocessing_table`, :func:`split_table`, :func:`case_table`,
  :func:`dataset_stats`, :func:`hidden_structure_table`, :func:`case_counts`, :func:`data_kind`;
* data figures: :func:`example_cases`, :func:`plot_hidden_labels`;
* run summaries: :func:`val_table`, :func:`plot_val_dice`, :func:`ema_vs_student`, :func:`test_table`;
* explorer: :func:`explorer_cases`, :func:`prompt_truth`, :func:`predict_prompts`, :func:`prompt_scores`,
  :func:`explorer_predictions`, :func:`static_explorers`, :func:`plot_prompt_grid`,
  :func:`live_explorer_for_run`.

Volumes are (X, Y, Z) arrays in the prepared HDF5 axis order; slices are taken along the last axis.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from versemi.data.registry import DATASETS, SYNTHETIC_TASK, TASK_TO_DATASET, authors_split
from versemi.utils import VersemiError

#: The structure (hidden-label name) that each dataset labels; prompt k asks for the target of dataset k.
TARGET_STRUCTURE = {"pancreas": "pancreas", "la": "left_atrium", "spleen": "spleen", "lung": "tumour"}
PROMPTS = (1, 2, 3, 4, SYNTHETIC_TASK)
SPLIT_COLUMNS = ("labeled", "unlabeled", "unlabeled_train", "val", "test")


def _manifest(prepared) -> dict:
    from versemi.data.prepare import load_manifest

    return load_manifest(Path(prepared))


def _ordered(datasets: Iterable[str]) -> list[str]:
    order = {d: i for i, d in enumerate(DATASETS)}
    return sorted(datasets, key=lambda d: order.get(d, 99))


def _fmt_vec(v, digits: int = 2) -> str:
    return " x ".join(f"{float(x):.{digits}f}".rstrip("0").rstrip(".") for x in v)


# ---------------------------------------------------------------------------------------------- data tables
def data_kind(prepared) -> str:
    """'phantom data' when the prepared cases are phantoms (they carry hidden complete labels), else
    'real data'. Used in every caption."""
    m = _manifest(prepared)
    hidden = [c.get("has_hidden", False) for e in m["datasets"].values() for c in e["cases"]]
    return "phantom data" if hidden and all(hidden) else "real data"


def preprocessing_table(prepared) -> pd.DataFrame:
    """One row per dataset: modality, intensity rule (HU window or z-score), target spacing (mm) and its
    rule, crop rule, minimum size and resampling, from the manifest's preprocessing records."""
    m = _manifest(prepared)
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
    m = _manifest(prepared)
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
    (``has_pancreas``, ``has_left_atrium``, ``has_spleen``, ``has_tumour``)."""
    from versemi.data.prepare import load_case

    prepared = Path(prepared)
    m = _manifest(prepared)
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
            hidden, legend = d.get("hidden_label"), d["attrs"].get("hidden_legend")
            for struct in TARGET_STRUCTURE.values():
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
    cols = [f"has_{s}" for s in TARGET_STRUCTURE.values()]
    known = cases.dropna(subset=cols)
    if known.empty:
        return pd.DataFrame(columns=["dataset", "cases", *TARGET_STRUCTURE.values()])
    rows = []
    for ds in _ordered(known["dataset"].unique()):
        g = known[known["dataset"] == ds]
        rows.append({"dataset": ds, "cases": len(g),
                     **{s: float(g[f"has_{s}"].astype(bool).mean()) for s in TARGET_STRUCTURE.values()}})
    return pd.DataFrame(rows)


def case_counts(prepared, ratios: Sequence[int] = (10, 20)) -> dict[str, int]:
    """Flat counts for glue: ``n_cases``, ``n_cases_<ds>``, ``n_test_<ds>``, and per ratio
    ``n_labeled_<r>`` / ``n_unlabeled_<r>`` (all datasets) and ``n_labeled_<r>_<ds>``."""
    m = _manifest(prepared)
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


# --------------------------------------------------------------------------------------------- data figures
def example_cases(prepared, split: str = "labeled", ratio: int = 10, per_dataset: int = 1,
                  hidden: bool = False) -> list[dict]:
    """The first ``per_dataset`` cases of ``split`` (manifest order) of every dataset, loaded.

    Each dict: name, dataset, task, image (X, Y, Z) float32, label (X, Y, Z) uint8 or None, spacing, and
    with ``hidden=True`` also hidden_label (X, Y, Z) uint8 or None and legend (structure -> code) or None.
    A dataset whose split is empty falls back to its test cases.
    """
    from versemi.data.prepare import load_case

    prepared = Path(prepared)
    m = _manifest(prepared)
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
                c["hidden_label"] = d.get("hidden_label")
                c["legend"] = d["attrs"].get("hidden_legend")
            out.append(c)
    return out


def _structure_colors(n_codes: int) -> np.ndarray:
    import matplotlib

    base = [matplotlib.colormaps["tab20"](i) for i in range(20)] + \
           [matplotlib.colormaps["Set3"](i) for i in range(12)]
    cols = np.array([(0, 0, 0, 0)] + base[: max(0, n_codes - 1)])
    return cols


def best_slice(mask: np.ndarray) -> int:
    """Index along the last axis with the most foreground voxels of ``mask`` (middle if empty)."""
    area = np.asarray(mask).reshape(-1, mask.shape[-1]).sum(axis=0)
    return int(np.argmax(area)) if area.any() else mask.shape[-1] // 2


def plot_hidden_labels(cases: Sequence[dict], title: str = "", out_png=None):
    """One panel per case (e.g. one per dataset from :func:`example_cases` with ``hidden=True``): the slice
    with the most voxels of the dataset's own target, the image in grey under the complete hidden label
    map coloured by structure (same colour per structure in every panel), the exposed label outlined in
    white, and one legend of the structures shown. Returns the Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    cases = [c for c in cases if c.get("hidden_label") is not None and c.get("legend")]
    if not cases:
        raise VersemiError("plot_hidden_labels: no case with a hidden complete label map (real data have none)")
    legend = cases[0]["legend"]
    names = {code: name for name, code in legend.items()}
    n_codes = max(legend.values()) + 1
    colors = _structure_colors(n_codes)
    cmap = ListedColormap(colors)
    fig, axes = plt.subplots(1, len(cases), figsize=(3.0 * len(cases), 3.6), squeeze=False)
    shown: set[int] = set()
    for ax, c in zip(axes[0], cases):
        hid = np.asarray(c["hidden_label"])
        target = hid == legend[TARGET_STRUCTURE[c["dataset"]]]
        z = best_slice(target)
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


def save_figure(fig, path, dpi: int = 100) -> Path:
    """Save ``fig`` as PNG (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def save_table(df: pd.DataFrame, path) -> Path:
    """Write ``df`` as CSV (no index, parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


# ------------------------------------------------------------------------------------------- run summaries
def val_table(run_dir) -> pd.DataFrame:
    """A run's validation Dice (val.csv) with ``model`` = 'student' (the trained network) or 'ema' (the
    mean-teacher copy, for methods that have one). Columns: step, dataset, dice, model."""
    p = Path(run_dir) / "val.csv"
    if not p.is_file():
        raise VersemiError(f"{run_dir}: no val.csv; was the run trained with validation?")
    df = pd.read_csv(p)
    df["model"] = df["model"].fillna("student").astype(str)
    return df


def plot_val_dice(val: pd.DataFrame, ax=None, title: str = ""):
    """Validation Dice per dataset over steps: the student solid, the EMA teacher (if any) dashed."""
    import matplotlib.pyplot as plt

    from versemi.viz import COLORS

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for (ds, model), g in val.groupby(["dataset", "model"], sort=False):
        ax.plot(g["step"], g["dice"], marker="o", ms=3, ls="--" if model == "ema" else "-",
                color=COLORS.get(ds), label=f"{ds} ({model})")
    ax.set_xlabel("step")
    ax.set_ylabel("validation Dice")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def ema_vs_student(val: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and validation step: the student's and the EMA teacher's Dice and their difference
    (ema - student). Empty when the run has no teacher."""
    if "ema" not in set(val["model"]):
        return pd.DataFrame(columns=["step", "dataset", "student", "ema", "ema - student"])
    wide = val.pivot_table(index=["step", "dataset"], columns="model", values="dice").reset_index()
    wide.columns.name = None
    wide["ema - student"] = wide["ema"] - wide["student"]
    return wide[["step", "dataset", "student", "ema", "ema - student"]]


def test_table(runs: dict[str, Path]) -> pd.DataFrame:
    """label -> run folder  ->  one row per (run, test set) from DONE.json: n cases, Dice / Jaccard / 95HD /
    ASD mean and std, empty predictions, and the run's training seconds."""
    rows = []
    for label, run_dir in runs.items():
        p = Path(run_dir) / "DONE.json"
        if not p.is_file():
            raise VersemiError(f"{run_dir}: no DONE.json (the run is not complete)")
        done = json.loads(p.read_text())
        for ds, s in (done.get("test") or {}).items():
            rows.append({"method": label, "dataset": ds, "n": s["n"], "dice": s["dice_mean"],
                         "dice std": s["dice_std"], "jaccard": s["jaccard_mean"], "hd95": s["hd95_mean"],
                         "asd": s["asd_mean"], "empty predictions": s["n_empty_pred"],
                         "train seconds": done.get("train_seconds")})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------- explorer
def explorer_cases(prepared, split: str = "test", per_dataset: int = 1, ratio: int = 10) -> dict[str, list[dict]]:
    """dataset -> its first ``per_dataset`` cases of ``split``, loaded with hidden labels (see
    :func:`example_cases`), in the form :func:`versemi.widgets.live_explorer` takes."""
    out: dict[str, list[dict]] = {}
    for c in example_cases(prepared, split=split, ratio=ratio, per_dataset=per_dataset, hidden=True):
        out.setdefault(c["dataset"], []).append(c)
    return out


def prompt_truth(case: dict, prompt: int) -> np.ndarray | None:
    """The mask that prompt ``prompt`` should find in ``case`` (X, Y, Z) uint8, from the phantom's hidden
    complete label map: prompt k in 1..4 -> the structure that dataset k labels, wherever it is in this
    scan (an all-zero mask when the scan does not hold it: "should find nothing"); the synthetic prompt 5
    -> the union of the four targets (what P_agg = max_k aggregates). Without hidden labels (real data):
    the case's own label for its own prompt, else None (unknown)."""
    hidden, legend = case.get("hidden_label"), case.get("legend")
    if hidden is None or not legend:
        return case.get("label") if int(prompt) == int(case["task"]) else None
    hidden = np.asarray(hidden)
    if int(prompt) == SYNTHETIC_TASK:
        codes = [legend[s] for s in TARGET_STRUCTURE.values()]
        return np.isin(hidden, codes).astype(np.uint8)
    if int(prompt) not in TASK_TO_DATASET:
        raise VersemiError(f"unknown prompt {prompt!r}; expected 1..{SYNTHETIC_TASK}")
    return (hidden == legend[TARGET_STRUCTURE[TASK_TO_DATASET[int(prompt)]]]).astype(np.uint8)


def predict_prompts(net, cfg, image: np.ndarray, prompts: Sequence[int] = PROMPTS) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Segment ``image`` (X, Y, Z) under every prompt with one backbone pass per window batch (the run's
    evaluation patch and stride). Returns (prompt -> (X, Y, Z) uint8 label map, prompt -> (X, Y, Z) float32
    foreground probability). Runs on the network's device."""
    from versemi.evaluate import sliding_window_predict

    prompts = [int(p) for p in prompts]
    labels, probs = sliding_window_predict(net, image, prompts, patch_size=cfg.eval_patch, stride=cfg.eval_stride,
                                           batch_size=4)
    return ({p: lab for p, lab in zip(prompts, labels)},
            {p: prob[1].astype(np.float32) for p, prob in zip(prompts, probs)})


def prompt_scores(case: dict, preds: dict[int, np.ndarray]) -> pd.DataFrame:
    """One row per prompt: voxels predicted, voxels that the prompt should find (:func:`prompt_truth`),
    Dice against that truth (NaN when the truth is empty or unknown: then any voxel is a false positive)."""
    from versemi.widgets import PROMPT_NAMES

    rows = []
    for p, pred in preds.items():
        t = prompt_truth(case, p)
        n_pred = int(np.count_nonzero(pred))
        n_true = None if t is None else int(np.count_nonzero(t))
        dice = np.nan
        if t is not None and n_true:
            dice = 2.0 * int(np.count_nonzero((pred > 0) & (t > 0))) / float(n_pred + n_true)
        rows.append({"dataset": case["dataset"], "case": case["name"], "prompt": int(p),
                     "prompt name": PROMPT_NAMES.get(int(p), str(p)), "own prompt": int(p) == int(case["task"]),
                     "predicted voxels": n_pred, "truth voxels": n_true, "dice": dice})
    return pd.DataFrame(rows)


def explorer_predictions(run_dir, prepared, split: str = "test", prompts: Sequence[int] = PROMPTS,
                         device=None) -> list[dict]:
    """The run's network on the first ``split`` case of every dataset under every prompt (one shared
    backbone pass per window batch). Returns one dict per dataset: ``case`` (see :func:`explorer_cases`),
    ``preds`` / ``probs`` (prompt -> (X, Y, Z) label map / foreground probability) and ``scores``
    (:func:`prompt_scores`)."""
    from versemi.train import load_run_net

    net, cfg = load_run_net(run_dir, device=device)
    out = []
    for cs in explorer_cases(prepared, split=split, per_dataset=1, ratio=cfg.ratio).values():
        c = cs[0]
        preds, probs = predict_prompts(net, cfg, c["image"], prompts)
        out.append({"case": c, "preds": preds, "probs": probs, "scores": prompt_scores(c, preds)})
    return out


def static_explorers(items: Sequence[dict], n_slices: int = 9, caption: str = ""):
    """Kernel-free explorers of :func:`explorer_predictions`: per dataset a
    :func:`versemi.widgets.static_explorer` (prompt buttons and slice slider jslinked to Stacks of
    precomputed ~200 px PNG Images; the green contour is what the selected prompt should find,
    :func:`prompt_truth`, absent where that is unknown), one Tab page per dataset."""
    import ipywidgets as W

    from versemi.widgets import static_explorer

    pages, titles = [], []
    for it in items:
        c = it["case"]
        head = f"{DATASETS[c['dataset']].title}: {c['name']}" + (f" ({caption})" if caption else "")
        truths = {p: prompt_truth(c, p) for p in it["preds"]}
        pages.append(static_explorer(c["image"], it["preds"], labels=truths, n_slices=n_slices, title=head))
        titles.append(c["dataset"])
    tab = W.Tab(children=pages)
    tab.titles = tuple(titles)
    return tab


def plot_prompt_grid(items: Sequence[dict], title: str = "", out_png=None):
    """Rows = datasets (one case each), columns = prompts: the slice with most of the case's own target,
    the truth of that prompt (:func:`prompt_truth`) in green and the prediction in red; the panel title
    gives the Dice (or the false-positive voxel count when the prompt should find nothing)."""
    import matplotlib.pyplot as plt

    from versemi.viz import overlay
    from versemi.widgets import PROMPT_NAMES

    prompts = sorted(items[0]["preds"]) if items else []
    fig, axes = plt.subplots(len(items), len(prompts), figsize=(1.9 * len(prompts), 2.0 * len(items)),
                             squeeze=False)
    for row, it in zip(axes, items):
        c = it["case"]
        own = prompt_truth(c, c["task"])
        z = best_slice(own if own is not None else c["image"] > 0)
        sc = it["scores"].set_index("prompt")
        for ax, p in zip(row, prompts):
            t = prompt_truth(c, p)
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


def live_explorer_for_run(run_dir, prepared, split: str = "test", per_dataset: int = 3, device=None):
    """The kernel-backed explorer (:func:`versemi.widgets.live_explorer`) over the first ``per_dataset``
    ``split`` cases of every dataset: the run's network predicts on demand, the truth of each prompt is
    :func:`prompt_truth` (phantom hidden labels)."""
    from versemi.evaluate import sliding_window_predict
    from versemi.train import load_run_net
    from versemi.widgets import live_explorer

    net, cfg = load_run_net(run_dir, device=device)
    cases = explorer_cases(prepared, split=split, per_dataset=per_dataset, ratio=cfg.ratio)

    def predict(case, prompt):
        lab, prob = sliding_window_predict(net, case["image"], int(prompt), patch_size=cfg.eval_patch,
                                           stride=cfg.eval_stride, batch_size=4)
        return lab, prob[1]

    return live_explorer(cases, predict, truth=prompt_truth)
