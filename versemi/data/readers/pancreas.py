"""NIH Pancreas-CT: DICOM series (or NIfTI images) ``Pancreas-CT/PANCREAS_XXXX`` with the TCIA NIfTI labels
``TCIA_pancreas_labels-*/labelXXXX.nii.gz``; names PANCREAS_0001 -> data0001.

HU = stored value * RescaleSlope + RescaleIntercept (per slice); slices are sorted by their position along
the slice normal, and image and label are reoriented to the closest canonical (RAS+) orientation.
"""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from versemi.utils import VersemiError

from .common import (
    CaseRef,
    RawCase,
    check_image,
    check_label,
    check_same_spacing,
    check_spacing,
    check_unique,
    hidden_for,
    nifti_canonical,
    reading,
    strip_ext,
)

PANCREAS_FOLDER = "Pancreas-CT"
KNOWN_DUPLICATES = {"pancreas": ("data0025", "data0070")}  # NIH #25/#70 duplicate other scans (removed by TCIA)


def _dicom_series(folder: Path):
    """Read the CT series under ``folder``: (HU volume (cols, rows, slices), RAS affine)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".dcm", ""))
    files = [p for p in files if not p.name.startswith(".")]
    if not files:
        raise VersemiError(f"{folder}: no DICOM files found")
    series: dict[str, list] = {}
    for p in files:
        with reading(p, "DICOM file"):
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
        with reading(p, "DICOM pixel data"):
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
    img = nib.as_closest_canonical(nib.Nifti1Image(arr, affine))
    return np.asanyarray(img.dataobj), img.header.get_zooms()[:3], np.asarray(img.affine)


def _pancreas_dir(root: Path) -> Path:
    if root.name == PANCREAS_FOLDER or pancreas_entries(root):
        return root
    if (root / PANCREAS_FOLDER).is_dir():
        return root / PANCREAS_FOLDER
    raise VersemiError(f"{root}: no {PANCREAS_FOLDER}/PANCREAS_XXXX cases found")


def pancreas_entries(folder: Path) -> list[Path]:
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
    for entry in sorted(pancreas_entries(pdir)):
        case_id = strip_ext(entry.name)
        name = f"data{int(case_id.split('_')[-1]):04d}"
        lab = _pancreas_label(case_id, label_dirs)
        expected = label_dirs[0] / f"label{case_id.split('_')[-1]}.nii.gz" if label_dirs else \
            pdir.parent / "TCIA_pancreas_labels-02-05-2017" / f"label{case_id.split('_')[-1]}.nii.gz"
        refs.append(CaseRef(name, "pancreas", entry, "dicom" if entry.is_dir() else "nifti", True,
                            _pancreas_loader(entry, name, lab, expected, hidden_dir)))
    if not refs:
        raise VersemiError(f"{pdir}: no PANCREAS_XXXX cases found")
    return check_unique(refs, pdir)


def _pancreas_loader(entry: Path, name: str, lab: Path | None, expected: Path, hidden_dir):
    def load() -> RawCase:
        if entry.is_dir():
            vol, ras = _dicom_series(entry)
            arr, zooms, affine = _canonical_array(vol, ras)
            spacing = check_spacing(zooms, entry)
            fmt = "dicom"
        else:
            arr, spacing, affine = nifti_canonical(entry, "image")
            fmt = "nifti"
        image = check_image(arr, entry)
        if lab is None:
            raise VersemiError(f"{expected}: label file is missing for {entry.name} (missing label)")
        larr, lsp, _ = nifti_canonical(lab, "label")
        label = check_label(larr, lab, image.shape, entry)
        check_same_spacing(lsp, spacing, lab, entry)
        hidden = hidden_for(hidden_dir, name, image.shape, reorient=True)
        return RawCase(name, "pancreas", image, label, spacing, affine, entry, hidden, fmt=fmt, label_source=lab)

    return load

