"""The reported numbers: what the VerSemi paper and the baselines' papers published, beside ours.

The numbers ship with the package in ``versemi/reference/*.csv`` (see its README): every line carries
its source and a confidence level; a number that could not be found is empty or ``NA`` and stays
``n/a`` here, never filled in. Dice and Jaccard are in %, 95HD and ASD in voxels, as the sources.

* ``main_comparison.csv``: the VerSemi paper's absolute numbers that could be found;
* ``relative_claims.csv``: its relative claims ('+2.69 Dice over the second best'), and the values
  derived from them by arithmetic (marked *derived*, never presented as reported);
* ``published_results.csv``: the baselines' published results on LA and NIH Pancreas-CT, matched to our
  rows on the number of labeled cases of the authors' split (:func:`n_labeled`);
* ``ablation.csv``: the paper's claimed ablation effects (secondary source, low confidence).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from importlib import resources

import pandas as pd

from versemi.companion.tables import AVERAGE, DATASET_ORDER, METHOD_ORDER, METRIC_NAMES, NA
from versemi.config import FULLY_SUPERVISED
from versemi.data.registry import DATASETS
from versemi.evaluate import METRICS
from versemi.utils import VersemiError

# dataset names of the reference CSVs -> our dataset keys
REF_DATASETS = {
    "NIH Pancreas": "pancreas", "Pancreas-CT": "pancreas", "LA": "la", "Left Atrium": "la",
    "MSD Spleen": "spleen", "MSD Lung Tumor": "lung", "All four datasets (average)": AVERAGE,
}
# the rows of the SOTA table, in the paper's order (reported_table's default)
SOTA_ROWS = METHOD_ORDER
_NUMBER = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)")


def reference_csv(name: str) -> pd.DataFrame:
    """A CSV of ``versemi/reference`` (package data, read with importlib.resources), as strings."""
    res = resources.files("versemi") / "reference" / name
    if not res.is_file():
        raise VersemiError(f"versemi/reference/{name} is missing from the package")
    with res.open("r", encoding="utf-8") as fh:
        return pd.read_csv(fh, dtype=str, keep_default_na=False)


def leading_number(text: str) -> float:
    """The leading number of a reference cell; NaN for '', 'NA', 'NA (...)' or any text."""
    m = _NUMBER.match(str(text or ""))
    return float(m.group(1)) if m else math.nan


def n_labeled(dataset: str, ratio: int) -> int:
    """Labeled training cases of the authors' split for ``ratio`` % of the dataset's training cases
    (``DatasetInfo.n_train``; 100: all of them)."""
    n_train = DATASETS[dataset].n_train
    return int(round(n_train * ratio / 100)) if ratio != FULLY_SUPERVISED else n_train


def published_row_name(method: str, ratio_of_row: int) -> str | None:
    """Our table row for a method name of ``published_results.csv`` (None: not run here). A 'V-Net'
    line is the supervised baseline, the upper bound when it names 'all' training cases."""
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
        ds = REF_DATASETS.get(r["dataset"])
        if ds is None or leading_number(r["label_ratio"]) != ratio:
            continue
        lines.append({"row": "VerSemi" if r["method"] == "VerSemi" else None, "reported_method": r["method"],
                      "dataset": ds, "ratio": ratio, "n_labeled": n_labeled(ds, ratio),
                      "split": "VerSemi authors' split", **{k: leading_number(r[k]) for k in METRICS},
                      "derived": False, "source": r["source"], "confidence": r["confidence"],
                      "file": "main_comparison.csv"})
    for _, r in reference_csv("relative_claims.csv").iterrows():
        ds = REF_DATASETS.get(r["dataset"])
        value = leading_number(r["derived_value_for_compared_method"])
        if ds is None or ds == AVERAGE or math.isnan(value) or leading_number(r["label_ratio"]) != ratio:
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
        ds = REF_DATASETS.get(r["dataset"])
        if ds is None:
            continue
        n = int(leading_number(r["n_labeled"])) if not math.isnan(leading_number(r["n_labeled"])) else -1
        if n == n_labeled(ds, ratio):
            row_ratio = ratio
        elif n == n_labeled(ds, FULLY_SUPERVISED):
            row_ratio = FULLY_SUPERVISED
        else:
            continue
        row = published_row_name(r["method"], row_ratio)
        if row == "Fully supervised" and row_ratio != FULLY_SUPERVISED or row == "Sup-only" and row_ratio == FULLY_SUPERVISED:
            row = None
        lines.append({"row": row, "reported_method": r["method"], "dataset": ds, "ratio": row_ratio,
                      "n_labeled": n, "split": r["split"], **{k: leading_number(r[k]) for k in METRICS},
                      "derived": False, "source": r["source"], "confidence": r["confidence"],
                      "file": "published_results.csv"})
    cols = ["row", "reported_method", "dataset", "ratio", "n_labeled", "split", *METRICS, "derived", "source",
            "confidence", "file"]
    return pd.DataFrame(lines, columns=cols)


def _ds_key(col: pd.Series) -> pd.Series:
    if col.name == "dataset":
        return col.map(lambda d: DATASET_ORDER.index(d) if d in DATASET_ORDER else 99)
    return col


def reported_table(ratio: int = 10, rows: Sequence[str] | None = None, datasets: Sequence[str] = DATASET_ORDER,
                   include_not_run: bool = True, digits: int = 2) -> pd.DataFrame:
    """The reported numbers aligned to our table: one line per (our row, dataset) and source.

    ``rows`` are our table rows (default :data:`SOTA_ROWS`). A (row, dataset) pair without any
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
    rows = SOTA_ROWS if rows is None else rows

    def fmt(v: float, derived: bool) -> str:
        if isinstance(v, float) and math.isnan(v):
            return NA
        return f"{v:.{digits}f}" + (" (derived)" if derived else "")

    out = []
    for row in rows:
        r_ratio = FULLY_SUPERVISED if row == "Fully supervised" else ratio
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


def reported_claims() -> pd.DataFrame:
    """The paper's relative claims (``relative_claims.csv``) with our dataset keys, verbatim."""
    df = reference_csv("relative_claims.csv")
    df.insert(1, "dataset_key", df["dataset"].map(REF_DATASETS))
    return df


def reported_gain(metric: str = "Dice(%)") -> str:
    """The paper's claimed average gain over the second-best method (``relative_claims.csv``, the line on
    the average of the four datasets), verbatim, e.g. '+2.69'."""
    claims = reported_claims()
    hit = claims.loc[claims["dataset_key"].eq(AVERAGE) & claims["metric"].eq(metric), "reported_delta"]
    return hit.iloc[0] if len(hit) else NA


def reported_value(method: str, dataset: str, ratio: int = 10, metric: str = "dice") -> float:
    """The VerSemi-paper number for (method, dataset, ratio) from main_comparison.csv; NaN if none."""
    rep = reported_numbers(ratio)
    hit = rep[(rep["file"] == "main_comparison.csv") & (rep["reported_method"] == method)
              & (rep["dataset"] == dataset)]
    return float(hit[metric].iloc[0]) if len(hit) else math.nan


def published_la_table(n_labeled=(8, 16), methods=None) -> pd.DataFrame:
    """Published LA results (``published_results.csv``) with ``n_labeled`` labeled cases, each with its
    source and confidence; ``methods``: keep the method names containing one of these strings. A number
    that was not found stays empty (NaN)."""
    df = reference_csv("published_results.csv")
    num = {k: df[k].map(leading_number) for k in ("n_labeled", *METRICS)}
    df = df.assign(**num)
    df = df[(df["dataset"] == "LA") & (df["n_labeled"].isin(list(n_labeled)))]
    if methods is not None:
        df = df[df["method"].str.contains("|".join(methods), regex=True)]
    df = df.assign(n_labeled=df["n_labeled"].astype(int))
    return df[["n_labeled", "method", *METRICS, "source", "confidence"]].reset_index(drop=True)


# -------------------------------------------------------------------------------------------- ablations
# ablation name (versemi.experiments.ABLATIONS) -> the component of reference/ablation.csv it removes
ABLATION_CLAIMS = {
    "w/o L_aux": "Auxiliary constraint L_aux",
    "w/o synthetic Task#5": "Synthetic Task#5",
    "multi-head (no controller)": "Dynamic task-prompted head vs multi-head",
}


def ablation_claims() -> pd.DataFrame:
    """``ablation.csv`` (the paper's claimed ablation effects, all of low confidence) keyed by our
    ablation names (column ``ablation``; None for a component we have no ablation of)."""
    df = reference_csv("ablation.csv")
    keys = {v: k for k, v in ABLATION_CLAIMS.items()}
    df.insert(0, "ablation", [next((keys[p] for p in keys if c.startswith(p)), None) for c in df["component"]])
    return df
