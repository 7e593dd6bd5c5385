"""versemi.companion.features: pooled features, t-SNE / silhouettes, their tables, verdict and plot."""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch

from versemi.companion import features as A
from versemi.config import make_config
from versemi.data.registry import ALL_DATASETS
from versemi.utils import VersemiError

from .phantom_cases import four_cases, make_case, small_net


@pytest.fixture(scope="module")
def cases():
    return four_cases()


# ----------------------------------------------------------------------------------------------- features
def test_extract_features_shapes_and_tile_mean(cases):
    net = small_net()
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
    small = make_case("tiny", "lung", shape=(20, 24, 30), structures=[("tumour", ((10, 12, 15), 3))])
    fe = A.extract_features(small_net("none"), [small], (32, 32, 32))
    assert fe.arrays["global"].shape == (1, 64) and list(fe.meta["n_windows"]) == [1]
    with pytest.raises(VersemiError):
        A.extract_features(small_net(), cases, (30, 32, 32))
    with pytest.raises(VersemiError):
        A.extract_features(small_net(), cases, (32, 32, 32), mode="random")


def test_features_for_runs_use_each_runs_eval_patch(cases, monkeypatch):
    cfg = make_config("versemi", "smoke")
    monkeypatch.setattr(A, "load_run_net", lambda run_dir, device=None: (small_net(), cfg))
    out = A.features_for_runs({"VerSemi 10%": "unused"}, cases[:1], mode="center")
    assert list(out) == ["VerSemi 10%"] and list(out["VerSemi 10%"].meta["n_windows"]) == [1]


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
    meta = pd.DataFrame({"case": [f"v{i}" for i in range(16)], "dataset": np.repeat(ALL_DATASETS, 4),
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
    table = A.silhouette_table(scores)
    assert list(table.columns) == ["A", "B"] and len(table) == 4
    assert table.loc[("global", "features (standardised)"), "A"] == s[("A", "global", "features (standardised)")]
    with pytest.raises(VersemiError):
        A.silhouette_verdict(scores, "A", "C")
    with pytest.raises(VersemiError):
        A.tsne_analysis(fe, feature_names=("prehead",))
