"""versemi.companion.reference: the reported numbers are shown as found, never filled in."""

from __future__ import annotations

import math

import pytest

from versemi.companion import reference
from versemi.companion.tables import METRIC_NAMES
from versemi.evaluate import METRICS


def _reference_numbers() -> set[float]:
    vals = set()
    for name in ("main_comparison.csv", "published_results.csv"):
        df = reference.reference_csv(name)
        for k in METRICS:
            vals |= {float(v) for v in df[k]
                     if v not in ("", "NA") and reference.leading_number(v) == reference.leading_number(v)}
    return vals


def test_reported_table_never_fills_a_missing_cell():
    t = reference.reported_table(10)
    cell = t[(t["method"] == "VerSemi") & (t["dataset"] == "pancreas")]
    assert cell["Dice (%)"].tolist() == ["78.63"]
    assert cell["confidence"].str.startswith("medium").all()
    # VerSemi has no reported number on LA, Spleen, Lung; the Uni- rows none at all
    for ds in ("la", "spleen", "lung"):
        c = t[(t["method"] == "VerSemi") & (t["dataset"] == ds)]
        assert len(c) == 1 and (c[list(METRIC_NAMES.values())] == "n/a").all(axis=None)
        assert c["confidence"].item() == "none"
    uni = t[t["method"].str.startswith("Uni-")]
    assert len(uni) == 8 * 4 and (uni["Dice (%)"] == "n/a").all()   # eight Uni- rows x four datasets
    # the reference's own NOT FOUND line (BCP, LA, 8 labeled) stays n/a beside a third-party number
    bcp_la = t[(t["method"] == "BCP") & (t["dataset"] == "la")]
    assert "n/a" in bcp_la["Dice (%)"].tolist() and "89.55" in bcp_la["Dice (%)"].tolist()
    assert bcp_la["labeled"].unique().tolist() == ["10% (8)"]
    # the upper bound is matched on all 80 LA training cases
    fs = t[(t["method"] == "Fully supervised") & (t["dataset"] == "la")]
    assert set(fs["Dice (%)"]) == {"91.14", "91.44"}
    # every number shown comes from a reference CSV, except the one derived by arithmetic, marked as such
    known = _reference_numbers()
    shown = [v for col in METRIC_NAMES.values() for v in t[col] if v != "n/a"]
    derived = [v for v in shown if v.endswith("(derived)")]
    assert derived == ["75.56 (derived)"]
    assert all(float(v) in known for v in shown if v not in derived)
    magic = t[t["method"] == "(not run here) MagicNet"].set_index("dataset")
    assert magic.loc["pancreas", "Dice (%)"] == "75.56 (derived)"
    assert "arithmetic" in magic.loc["pancreas", "source"]
    assert magic.loc["la", "Dice (%)"] == "n/a"  # 'not reported by MagicNet' stays empty


def test_reported_numbers_20_percent_and_subset():
    t = reference.reported_table(20, rows=["UA-MT", "VerSemi"], datasets=["la"], include_not_run=False)
    assert set(t["method"]) == {"UA-MT", "VerSemi"}
    assert "88.88" in t[t["method"] == "UA-MT"]["Dice (%)"].tolist()
    assert t[t["method"] == "VerSemi"]["Dice (%)"].tolist() == ["n/a"]
    assert (t["labeled"] == "20% (16)").all()
    nums = reference.reported_numbers(20)
    assert not (nums["file"] == "main_comparison.csv").any()  # no 20% VerSemi number exists
    assert math.isnan(reference.reported_value("VerSemi", "pancreas", 20))
    assert reference.reported_value("VerSemi", "pancreas", 10) == pytest.approx(78.63)


def test_reported_table_names_the_split():
    t = reference.reported_table(20, rows=["UA-MT"], datasets=["pancreas"], include_not_run=False)
    splits = dict(zip(t["Dice (%)"], t["split"]))
    assert "CoraNet split" in splits["77.26"] and "C3S3" in splits["74.02"]


def test_reported_claims_and_gain():
    claims = reference.reported_claims()
    avg = claims[claims["dataset_key"].eq("average") & claims["metric"].eq("Dice(%)")]
    assert reference.reported_gain() == avg["reported_delta"].iloc[0] == "+2.69"


def test_n_labeled_follows_the_registry():
    assert [reference.n_labeled("la", r) for r in (10, 20, 100)] == [8, 16, 80]
    assert [reference.n_labeled("pancreas", r) for r in (10, 20, 100)] == [6, 12, 62]
    assert reference.published_row_name("V-Net (all 80 labeled)", 100) == "Fully supervised"
    assert reference.published_row_name("V-Net (8 labeled only)", 10) == "Sup-only"
    assert reference.published_row_name("MagicNet", 10) is None


def test_published_table_has_sources_and_keeps_missing_cells_empty():
    t = reference.published_la_table(methods=["UA-MT", "BCP"])
    assert set(t["n_labeled"]) <= {8, 16} and t["source"].notna().all()
    bcp8 = t[(t["method"] == "BCP") & (t["n_labeled"] == 8)]
    assert bcp8["dice"].isna().any()  # BCP's own 8-labeled number was not found: stays empty


def test_ablation_claims_are_keyed_by_our_ablations():
    claims = reference.ablation_claims()
    assert claims["ablation"].tolist()[:3] == ["w/o L_aux", "w/o synthetic Task#5", "multi-head (no controller)"]
