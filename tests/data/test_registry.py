"""The dataset registry: task ids, the structure each dataset labels, titles and the authors' lists."""

import pytest

from versemi.data import registry as G
from versemi.utils import VersemiError


def test_task_ids_order_and_synthetic_prompt():
    assert G.ALL_DATASETS == ("pancreas", "la", "spleen", "lung")
    assert G.TASK_IDS == (1, 2, 3, 4) and G.SYNTHETIC_TASK == 5 not in G.TASK_IDS
    assert G.TASK_TO_DATASET == {1: "pancreas", 2: "la", 3: "spleen", 4: "lung"}
    assert [G.task_from_case_name(n) for n in ("data0001", "spleen_02", "lung_001", "06SR5RBREL16DQ6M8LWS")] == [1, 3, 4, 2]


def test_structures_and_titles():
    assert {d: G.DATASETS[d].structure for d in G.ALL_DATASETS} == {
        "pancreas": "pancreas", "la": "left_atrium", "spleen": "spleen", "lung": "tumour"}
    assert [G.DATASETS[d].short_title for d in G.ALL_DATASETS] == [
        "NIH Pancreas", "Left Atrium", "MSD Spleen", "MSD Lung tumour"]
    assert all(info.structure in G.STRUCTURES for info in G.DATASETS.values())
    codes = list(G.STRUCTURES.values())
    assert G.STRUCTURES["background"] == 0 and len(set(codes)) == len(codes) and max(codes) < 256


def test_authors_lists_match_the_counts():
    for name, info in G.DATASETS.items():
        split = G.authors_split(name)
        assert set(split) == {"labeled_10", "labeled_20", "unlabeled_10", "unlabeled_20", "test"}
        assert len(split["labeled_20"]) + len(split["unlabeled_20"]) == info.n_train
        assert len(split["test"]) == info.n_test
        assert set(split["labeled_10"]) <= set(split["labeled_20"])
        assert all(G.task_from_case_name(c) == info.task_id for v in split.values() for c in v)


def test_unknown_dataset():
    with pytest.raises(VersemiError, match="unknown dataset 'liver'.*pancreas"):
        G.get_dataset("liver")
    with pytest.raises(VersemiError, match="unknown dataset 'liver'"):
        G.authors_split("liver")
