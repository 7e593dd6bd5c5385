"""Paired tests on the test cases: VerSemi against a competitor named in advance, an ablation against the
full model; the strongest competitor on the test cases (for information).

Input: the long per-case table of :func:`versemi.runs.collect_case_metrics`; rows as in
:func:`versemi.companion.tables.with_rows`. Dice and Jaccard are tested in % (points), distances in
voxels. The test is ``scipy.stats.wilcoxon`` (signed ranks, ``zero_method="wilcox"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from versemi.companion.tables import (
    AVERAGE,
    NA,
    PCT_METRICS,
    fmt_value,
    method_means,
    ordered_datasets,
    ordered_rows,
    with_rows,
)
from versemi.utils import VersemiError


def _paired(case_df: pd.DataFrame, name: str, rows: str) -> pd.DataFrame:
    df = with_rows(case_df, rows)
    sel = df[df["row"] == name]
    if sel.empty:
        sel = df[df["method"] == name]
    if sel.empty:
        raise VersemiError(f"no cases of method {name!r}; rows: {ordered_rows(df) if len(df) else []}")
    return sel


def paired_wilcoxon(case_df: pd.DataFrame, a: str, b: str, metric: str = "dice",
                    datasets: Sequence[str] | None = None, min_pairs: int = 6,
                    alternative: str = "two-sided", rows: str = "config") -> pd.DataFrame:
    """Wilcoxon signed-rank test of ``a`` against ``b`` on the paired test cases, per dataset and pooled.

    ``a`` and ``b`` are table rows (``'VerSemi'``, ``'BCP'``, ``'Uni-BCP'``, see
    :func:`~versemi.companion.tables.with_rows` and its ``rows``) or run keys. Cases are paired by
    (dataset, case) and, for the runs of several seeds, seed (each seed draws its own cases); the pooled
    line pairs every case of every dataset (and seed).
    ``scipy.stats.wilcoxon(x_a, x_b, zero_method="wilcox", alternative=alternative)`` is applied to the
    metric values (Dice/Jaccard in %), NaN pairs (hd95/asd of an empty ground truth) left out.

    When there are fewer than ``min_pairs`` pairs with a non-zero difference the test is not run (p and
    the statistic are NaN) and ``note`` says why: with n = 5 non-zero differences the smallest possible
    two-sided p is 0.0625, so below 6 pairs no difference can reach 0.05. All-zero differences give
    NaN and the note 'all paired differences are zero'.

    Columns: ``dataset, n_pairs, n_nonzero, mean_a, mean_b, mean_diff, median_diff, statistic, p_value,
    note`` (``diff = a - b``).
    """
    A, B = _paired(case_df, a, rows), _paired(case_df, b, rows)
    scale = 100.0 if metric in PCT_METRICS else 1.0
    keys = ["dataset", "case", *(["seed"] if "seed" in A and "seed" in B else [])]
    m = A[[*keys, metric]].merge(B[[*keys, metric]], on=keys, suffixes=("_a", "_b"))
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


def versemi_vs(case_df: pd.DataFrame, competitor: str, datasets: Sequence[str] | None = None, best: str = "VerSemi",
               metric: str = "dice", n_boot: int = 2000) -> tuple[dict, pd.DataFrame]:
    """``best`` against a competitor named in advance (the paper's second best, not chosen from these test
    scores): ``(summary, wilcoxon)``. The summary's effect is the average over datasets of the paired
    differences with its two-level bootstrap 95% interval and the two-sided sign-flip p-value of that same
    quantity (:func:`versemi.companion.uncertainty.paired_effect`); ``text_*`` entries for glue ('n/a' where a
    value does not exist, with ``p_note`` saying why). ``wilcoxon``: :func:`paired_wilcoxon` per dataset, for
    information."""
    from versemi.companion.uncertainty import paired_effect

    df = with_rows(case_df)
    if datasets is not None:
        df = df[df["dataset"].isin(list(datasets))]
    rows = set(df["row"])
    s = {"best": best, "second": competitor, "best_mean": math.nan, "second_mean": math.nan, "gain": math.nan,
         "lo": math.nan, "hi": math.nan, "p": math.nan, "p_note": ""}
    wil = pd.DataFrame()
    missing = [r for r in (best, competitor) if r not in rows]
    if missing:
        s["p_note"] = f"{' and '.join(missing)} not run"
    else:
        means = method_means(df, metric, True)[AVERAGE]
        e = paired_effect(df, best, competitor, metric, n_boot=n_boot, n_perm=n_boot)
        s.update(best_mean=float(means[best]), second_mean=float(means[competitor]), gain=e["effect"],
                 lo=e["lo"], hi=e["hi"], p=e["p"])
        wil = paired_wilcoxon(df, best, competitor, metric)
    s.update(text_best_mean=fmt_value(s["best_mean"]), text_second=competitor, text_second_mean=fmt_value(s["second_mean"]),
             text_gain=NA if math.isnan(s["gain"]) else f"{s['gain']:+.2f}",
             text_ci=NA if math.isnan(s["lo"]) else f"[{s['lo']:+.2f}, {s['hi']:+.2f}]",
             text_p=format_p(s["p"], s["p_note"]))
    return s, wil
