"""Unit tests of versemi.report on small synthetic per-case tables (no training)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from versemi import report
from versemi.utils import VersemiError

DS = ("pancreas", "la", "spleen", "lung")


def cases_of(method: str, dataset: str, dice, hd95=None, empty=None, prefix: str = "c") -> pd.DataFrame:
    dice = np.asarray(dice, dtype=float)
    n = len(dice)
    hd = np.asarray(hd95 if hd95 is not None else np.arange(1.0, n + 1), dtype=float)
    emp = np.asarray(empty if empty is not None else [False] * n, dtype=bool)
    return pd.DataFrame({"method": method, "dataset": dataset, "case": [f"{prefix}{i}" for i in range(n)],
                         "task": DS.index(dataset) + 1 if dataset in DS else 0, "dice": dice, "jaccard": dice / 2,
                         "hd95": hd, "asd": hd / 4, "empty_pred": emp, "empty_gt": False})


def universal(method: str, per_ds: dict) -> pd.DataFrame:
    return pd.concat([cases_of(method, ds, v) for ds, v in per_ds.items()], ignore_index=True)


@pytest.fixture()
def sota_df() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frames = []
    for ds in DS:  # task-specific BCP and the fully supervised bound: one run per dataset
        frames.append(cases_of(f"BCP ({ds}) 10%", ds, rng.uniform(0.5, 0.7, 8)))
        frames.append(cases_of(f"Fully supervised ({ds}) 100%", ds, rng.uniform(0.9, 0.95, 8)))
    frames.append(universal("VerSemi 10%", {ds: rng.uniform(0.7, 0.8, 8) for ds in DS}))
    frames.append(universal("Uni-BCP 10%", {ds: rng.uniform(0.4, 0.6, 8) for ds in DS}))
    # a task-specific run that covers only two datasets (e.g. not trainable on the others)
    frames.append(cases_of("UA-MT (spleen) 10%", "spleen", rng.uniform(0.75, 0.99, 8)))
    frames.append(cases_of("UA-MT (lung) 10%", "lung", rng.uniform(0.75, 0.99, 8)))
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------- labels
def test_parse_label_maps_runs_to_rows():
    assert report.parse_label("UA-MT (la) 10%") == {"label": "UA-MT (la) 10%", "row": "UA-MT",
                                                     "group": "Task-specific", "dataset": "la", "ratio": 10}
    assert report.parse_label("Uni-BCP 20%")["group"] == "Unified (Uni-)"
    assert report.parse_label("VerSemi 10%")["group"] == "VerSemi"
    fs = report.parse_label("Fully supervised (spleen) 100%")
    assert (fs["row"], fs["group"], fs["dataset"], fs["ratio"]) == ("Fully supervised", "Upper bound", "spleen", 100)
    ab = report.parse_label("VerSemi (full)")
    assert (ab["row"], ab["group"], ab["ratio"]) == ("VerSemi (full)", "Other", None)


def test_task_specific_column_comes_from_its_own_run():
    df = pd.concat([cases_of("BCP (la) 10%", "la", [0.5, 0.6]),
                    cases_of("BCP (la) 10%", "spleen", [0.1, 0.1]),  # a foreign dataset: must be ignored
                    cases_of("BCP (spleen) 10%", "spleen", [0.8, 0.9])], ignore_index=True)
    rows = report.with_rows(df)
    assert set(rows["method"] + "/" + rows["dataset"]) == {"BCP (la) 10%/la", "BCP (spleen) 10%/spleen"}
    long = report.comparison_long(df, metrics=("dice",))
    spleen = long[(long["row"] == "BCP") & (long["dataset"] == "spleen")]
    assert spleen["mean"].item() == pytest.approx(85.0)


def test_select_configs_and_ratios():
    from versemi.experiments import sota_configs

    cfgs = sota_configs("smoke", 10, 2333)
    kept = report.select_configs(cfgs, ["VerSemi", "Sup-only", "Uni-MT 10%"])
    assert set(kept) == {"VerSemi 10%", "Uni-MT 10%"} | {f"Sup-only ({d}) 10%" for d in DS}
    assert report.select_configs(cfgs, None) == cfgs
    with pytest.raises(VersemiError, match="unknown method"):
        report.select_configs(cfgs, ["VerSemii"])
    assert report.resolve_ratios("demo", 10, None) == [10]
    assert report.resolve_ratios("paper", 10, None) == [10, 20]
    assert report.resolve_ratios("smoke", 20, [10, 20]) == [20, 10]
    with pytest.raises(VersemiError):
        report.resolve_ratios("demo", 10, [30])


# --------------------------------------------------------------------------------------- comparison
def test_comparison_table_formats_mean_std_and_counts_empty_predictions():
    la = [0.8, 0.6, 0.0, 0.7]
    df = pd.concat([
        cases_of("VerSemi 10%", "la", la, hd95=[2.0, 4.0, 0.0, np.nan], empty=[False, False, True, False]),
        cases_of("VerSemi 10%", "spleen", [0.9, 0.5]),
        cases_of("BCP (la) 10%", "la", [0.5, 0.5, 0.5, 0.5]),
    ], ignore_index=True)
    table = report.comparison_table(df)
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
    long = report.comparison_long(df)
    hd = long[(long["row"] == "VerSemi") & (long["dataset"] == "la") & (long["metric"] == "hd95")].iloc[0]
    assert (hd["n"], hd["n_empty_pred"], hd["n_nan"], hd["unit"]) == (4, 1, 1, "voxels")
    raw = report.comparison_long(df, metrics=("dice",), scale_pct=False)
    assert raw[(raw["row"] == "BCP") & (raw["dataset"] == "la")]["mean"].item() == pytest.approx(0.5)


def test_comparison_table_datasets_subset(sota_df):
    table = report.comparison_table(sota_df, metrics=("dice",), datasets=["la", "spleen"])
    assert list(dict.fromkeys(table.columns.get_level_values(0))) == ["la", "spleen", "average"]
    assert table.loc[("Task-specific", "UA-MT"), ("average", "Dice (%)")] == "n/a"  # no la column
    groups = list(dict.fromkeys(table.index.get_level_values("group")))
    assert groups == ["Task-specific", "Unified (Uni-)", "VerSemi", "Upper bound"]


def test_second_best_excludes_versemi_upper_bound_and_incomplete_rows(sota_df):
    name, ranking = report.second_best(sota_df)
    # UA-MT is the best on its two datasets but lacks pancreas and la; the upper bound is not a competitor
    assert name == "BCP"
    assert list(ranking.index) == ["BCP", "Uni-BCP"]
    means = report.method_means(sota_df)
    assert ranking["BCP"] == pytest.approx(means.loc["BCP", list(DS)].mean())
    name_sub, _ = report.second_best(sota_df, datasets=["spleen", "lung"])
    assert name_sub == "UA-MT"
    lower, _ = report.second_best(sota_df, metric="hd95")  # lower is better for distances
    assert lower in ("BCP", "Uni-BCP")


# ---------------------------------------------------------------------------------------- wilcoxon
def test_paired_wilcoxon_matches_scipy():
    a = [0.81, 0.77, 0.90, 0.65, 0.72, 0.88, 0.79, 0.83, 0.70]
    b = [0.78, 0.79, 0.85, 0.60, 0.70, 0.80, 0.70, 0.75, 0.71]
    df = pd.concat([cases_of("VerSemi 10%", "la", a[:5]), cases_of("VerSemi 10%", "spleen", a[5:], prefix="s"),
                    cases_of("BCP (la) 10%", "la", b[:5]), cases_of("BCP (spleen) 10%", "spleen", b[5:], prefix="s")],
                   ignore_index=True)
    res = report.paired_wilcoxon(df, "VerSemi", "BCP").set_index("dataset")
    ref = wilcoxon(np.array(a) * 100, np.array(b) * 100, zero_method="wilcox")
    pooled = res.loc["pooled"]
    assert pooled["n_pairs"] == 9
    assert pooled["statistic"] == pytest.approx(ref.statistic)
    assert pooled["p_value"] == pytest.approx(ref.pvalue)
    assert pooled["mean_diff"] == pytest.approx(np.mean(np.subtract(a, b)) * 100)
    # 5 and 4 pairs per dataset: too few to reach 0.05, so not computed, and said so
    assert math.isnan(res.loc["la", "p_value"]) and "too few" in res.loc["la", "note"]
    assert res.loc["la", "n_pairs"] == 5
    # run labels work as well as rows
    by_label = report.paired_wilcoxon(df, "VerSemi 10%", "BCP", datasets=["la"]).set_index("dataset")
    assert by_label.loc["pooled", "n_pairs"] == 5


def test_paired_wilcoxon_zero_differences():
    same = [0.5, 0.6, 0.7, 0.8, 0.9, 0.4, 0.3]
    df = pd.concat([cases_of("VerSemi 10%", "la", same), cases_of("Uni-MT 10%", "la", same)], ignore_index=True)
    res = report.paired_wilcoxon(df, "VerSemi", "Uni-MT").set_index("dataset")
    assert math.isnan(res.loc["pooled", "p_value"])
    assert res.loc["pooled", "note"] == "all paired differences are zero"
    # some zero differences: dropped (zero_method='wilcox'), as scipy does, and noted
    other = list(same)
    other[:6] = [v - d for v, d in zip(same[:6], [0.01, 0.03, 0.02, 0.05, 0.04, 0.06])]
    df2 = pd.concat([cases_of("VerSemi 10%", "la", same), cases_of("Uni-MT 10%", "la", other)], ignore_index=True)
    res2 = report.paired_wilcoxon(df2, "VerSemi", "Uni-MT").set_index("dataset")
    ref = wilcoxon(np.array(same) * 100, np.array(other) * 100, zero_method="wilcox")
    assert res2.loc["pooled", "p_value"] == pytest.approx(ref.pvalue)
    assert res2.loc["pooled", "n_nonzero"] == 6 and "1 zero difference" in res2.loc["pooled", "note"]
    with pytest.raises(VersemiError, match="no cases"):
        report.paired_wilcoxon(df, "VerSemi", "BCP")
    assert report.format_p(0.0004) == "p < 0.001" and report.format_p(0.0312) == "p = 0.031"
    assert report.format_p(float("nan"), "why") == "not computed (why)"


def test_versemi_vs_second_best_summary(sota_df):
    s, wil = report.versemi_vs_second_best(sota_df)
    assert s["second"] == "BCP"
    assert s["gain"] == pytest.approx(s["best_mean"] - s["second_mean"])
    assert s["text_gain"] == f"{s['gain']:+.2f}"
    assert wil.set_index("dataset").loc["pooled", "n_pairs"] == 32
    no_versemi = sota_df[sota_df["method"] != "VerSemi 10%"]
    s2, wil2 = report.versemi_vs_second_best(no_versemi)
    assert wil2.empty and s2["text_best_mean"] == "n/a" and "not run" in s2["text_p"]


# ------------------------------------------------------------------------------------ reported data
def _reference_numbers() -> set[float]:
    vals = set()
    for name in ("main_comparison.csv", "published_results.csv"):
        df = report.reference_csv(name)
        for k in report.METRICS:
            vals |= {float(v) for v in df[k] if v not in ("", "NA") and report._num(v) == report._num(v)}
    return vals


def test_reported_table_never_fills_a_missing_cell():
    t = report.reported_table(10)
    cell = t[(t["method"] == "VerSemi") & (t["dataset"] == "pancreas")]
    assert cell["Dice (%)"].tolist() == ["78.63"]
    assert cell["confidence"].str.startswith("medium").all()
    # VerSemi has no reported number on LA, Spleen, Lung; the Uni- rows none at all
    for ds in ("la", "spleen", "lung"):
        c = t[(t["method"] == "VerSemi") & (t["dataset"] == ds)]
        assert len(c) == 1 and (c[list(report.METRIC_NAMES.values())] == "n/a").all(axis=None)
        assert c["confidence"].item() == "none"
    uni = t[t["method"].str.startswith("Uni-")]
    assert len(uni) == 16 and (uni["Dice (%)"] == "n/a").all()
    # the reference's own NOT FOUND line (BCP, LA, 8 labeled) stays n/a beside a third-party number
    bcp_la = t[(t["method"] == "BCP") & (t["dataset"] == "la")]
    assert "n/a" in bcp_la["Dice (%)"].tolist() and "89.55" in bcp_la["Dice (%)"].tolist()
    assert bcp_la["labeled"].unique().tolist() == ["10% (8)"]
    # the upper bound is matched on all 80 LA training cases
    fs = t[(t["method"] == "Fully supervised") & (t["dataset"] == "la")]
    assert set(fs["Dice (%)"]) == {"91.14", "91.44"}
    # every number shown comes from a reference CSV, except the one derived by arithmetic, marked as such
    known = _reference_numbers()
    shown = [v for col in report.METRIC_NAMES.values() for v in t[col] if v != "n/a"]
    derived = [v for v in shown if v.endswith("(derived)")]
    assert derived == ["75.56 (derived)"]
    assert all(float(v) in known for v in shown if v not in derived)
    magic = t[t["method"] == "(not run here) MagicNet"].set_index("dataset")
    assert magic.loc["pancreas", "Dice (%)"] == "75.56 (derived)"
    assert "arithmetic" in magic.loc["pancreas", "source"]
    assert magic.loc["la", "Dice (%)"] == "n/a"  # 'not reported by MagicNet' stays empty


def test_reported_numbers_20_percent_and_subset():
    t = report.reported_table(20, rows=["UA-MT", "VerSemi"], datasets=["la"], include_not_run=False)
    assert set(t["method"]) == {"UA-MT", "VerSemi"}
    assert "88.88" in t[t["method"] == "UA-MT"]["Dice (%)"].tolist()
    assert t[t["method"] == "VerSemi"]["Dice (%)"].tolist() == ["n/a"]
    assert (t["labeled"] == "20% (16)").all()
    nums = report.reported_numbers(20)
    assert not (nums["file"] == "main_comparison.csv").any()  # no 20% VerSemi number exists
    assert math.isnan(report.reported_value("VerSemi", "pancreas", 20))
    assert report.reported_value("VerSemi", "pancreas", 10) == pytest.approx(78.63)


# ------------------------------------------------------------------------------------------ ablations
def test_ablation_table_deltas_and_claims():
    full = {"la": [0.8, 0.7, 0.9], "spleen": [0.6, 0.6, 0.6]}
    no_aux = {"la": [0.7, 0.6, 0.8], "spleen": [0.6, 0.5, 0.6]}
    no_prompt = {"la": [0.0, 0.7, 0.9], "spleen": [0.6, 0.6, 0.6]}
    df = pd.concat([universal("VerSemi (full)", full), universal("w/o L_aux", no_aux),
                    universal("no prompt (single head)", no_prompt)], ignore_index=True)
    df.loc[(df["method"] == "no prompt (single head)") & (df["dice"] == 0), "empty_pred"] = True
    disp, num = report.ablation_table(df)
    num = num.set_index("ablation")
    assert num.loc["w/o L_aux", "delta_la"] == pytest.approx(-10.0)
    assert num.loc["w/o L_aux", "delta_average"] == pytest.approx((-10.0 - 100 / 30) / 2)
    assert num.loc["VerSemi (full)", "delta_average"] == 0
    assert num.loc["no prompt (single head)", "n_empty_pred"] == 1
    assert num.loc["w/o L_aux", "claimed_change"] == "+1.8%"
    assert num.loc["w/o L_aux", "claim_confidence"].startswith("low")
    assert num.loc["no prompt (single head)", "claimed_change"] == "n/a"
    assert disp.loc["w/o L_aux", "la Dice (%)"] == "70.00 (-10.00)"
    assert disp.loc["VerSemi (full)", "la Dice (%)"] == "80.00"
    assert disp.loc["no prompt (single head)", "cases (empty pred.)"] == "6 (1)"
    assert "too few" in disp.loc["w/o L_aux", "Wilcoxon vs full (pooled)"]
    disp2, _ = report.ablation_table(df, labels=["no prompt (single head)"])
    assert list(disp2.index) == ["VerSemi (full)", "no prompt (single head)"]
    with pytest.raises(VersemiError, match="reference run"):
        report.ablation_table(df[df["method"] != "VerSemi (full)"])
    claims = report.ablation_claims()
    assert claims["ablation"].tolist()[:3] == ["w/o L_aux", "w/o synthetic Task#5", "multi-head (no controller)"]


# ---------------------------------------------------------------------------------------- head costs
def test_head_costs_multi_and_none_are_smaller_than_dynamic():
    counts = report.head_parameter_counts(16).set_index("head")
    assert counts.loc["dynamic", "params_total"] == 9_484_144  # the authors' network (DESIGN.md)
    assert counts.loc["multi", "params_total"] < counts.loc["dynamic", "params_total"]
    assert counts.loc["none", "params_total"] < counts.loc["multi", "params_total"]
    # the parts that differ: controller (16f + 5 -> 180) + global BN (2 x 16f) vs 5 or 1 static heads of 180
    assert counts.loc["dynamic", "params_head"] == (256 + 5) * 180 + 180 + 2 * 256
    assert counts.loc["multi", "params_head"] == 5 * 180
    assert counts.loc["none", "params_head"] == 180
    # the totals differ by exactly the head-only parts (the backbone is shared)
    diff = counts["params_total"] - counts["params_head"]
    assert diff.nunique() == 1
    costs = report.head_variant_costs(n_filters=2, patch=(32, 32, 32), batch=1, reps=1).set_index("head")
    assert (costs["forward_ms"] > 0).all() and (costs["train_step_ms"] > 0).all()
    assert costs.loc["dynamic", "forward_vs_dynamic_%"] == 0
    assert costs.loc["multi", "params_total"] < costs.loc["dynamic", "params_total"]
    assert set(costs["device"]) == {"cpu"} or costs["device"].iloc[0].startswith("cuda")


# ------------------------------------------------------------------------------ runs, plots, captions
def test_run_available_lists_what_could_not_be_trained(monkeypatch, tmp_path):
    import versemi.experiments as ex

    cfgs = ex.sota_configs("smoke", 10, 2333)
    pick = {k: cfgs[k] for k in ("UA-MT (pancreas) 10%", "VerSemi 10%")}

    def fake(cfg, prepared_dir, runs_root, device=None, progress=True):
        if cfg.method == "uamt":
            raise VersemiError(f"{prepared_dir}: method uamt needs unlabeled cases; none found")
        return tmp_path / "runs" / "versemi-x"

    monkeypatch.setattr(ex, "get_or_train", fake)
    runs, nt = report.run_available(pick, tmp_path / "prep", tmp_path / "runs")
    assert list(runs) == ["VerSemi 10%"]
    assert nt["method"].tolist() == ["UA-MT (pancreas) 10%"]
    assert str(tmp_path) not in nt["reason"].item()  # no builder paths on a published page
    monkeypatch.setattr(ex, "get_or_train", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bug")))
    with pytest.raises(RuntimeError):  # only data problems are listed; real errors propagate
        report.run_available(pick, tmp_path / "prep", tmp_path / "runs")


def test_plots_and_saving(sota_df, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = sota_df.copy()
    df.loc[df.index[:2], ["dice", "empty_pred"]] = [0.0, True]
    fig = report.plot_case_scores(df, title="synthetic")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == [report.DATASET_TITLES[d] for d in DS]
    assert any(ax.get_legend() is not None for ax in visible)  # empty predictions flagged
    p = report.save_figure(fig, tmp_path / "f" / "cases.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    abl = pd.concat([universal("VerSemi (full)", {"la": [0.8, 0.7]}), universal("w/o L_aux", {"la": [0.6, 0.7]})])
    fig2 = report.plot_ablation(abl)
    assert [t.get_text() for t in fig2.axes[0].get_xticklabels()] == ["VerSemi (full)", "w/o L_aux"]
    plt.close("all")
    table = report.comparison_table(sota_df, metrics=("dice",))
    csv = report.save_table(table, tmp_path / "t.csv", index=True)
    back = pd.read_csv(csv)
    assert "la | Dice (%)" in back.columns and len(back) == len(table)
    html = report.caption_table(table, "demo profile, phantom data").to_html()
    assert "demo profile, phantom data" in html


def test_data_statement_names_the_data():
    demo = report.data_statement("demo")
    assert "phantom" in demo and "not comparable" in demo
    assert "f = 8" in demo  # read from the profile, not typed
    assert "real datasets" in report.data_statement("paper")
    assert report.data_note("demo") == "demo profile, phantom data"


def test_run_times_reads_done_and_step_times(tmp_path):
    import json

    runs = {}
    for label, secs, steps in (("VerSemi 10%", 12.5, [0.2, 0.4, 0.3]), ("BCP (la) 10%", 3.0, [0.1, 0.1])):
        d = tmp_path / label.split()[0].lower()
        d.mkdir()
        (d / "DONE.json").write_text(json.dumps({"train_seconds": secs}))
        pd.DataFrame({"step": range(len(steps)), "stage": "train", "seconds": steps}).to_csv(d / "timing.csv",
                                                                                            index=False)
        runs[label] = d
    t = report.run_times(runs).set_index("method")
    assert t.loc["VerSemi 10%", "train_seconds"] == 12.5 and t.loc["VerSemi 10%", "steps"] == 3
    assert t.loc["VerSemi 10%", "median_step_s"] == pytest.approx(0.3)
    assert (t.loc["BCP (la) 10%", "row"], t.loc["BCP (la) 10%", "dataset"]) == ("BCP", "la")
    assert t.loc["VerSemi 10%", "dataset"] == "all"


def test_reported_table_names_the_split():
    t = report.reported_table(20, rows=["UA-MT"], datasets=["pancreas"], include_not_run=False)
    splits = dict(zip(t["Dice (%)"], t["split"]))
    assert "CoraNet split" in splits["77.26"] and "C3S3" in splits["74.02"]
