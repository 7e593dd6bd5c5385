"""versemi.companion.stats: paired Wilcoxon tests and the strongest competitor, on synthetic tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from versemi.companion import stats, tables
from versemi.utils import VersemiError

from .case_tables import DS, cases_of, config, sota_table


@pytest.fixture()
def sota_df() -> pd.DataFrame:
    return sota_table()


def test_second_best_excludes_versemi_upper_bound_and_incomplete_rows(sota_df):
    name, ranking = stats.second_best(sota_df)
    # UA-MT is the best on its two datasets but lacks pancreas and la; the upper bound is not a competitor
    assert name == "BCP"
    assert list(ranking.index) == ["BCP", "Uni-BCP"]
    means = tables.method_means(sota_df)
    assert ranking["BCP"] == pytest.approx(means.loc["BCP", list(DS)].mean())
    name_sub, _ = stats.second_best(sota_df, datasets=["spleen", "lung"])
    assert name_sub == "UA-MT"
    lower, _ = stats.second_best(sota_df, metric="hd95")  # lower is better for distances
    assert lower in ("BCP", "Uni-BCP")


def test_paired_wilcoxon_matches_scipy():
    a = [0.81, 0.77, 0.90, 0.65, 0.72, 0.88, 0.79, 0.83, 0.70]
    b = [0.78, 0.79, 0.85, 0.60, 0.70, 0.80, 0.70, 0.75, 0.71]
    vs = config("versemi")
    df = pd.concat([cases_of(vs, "la", a[:5]), cases_of(vs, "spleen", a[5:], prefix="s"),
                    cases_of(config("bcp", "la"), "la", b[:5]),
                    cases_of(config("bcp", "spleen"), "spleen", b[5:], prefix="s")], ignore_index=True)
    res = stats.paired_wilcoxon(df, "VerSemi", "BCP").set_index("dataset")
    ref = wilcoxon(np.array(a) * 100, np.array(b) * 100, zero_method="wilcox")
    pooled = res.loc["pooled"]
    assert pooled["n_pairs"] == 9
    assert pooled["statistic"] == pytest.approx(ref.statistic)
    assert pooled["p_value"] == pytest.approx(ref.pvalue)
    assert pooled["mean_diff"] == pytest.approx(np.mean(np.subtract(a, b)) * 100)
    # 5 and 4 pairs per dataset: too few to reach 0.05, so not computed, and said so
    assert math.isnan(res.loc["la", "p_value"]) and "too few" in res.loc["la", "note"]
    assert res.loc["la", "n_pairs"] == 5
    # run keys work as well as rows
    by_label = stats.paired_wilcoxon(df, "VerSemi 10%", "BCP", datasets=["la"]).set_index("dataset")
    assert by_label.loc["pooled", "n_pairs"] == 5


def test_paired_wilcoxon_zero_differences():
    same = [0.5, 0.6, 0.7, 0.8, 0.9, 0.4, 0.3]
    vs, mt = config("versemi"), config("mean_teacher")
    df = pd.concat([cases_of(vs, "la", same), cases_of(mt, "la", same)], ignore_index=True)
    res = stats.paired_wilcoxon(df, "VerSemi", "Uni-MT").set_index("dataset")
    assert math.isnan(res.loc["pooled", "p_value"])
    assert res.loc["pooled", "note"] == "all paired differences are zero"
    # some zero differences: dropped (zero_method='wilcox'), as scipy does, and noted
    other = list(same)
    other[:6] = [v - d for v, d in zip(same[:6], [0.01, 0.03, 0.02, 0.05, 0.04, 0.06])]
    df2 = pd.concat([cases_of(vs, "la", same), cases_of(mt, "la", other)], ignore_index=True)
    res2 = stats.paired_wilcoxon(df2, "VerSemi", "Uni-MT").set_index("dataset")
    ref = wilcoxon(np.array(same) * 100, np.array(other) * 100, zero_method="wilcox")
    assert res2.loc["pooled", "p_value"] == pytest.approx(ref.pvalue)
    assert res2.loc["pooled", "n_nonzero"] == 6 and "1 zero difference" in res2.loc["pooled", "note"]
    with pytest.raises(VersemiError, match="no cases"):
        stats.paired_wilcoxon(df, "VerSemi", "BCP")
    assert stats.format_p(0.0004) == "p < 0.001" and stats.format_p(0.0312) == "p = 0.031"
    assert stats.format_p(float("nan"), "why") == "not computed (why)"


def test_paired_wilcoxon_by_key_for_variants():
    full = [0.8, 0.7, 0.9, 0.6, 0.75, 0.85]
    df = pd.concat([cases_of("VerSemi (full)", "la", full), cases_of("w/o L_aux", "la", [v - 0.05 for v in full])],
                   ignore_index=True)
    res = stats.paired_wilcoxon(df, "w/o L_aux", "VerSemi (full)", rows="key").set_index("dataset")
    assert res.loc["pooled", "n_pairs"] == 6 and res.loc["pooled", "mean_diff"] == pytest.approx(-5.0)


def test_versemi_against_a_competitor_named_in_advance(sota_df):
    s, wil = stats.versemi_vs(sota_df, "Uni-BCP", n_boot=300)
    assert s["second"] == "Uni-BCP" and s["text_second"] == "Uni-BCP"
    assert s["gain"] == pytest.approx(s["best_mean"] - s["second_mean"])   # paired, complete pairs: linear
    assert s["lo"] <= s["gain"] <= s["hi"] and s["text_gain"] == f"{s['gain']:+.2f}" and s["text_ci"].startswith("[")
    assert 0 < s["p"] <= 1 and wil.set_index("dataset").loc["pooled", "n_pairs"] == 32
    no_versemi = sota_df[sota_df["method"] != "VerSemi 10%"]
    s2, wil2 = stats.versemi_vs(no_versemi, "BCP")
    assert wil2.empty and s2["text_best_mean"] == "n/a" and "VerSemi not run" in s2["text_p"]
