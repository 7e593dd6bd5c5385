import json
import re

import h5py
import numpy as np
import pytest

from versemi.data import readers as R
from versemi.utils import VersemiError

from . import data_factories as F


def _m(*parts):
    """A regex matching the parts in order (escaped)."""
    return ".*".join(re.escape(p) for p in parts)


# ------------------------------------------------------------------------------------------ good inputs

def test_dicom_series_sorted_by_position_rescaled_and_reoriented(tmp_path):
    hu, lab = F.ct_volume(seed=1)
    F.write_pancreas_case(tmp_path, 3, hu, lab, seed=1)
    (case,) = list(R.read_nih_pancreas(tmp_path))
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
        (case,) = list(R.read_nih_pancreas(root))
        assert case.name == "data0007" and case.fmt == "nifti"
        np.testing.assert_array_equal(case.label, lab[::-1, ::-1, :])
    assert R.find_dataset_root(tmp_path, "pancreas") == tmp_path / "Pancreas-CT"


def test_msd_names_affine_spacing_and_unlabeled_test_images(tmp_path):
    hu, lab = F.ct_volume(seed=3)
    folder = F.write_msd(tmp_path, "spleen", [("spleen_2", hu, lab)], [("spleen_1", hu)])
    cases = {c.name: c for c in R.read_msd(folder, "spleen")}
    assert sorted(cases) == ["spleen_01", "spleen_02"]
    tr = cases["spleen_02"]
    np.testing.assert_array_equal(tr.image, hu.astype(np.int16)[::-1, ::-1, :])
    np.testing.assert_array_equal(tr.label, lab[::-1, ::-1, :])
    assert tr.spacing == pytest.approx((0.8, 0.7, 2.5))
    assert np.all(np.diag(tr.affine)[:3] > 0)  # canonical RAS+
    assert cases["spleen_01"].label is None
    assert R.msd_case_name("lung_7", "lung") == "lung_007" and R.msd_case_name("lung_001", "lung") == "lung_001"


def test_la_h5_and_nrrd_and_discovery(tmp_path):
    arrays = F.write_la_h5(tmp_path / "LA", ["ID_A", "ID_B"], train_list=["ID_A"], test_list=["ID_B"])
    for src in (tmp_path, tmp_path / "LA", tmp_path / "LA" / "2018LA_Seg_Training Set"):
        assert R.find_dataset_root(src, "la") == tmp_path / "LA"
    cases = list(R.iter_raw_cases(tmp_path, "la"))
    assert [c.name for c in cases] == ["ID_A", "ID_B"]
    np.testing.assert_array_equal(cases[0].image, arrays["ID_A"][0])
    assert cases[0].spacing == R.LA_SPACING and cases[0].preprocessed and cases[0].affine is None
    assert R.read_la_lists(tmp_path / "LA") == {"train": ["ID_A"], "test": ["ID_B"]}
    img, lab = F.write_la_nrrd(tmp_path / "chal" / "2018LA_Seg_Training Set", "ID_C")
    (c,) = list(R.read_la(tmp_path / "chal"))
    np.testing.assert_array_equal(c.image, img.astype(np.float32))
    np.testing.assert_array_equal(c.label, (lab == 255).astype(np.uint8))
    assert c.spacing == pytest.approx((0.625, 0.625, 2.5)) and not c.preprocessed


def test_authors_flat_layout_task_from_name(tmp_path):
    img, lab = F.mri_volume()
    F.write_flat(tmp_path / "flat", {"data0001": (img, lab), "spleen_02": (img, lab), "06SR5RBREL16DQ6M8LWS": (img, lab)})
    every = {c.name: c.dataset for c in R.read_authors_flat(tmp_path / "flat")}
    assert every == {"data0001": "pancreas", "spleen_02": "spleen", "06SR5RBREL16DQ6M8LWS": "la"}
    (sp,) = list(R.read_authors_flat(tmp_path / "flat", "spleen"))
    assert sp.preprocessed and sp.spacing == (1.0, 1.0, 1.0)
    assert R.find_dataset_root(tmp_path, "pancreas") == tmp_path / "flat"


def test_hidden_labels_follow_the_image_orientation(tmp_path):
    hu, lab = F.ct_volume(seed=4)
    aff = F.lps_like_affine()
    folder = F.write_msd(tmp_path, "lung", [("lung_001", hu, lab)], affine=aff)
    hidden = lab * 3
    hidden[0, 0, 0] = 7
    F.write_nifti(tmp_path / "hidden_labels" / "lung" / "lung_001.nii.gz", hidden, aff, np.uint8)
    (c,) = list(R.read_msd(folder, "lung", hidden_dir=R.hidden_dir_for(tmp_path, "lung")))
    np.testing.assert_array_equal(c.hidden, hidden[::-1, ::-1, :])
    assert c.hidden[-1, -1, 0] == 7


# ------------------------------------------------------------------------------------------- bad inputs

def _spleen(tmp_path, **kw):
    hu, lab = F.ct_volume(seed=5)
    return F.write_msd(tmp_path, "spleen", [("spleen_2", hu, lab)], **kw), hu, lab


def test_bad_missing_label_file(tmp_path):
    folder, _, _ = _spleen(tmp_path)
    (folder / "labelsTr" / "spleen_2.nii.gz").unlink()
    with pytest.raises(VersemiError, match=_m("labelsTr/spleen_2.nii.gz", "missing label")):
        list(R.read_msd(folder, "spleen"))


def test_bad_label_shape_mismatch(tmp_path):
    folder, hu, lab = _spleen(tmp_path)
    F.write_nifti(folder / "labelsTr" / "spleen_2.nii.gz", lab[:, :, :-2], F.lps_like_affine(), np.uint8)
    with pytest.raises(VersemiError, match=_m("spleen_2.nii.gz", "label shape (20, 18, 8) does not match image shape (20, 18, 10)")):
        list(R.read_msd(folder, "spleen"))


def test_bad_empty_label(tmp_path):
    folder, hu, lab = _spleen(tmp_path)
    F.write_nifti(folder / "labelsTr" / "spleen_2.nii.gz", np.zeros_like(lab), F.lps_like_affine(), np.uint8)
    with pytest.raises(VersemiError, match=_m("labelsTr/spleen_2.nii.gz", "label is empty")):
        list(R.read_msd(folder, "spleen"))


def test_bad_non_binary_label(tmp_path):
    folder, hu, lab = _spleen(tmp_path)
    F.write_nifti(folder / "labelsTr" / "spleen_2.nii.gz", lab * 2, F.lps_like_affine(), np.uint8)
    with pytest.raises(VersemiError, match=_m("spleen_2.nii.gz", "not binary")):
        list(R.read_msd(folder, "spleen"))


def test_bad_corrupt_nifti(tmp_path):
    folder, _, _ = _spleen(tmp_path)
    F.corrupt_gzip(folder / "imagesTr" / "spleen_2.nii.gz")
    with pytest.raises(VersemiError, match=_m("imagesTr/spleen_2.nii.gz", "cannot read image", "corrupt")):
        list(R.read_msd(folder, "spleen"))


def test_bad_nan_voxels(tmp_path):
    folder, hu, _ = _spleen(tmp_path)
    bad = hu.copy()
    bad[1, 2, 3] = np.nan
    bad[2, 2, 3] = np.inf
    F.write_nifti(folder / "imagesTr" / "spleen_2.nii.gz", bad, F.lps_like_affine(), np.float32)
    with pytest.raises(VersemiError, match=_m("imagesTr/spleen_2.nii.gz", "2 NaN/inf voxels")):
        list(R.read_msd(folder, "spleen"))


def test_bad_2d_and_4d_volumes(tmp_path):
    folder, hu, _ = _spleen(tmp_path)
    F.write_nifti(folder / "imagesTr" / "spleen_2.nii.gz", hu[:, :, 0], np.eye(4), np.int16)
    with pytest.raises(VersemiError, match=_m("imagesTr/spleen_2.nii.gz", "2-D", "expected a 3-D volume")):
        list(R.read_msd(folder, "spleen"))
    F.write_nifti(folder / "imagesTr" / "spleen_2.nii.gz", np.stack([hu, hu], -1), np.eye(4), np.int16)
    with pytest.raises(VersemiError, match=_m("imagesTr/spleen_2.nii.gz", "4-D", "expected a 3-D volume")):
        list(R.read_msd(folder, "spleen"))


def test_bad_complex_dtype_nifti(tmp_path):
    folder, hu, _ = _spleen(tmp_path)
    F.write_nifti(folder / "imagesTr" / "spleen_2.nii.gz", hu.astype(np.complex64), np.eye(4))
    with pytest.raises(VersemiError, match=_m("imagesTr/spleen_2.nii.gz", "unsupported dtype complex64")):
        list(R.read_msd(folder, "spleen"))


def test_bad_string_dtype_h5(tmp_path):
    p = tmp_path / "LA" / "2018LA_Seg_Training Set" / "ID_S" / "mri_norm2.h5"
    p.parent.mkdir(parents=True)
    with h5py.File(p, "w") as f:
        f.create_dataset("image", data=np.array([b"abc", b"def"]))
        f.create_dataset("label", data=np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(VersemiError, match=_m("ID_S/mri_norm2.h5", "unsupported dtype")):
        list(R.read_la(tmp_path / "LA"))


def test_bad_duplicate_case_ids(tmp_path):
    hu, lab = F.ct_volume(seed=6)
    folder = F.write_msd(tmp_path, "spleen", [("spleen_2", hu, lab), ("spleen_02", hu, lab)])
    with pytest.raises(VersemiError, match=_m("spleen_02.nii.gz", "duplicate case id 'spleen_02'", "also", "spleen_2.nii.gz")):
        R.list_msd(folder, "spleen")


def test_bad_missing_dataset_json_keys(tmp_path):
    folder, _, _ = _spleen(tmp_path)
    meta = json.loads((folder / "dataset.json").read_text())
    del meta["training"]
    (folder / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(VersemiError, match=_m("dataset.json", "missing key 'training'")):
        R.list_msd(folder, "spleen")
    meta["training"] = [{"image": "./imagesTr/spleen_2.nii.gz"}]
    (folder / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(VersemiError, match=_m("dataset.json", "training entry 0 is missing key(s) ['label']")):
        R.list_msd(folder, "spleen")


def test_bad_unknown_task_in_flat_folder(tmp_path):
    img, lab = F.mri_volume()
    F.write_flat(tmp_path / "flat", {"spleen_02": (img, lab), "spleen_03": (img, lab)})
    with pytest.raises(VersemiError, match=_m("flat", "unknown task", "'pancreas'", "map to spleen")):
        R.list_authors_flat(tmp_path / "flat", "pancreas")
    with pytest.raises(VersemiError, match=_m("flat", "unknown task", "'lung'")):
        R.find_dataset_root(tmp_path, "lung")


def test_bad_msd_names_of_another_task(tmp_path):
    hu, lab = F.ct_volume(seed=7)
    folder = F.write_msd(tmp_path, "lung", [("lung_001", hu, lab)])
    with pytest.raises(VersemiError, match=_m("lung_001.nii.gz", "maps to task 4", "unknown task")):
        R.list_msd(folder, "spleen")


def test_bad_la_h5_without_label_and_nrrd_without_label(tmp_path):
    p = tmp_path / "LA" / "2018LA_Seg_Training Set" / "ID_X" / "mri_norm2.h5"
    p.parent.mkdir(parents=True)
    with h5py.File(p, "w") as f:
        f.create_dataset("image", data=np.zeros((4, 4, 4), np.float32))
    with pytest.raises(VersemiError, match=_m("ID_X/mri_norm2.h5", "no dataset 'label'", "missing label")):
        list(R.read_la(tmp_path / "LA"))
    F.write_la_nrrd(tmp_path / "chal", "ID_Y", write_label=False)
    with pytest.raises(VersemiError, match=_m("ID_Y/laendo.nrrd", "missing label")):
        list(R.read_la(tmp_path / "chal"))


def test_bad_dicom_corrupt_slice_and_duplicate_positions(tmp_path):
    hu, lab = F.ct_volume(seed=8)
    series, _, _ = F.write_pancreas_case(tmp_path, 1, hu, lab)
    victim = sorted(series.glob("*.dcm"))[0]
    victim.write_bytes(b"not a dicom file at all")
    with pytest.raises(VersemiError, match=_m(victim.name, "cannot read DICOM file")):
        list(R.read_nih_pancreas(tmp_path))
    series2, _, _ = F.write_pancreas_case(tmp_path / "b", 2, hu, lab, slice_spacing=0.0, label_write=False)
    with pytest.raises(VersemiError, match=_m("PANCREAS_0002", "duplicate slice position")):
        list(R.read_nih_pancreas(tmp_path / "b"))


def test_bad_pancreas_missing_label(tmp_path):
    hu, lab = F.ct_volume(seed=9)
    F.write_pancreas_case(tmp_path, 4, hu, lab, label_write=False)
    with pytest.raises(VersemiError, match=_m("label0004.nii.gz", "missing", "PANCREAS_0004", "missing label")):
        list(R.read_nih_pancreas(tmp_path))


def test_bad_label_spacing_differs(tmp_path):
    folder, hu, lab = _spleen(tmp_path)
    F.write_nifti(folder / "labelsTr" / "spleen_2.nii.gz", lab, F.lps_like_affine(spacing=(0.8, 0.7, 5.0)), np.uint8)
    with pytest.raises(VersemiError, match=_m("labelsTr/spleen_2.nii.gz", "spacing", "does not match")):
        list(R.read_msd(folder, "spleen"))


def test_bad_nothing_found(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VersemiError, match=_m("empty", "no MSD Task06 Lung tumour data found")):
        R.find_dataset_root(tmp_path / "empty", "lung")
    with pytest.raises(VersemiError, match=_m("nope", "does not exist")):
        R.find_dataset_root(tmp_path / "nope", "la")


# ------------------------------------------------------------------------------------------- real LA

def test_real_la_discovery_and_one_case(la_real_dir):
    assert R.find_dataset_root(la_real_dir.parent, "la") == la_real_dir
    assert R.find_dataset_root(la_real_dir, "la") == la_real_dir
    refs = R.list_la(la_real_dir)
    # follow the folder: every case directory holding the h5 file (the shared copy grew from 60 to 100)
    on_disk = sorted(p.parent.name for p in (la_real_dir / R.LA_TRAINING_FOLDER).glob("*/mri_norm2.h5"))
    assert [r.name for r in refs] == on_disk and len(refs) >= 1
    case = refs[0].load()
    assert case.image.ndim == 3 and case.image.shape[2] == 88 and case.label.dtype == np.uint8
    assert set(np.unique(case.label).tolist()) == {0, 1}
    lists = R.read_la_lists(la_real_dir)
    listed = {k: [ln.strip() for ln in (la_real_dir / f"{k}.list").read_text().splitlines() if ln.strip()]
              for k in ("train", "test")}
    assert [len(lists["train"]), len(lists["test"])] == [len(listed["train"]), len(listed["test"])]
    assert set(lists["train"]).isdisjoint(lists["test"]) and set(lists["train"]) | set(lists["test"]) <= set(on_disk)
