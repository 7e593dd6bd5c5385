"""Real data: the Left Atrium experiments on real scans (the ``la-real`` profile) and their export.

``export_la_results`` turns the runs of :func:`versemi.experiments.la_real_configs` into small files that
are committed under ``results/la-real/`` (so the book's real-data chapter builds without the data):

* ``cases.csv``        per-case Dice / Jaccard / 95HD / ASD of every method on the 20 test cases, on the
                       x0.5 grid the models were trained on (voxels of 1.25 mm);
* ``cases_fullres.csv`` the same predictions upsampled (trilinear on the foreground probability) to the
                       released 0.625 mm grid and scored against the original labels, the grid on which
                       the published numbers are computed (voxel units of that grid);
* ``summary.csv``      mean and std (ddof=0) over the test cases per method and grid;
* ``curves.csv``       training loss and validation Dice per step; ``curves.png``;
* ``predictions.png``  mid slices of 3 test cases with the label and each method's prediction;
* ``provenance.json``  git commit, profile, seed, per-run wall time, machine, library versions.
"""

from __future__ import annotations

import json
import subprocess
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from versemi.utils import atomic_path, atomic_write_text

METRICS = ("dice", "jaccard", "hd95", "asd")


def git_commit(root: str | Path = ".") -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def library_versions() -> dict:
    import importlib.metadata as md

    return {p: md.version(p) for p in ("torch", "monai", "numpy", "scipy", "h5py", "scikit-image")}


def upsample_to(prob_fg: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Foreground probability (X, Y, Z) -> binary mask on a finer grid of ``shape`` (trilinear, > 0.5)."""
    import torch
    from torch.nn import functional as F

    t = torch.from_numpy(np.ascontiguousarray(prob_fg, dtype=np.float32))[None, None]
    up = F.interpolate(t, size=tuple(int(s) for s in shape), mode="trilinear", align_corners=False)
    return (up[0, 0].numpy() > 0.5).astype(np.uint8)


def summarize_cases(df: pd.DataFrame, by=("method",)) -> pd.DataFrame:
    """Mean and std (ddof=0) of each metric per group, with the number of cases and empty predictions."""
    g = df.groupby(list(by), sort=False)
    out = g[list(METRICS)].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    for m in METRICS:  # population std, as evaluate.summarize
        out[f"{m}_std"] = g[m].std(ddof=0)
    out["n"] = g.size()
    out["n_empty_pred"] = g["empty_pred"].sum().astype(int)
    return out.reset_index()


def evaluate_fullres(run_dir, prepared_dir, raw_la_root, progress: bool = False) -> pd.DataFrame:
    """Score a run's test predictions on the released LA grid (see module docstring)."""
    from versemi.data.loaders import load_split_cases
    from versemi.data.readers import read_la
    from versemi.evaluate import case_metrics, sliding_window_predict
    from versemi.train import load_run_net

    net, cfg = load_run_net(run_dir)
    originals = {c.name: c for c in read_la(raw_la_root)}
    rows = []
    for c in load_split_cases(prepared_dir, ("la",), 10, "test"):
        orig = originals[c["name"]]
        _, prob = sliding_window_predict(net, c["image"], int(c["task"]), patch_size=cfg.eval_patch,
                                         stride=cfg.eval_stride)
        pred = upsample_to(prob[1], orig.image.shape)
        m = case_metrics(pred, (orig.label == 1).astype(np.uint8))
        rows.append({"case": c["name"], **m})
    return pd.DataFrame(rows)


def export_la_results(runs: dict[str, Path], prepared_dir, out_dir="results/la-real", raw_la_root=None,
                      n_gallery: int = 3) -> Path:
    """Write the committed LA result files (module docstring) from complete runs ``label -> run_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from versemi.data.loaders import load_split_cases
    from versemi.evaluate import sliding_window_predict
    from versemi.train import load_run_net, machine_info
    from versemi.viz import overlay

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames, full, curves, prov_runs = [], [], [], {}
    for label, run_dir in runs.items():
        run_dir = Path(run_dir)
        df = pd.read_csv(run_dir / "eval" / "test_la.csv")
        df.insert(0, "method", label)
        frames.append(df)
        m = pd.read_csv(run_dir / "metrics.csv")[["step", "stage", "loss"]]
        v = pd.read_csv(run_dir / "val.csv")
        v = v[v["model"].isna()] if "model" in v else v
        m = m.merge(v[["step", "dice"]].rename(columns={"dice": "val_dice"}), on="step", how="left")
        m.insert(0, "method", label)
        curves.append(m)
        done = json.loads((run_dir / "DONE.json").read_text())
        prov_runs[label] = {"run": run_dir.name, "train_seconds": done.get("train_seconds"),
                            "best": done.get("best"), "config": done.get("config")}
        if raw_la_root is not None:
            f = evaluate_fullres(run_dir, prepared_dir, raw_la_root)
            f.insert(0, "method", label)
            full.append(f)
    cases = pd.concat(frames, ignore_index=True)
    _write_csv(out / "cases.csv", cases)
    summary = summarize_cases(cases)
    summary.insert(1, "grid", "x0.5 (1.25 mm)")
    if full:
        fr = pd.concat(full, ignore_index=True)
        _write_csv(out / "cases_fullres.csv", fr)
        s2 = summarize_cases(fr)
        s2.insert(1, "grid", "released (0.625 mm)")
        summary = pd.concat([summary, s2], ignore_index=True)
    _write_csv(out / "summary.csv", summary)
    curves = pd.concat(curves, ignore_index=True)
    _write_csv(out / "curves.csv", curves)

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for label, g in curves.groupby("method", sort=False):
        axes[0].plot(g["step"], g["loss"].rolling(25, min_periods=1).mean(), label=label, lw=1)
        vv = g.dropna(subset=["val_dice"])
        axes[1].plot(vv["step"], vv["val_dice"], marker="o", ms=3, label=label)
    axes[0].set(xlabel="step", ylabel="training loss (rolling mean 25)", title="training loss")
    axes[1].set(xlabel="step", ylabel="Dice", title="validation Dice (5 held-out training cases)")
    axes[1].legend(fontsize=7)
    fig.suptitle("Real Left Atrium, la-real profile (x0.5 volumes, CPU)", fontsize=9)
    fig.tight_layout()
    _save_fig(fig, out / "curves.png")
    plt.close(fig)

    # predictions on the first test cases (by the authors' order)
    test = load_split_cases(prepared_dir, ("la",), 10, "test")[:n_gallery]
    nets = {label: load_run_net(r)[0] for label, r in runs.items()}
    cfgs = {label: load_run_net(r)[1] for label, r in list(runs.items())[:1]}
    cfg0 = next(iter(cfgs.values()))
    fig, axes = plt.subplots(len(test), len(nets) + 1, figsize=(2.1 * (len(nets) + 1), 2.2 * len(test)),
                             squeeze=False)
    for i, c in enumerate(test):
        z = int(np.argmax(c["label"].sum(axis=(0, 1))))
        overlay(axes[i, 0], c["image"][..., z], c["label"][..., z], None, f"{c['name'][:8]} label")
        for j, (label, net) in enumerate(nets.items(), start=1):
            pred, _ = sliding_window_predict(net, c["image"], int(c["task"]), patch_size=cfg0.eval_patch,
                                             stride=cfg0.eval_stride)
            overlay(axes[i, j], c["image"][..., z], c["label"][..., z], pred[..., z], label)
    fig.suptitle("Real LA test cases: label (green) and prediction (red), slice with the largest atrium",
                 fontsize=9)
    fig.tight_layout()
    _save_fig(fig, out / "predictions.png")
    plt.close(fig)

    prov = {"commit": git_commit(), "profile": cfg0.profile, "seed": cfg0.seed, "machine": machine_info(),
            "libraries": library_versions(), "runs": prov_runs,
            "data": "60 real preprocessed LA cases (UA-MT release): 40 training (first 8/16 labeled), "
                    "the 20 standard test cases"}
    atomic_write_text(out / "provenance.json", json.dumps(prov, indent=1, default=str))
    return out


def published_la_table(n_labeled=(8, 16), methods=None) -> pd.DataFrame:
    """Published LA results of the same methods (UA-MT, BCP, V-Net baselines), each with its source and
    confidence, from the reference table shipped with the package; empty where not found."""
    text = resources.files("versemi.reference").joinpath("published_results.csv").read_text()
    from io import StringIO

    df = pd.read_csv(StringIO(text))
    df = df[(df["dataset"] == "LA") & (df["n_labeled"].isin(n_labeled))]
    if methods is not None:
        pat = "|".join(methods)
        df = df[df["method"].str.contains(pat, regex=True)]
    return df[["n_labeled", "method", "dice", "jaccard", "hd95", "asd", "source", "confidence"]].reset_index(drop=True)


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")


def _save_fig(fig, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
