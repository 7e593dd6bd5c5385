"""The authors' flat preprocessed layout (``<name>.h5``, task from the name)."""

import h5py
import numpy as np
import pytest

from versemi.data import readers as R
from versemi.utils import VersemiError

from .. import factories as F


def test_authors_flat_layout_task_from_name(tmp_path):
    img, lab = F.mri_volume()
    F.write_flat(tmp_path / "flat", {"data0001": (img, lab), "spleen_02": (img, lab), "06SR5RBREL16DQ6M8LWS": (img, lab)})
    every = {c.name: c.dataset for c in (r.load() for r in R.list_authors_flat(tmp_path / "flat"))}
    assert every == {"data0001": "pancreas", "spleen_02": "spleen", "06SR5RBREL16DQ6M8LWS": "la"}
    (sp,) = F.load_all(tmp_path / "flat", "spleen")
    assert sp.preprocessed and sp.spacing == (1.0, 1.0, 1.0)
    assert R.find_dataset_root(tmp_path, "pancreas") == tmp_path / "flat"


def test_flat_spacing_attribute_and_hidden_label_in_the_file(tmp_path):
    img, lab = F.mri_volume()
    F.write_flat(tmp_path / "flat", {"06SR5RBREL16DQ6M8LWS": (img, lab)})
    (la,) = F.load_all(tmp_path / "flat", "la")
    assert la.spacing == R.FLAT_DEFAULT_SPACING["la"] == R.LA_SPACING and la.hidden is None
    with h5py.File(tmp_path / "flat" / "06SR5RBREL16DQ6M8LWS.h5", "a") as f:
        f.attrs["spacing"] = np.array([0.5, 0.6, 2.0])
        f.create_dataset("hidden_label", data=lab * 24)
    (la,) = F.load_all(tmp_path / "flat", "la")
    assert la.spacing == pytest.approx((0.5, 0.6, 2.0))
    np.testing.assert_array_equal(la.hidden, lab * 24)


def test_bad_unknown_task_in_flat_folder(tmp_path):
    img, lab = F.mri_volume()
    F.write_flat(tmp_path / "flat", {"spleen_02": (img, lab), "spleen_03": (img, lab)})
    with pytest.raises(VersemiError, match=F.m("flat", "unknown task", "'pancreas'", "map to spleen")):
        R.list_authors_flat(tmp_path / "flat", "pancreas")
    with pytest.raises(VersemiError, match=F.m("flat", "unknown task", "'lung'")):
        R.find_dataset_root(tmp_path, "lung")
