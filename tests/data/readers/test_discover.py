"""Finding a dataset under a source folder and listing its cases in whichever layout it has."""

import numpy as np
import pytest

from versemi.data import readers as R
from versemi.utils import VersemiError

from .. import factories as F


def test_list_raw_cases_follows_each_layout(tmp_path):
    hu, lab = F.ct_volume(seed=1)
    F.write_pancreas_case(tmp_path, 1, hu, lab)
    F.write_msd(tmp_path, "spleen", [("spleen_2", hu, lab)])
    F.write_la_h5(tmp_path / "LA", ["ID_A"])
    img, mlab = F.mri_volume()
    F.write_flat(tmp_path / "flat", {"lung_001": (img, mlab)})
    fmts = {ds: [(r.name, r.fmt) for r in R.list_raw_cases(tmp_path, ds)] for ds in ("pancreas", "la", "spleen", "lung")}
    assert fmts == {"pancreas": [("data0001", "dicom")], "la": [("ID_A", "ua-mt-h5")],
                    "spleen": [("spleen_02", "nifti")], "lung": [("lung_001", "authors-h5")]}
    assert R.find_dataset_root(tmp_path, "spleen") == tmp_path / "Task09_Spleen"
    assert R.hidden_dir_for(tmp_path, "spleen") is None
    with pytest.raises(VersemiError, match="unknown dataset 'liver'"):
        R.list_raw_cases(tmp_path, "liver")


def test_msd_folder_found_by_its_dataset_json_name(tmp_path):
    hu, lab = F.ct_volume(seed=2)
    folder = F.write_msd(tmp_path / "downloads", "spleen", [("spleen_2", hu, lab)])
    renamed = folder.rename(tmp_path / "downloads" / "my_spleen_copy")
    assert R.find_dataset_root(tmp_path, "spleen") == renamed
    (case,) = F.load_all(tmp_path, "spleen")
    np.testing.assert_array_equal(case.label, lab[::-1, ::-1, :])


def test_bad_nothing_found(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VersemiError, match=F.m("empty", "no MSD Task06 Lung tumour data found")):
        R.find_dataset_root(tmp_path / "empty", "lung")
    with pytest.raises(VersemiError, match=F.m("nope", "does not exist")):
        R.find_dataset_root(tmp_path / "nope", "la")
