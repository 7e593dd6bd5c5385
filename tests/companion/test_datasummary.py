"""versemi.companion.datasummary: the data notebook's tables, example cases and figures, on the session's
prepared smoke phantoms (``smoke_root``)."""

import json
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from versemi.companion import datasummary as D
from versemi.data.registry import ALL_DATASETS, DATASETS, authors_split
from versemi.utils import VersemiError

ORDER = list(ALL_DATASETS)


@pytest.fixture(scope="module")
def prepared(smoke_root):
    return smoke_root / "data" / "smoke" / "prepared"


@pytest.fixture(scope="module")
def manifest(prepared):
    return json.loads((prepared / "manifest.json").read_text())


@pytest.fixture(scope="module")
def cases(prepared):
    return D.case_table(prepared)


def test_preprocessing_and_split_tables_follow_the_manifest(prepared, manifest):
    prep = D.preprocessing_table(prepared)
    assert list(prep["dataset"]) == ORDER
    assert prep.set_index("dataset").loc["lung", "intensity"].startswith("clip HU to [-1000, 400]")
    assert prep.set_index("dataset").loc["la", "target spacing (mm)"] == "native (not resampled)"
    splits = D.split_table(prepared, (10, 20))
    assert len(splits) == 8 and list(splits["dataset"][:4]) == ORDER
    for _, row in splits.iterrows():
        s = manifest["datasets"][row["dataset"]]["splits"][str(row["ratio (%)"])]
        assert [row[k] for k in D.SPLIT_COLUMNS] == [len(s[k]) for k in D.SPLIT_COLUMNS]
        assert row["authors test"] == len(authors_split(row["dataset"])["test"])
    assert not splits["complete"].any()
    with pytest.raises(VersemiError, match="no 30% split"):
        D.split_table(prepared, (30,))


def test_case_table_stats_and_hidden_structures(prepared, manifest, cases):
    assert len(cases) == sum(len(e["cases"]) for e in manifest["datasets"].values())
    assert list(dict.fromkeys(cases["dataset"])) == ORDER
    assert {f"has_{DATASETS[d].structure}" for d in ORDER} <= set(cases.columns)
    assert (cases["p1"] <= cases["p99"]).all()
    stats = D.dataset_stats(cases)
    assert list(stats["dataset"]) == ORDER and stats["cases"].sum() == len(cases)
    hidden = D.hidden_structure_table(cases).set_index("dataset")
    assert list(hidden.columns) == ["cases", *D.TARGET_STRUCTURES]
    assert hidden.loc["pancreas", "spleen"] > 0 and hidden.loc["la", "left_atrium"] == 1.0
    assert hidden.loc["la", "tumour"] == 0.0
    # real data (no hidden labels): an empty table with the same columns
    real = cases.assign(**{f"has_{s}": None for s in D.TARGET_STRUCTURES})
    empty = D.hidden_structure_table(real)
    assert empty.empty and list(empty.columns) == ["dataset", "cases", *D.TARGET_STRUCTURES]
    counts = D.case_counts(prepared)
    assert counts["n_cases"] == len(cases)
    assert counts["n_labeled_10"] == sum(counts[f"n_labeled_10_{d}"] for d in ORDER)
    assert counts["n_test_spleen"] == len(manifest["datasets"]["spleen"]["splits"]["10"]["test"])


def test_example_cases_carry_the_hidden_labels_prompt_truth_reads(prepared, manifest):
    ex = D.example_cases(prepared, "labeled", hidden=True)
    assert [c["dataset"] for c in ex] == ORDER
    for c in ex:
        assert c["name"] == manifest["datasets"][c["dataset"]]["splits"]["10"]["labeled"][0]
        assert c["image"].shape == c["hidden_label"].shape == c["label"].shape
        target = c["hidden_label"] == c["hidden_legend"][DATASETS[c["dataset"]].structure]
        assert np.array_equal(target, c["label"].astype(bool))  # the exposed label is the hidden target
    plain = D.example_cases(prepared, "test", per_dataset=2)
    assert len(plain) == 8 and "hidden_label" not in plain[0]


def test_data_figures(prepared, tmp_path):
    ex = D.example_cases(prepared, "labeled", hidden=True)
    fig = D.plot_mid_slices(list(reversed(ex)) + ex, tmp_path / "mid.png")
    assert [ax.get_title().split("\n")[0] for ax in fig.axes] == [DATASETS[d].title for d in ORDER]
    assert (tmp_path / "mid.png").stat().st_size > 5000
    objects = [SimpleNamespace(image=c["image"], label=None, name=c["name"], dataset=None,
                               attrs={"task": c["task"]}) for c in ex]   # case objects, dataset from the task
    assert len(D.plot_mid_slices(objects).axes) == 4
    hist = D.plot_intensity_histograms(ex)
    assert len(hist.axes) == 4 and hist.axes[0].get_title() == DATASETS["pancreas"].title
    hl = D.plot_hidden_labels(ex, title="hidden", out_png=tmp_path / "hidden.png")
    assert len(hl.axes) == 4 and (tmp_path / "hidden.png").stat().st_size > 5000
    names = {t.get_text() for leg in hl.legends for t in leg.get_texts()}
    assert {"pancreas", "spleen", "left_atrium", "tumour"} <= names
    with pytest.raises(VersemiError, match="no case with a hidden"):
        D.plot_hidden_labels([{k: v for k, v in c.items() if k != "hidden_label"} for c in ex])
    plt.close("all")

