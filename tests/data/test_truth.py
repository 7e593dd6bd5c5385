"""Hidden labels of prepared cases and what each prompt should find (``prompt_truth``)."""

import json

import h5py
import numpy as np
import pytest

from versemi.data import prepare as P
from versemi.data.registry import STRUCTURES, authors_split
from versemi.data.truth import case_dataset, load_cases, prompt_structures, prompt_truth, read_hidden
from versemi.utils import VersemiError

from . import factories as F

S = STRUCTURES
SHAPE = (6, 5, 4)


def _pancreas_scan(hidden=True, legend=None):
    """A pancreas scan whose hidden map also holds the spleen (as the abdominal phantoms do)."""
    h = np.zeros(SHAPE, np.uint8)
    h[1:3, 1:3, 1:3] = S["pancreas"]
    h[4:6, 3:5, 0:2] = S["spleen"]
    h[0, 0, 0] = S["liver"]
    case = {"name": "data0001", "dataset": "pancreas", "task": 1, "label": (h == S["pancreas"]).astype(np.uint8)}
    if hidden:
        case.update(hidden_label=h, hidden_legend=dict(S) if legend is None else legend)
    return case, h


def test_task_prompts_find_their_dataset_structure_wherever_it_is():
    case, h = _pancreas_scan()
    for prompt, structure in ((1, "pancreas"), (3, "spleen")):
        t = prompt_truth(case, prompt)
        assert t.dtype == bool and t.shape == SHAPE
        np.testing.assert_array_equal(t, h == S[structure])
    for prompt in (2, 4):  # the scan holds no left atrium, no tumour: the prompt should find nothing
        t = prompt_truth(case, prompt)
        assert t.shape == SHAPE and not t.any()


def test_synthetic_prompt_is_the_union_of_the_run_tasks_targets():
    case, h = _pancreas_scan()
    union = (h == S["pancreas"]) | (h == S["spleen"])
    # the case that separates the two old definitions: on a pancreas scan holding a spleen, P_agg over the
    # four task prompts marks both organs (not only the scan's own target)
    t = prompt_truth(case, 5)
    np.testing.assert_array_equal(t, union)
    assert (t & ~(h == S["pancreas"])).any()
    np.testing.assert_array_equal(prompt_truth(case, 5, tasks=(1, 2, 3, 4)), union)
    # a task-specific run (only pancreas): P_agg = p_1, the scan's own target
    np.testing.assert_array_equal(prompt_truth(case, 5, tasks=(1,)), h == S["pancreas"])
    np.testing.assert_array_equal(prompt_truth(case, 5, tasks=(3, 1)), union)
    assert not prompt_truth(case, 5, tasks=(2, 4)).any()   # a run on LA + lung: none of its targets here
    assert prompt_structures(5) == ("pancreas", "left_atrium", "spleen", "tumour")
    assert prompt_structures(5, (3,)) == ("spleen",) and prompt_structures(2) == ("left_atrium",)


def test_legend_missing_structure_and_default_legend():
    case, h = _pancreas_scan(legend={"pancreas": S["pancreas"]})
    assert not prompt_truth(case, 3).any()  # the spleen is not in this legend: it cannot be in the scan
    np.testing.assert_array_equal(prompt_truth(case, 5), h == S["pancreas"])
    case["hidden_legend"] = None  # no legend stored: the phantom generator's codes
    np.testing.assert_array_equal(prompt_truth(case, 3), h == S["spleen"])


def test_without_hidden_labels_only_the_own_target_is_known():
    case, h = _pancreas_scan(hidden=False)
    np.testing.assert_array_equal(prompt_truth(case, 1), h == S["pancreas"])
    np.testing.assert_array_equal(prompt_truth(case, 5, tasks=(1,)), h == S["pancreas"])
    assert prompt_truth(case, 5) is None          # other structures may be in the scan: unknown
    assert prompt_truth(case, 5, tasks=(1, 3)) is None
    assert prompt_truth(case, 3) is None
    case["label"] = None                            # an unlabeled scan
    assert prompt_truth(case, 1) is None and prompt_truth(case, 5, tasks=(1,)) is None
    by_task = {"name": "x", "task": 3, "label": np.ones(SHAPE, np.uint8)}  # dataset from the task id
    assert prompt_truth(by_task, 3).all() and prompt_truth(by_task, 1) is None


def test_unknown_prompt_task_or_dataset():
    case, _ = _pancreas_scan()
    for prompt in (0, 6, "5"):
        with pytest.raises(VersemiError, match="unknown prompt"):
            prompt_truth(case, prompt)
    with pytest.raises(VersemiError, match="unknown task prompt"):
        prompt_truth(case, 5, tasks=(1, 5))
    with pytest.raises(VersemiError, match="unknown task prompt"):
        prompt_truth(case, 5, tasks=())
    with pytest.raises(VersemiError, match="unknown dataset/task"):
        prompt_truth({"name": "x", "dataset": "liver", "label": None}, 1)


# ------------------------------------------------------------------------------------- prepared cases

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Spleen cases in the authors' flat layout with hidden labels (spleen + a pancreas blob), prepared."""
    root = tmp_path_factory.mktemp("truth")
    sp = authors_split("spleen")
    names = sp["labeled_10"][:2] + sp["unlabeled_20"][:3] + sp["test"][:1]
    img, lab = F.mri_volume()
    flat = F.write_flat(root / "raw" / "flat", {n: (img + i, lab) for i, n in enumerate(names)})
    hidden = lab * S["spleen"]
    hidden[1:4, 1:4, 1:4] = S["pancreas"]
    for n in names:
        with h5py.File(flat / f"{n}.h5", "a") as f:
            f.create_dataset("hidden_label", data=hidden)
    (root / "raw" / "hidden_labels").mkdir()
    (root / "raw" / "hidden_labels" / "legend.json").write_text(json.dumps(S))
    P.prepare(["spleen"], root / "raw", root / "out", profile="smoke")
    bare = F.write_flat(root / "bare" / "flat", {n: (img, lab) for n in names})
    P.prepare(["spleen"], bare.parent, root / "bare_out", profile="smoke")
    return root, sp, hidden


def test_load_cases_with_hidden_labels_and_one_legend_key(prepared):
    root, sp, hidden = prepared
    (case,) = load_cases(root / "out", 10, "test")
    assert case["name"] == sp["test"][0] and case["dataset"] == "spleen" and case["task"] == 3
    assert case["hidden_label"].shape == case["image"].shape and case["hidden_legend"] == S
    np.testing.assert_array_equal(case["hidden_label"], hidden)
    path = root / "out" / "spleen" / f"{case['name']}.h5"
    h, legend = read_hidden(path)
    np.testing.assert_array_equal(h, hidden)
    d = P.load_case(path)
    assert legend == d["hidden_legend"] == S   # the one key of the legend, whichever loader
    np.testing.assert_array_equal(prompt_truth(case, 3), case["label"] == 1)
    np.testing.assert_array_equal(prompt_truth(case, 1), hidden == S["pancreas"])
    np.testing.assert_array_equal(prompt_truth(case, 5), np.isin(hidden, [S["spleen"], S["pancreas"]]))
    labeled = load_cases(root / "out", 20, "labeled", datasets=["spleen"])
    assert [c["name"] for c in labeled] == sp["labeled_10"][:2]


def test_cases_without_hidden_labels(prepared, tmp_path):
    root, sp, _ = prepared
    (case,) = load_cases(root / "bare_out", 10, "test")
    assert case["hidden_label"] is None and case["hidden_legend"] is None
    d = P.load_case(root / "bare_out" / "spleen" / f"{case['name']}.h5")
    assert d["hidden_label"] is None and d["hidden_legend"] is None
    assert prompt_truth(case, 5) is None and prompt_truth(case, 5, tasks=(3,)).any()
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(VersemiError, match="bad.h5.*cannot read the hidden labels"):
        read_hidden(bad)


def test_case_dataset_from_dataset_or_task():
    assert case_dataset({"name": "x", "task": 2}) == "la" and case_dataset({"dataset": "lung"}) == "lung"
    with pytest.raises(VersemiError, match="unknown dataset/task"):
        case_dataset({"name": "x", "task": 9})
