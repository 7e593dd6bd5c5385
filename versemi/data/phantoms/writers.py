"""Writers of the phantoms' raw files, in the layouts of the real downloads (see ``__init__.py`` of this
package): DICOM CT series, NIfTI images and labels, the UA-MT LA HDF5 files and the MSD ``dataset.json``.

Every writer is deterministic: fixed DICOM UIDs derived from the seed, no timestamps (HDF5
``track_times=False``), gzip mtime 0 (nibabel's default).
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from versemi.data.registry import DATASETS, STRUCTURES

from .cases import PhantomCase, check_dataset, decimal_round

VERSION = "1.1"   # 1.1: LA and lung phantoms recalibrated (issue 13)


def dataset_roots(dataset: str) -> list[str]:
    """Top-level folders under ``out`` that hold a dataset's raw phantom files."""
    return {"pancreas": ["Pancreas-CT", "TCIA_pancreas_labels-02-05-2017"], "spleen": ["Task09_Spleen"],
            "lung": ["Task06_Lung"], "la": ["LA"]}[check_dataset(dataset)] + [f"hidden_labels/{dataset}"]


def msd_file(dataset: str, name: str) -> str:
    """MSD file name of an authors' case name: spleen ids are not zero padded, lung ids are (3)."""
    num = int(name.split("_")[1])
    return f"spleen_{num}.nii.gz" if dataset == "spleen" else f"lung_{num:03d}.nii.gz"


def ras_affine(spacing, origin_lps) -> np.ndarray:
    """The NIfTI affine (RAS) of a phantom volume: diag(-sx, -sy, sz), origin (-ox, -oy, oz) from LPS."""
    sx, sy, sz = spacing
    ox, oy, oz = origin_lps
    aff = np.diag([-sx, -sy, sz, 1.0])
    aff[:3, 3] = [-ox, -oy, oz]
    return aff


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """``data`` as NIfTI with ``affine`` as both qform and sform (mm), creating the folder."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _hu_int16(hu: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def _uid(seed: int, *parts) -> str:
    """Deterministic DICOM UID in the 2.25 (UUID-derived) root: a 128-bit hash of seed and parts."""
    h = hashlib.sha256("|".join(["versemi-phantom", str(seed), *map(str, parts)]).encode()).digest()
    return f"2.25.{int.from_bytes(h[:16], 'big')}"


def _write_dicom_series(root: Path, case: PhantomCase, seed: int, rng) -> None:
    num = int(case.name[4:])
    pid = f"PANCREAS_{num:04d}"
    date = f"2015{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    study_dir = f"{date[4:6]}-{date[6:8]}-{date[:4]}-PANCREAS{num:04d}-Pancreas-{int(rng.integers(10000, 99999))}"
    series_dir = f"Pancreas-{int(rng.integers(10000, 99999))}"
    folder = root / pid / study_dir / series_dir
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = _uid(seed, pid, "study"), _uid(seed, pid, "series")
    for_uid = _uid(seed, pid, "frame-of-reference")
    nx, ny, nz = case.image.shape
    sx, sy, sz = case.spacing
    ox, oy, oz = case.origin_lps
    stored = (np.clip(np.rint(case.image), -1024, 3071) + 1024).astype(np.uint16)
    for inst in range(1, nz + 1):
        k = nz - inst                       # instance 1 = most superior slice
        z = decimal_round(oz + k * sz, 3)
        sop_uid = _uid(seed, pid, "sop", inst)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = _uid(0, "versemi-implementation")
        meta.ImplementationVersionName = "VERSEMI_PH_1"
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.Modality = "CT"
        ds.Manufacturer = "VerSemi phantom generator"
        ds.PatientName = pid
        ds.PatientID = pid
        ds.PatientSex = "O"
        ds.BodyPartExamined = "PANCREAS"
        ds.SliceThickness = f"{sz:g}"
        ds.KVP = "120"
        ds.PatientPosition = "FFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = f"{num}"
        ds.SeriesNumber = 1
        ds.InstanceNumber = inst
        ds.ImagePositionPatient = [f"{ox:g}", f"{oy:g}", f"{z:g}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = for_uid
        ds.SliceLocation = f"{z:g}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.PixelSpacing = [f"{sy:g}", f"{sx:g}"]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        ds.save_as(folder / f"1-{inst:03d}.dcm", enforce_file_format=True)


def _write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", track_order=False) as f:
        f.create_dataset("image", data=image.astype(np.float32), compression="gzip", track_times=False)
        f.create_dataset("label", data=label.astype(np.uint8), compression="gzip", track_times=False)


def msd_json(dataset: str, train_cases: list[str], test_cases: list[str]) -> dict:
    """The MSD ``dataset.json`` of the spleen or lung phantoms (training entries labeled, test unlabeled)."""
    if dataset == "spleen":
        head = {"name": "Spleen", "description": "Spleen Segmentation (VerSemi procedural phantom)",
                "labels": {"0": "background", "1": "spleen"}}
    else:
        head = {"name": "Lung", "description": "Lung and cancer segmentation (VerSemi procedural phantom)",
                "labels": {"0": "background", "1": "cancer"}}
    return {
        "name": head["name"],
        "description": head["description"],
        "reference": "procedurally generated by versemi.data.phantoms (not patient data)",
        "licence": "CC-BY-SA 4.0",
        "release": f"versemi phantoms {VERSION}",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": head["labels"],
        "numTraining": len(train_cases),
        "numTest": len(test_cases),
        "training": [{"image": f"./imagesTr/{msd_file(dataset, c)}", "label": f"./labelsTr/{msd_file(dataset, c)}"}
                     for c in train_cases],
        "test": [f"./imagesTs/{msd_file(dataset, c)}" for c in test_cases],
    }


def write_case(stage: Path, dataset: str, case: PhantomCase, seed: int, labeled: bool) -> None:
    """Write one case's raw files under ``stage`` in its dataset's layout: image, exposed label (the
    hidden map == the code of the dataset's structure; none for an unlabeled MSD imagesTs case) and the
    complete hidden label map."""
    target = (case.labels == STRUCTURES[DATASETS[dataset].structure]).astype(np.uint8)
    hidden = stage / "hidden_labels" / dataset / f"{case.name}.nii.gz"
    if dataset == "la":
        _write_h5(stage / "LA" / "2018LA_Seg_Training Set" / case.name / "mri_norm2.h5", case.image, target)
        save_nifti(hidden, case.labels, np.diag([*case.spacing, 1.0]))
        return
    affine = ras_affine(case.spacing, case.origin_lps)
    save_nifti(hidden, case.labels, affine)
    if dataset == "pancreas":
        num = int(case.name[4:])
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1, zlib.crc32(case.name.encode()), 999]))
        _write_dicom_series(stage / "Pancreas-CT", case, seed, rng)
        save_nifti(stage / "TCIA_pancreas_labels-02-05-2017" / f"label{num:04d}.nii.gz", target, affine)
        return
    task = "Task09_Spleen" if dataset == "spleen" else "Task06_Lung"
    fname = msd_file(dataset, case.name)
    save_nifti(stage / task / ("imagesTr" if labeled else "imagesTs") / fname, _hu_int16(case.image), affine)
    if labeled:
        save_nifti(stage / task / "labelsTr" / fname, target, affine)

