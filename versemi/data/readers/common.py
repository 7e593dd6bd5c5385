"""What every raw-data reader shares: the case records and the checks that turn a bad file into one
:class:`~versemi.utils.VersemiError` naming the file and the problem.

Axis order and units of the arrays are described in ``versemi/data/readers/__init__.py``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np

from versemi.data.registry import DATASETS, TASK_TO_DATASET, task_from_case_name
from versemi.utils import VersemiError


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
        """Read and validate the case (a bad file is a VersemiError naming it)."""
        return self._loader()


@contextlib.contextmanager
def reading(path: Path, what: str = "file"):
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


def as_volume(arr, path: Path, what: str) -> np.ndarray:
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


def check_image(arr, path: Path) -> np.ndarray:
    """``arr`` as a float32 3-D volume; NaN/inf voxels are an error naming ``path``."""
    arr = as_volume(arr, path, "image")
    out = arr.astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        n = int((~np.isfinite(out)).sum())
        raise VersemiError(f"{path}: image has {n} NaN/inf voxels")
    return out


def check_label(arr, path: Path, image_shape, image_path: Path, value_map: dict | None = None,
                require_foreground: bool = True) -> np.ndarray:
    """``arr`` as a uint8 0/1 volume of ``image_shape`` (after mapping values by ``value_map``, e.g. {255: 1});
    a wrong shape, non-binary values or (with ``require_foreground``) an empty label are errors."""
    arr = as_volume(arr, path, "label")
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


def check_hidden(arr, path: Path, image_shape) -> np.ndarray:
    """``arr`` as a uint8 hidden label map (integer codes 0..255) of ``image_shape``."""
    arr = as_volume(arr, path, "hidden label")
    if tuple(arr.shape) != tuple(image_shape):
        raise VersemiError(f"{path}: hidden label shape {tuple(arr.shape)} does not match image shape "
                           f"{tuple(image_shape)}")
    if arr.dtype.kind == "f" and (not np.isfinite(arr).all() or (arr != np.round(arr)).any()):
        raise VersemiError(f"{path}: hidden label has non-integer values")
    if arr.min() < 0 or arr.max() > 255:
        raise VersemiError(f"{path}: hidden label values outside 0..255")
    return arr.astype(np.uint8)


def check_spacing(zooms, path: Path) -> tuple[float, float, float]:
    """The first three voxel sizes (mm) of ``zooms``, each finite and positive."""
    sp = tuple(float(z) for z in list(zooms)[:3])
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise VersemiError(f"{path}: invalid voxel spacing {sp}")
    return sp


def nifti_canonical(path: Path, what: str):
    """(array, spacing, affine) of a NIfTI file reoriented to the closest canonical (RAS+) orientation."""
    if not path.is_file():
        raise VersemiError(f"{path}: {what} file is missing")
    with reading(path, f"{what} (NIfTI)"):
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
    return arr, check_spacing(zooms, path), affine


def read_h5_pair(path: Path, image_key="image", label_key="label", need_label=True):
    """(image, label or None, file attributes) of an HDF5 case file, dtypes checked."""
    if not path.is_file():
        raise VersemiError(f"{path}: file is missing")
    with reading(path, "HDF5 file"), h5py.File(path, "r") as f:
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


def read_h5_case(path: Path):
    """(image float32, label uint8 0/1, file attributes) of a preprocessed HDF5 case (UA-MT or the authors'
    flat layout), both volumes checked."""
    image, label, attrs = read_h5_pair(path)
    image = check_image(image, path)
    return image, check_label(label, path, image.shape, path), attrs


def hidden_for(hidden_dir: Path | None, name: str, image_shape, reorient: bool):
    """Hidden complete label map for case ``name`` if ``hidden_dir/<name>.nii.gz`` exists."""
    if hidden_dir is None:
        return None
    for ext in (".nii.gz", ".nii"):
        p = hidden_dir / f"{name}{ext}"
        if p.is_file():
            if reorient:
                arr, _, _ = nifti_canonical(p, "hidden label")
            else:
                with reading(p, "hidden label (NIfTI)"):
                    arr = np.asanyarray(nib.load(str(p)).dataobj)
            return check_hidden(arr, p, image_shape)
    return None


def check_unique(refs: list[CaseRef], where: Path) -> list[CaseRef]:
    """``refs`` sorted by name; two cases with one name in ``where`` are an error naming both files."""
    seen: dict[str, CaseRef] = {}
    for r in refs:
        if r.name in seen:
            raise VersemiError(f"{r.source}: duplicate case id {r.name!r} (also {seen[r.name].source}) in {where}")
        seen[r.name] = r
    return sorted(refs, key=lambda r: r.name)


def strip_ext(name: str) -> str:
    """A file name without its volume extension (.nii.gz, .nii, .nrrd, .h5, .hdf5)."""
    for ext in (".nii.gz", ".nii", ".nrrd", ".h5", ".hdf5"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def check_task(name: str, dataset: str, path: Path) -> None:
    """A case name must map to ``dataset``'s task (see :func:`~versemi.data.registry.task_from_case_name`)."""
    task = task_from_case_name(name)
    if task != DATASETS[dataset].task_id:
        raise VersemiError(f"{path}: case name {name!r} maps to task {task} ({TASK_TO_DATASET[task]}), "
                           f"not to dataset {dataset!r} (task {DATASETS[dataset].task_id}): unknown task for "
                           f"this dataset")


def check_same_spacing(lsp, isp, lab: Path, img: Path) -> None:
    """A label's voxel spacing ``lsp`` must match its image's ``isp`` (1% / 1 um tolerance)."""
    if not np.allclose(lsp, isp, rtol=0.01, atol=1e-3):
        raise VersemiError(f"{lab}: label voxel spacing {tuple(round(s, 4) for s in lsp)} does not match the "
                           f"image's {tuple(round(s, 4) for s in isp)} ({img.name})")


def relative_source(path: Path, src) -> str:
    """``path`` relative to ``src`` (posix; symbolic links are not followed), or the absolute path when it
    lies outside ``src``."""
    path, src = os.path.abspath(path), os.path.abspath(src)
    rel = os.path.relpath(path, src)
    return Path(path).as_posix() if rel.startswith("..") else Path(rel).as_posix()
