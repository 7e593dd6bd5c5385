"""Which phantom cases a profile generates and how one case is drawn."""

import nibabel as nib
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from versemi.config import get_profile
from versemi.data.phantoms import MIN_TARGET_VOXELS, STRUCTURES, build_case, case_ids, phantom_spec
from versemi.data.phantoms.cases import decimal_round
from versemi.data.registry import authors_split
from versemi.utils import VersemiError

from .conftest import SEED

S = STRUCTURES


def _hidden(root, dataset: str, case: str):
    img = nib.load(str(root / "hidden_labels" / dataset / f"{case}.nii.gz"))
    return np.asarray(img.dataobj), img.affine


def test_case_ids_follow_the_authors_lists():
    sp = authors_split("pancreas")
    demo = case_ids("pancreas", "demo")
    assert len(demo) == 80 and demo == sp["labeled_20"] + sp["unlabeled_20"] + sp["test"]
    assert sorted(demo) == sorted(sp["labeled_10"] + sp["unlabeled_10"] + sp["test"])
    # smoke: 2 labeled + 3 unlabeled training cases (so every method has unlabeled data), 2 test cases
    assert case_ids("pancreas", "smoke") == ["data0001", "data0002", "data0013", "data0014", "data0015",
                                             "data0064", "data0065"]
    assert len(case_ids("la", "demo")) == 100 and len(case_ids("spleen", "demo")) == 43
    lung = case_ids("lung", "demo")
    assert len(lung) == 65
    used = {c for v in authors_split("lung").values() for c in v}
    extra = lung[63:]
    assert not set(extra) & used and all(len(c) == len("lung_001") for c in extra)
    with pytest.raises(VersemiError):
        case_ids("pancreas", "huge")
    with pytest.raises(VersemiError):
        case_ids("liver", "demo")


def test_case_independent_of_the_others(smoke):
    with threadpool_limits(limits=1):
        case = build_case("lung", "lung_018", "smoke", SEED)
    hid, _ = _hidden(smoke, "lung", "lung_018")
    assert np.array_equal(case.labels, hid)


def test_phantom_spec_comes_from_the_profile_table():
    assert phantom_spec("smoke") is get_profile("smoke").phantoms and phantom_spec("demo").n_train is None
    with pytest.raises(VersemiError, match="unknown phantom profile 'huge'.*smoke, demo"):
        phantom_spec("huge")
    with pytest.raises(VersemiError, match="profile 'paper' has no phantoms.*smoke, demo"):
        phantom_spec("paper")


def test_a_drawn_case_holds_its_target_and_is_deterministic():
    with threadpool_limits(limits=1):
        a = build_case("spleen", "spleen_02", "smoke", SEED)
        b = build_case("spleen", "spleen_02", "smoke", SEED)
        c = build_case("spleen", "spleen_02", "smoke", SEED + 1)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.image, b.image)
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)
    for s in ("spleen", "pancreas"):
        assert (a.labels == S[s]).sum() >= MIN_TARGET_VOXELS
    assert a.labels.dtype == np.uint8 and a.labels.shape == a.image.shape and a.info["attempt"] >= 0
    assert a.full_image is None and a.crop is None
    assert all(decimal_round(v) == v for v in a.spacing)
    assert decimal_round(0.123456) == 0.1235 and decimal_round(7.25, 1) == float("7.2")
