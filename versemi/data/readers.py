"""Readers for the raw formats of the four datasets (DESIGN.md section 4).

Every reader yields :class:`RawCase` objects with the case named as the authors name it
(``data0001``, ``spleen_02``, ``lung_001``, the 20-character LA ids) and validated: a bad file raises
:class:`~versemi.utils.VersemiError` with one message naming the file and the problem.

Array axis order
----------------
CT volumes (DICOM, NIfTI) are reoriented to nibabel's *closest canonical* orientation (RAS+), so every
CT array has axes ``(x, y, z)`` whose index increases towards the patient's Right (axis 0), Anterior
(axis 1) and Superior (axis 2). The last axis is the slice axis, as in the authors' HDF5 files.
``spacing`` is the voxel size in mm *per array axis* after reorientation.

A DICOM series gets its world geometry from ImagePositionPatient / ImageOrientationPatient / PixelSpacing
(slices sorted by their position along the slice normal); its NIfTI label must carry the same world
geometry (as the TCIA label files and any NIfTI written from the series do). Both are then reoriented the
same way, so image and label agree voxel by voxel.

LA volumes keep the array order of their files: the UA-MT ``mri_norm2.h5`` arrays (x, y, z; 88 slices last)
and the challenge's NRRD arrays read in pynrrd's default Fortran order (x, y, z). The UA-MT HDF5 files carry
no voxel size: we assume the challenge's **0.625 x 0.625 x 0.625 mm** (from the challenge description,
not from the files). Files in the authors' flat layout carry no voxel size either: we read an attribute
``spacing`` when present (files written by ``versemi prepare``), else assume 1 mm for pancreas (CoraNet
resampled to 1 mm), 0.625 mm for LA, and 1 mm for spleen and lung (the authors' preprocessing of those is
unpublished; an assumption, used only for mm-based reporting).

Layouts (``src`` may hold any of them; see :func:`find_dataset_root`)::

    Pancreas-CT/PANCREAS_0001/<study>/<series>/*.dcm     + TCIA_pancreas_labels-*/label0001.nii.gz
    Pancreas-CT/PANCREAS_0001.nii.gz (or Pancreas-CT/imagesTr/...)   (NIfTI images instead of DICOM)
    Task09_Spleen/, Task06_Lung/                          MSD: dataset.json, imagesTr/, labelsTr/, imagesTs/
    LA/2018LA_Seg_Training Set/<ID>/mri_norm2.h5         UA-MT; or <ID>/lgemri.nrrd + <ID>/laendo.nrrd
    <folder>/<name>.h5                                    the authors' flat layout (task from the name)
    hidden_labels/<dataset>/<case>.nii.gz                 phantoms only: complete label maps (optional)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from versemi.data.registry import DATASETS, TASK_TO_DATASET, get_dataset, task_from_case_name
from versemi.utils import VersemiError

LA_SPACING = (0.625, 0.625, 0.625)  # the challenge's voxel size; the UA-MT h5 files store none
FLAT_DEFAULT_SPACING = {"pancreas": (1.0, 1.0, 1.0), "la": LA_SPACING, "spleen": (1.0, 1.0, 1.0),
                        "lung": (1.0, 1.0, 1.0)}
MSD_FOLDERS = {"spleen": "Task09_Spleen", "lung": "Task06_Lung"}
LA_TRAINING_FOLDER = "2018LA_Seg_Training Set"
PANCREAS_FOLDER = "Pancreas-CT"
KNOWN_DUPLICATES = {"pancreas": ("data0025", "data0070")}  # NIH #25/#70 duplicate other scans (removed by TCIA)
_SEARCH_DEPTH = 3


@dataclass
class RawCase:
    """One case as read from its raw files.

    image:  float32 (X, Y, Z) -- Hounsfield units for CT, scanner (or UA-MT z-scored) values for MRI.
    label:  uint8 (X, Y, Z) with values {0, 1}, or None for unlabeled scans (MSD imagesTs).
    spacing: voxel size in mm per array axis.
    affine: 4x4 voxel -> world (RAS mm) of the array as returned, or None (HDF5 inputs).
    hidden: uint8 (X, Y, Z) complete label map of every structure (phantoms only), or None.
    preprocessed: True for files that are already in the authors' preprocessed form (UA-MT h5, flat h5);
        ``prepare`` keeps those as they are.
    """

    name: str
    dataset: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    affine: np.ndarray | None
    source: Path
    hidden: np.ndarray | None = None
    preprocessed: bool = False
    fmt: str = ""
    label_source: Path | None = None


@dataclass
class CaseRef:
    """A case found on disk but not read yet (``load()`` reads and validates it)."""

    name: str
    dataset: str
    source: Path
    fmt: str
    expects_label: bool
    _loader: Callable[[], RawCase] = field(repr=False)

    def load(self) -> RawCase:
        return self._loader()


# --------------------------------------------------------------------------------------------- helpers

@contextlib.contextmanager
def _reading(path: Path, what: str = "file"):
    """Turn any library error while reading ``path`` into one VersemiError naming the file."""
    try:
        yield
    except VersemiError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - nibabel/pydicom/h5py/nrrd raise many types on corrupt input
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise VersemiError(f"{path}: cannot read {what} (corrupt or unreadable): "
                           f"{type(e).__name__}{': ' + msg if msg else ''}") from None


def _as_volume(arr, path: Path, what: str) -> np.ndarray:
    """Check that ``arr`` is a real-valued 3-D volume (a trailing singleton 4th axis is dropped)."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise VersemiError(f"{path}: {what} has unsupported dtype {arr.dtype} (expected a real numeric type)")
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise VersemiError(f"{path}: {what} is {arr.ndim}-D with shape {tuple(arr.shape)}; expected a 3-D volume")
    if min(arr.shape) < 2:
        raise VersemiError(f"{path}: {what} has shape {tuple(arr.shape)}; expected a 3-D volume (>= 2 voxels per axis)")
    return arr


def _image(arr, path: Path) -> np.ndarray:
    arr = _as_volume(arr, path, "image")
    out = arr.astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        n = int((~np.isfinite(out)).sum())
        raise VersemiError(f"{path}: image has {n} NaN/inf voxels")
    return out


def _label(arr, path: Path, image_shape, image_path: Path, value_map: dict | None = None,
           require_foreground: bool = True) -> np.ndarray:
    arr = _as_volume(arr, path, "label")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise VersemiError(f"{path}: label has NaN/inf voxels")
    if tuple(arr.shape) != tuple(image_shape):
        raise VersemiError(f"{path}: label shape {tuple(arr.shape)} does not match image shape "
                           f"{tuple(image_shape)} of {image_path.name}")
    values = np.unique(arr)
    if value_map:
        arr = arr.copy()
        for src_v, dst_v in value_map.items():
            arr[arr == src_v] = dst_v
        values = np.unique(arr)
    bad = [v for v in values.tolist() if v not in (0, 1)]
    if bad:
        raise VersemiError(f"{path}: label is not binary: values {values.tolist()[:8]} (expected 0/1)")
    lab = arr.astype(np.uint8)
    if require_foreground and not lab.any():
        raise VersemiError(f"{path}: label is empty (no foreground voxel)")
    return lab


def _hidden(arr, path: Path, image_shape) -> np.ndarray:
    arr = _as_volume(arr, path, "hidden label")
    if tuple(arr.shape) != tuple(image_shape):
        raise VersemiError(f"{path}: hidden label shape {tuple(arr.shape)} does not match image shape "
                           f"{tuple(image_shape)}")
    if arr.dtype.kind == "f" and (not np.isfinite(arr).all() or (arr != np.round(arr)).any()):
        raise VersemiError(f"{path}: hidden label has non-integer values")
    if arr.min() < 0 or arr.max() > 255:
        raise VersemiError(f"{path}: hidden label values outside 0..255")
    return arr.astype(np.uint8)


def _spacing(zooms, path: Path) -> tuple[float, float, float]:
    sp = tuple(float(z) for z in list(zooms)[:3])
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise VersemiError(f"{path}: invalid voxel spacing {sp}")
    return sp


def _nifti_canonical(path: Path, what: str):
    """(array, spacing, affine) of a NIfTI file reoriented to the closest canonical (RAS+) orientation."""
    import nibabel as nib

    if not path.is_file():
        raise VersemiError(f"{path}: {what} file is missing")
    with _reading(path, f"{what} (NIfTI)"):
        img = nib.load(str(path))
        if len(img.shape) > 3 and any(s != 1 for s in img.shape[3:]):
            raise VersemiError(f"{path}: {what} is {len(img.shape)}-D with shape {tuple(img.shape)}; "
                               "expected a 3-D volume")
        if len(img.shape) < 3:
            raise VersemiError(f"{path}: {what} is {len(img.shape)}-D with shape {tuple(img.shape)}; "
                               "expected a 3-D volume")
        dtype = img.get_data_dtype()
        if dtype.kind not in "biuf":
            raise VersemiError(f"{path}: {what} has unsupported dtype {dtype} (expected a real numeric type)")
        if len(img.shape) > 3:
            img = nib.Nifti1Image(np.asanyarray(img.dataobj).reshape(img.shape[:3]), img.affine, img.header)
        img = nib.as_closest_canonical(img)
        arr = np.asanyarray(img.dataobj)
        zooms = img.header.get_zooms()[:3]
        affine = np.asarray(img.affine, dtype=np.float64)
    return arr, _spacing(zooms, path), affine


def _read_h5_pair(path: Path, image_key="image", label_key="label", need_label=True):
    import h5py

    if not path.is_file():
        raise VersemiError(f"{path}: file is missing")
    with _reading(path, "HDF5 file"), h5py.File(path, "r") as f:
        if image_key not in f:
            raise VersemiError(f"{path}: HDF5 file has no dataset {image_key!r} (found {sorted(f.keys())})")
        if need_label and label_key not in f:
            raise VersemiError(f"{path}: HDF5 file has no dataset {label_key!r}: missing label")
        img = f[image_key]
        if img.dtype.kind not in "biuf":
            raise VersemiError(f"{path}: image has unsupported dtype {img.dtype} (expected a real numeric type)")
        image = img[()]
        label = f[label_key][()] if label_key in f else None
        if label is not None and label.dtype.kind not in "biuf":
            raise VersemiError(f"{path}: label has unsupported dtype {label.dtype} (expected integers)")
        attrs = {k: f.attrs[k] for k in f.attrs}
    return image, label, attrs


def _hidden_for(hidden_dir: Path | None, name: str, image_shape, reorient: bool):
    """Hidden complete label map for case ``name`` if ``hidden_dir/<name>.nii.gz`` exists."""
    if hidden_dir is None:
        return None
    for ext in (".nii.gz", ".nii"):
        p = hidden_dir / f"{name}{ext}"
        if p.is_file():
            if reorient:
                arr, _, _ = _nifti_canonical(p, "hidden label")
            else:
                import nibabel as nib

                with _reading(p, "hidden label (NIfTI)"):
                    arr = np.asanyarray(nib.load(str(p)).dataobj)
            return _hidden(arr, p, image_shape)
    return None


def _check_unique(refs: list[CaseRef], where: Path) -> list[CaseRef]:
    seen: dict[str, CaseRef] = {}
    for r in refs:
        if r.name in seen:
            raise VersemiError(f"{r.source}: duplicate case id {r.name!r} (also {seen[r.name].source}) in {where}")
        seen[r.name] = r
    return sorted(refs, key=lambda r: r.name)


def _strip_ext(name: str) -> str:
    for ext in (".nii.gz", ".nii", ".nrrd", ".h5", ".hdf5"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _check_task(name: str, dataset: str, path: Path) -> None:
    task = task_from_case_name(name)
    if task != DATASETS[dataset].task_id:
        raise VersemiError(f"{path}: case name {name!r} maps to task {task} ({TASK_TO_DATASET[task]}), "
                           f"not to dataset {dataset!r} (task {DATASETS[dataset].task_id}): unknown task for "
                           f"this dataset")


# --------------------------------------------------------------------------------------------------- MSD

def msd_case_name(stem: str, dataset: str) -> str:
    """MSD file stem -> the authors' name: spleen_2 -> spleen_02, lung_1 -> lung_001 (others unchanged)."""
    m = re.fullmatch(r"(spleen|lung)_0*(\d+)", stem)
    if not m:
        return stem
    width = 2 if m.group(1) == "spleen" else 3
    return f"{m.group(1)}_{int(m.group(2)):0{width}d}"


def list_msd(task_dir, dataset: str, hidden_dir=None) -> list[CaseRef]:
    """Cases of an MSD task folder (``dataset.json`` 'training' entries labeled, 'test'/imagesTs unlabeled)."""
    get_dataset(dataset)
    task_dir = Path(task_dir)
    hidden_dir = Path(hidden_dir) if hidden_dir else None
    js = task_dir / "dataset.json"
    if not js.is_file():
        raise VersemiError(f"{js}: dataset.json is missing (not an MSD task folder)")
    with _reading(js, "dataset.json"):
        meta = json.loads(js.read_text())
    if not isinstance(meta, dict) or "training" not in meta:
        raise VersemiError(f"{js}: missing key 'training' in dataset.json")
    if not isinstance(meta["training"], list):
        raise VersemiError(f"{js}: key 'training' must be a list of {{'image', 'label'}} entries")
    refs = []
    for i, entry in enumerate(meta["training"]):
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            missing = [k for k in ("image", "label") if not isinstance(entry, dict) or k not in entry]
            raise VersemiError(f"{js}: training entry {i} is missing key(s) {missing}")
        img = Path(os.path.normpath(task_dir / entry["image"]))
        lab = Path(os.path.normpath(task_dir / entry["label"]))
        refs.append(_msd_ref(img, lab, dataset, hidden_dir, task_dir))
    test = meta.get("test")
    if test is None and (task_dir / "imagesTs").is_dir():
        test = sorted(p.name for p in (task_dir / "imagesTs").iterdir()
                      if p.name.endswith((".nii", ".nii.gz")) and not p.name.startswith("._"))
        test = [f"imagesTs/{t}" for t in test]
    for entry in test or []:
        rel = entry["image"] if isinstance(entry, dict) else entry
        refs.append(_msd_ref(Path(os.path.normpath(task_dir / rel)), None, dataset, hidden_dir, task_dir))
    return _check_unique(refs, task_dir)


def _msd_ref(img: Path, lab: Path | None, dataset: str, hidden_dir, task_dir: Path) -> CaseRef:
    name = msd_case_name(_strip_ext(img.name), dataset)
    _check_task(name, dataset, img)

    def load() -> RawCase:
        arr, spacing, affine = _nifti_canonical(img, "image")
        image = _image(arr, img)
        label = None
        if lab is not None:
            if not lab.is_file():
                raise VersemiError(f"{lab}: label file is missing for image {img.name} (missing label)")
            larr, lsp, _ = _nifti_canonical(lab, "label")
            label = _label(larr, lab, image.shape, img)
            _check_same_spacing(lsp, spacing, lab, img)
        hidden = _hidden_for(hidden_dir, name, image.shape, reorient=True)
        return RawCase(name, dataset, image, label, spacing, affine, img, hidden, fmt="nifti", label_source=lab)

    return CaseRef(name, dataset, img, "nifti", lab is not None, load)


def _check_same_spacing(lsp, isp, lab: Path, img: Path) -> None:
    if not np.allclose(lsp, isp, rtol=0.01, atol=1e-3):
        raise VersemiError(f"{lab}: label voxel spacing {tuple(round(s, 4) for s in lsp)} does not match the "
                           f"image's {tuple(round(s, 4) for s in isp)} ({img.name})")


def read_msd(task_dir, dataset: str, hidden_dir=None) -> Iterator[RawCase]:
    """Read an MSD task folder (Task09_Spleen, Task06_Lung) case by case, sorted by name."""
    for ref in list_msd(task_dir, dataset, hidden_dir):
        yield ref.load()


# ----------------------------------------------------------------------------------------- NIH pancreas

def _dicom_series(folder: Path):
    """Read the CT series under ``folder``: (HU volume (cols, rows, slices), RAS affine)."""
    import pydicom

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".dcm", ""))
    files = [p for p in files if not p.name.startswith(".")]
    if not files:
        raise VersemiError(f"{folder}: no DICOM files found")
    series: dict[str, list] = {}
    for p in files:
        with _reading(p, "DICOM file"):
            ds = pydicom.dcmread(str(p))
            if "PixelData" not in ds:
                continue
            series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((p, ds))
    if not series:
        raise VersemiError(f"{folder}: no DICOM image slices found")
    # one series per patient in NIH Pancreas-CT; if several, take the one with most slices (then UID order)
    uid = sorted(series, key=lambda u: (-len(series[u]), u))[0]
    slices = series[uid]
    if len(slices) < 2:
        raise VersemiError(f"{folder}: DICOM series has {len(slices)} slice; expected a 3-D volume")
    p0, ds0 = slices[0]
    for p, ds in slices:
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if tag not in ds:
                raise VersemiError(f"{p}: DICOM slice has no {tag} (cannot place it in 3-D)")
        if (ds.Rows, ds.Columns) != (ds0.Rows, ds0.Columns):
            raise VersemiError(f"{p}: slice size {ds.Rows}x{ds.Columns} differs from {ds0.Rows}x{ds0.Columns} "
                               f"of {p0.name}")
    iop = np.asarray(ds0.ImageOrientationPatient, dtype=np.float64)
    f_row, f_col = iop[:3], iop[3:]
    normal = np.cross(f_row, f_col)
    pos = np.array([np.asarray(ds.ImagePositionPatient, dtype=np.float64) for _, ds in slices])
    proj = pos @ normal
    order = np.argsort(proj, kind="stable")
    proj = proj[order]
    gaps = np.diff(proj)
    if (gaps < 1e-3).any():
        k = int(np.argmax(gaps < 1e-3))
        raise VersemiError(f"{slices[order[k + 1]][0]}: duplicate slice position {proj[k + 1]:.3f} mm "
                           f"(also {slices[order[k]][0].name})")
    dz = float(np.median(gaps))
    if np.abs(gaps - dz).max() > max(0.05 * dz, 0.01):
        raise VersemiError(f"{folder}: non-uniform slice spacing {sorted(set(np.round(gaps, 3).tolist()))[:6]} "
                           "mm (missing slices?)")
    ps = [float(v) for v in ds0.PixelSpacing]  # [between rows, between columns]
    vol = np.empty((int(ds0.Columns), int(ds0.Rows), len(slices)), dtype=np.float32)
    for k, i in enumerate(order):
        p, ds = slices[i]
        with _reading(p, "DICOM pixel data"):
            px = ds.pixel_array
        if px.ndim != 2:
            raise VersemiError(f"{p}: DICOM slice pixel data has shape {px.shape}; expected one 2-D slice")
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        inter = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        vol[:, :, k] = (px.astype(np.float32) * slope + inter).T  # (rows, cols) -> (cols, rows)
    lps = np.eye(4)
    lps[:3, 0] = f_row * ps[1]
    lps[:3, 1] = f_col * ps[0]
    lps[:3, 2] = (pos[order[-1]] - pos[order[0]]) / (len(slices) - 1)
    lps[:3, 3] = pos[order[0]]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return vol, ras


def _canonical_array(arr: np.ndarray, affine: np.ndarray):
    import nibabel as nib

    img = nib.as_closest_canonical(nib.Nifti1Image(arr, affine))
    return np.asanyarray(img.dataobj), img.header.get_zooms()[:3], np.asarray(img.affine)


def _pancreas_dir(root: Path) -> Path:
    if root.name == PANCREAS_FOLDER or _pancreas_entries(root):
        return root
    if (root / PANCREAS_FOLDER).is_dir():
        return root / PANCREAS_FOLDER
    raise VersemiError(f"{root}: no {PANCREAS_FOLDER}/PANCREAS_XXXX cases found")


def _pancreas_entries(folder: Path) -> list[Path]:
    out = []
    for sub in (folder, folder / "imagesTr"):
        if sub.is_dir():
            out += [p for p in sub.iterdir() if re.fullmatch(r"PANCREAS_\d+(\.nii\.gz|\.nii)?", p.name)]
    return out


def _pancreas_label(case_id: str, search: list[Path]) -> Path | None:
    num = case_id.split("_")[-1]
    for d in search:
        for cand in (f"label{num}.nii.gz", f"label{num}.nii", f"{case_id}.nii.gz", f"{case_id}.nii"):
            if (d / cand).is_file():
                return d / cand
    return None


def list_nih_pancreas(root, hidden_dir=None) -> list[CaseRef]:
    """Cases of NIH Pancreas-CT: ``root`` is the ``Pancreas-CT`` folder or a folder holding it."""
    root = Path(root)
    pdir = _pancreas_dir(root)
    hidden_dir = Path(hidden_dir) if hidden_dir else None
    label_dirs = []
    for base in (pdir, pdir.parent):
        if base.is_dir():
            label_dirs += sorted(p for p in base.iterdir() if p.is_dir() and
                                 (p.name.startswith("TCIA_pancreas_labels") or p.name == "labelsTr"))
    refs = []
    for entry in sorted(_pancreas_entries(pdir)):
        case_id = _strip_ext(entry.name)
        name = f"data{int(case_id.split('_')[-1]):04d}"
        lab = _pancreas_label(case_id, label_dirs)
        expected = label_dirs[0] / f"label{case_id.split('_')[-1]}.nii.gz" if label_dirs else \
            pdir.parent / "TCIA_pancreas_labels-02-05-2017" / f"label{case_id.split('_')[-1]}.nii.gz"
        refs.append(CaseRef(name, "pancreas", entry, "dicom" if entry.is_dir() else "nifti", True,
                            _pancreas_loader(entry, name, lab, expected, hidden_dir)))
    if not refs:
        raise VersemiError(f"{pdir}: no PANCREAS_XXXX cases found")
    return _check_unique(refs, pdir)


def _pancreas_loader(entry: Path, name: str, lab: Path | None, expected: Path, hidden_dir):
    def load() -> RawCase:
        if entry.is_dir():
            vol, ras = _dicom_series(entry)
            arr, zooms, affine = _canonical_array(vol, ras)
            spacing = _spacing(zooms, entry)
            fmt = "dicom"
        else:
            arr, spacing, affine = _nifti_canonical(entry, "image")
            fmt = "nifti"
        image = _image(arr, entry)
        if lab is None:
            raise VersemiError(f"{expected}: label file is missing for {entry.name} (missing label)")
        larr, lsp, _ = _nifti_canonical(lab, "label")
        label = _label(larr, lab, image.shape, entry)
        _check_same_spacing(lsp, spacing, lab, entry)
        hidden = _hidden_for(hidden_dir, name, image.shape, reorient=True)
        return RawCase(name, "pancreas", image, label, spacing, affine, entry, hidden, fmt=fmt, label_source=lab)

    return load


def read_nih_pancreas(root, hidden_dir=None) -> Iterator[RawCase]:
    """Read NIH Pancreas-CT (DICOM series or NIfTI images + TCIA NIfTI labels), sorted by name.

    HU = stored value * RescaleSlope + RescaleIntercept (per slice). Names: PANCREAS_0001 -> data0001.
    """
    for ref in list_nih_pancreas(root, hidden_dir):
        yield ref.load()


# ------------------------------------------------------------------------------------------ Left Atrium

def _la_training_dir(root: Path) -> Path:
    if (root / LA_TRAINING_FOLDER).is_dir():
        return root / LA_TRAINING_FOLDER
    if root.is_dir() and any((p / "mri_norm2.h5").is_file() or (p / "lgemri.nrrd").is_file()
                             for p in root.iterdir() if p.is_dir()):
        return root
    raise VersemiError(f"{root}: no '{LA_TRAINING_FOLDER}' folder and no <ID>/mri_norm2.h5 or "
                       "<ID>/lgemri.nrrd cases")


def list_la(root, hidden_dir=None) -> list[CaseRef]:
    """Cases of the Left Atrium data: UA-MT ``<ID>/mri_norm2.h5`` (preferred when both exist) or the
    challenge's ``<ID>/lgemri.nrrd`` + ``<ID>/laendo.nrrd``."""
    tdir = _la_training_dir(Path(root))
    hidden_dir = Path(hidden_dir) if hidden_dir else None
    refs = []
    for case in sorted(p for p in tdir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        h5 = case / "mri_norm2.h5"
        nrrd_img = case / "lgemri.nrrd"
        if h5.is_file():
            refs.append(CaseRef(case.name, "la", h5, "ua-mt-h5", True, _la_h5_loader(h5, case.name, hidden_dir)))
        elif nrrd_img.is_file():
            refs.append(CaseRef(case.name, "la", nrrd_img, "nrrd", True,
                                _la_nrrd_loader(nrrd_img, case / "laendo.nrrd", case.name, hidden_dir)))
    if not refs:
        raise VersemiError(f"{tdir}: no LA cases (<ID>/mri_norm2.h5 or <ID>/lgemri.nrrd) found")
    return _check_unique(refs, tdir)


def _la_h5_loader(path: Path, name: str, hidden_dir):
    def load() -> RawCase:
        image, label, _ = _read_h5_pair(path)
        image = _image(image, path)
        label = _label(label, path, image.shape, path)
        hidden = _hidden_for(hidden_dir, name, image.shape, reorient=False)
        return RawCase(name, "la", image, label, LA_SPACING, None, path, hidden, preprocessed=True, fmt="ua-mt-h5",
                       label_source=path)

    return load


def _nrrd_read(path: Path, what: str):
    import nrrd

    if not path.is_file():
        raise VersemiError(f"{path}: {what} file is missing" + (" (missing label)" if what == "label" else ""))
    with _reading(path, f"{what} (NRRD)"):
        data, header = nrrd.read(str(path))
    return data, header


def _nrrd_geometry(header, path: Path):
    dirs = header.get("space directions")
    if dirs is not None:
        rows = [np.asarray(d, dtype=np.float64) for d in dirs if d is not None and not
                (isinstance(d, float) and np.isnan(d))]
        rows = [r for r in rows if r.ndim == 1 and np.isfinite(r).all()]
        if len(rows) >= 3:
            m = np.stack(rows[:3], axis=1)
            aff = np.eye(4)
            aff[:3, :3] = m
            origin = header.get("space origin")
            if origin is not None:
                aff[:3, 3] = np.asarray(origin, dtype=np.float64)
            space = str(header.get("space", "")).lower()
            if space in ("left-posterior-superior", "lps"):
                aff = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff
            return _spacing(np.linalg.norm(m, axis=0), path), aff
    sp = header.get("spacings")
    if sp is not None:
        return _spacing(sp, path), None
    return LA_SPACING, None


def _la_nrrd_loader(img_path: Path, lab_path: Path, name: str, hidden_dir):
    def load() -> RawCase:
        data, header = _nrrd_read(img_path, "image")
        image = _image(data, img_path)
        spacing, affine = _nrrd_geometry(header, img_path)
        ldata, _ = _nrrd_read(lab_path, "label")
        label = _label(ldata, lab_path, image.shape, img_path, value_map={255: 1})
        hidden = _hidden_for(hidden_dir, name, image.shape, reorient=False)
        return RawCase(name, "la", image, label, spacing, affine, img_path, hidden, fmt="nrrd",
                       label_source=lab_path)

    return load


def read_la(root, hidden_dir=None) -> Iterator[RawCase]:
    """Read Left Atrium cases (UA-MT h5 or challenge NRRD), sorted by case id.

    UA-MT h5 files carry no voxel size: 0.625 mm isotropic (the challenge's) is assumed. NRRD labels
    (laendo.nrrd) store the atrium as 255; it becomes 1.
    """
    for ref in list_la(root, hidden_dir):
        yield ref.load()


def read_la_lists(root) -> dict[str, list[str]]:
    """The ``train.list`` / ``test.list`` case ids beside the LA training folder (empty when absent)."""
    root = Path(root)
    base = root if (root / LA_TRAINING_FOLDER).is_dir() else root.parent
    out = {}
    for key in ("train", "test"):
        p = base / f"{key}.list"
        out[key] = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()] if p.is_file() else []
    return out


# ------------------------------------------------------------------------------------ authors' flat layout

def list_authors_flat(folder, dataset: str | None = None, hidden_dir=None) -> list[CaseRef]:
    """Cases of a folder of ``<name>.h5`` files in the authors' layout; the task comes from the name
    (``data*`` pancreas, ``spleen*``, ``lung*``, anything else LA). With ``dataset`` only its cases are
    listed; a folder without any is an error ('unknown task')."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VersemiError(f"{folder}: folder does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".h5", ".hdf5")
                   and not p.name.startswith("."))
    if not files:
        raise VersemiError(f"{folder}: no <name>.h5 files (authors' flat layout) found")
    refs = []
    for p in files:
        name = _strip_ext(p.name)
        ds = TASK_TO_DATASET[task_from_case_name(name)]
        if dataset is not None and ds != dataset:
            continue
        refs.append(CaseRef(name, ds, p, "authors-h5", True, _flat_loader(p, name, ds, hidden_dir)))
    if dataset is not None and not refs:
        found = sorted({TASK_TO_DATASET[task_from_case_name(_strip_ext(p.name))] for p in files})
        raise VersemiError(f"{folder}: unknown task: no case name maps to dataset {dataset!r} "
                           f"(task {DATASETS[dataset].task_id}); the names map to {', '.join(found)}")
    return _check_unique(refs, folder)


def _flat_loader(path: Path, name: str, dataset: str, hidden_dir):
    def load() -> RawCase:
        image, label, attrs = _read_h5_pair(path)
        image = _image(image, path)
        label = _label(label, path, image.shape, path)
        sp = attrs.get("spacing")
        spacing = _spacing(sp, path) if sp is not None else FLAT_DEFAULT_SPACING[dataset]
        hidden = None
        import h5py

        with _reading(path, "HDF5 file"), h5py.File(path, "r") as f:
            if "hidden_label" in f:
                hidden = _hidden(f["hidden_label"][()], path, image.shape)
        if hidden is None:
            hidden = _hidden_for(Path(hidden_dir) if hidden_dir else None, name, image.shape, reorient=False)
        return RawCase(name, dataset, image, label, spacing, None, path, hidden, preprocessed=True,
                       fmt="authors-h5", label_source=path)

    return load


def read_authors_flat(folder, dataset: str | None = None, hidden_dir=None) -> Iterator[RawCase]:
    """Read the authors' preprocessed flat layout (``<name>.h5`` with image/label), sorted by name."""
    for ref in list_authors_flat(folder, dataset, hidden_dir):
        yield ref.load()


# ---------------------------------------------------------------------------------------- discovery

def _walk_dirs(src: Path, depth: int = _SEARCH_DEPTH) -> Iterator[Path]:
    """Directories under ``src`` (``src`` first), breadth first, sorted, at most ``depth`` levels deep."""
    level = [src]
    for _ in range(depth + 1):
        nxt = []
        for d in level:
            yield d
            try:
                subs = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")
                              and p.name != "hidden_labels")
            except OSError:
                subs = []
            nxt += subs
        level = nxt


def _is_root(d: Path, dataset: str) -> bool:
    if dataset == "pancreas":
        return d.name == PANCREAS_FOLDER or bool(_pancreas_entries(d))
    if dataset == "la":
        if (d / LA_TRAINING_FOLDER).is_dir():
            return True
        if d.name == LA_TRAINING_FOLDER:
            return True
        try:
            return any((p / "lgemri.nrrd").is_file() or (p / "mri_norm2.h5").is_file()
                       for p in d.iterdir() if p.is_dir())
        except OSError:
            return False
    folder = MSD_FOLDERS[dataset]
    if d.name == folder:
        return True
    js = d / "dataset.json"
    if js.is_file():
        with contextlib.suppress(Exception):
            name = str(json.loads(js.read_text()).get("name", "")).lower()
            return dataset in name
    return False


def _flat_candidates(d: Path) -> list[Path]:
    try:
        return [p for p in d.iterdir() if p.is_file() and p.suffix.lower() in (".h5", ".hdf5")]
    except OSError:
        return []


def find_dataset_root(src, dataset: str) -> Path:
    """The folder under ``src`` (``src`` itself included, searched 3 levels deep) holding ``dataset``.

    Raw layouts are preferred; otherwise a folder of ``<name>.h5`` files (the authors' flat layout) whose
    names map to ``dataset``. For LA the folder holding '2018LA_Seg_Training Set' is returned, so
    ``--src /data`` and ``--src /data/LA`` both work.
    """
    get_dataset(dataset)
    src = Path(src)
    if not src.is_dir():
        raise VersemiError(f"{src}: source folder does not exist")
    dirs = list(_walk_dirs(src))
    for d in dirs:
        if _is_root(d, dataset):
            if dataset == "la" and d.name == LA_TRAINING_FOLDER:
                return d.parent
            return d
    wrong_task = None
    for d in dirs:
        files = _flat_candidates(d)
        if files:
            names = [_strip_ext(p.name) for p in files]
            if any(TASK_TO_DATASET[task_from_case_name(n)] == dataset for n in names):
                return d
            wrong_task = wrong_task or d
    if wrong_task is not None:
        list_authors_flat(wrong_task, dataset)  # raises the 'unknown task' error naming the folder
    hints = {"pancreas": f"{PANCREAS_FOLDER}/PANCREAS_XXXX (DICOM or NIfTI)",
             "la": f"'{LA_TRAINING_FOLDER}/<ID>/mri_norm2.h5' or <ID>/lgemri.nrrd",
             "spleen": "Task09_Spleen/dataset.json", "lung": "Task06_Lung/dataset.json"}
    raise VersemiError(f"{src}: no {DATASETS[dataset].title} data found (looked for {hints[dataset]} or a "
                       "folder of authors' <name>.h5 files)")


def hidden_dir_for(src, dataset: str) -> Path | None:
    d = Path(src) / "hidden_labels" / dataset
    return d if d.is_dir() else None


def list_raw_cases(src, dataset: str) -> list[CaseRef]:
    """All cases of ``dataset`` under ``src`` (not read yet), sorted by name."""
    root = find_dataset_root(src, dataset)
    hidden = hidden_dir_for(src, dataset)
    if dataset == "pancreas" and _is_root(root, "pancreas"):
        return list_nih_pancreas(root, hidden)
    if dataset == "la" and _is_root(root, "la"):
        return list_la(root, hidden)
    if dataset in MSD_FOLDERS and _is_root(root, dataset):
        return list_msd(root, dataset, hidden)
    return list_authors_flat(root, dataset, hidden)


def iter_raw_cases(src, dataset: str) -> Iterator[RawCase]:
    """Read every case of ``dataset`` under ``src``, one at a time, sorted by name."""
    for ref in list_raw_cases(src, dataset):
        yield ref.load()


def relative_source(path: Path, src) -> str:
    """``path`` relative to ``src`` (posix; symbolic links are not followed), or the absolute path when it
    lies outside ``src``."""
    path, src = os.path.abspath(path), os.path.abspath(src)
    rel = os.path.relpath(path, src)
    return Path(path).as_posix() if rel.startswith("..") else Path(rel).as_posix()
