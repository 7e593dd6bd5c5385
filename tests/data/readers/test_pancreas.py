"""NIH Pancreas-CT reader: DICOM series and NIfTI images with the TCIA labels."""

import numpy as np
import pytest

from versemi.data import readers as R
from versemi.utils import VersemiError

from .. import factories as F


def test_dicom_series_sorted_by_position_rescaled_and_reoriented(tmp_path):
    hu, lab = F.ct_volume(seed=1)
    F.write_pancreas_case(tmp_path, 3, hu, lab, seed=1)
    (case,) = F.load_all(tmp_path, "pancreas")
    assert case.name == "data0003" and case.dataset == "pancreas" and case.fmt == "dicom"
    # LPS series -> RAS canonical: the first two axes are flipped, slices ascend along z
    np.testing.assert_allclose(case.image, hu[::-1, ::-1, :], atol=0.5)
    np.testing.assert_array_equal(case.label, lab[::-1, ::-1, :])
    assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
    assert case.spacing == pytest.approx((0.7, 0.75, 2.0))
    assert case.affine[2, 3] == pytest.approx(-100.0)  # the lowest slice is the first
    assert float(case.image[case.label > 0].mean()) == pytest.approx(60.0, abs=0.5)


def test_pancreas_nifti_alternative_and_root_is_the_parent_or_the_folder(tmp_path):
    hu, lab = F.ct_volume(seed=2)
    aff = F.lps_like_affine()
    F.write_nifti(tmp_path / "Pancreas-CT" / "PANCREAS_0007.nii.gz", hu, aff, np.int16)
    F.write_nifti(tmp_path / "TCIA_pancreas_labels-02-05-2017" / "label0007.nii.gz", lab, aff, np.uint8)
    for root in (tmp_path, tmp_path / "Pancreas-CT"):
        (case,) = F.load_all(root, "pancreas")
        assert case.name == "data0007" and case.fmt == "nifti"
        np.testing.assert_array_equal(case.label, lab[::-1, ::-1, :])
    assert R.find_dataset_root(tmp_path, "pancreas") == tmp_path / "Pancreas-CT"
    assert [r.name for r in R.list_nih_pancreas(tmp_path)] == ["data0007"]


def test_bad_dicom_corrupt_slice_and_duplicate_positions(tmp_path):
    hu, lab = F.ct_volume(seed=8)
    series, _, _ = F.write_pancreas_case(tmp_path, 1, hu, lab)
    victim = sorted(series.glob("*.dcm"))[0]
    victim.write_bytes(b"not a dicom file at all")
    with pytest.raises(VersemiError, match=F.m(victim.name, "cannot read DICOM file")):
        F.load_all(tmp_path, "pancreas")
    series2, _, _ = F.write_pancreas_case(tmp_path / "b", 2, hu, lab, slice_spacing=0.0, label_write=False)
    with pytest.raises(VersemiError, match=F.m("PANCREAS_0002", "duplicate slice position")):
        F.load_all(tmp_path / "b", "pancreas")


def test_bad_pancreas_missing_label(tmp_path):
    hu, lab = F.ct_volume(seed=9)
    F.write_pancreas_case(tmp_path, 4, hu, lab, label_write=False)
    with pytest.raises(VersemiError, match=F.m("label0004.nii.gz", "missing", "PANCREAS_0004", "missing label")):
        F.load_all(tmp_path, "pancreas")
