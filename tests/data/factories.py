"""Tiny files in each real raw format, written independently of versemi's readers (test helpers).

Every writer takes plain arrays and writes them the way the real datasets store them, so the tests can
check that the readers recover the arrays (and their geometry) exactly; :func:`load_all` reads them back
through the user path of ``versemi prepare``.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np

from versemi.data.readers import list_raw_cases

CT_SHAPE = (20, 18, 10)


def ct_volume(shape=CT_SHAPE, seed=0, organ_hu=60.0, box=None):
    """(HU volume, binary label): air outside, a soft-tissue 'body' ellipse, a bright organ box labelled 1."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x / 0.85) ** 2 + (y / 0.8) ** 2 <= 1.0
    hu = np.full(shape, -1000.0)
    hu[body] = -80.0  # fat-ish
    hu += rng.normal(0, 5, shape)
    if box is None:
        box = (slice(6, 11), slice(5, 9), slice(3, 7))
    label = np.zeros(shape, np.uint8)
    label[box] = 1
    hu[label > 0] = organ_hu
    return hu.astype(np.float32), label


# ----------------------------------------------------------------------------------------------- NIfTI

def lps_like_affine(spacing=(0.8, 0.7, 2.5), origin=(120.0, 110.0, -40.0)):
    """An affine whose first two axes point Left and Posterior (as MSD/TCIA NIfTIs often are)."""
    aff = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    aff[:3, 3] = origin
    return aff


def write_nifti(path, arr, affine, dtype=None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(arr) if dtype is None else np.asarray(arr).astype(dtype)
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    nib.save(img, str(path))
    return path


# ----------------------------------------------------------------------------------------------- DICOM

def write_dicom_series(folder, hu, pixel_spacing=(0.75, 0.7), slice_spacing=2.0, origin=(-7.0, -6.0, -100.0),
                       descending=True, seed=0):
    """Write ``hu`` (cols, rows, slices; slice k at z = origin_z + k * slice_spacing) as an axial CT series.

    Files get shuffled names; InstanceNumber runs head-to-feet when ``descending`` (so file order, instance
    order and position order all disagree); slope/intercept alternate between two settings per slice.
    Returns the RAS affine of the array ``hu`` (what a NIfTI label of this series carries).
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ncol, nrow, nz = hu.shape
    series_uid, study_uid = generate_uid(prefix="1.2.826.0.1.3680043.8.498."), generate_uid()
    perm = np.random.default_rng(seed).permutation(nz)
    for k in range(nz):
        slope, inter = ((1.0, -1024.0) if k % 2 == 0 else (0.5, -1000.0))
        stored = np.round((hu[:, :, k].T - inter) / slope).astype(np.int16)  # (rows, cols)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.InstanceNumber = (nz - k) if descending else (k + 1)
        ds.ImagePositionPatient = [float(origin[0]), float(origin[1]), float(origin[2] + k * slice_spacing)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [float(pixel_spacing[0]), float(pixel_spacing[1])]  # [row spacing, column spacing]
        ds.SliceThickness = float(slice_spacing)
        ds.Rows, ds.Columns = nrow, ncol
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, inter
        ds.PixelData = stored.tobytes()
        ds.save_as(str(folder / f"1-{perm[k] + 1:03d}.dcm"), enforce_file_format=True)
    lps = np.array([[pixel_spacing[1], 0, 0, origin[0]], [0, pixel_spacing[0], 0, origin[1]],
                    [0, 0, slice_spacing, origin[2]], [0, 0, 0, 1.0]])
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def write_pancreas_case(root, num: int, hu=None, label=None, seed=0, label_write=True, **dicom_kw):
    """root/Pancreas-CT/PANCREAS_XXXX/<study>/<series>/*.dcm + root/TCIA_pancreas_labels-02-05-2017/labelXXXX."""
    if hu is None:
        hu, label = ct_volume(seed=seed)
    series = Path(root) / "Pancreas-CT" / f"PANCREAS_{num:04d}" / "1.2.3-study" / "1.2.3.4-series"
    affine = write_dicom_series(series, hu, seed=seed, **dicom_kw)
    lab_path = Path(root) / "TCIA_pancreas_labels-02-05-2017" / f"label{num:04d}.nii.gz"
    if label_write:
        write_nifti(lab_path, label, affine, np.uint8)
    return series, lab_path, affine


# ------------------------------------------------------------------------------------------------- MSD

def write_msd(root, dataset: str, cases, test_cases=(), affine=None, seed=0, extra_json=None):
    """MSD task folder (Task09_Spleen / Task06_Lung) with ``cases`` = [(stem, hu, label)] in imagesTr /
    labelsTr and ``test_cases`` = [(stem, hu)] in imagesTs. Returns the task folder."""
    folder = Path(root) / {"spleen": "Task09_Spleen", "lung": "Task06_Lung"}[dataset]
    affine = lps_like_affine() if affine is None else affine
    training = []
    for stem, hu, label in cases:
        write_nifti(folder / "imagesTr" / f"{stem}.nii.gz", hu, affine, np.int16)
        if label is not None:
            write_nifti(folder / "labelsTr" / f"{stem}.nii.gz", label, affine, np.uint8)
        training.append({"image": f"./imagesTr/{stem}.nii.gz", "label": f"./labelsTr/{stem}.nii.gz"})
    for stem, hu in test_cases:
        write_nifti(folder / "imagesTs" / f"{stem}.nii.gz", hu, affine, np.int16)
    meta = {"name": dataset.capitalize(), "modality": {"0": "CT"}, "labels": {"0": "background", "1": dataset},
            "numTraining": len(training), "numTest": len(test_cases), "training": training,
            "test": [f"./imagesTs/{s}.nii.gz" for s, _ in test_cases]}
    meta.update(extra_json or {})
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2))
    return folder


# -------------------------------------------------------------------------------------------------- LA

def mri_volume(shape=(24, 22, 12), seed=0):
    """(z-scored-looking MRI volume float32, binary atrium label)."""
    rng = np.random.default_rng(seed)
    img = rng.normal(0, 1, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[8:15, 7:13, 3:9] = 1
    img[label > 0] += 2.5
    return img, label


def write_la_h5(root, ids, shapes=None, seed=0, train_list=None, test_list=None):
    """UA-MT layout: root/2018LA_Seg_Training Set/<ID>/mri_norm2.h5 (+ train.list / test.list)."""
    root = Path(root)
    arrays = {}
    for i, cid in enumerate(ids):
        shape = shapes[i] if shapes else (24, 22, 12)
        img, lab = mri_volume(shape, seed + i)
        p = root / "2018LA_Seg_Training Set" / cid / "mri_norm2.h5"
        p.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(p, "w") as f:
            f.create_dataset("image", data=img, compression="gzip")
            f.create_dataset("label", data=lab, compression="gzip")
        arrays[cid] = (img, lab)
    if train_list is not None:
        (root / "train.list").write_text("".join(f"{n}\n" for n in train_list))
    if test_list is not None:
        (root / "test.list").write_text("".join(f"{n}\n" for n in test_list))
    return arrays


def write_la_release(root, shape=(24, 22, 12), seed=0):
    """A fake UA-MT release with the authors' 100 LA names (versemi/data/splits/la.json): their 80 training
    cases in ``train.list`` (labeled_20 then unlabeled_20) and 20 test cases in ``test.list``, each a tiny
    :func:`mri_volume`. Returns ``(train names, test names)``."""
    split = json.loads((Path(__file__).resolve().parents[2] / "versemi" / "data" / "splits" / "la.json").read_text())
    train, test = split["labeled_20"] + split["unlabeled_20"], split["test"]
    write_la_h5(root, train + test, shapes=[shape] * (len(train) + len(test)), seed=seed, train_list=train,
                test_list=test)
    return train, test


def write_la_nrrd(root, cid, shape=(30, 28, 12), seed=0, spacing=(0.625, 0.625, 2.5), write_label=True):
    """Challenge layout: root/<ID>/lgemri.nrrd (uint8 intensities) + root/<ID>/laendo.nrrd (0/255)."""
    import nrrd

    rng = np.random.default_rng(seed)
    img = rng.integers(10, 60, size=shape).astype(np.uint8)
    lab = np.zeros(shape, np.uint8)
    lab[12:18, 10:16, 3:9] = 255
    img[lab > 0] = 180
    folder = Path(root) / cid
    folder.mkdir(parents=True, exist_ok=True)
    header = {"space": "left-posterior-superior",
              "space directions": np.diag(np.asarray(spacing, dtype=float)).tolist(),
              "space origin": [0.0, 0.0, 0.0]}
    nrrd.write(str(folder / "lgemri.nrrd"), img, header)
    if write_label:
        nrrd.write(str(folder / "laendo.nrrd"), lab, header)
    return img, lab


# ---------------------------------------------------------------------------------- authors' flat layout

def write_flat(folder, cases):
    """The authors' flat layout: folder/<name>.h5 with 'image' / 'label' for ``cases`` = {name: (img, lab)}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, (img, lab) in cases.items():
        with h5py.File(folder / f"{name}.h5", "w") as f:
            f.create_dataset("image", data=img)
            if lab is not None:
                f.create_dataset("label", data=lab)
    return folder


def corrupt_gzip(path):
    """Truncate a .nii.gz so that it can no longer be decompressed."""
    path = Path(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: max(20, len(raw) // 3)])
    return path


def gz_bytes(path) -> bytes:
    return gzip.decompress(Path(path).read_bytes())


# ----------------------------------------------------------------------------------------- reading back

def load_all(src, dataset: str) -> list:
    """Every case of ``dataset`` under ``src`` read the way ``versemi prepare`` reads them (the user path:
    list the cases, then load each)."""
    return [ref.load() for ref in list_raw_cases(src, dataset)]


def m(*parts) -> str:
    """A regex matching the parts in order (escaped)."""
    return ".*".join(re.escape(p) for p in parts)
