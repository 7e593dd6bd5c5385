"""Medical Segmentation Decathlon reader (Task09_Spleen, Task06_Lung)."""

import json

import numpy as np
import pytest

from versemi.data import readers as R
from versemi.utils import VersemiError

from .. import factories as F


def _spleen(tmp_path, **kw):
    hu, lab = F.ct_volume(seed=5)
    return F.write_msd(tmp_path, "spleen", [("spleen_2", hu, lab)], **kw), hu, lab


def test_msd_names_affine_spacing_and_unlabeled_test_images(tmp_path):
    hu, lab = F.ct_volume(seed=3)
    folder = F.write_msd(tmp_path, "spleen", [("spleen_2", hu, lab)], [("spleen_1", hu)])
    cases = {c.name: c for c in F.load_all(tmp_path, "spleen")}
    assert sorted(cases) == ["spleen_01", "spleen_02"]
    tr = cases["spleen_02"]
    np.testing.assert_array_equal(tr.image, hu.astype(np.int16)[::-1, ::-1, :])
    np.testing.assert_array_equal(tr.label, lab[::-1, ::-1, :])
    assert tr.spacing == pytest.approx((0.8, 0.7, 2.5))
    assert np.all(np.diag(tr.affine)[:3] > 0)  # canonical RAS+
    assert cases["spleen_01"].label is None
    assert R.msd_case_name("lung_7", "lung") == "lung_007" and R.msd_case_name("lung_001", "lung") == "lung_001"
    refs = R.list_msd(folder, "spleen")
    assert [(r.name, r.expects_label) for r in refs] == [("spleen_01", False), ("spleen_02", True)]


def test_bad_missing_label_file(tmp_path):
    folder, _, _ = _spleen(tmp_path)
    (folder / "labelsTr" / "spleen_2.nii.gz").unlink()
    with pytest.raises(VersemiError, match=F.m("labelsTr/spleen_2.nii.gz", "missing label")):
        F.load_all(tmp_path, "spleen")


def test_bad_missing_dataset_json_keys(tmp_path):
    folder, _, _ = _spleen(tmp_path)
    meta = json.loads((folder / "dataset.json").read_text())
    del meta["training"]
    (folder / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(VersemiError, match=F.m("dataset.json", "missing key 'training'")):
        R.list_msd(folder, "spleen")
    meta["training"] = [{"image": "./imagesTr/spleen_2.nii.gz"}]
    (folder / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(VersemiError, match=F.m("dataset.json", "training entry 0 is missing key(s) ['label']")):
        R.list_msd(folder, "spleen")


def test_bad_msd_names_of_another_task(tmp_path):
    hu, lab = F.ct_volume(seed=7)
    folder = F.write_msd(tmp_path, "lung", [("lung_001", hu, lab)])
    with pytest.raises(VersemiError, match=F.m("lung_001.nii.gz", "maps to task 4", "unknown task")):
        R.list_msd(folder, "spleen")
