"""The ablation table: variants of VerSemi against the full model, with the paper's claims beside them.

Input: the long per-case table of :func:`versemi.runs.collect_case_metrics` for the runs of
:func:`versemi.experiments.ablation_configs` (or its ``DEVIATIONS``). The variants of one model share
every field that places a paper row, so here each run key (the variant's name, column ``method``) is
its own row (``rows="key"`` of :func:`versemi.companion.tables.with_rows`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from versemi.companion.reference import ablation_claims
from versemi.companion.stats import format_p, paired_wilcoxon
from versemi.companion.tables import (
    AVERAGE,
    METRIC_NAMES,
    NA,
    PCT_METRICS,
    cell_stats,
    ordered_datasets,
    require,
)
from versemi.experiments import FULL_MODEL
from versemi.utils import VersemiError


def ablation_table(case_df: pd.DataFrame, reference_label: str = FULL_MODEL, metric: str = "dice",
                   labels: Sequence[str] | None = None, datasets: Sequence[str] | None = None,
                   digits: int = 2, claims: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ablations against the full model: mean ``metric`` per dataset and averaged, and the change vs
    ``reference_label`` in points (Dice in %, so 'Dice points').

    ``labels``: the ablations to show (default all in ``case_df``; the reference is always included).
    Returns ``(display, numeric)``. ``numeric`` has one line per ablation with ``<dataset>`` means,
    ``average``, ``delta_<dataset>`` and ``delta_average`` (ablation - full; negative = the component
    helped), ``n``, ``n_empty_pred``, the pooled paired Wilcoxon p against the full model
    (``p_vs_full``, see :func:`~versemi.companion.stats.paired_wilcoxon`), and the paper's claim for
    that component (``claimed_change``: the component's reported *gain*, verbatim, so removing it is
    expected to change the score by minus that; ``claim_confidence``; 'n/a' when the paper's claim is not
    available). ``claims=False`` leaves the claim columns out of the display table (rows that are not
    ablations of the paper, e.g. the deviation switches).
    """
    require(case_df, ["method", "dataset", "case", metric])
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
        means[lab] = {ds: cell_stats(sub[sub["dataset"] == ds], metric, scale)["mean"]
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
            w = paired_wilcoxon(df, lab, reference_label, metric, rows="key").set_index("dataset").loc["pooled"]
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


def largest_change(numeric: pd.DataFrame, reference_label: str = FULL_MODEL, drop: bool = True) -> tuple[str, str]:
    """``(name, change)`` texts for the prose: the variant of ``numeric`` (:func:`ablation_table`) with the
    lowest average (``drop=True``: the largest drop) or the largest absolute change of the average
    (``drop=False``) against ``reference_label``, the change in points as '+1.23'; ('n/a', 'n/a') when no
    variant has an average."""
    others = numeric[numeric["ablation"] != reference_label]
    if not others["delta_average"].notna().any():
        return NA, NA
    pick = others.loc[others["delta_average"].idxmin() if drop else others["delta_average"].abs().idxmax()]
    return str(pick["ablation"]), f"{pick['delta_average']:+.2f}"
