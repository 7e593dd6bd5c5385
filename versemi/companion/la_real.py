"""Real data: the Left Atrium experiments on real scans (the ``la-real`` profile), their export and the
chapter's tables.

:func:`export_la_results` turns the complete runs of :func:`versemi.experiments.la_real_configs` into
small files that are committed under ``results/la-real/`` (so the book's real-data chapter, notebook
``08_la_real``, builds without the data):

* ``cases.csv``         per-case Dice / Jaccard / 95HD / ASD of every run on the 20 test cases, on the
                        x0.5 grid the models were trained on (voxels of 1.25 mm);
* ``cases_fullres.csv`` the same predictions upsampled (trilinear on the foreground probability) to the
                        released 0.625 mm grid and scored against the original labels, the grid on which
                        the published numbers are computed (voxel units of that grid);
* ``summary.csv``       mean and std (ddof=0) over the test cases per run and grid;
* ``curves.csv``        training loss and validation Dice per step; ``curves.png``;
* ``predictions.png``   mid slices of the first test cases with the label and each run's prediction;
* ``provenance.json``   the provenance record of the export (:func:`versemi.provenance.record`), the
                        profile, the seed and, per run, its folder, wall time, best validation score,
                        config and code fingerprint.

Every run of the exported table must have been trained and evaluated by the same code: their recorded
code fingerprints are checked (:func:`versemi.provenance.check_compatible`) before anything is written.

The chapter reads these files back (:func:`load_la_results`) and shows them with :func:`settings_table`,
:func:`summary_table`, :func:`train_times`, :func:`published_comparison` and :func:`glue_values`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import ndimage

from versemi.companion.fidelity import dice_text
from versemi.companion.figures import best_slice, overlay, save_figure, save_table
from versemi.companion.reference import n_labeled, published_row_name
from versemi.companion.tables import METHOD_ORDER, NA, format_mean_std
from versemi.config import RunConfig, get_profile
from versemi.data.ensure import prepared_dir as default_prepared_dir
from versemi.data.loaders import load_split_cases
from versemi.data.prepare import prepare
from versemi.data.readers import list_la
from versemi.evaluate import METRICS, case_metrics, sliding_window_predict, summarize
from versemi.experiments import la_real_configs
from versemi.provenance import check_compatible, record
from versemi.runs import done_record, load_run_net, run_config, run_fields, run_group
from versemi.utils import VersemiError, atomic_write_text

GRID_TRAINED = "x0.5 (1.25 mm)"
GRID_RELEASED = "released (0.625 mm)"
DATA_TEXT = ("60 real preprocessed LA cases (UA-MT release): 40 training (first 8/16 labeled), "
             "the 20 standard test cases")
# glue key of the chapter's prose for the run of (method, ratio)
GLUE_KEYS = {("sup_only", 100): "full", ("sup_only", 10): "sup8", ("sup_only", 20): "sup16",
             ("versemi", 10): "versemi", ("uamt", 10): "uamt", ("bcp", 10): "bcp"}
HYBRID_GLUE = "hybrid"    # the glue key of the joint run (VerSemi on real LA + phantom CT), whatever its ratio
LEGACY_TRAINING_CASES = "40 of the 80 (first 8 / 16 labeled); 5 of the rest held out for validation"
VERSEMI_ALONE = ("degenerate: every mixed pair has the same task, so L_aux repeats L_syn and P_agg is prompt 2 "
                 "alone")
NOT_RUN = "n/a (not run yet)"


# ---------------------------------------------------------------------------------------------- scoring
def upsample_to(prob_fg: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Foreground probability (X, Y, Z) -> binary uint8 mask (> 0.5) on the finer grid of ``shape``: linear
    interpolation with the grid convention of the resampling ``versemi prepare`` applied
    (``scipy.ndimage.zoom``, corner-aligned: the first and last voxels of both grids coincide), so scoring at
    full resolution inverts that resampling instead of shifting the mask by part of a voxel."""
    src = np.ascontiguousarray(prob_fg, dtype=np.float32)
    shape = tuple(int(s) for s in shape)
    out = np.empty(shape, np.float32)
    ndimage.zoom(src, [t / s for t, s in zip(shape, src.shape)], output=out, order=1, mode="nearest",
                 prefilter=False)
    return (out > 0.5).astype(np.uint8)


def summarize_cases(df: pd.DataFrame, by=("method",)) -> pd.DataFrame:
    """:func:`versemi.evaluate.summarize` per group of ``by``: mean and population std (ddof=0) of each
    metric, the number of cases ``n`` and of empty predictions ``n_empty_pred``; one line per group, in
    the order of first appearance."""
    cols = [*by, *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")), "n", "n_empty_pred"]
    lines = [{**dict(zip(by, key if isinstance(key, tuple) else (key,))), **summarize(g)}
             for key, g in df.groupby(list(by), sort=False)]
    return pd.DataFrame(lines)[cols]


def evaluate_fullres(run_dir, prepared_dir, raw_la_root) -> pd.DataFrame:
    """Score a run's test predictions on the released LA grid: the foreground probability of the x0.5
    prediction upsampled (:func:`upsample_to`) to the original volume and compared with the original
    label. One line per test case: ``case`` and :func:`versemi.evaluate.case_metrics`."""
    net, cfg = load_run_net(run_dir)
    originals = {ref.name: ref for ref in list_la(raw_la_root)}
    rows = []
    for c in load_split_cases(prepared_dir, ("la",), 10, "test"):
        if c["name"] not in originals:
            raise VersemiError(f"{raw_la_root}: test case {c['name']} of {prepared_dir} is not there")
        orig = originals[c["name"]].load()
        _, prob = sliding_window_predict(net, c["image"], int(c["task"]), patch_size=cfg.eval_patch,
                                         stride=cfg.eval_stride)
        pred = upsample_to(prob[1], orig.image.shape)
        rows.append({"case": c["name"], **case_metrics(pred, (orig.label == 1).astype(np.uint8))})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- export
def plot_curves(curves: pd.DataFrame):
    """Training loss (rolling mean over 25 steps) and validation Dice per step of every run of
    ``curves`` (columns ``method, step, loss, val_dice``). Returns the Figure."""
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
    return fig


def plot_predictions(runs: dict[str, Path], prepared_dir, n_gallery: int = 3):
    """Mid slices (the slice with the largest atrium) of the first ``n_gallery`` test cases: the label
    (green) and each run's prediction (red), its volume Dice in the panel's title. Returns the Figure."""
    test = load_split_cases(prepared_dir, ("la",), 10, "test")[:n_gallery]
    nets = {label: load_run_net(r)[0] for label, r in runs.items()}
    cfg0 = run_config(next(iter(runs.values())))
    fig, axes = plt.subplots(len(test), len(nets) + 1, figsize=(2.1 * (len(nets) + 1), 2.2 * len(test)),
                             squeeze=False)
    for i, c in enumerate(test):
        z = best_slice(c["label"])
        overlay(axes[i, 0], c["image"][..., z], c["label"][..., z], None, f"{c['name'][:8]} label")
        for j, (label, net) in enumerate(nets.items(), start=1):
            pred, _ = sliding_window_predict(net, c["image"], int(c["task"]), patch_size=cfg0.eval_patch,
                                             stride=cfg0.eval_stride)
            overlay(axes[i, j], c["image"][..., z], c["label"][..., z], pred[..., z],
                    f"{label}\n{dice_text(pred, c['label'])}")
    fig.suptitle("Real LA test cases: label (green) and prediction (red), slice with the largest atrium",
                 fontsize=9)
    fig.tight_layout()
    return fig


def _run_curves(label: str, run_dir: Path) -> pd.DataFrame:
    m = pd.read_csv(run_dir / "metrics.csv")[["step", "stage", "loss"]]
    v = pd.read_csv(run_dir / "val.csv")
    v = v[v["model"].isna()] if "model" in v else v
    m = m.merge(v[["step", "dice"]].rename(columns={"dice": "val_dice"}), on="step", how="left")
    m.insert(0, "method", label)
    return m


def export_la_results(runs: dict[str, Path], prepared_dir, out_dir="results/la-real", raw_la_root=None,
                      n_gallery: int = 3) -> Path:
    """Write the committed LA result files (module docstring) from complete runs ``key -> run folder``;
    ``raw_la_root``: the released LA data, for the scores on the released grid (None: x0.5 grid only).
    The runs' code fingerprints must agree (a :class:`VersemiError` otherwise; runs without a record
    are not checked). Returns ``out_dir``."""
    runs = {label: Path(r) for label, r in runs.items()}
    if not runs:
        raise VersemiError("no run to export")
    done = {label: done_record(r) for label, r in runs.items()}
    code = check_compatible({label: d.get("provenance", {}).get("code") for label, d in done.items()},
                            "LA results table")
    out = Path(out_dir)
    frames, full, curves, prov_runs = [], [], [], {}
    for label, run_dir in runs.items():
        df = pd.read_csv(run_dir / "eval" / "test_la.csv")
        df.insert(0, "method", label)
        frames.append(df)
        curves.append(_run_curves(label, run_dir))
        d = done[label]
        prov_runs[label] = {"run": run_dir.name, "train_seconds": d.get("train_seconds"), "best": d.get("best"),
                            "config": d.get("config"), "code": d.get("provenance", {}).get("code")}
        if raw_la_root is not None:
            f = evaluate_fullres(run_dir, prepared_dir, raw_la_root)
            f.insert(0, "method", label)
            full.append(f)
    cases = pd.concat(frames, ignore_index=True)
    save_table(cases, out / "cases.csv", float_format="%.6g")
    summary = summarize_cases(cases)
    summary.insert(1, "grid", GRID_TRAINED)
    if full:
        fr = pd.concat(full, ignore_index=True)
        save_table(fr, out / "cases_fullres.csv", float_format="%.6g")
        s2 = summarize_cases(fr)
        s2.insert(1, "grid", GRID_RELEASED)
        summary = pd.concat([summary, s2], ignore_index=True)
    save_table(summary, out / "summary.csv", float_format="%.6g")
    curves = pd.concat(curves, ignore_index=True)
    save_table(curves, out / "curves.csv", float_format="%.6g")
    for name, fig in (("curves.png", plot_curves(curves)),
                      ("predictions.png", plot_predictions(runs, prepared_dir, n_gallery))):
        save_figure(fig, out / name)
        plt.close(fig)
    cfg0 = run_config(next(iter(runs.values())))
    prov = {**record(), "profile": cfg0.profile, "seed": cfg0.seed, "runs_code": code, "runs": prov_runs,
            "data": DATA_TEXT}
    atomic_write_text(out / "provenance.json", json.dumps(prov, indent=1, default=str))
    return out


def reproduce_la_results(profile: str, la_data, data_dir, results_dir, out_dir, seed: int = 2333) -> Path:
    """Prepare the real LA data (when ``<data_dir>/<profile>/prepared`` has none), train the missing runs
    of :func:`versemi.experiments.la_real_configs` (run cache ``<results_dir>/runs``) and export them to
    ``out_dir`` (:func:`export_la_results`, with the released-grid scores)."""
    prepared = default_prepared_dir(data_dir, profile)
    if not (prepared / "manifest.json").is_file():
        prepare(["la"], la_data, prepared, profile=profile, seed=seed)
    runs = run_group(la_real_configs(profile, seed), prepared, Path(results_dir) / "runs")
    return export_la_results(runs, prepared, out_dir, raw_la_root=la_data)


# ------------------------------------------------------------------------------------- the chapter
@dataclass
class LaResults:
    """The committed LA results of one export: ``summary.csv`` and ``provenance.json`` of ``out``."""

    out: Path
    summary: pd.DataFrame
    provenance: dict

    def released(self) -> pd.DataFrame:
        """The summary indexed by run key, on the released grid when it was scored, else as exported."""
        full = self.summary[self.summary["grid"].str.startswith("released")].set_index("method")
        return full if len(full) else self.summary.set_index("method")


def load_la_results(out_dir) -> LaResults | None:
    """The exported LA results in ``out_dir`` (None when nothing was exported there yet)."""
    out = Path(out_dir)
    if not (out / "summary.csv").is_file():
        return None
    prov_path = out / "provenance.json"
    if not prov_path.is_file():
        raise VersemiError(f"{prov_path}: missing beside summary.csv; export the results again")
    return LaResults(out, pd.read_csv(out / "summary.csv"), json.loads(prov_path.read_text()))


def _run_fields(config: dict) -> dict:
    """:func:`versemi.runs.run_fields` of a recorded config dict (keys the current RunConfig lacks are
    ignored: the record may be older than the code)."""
    known = {f.name for f in fields(RunConfig)}
    return run_fields(RunConfig(**{k: v for k, v in config.items() if k in known}))


def settings_table(provenance: dict, reference: str = "paper") -> pd.DataFrame:
    """The settings of the exported runs (the first run's config) beside those of the ``reference``
    profile (:data:`versemi.config.PROFILES`), one line per setting (index ``setting``)."""
    cfg = next(iter(provenance["runs"].values()))["config"]
    paper = get_profile(reference).train
    rows = [
        ("volumes", "released grid (0.625 mm)", "resampled x0.5 (1.25 mm), trilinear / nearest"),
        ("network width f", paper["n_filters"], cfg["n_filters"]),
        ("patch", "x".join(map(str, paper["patch"])), "x".join(map(str, cfg["patch"]))),
        ("batch (labeled + unlabeled)", f"{paper['batch_size']} + {paper['unlabeled_batch_size']}",
         f"{cfg['batch_size']} + {cfg['unlabeled_batch_size']}"),
        ("optimisation steps", f"{paper['steps']:,} (VerSemi); baselines as released", f"{cfg['steps']:,} (every method)"),
        ("optimiser", "Adam 1e-3 (VerSemi); SGD 0.01 (UA-MT, BCP, as released)",
         f"{cfg['optimizer']} {cfg['lr']:g} (every method)"),
        ("sliding window (patch, stride)", f"{paper['eval_patch']}, {paper['eval_stride']}",
         f"{tuple(cfg['eval_patch'])}, {tuple(cfg['eval_stride'])}"),
        ("training cases", "80 (first 8 / 16 labeled)", provenance.get("training_cases", LEGACY_TRAINING_CASES)),
        ("VerSemi trained on LA alone", "not run (VerSemi trains on the four datasets together)",
         VERSEMI_ALONE + ("; the hybrid run trains it with phantom CT sets instead"
                          if any(len(r["config"]["datasets"]) > 1 for r in provenance["runs"].values()) else "")),
        ("model selection", "best Dice on the test set (authors)",
         f"{cfg['selection']} (validation split carved from training cases)"),
    ]
    return pd.DataFrame(rows, columns=["setting", f"{reference} profile", "this page"]).set_index("setting")


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary.csv`` for display: 'mean ± std' per metric (Dice and Jaccard in %, distances in voxels),
    the empty predictions and the number of cases, indexed by (grid, method)."""
    def col(m: str, k: float) -> list[str]:
        return [format_mean_std(a * k, b * k) for a, b in zip(summary[f"{m}_mean"], summary[f"{m}_std"])]

    table = pd.DataFrame({
        "method": summary["method"], "grid": summary["grid"],
        "Dice (%)": col("dice", 100), "Jaccard (%)": col("jaccard", 100), "95HD (vox)": col("hd95", 1),
        "ASD (vox)": col("asd", 1), "empty predictions": summary["n_empty_pred"], "n": summary["n"]})
    return table.set_index(["grid", "method"])


def train_times(provenance: dict) -> pd.DataFrame:
    """Training wall time of each exported run in seconds (rounded), one line per run key."""
    secs = {k: v["train_seconds"] for k, v in provenance["runs"].items()}
    return pd.Series(secs, name="training wall time (s)").round(0).to_frame()


def provenance_commit(provenance: dict) -> str:
    """The git commit of an export (the first 12 hex digits), from the record's ``git`` entry or, in an
    export older than that record, its ``commit`` string."""
    commit = provenance.get("git", {}).get("commit") or provenance.get("commit") or "unknown"
    return commit[:12]


def glue_values(results: LaResults | None) -> dict[str, str]:
    """The texts the chapter's prose pastes: the released-grid Dice (%) of each run of :data:`GLUE_KEYS`
    (``la_dice_<key>``), the total training minutes, the machine and the commit; 'n/a (not run yet)'
    for each value the results do not hold."""
    keys = [f"la_dice_{k}" for k in ("full", "sup8", "sup16", "versemi", "uamt", "bcp", HYBRID_GLUE)]
    out = dict.fromkeys((*keys, "la_total_minutes", "la_machine", "la_commit"), NOT_RUN)
    if results is None:
        return out
    prov = results.provenance
    out["la_commit"] = provenance_commit(prov)
    out["la_machine"] = f"{prov['machine']['cpus']} CPUs, torch {prov['machine']['torch']}"
    ref = results.released()
    for label, run in prov["runs"].items():
        f = _run_fields(run["config"])
        key = GLUE_KEYS.get((f["method_id"], f["ratio"])) if f["task_specific"] else HYBRID_GLUE
        if key is not None and label in ref.index:
            out[f"la_dice_{key}"] = f"{100 * ref.loc[label, 'dice_mean']:.1f}"
    secs = [v["train_seconds"] for v in prov["runs"].values()]
    out["la_total_minutes"] = f"{sum(v for v in secs if v) / 60:.0f}"
    return out


def why_numbers_differ(results: LaResults | None) -> str:
    """The chapter's "why the numbers differ" paragraph, generated from the export's provenance (data,
    schedules, width, seeds, selection) and the methods' released settings, never typed: what separates
    these runs from the published LA numbers."""
    if results is None:
        return f"The setup of these runs cannot be described: {NOT_RUN}."
    from versemi.config import get_profile
    from versemi.methods import get_method_class

    prov = results.provenance
    cfgs = [run["config"] for run in prov["runs"].values()]
    steps = sorted({int(c["steps"]) for c in cfgs})
    widths = sorted({int(c["n_filters"]) for c in cfgs})
    released = sorted({int(get_method_class(c["method"]).paper_settings["steps"]) for c in cfgs
                       if get_method_class(c["method"]).paper_settings.get("steps")})
    zoom = get_profile(prov.get("profile", "la-real")).prepare.la_zoom
    seeds = sorted(prov.get("seeds") or {int(c["seed"]) for c in cfgs})
    optimisers = sorted({c["optimizer"] for c in cfgs})
    selection = sorted({c["selection"] for c in cfgs})
    fmt = lambda xs: " / ".join(f"{x:,}" for x in xs)  # noqa: E731
    parts = [f"the data: {prov.get('data', 'not recorded')}",
             f"volumes resampled x{zoom:g}" if zoom else "volumes on the released grid",
             f"a network of width {fmt(widths)} (the paper's: {get_profile('paper').train['n_filters']})",
             f"{fmt(steps)} steps" + (f" where the released scripts train {released[0]:,}-{released[-1]:,}"
                                      if released else ""),
             f"the same optimiser ({', '.join(optimisers)}) for every method here instead of each method's own",
             f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))})",
             "model selection on a validation split carved from the unlabeled training cases"
             if selection == ["val"] else f"model selection: {', '.join(selection)}",
             "no connected-component post-processing"]
    if any(c["method"] == "versemi" and len(c["datasets"]) == 1 for c in cfgs):
        parts.append("VerSemi trained on LA alone degenerates: every mixed pair has the same task, so L_aux "
                     "repeats L_syn and the aggregated target P_agg is prompt 2 alone")
    if any(c["method"] == "versemi" and len(c["datasets"]) > 1 for c in cfgs):
        parts.append("the hybrid run trains VerSemi on the real LA together with phantom CT sets (not the "
                     "paper's real pancreas, spleen and lung scans) and is scored on the real LA test cases only")
    return ("The published numbers and ours differ in setup, and each difference can move Dice by points in "
            "either direction: " + "; ".join(parts) + ". The published rows themselves disagree by several points "
            "for the same method (see the `source` column). At this scale the ranking between methods is weak "
            "evidence about their ranking at the paper's scale; the table above is a check of the pipeline on "
            "real scans, not a reproduction of the published numbers.")


def published_comparison(results: LaResults, published: pd.DataFrame) -> pd.DataFrame:
    """Our released-grid Dice beside the published Dice of the same method and number of labeled cases.

    ``published``: :func:`versemi.companion.reference.published_la_table`. A run is matched, from its
    recorded config, to the published lines of its table row
    (:func:`~versemi.companion.reference.published_row_name`) with the labeled cases of its ratio in the
    authors' 80-case split (:func:`~versemi.companion.reference.n_labeled`: 8, 16, 80); runs without any
    such line are left out. One line per run, in the paper's row order then by ratio: ``ours``, the
    labeled cases, our Dice (%), the published min-max over the sources that give a number, and their count.
    """
    ours = results.released()
    lines = []
    for label, run in results.provenance["runs"].items():
        f = _run_fields(run["config"])
        n = n_labeled("la", f["ratio"])
        rows = [published_row_name(m, f["ratio"]) for m in published["method"]]
        hits = published[(published["n_labeled"] == n) & (pd.Series(rows, index=published.index) == f["row"])]
        if hits.empty or label not in ours.index:
            continue
        p = hits["dice"].dropna()
        order = METHOD_ORDER.index(f["row"]) if f["row"] in METHOD_ORDER else len(METHOD_ORDER)
        lines.append((order, f["ratio"], {
            "ours": label, "labeled cases (published setting)": n,
            "our Dice (%)": round(100 * ours.loc[label, "dice_mean"], 2),
            "published Dice (%), min-max over sources": (f"{p.min():.2f}-{p.max():.2f}" if len(p) else NA),
            "sources": len(p)}))
    return pd.DataFrame([line for *_, line in sorted(lines, key=lambda t: t[:2])])
