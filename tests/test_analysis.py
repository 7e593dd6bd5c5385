"""versemi.analysis: features, t-SNE / silhouettes, prompt fidelity, worst cases and figures."""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch

from versemi import analysis as A
from versemi.data.anatomy import STRUCTURES
from versemi.model import VerSemiNet
from versemi.utils import VersemiError

LEGEND = dict(STRUCTURES)


def _net(head="dynamic"):
    torch.manual_seed(0)
    return VerSemiNet(n_filters=4, head=head).eval()


def _blob(shape, centre, r):
    idx = np.indices(shape)
    return sum((i - c) ** 2 for i, c in zip(idx, centre)) <= r * r


def _case(name, dataset, shape=(32, 32, 40), structures=(), hidden=True, seed=0):
    """A small volume whose hidden map holds the given structures (name -> (centre, radius))."""
    rng = np.random.default_rng(seed)
    hid = np.full(shape, LEGEND["body"], np.uint8)
    image = rng.normal(size=shape).astype(np.float32)
    for s, (centre, r) in structures:
        m = _blob(shape, centre, r)
        hid[m] = LEGEND[s]
        image[m] += 2.0 + LEGEND[s] / 10
    target = A.TARGET_STRUCTURE[dataset]
    case = {"name": name, "dataset": dataset, "task": A.DATASETS[dataset].task_id, "image": image,
            "label": (hid == LEGEND[target]).astype(np.uint8), "spacing": (2.0, 2.0, 2.5)}
    if hidden:
        case["hidden_label"], case["hidden_legend"] = hid, LEGEND
    return case


@pytest.fixture(scope="module")
def cases():
    return [
        _case("p1", "pancreas", structures=[("pancreas", ((10, 12, 20), 4)), ("spleen", ((22, 20, 20), 5))]),
        _case("a1", "la", shape=(40, 36, 32), structures=[("left_atrium", ((20, 18, 16), 6))], seed=1),
        _case("s1", "spleen", structures=[("spleen", ((16, 16, 20), 6)), ("pancreas", ((6, 6, 30), 3))], seed=2),
        _case("l1", "lung", shape=(32, 32, 32), structures=[("tumour", ((16, 16, 16), 3))], seed=3),
    ]


# ----------------------------------------------------------------------------------------------- truth
def test_prompt_truth_uses_hidden_labels_and_the_own_target_for_prompt_5(cases):
    p = cases[0]
    assert (A.prompt_truth(p, 3) == (p["hidden_label"] == LEGEND["spleen"])).all()
    assert A.prompt_truth(p, 3).any()
    assert not A.prompt_truth(p, 2).any()  # no left atrium in an abdominal scan
    assert (A.prompt_truth(p, 5) == (p["label"] == 1)).all()
    real = _case("r", "la", structures=[("left_atrium", ((16, 16, 20), 5))], hidden=False)
    assert A.prompt_truth(real, 1) is None
    assert (A.prompt_truth(real, 2) == (real["label"] == 1)).all()
    assert (A.prompt_truth(real, 5) == (real["label"] == 1)).all()


# ----------------------------------------------------------------------------------------------- features
def test_extract_features_shapes_and_tile_mean(cases):
    net = _net()
    fe = A.extract_features(net, cases, (32, 32, 32))
    assert len(fe) == 4 and list(fe.meta["dataset"]) == ["pancreas", "la", "spleen", "lung"]
    assert fe.arrays["global"].shape == (4, 64)
    assert fe.arrays["decoder"].shape == (4, 4)
    assert fe.arrays["prehead"].shape == (4, 8)
    # (32, 32, 40) -> 1 x 1 x 2 tiles; (40, 36, 32) -> 2 x 2 x 1; (32, 32, 32) -> 1
    assert list(fe.meta["n_windows"]) == [2, 4, 2, 1]
    assert all(np.isfinite(a).all() for a in fe.arrays.values())
    # the volume vector is the mean over its tiles: recompute case 0 by hand
    img = cases[0]["image"]
    x = torch.from_numpy(np.stack([img[:, :, 0:32], img[:, :, 8:40]]))[:, None]
    with torch.no_grad():
        _, f = net(x, 1, return_features=True)
    np.testing.assert_allclose(fe.arrays["global"][0], f["global"].mean(0).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fe.arrays["decoder"][0], f["decoder"].mean(dim=(0, 2, 3, 4)).numpy(),
                               rtol=1e-4, atol=1e-6)
    centre = A.extract_features(net, cases[:1], (32, 32, 32), mode="center")
    assert list(centre.meta["n_windows"]) == [1]
    assert not np.allclose(centre.arrays["global"][0], fe.arrays["global"][0])


def test_extract_features_pads_small_volumes_and_rejects_bad_input(cases):
    small = _case("tiny", "lung", shape=(20, 24, 30), structures=[("tumour", ((10, 12, 15), 3))])
    fe = A.extract_features(_net("none"), [small], (32, 32, 32))
    assert fe.arrays["global"].shape == (1, 64) and list(fe.meta["n_windows"]) == [1]
    with pytest.raises(VersemiError):
        A.extract_features(_net(), cases, (30, 32, 32))
    with pytest.raises(VersemiError):
        A.extract_features(_net(), cases, (32, 32, 32), mode="random")


# ----------------------------------------------------------------------------------------------- t-SNE
def _clusters(n_per=10, k=3, sep=20.0, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(size=(n_per, dim)) + sep * np.eye(dim)[i] for i in range(k)])
    y = np.repeat([f"c{i}" for i in range(k)], n_per)
    return X, y


def test_tsne_is_deterministic_under_a_seed_and_adapts_perplexity():
    X, _ = _clusters()
    a, b = A.tsne_embedding(X, seed=7), A.tsne_embedding(X, seed=7)
    assert a.shape == (30, 2)
    np.testing.assert_array_equal(a, b)
    # 5 points: the default perplexity must drop below n
    assert A.tsne_embedding(X[:5], seed=1).shape == (5, 2)
    with pytest.raises(VersemiError):
        A.tsne_embedding(X[:2], seed=1)


def test_silhouette_high_for_separated_clusters_and_near_zero_when_shuffled():
    X, y = _clusters()
    assert A.silhouette(X, y) > 0.8
    assert A.silhouette(A.tsne_embedding(X, seed=3), y) > 0.5  # t-SNE spreads each cluster out
    shuffled = np.random.default_rng(0).permutation(y)
    assert abs(A.silhouette(X, shuffled)) < 0.15
    assert math.isnan(A.silhouette(X, np.zeros(len(X))))


def test_tsne_analysis_tables_and_plot(cases):
    X, y = _clusters(n_per=4, k=4)
    meta = pd.DataFrame({"case": [f"v{i}" for i in range(16)], "dataset": np.repeat(A.DATASET_ORDER, 4),
                         "task": 0, "n_windows": 1})
    fe = {"A": A.Features(meta, {"global": X, "decoder": X[:, :3]}),
          "B": A.Features(meta, {"global": np.random.default_rng(1).normal(size=X.shape),
                                 "decoder": X[:, :3]})}
    emb, scores = A.tsne_analysis(fe, seed=0)
    assert len(emb) == 2 * 2 * 16 and set(emb.columns) >= {"model", "feature", "case", "dataset", "x", "y"}
    assert len(scores) == 8
    s = scores.set_index(["model", "feature", "space"])["silhouette"]
    assert s[("A", "global", "features (standardised)")] > 0.5
    assert s[("A", "global", "features (standardised)")] > s[("B", "global", "features (standardised)")]
    glued = A.silhouette_glue(scores, {"A": "a", "B": "b"})
    assert set(glued) == {f"sil_{sp}_{f}_{m}" for sp in ("raw", "tsne") for f in ("global", "decoder")
                          for m in ("a", "b")}
    assert A.silhouette_verdict(scores, "A", "B", space="features (standardised)").startswith("higher for A")
    fig = A.plot_tsne(emb, scores, suptitle="test")
    assert len(fig.axes) == 4


# ----------------------------------------------------------------------------------------------- fidelity
def _oracle(case, prompts):
    return [A.prompt_truth(case, k) for k in prompts]


def _ignore_prompt(case, prompts):
    own = A.prompt_truth(case, case["task"])
    return [own.copy() for _ in prompts]


def test_prompt_fidelity_oracle_scores_dice_one_and_no_false_positives(cases):
    df = A.prompt_fidelity(None, cases, predictor=_oracle, model="oracle")
    assert len(df) == 4 * 5 and (df["model"] == "oracle").all()
    present = df["target_present"].fillna(False).astype(bool)
    assert (df.loc[present, "dice"] == 1.0).all()
    assert (df.loc[~present, "fp_voxels"] == 0).all()
    assert df.loc[present, "fp_voxels"].isna().all() and df.loc[~present, "dice"].isna().all()
    # the spleen prompt on the pancreas scan finds the spleen, which is present there
    row = df[(df["case"] == "p1") & (df["prompt"] == 3)].iloc[0]
    assert row["target_present"] and row["structure"] == "spleen" and row["dice"] == 1.0
    assert not row["same_as_own"]
    s = A.fidelity_summary(df)
    assert s["own_dice"] == 1.0 and s["synthetic_dice"] == 1.0 and s["cross_dice"] == 1.0
    assert s["offtarget_fp_voxels"] == 0.0 and s["offtarget_empty_rate"] == 1.0
    assert s["n_offtarget"] == int((~present & (df["prompt"] != 5)).sum())
    assert A.worst_cases(df, 4, kind="fp").empty
    assert s["ignored_rate"] == 0.0  # every other prompt answers differently from the own one
    empty = A.prompt_fidelity(None, cases, predictor=lambda c, ps: [np.zeros(c["image"].shape, bool) for _ in ps])
    assert empty["same_as_own"].all()
    assert math.isnan(A.fidelity_summary(empty)["ignored_rate"])  # two empty masks say nothing


def test_prompt_fidelity_detects_an_ignored_prompt(cases):
    df = A.prompt_fidelity(None, cases, predictor=_ignore_prompt)
    assert df["same_as_own"].all() and (df["dice_to_own"] == 1.0).all()
    n_own = {c["name"]: int(A.prompt_truth(c, c["task"]).sum()) for c in cases}
    absent = df["target_present"].eq(False).fillna(False).astype(bool)
    assert (df.loc[absent, "fp_voxels"] == df.loc[absent, "case"].map(n_own)).all()
    # the own-task mask scored against the spleen of the pancreas scan: disjoint blobs -> Dice 0
    assert df[(df["case"] == "p1") & (df["prompt"] == 3)]["dice"].iloc[0] == 0.0
    fp = A.fidelity_matrix(df, "fp_voxels")
    assert list(fp.index) == ["pancreas", "la", "spleen", "lung"]
    assert list(fp.columns) == ["1: pancreas", "2: la", "3: spleen", "4: lung", "5: synthetic"]
    assert fp.loc["pancreas", "2: la"] == n_own["p1"]
    assert math.isnan(fp.loc["pancreas", "1: pancreas"])  # the target exists there: no FP cell
    dice = A.fidelity_matrix(df, "dice")
    assert dice.loc["la", "2: la"] == 1.0 and dice.loc["pancreas", "3: spleen"] == 0.0
    s = A.fidelity_summary(df)
    assert s["ignored_rate"] == 1.0 and s["offtarget_empty_rate"] == 0.0
    w = A.worst_cases(df, 4)
    assert list(w["failure"]) == ["low Dice", "low Dice", "false positive", "false positive"]
    assert w.loc[2, "fp_voxels"] == max(n_own.values())
    assert (w.loc[:1, "dice"] == 0.0).all()
    assert w.loc[w["failure"] == "false positive", "case"].is_unique  # one pair per scan and kind
    repeated = A.worst_cases(df, 4, kind="fp", distinct_cases=False)
    assert len(repeated) == 4 and not repeated["case"].is_unique


def test_real_case_without_hidden_labels_gives_nan_rows_not_a_crash():
    real = _case("r", "la", structures=[("left_atrium", ((16, 16, 20), 5))], hidden=False)
    df = A.prompt_fidelity(None, [real], predictor=_ignore_prompt)
    assert len(df) == 5
    by_prompt = df.set_index("prompt")
    assert by_prompt.loc[2, "dice"] == 1.0 and by_prompt.loc[5, "dice"] == 1.0
    others = by_prompt.loc[[1, 3, 4]]
    assert (~others["truth_known"]).all()
    assert others["dice"].isna().all() and others["fp_voxels"].isna().all()
    assert others["target_present"].isna().all()
    assert (others["pred_voxels"] > 0).all()  # what was predicted is still recorded
    mat = A.fidelity_matrix(df, "dice")
    assert math.isnan(mat.loc["la", "1: pancreas"]) and mat.loc["la", "2: la"] == 1.0
    s = A.fidelity_summary(df)
    assert math.isnan(s["offtarget_fp_voxels"]) and s["n_offtarget"] == 0
    assert A.data_note("paper", [real]) == "paper profile, real data"


def test_prompt_fidelity_with_a_network(cases):
    df = A.prompt_fidelity(_net(), cases, (1, 2, 3, 4, 5), (32, 32, 32), (16, 16, 16))
    assert len(df) == 20
    assert df.loc[df["own_prompt"], "same_as_own"].all()
    assert df["dice"].dropna().between(0, 1).all()
    sizes = {c["name"]: c["image"].size for c in cases}
    assert (df["pred_voxels"] <= df["case"].map(sizes)).all()
    # a single-head network ignores the prompt: every prediction equals the own-task one
    flat = A.prompt_fidelity(_net("none"), cases[:2], (1, 3), (32, 32, 32), (16, 16, 16))
    assert flat["same_as_own"].all()
    # the own prompt is run for the comparison even when not asked for
    only = A.prompt_fidelity(None, cases[:1], (4,), predictor=_oracle)
    assert list(only["prompt"]) == [4]
    with pytest.raises(VersemiError):
        A.prompt_fidelity(None, cases, (1,))
    with pytest.raises(VersemiError):
        A.prompt_fidelity(None, cases, (6,), predictor=_oracle)


def test_matrices_summaries_and_figures(cases):
    a = A.prompt_fidelity(None, cases, predictor=_oracle, model="oracle")
    b = A.prompt_fidelity(None, cases, predictor=_ignore_prompt, model="ignorer")
    fid = pd.concat([a, b], ignore_index=True)
    mats = A.fidelity_matrices(fid, "fp_voxels")
    assert list(mats) == ["oracle", "ignorer"]
    with pytest.raises(VersemiError):
        A.fidelity_matrix(fid)
    table = A.fidelity_summaries(fid)
    assert list(table.index) == ["oracle", "ignorer"]
    glued = A.glue_values(table, {"oracle": "o", "ignorer": "i"})
    assert glued["ignored_rate_i"] == 1.0 and glued["offtarget_fp_voxels_o"] == 0.0
    diff = mats["ignorer"] - mats["oracle"]
    fig = A.plot_matrices({"oracle": mats["oracle"], "ignorer": mats["ignorer"], "difference": diff},
                          fmt=".0f", center=0)
    assert len([ax for ax in fig.axes if ax.get_title()]) == 3
    worst = A.worst_cases(b, 3)
    g = A.failure_gallery(None, cases, worst, predictor=_ignore_prompt, suptitle="x")
    assert len(g.axes) == 9
    assert "FP" in g.axes[5].get_title() or "Dice" in g.axes[5].get_title()
