"""versemi.companion.fidelity: prompt fidelity, matrices, summaries, worst cases and figures."""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from versemi.companion import fidelity as F
from versemi.config import make_config
from versemi.data.truth import prompt_truth
from versemi.utils import VersemiError

from .phantom_cases import LEGEND, four_cases, make_case, small_net


@pytest.fixture(scope="module")
def cases():
    return four_cases()


def _oracle(case, prompts):
    return [prompt_truth(case, k) for k in prompts]


def _ignore_prompt(case, prompts):
    own = prompt_truth(case, case["task"])
    return [own.copy() for _ in prompts]


# ----------------------------------------------------------------------------------------------- truth
def test_prompt_truth_uses_hidden_labels_and_the_union_of_the_run_targets_for_prompt_5(cases):
    p = cases[0]
    assert (prompt_truth(p, 3) == (p["hidden_label"] == LEGEND["spleen"])).all()
    assert prompt_truth(p, 3).any()
    assert not prompt_truth(p, 2).any()  # no left atrium in an abdominal scan
    union = (p["label"] == 1) | (p["hidden_label"] == LEGEND["spleen"])
    assert (prompt_truth(p, 5) == union).all()
    assert (prompt_truth(p, 5, tasks=(1,)) == (p["label"] == 1)).all()  # a task-specific run: its own target
    real = make_case("r", "la", structures=[("left_atrium", ((16, 16, 20), 5))], hidden=False)
    assert prompt_truth(real, 1) is None
    assert (prompt_truth(real, 2) == (real["label"] == 1)).all()
    assert (prompt_truth(real, 5, tasks=(2,)) == (real["label"] == 1)).all()
    assert prompt_truth(real, 5) is None  # the other targets may be in a real scan: unknown


def test_prompt_5_is_judged_against_the_union_of_the_run_targets(cases):
    """Pins the one definition through the fidelity table: on a pancreas scan that also holds the spleen,
    prompt 5 of a run on the four datasets should find both organs; an answer of the scan's own target
    alone is a partial miss. For a task-specific (pancreas) run the own target is the whole answer."""
    p = cases[0]
    own, spleen = p["label"] == 1, p["hidden_label"] == LEGEND["spleen"]
    union = own | spleen

    def answer(mask):
        return lambda case, prompts: [mask if k == 5 else prompt_truth(case, k) for k in prompts]

    uni = F.prompt_fidelity(None, [p], (1, 5), predictor=answer(own)).set_index("prompt")
    assert uni.loc[5, "structure"] == "pancreas+left_atrium+spleen+tumour"
    assert uni.loc[5, "target_voxels"] == union.sum()
    expected = 2 * own.sum() / (own.sum() + union.sum())
    assert uni.loc[5, "dice"] == pytest.approx(expected) and uni.loc[5, "dice"] < 0.9
    assert F.prompt_fidelity(None, [p], (5,), predictor=answer(union)).loc[0, "dice"] == 1.0
    single = F.prompt_fidelity(None, [p], (1, 5), tasks=(1,), predictor=answer(own)).set_index("prompt")
    assert single.loc[5, "structure"] == "pancreas" and single.loc[5, "dice"] == 1.0
    assert single.loc[5, "target_voxels"] == own.sum()
    assert F.fidelity_summary(uni.reset_index())["synthetic_dice"] == pytest.approx(expected)
    # the gallery draws the same truth: the union, not the own target
    worst = F.worst_cases(F.prompt_fidelity(None, [p], (5,), predictor=answer(own)), 1, kind="dice")
    g = F.failure_gallery(None, [p], worst, predictor=answer(own))
    assert g.axes[1].get_title() == "truth: pancreas+left_atrium+spleen+tumour"


def test_run_tasks_follow_the_run_config_and_reach_the_fidelity_table(cases, monkeypatch):
    assert make_config("versemi", "smoke").task_prompts == (1, 2, 3, 4)
    single = make_config("sup_only", "smoke", datasets=("pancreas",))
    assert single.task_prompts == (1,)
    assert make_config("sup_only", "smoke", datasets=("lung", "spleen")).task_prompts == (3, 4)
    # fidelity_for_runs judges prompt 5 of a task-specific run against the scan's own target
    monkeypatch.setattr(F, "load_run_net", lambda run_dir, device=None: (small_net(), single))
    df = F.fidelity_for_runs({"Sup-only (pancreas) 10%": "unused"}, cases[:1], prompts=(5,))
    assert list(df["model"]) == ["Sup-only (pancreas) 10%"]
    assert df.loc[0, "structure"] == "pancreas" and df.loc[0, "target_voxels"] == cases[0]["label"].sum()
    unified = make_config("versemi", "smoke")
    monkeypatch.setattr(F, "load_run_net", lambda run_dir, device=None: (small_net(), unified))
    df = F.fidelity_for_runs({"VerSemi 10%": "unused"}, cases[:1], prompts=(5,))
    assert df.loc[0, "target_voxels"] > cases[0]["label"].sum()  # the spleen counts too


# ----------------------------------------------------------------------------------------------- fidelity
def test_prompt_fidelity_oracle_scores_dice_one_and_no_false_positives(cases):
    df = F.prompt_fidelity(None, cases, predictor=_oracle, model="oracle")
    assert len(df) == 4 * 5 and (df["model"] == "oracle").all()
    present = df["target_present"].fillna(False).astype(bool)
    assert (df.loc[present, "dice"] == 1.0).all()
    assert (df.loc[~present, "fp_voxels"] == 0).all()
    assert df.loc[present, "fp_voxels"].isna().all() and df.loc[~present, "dice"].isna().all()
    # the spleen prompt on the pancreas scan finds the spleen, which is present there
    row = df[(df["case"] == "p1") & (df["prompt"] == 3)].iloc[0]
    assert row["target_present"] and row["structure"] == "spleen" and row["dice"] == 1.0
    assert not row["same_as_own"]
    s = F.fidelity_summary(df)
    assert s["own_dice"] == 1.0 and s["synthetic_dice"] == 1.0 and s["cross_dice"] == 1.0
    assert s["offtarget_fp_voxels"] == 0.0 and s["offtarget_empty_rate"] == 1.0
    assert s["n_offtarget"] == int((~present & (df["prompt"] != 5)).sum())
    assert F.worst_cases(df, 4, kind="fp").empty
    assert s["ignored_rate"] == 0.0  # every other prompt answers differently from the own one
    empty = F.prompt_fidelity(None, cases, predictor=lambda c, ps: [np.zeros(c["image"].shape, bool) for _ in ps])
    assert empty["same_as_own"].all()
    assert math.isnan(F.fidelity_summary(empty)["ignored_rate"])  # two empty masks say nothing


def test_prompt_fidelity_detects_an_ignored_prompt(cases):
    df = F.prompt_fidelity(None, cases, predictor=_ignore_prompt)
    assert df["same_as_own"].all() and (df["dice_to_own"] == 1.0).all()
    n_own = {c["name"]: int(prompt_truth(c, c["task"]).sum()) for c in cases}
    absent = df["target_present"].eq(False).fillna(False).astype(bool)
    assert (df.loc[absent, "fp_voxels"] == df.loc[absent, "case"].map(n_own)).all()
    # the own-task mask scored against the spleen of the pancreas scan: disjoint blobs -> Dice 0
    assert df[(df["case"] == "p1") & (df["prompt"] == 3)]["dice"].iloc[0] == 0.0
    fp = F.fidelity_matrix(df, "fp_voxels")
    assert list(fp.index) == ["pancreas", "la", "spleen", "lung"]
    assert list(fp.columns) == ["1: pancreas", "2: la", "3: spleen", "4: lung", "5: synthetic"]
    assert fp.loc["pancreas", "2: la"] == n_own["p1"]
    assert math.isnan(fp.loc["pancreas", "1: pancreas"])  # the target exists there: no FP cell
    dice = F.fidelity_matrix(df, "dice")
    assert dice.loc["la", "2: la"] == 1.0 and dice.loc["pancreas", "3: spleen"] == 0.0
    s = F.fidelity_summary(df)
    assert s["ignored_rate"] == 1.0 and s["offtarget_empty_rate"] == 0.0
    w = F.worst_cases(df, 4)
    assert list(w["failure"]) == ["low Dice", "low Dice", "false positive", "false positive"]
    assert w.loc[2, "fp_voxels"] == max(n_own.values())
    assert (w.loc[:1, "dice"] == 0.0).all()
    assert w.loc[w["failure"] == "false positive", "case"].is_unique  # one pair per scan and kind
    repeated = F.worst_cases(df, 4, kind="fp", distinct_cases=False)
    assert len(repeated) == 4 and not repeated["case"].is_unique


def test_real_case_without_hidden_labels_gives_nan_rows_not_a_crash():
    real = make_case("r", "la", structures=[("left_atrium", ((16, 16, 20), 5))], hidden=False)
    df = F.prompt_fidelity(None, [real], predictor=_ignore_prompt, tasks=(2,))
    assert len(df) == 5
    by_prompt = df.set_index("prompt")
    assert by_prompt.loc[2, "dice"] == 1.0 and by_prompt.loc[5, "dice"] == 1.0
    others = by_prompt.loc[[1, 3, 4]]
    assert (~others["truth_known"]).all()
    assert others["dice"].isna().all() and others["fp_voxels"].isna().all()
    assert others["target_present"].isna().all()
    assert (others["pred_voxels"] > 0).all()  # what was predicted is still recorded
    mat = F.fidelity_matrix(df, "dice")
    assert math.isnan(mat.loc["la", "1: pancreas"]) and mat.loc["la", "2: la"] == 1.0
    s = F.fidelity_summary(df)
    assert math.isnan(s["offtarget_fp_voxels"]) and s["n_offtarget"] == 0
    # a run on the four datasets: what prompt 5 should find on a real scan is unknown
    uni = F.prompt_fidelity(None, [real], predictor=_ignore_prompt).set_index("prompt")
    assert not uni.loc[5, "truth_known"] and math.isnan(uni.loc[5, "dice"])


def test_prompt_fidelity_with_a_network(cases):
    df = F.prompt_fidelity(small_net(), cases, (1, 2, 3, 4, 5), (32, 32, 32), (16, 16, 16))
    assert len(df) == 20
    assert df.loc[df["own_prompt"], "same_as_own"].all()
    assert df["dice"].dropna().between(0, 1).all()
    sizes = {c["name"]: c["image"].size for c in cases}
    assert (df["pred_voxels"] <= df["case"].map(sizes)).all()
    # a single-head network ignores the prompt: every prediction equals the own-task one
    flat = F.prompt_fidelity(small_net("none"), cases[:2], (1, 3), (32, 32, 32), (16, 16, 16))
    assert flat["same_as_own"].all()
    # the own prompt is run for the comparison even when not asked for
    only = F.prompt_fidelity(None, cases[:1], (4,), predictor=_oracle)
    assert list(only["prompt"]) == [4]
    with pytest.raises(VersemiError):
        F.prompt_fidelity(None, cases, (1,))
    with pytest.raises(VersemiError):
        F.prompt_fidelity(None, cases, (6,), predictor=_oracle)
    with pytest.raises(VersemiError):
        F.prompt_fidelity(None, cases, (5,), tasks=(7,), predictor=_oracle)


def test_matrices_summaries_and_figures(cases, tmp_path):
    a = F.prompt_fidelity(None, cases, predictor=_oracle, model="oracle")
    b = F.prompt_fidelity(None, cases, predictor=_ignore_prompt, model="ignorer")
    fid = pd.concat([a, b], ignore_index=True)
    mats = F.fidelity_matrices(fid, "fp_voxels")
    assert list(mats) == ["oracle", "ignorer"]
    with pytest.raises(VersemiError):
        F.fidelity_matrix(fid)
    table = F.fidelity_summaries(fid)
    assert list(table.index) == ["oracle", "ignorer"]
    assert set(F.SUMMARY_NAMES) == set(table.columns)
    glued = F.glue_values(table, {"oracle": "o", "ignorer": "i"})
    assert glued["ignored_rate_i"] == 1.0 and glued["offtarget_fp_voxels_o"] == 0.0
    with pytest.raises(VersemiError):
        F.glue_values(table, {"nobody": "n"})
    diff = mats["ignorer"] - mats["oracle"]
    fig = F.plot_matrices({"oracle": mats["oracle"], "ignorer": mats["ignorer"], "difference": diff},
                          fmt=".0f", center=0)
    assert len([ax for ax in fig.axes if ax.get_title()]) == 3
    worst = F.worst_cases(b, 3)
    g = F.failure_gallery(None, cases, worst, predictor=_ignore_prompt, suptitle="x")
    assert len(g.axes) == 9
    assert "FP" in g.axes[5].get_title() or "Dice" in g.axes[5].get_title()
    # the matrices are written with their row index (the scan dataset)
    paths = F.save_matrices({"VerSemi (full)": mats["oracle"], "difference": diff}, tmp_path, "fp")
    assert [p.name for p in paths] == ["fp_versemi_full.csv", "fp_difference.csv"]
    back = pd.read_csv(paths[0], index_col=0)
    assert list(back.index) == list(mats["oracle"].index) and list(back.columns) == list(mats["oracle"].columns)


def test_helpers():
    assert F.prompt_name(5) == "synthetic" and F.prompt_label(3) == "3: spleen"
    with pytest.raises(VersemiError):
        F.prompt_name(0)
    cfg = make_config("versemi", "demo")
    assert F.analysis_stride(cfg) == (16, 16, 16)
    assert F.analysis_stride(cfg, "eval") == tuple(cfg.eval_stride)
    assert F.analysis_stride(cfg, 8) == (8, 8, 8) and F.analysis_stride(cfg, [4, 4, 2]) == (4, 4, 2)
    with pytest.raises(VersemiError):
        F.analysis_stride(cfg, "fast")
    with pytest.raises(VersemiError):
        F.analysis_stride(cfg, (4, 4))
    assert F.compare_phrase(1.0, 3.0, "A", "B", fmt=".1f") == "lower for A (1.0) than for B (3.0)"
    assert F.compare_phrase(2.0, 2.0, "A", "B", fmt=".1f", unit="voxels") == "the same for A and B (2.0 voxels)"
    assert F.compare_phrase(math.nan, 1.0, "A", "B").startswith("not defined")
