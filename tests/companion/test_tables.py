"""versemi.companion.tables on small synthetic per-case tables (no training)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from versemi.companion import tables
from versemi.companion.figures import save_table
from versemi.runs import run_times, selection_table
from versemi.utils import VersemiError

from .case_tables import DS, cases_of, config, sota_table


@pytest.fixture()
def sota_df() -> pd.DataFrame:
    return sota_table()


# ------------------------------------------------------------------------------------- rows from fields
def test_rows_and_groups_come_from_the_run_fields():
    df = pd.concat([cases_of(config("uamt", "la"), "la", [0.5, 0.6]),
                    cases_of(config("bcp", ratio=20), "la", [0.5]),
                    cases_of(config("versemi"), "la", [0.7]),
                    cases_of(config("sup_only", "spleen", 100), "spleen", [0.9])], ignore_index=True)
    rows = tables.with_rows(df).drop_duplicates("method").set_index("method")
    ua = rows.loc["UA-MT (la) 10%"]
    assert (ua["row"], ua["group"], ua["dataset"], ua["ratio"]) == ("UA-MT", "Task-specific", "la", 10)
    assert rows.loc["Uni-BCP 20%", "group"] == "Unified (Uni-)"
    assert rows.loc["VerSemi 10%", "group"] == "VerSemi"
    fs = rows.loc["Fully supervised (spleen) 100%"]
    assert (fs["row"], fs["group"], fs["dataset"], fs["ratio"]) == ("Fully supervised", "Upper bound", "spleen", 100)
    # the group is read from the fields, never from the key: a renamed key changes nothing
    renamed = df.assign(method=df["method"].map(lambda k: f"run {hash(k) % 1000}"))
    assert tables.with_rows(renamed)["group"].tolist() == tables.with_rows(df)["group"].tolist()
    # a task-specific VerSemi run is task-specific; VerSemi on several datasets is its own group
    assert tables.table_group(True, False, "versemi") == "Task-specific"
    assert tables.table_group(False, False, "versemi") == "VerSemi"
    assert tables.table_group(False, False, "mean_teacher") == "Unified (Uni-)"
    assert tables.table_group(True, True, "sup_only") == "Upper bound"


def test_key_rows_for_variants_of_one_model():
    # ablation variants share every placing field (all are the row 'VerSemi'): by key, each is a row
    df = pd.concat([cases_of("VerSemi (full)", "la", [0.8, 0.7]), cases_of("w/o L_aux", "la", [0.6, 0.7])],
                   ignore_index=True)
    ab = tables.with_rows(df, rows="key").drop_duplicates("method").set_index("method")
    assert (ab.loc["VerSemi (full)", "row"], ab.loc["VerSemi (full)", "group"]) == ("VerSemi (full)", "Other")
    with pytest.raises(VersemiError, match="rows='key'"):  # by config they would silently merge
        tables.with_rows(df)
    long = tables.comparison_long(df, metrics=("dice",), rows="key")
    assert set(long["row"]) == {"VerSemi (full)", "w/o L_aux"} and set(long["group"]) == {"Other"}
    with pytest.raises(VersemiError, match="rows must be"):
        tables.with_rows(df, rows="label")
    with pytest.raises(VersemiError, match="lacks column"):  # a table without the fields
        tables.with_rows(df[["method", "dataset", "case", "dice"]])


def test_task_specific_column_comes_from_its_own_run():
    df = pd.concat([cases_of(config("bcp", "la"), "la", [0.5, 0.6]),
                    cases_of(config("bcp", "la"), "spleen", [0.1, 0.1]),  # a foreign dataset: must be ignored
                    cases_of(config("bcp", "spleen"), "spleen", [0.8, 0.9])], ignore_index=True)
    rows = tables.with_rows(df)
    assert set(rows["method"] + "/" + rows["dataset"]) == {"BCP (la) 10%/la", "BCP (spleen) 10%/spleen"}
    long = tables.comparison_long(df, metrics=("dice",))
    spleen = long[(long["row"] == "BCP") & (long["dataset"] == "spleen")]
    assert spleen["mean"].item() == pytest.approx(85.0)


# --------------------------------------------------------------------------------------- comparison
def test_comparison_table_formats_mean_std_and_counts_empty_predictions():
    la = [0.8, 0.6, 0.0, 0.7]
    df = pd.concat([
        cases_of(config("versemi"), "la", la, hd95=[2.0, 4.0, 0.0, np.nan], empty=[False, False, True, False]),
        cases_of(config("versemi"), "spleen", [0.9, 0.5]),
        cases_of(config("bcp", "la"), "la", [0.5, 0.5, 0.5, 0.5]),
    ], ignore_index=True)
    table = tables.comparison_table(df)
    expected = f"{np.mean(la) * 100:.2f} ± {np.std(la) * 100:.2f}"  # population std (ddof=0), in %
    assert table.loc[("VerSemi", "VerSemi"), ("la", "Dice (%)")] == expected
    assert table.loc[("VerSemi", "VerSemi"), ("la", "cases (empty pred.)")] == "4 (1)"
    # hd95: the empty prediction scores 0 (kept), the empty-ground-truth NaN is left out
    assert table.loc[("VerSemi", "VerSemi"), ("la", "95HD (vox)")] == f"{2.0:.2f} ± {np.std([2.0, 4.0, 0.0]):.2f}"
    # the average is the mean of the per-dataset means; BCP lacks spleen, so it has none
    avg = (np.mean(la) + 0.7) / 2 * 100
    assert table.loc[("VerSemi", "VerSemi"), ("average", "Dice (%)")] == f"{avg:.2f}"
    assert table.loc[("VerSemi", "VerSemi"), ("average", "cases (empty pred.)")] == "6 (1)"
    assert table.loc[("Task-specific", "BCP"), ("spleen", "Dice (%)")] == "n/a"
    assert table.loc[("Task-specific", "BCP"), ("average", "Dice (%)")] == "n/a"
    assert list(table.index.get_level_values("method")) == ["BCP", "VerSemi"]  # the paper's row order
    long = tables.comparison_long(df)
    hd = long[(long["row"] == "VerSemi") & (long["dataset"] == "la") & (long["metric"] == "hd95")].iloc[0]
    assert (hd["n"], hd["n_empty_pred"], hd["n_nan"], hd["unit"]) == (4, 1, 1, "voxels")
    raw = tables.comparison_long(df, metrics=("dice",), scale_pct=False)
    assert raw[(raw["row"] == "BCP") & (raw["dataset"] == "la")]["mean"].item() == pytest.approx(0.5)


def test_comparison_table_datasets_subset(sota_df):
    table = tables.comparison_table(sota_df, metrics=("dice",), datasets=["la", "spleen"])
    assert list(dict.fromkeys(table.columns.get_level_values(0))) == ["la", "spleen", "average"]
    assert table.loc[("Task-specific", "UA-MT"), ("average", "Dice (%)")] == "n/a"  # no la column
    groups = list(dict.fromkeys(table.index.get_level_values("group")))
    assert groups == ["Task-specific", "Unified (Uni-)", "VerSemi", "Upper bound"]


def test_method_means_average_only_for_complete_rows(sota_df):
    means = tables.method_means(sota_df)
    assert list(means.columns) == [*DS, "average"]
    assert np.isnan(means.loc["UA-MT", "average"])
    assert means.loc["VerSemi", "average"] == pytest.approx(means.loc["VerSemi", list(DS)].mean())


def test_formatting_and_saving(sota_df, tmp_path):
    assert tables.format_mean_std(78.634, 3.2) == "78.63 ± 3.20"
    assert tables.format_mean_std(float("nan"), 1.0) == "n/a" and tables.format_mean_std(1.0, float("nan")) == "1.00"
    assert tables.fmt_value(float("nan")) == "n/a" and tables.fmt_value(1.234, 1, "%") == "1.2%"
    assert tables.fmt_value(np.float64(1.234), 1, sign=True) == "+1.2" and tables.fmt_value(-0.5, sign=True) == "-0.50"
    assert tables.fmt_value(float("nan"), sign=True) == "n/a"
    table = tables.comparison_table(sota_df, metrics=("dice",))
    csv = save_table(table, tmp_path / "t.csv", index=True)
    back = pd.read_csv(csv)
    assert "la | Dice (%)" in back.columns and len(back) == len(table)
    html = tables.caption_table(table, "demo profile, phantom data").to_html()
    assert "demo profile, phantom data" in html


# -------------------------------------------------------------------------------------- runs, prose
def test_run_times_reads_done_and_step_times(tmp_path):
    runs = {}
    for cfg, secs, steps in ((config("versemi"), 12.5, [0.2, 0.4, 0.3]), (config("bcp", "la"), 3.0, [0.1, 0.1])):
        d = tmp_path / cfg.method
        d.mkdir()
        (d / "config.yaml").write_text(cfg.to_yaml())
        (d / "DONE.json").write_text(json.dumps({"train_seconds": secs}))
        pd.DataFrame({"step": range(len(steps)), "stage": "train", "seconds": steps}).to_csv(d / "timing.csv",
                                                                                            index=False)
        runs[cfg.label()] = d
    t = tables.run_times_table(run_times(runs)).set_index("method")
    assert t.loc["VerSemi 10%", "train_seconds"] == 12.5 and t.loc["VerSemi 10%", "steps"] == 3
    assert t.loc["VerSemi 10%", "median_step_s"] == pytest.approx(0.3)
    assert (t.loc["BCP (la) 10%", "row"], t.loc["BCP (la) 10%", "dataset"]) == ("BCP", "la")
    assert t.loc["BCP (la) 10%", "group"] == "Task-specific"
    assert t.loc["VerSemi 10%", "dataset"] == "all"
    assert list(tables.run_times_table(run_times({})).columns) == list(t.reset_index().columns)


def test_describe_selection_counts_runs_without_validation(tmp_path):
    runs = {}
    for name, best in (("a", True), ("b", False)):
        d = tmp_path / name
        d.mkdir()
        (d / "config.yaml").write_text(config("versemi").to_yaml())
        (d / "last.pt").write_bytes(b"x")
        if best:
            (d / "best.pt").write_bytes(b"x")
        runs[name] = d
    text = tables.describe_selection(selection_table(runs))
    assert text.startswith("selection='val'") and "1 of 2 runs had no validation case" in text
    assert tables.describe_selection(selection_table({})) == "no run"


def test_data_statement_names_the_data():
    demo = tables.data_statement("demo")
    assert "phantom" in demo and "not comparable" in demo
    assert "f = 8" in demo  # read from the profile, not typed
    assert "real datasets" in tables.data_statement("paper")
    assert "reduced budget on real data" in tables.data_statement("la-real")


# ----------------------------------------------------------------------------------------- head variants
def test_head_parameter_counts_multi_and_none_are_smaller_than_dynamic():
    counts = tables.head_parameter_counts(16).set_index("head")
    assert counts.loc["dynamic", "params_total"] == 9_484_144  # the authors' network
    assert counts.loc["multi", "params_total"] < counts.loc["dynamic", "params_total"]
    assert counts.loc["none", "params_total"] < counts.loc["multi", "params_total"]
    # the parts that differ: controller (16f + 5 -> 180) + global BN (2 x 16f) vs 5 or 1 static heads of 180
    assert counts.loc["dynamic", "params_head"] == (256 + 5) * 180 + 180 + 2 * 256
    assert counts.loc["multi", "params_head"] == 5 * 180
    assert counts.loc["none", "params_head"] == 180
    # the totals differ by exactly the head-only parts (the backbone is shared)
    diff = counts["params_total"] - counts["params_head"]
    assert diff.nunique() == 1


def test_head_costs_table_reads_the_committed_measurement(tmp_path):
    from versemi.provenance import REPO_ROOT

    committed = tables.head_costs_table(REPO_ROOT / "results" / "bench" / "head_costs.csv", "demo")
    assert committed["head"].tolist() == ["dynamic", "multi", "none"]
    assert (committed["forward_ms"] > 0).all() and {"device", "cpus", "torch"} <= set(committed.columns)
    # the counts of the committed file are those of the demo network now
    now = tables.head_parameter_counts(8).set_index("head")["params_total"]
    assert committed.set_index("head")["params_total"].to_dict() == now.to_dict()
    with pytest.raises(VersemiError, match="no head-cost measurements"):
        tables.head_costs_table(tmp_path / "none.csv", "demo")
    assert "CPUs, torch" in committed["machine"].iloc[0]
    # a profile without a measurement: its network's parameter counts, no times, and said so
    pd.DataFrame({"profile": ["demo"], "head": ["dynamic"], "forward_ms": [1.0], "train_step_ms": [2.0],
                  "device": ["cpu"], "patch": ["32x32x32"], "batch": [4], "reps": [3]}).to_csv(
        tmp_path / "h.csv", index=False)
    smoke = tables.head_costs_table(tmp_path / "h.csv", "smoke")
    assert smoke["head"].tolist() == ["dynamic", "multi", "none"] and smoke["forward_ms"].isna().all()
    assert smoke["params_total"].tolist() == tables.head_parameter_counts(4)["params_total"].tolist()
    assert (smoke["reps"] == 0).all() and (smoke["batch"] == 2).all() and (smoke["device"] == "not measured").all()
    assert "not measured" in smoke["machine"].iloc[0] and "--profiles smoke" in smoke["machine"].iloc[0]


def test_the_reproducibility_chapter_shows_the_released_settings_of_every_method():
    from pathlib import Path

    from versemi.companion.tables import released_settings_markdown, released_settings_table
    from versemi.methods import get_method_class, method_names

    page = (Path(__file__).resolve().parents[2] / "book" / "reproducibility.md").read_text()
    assert released_settings_markdown() in page   # regenerate the table when a method's settings change
    table = released_settings_table()
    with_settings = {m for m in method_names() if get_method_class(m).paper_settings}
    assert set(table["registry name"]) == with_settings and table["source"].str.len().min() > 20
