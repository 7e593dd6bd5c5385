"""The Left Atrium data: UA-MT's ``<ID>/mri_norm2.h5`` (already z-scored and cropped; no voxel size stored,
the challenge's 0.625 mm assumed) or the challenge's ``<ID>/lgemri.nrrd`` + ``<ID>/laendo.nrrd`` (the atrium
stored as 255 becomes 1); ``train.list`` / ``test.list`` beside the training folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nrrd
import numpy as np

from versemi.utils import VersemiError

from .common import (
    CaseRef,
    RawCase,
    check_image,
    check_label,
    check_spacing,
    check_unique,
    hidden_for,
    read_h5_case,
    reading,
)

LA_SPACING = (0.625, 0.625, 0.625)  # the challenge's voxel size; the UA-MT h5 files store none
LA_TRAINING_FOLDER = "2018LA_Seg_Training Set"


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
    return check_unique(refs, tdir)


def _la_h5_loader(path: Path, name: str, hidden_dir):
    def load() -> RawCase:
        image, label, _ = read_h5_case(path)
        hidden = hidden_for(hidden_dir, name, image.shape, reorient=False)
        return RawCase(name, "la", image, label, LA_SPACING, None, path, hidden, preprocessed=True, fmt="ua-mt-h5",
                       label_source=path)

    return load


def _nrrd_read(path: Path, what: str):
    if not path.is_file():
        raise VersemiError(f"{path}: {what} file is missing" + (" (missing label)" if what == "label" else ""))
    with reading(path, f"{what} (NRRD)"):
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
            return check_spacing(np.linalg.norm(m, axis=0), path), aff
    sp = header.get("spacings")
    if sp is not None:
        return check_spacing(sp, path), None
    return LA_SPACING, None


def _la_nrrd_loader(img_path: Path, lab_path: Path, name: str, hidden_dir):
    def load() -> RawCase:
        data, header = _nrrd_read(img_path, "image")
        image = check_image(data, img_path)
        spacing, affine = _nrrd_geometry(header, img_path)
        ldata, _ = _nrrd_read(lab_path, "label")
        label = check_label(ldata, lab_path, image.shape, img_path, value_map={255: 1})
        hidden = hidden_for(hidden_dir, name, image.shape, reorient=False)
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

