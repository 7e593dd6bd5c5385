"""Two-level bootstrap intervals, paired effects with a sign-flip test of the same quantity, TOST, Holm."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from versemi.companion.uncertainty import (
    Hierarchy,
    distinct_seed_resamples,
    equivalence_test,
    hierarchical_bootstrap,
    holm,
    interval,
    paired_effect,
    row_interval,
    signflip_p,
    spread_sentence,
    spread_sources,
)
from versemi.utils import VersemiError


def _cases(shift=0.0, seeds=(1, 2, 3), n=(8, 5), noise=0.05, seed=0):
    """Two rows A, B on two datasets with n cases each per seed; B = A - shift (Dice as fractions)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in seeds:
        for d, k in zip(("la", "spleen"), n):
            base = rng.uniform(0.6, 0.9, k)
            for i in range(k):
                a = base[i]
                b = a - shift + rng.normal(0, noise)
                rows += [{"method": "A", "dataset": d, "case": f"{d}{i}", "seed": s, "dice": a},
                         {"method": "B", "dataset": d, "case": f"{d}{i}", "seed": s, "dice": b}]
    return pd.DataFrame(rows)


def test_statistic_is_the_unweighted_mean_of_dataset_means_of_seed_means():
    df = pd.DataFrame({"seed": [1, 1, 1, 2, 2, 1, 2], "dataset": ["a", "a", "a", "a", "a", "b", "b"],
                       "value": [1.0, 2.0, 3.0, 10.0, 10.0, 4.0, 8.0]})
    h = Hierarchy.from_frame(df)
    assert h.statistic() == pytest.approx(((2 + 10) / 2 + (4 + 8) / 2) / 2)   # 8.5, not the pooled mean
    with pytest.raises(VersemiError, match="every seed needs every dataset"):
        Hierarchy.from_frame(df.drop(index=6))


def test_bootstrap_levels():
    assert [distinct_seed_resamples(s) for s in (1, 2, 3, 5)] == [1, 3, 10, 126]
    # one seed, one dataset: the case-level bootstrap, as scipy's one-level percentile bootstrap
    x = np.random.default_rng(1).normal(70, 8, 20)
    h = Hierarchy.from_frame(pd.DataFrame({"dataset": "a", "value": x}))
    lo, hi = interval(hierarchical_bootstrap(h, 8000, seed=2))
    ref = stats.bootstrap((x,), np.mean, n_resamples=8000, method="percentile", random_state=3).confidence_interval
    assert abs(lo - ref.low) < 0.6 and abs(hi - ref.high) < 0.6
    # constant within seeds: only the seed level varies, and 3 seeds have 10 distinct resamples
    df = pd.DataFrame({"seed": np.repeat([1, 2, 3], 4), "dataset": "a", "value": np.repeat([1.0, 2.0, 4.0], 4)})
    reps = hierarchical_bootstrap(Hierarchy.from_frame(df), 2000, seed=0)
    assert len(np.unique(np.round(reps, 9))) <= 10 and reps.min() >= 1.0 and reps.max() <= 4.0


def test_paired_effect_measures_the_difference_of_averages_and_its_test_the_same_quantity():
    df = _cases(shift=0.03)
    e = paired_effect(df, "A", "B", rows="key", alternative="greater")
    a = row_interval(df, "A", rows="key")["mean"]
    b = row_interval(df, "B", rows="key")["mean"]
    assert e["effect"] == pytest.approx(a - b) and e["lo"] < e["effect"] < e["hi"]
    assert e["effect"] == pytest.approx(3.0, abs=1.0) and e["p"] < 0.01 and e["n_seeds"] == 3
    assert paired_effect(df, "A", "B", rows="key", alternative="less")["p"] > 0.9
    same = _cases(shift=0.0, noise=0.0)
    assert paired_effect(same, "A", "B", rows="key")["p"] == 1.0


def test_signflip_p_is_exact_at_the_extremes():
    h = Hierarchy.from_frame(pd.DataFrame({"dataset": "a", "value": [1.0] * 12}))
    p = signflip_p(h, "greater", n_perm=4000, seed=0)
    assert p < 0.01   # only the all-positive flip (probability 2^-12) is as large
    with pytest.raises(VersemiError, match="alternative"):
        signflip_p(h, "bigger")


def test_equivalence_tests_tell_inside_from_outside_the_margin():
    inside = equivalence_test(_cases(shift=0.001, noise=0.01), "A", "B", margin=0.5, rows="key")
    assert inside["p_equivalent"] < 0.05 and inside["p_outside"] > 0.5
    outside = equivalence_test(_cases(shift=0.03, noise=0.01), "A", "B", margin=0.5, rows="key")
    assert outside["p_outside"] < 0.05 and outside["p_equivalent"] > 0.5
    with pytest.raises(VersemiError, match="margin"):
        equivalence_test(_cases(), "A", "B", margin=0, rows="key")


def test_holm_matches_the_step_down_rule_and_keeps_untested_claims_out():
    adj = holm([0.01, 0.04, float("nan"), 0.03])
    assert adj[0] == pytest.approx(0.03) and adj[1] == pytest.approx(0.06) and adj[3] == pytest.approx(0.06)
    assert np.isnan(adj[2])


def test_spread_sources_by_hand():
    # two seeds, one dataset: seed means 0.7 and 0.8 (70, 80 points), case sd 0.1 and 0.2 over 4 cases each
    a, b = np.array([0.6, 0.7, 0.7, 0.8]), np.array([0.6, 0.8, 0.8, 1.0])
    df = pd.DataFrame({"method": "A", "dataset": "la", "case": [f"c{i}" for i in range(8)],
                       "seed": [1] * 4 + [2] * 4, "dice": np.r_[a, b]})
    line = spread_sources(df, rows="key").set_index("dataset").loc["la"]
    between = np.std([70.0, 80.0], ddof=1)
    sampling = np.sqrt((np.var(a * 100, ddof=1) / 4 + np.var(b * 100, ddof=1) / 4) / 2)
    assert line["between"] == pytest.approx(between) and line["sampling"] == pytest.approx(sampling)
    assert line["excess"] == pytest.approx(np.sqrt(between ** 2 - sampling ** 2))
    assert line["ratio"] == pytest.approx(between / sampling)


def _seeded(offset_sd, n_seeds=80, n=30, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_seeds):
        shift = rng.normal(0, offset_sd)
        for d in ("la", "spleen"):
            for i, v in enumerate(rng.normal(0.8 + shift, 0.1, n)):
                rows.append({"method": "A", "dataset": d, "case": f"{d}{i}", "seed": s, "dice": v})
    return pd.DataFrame(rows)


def test_spread_sources_tells_test_set_sampling_from_what_training_adds():
    pure = spread_sources(_seeded(0.0), rows="key").set_index("dataset")
    # only the test sets vary: the seeds move as much as sampling predicts (10 / sqrt(30) per dataset)
    assert pure.loc["la", "sampling"] == pytest.approx(10 / np.sqrt(30), rel=0.1)
    assert 0.8 < pure.loc["average", "ratio"] < 1.2
    assert pure.loc["average", "sampling"] == pytest.approx(10 / np.sqrt(30) / np.sqrt(2), rel=0.1)
    # a per-seed offset of 3 points (the same on both datasets) shows up as the excess
    shifted = spread_sources(_seeded(0.03), rows="key").set_index("dataset")
    assert shifted.loc["average", "excess"] == pytest.approx(3.0, rel=0.25)
    assert shifted.loc["average", "ratio"] > 2


def test_spread_sentence_counts_rows_and_names_the_largest_excess():
    df = pd.concat([_seeded(0.0, n_seeds=6), _seeded(0.05, n_seeds=6, seed=1).assign(method="B")])
    text = spread_sentence(spread_sources(df, rows="key"))
    assert "2 rows with two seeds or more" in text and "B (" in text
    one = _seeded(0.0, n_seeds=1)
    assert spread_sources(one, rows="key").empty
    assert "no spread" in spread_sentence(spread_sources(one, rows="key"))
