"""The checks every reader shares (bad volumes, labels, hidden labels, duplicate ids), exercised through the
user path (``list_raw_cases`` + ``CaseRef.load``) on an MSD spleen folder."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from versemi.data import readers as R
from versemi.data.readers import common as C
from versemi.utils import VersemiError

from .. import factories as F


def _spleen(tmp_path, **kw):
    hu, lab = F.ct_volume(seed=5)
    return F.write_msd(tmp_path, "spleen", [("spleen_2", hu, lab)], **kw), hu, lab


def test_hidden_labels_follow_the_image_orientation(tmp_path):
    hu, lab = F.ct_volume(seed=4)
    aff = F.lps_like_affine()
    F.write_msd(tmp_path, "lung", [("lung_001", hu, lab)], affine=aff)
    hidden = lab * 3
    hidden[0, 0, 0] = 7
    F.write_nifti(tmp_path / "hidden_labels" / "lung" / "lung_001.nii.gz", hidden, aff, np.uint8)
    assert R.hidden_dir_for(tmp_path, "lung") == tmp_path / "hidden_labels" / "lung"
    (c,) = F.load_all(tmp_path, "lung")
    np.testing.assert_array_equal(c.hidden, hidden[::-1, ::-1, :])
    assert c.hidden[-1, -1, 0] == 7


def test_bad_label_shape_mismatch(tmp_path):
    folder, hu, lab = _spleen(tmp_path)
    F.write_nifti(folder / "labelsTr" / "spleen_2.nii.gz", lab[:, :, :-2], F.lps_like_affine(), np.uint8)
    with pytest.raises(VersemiError, match=F.m("spleen_2.nii.gz", "label shape (20, 18, 8) does not match image shape (20, 18, 10)")):
        F.load_all(tmp_path, "spleen")


def test_bad_empty_label(tmp_path):
    folder, hu, lab = _spleen(tmp_path)
    F.write_nifti(folder / "labelsTr" / "spleen_2.nii.gz", np.zeros_like(lab), F.lps_like_affine(), np.uint8)
    with pytest.raises(VersemiError, match=F.m("labelsTr/spleen_2.nii.gz", "label is empty")):
        F.load_all(tmp_path, "spleen")


def test_bad_non_binary_label(tmp_path):
    folder, hu, lab = _spleen(tmp_path)
    F.write_nifti(folder / "labelsTr" / "spleen_2.nii.gz", lab * 2, F.lps_like_affine(), np.uint8)
    with pytest.raises(VersemiError, match=F.m("spleen_2.nii.gz", "not binary")):
        F.load_all(tmp_path, "spleen")


def test_bad_corrupt_nifti(tmp_path):
    folder, _, _ = _spleen(tmp_path)
    F.corrupt_gzip(folder / "imagesTr" / "spleen_2.nii.gz")
    with pytest.raises(VersemiError, match=F.m("imagesTr/spleen_2.nii.gz", "cannot read image", "corrupt")):
        F.load_all(tmp_path, "spleen")


def test_bad_nan_voxels(tmp_path):
    folder, hu, _ = _spleen(tmp_path)
    bad = hu.copy()
    bad[1, 2, 3] = np.nan
    bad[2, 2, 3] = np.inf
    F.write_nifti(folder / "imagesTr" / "spleen_2.nii.gz", bad, F.lps_like_affine(), np.float32)
    with pytest.raises(VersemiError, match=F.m("imagesTr/spleen_2.nii.gz", "2 NaN/inf voxels")):
        F.load_all(tmp_path, "spleen")


def test_bad_2d_and_4d_volumes(tmp_path):
    folder, hu, _ = _spleen(tmp_path)
    F.write_nifti(folder / "imagesTr" / "spleen_2.nii.gz", hu[:, :, 0], np.eye(4), np.int16)
    with pytest.raises(VersemiError, match=F.m("imagesTr/spleen_2.nii.gz", "2-D", "expected a 3-D volume")):
        F.load_all(tmp_path, "spleen")
    F.write_nifti(folder / "imagesTr" / "spleen_2.nii.gz", np.stack([hu, hu], -1), np.eye(4), np.int16)
    with pytest.raises(VersemiError, match=F.m("imagesTr/spleen_2.nii.gz", "4-D", "expected a 3-D volume")):
        F.load_all(tmp_path, "spleen")


def test_bad_complex_dtype_nifti(tmp_path):
    folder, hu, _ = _spleen(tmp_path)
    F.write_nifti(folder / "imagesTr" / "spleen_2.nii.gz", hu.astype(np.complex64), np.eye(4))
    with pytest.raises(VersemiError, match=F.m("imagesTr/spleen_2.nii.gz", "unsupported dtype complex64")):
        F.load_all(tmp_path, "spleen")


def test_bad_string_dtype_h5(tmp_path):
    p = tmp_path / "LA" / "2018LA_Seg_Training Set" / "ID_S" / "mri_norm2.h5"
    p.parent.mkdir(parents=True)
    with h5py.File(p, "w") as f:
        f.create_dataset("image", data=np.array([b"abc", b"def"]))
        f.create_dataset("label", data=np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(VersemiError, match=F.m("ID_S/mri_norm2.h5", "unsupported dtype")):
        F.load_all(tmp_path, "la")


def test_bad_duplicate_case_ids(tmp_path):
    hu, lab = F.ct_volume(seed=6)
    folder = F.write_msd(tmp_path, "spleen", [("spleen_2", hu, lab), ("spleen_02", hu, lab)])
    with pytest.raises(VersemiError, match=F.m("spleen_02.nii.gz", "duplicate case id 'spleen_02'", "also", "spleen_2.nii.gz")):
        R.list_msd(folder, "spleen")


def test_bad_label_spacing_differs(tmp_path):
    folder, hu, lab = _spleen(tmp_path)
    F.write_nifti(folder / "labelsTr" / "spleen_2.nii.gz", lab, F.lps_like_affine(spacing=(0.8, 0.7, 5.0)), np.uint8)
    with pytest.raises(VersemiError, match=F.m("labelsTr/spleen_2.nii.gz", "spacing", "does not match")):
        F.load_all(tmp_path, "spleen")


def test_bad_hidden_label_values_and_shape():
    p = Path("x/hidden.nii.gz")
    with pytest.raises(VersemiError, match=F.m("hidden.nii.gz", "non-integer")):
        C.check_hidden(np.full((2, 2, 2), 0.5), p, (2, 2, 2))
    with pytest.raises(VersemiError, match=F.m("hidden.nii.gz", "outside 0..255")):
        C.check_hidden(np.full((2, 2, 2), 300), p, (2, 2, 2))
    with pytest.raises(VersemiError, match=F.m("hidden.nii.gz", "shape (2, 2, 2) does not match", "(2, 2, 3)")):
        C.check_hidden(np.zeros((2, 2, 2)), p, (2, 2, 3))
    assert C.check_hidden(np.full((2, 2, 2), 24.0), p, (2, 2, 2)).dtype == np.uint8


def test_names_and_relative_sources(tmp_path):
    assert [C.strip_ext(n) for n in ("a.nii.gz", "b.NII", "c.nrrd", "d.h5", "e.hdf5", "f")] == list("abcdef")
    assert R.relative_source(tmp_path / "x" / "y.h5", tmp_path) == "x/y.h5"
    assert R.relative_source(tmp_path / "y.h5", tmp_path / "x") == (tmp_path / "y.h5").as_posix()
    with pytest.raises(VersemiError, match=F.m("invalid voxel spacing", "(1.0, 0.0, 1.0)")):
        C.check_spacing((1.0, 0.0, 1.0), tmp_path)
