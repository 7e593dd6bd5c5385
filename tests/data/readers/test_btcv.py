"""BTCV reader (the external spleen test set): layouts, arrays and geometry, and every bad input."""

from pathlib import Path

import numpy as np
import pytest

from versemi.data import readers as R
from versemi.data.readers.btcv import (
    BTCV_LEGEND,
    btcv_case_name,
    btcv_files,
    find_btcv_root,
    list_btcv,
    orphan_labels,
)
from versemi.data.registry import STRUCTURES
from versemi.utils import VersemiError

from .. import factories as F


def organ_map(seed=0, shape=F.CT_SHAPE):
    """(HU volume, BTCV organ map): the factory's organ box is the spleen (1), a second box the liver (6)."""
    hu, lab = F.ct_volume(shape=shape, seed=seed)
    organs = lab.astype(np.uint8)
    organs[2:5, 2:5, 1:4] = 6
    return hu, organs


def write_btcv(root, cases, layout="rawdata", affine=None, label_affine=None, ext=".nii.gz") -> Path:
    """BTCV files for ``cases`` = {num: (hu, organs)}: ``root/RawData/Training/{img,label}`` ('rawdata') or
    ``root/{img,label}`` ('flat'); returns the folder holding img/ and label/."""
    base = Path(root) / "RawData" / "Training" if layout == "rawdata" else Path(root)
    aff = F.lps_like_affine() if affine is None else affine
    for num, (hu, organs) in cases.items():
        img, lab = (n.replace(".nii.gz", ext) for n in btcv_files(num))
        F.write_nifti(base / "img" / img, hu, aff, np.int16)
        if organs is not None:
            F.write_nifti(base / "label" / lab, organs, aff if label_affine is None else label_affine)
    return base


def test_reads_names_arrays_geometry_and_the_organ_map(tmp_path):
    (hu1, org1), (hu2, org2) = organ_map(1), organ_map(2)
    write_btcv(tmp_path, {1: (hu1, org1), 21: (hu2, org2)})
    refs = list_btcv(tmp_path)
    assert [(r.name, r.dataset, r.fmt, r.expects_label) for r in refs] == [
        ("btcv_0001", "btcv", "nifti", True), ("btcv_0021", "btcv", "nifti", True)]
    c = refs[0].load()
    np.testing.assert_array_equal(c.image, hu1.astype(np.int16)[::-1, ::-1, :])   # reoriented to RAS+
    np.testing.assert_array_equal(c.organs, org1[::-1, ::-1, :])
    np.testing.assert_array_equal(c.label, (org1 == 1)[::-1, ::-1, :].astype(np.uint8))
    assert c.label.dtype == np.uint8 and c.image.dtype == np.float32
    assert c.spacing == pytest.approx((0.8, 0.7, 2.5)) and np.all(np.diag(c.affine)[:3] > 0)
    np.testing.assert_array_equal(c.hidden, c.organs)   # real scans: the organ map is the hidden map
    assert c.legend == BTCV_LEGEND and c.legend["spleen"] == 1 and c.legend["pancreas"] == 11
    assert c.source.name == "img0001.nii.gz" and c.label_source.name == "label0001.nii.gz"
    assert btcv_case_name(7) == "btcv_0007" and btcv_files(7) == ("img0007.nii.gz", "label0007.nii.gz")
    assert R.list_btcv is list_btcv   # exported by the readers package


def test_root_forms_and_training_preferred_over_testing(tmp_path):
    hu, org = organ_map(3)
    flat = write_btcv(tmp_path / "flat", {1: (hu, org)}, layout="flat")
    assert find_btcv_root(flat) == flat
    base = write_btcv(tmp_path / "BTCV", {2: (hu, org)})
    F.write_nifti(tmp_path / "BTCV" / "RawData" / "Testing" / "img" / "img0061.nii.gz", hu, F.lps_like_affine(),
                  np.int16)
    for src in (tmp_path / "BTCV", tmp_path / "BTCV" / "RawData", base):
        assert find_btcv_root(src) == base
        assert [r.name for r in list_btcv(src)] == ["btcv_0002"]
    plain = write_btcv(tmp_path / "plain", {3: (hu, org)}, ext=".nii")
    assert list_btcv(plain)[0].load().label.any()


def test_phantom_hidden_labels_are_picked_up(tmp_path):
    hu, org = organ_map(4)
    write_btcv(tmp_path, {1: (hu, org)})
    hidden = np.where(org == 1, STRUCTURES["spleen"], np.where(org == 6, STRUCTURES["liver"], 0)).astype(np.uint8)
    F.write_nifti(tmp_path / "hidden_labels" / "btcv" / "btcv_0001.nii.gz", hidden, F.lps_like_affine())
    c = list_btcv(tmp_path)[0].load()   # found in a folder above the data root, up to the source folder
    np.testing.assert_array_equal(c.hidden, hidden[::-1, ::-1, :])
    np.testing.assert_array_equal(c.organs, org[::-1, ::-1, :])
    assert c.legend == STRUCTURES
    assert list_btcv(tmp_path / "RawData")[0].load().legend == BTCV_LEGEND   # not above the source folder


# ------------------------------------------------------------------------------------------------ bad inputs
def _one(tmp_path, **kw):
    hu, org = organ_map(5)
    base = write_btcv(tmp_path, {1: (hu, org)}, **kw)
    return base, hu, org


def _load(src):
    return [r.load() for r in list_btcv(src)]


def test_bad_missing_label(tmp_path):
    base, _, _ = _one(tmp_path)
    (base / "label" / "label0001.nii.gz").unlink()
    with pytest.raises(VersemiError, match=F.m("label/label0001.nii.gz", "missing for image img0001.nii.gz",
                                               "missing label")):
        _load(tmp_path)


def test_bad_shape_mismatch(tmp_path):
    base, _, org = _one(tmp_path)
    F.write_nifti(base / "label" / "label0001.nii.gz", org[:-2], F.lps_like_affine())
    with pytest.raises(VersemiError, match=F.m("label0001.nii.gz", "label shape (18, 18, 10) does not match",
                                               "img0001.nii.gz")):
        _load(tmp_path)


def test_bad_affine_and_spacing_mismatch(tmp_path):
    base, _, org = _one(tmp_path, label_affine=F.lps_like_affine(origin=(125.0, 110.0, -40.0)))
    with pytest.raises(VersemiError, match=F.m("label0001.nii.gz", "label affine", "does not match",
                                               "img0001.nii.gz", "5 mm")):
        _load(tmp_path)
    F.write_nifti(base / "label" / "label0001.nii.gz", org, F.lps_like_affine(spacing=(0.8, 0.7, 3.0)))
    with pytest.raises(VersemiError, match=F.m("label0001.nii.gz", "voxel spacing", "does not match")):
        _load(tmp_path)


def test_bad_non_integer_and_out_of_range_values(tmp_path):
    base, _, org = _one(tmp_path)
    path = base / "label" / "label0001.nii.gz"
    frac = org.astype(np.float32)
    frac[0, 0, 0] = 0.5
    F.write_nifti(path, frac, F.lps_like_affine())
    with pytest.raises(VersemiError, match=F.m("label0001.nii.gz", "non-integer values (e.g. 0.5)")):
        _load(tmp_path)
    for bad in (14, -1):
        arr = org.astype(np.int16)
        arr[0, 0, 0] = bad
        F.write_nifti(path, arr, F.lps_like_affine())
        with pytest.raises(VersemiError, match=F.m("label0001.nii.gz", f"label values [{bad}] out of range",
                                                   "0..13")):
            _load(tmp_path)


def test_bad_no_spleen(tmp_path):
    base, _, org = _one(tmp_path)
    F.write_nifti(base / "label" / "label0001.nii.gz", np.where(org == 1, 6, org).astype(np.uint8),
                  F.lps_like_affine())
    with pytest.raises(VersemiError, match=F.m("label0001.nii.gz", "no spleen voxels (organ code 1)")):
        _load(tmp_path)


def test_bad_empty_or_absent_folder(tmp_path):
    (tmp_path / "RawData" / "Training" / "img").mkdir(parents=True)
    with pytest.raises(VersemiError, match=F.m("Training/img", "empty folder", "img<NNNN>.nii.gz")):
        list_btcv(tmp_path)
    (tmp_path / "other").mkdir()
    with pytest.raises(VersemiError, match=F.m("other", "no BTCV data found", "RawData/Training/img")):
        list_btcv(tmp_path / "other")
    with pytest.raises(VersemiError, match=F.m("nowhere", "source folder does not exist")):
        list_btcv(tmp_path / "nowhere")


def test_bad_corrupt_files_duplicates_and_orphans(tmp_path):
    base, hu, org = _one(tmp_path)
    F.corrupt_gzip(base / "img" / "img0001.nii.gz")
    with pytest.raises(VersemiError, match=F.m("img0001.nii.gz", "cannot read image")):
        _load(tmp_path)
    F.write_nifti(base / "img" / "img0001.nii.gz", hu, F.lps_like_affine(), np.int16)
    F.write_nifti(base / "img" / "img0001.nii", hu, F.lps_like_affine(), np.int16)
    with pytest.raises(VersemiError, match=F.m("duplicate case id 'btcv_0001'")):
        list_btcv(tmp_path)
    (base / "img" / "img0001.nii").unlink()
    F.write_nifti(base / "label" / "label0009.nii.gz", org, F.lps_like_affine())
    assert [p.split(": ")[1] for p in orphan_labels(tmp_path)] == [
        f"label without an image (expected {base / 'img' / 'img0009.nii.gz'})"]
    assert "label0009.nii.gz" in orphan_labels(tmp_path)[0]
