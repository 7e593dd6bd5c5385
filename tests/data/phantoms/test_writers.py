"""Raw phantom files: readable by the standard libraries, in the real layouts, labels consistent with the
hidden full label maps, plausible intensities (smoke profile)."""

import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage
from threadpoolctl import threadpool_limits

from versemi.data.phantoms import STRUCTURES, build_case, case_ids, dataset_roots, phantom_spec
from versemi.data.phantoms.writers import msd_file
from versemi.data.registry import authors_split

from .conftest import SEED

S = STRUCTURES


def _nii(path: Path):
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def _hidden(root: Path, dataset: str, case: str):
    return _nii(root / "hidden_labels" / dataset / f"{case}.nii.gz")


def _inner(mask: np.ndarray) -> np.ndarray:
    """Mask eroded by one voxel in-plane (away from partial-volume borders), or the mask itself if
    erosion empties it."""
    er = ndimage.binary_erosion(mask, structure=np.ones((3, 3, 1), bool))
    return er if er.sum() >= 5 else mask


def _read_series(folder: Path):
    files = sorted(folder.rglob("*.dcm"))
    dss = [pydicom.dcmread(f) for f in files]
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    vol = np.stack([d.pixel_array.T.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
                    for d in dss], axis=-1)
    return dss, vol


def test_pancreas_dicom_series_and_labels(smoke):
    root = smoke / "Pancreas-CT"
    assert sorted(p.name for p in root.iterdir()) == [f"PANCREAS_{n:04d}" for n in (1, 2, 13, 14, 15, 64, 65)]
    for case in case_ids("pancreas", "smoke"):
        num = int(case[4:])
        pdir = root / f"PANCREAS_{num:04d}"
        series = list(pdir.glob("*/*"))
        assert len(series) == 1 and (series[0] / "1-001.dcm").is_file()
        dss, hu = _read_series(pdir)
        d0 = dss[0]
        assert d0.SOPClassUID == pydicom.uid.CTImageStorage and d0.Modality == "CT"
        assert d0.PatientID == f"PANCREAS_{num:04d}"
        assert len({d.SeriesInstanceUID for d in dss}) == 1 and len({d.SOPInstanceUID for d in dss}) == len(dss)
        assert all(pydicom.uid.UID(d.SOPInstanceUID).is_valid for d in dss)
        assert sorted(int(d.InstanceNumber) for d in dss) == list(range(1, len(dss) + 1))
        assert int(dss[-1].InstanceNumber) == 1  # instance 1 is the most superior slice
        sx, sy = float(d0.PixelSpacing[1]), float(d0.PixelSpacing[0])
        zs = np.array([float(d.ImagePositionPatient[2]) for d in dss])
        sz = float(np.diff(zs).mean())
        assert np.allclose(np.diff(zs), sz) and abs(sz - float(d0.SliceThickness)) < 1e-6
        ox, oy, oz = (float(v) for v in d0.ImagePositionPatient)
        expect = np.array([[-sx, 0, 0, -ox], [0, -sy, 0, -oy], [0, 0, sz, oz], [0, 0, 0, 1]])

        lab, aff = _nii(smoke / "TCIA_pancreas_labels-02-05-2017" / f"label{num:04d}.nii.gz")
        hid, haff = _hidden(smoke, "pancreas", case)
        assert lab.shape == hu.shape == hid.shape
        assert np.allclose(aff, expect, atol=1e-4) and np.allclose(haff, aff)
        assert lab.dtype == np.uint8 and set(np.unique(lab)) == {0, 1}
        assert np.array_equal(lab == 1, hid == S["pancreas"])
        assert (hid == S["spleen"]).sum() > 0 and (hid == S["liver"]).sum() > 0
        assert -1024 <= hu.min() and hu.max() <= 3071
        assert np.median(hu[hid == 0]) < -900
        fat = np.median(hu[_inner(hid == S["fat"])])
        liver = np.median(hu[_inner(hid == S["liver"])])
        assert fat < -50 < liver < 120, (fat, liver)
        assert np.median(hu[hid == S["bone"]]) > 150
        assert 0 < np.median(hu[_inner(hid == S["pancreas"])]) < 100


@pytest.mark.parametrize("dataset,task,target", [("spleen", "Task09_Spleen", "spleen"),
                                                 ("lung", "Task06_Lung", "tumour")])
def test_msd_layout_and_labels(smoke, dataset, task, target):
    root = smoke / task
    meta = json.loads((root / "dataset.json").read_text())
    for key in ("name", "description", "tensorImageSize", "modality", "labels", "numTraining", "numTest",
                "training", "test"):
        assert key in meta
    assert meta["tensorImageSize"] == "3D" and meta["modality"] == {"0": "CT"}
    assert meta["labels"] == {"0": "background", "1": "spleen" if dataset == "spleen" else "cancer"}
    assert meta["numTraining"] == len(meta["training"]) == 7 and meta["numTest"] == len(meta["test"]) == 1
    first = authors_split(dataset)["labeled_20"][0]
    expect_file = "spleen_2.nii.gz" if dataset == "spleen" else "lung_001.nii.gz"
    assert first == ("spleen_02" if dataset == "spleen" else "lung_001")
    assert meta["training"][0] == {"image": f"./imagesTr/{expect_file}", "label": f"./labelsTr/{expect_file}"}
    names = case_ids(dataset, "smoke")
    tumours = []
    for entry, case in zip(meta["training"], names):
        img, aff = _nii(root / entry["image"])
        lab, laff = _nii(root / entry["label"])
        hid, haff = _hidden(smoke, dataset, case)
        assert img.shape == lab.shape == hid.shape and img.dtype == np.int16
        assert np.allclose(aff, laff) and np.allclose(aff, haff)
        assert lab.dtype == np.uint8 and set(np.unique(lab)) == {0, 1}
        assert np.array_equal(lab == 1, hid == S[target])
        assert np.median(img[hid == 0]) < -900
        if dataset == "spleen":
            assert (hid == S["pancreas"]).sum() > 0 and (hid == S["liver"]).sum() > 0
            assert np.median(img[_inner(hid == S["fat"])]) < -50 < np.median(img[_inner(hid == S["spleen"])])
        else:
            lung = (hid == S["lung_left"]) | (hid == S["lung_right"])
            assert img[_inner(lung)].mean() < -700
            tumour = img[hid == S["tumour"]]
            tumours.append((tumour.size, tumour, np.median(img[lung])))
    if dataset == "lung":  # the largest nodule is solid tissue far above the lung (small ones blur at 6-8 mm)
        _, tumour, lung_median = max(tumours, key=lambda t: t[0])
        assert np.median(tumour) > lung_median + 300 and -150 < np.percentile(tumour, 90) < 150
    assert len(meta["test"]) == 1 and (root / meta["test"][0]).is_file()
    assert not (root / "labelsTr" / Path(meta["test"][0]).name).exists()
    assert (smoke / "hidden_labels" / dataset / f"{names[-1]}.nii.gz").is_file()


def test_la_h5_lists_and_zscore(smoke):
    root = smoke / "LA"
    names = case_ids("la", "smoke")
    train = (root / "train.list").read_text().split("\n")
    test = (root / "test.list").read_text().split("\n")
    assert train[:-1] == names[:5] and test[:-1] == names[5:] and train[-1] == test[-1] == ""
    assert names[:2] == authors_split("la")["labeled_10"][:2]
    assert names[2:5] == authors_split("la")["unlabeled_20"][:3]
    prof = phantom_spec("smoke")
    for case in names:
        with h5py.File(root / "2018LA_Seg_Training Set" / case / "mri_norm2.h5", "r") as f:
            assert set(f) == {"image", "label"}
            img, lab = f["image"][:], f["label"][:]
        assert img.dtype == np.float32 and lab.dtype == np.uint8 and img.shape == lab.shape
        assert set(np.unique(lab)) == {0, 1}
        hid, haff = _hidden(smoke, "la", case)
        assert hid.shape == img.shape and np.allclose(np.diag(haff)[3], 1) and np.all(np.diag(haff)[:3] > 1)
        assert np.array_equal(lab == 1, hid == S["left_atrium"])
        # the crop keeps all slices, the atrium and at least the minimal margin in x/y
        with threadpool_limits(limits=1):
            built = build_case("la", case, "smoke", SEED)
        full = built.full_image
        assert full.shape[2] == img.shape[2] and min(img.shape[:2]) >= prof.la_min_w
        assert abs(float(full.mean())) < 1e-3 and abs(float(full.std()) - 1) < 1e-3
        assert np.array_equal(full[built.crop], img)
        for ax in (0, 1):
            idx = np.flatnonzero(lab.any(axis=tuple(a for a in range(3) if a != ax)))
            assert idx[0] >= prof.la_margin[0] or built.crop[ax].start == 0
        # blood pool brighter than myocardium and lungs (LGE-like contrast)
        assert img[hid == S["left_atrium"]].mean() > img[hid == S["myocardium"]].mean()


def test_file_names_and_dataset_folders():
    assert msd_file("spleen", "spleen_02") == "spleen_2.nii.gz" and msd_file("lung", "lung_7") == "lung_007.nii.gz"
    assert dataset_roots("pancreas") == ["Pancreas-CT", "TCIA_pancreas_labels-02-05-2017", "hidden_labels/pancreas"]
    assert dataset_roots("la") == ["LA", "hidden_labels/la"]
