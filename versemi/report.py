"""Tables, tests and figures of the SOTA comparison and the ablations (notebooks 03 and 04).

Everything here is a function of the long per-case table that
:func:`versemi.experiments.collect_case_metrics` returns (one row per method label, dataset and test
case, with ``dice, jaccard, hd95, asd, empty_pred, empty_gt, ...``), or of the reference CSVs shipped in
``versemi/reference`` (the *reported* numbers). The notebooks only call these functions.

Conventions

* Dice and Jaccard are shown in % (``scale_pct=True``), HD95 and ASD in voxels, as the paper.
* A case with an empty prediction scores 0 on all four metrics (the authors' convention, kept by
  :func:`versemi.evaluate.case_metrics`); such cases stay in the means and are *counted* in every table
  (``n_empty_pred``), never dropped.
* HD95/ASD are NaN for a case whose ground truth is empty; they are left out of that metric's mean and
  counted (``n_nan``), as :func:`versemi.evaluate.summarize` does.
* Row names: the run labels of :meth:`versemi.experiments.RunConfig.label` are mapped to table rows
  (:func:`parse_label`). A task-specific run such as ``'UA-MT (la) 10%'`` fills the ``la`` column of the
  row ``UA-MT``; ``'Uni-BCP 10%'`` (one prompted network on all datasets) fills every column of the row
  ``Uni-BCP``; the fully supervised upper bound is assembled from its four task-specific runs.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from versemi.utils import VersemiError

METRICS = ("dice", "jaccard", "hd95", "asd")
PCT_METRICS = ("dice", "jaccard")
METRIC_NAMES = {"dice": "Dice (%)", "jaccard": "Jaccard (%)", "hd95": "95HD (vox)", "asd": "ASD (vox)"}
METRIC_NAMES_RAW = {"dice": "Dice", "jaccard": "Jaccard", "hd95": "95HD (vox)", "asd": "ASD (vox)"}
DATASET_ORDER = ("pancreas", "la", "spleen", "lung")
DATASET_TITLES = {"pancreas": "NIH Pancreas", "la": "Left Atrium", "spleen": "MSD Spleen", "lung": "MSD Lung tumour"}
AVERAGE = "average"

# table groups, in the paper's order
GROUPS = ("Task-specific", "Unified (Uni-)", "VerSemi", "Upper bound", "Other")
METHOD_ORDER = ("Sup-only", "MT", "UA-MT", "BCP", "Uni-Sup-only", "Uni-MT", "Uni-UA-MT", "Uni-BCP", "VerSemi",
                "Fully supervised")
NA = "n/a"

_LABEL = re.compile(r"^(?P<base>.+?)(?: \((?P<dataset>[a-z]+)\))? (?P<ratio>\d+)%$")

DATA_NOTES = {
    "smoke": "smoke profile, tiny phantom data",
    "demo": "demo profile, phantom data",
    "la-real": "la-real profile, real Left Atrium data (resampled x0.5)",
    "paper": "paper profile, real datasets",
}


def data_note(profile: str) -> str:
    """'demo profile, phantom data' and the like: what every caption says about its numbers."""
    return DATA_NOTES.get(profile, f"{profile} profile")


def is_phantom(profile: str) -> bool:
    return profile in ("smoke", "demo")


# ------------------------------------------------------------------------------------------------ labels
def parse_label(label: str) -> dict:
    """Split a run label into its table coordinates.

    >>> parse_label("UA-MT (la) 10%")
    {'label': 'UA-MT (la) 10%', 'row': 'UA-MT', 'group': 'Task-specific', 'dataset': 'la', 'ratio': 10}

    ``dataset`` is the one dataset of a task-specific run (its only column) and None for a run over all
    datasets. Labels that are not run labels (e.g. the ablation names ``'w/o L_aux'``) keep the label as
    the row, group ``'Other'`` and ratio None.
    """
    m = _LABEL.match(str(label))
    if not m:
        return {"label": label, "row": str(label), "group": "Other", "dataset": None, "ratio": None}
    base, ds, ratio = m["base"], m["dataset"], int(m["ratio"])
    if ds is not None and ds not in DATASET_ORDER:  # e.g. 'VerSemi (full)' is not a dataset
        return {"label": label, "row": str(label), "group": "Other", "dataset": None, "ratio": None}
    if base == "Fully supervised":
        group = "Upper bound"
    elif base.startswith("Uni-"):
        group = "Unified (Uni-)"
    elif base == "VerSemi" and ds is None:
        group = "VerSemi"
    elif ds is not None:
        group = "Task-specific"
    else:
        group = "Other"
    return {"label": label, "row": base, "group": group, "dataset": ds, "ratio": ratio}


def _row_sort_key(row: str, group: str) -> tuple:
    g = GROUPS.index(group) if group in GROUPS else len(GROUPS)
    m = METHOD_ORDER.index(row) if row in METHOD_ORDER else len(METHOD_ORDER)
    return (g, m, row)


def with_rows(case_df: pd.DataFrame) -> pd.DataFrame:
    """``case_df`` plus the columns ``row``, ``group`` and ``ratio`` parsed from ``method``.

    A task-specific run contributes only its own dataset (other datasets' rows, if any, are dropped so a
    column always comes from the run trained on that dataset).
    """
    _require(case_df, ["method", "dataset", "case"])
    info = pd.DataFrame([parse_label(m) for m in case_df["method"]], index=case_df.index)
    out = case_df.copy()
    out["row"], out["group"], out["ratio"] = info["row"], info["group"], info["ratio"]
    own = info["dataset"].isna() | (info["dataset"] == case_df["dataset"])
    return out[own]


def ordered_rows(df: pd.DataFrame) -> list[str]:
    """The distinct ``row`` values of ``df`` (see :func:`with_rows`) in the paper's order."""
    pairs = df[["row", "group"]].drop_duplicates()
    return [r for r, g in sorted(zip(pairs["row"], pairs["group"]), key=lambda p: _row_sort_key(*p))]


def ordered_datasets(datasets: Iterable[str]) -> list[str]:
    ds = list(dict.fromkeys(datasets))
    return sorted(ds, key=lambda d: (DATASET_ORDER.index(d) if d in DATASET_ORDER else 99, d))


def select_configs(configs: dict, methods: Sequence[str] | None = None) -> dict:
    """The configs of ``configs`` (label -> RunConfig) whose label or table row is in ``methods``.

    ``methods=None`` keeps all. ``methods=["VerSemi", "Uni-BCP", "Sup-only"]`` keeps 'VerSemi 10%',
    'Uni-BCP 10%' and the four 'Sup-only (<dataset>) 10%' runs. A name that matches nothing is an error
    (a typo would otherwise silently empty the table).
    """
    if methods is None:
        return dict(configs)
    wanted = [str(m) for m in methods]
    keep = {k: v for k, v in configs.items() if k in wanted or parse_label(k)["row"] in wanted}
    known = {parse_label(k)["row"] for k in configs} | set(configs)
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise VersemiError(f"unknown method(s) {unknown}; choose among {sorted(known)}")
    return keep


def resolve_ratios(profile: str, ratio: int = 10, ratios: Sequence[int] | None = None) -> list[int]:
    """The label ratios the SOTA notebook runs: ``ratios`` if given, else [10, 20] in the paper profile
    (the paper reports both) and ``[ratio]`` otherwise; ``ratio`` always first (the main table)."""
    if ratios is None:
        ratios = [10, 20] if profile == "paper" else [ratio]
    out = [int(ratio)] + [int(r) for r in ratios if int(r) != int(ratio)]
    bad = [r for r in out if r not in (10, 20)]
    if bad:
        raise VersemiError(f"label ratios must be 10 or 20 (%), got {bad}")
    return out


def _require(df: pd.DataFrame, cols: Sequence[str]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise VersemiError(f"table lacks column(s) {missing}; got {list(df.columns)}")


# ------------------------------------------------------------------------------------------ comparison
def _cell_stats(sub: pd.DataFrame, metric: str, scale: float) -> dict:
    v = np.asarray(sub[metric], dtype=np.float64) * scale
    ok = v[~np.isnan(v)]
    return {"mean": float(ok.mean()) if ok.size else math.nan,
            "std": float(ok.std(ddof=0)) if ok.size else math.nan,
            "n": int(len(sub)),
            "n_empty_pred": int(np.asarray(sub["empty_pred"], dtype=bool).sum()) if "empty_pred" in sub else 0,
            "n_nan": int(v.size - ok.size)}


def comparison_long(case_df: pd.DataFrame, metrics: Sequence[str] = METRICS, scale_pct: bool = True,
                    datasets: Sequence[str] | None = None) -> pd.DataFrame:
    """Numeric long table (for CSV): one line per (row, dataset, metric), plus the average over datasets.

    Columns: ``group, row, ratio, dataset, metric, unit, mean, std, n, n_empty_pred, n_nan``. ``std`` is
    the population std over cases (``ddof=0``, as ``np.std`` and the authors). The ``average`` lines are
    the mean of the per-dataset means (each dataset weighs the same, as the paper's average column) and
    exist only for rows that have every dataset shown; their ``std`` is NaN (not a per-case quantity) and
    ``n``/``n_empty_pred`` are sums.
    """
    df = with_rows(case_df)
    if datasets is not None:
        df = df[df["dataset"].isin(list(datasets))]
    ds_all = ordered_datasets(datasets if datasets is not None else df["dataset"])
    lines = []
    for row in ordered_rows(df):
        sub_row = df[df["row"] == row]
        group = sub_row["group"].iloc[0]
        ratio = sub_row["ratio"].iloc[0]
        for metric in metrics:
            scale = 100.0 if (scale_pct and metric in PCT_METRICS) else 1.0
            unit = "%" if scale == 100.0 else ("fraction" if metric in PCT_METRICS else "voxels")
            per_ds = []
            for ds in ds_all:
                sub = sub_row[sub_row["dataset"] == ds]
                if sub.empty:
                    continue
                st = _cell_stats(sub, metric, scale)
                per_ds.append(st)
                lines.append({"group": group, "row": row, "ratio": ratio, "dataset": ds, "metric": metric,
                              "unit": unit, **st})
            if len(per_ds) == len(ds_all) and ds_all:
                means = [s["mean"] for s in per_ds]
                lines.append({"group": group, "row": row, "ratio": ratio, "dataset": AVERAGE, "metric": metric,
                              "unit": unit, "mean": float(np.mean(means)) if not np.isnan(means).any() else math.nan,
                              "std": math.nan, "n": sum(s["n"] for s in per_ds),
                              "n_empty_pred": sum(s["n_empty_pred"] for s in per_ds),
                              "n_nan": sum(s["n_nan"] for s in per_ds)})
    cols = ["group", "row", "ratio", "dataset", "metric", "unit", "mean", "std", "n", "n_empty_pred", "n_nan"]
    return pd.DataFrame(lines, columns=cols)


def format_mean_std(mean: float, std: float, digits: int = 2) -> str:
    """'78.63 ± 3.21'; 'n/a' when the mean is NaN; the mean alone when std is NaN."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return NA
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def comparison_table(case_df: pd.DataFrame, metrics: Sequence[str] = METRICS, scale_pct: bool = True,
                     datasets: Sequence[str] | None = None, digits: int = 2) -> pd.DataFrame:
    """Wide display table: rows = methods (index ``(group, method)``), columns = ``(dataset, quantity)``.

    Quantities per dataset: one ``"mean ± std"`` string per metric (Dice/Jaccard in % when
    ``scale_pct``, distances in voxels) and ``"cases (empty pred.)"``, e.g. ``"4 (1)"``: the number of
    test cases and, in brackets, how many of them got an empty prediction (scored 0 on all four metrics,
    kept in the means). The ``average`` column is the mean over datasets of the per-dataset means (no
    ± since it is not a per-case spread); a row that lacks a dataset gets ``n/a`` there. Missing cells
    are ``n/a``. The numeric version is :func:`comparison_long`.
    """
    long = comparison_long(case_df, metrics, scale_pct, datasets)
    if long.empty:
        return pd.DataFrame()
    ds_cols = [d for d in ordered_datasets(long["dataset"]) if d != AVERAGE] + [AVERAGE]
    names = METRIC_NAMES if scale_pct else METRIC_NAMES_RAW
    count_col = "cases (empty pred.)"
    rows = []
    index = []
    for row in dict.fromkeys(long["row"]):
        sub = long[long["row"] == row]
        index.append((sub["group"].iloc[0], row))
        line = {}
        for ds in ds_cols:
            cell = sub[sub["dataset"] == ds]
            for metric in metrics:
                c = cell[cell["metric"] == metric]
                line[(ds, names[metric])] = (format_mean_std(c["mean"].iloc[0], c["std"].iloc[0], digits)
                                             if len(c) else NA)
            c0 = cell[cell["metric"] == metrics[0]]
            line[(ds, count_col)] = (f"{int(c0['n'].iloc[0])} ({int(c0['n_empty_pred'].iloc[0])})"
                                     if len(c0) else NA)
        rows.append(line)
    out = pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["group", "method"]))
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["dataset", ""])
    return out


def method_means(case_df: pd.DataFrame, metric: str = "dice", scale_pct: bool = True,
                 datasets: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean of ``metric`` per table row and dataset (wide, one column per dataset plus ``average``);
    rows in the paper's order. ``average`` is NaN for a row that lacks a dataset."""
    long = comparison_long(case_df, (metric,), scale_pct, datasets)
    wide = long.pivot(index="row", columns="dataset", values="mean")
    order = [r for r in dict.fromkeys(long["row"])]
    cols = [d for d in ordered_datasets(c for c in wide.columns if c != AVERAGE)] + [AVERAGE]
    return wide.reindex(index=order, columns=cols)


def second_best(case_df: pd.DataFrame, best: str = "VerSemi", metric: str = "dice",
                exclude_groups: Sequence[str] = ("Upper bound", "Other"),
                datasets: Sequence[str] | None = None) -> tuple[str | None, pd.Series]:
    """The strongest competitor of ``best``: the row with the highest mean ``metric`` averaged over
    datasets, among rows other than ``best`` that cover every dataset, outside ``exclude_groups`` (the
    fully supervised upper bound is not a competitor). Lower is better for hd95/asd.

    Returns ``(row name or None, ranking)`` where the ranking is the candidates' averages, best first.
    """
    df = with_rows(case_df)
    df = df[~df["group"].isin(list(exclude_groups)) & (df["row"] != best)]
    if df.empty:
        return None, pd.Series(dtype=float, name=AVERAGE)
    avg = method_means(df, metric, True, datasets)[AVERAGE].dropna()
    ranking = avg.sort_values(ascending=metric not in PCT_METRICS)
    return (ranking.index[0] if len(ranking) else None), ranking


# ----------------------------------------------------------------------------------------- statistics
def _paired(case_df: pd.DataFrame, name: str) -> pd.DataFrame:
    df = with_rows(case_df)
    sel = df[df["row"] == name]
    if sel.empty:
        sel = df[df["method"] == name]
    if sel.empty:
        raise VersemiError(f"no cases of method {name!r}; rows: {ordered_rows(df) if len(df) else []}")
    return sel


def paired_wilcoxon(case_df: pd.DataFrame, a: str, b: str, metric: str = "dice",
                    datasets: Sequence[str] | None = None, min_pairs: int = 6,
                    alternative: str = "two-sided") -> pd.DataFrame:
    """Wilcoxon signed-rank test of ``a`` against ``b`` on the paired test cases, per dataset and pooled.

    ``a`` and ``b`` are table rows (``'VerSemi'``, ``'BCP'``, ``'Uni-BCP'``, see :func:`with_rows`) or run
    labels. Cases are paired by (dataset, case); the pooled line pairs every case of every dataset.
    ``scipy.stats.wilcoxon(x_a, x_b, zero_method="wilcox", alternative=alternative)`` is applied to the
    metric values (Dice/Jaccard in %), NaN pairs (hd95/asd of an empty ground truth) left out.

    When there are fewer than ``min_pairs`` pairs with a non-zero difference the test is not run (p and
    the statistic are NaN) and ``note`` says why: with n = 5 non-zero differences the smallest possible
    two-sided p is 0.0625, so below 6 pairs no difference can reach 0.05. All-zero differences give
    NaN and the note 'all paired differences are zero'.

    Columns: ``dataset, n_pairs, n_nonzero, mean_a, mean_b, mean_diff, median_diff, statistic, p_value,
    note`` (``diff = a - b``).
    """
    from scipy.stats import wilcoxon

    A, B = _paired(case_df, a), _paired(case_df, b)
    scale = 100.0 if metric in PCT_METRICS else 1.0
    m = A[["dataset", "case", metric]].merge(B[["dataset", "case", metric]], on=["dataset", "case"],
                                             suffixes=("_a", "_b"))
    if datasets is not None:
        m = m[m["dataset"].isin(list(datasets))]
    m = m.dropna(subset=[f"{metric}_a", f"{metric}_b"])
    groups = [(ds, m[m["dataset"] == ds]) for ds in ordered_datasets(m["dataset"])] + [("pooled", m)]
    lines = []
    for ds, sub in groups:
        xa = sub[f"{metric}_a"].to_numpy(np.float64) * scale
        xb = sub[f"{metric}_b"].to_numpy(np.float64) * scale
        d = xa - xb
        nz = int(np.count_nonzero(d))
        line = {"dataset": ds, "n_pairs": int(d.size), "n_nonzero": nz,
                "mean_a": float(xa.mean()) if d.size else math.nan,
                "mean_b": float(xb.mean()) if d.size else math.nan,
                "mean_diff": float(d.mean()) if d.size else math.nan,
                "median_diff": float(np.median(d)) if d.size else math.nan,
                "statistic": math.nan, "p_value": math.nan, "note": ""}
        if d.size == 0:
            line["note"] = "no paired cases"
        elif nz == 0:
            line["note"] = "all paired differences are zero"
        elif nz < min_pairs:
            line["note"] = (f"too few pairs with a non-zero difference ({nz} < {min_pairs}): "
                            "the test cannot reach p < 0.05")
        else:
            res = wilcoxon(xa, xb, zero_method="wilcox", alternative=alternative)
            line["statistic"], line["p_value"] = float(res.statistic), float(res.pvalue)
            if nz < d.size:
                line["note"] = f"{d.size - nz} zero difference(s) dropped (zero_method='wilcox')"
        lines.append(line)
    return pd.DataFrame(lines, columns=["dataset", "n_pairs", "n_nonzero", "mean_a", "mean_b", "mean_diff",
                                        "median_diff", "statistic", "p_value", "note"])


def format_p(p: float, note: str = "") -> str:
    """'p = 0.031', 'p < 0.001', or 'not computed (<note>)' for NaN."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return f"not computed ({note})" if note else "not computed"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


# ------------------------------------------------------------------------------------ reported numbers
_REF_DATASETS = {
    "NIH Pancreas": "pancreas", "Pancreas-CT": "pancreas", "LA": "la", "Left Atrium": "la",
    "MSD Spleen": "spleen", "MSD Lung Tumor": "lung", "All four datasets (average)": AVERAGE,
}
# training cases of the authors' splits (n labeled = ratio x this); LA/Pancreas rows of the published
# results are matched on the number of labeled cases
_TRAIN_CASES = {"pancreas": 62, "la": 80, "spleen": 30, "lung": 50}
_NUMBER = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)")


def reference_csv(name: str) -> pd.DataFrame:
    """A CSV of ``versemi/reference`` (package data, read with importlib.resources), as strings."""
    res = resources.files("versemi") / "reference" / name
    if not res.is_file():
        raise VersemiError(f"versemi/reference/{name} is missing from the package")
    with res.open("r", encoding="utf-8") as fh:
        return pd.read_csv(fh, dtype=str, keep_default_na=False)


def _num(text: str) -> float:
    """A leading number of a reference cell; NaN for '', 'NA', 'NA (...)' or any text."""
    m = _NUMBER.match(str(text or ""))
    return float(m.group(1)) if m else math.nan


def n_labeled(dataset: str, ratio: int) -> int:
    """Labeled training cases of the authors' split for ``ratio`` % (100: all training cases)."""
    return int(round(_TRAIN_CASES[dataset] * ratio / 100)) if ratio != 100 else _TRAIN_CASES[dataset]


def _published_row_name(method: str, ratio_of_row: int) -> str | None:
    """Our table row for a method name of published_results.csv (None: not run here)."""
    if method.startswith("V-Net"):
        return "Fully supervised" if "all" in method else "Sup-only"
    return {"UA-MT": "UA-MT", "BCP": "BCP", "MT": "MT", "Mean Teacher": "MT"}.get(method)


def reported_numbers(ratio: int = 10) -> pd.DataFrame:
    """Every reported number of the reference data for label ratio ``ratio`` (plus the 100% rows of the
    upper bound), as floats, one line per (source row):

    columns ``row`` (our table row, or None when the method is not run here), ``reported_method``,
    ``dataset``, ``ratio``, ``n_labeled``, ``split``, ``dice, jaccard, hd95, asd`` (NaN where the source has
    no number), ``derived`` (True for a value obtained by arithmetic from a relative claim, never
    reported as such), ``source``, ``confidence``, ``file``.

    Sources: ``main_comparison.csv`` (paper fragments), ``relative_claims.csv`` (only its derived absolute
    values, e.g. MagicNet Pancreas 10% = 78.63 - 3.07), ``published_results.csv`` (LA and Pancreas,
    matched on the number of labeled cases: LA 8/16, Pancreas 6/12, 80/62 for the upper bound).
    """
    lines = []
    for _, r in reference_csv("main_comparison.csv").iterrows():
        ds = _REF_DATASETS.get(r["dataset"])
        if ds is None or _num(r["label_ratio"]) != ratio:
            continue
        lines.append({"row": "VerSemi" if r["method"] == "VerSemi" else None, "reported_method": r["method"],
                      "dataset": ds, "ratio": ratio, "n_labeled": n_labeled(ds, ratio),
                      "split": "VerSemi authors' split", **{k: _num(r[k]) for k in METRICS}, "derived": False,
                      "source": r["source"], "confidence": r["confidence"], "file": "main_comparison.csv"})
    for _, r in reference_csv("relative_claims.csv").iterrows():
        ds = _REF_DATASETS.get(r["dataset"])
        value = _num(r["derived_value_for_compared_method"])
        if ds is None or ds == AVERAGE or math.isnan(value) or _num(r["label_ratio"]) != ratio:
            continue
        metric = {"Dice(%)": "dice", "Jaccard(%)": "jaccard", "95HD(voxel)": "hd95"}.get(r["metric"])
        if metric is None:
            continue
        vals = {k: math.nan for k in METRICS}
        vals[metric] = value
        lines.append({"row": None, "reported_method": r["compared_to"], "dataset": ds, "ratio": ratio,
                      "n_labeled": n_labeled(ds, ratio), "split": "VerSemi authors' split", **vals,
                      "derived": True,
                      "source": f"derived by arithmetic, not reported: {r['derived_value_for_compared_method']} "
                                f"(from the claim '{r['method']} vs {r['compared_to']} {r['reported_delta']}', "
                                f"{r['source']})",
                      "confidence": r["confidence"], "file": "relative_claims.csv"})
    for _, r in reference_csv("published_results.csv").iterrows():
        ds = _REF_DATASETS.get(r["dataset"])
        if ds is None:
            continue
        n = int(_num(r["n_labeled"])) if not math.isnan(_num(r["n_labeled"])) else -1
        if n == n_labeled(ds, ratio):
            row_ratio = ratio
        elif n == n_labeled(ds, 100):
            row_ratio = 100
        else:
            continue
        row = _published_row_name(r["method"], row_ratio)
        if row == "Fully supervised" and row_ratio != 100 or row == "Sup-only" and row_ratio == 100:
            row = None
        lines.append({"row": row, "reported_method": r["method"], "dataset": ds, "ratio": row_ratio,
                      "n_labeled": n, "split": r["split"], **{k: _num(r[k]) for k in METRICS}, "derived": False,
                      "source": r["source"], "confidence": r["confidence"], "file": "published_results.csv"})
    cols = ["row", "reported_method", "dataset", "ratio", "n_labeled", "split", *METRICS, "derived", "source",
            "confidence", "file"]
    return pd.DataFrame(lines, columns=cols)


def reported_table(ratio: int = 10, rows: Sequence[str] | None = None, datasets: Sequence[str] = DATASET_ORDER,
                   include_not_run: bool = True, digits: int = 2) -> pd.DataFrame:
    """The reported numbers aligned to our table: one line per (our row, dataset) and source.

    ``rows`` are our table rows (default: those of the SOTA group). A (row, dataset) pair without any
    reported number gets one line with ``n/a`` in every metric and the source 'no reported number in the
    reference data' (confidence 'none'): nothing is filled in. A source line whose number is missing
    (the reference CSV's NOT FOUND lines) also shows ``n/a``. Lines for methods that are not run here
    (MagicNet, DTC, ...) follow with ``method = '(not run here) <name>'`` when ``include_not_run``.
    Derived values (MagicNet Pancreas 75.56 = 78.63 - 3.07) are marked '(derived)'.

    Metric columns are strings (``'78.63'``, ``'n/a'``, ``'75.56 (derived)'``); Dice/Jaccard in %,
    distances in voxels, as the sources. ``split`` names the train/test split of the source: several
    Pancreas rows use another test set than VerSemi's, which makes them less comparable still.
    """
    rep = reported_numbers(ratio)
    rep = rep[rep["dataset"].isin(list(datasets))]
    if rows is None:
        rows = ["Sup-only", "MT", "UA-MT", "BCP", "Uni-Sup-only", "Uni-MT", "Uni-UA-MT", "Uni-BCP", "VerSemi",
                "Fully supervised"]

    def fmt(v: float, derived: bool) -> str:
        if isinstance(v, float) and math.isnan(v):
            return NA
        return f"{v:.{digits}f}" + (" (derived)" if derived else "")

    out = []
    for row in rows:
        r_ratio = 100 if row == "Fully supervised" else ratio
        for ds in datasets:
            hits = rep[(rep["row"] == row) & (rep["dataset"] == ds) & (rep["ratio"] == r_ratio)]
            if hits.empty:
                out.append({"method": row, "dataset": ds, "labeled": f"{r_ratio}% ({n_labeled(ds, r_ratio)})",
                            "reported as": NA, "split": NA, **{METRIC_NAMES[k]: NA for k in METRICS},
                            "source": "no reported number in the reference data", "confidence": "none"})
            for _, h in hits.iterrows():
                out.append({"method": row, "dataset": ds, "labeled": f"{r_ratio}% ({h['n_labeled']})",
                            "reported as": h["reported_method"], "split": h["split"],
                            **{METRIC_NAMES[k]: fmt(h[k], bool(h["derived"])) for k in METRICS},
                            "source": h["source"], "confidence": h["confidence"]})
    if include_not_run:
        other = rep[rep["row"].isna() & ~rep["reported_method"].isin(["any method"])]
        for _, h in other.sort_values(["dataset", "reported_method"], key=_ds_key).iterrows():
            out.append({"method": f"(not run here) {h['reported_method']}", "dataset": h["dataset"],
                        "labeled": f"{h['ratio']}% ({h['n_labeled']})", "reported as": h["reported_method"],
                        "split": h["split"],
                        **{METRIC_NAMES[k]: fmt(h[k], bool(h["derived"])) for k in METRICS},
                        "source": h["source"], "confidence": h["confidence"]})
    return pd.DataFrame(out, columns=["method", "dataset", "labeled", "reported as", "split", *METRIC_NAMES.values(),
                                      "source", "confidence"])


def _ds_key(col: pd.Series) -> pd.Series:
    if col.name == "dataset":
        return col.map(lambda d: DATASET_ORDER.index(d) if d in DATASET_ORDER else 99)
    return col


def reported_claims() -> pd.DataFrame:
    """The paper's relative claims (``relative_claims.csv``) with our dataset keys, verbatim."""
    df = reference_csv("relative_claims.csv")
    df.insert(1, "dataset_key", df["dataset"].map(_REF_DATASETS))
    return df


def reported_value(method: str, dataset: str, ratio: int = 10, metric: str = "dice") -> float:
    """The VerSemi-paper number for (method, dataset, ratio) from main_comparison.csv; NaN if none."""
    rep = reported_numbers(ratio)
    hit = rep[(rep["file"] == "main_comparison.csv") & (rep["reported_method"] == method)
              & (rep["dataset"] == dataset)]
    return float(hit[metric].iloc[0]) if len(hit) else math.nan


# -------------------------------------------------------------------------------------------- ablations
# ablation label (versemi.experiments.ABLATIONS) -> the component of reference/ablation.csv it removes
ABLATION_CLAIMS = {
    "w/o L_aux": "Auxiliary constraint L_aux",
    "w/o synthetic Task#5": "Synthetic Task#5",
    "multi-head (no controller)": "Dynamic task-prompted head vs multi-head",
}


def ablation_claims() -> pd.DataFrame:
    """``ablation.csv`` (the paper's claimed ablation effects, all of low confidence) keyed by our
    ablation labels (column ``ablation``; None for a component we have no ablation of)."""
    df = reference_csv("ablation.csv")
    keys = {v: k for k, v in ABLATION_CLAIMS.items()}
    df.insert(0, "ablation", [next((keys[p] for p in keys if c.startswith(p)), None) for c in df["component"]])
    return df


def ablation_table(case_df: pd.DataFrame, reference_label: str = "VerSemi (full)", metric: str = "dice",
                   labels: Sequence[str] | None = None, datasets: Sequence[str] | None = None,
                   digits: int = 2, claims: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ablations against the full model: mean ``metric`` per dataset and averaged, and the change vs
    ``reference_label`` in points (Dice in %, so 'Dice points').

    ``labels``: the ablations to show (default all in ``case_df``; the reference is always included).
    Returns ``(display, numeric)``. ``numeric`` has one line per ablation with ``<dataset>`` means,
    ``average``, ``delta_<dataset>`` and ``delta_average`` (ablation - full; negative = the component
    helped), ``n``, ``n_empty_pred``, the pooled paired Wilcoxon p against the full model
    (``p_vs_full``, see :func:`paired_wilcoxon`), and the paper's claim for that component
    (``claimed_change``: the component's reported *gain*, verbatim, so removing it is expected to change
    the score by minus that; ``claim_confidence``; 'n/a' when the paper's claim is not available).
    ``claims=False`` leaves the claim columns out of the display table (rows that are not ablations of
    the paper, e.g. the deviation switches).
    """
    _require(case_df, ["method", "dataset", "case", metric])
    present = list(dict.fromkeys(case_df["method"]))
    if reference_label not in present:
        raise VersemiError(f"the reference run {reference_label!r} is not in the table ({present})")
    if labels is not None:
        unknown = [lab for lab in labels if lab not in present]
        if unknown:
            raise VersemiError(f"unknown ablation(s) {unknown}; present: {present}")
        keep = [reference_label] + [lab for lab in labels if lab != reference_label]
    else:
        keep = [reference_label] + [lab for lab in present if lab != reference_label]
    df = case_df[case_df["method"].isin(keep)]
    if datasets is not None:
        df = df[df["dataset"].isin(list(datasets))]
    ds_list = ordered_datasets(df["dataset"])
    scale = 100.0 if metric in PCT_METRICS else 1.0
    claim_df = ablation_claims().set_index("ablation")
    means = {}
    for lab in keep:
        sub = df[df["method"] == lab]
        means[lab] = {ds: _cell_stats(sub[sub["dataset"] == ds], metric, scale)["mean"]
                      if (sub["dataset"] == ds).any() else math.nan for ds in ds_list}
        vals = list(means[lab].values())
        means[lab][AVERAGE] = float(np.mean(vals)) if vals and not np.isnan(vals).any() else math.nan
    lines = []
    for lab in keep:
        sub = df[df["method"] == lab]
        line = {"ablation": lab, **{ds: means[lab][ds] for ds in [*ds_list, AVERAGE]}}
        for ds in [*ds_list, AVERAGE]:
            line[f"delta_{ds}"] = means[lab][ds] - means[reference_label][ds]
        line["n"] = int(len(sub))
        line["n_empty_pred"] = int(np.asarray(sub["empty_pred"], dtype=bool).sum()) if "empty_pred" in sub else 0
        if lab == reference_label:
            line["p_vs_full"], line["p_note"] = math.nan, "reference"
        else:
            w = paired_wilcoxon(df, lab, reference_label, metric).set_index("dataset").loc["pooled"]
            line["p_vs_full"], line["p_note"] = w["p_value"], w["note"]
        if lab in claim_df.index:
            line["claimed_change"] = claim_df.loc[lab, "reported_change"]
            line["claimed_metric"] = claim_df.loc[lab, "metric"]
            line["claim_confidence"] = claim_df.loc[lab, "confidence"]
            line["claim_source"] = claim_df.loc[lab, "source"]
        else:
            line["claimed_change"] = line["claimed_metric"] = line["claim_confidence"] = NA
            line["claim_source"] = "no claim available in the reference data" if lab != reference_label else ""
        lines.append(line)
    numeric = pd.DataFrame(lines)
    unit = METRIC_NAMES[metric]
    disp = pd.DataFrame({"ablation": numeric["ablation"]})
    for ds in [*ds_list, AVERAGE]:
        disp[f"{ds} {unit}"] = [
            NA if math.isnan(m) else (f"{m:.{digits}f}" if lab == reference_label or math.isnan(d)
                                      else f"{m:.{digits}f} ({d:+.{digits}f})")
            for lab, m, d in zip(numeric["ablation"], numeric[ds], numeric[f"delta_{ds}"])]
    disp["cases (empty pred.)"] = [f"{n} ({e})" for n, e in zip(numeric["n"], numeric["n_empty_pred"])]
    disp["Wilcoxon vs full (pooled)"] = [
        "" if lab == reference_label else format_p(p, note)
        for lab, p, note in zip(numeric["ablation"], numeric["p_vs_full"], numeric["p_note"])]
    if not claims:
        return disp.set_index("ablation"), numeric
    disp["paper's claim for the component"] = [
        "" if lab == reference_label else (NA if c == NA else f"{c} {m}")
        for lab, c, m in zip(numeric["ablation"], numeric["claimed_change"], numeric["claimed_metric"])]
    disp["claim confidence"] = ["" if lab == reference_label else c
                                for lab, c in zip(numeric["ablation"], numeric["claim_confidence"])]
    return disp.set_index("ablation"), numeric


# ------------------------------------------------------------------------------------------ head costs
def head_parameter_counts(n_filters: int = 16, num_tasks: int = 4) -> pd.DataFrame:
    """Parameters of VerSemiNet per head variant: the whole network and the head-only part.

    The head-only part is what differs between variants: the global branch (BatchNorm) + controller of
    the dynamic head, or the static 180-number heads (``multi``: one per prompt, ``none``: one). The
    shared pre-classifier (``precls_conv``) and the backbone are counted in the total only.
    """
    from versemi.model import VerSemiNet, count_parameters

    lines = []
    for head in ("dynamic", "multi", "none"):
        net = VerSemiNet(n_filters=n_filters, num_tasks=num_tasks, head=head)
        head_only = sum(p.numel() for n, p in net.named_parameters()
                        if n.startswith(("GAP.", "controller.", "static_heads")))
        lines.append({"head": head, "params_total": count_parameters(net), "params_head": int(head_only)})
    df = pd.DataFrame(lines)
    dyn = df.set_index("head").loc["dynamic"]
    df["total_vs_dynamic_%"] = 100.0 * (df["params_total"] / dyn["params_total"] - 1.0)
    df["head_vs_dynamic_%"] = 100.0 * (df["params_head"] / dyn["params_head"] - 1.0)
    return df


def head_variant_costs(n_filters: int = 8, patch: Sequence[int] = (32, 32, 32), batch: int = 2, reps: int = 3,
                       num_tasks: int = 4, device: str | None = None, backward: bool = True,
                       seed: int = 0) -> pd.DataFrame:
    """Parameter counts (:func:`head_parameter_counts`) and measured step times of the three head
    variants on the current device.

    Each variant is a fresh network (seed ``seed``); each runs ``reps`` timed forward passes (eval mode,
    no grad; one prompt per sample, prompts cycling 1..T) and ``reps`` timed forward + backward passes
    (train mode, the sum of the logits as a stand-in loss) on the same random batch ``(batch, 1, *patch)``,
    after one untimed warm-up of each; the variants take turns (round robin) within each repetition. Times are the fastest of the ``reps`` passes in milliseconds (the
    ``timeit`` convention: on a shared machine the other processes only ever add time; CUDA is
    synchronised around each pass). They are measurements of this machine: read them as ratios. Columns: ``head, params_total, params_head, total_vs_dynamic_%, head_vs_dynamic_%,
    forward_ms, train_step_ms, forward_vs_dynamic_%, train_step_vs_dynamic_%, device, patch, batch, reps``.
    """
    import torch

    from versemi.model import VerSemiNet
    from versemi.utils import get_device

    if reps < 1 or batch < 1:
        raise VersemiError(f"reps and batch must be >= 1, got reps={reps}, batch={batch}")
    dev = get_device(device)
    patch = tuple(int(p) for p in patch)
    counts = head_parameter_counts(n_filters, num_tasks).set_index("head")

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, 1, *patch), generator=gen).to(dev)
    tasks = torch.tensor([1 + i % num_tasks for i in range(batch)], device=dev)
    heads = ("dynamic", "multi", "none")
    nets = {}
    for head in heads:
        torch.manual_seed(seed)
        nets[head] = VerSemiNet(n_filters=n_filters, num_tasks=num_tasks, head=head).to(dev)

    def forward(net):
        net.eval()
        with torch.no_grad():
            net(x, tasks)

    def train_step(net):
        net.train()
        net.zero_grad(set_to_none=True)
        net(x, tasks).sum().backward()

    def timed(fn, net) -> float:
        sync()
        t0 = time.perf_counter()
        fn(net)
        sync()
        return time.perf_counter() - t0

    kinds = [("forward", forward)] + ([("train_step", train_step)] if backward else [])
    times = {(h, k): [] for h in heads for k, _ in kinds}
    for k, fn in kinds:
        for h in heads:  # untimed warm-up
            fn(nets[h])
        for _ in range(reps):  # round robin, so that a change of the machine's load hits every variant
            for h in heads:
                times[(h, k)].append(timed(fn, nets[h]))
    lines = []
    for head in heads:
        c = counts.loc[head]
        lines.append({"head": head, "params_total": int(c["params_total"]), "params_head": int(c["params_head"]),
                      "total_vs_dynamic_%": float(c["total_vs_dynamic_%"]),
                      "head_vs_dynamic_%": float(c["head_vs_dynamic_%"]),
                      "forward_ms": 1000.0 * float(np.min(times[(head, "forward")])),
                      "train_step_ms": 1000.0 * float(np.min(times[(head, "train_step")])) if backward else math.nan})
    del nets
    df = pd.DataFrame(lines)
    dyn = df.set_index("head").loc["dynamic"]
    df["forward_vs_dynamic_%"] = 100.0 * (df["forward_ms"] / dyn["forward_ms"] - 1.0)
    df["train_step_vs_dynamic_%"] = 100.0 * (df["train_step_ms"] / dyn["train_step_ms"] - 1.0)
    df["device"] = str(dev)
    df["patch"] = "x".join(map(str, patch))
    df["batch"] = batch
    df["reps"] = reps
    return df


# -------------------------------------------------------------------------------------------- run times
def run_available(configs: dict, prepared_dir, runs_root, device=None,
                  progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """:func:`versemi.experiments.run_group`, one config at a time, keeping going past a config that the
    prepared data cannot support (a :class:`~versemi.utils.VersemiError`, e.g. a semi-supervised method
    on a dataset with no unlabeled case, as in the tiny smoke phantoms).

    Returns ``(runs, not_trained)``: label -> complete run folder, and a table ``method, reason`` of the
    configs that were not trained, so that the notebook shows them instead of dropping them silently.
    Any other exception propagates.
    """
    from versemi.experiments import run_group

    runs, skipped = {}, []
    for label, cfg in configs.items():
        try:
            runs.update(run_group({label: cfg}, prepared_dir, runs_root, device=device, progress=progress))
        except VersemiError as e:
            # the reason without the builder's absolute paths (the page is published)
            reason = str(e).replace(str(prepared_dir), "prepared data").replace(str(runs_root), "runs")
            skipped.append({"method": label, "reason": reason})
    return runs, pd.DataFrame(skipped, columns=["method", "reason"])


def run_times(runs: dict) -> pd.DataFrame:
    """Training cost per run: wall time (DONE.json), steps, and the median step time (the run's
    ``timing.csv``, or the ``seconds`` column of an older run's ``metrics.csv``).

    Columns: ``method, group, row, dataset, train_seconds, steps, median_step_s, run``.
    """
    from versemi.experiments import run_seconds

    df = run_seconds(runs)
    info = pd.DataFrame([parse_label(m) for m in df["method"]])
    df.insert(1, "group", info["group"].to_numpy())
    df.insert(2, "row", info["row"].to_numpy())
    df.insert(3, "dataset", info["dataset"].fillna("all").to_numpy())
    steps, med = [], []
    for label in df["method"]:
        m = pd.DataFrame()
        for name in ("timing.csv", "metrics.csv"):
            p = Path(runs[label]) / name
            if p.is_file():
                m = pd.read_csv(p)
                if "seconds" in m:
                    break
        steps.append(int(len(m)) if len(m) else None)
        med.append(float(m["seconds"].median()) if "seconds" in m and len(m) else math.nan)
    df["steps"] = steps
    df["median_step_s"] = med
    return df[["method", "group", "row", "dataset", "train_seconds", "steps", "median_step_s", "run"]]


# ------------------------------------------------------------------------------------------------ plots
def plot_case_scores(case_df: pd.DataFrame, metric: str = "dice", datasets: Sequence[str] | None = None,
                     title: str = "", col_wrap: int = 2):
    """Per-case box + strip plot of ``metric`` by table row, one panel per dataset (seaborn).

    Cases with an empty prediction (scored 0) are drawn as red crosses so they are visible, not hidden.
    Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = with_rows(case_df)
    if datasets is not None:
        df = df[df["dataset"].isin(list(datasets))]
    if df.empty:
        raise VersemiError("no cases to plot")
    scale = 100.0 if metric in PCT_METRICS else 1.0
    df = df.assign(value=df[metric].astype(float) * scale,
                   empty=np.asarray(df.get("empty_pred", False), dtype=bool))
    order = ordered_rows(df)
    ds_list = ordered_datasets(df["dataset"])
    ncols = min(col_wrap, len(ds_list))
    nrows = math.ceil(len(ds_list) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 0.32 * len(order) * nrows + 1.6 * nrows),
                             squeeze=False, sharex=True)
    palette = dict(zip(GROUPS, sns.color_palette("tab10", len(GROUPS))))
    for ax, ds in zip(axes.flat, ds_list):
        sub = df[df["dataset"] == ds]
        rows_here = [r for r in order if (sub["row"] == r).any()]
        colors = {r: palette.get(sub[sub["row"] == r]["group"].iloc[0], "grey") for r in rows_here}
        with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib 3.11's deprecated `vert`
            warnings.filterwarnings("ignore", message=".*vert: bool was deprecated.*")
            sns.boxplot(data=sub, x="value", y="row", order=rows_here, hue="row", hue_order=rows_here,
                        palette=colors, ax=ax, fliersize=0, width=0.6, linewidth=0.8, legend=False,
                        boxprops={"alpha": 0.45})
        sns.stripplot(data=sub[~sub["empty"]], x="value", y="row", order=rows_here, ax=ax, color="black",
                      size=3, jitter=0.15, alpha=0.8)
        if sub["empty"].any():
            e = sub[sub["empty"]]
            ax.scatter(e["value"], [rows_here.index(r) for r in e["row"]], marker="x", color="red", s=28,
                       label="empty prediction (scored 0)", zorder=5)
            ax.legend(loc="lower left", fontsize=7, frameon=True)
        ax.set_title(DATASET_TITLES.get(ds, ds))
        ax.set_xlabel(METRIC_NAMES[metric] if scale == 100.0 else METRIC_NAMES_RAW[metric])
        ax.set_ylabel("")
    for ax in list(axes.flat)[len(ds_list):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_ablation(case_df: pd.DataFrame, reference_label: str = "VerSemi (full)", metric: str = "dice",
                  labels: Sequence[str] | None = None, title: str = ""):
    """Bar plot of the mean ``metric`` per ablation and dataset with the per-case values as points; a
    dashed line marks the full model's mean averaged over datasets. Returns the Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    order = [reference_label] + [lab for lab in (labels or dict.fromkeys(case_df["method"]))
                                 if lab != reference_label]
    df = case_df[case_df["method"].isin(order)]
    if df.empty:
        raise VersemiError("no cases to plot")
    scale = 100.0 if metric in PCT_METRICS else 1.0
    df = df.assign(value=df[metric].astype(float) * scale)
    hue_order = ordered_datasets(df["dataset"])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(order)), 3.8))
    sns.barplot(data=df, x="method", y="value", hue="dataset", order=order, hue_order=hue_order, ax=ax,
                errorbar=None, alpha=0.6)
    sns.stripplot(data=df, x="method", y="value", hue="dataset", order=order, hue_order=hue_order, ax=ax,
                  dodge=True, palette="dark:black", size=3, alpha=0.7, legend=False)
    full = df[df["method"] == reference_label].groupby("dataset")["value"].mean().mean()
    ax.axhline(full, ls="--", lw=1, color="grey", label=f"{reference_label}: mean over datasets")
    ax.set_xlabel("")
    ax.set_ylabel(METRIC_NAMES[metric] if scale == 100.0 else METRIC_NAMES_RAW[metric])
    ax.tick_params(axis="x", rotation=20)
    for t in ax.get_xticklabels():
        t.set_horizontalalignment("right")
    ax.legend(fontsize=7, ncol=3, loc="lower left")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (PNG; parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def save_table(df: pd.DataFrame, path: str | Path, index: bool = False) -> Path:
    """Write ``df`` as CSV (parent folders created); MultiIndex columns are flattened 'a | b'."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = df.copy()
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = [" | ".join(str(c) for c in col if str(c)) for col in out.columns]
    out.to_csv(path, index=index)
    return path


# --------------------------------------------------------------------------------- notebook drivers
SELECTION_RULES = {
    "val": "the checkpoint with the best mean validation Dice, the validation split being carved from the "
           "training cases (unlabeled-pool cases whose labels are used only for model selection), never the "
           "test set; a run without any validation case keeps its last checkpoint",
    "last": "the last checkpoint (no model selection)",
    "test": "the checkpoint with the best test Dice, as the authors' released code does (optimistic: the "
            "test set is used for model selection)",
}


def train_sota(profile: str, ratios: Sequence[int], seed: int, prepared_dir, runs_root,
               methods: Sequence[str] | None = None, device=None,
               progress: bool = True) -> tuple[dict[int, dict], pd.DataFrame]:
    """Train (or fetch from the run cache) the SOTA group of every label ratio in ``ratios``, restricted
    to ``methods`` (see :func:`select_configs`). Returns ``({ratio: {label: run folder}}, not_trained)``
    where ``not_trained`` lists ``ratio, method, reason`` of the configs the data could not support
    (see :func:`run_available`)."""
    from versemi.experiments import sota_configs

    runs, skipped = {}, []
    for r in ratios:
        cfgs = select_configs(sota_configs(profile, int(r), seed), methods)
        runs[int(r)], nt = run_available(cfgs, prepared_dir, runs_root, device=device, progress=progress)
        skipped += [{"ratio": int(r), **row} for row in nt.to_dict("records")]
    return runs, pd.DataFrame(skipped, columns=["ratio", "method", "reason"])


def train_ablations(profile: str, ratio: int, seed: int, prepared_dir, runs_root,
                    ablations: Sequence[str] | None = None, reference_label: str = "VerSemi (full)",
                    device=None, progress: bool = True, variants: dict | None = None) -> tuple[dict, pd.DataFrame]:
    """Train (or fetch) the ablation group (:func:`versemi.experiments.ablation_configs`), restricted to
    ``ablations`` (labels of ``versemi.experiments.ABLATIONS``, or of ``variants`` when given, e.g.
    ``versemi.experiments.DEVIATIONS``; the full model is always included: the deltas are taken against
    it). Returns ``(runs, not_trained)``."""
    from versemi.experiments import ablation_configs

    cfgs = ablation_configs(profile, ratio, seed, variants=variants)
    if ablations is not None:
        unknown = [a for a in ablations if a not in cfgs]
        if unknown:
            raise VersemiError(f"unknown ablation(s) {unknown}; choose among {list(cfgs)}")
        cfgs = {k: v for k, v in cfgs.items() if k == reference_label or k in ablations}
    return run_available(cfgs, prepared_dir, runs_root, device=device, progress=progress)


def selection_rules(runs: dict) -> pd.DataFrame:
    """Model selection of each run: its ``config.selection`` and the checkpoint the evaluation used
    (``best.pt`` when it exists and the rule is not 'last', else ``last.pt``, as
    :func:`versemi.train.load_run_net`)."""
    from versemi.experiments import RunConfig

    lines = []
    for label, run_dir in runs.items():
        cfg = RunConfig.from_yaml(Path(run_dir) / "config.yaml")
        best = (Path(run_dir) / "best.pt").is_file()
        used = "best.pt" if (cfg.selection != "last" and best) else "last.pt"
        lines.append({"method": label, "selection": cfg.selection, "checkpoint": used, "steps": cfg.steps})
    return pd.DataFrame(lines, columns=["method", "selection", "checkpoint", "steps"])


def describe_selection(runs: dict) -> str:
    """One sentence on the selection rule(s) the runs used (for the notebook's prose)."""
    sel = selection_rules(runs)
    if sel.empty:
        return "no run"
    parts = []
    for rule in dict.fromkeys(sel["selection"]):
        sub = sel[sel["selection"] == rule]
        n_last = int((sub["checkpoint"] == "last.pt").sum()) if rule != "last" else 0
        extra = f" ({n_last} of {len(sub)} runs had no validation case and kept their last checkpoint)" \
            if n_last else ""
        parts.append(f"selection='{rule}': {SELECTION_RULES.get(rule, rule)}{extra}")
    return "; ".join(parts)


def fmt_value(v: float, digits: int = 2, suffix: str = "") -> str:
    return NA if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}{suffix}"


def versemi_vs_second_best(case_df: pd.DataFrame, datasets: Sequence[str] | None = None, best: str = "VerSemi",
                           metric: str = "dice") -> tuple[dict, pd.DataFrame]:
    """VerSemi against its strongest competitor (:func:`second_best`): ``(summary, wilcoxon)``.

    ``summary`` holds floats (``best_mean``, ``second_mean``, ``gain``: mean ``metric`` averaged over
    datasets, gain in points), the ``second`` row name (None when there is no competitor or no VerSemi
    row), the pooled Wilcoxon ``p`` and its ``p_note``, and ``text_*`` versions of each for glue
    (``'n/a'`` where a value does not exist). ``wilcoxon`` is :func:`paired_wilcoxon` (empty when not
    computable).
    """
    df = with_rows(case_df)
    if datasets is not None:
        df = df[df["dataset"].isin(list(datasets))]
    second, ranking = second_best(df, best=best, metric=metric)
    has_best = bool((df["row"] == best).any())
    best_mean = float(method_means(df, metric, True)[AVERAGE].get(best, math.nan)) if has_best else math.nan
    second_mean = float(ranking.iloc[0]) if second is not None else math.nan
    wil = pd.DataFrame()
    p, note = math.nan, ""
    if has_best and second is not None:
        wil = paired_wilcoxon(df, best, second, metric)
        pooled = wil.set_index("dataset").loc["pooled"]
        p, note = float(pooled["p_value"]), str(pooled["note"])
    elif not has_best:
        note = f"{best} was not run"
    else:
        note = "no competitor was run"
    s = {"best": best, "best_mean": best_mean, "second": second, "second_mean": second_mean,
         "gain": best_mean - second_mean, "p": p, "p_note": note, "ranking": ranking}
    s.update(text_best_mean=fmt_value(best_mean), text_second=second or NA, text_second_mean=fmt_value(second_mean),
             text_gain=NA if math.isnan(s["gain"]) else f"{s['gain']:+.2f}", text_p=format_p(p, note))
    return s, wil


def caption_table(df: pd.DataFrame, caption: str, precision: int = 2, hide_index: bool = False):
    """A pandas Styler of ``df`` with ``caption`` (floats to ``precision`` digits) for display."""
    st = df.style.set_caption(caption).format(precision=precision, na_rep=NA)
    return st.hide(axis="index") if hide_index else st


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def data_statement(profile: str) -> str:
    """A Markdown paragraph saying which data and budget produced the page, and whether its numbers
    can be compared with the reported ones. The network size and budget are read from the profile's
    configuration (:func:`versemi.experiments.make_config`), not typed."""
    from versemi.experiments import make_config

    c = make_config("versemi", profile)
    paper = make_config("versemi", "paper")
    shape = "x".join(map(str, c.patch))
    if is_phantom(profile):
        return (f"**{_cap(data_note(profile))}.** Every number on this page comes from *phantoms*: "
                f"procedurally generated volumes that imitate the four datasets, with a reduced network "
                f"(width f = {c.n_filters} instead of {paper.n_filters}, patch {shape} instead of "
                f"{'x'.join(map(str, paper.patch))}) and a budget of {c.steps} optimisation steps per run instead "
                f"of {paper.steps:,} for VerSemi in the paper profile. The numbers the paper and the baselines "
                f"report were obtained on the real datasets with the full network and budget. **The two are not "
                f"comparable**: the {profile} numbers show that the whole pipeline runs and how the methods rank on "
                f"phantoms, not how they perform on real scans.")
    if profile == "paper":
        return (f"**{_cap(data_note(profile))}.** The runs use the authors' settings (width f = "
                f"{c.n_filters}, patch {shape}, {c.steps:,} steps for VerSemi) on the real datasets prepared "
                f"with `versemi prepare`. Differences from the reported numbers remain possible: the model is "
                f"selected on a validation split carved from the training cases (the authors select on the test "
                f"set), and the baselines' reported numbers come from other papers with their own protocols.")
    return (f"**{_cap(data_note(profile))}.** Width f = {c.n_filters}, patch {shape}, {c.steps:,} steps "
            f"per run: a reduced budget on real data, not the paper's settings, so the numbers are not the "
            f"paper's and are not comparable with the reported ones.")
