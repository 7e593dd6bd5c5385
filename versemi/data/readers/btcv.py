"""BTCV (MICCAI 2015 "Multi-Atlas Labeling Beyond the Cranial Vault", abdomen CT): the paper's unseen
spleen test set. It is an *external* test set (``versemi/data/external.py``), not a training dataset, so it
is not in :data:`~versemi.data.registry.DATASETS`.

Layout as distributed (``RawData.zip`` of the challenge's Synapse page)::

    RawData/Training/img/img0001.nii.gz     CT volume (HU)
    RawData/Training/label/label0001.nii.gz the 13-organ label map of that volume (codes :data:`BTCV_CODES`)
    RawData/Testing/img/img0061.nii.gz      unlabeled test scans (not read: they have no labels)

:func:`find_btcv_root` accepts the folder holding ``img/`` and ``label/`` itself, or any folder above it
(``RawData``, ``BTCV``, ... searched 4 levels deep, ``Training`` preferred). Case ``img0007`` is named
``btcv_0007``. Image and label are reoriented to the closest canonical (RAS+) orientation like every other
CT reader (``versemi/data/readers/__init__.py``).

The exposed label of a case is the spleen, ``organ map == 1`` (task 3, the spleen prompt). The hidden label
map is the phantom's complete map when ``hidden_labels/btcv/<case>.nii.gz`` exists (phantoms only; codes
:data:`~versemi.data.registry.STRUCTURES`), else the case's own 13-organ map with the legend
:data:`BTCV_LEGEND` (so on real scans the prompts of the organs BTCV labels, e.g. the pancreas, have a
known answer too).

Checks (each a :class:`~versemi.utils.VersemiError` naming the file): a missing label for an image, a label
whose shape, voxel spacing or voxel-to-world affine differs from its image's, non-integer or out-of-range
(outside 0..13) label values, no spleen voxel, an empty ``img/`` folder, unreadable files.
:func:`orphan_labels` lists labels without an image (reported by ``verify_external``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from versemi.data.registry import STRUCTURES
from versemi.utils import VersemiError

from .common import (
    CaseRef,
    RawCase,
    as_volume,
    check_image,
    check_same_spacing,
    check_unique,
    hidden_for,
    nifti_canonical,
)

#: The 13 organ codes of the BTCV label maps (0 is background), named like
#: :data:`~versemi.data.registry.STRUCTURES` where the phantoms have the organ.
BTCV_CODES: dict[str, int] = {
    "spleen": 1, "kidney_right": 2, "kidney_left": 3, "gallbladder": 4, "esophagus": 5, "liver": 6,
    "stomach": 7, "aorta": 8, "ivc": 9, "portal_splenic_vein": 10, "pancreas": 11, "adrenal_right": 12,
    "adrenal_left": 13,
}
BTCV_LEGEND: dict[str, int] = {"background": 0, **BTCV_CODES}
BTCV_MAX_CODE = max(BTCV_CODES.values())
SPLEEN_CODE = BTCV_CODES["spleen"]
BTCV_TRAINING_IDS: tuple[int, ...] = tuple(range(1, 11)) + tuple(range(21, 41))   # the 30 labeled scans

_IMG = re.compile(r"img(\d+)\.nii(\.gz)?")
_LAB = re.compile(r"label(\d+)\.nii(\.gz)?")
_SEARCH_DEPTH = 4


@dataclass
class BtcvCase(RawCase):
    """A BTCV :class:`~versemi.data.readers.common.RawCase`: ``label`` the spleen (0/1), ``organs`` the
    13-organ map (uint8 codes :data:`BTCV_CODES`), ``legend`` the {structure: code} legend of ``hidden``."""

    organs: np.ndarray | None = None
    legend: dict | None = None


def btcv_case_name(num: int) -> str:
    """img0007 -> 'btcv_0007'."""
    return f"btcv_{int(num):04d}"


def btcv_files(num: int) -> tuple[str, str]:
    """('img0007.nii.gz', 'label0007.nii.gz'): the file names of scan ``num``."""
    return f"img{int(num):04d}.nii.gz", f"label{int(num):04d}.nii.gz"


def _images(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and _IMG.fullmatch(p.name))
    except OSError:
        return []


def find_btcv_root(src) -> Path:
    """The folder under ``src`` (``src`` included) holding ``img/`` and ``label/``: ``src`` itself,
    ``src/RawData/Training`` or any folder up to 4 levels deep (one named ``Training`` and one whose
    ``img/`` holds images preferred)."""
    src = Path(src)
    if not src.is_dir():
        raise VersemiError(f"{src}: source folder does not exist")
    found, level = [], [src]
    for _ in range(_SEARCH_DEPTH + 1):
        nxt = []
        for d in level:
            if (d / "img").is_dir():
                found.append(d)
            try:
                nxt += sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")
                              and p.name not in ("hidden_labels", "img", "label"))
            except OSError:
                pass
        level = nxt
    if not found:
        raise VersemiError(f"{src}: no BTCV data found (looked for RawData/Training/img/img0001.nii.gz with "
                           "RawData/Training/label/label0001.nii.gz, or a folder holding img/ and label/)")
    return sorted(found, key=lambda d: (not _images(d / "img"), d.name != "Training", len(d.parts)))[0]


def btcv_hidden_dir(src, root: Path) -> Path | None:
    """``hidden_labels/btcv`` in ``root`` or a folder above it up to ``src`` (the phantoms keep theirs in
    the ``BTCV`` folder), else None."""
    src, d = Path(src).resolve(), Path(root).resolve()
    while True:
        if (d / "hidden_labels" / "btcv").is_dir():
            return d / "hidden_labels" / "btcv"
        if d == src or d.parent == d:
            return None
        d = d.parent


def list_btcv(src, hidden_dir=None) -> list[CaseRef]:
    """The labeled BTCV cases under ``src`` (not read yet), sorted by name; ``hidden_dir`` defaults to
    :func:`btcv_hidden_dir`."""
    root = find_btcv_root(src)
    hidden = Path(hidden_dir) if hidden_dir else btcv_hidden_dir(src, root)
    images = _images(root / "img")
    if not images:
        raise VersemiError(f"{root / 'img'}: empty folder: no BTCV images img<NNNN>.nii.gz")
    refs = []
    for img in images:
        num = int(_IMG.fullmatch(img.name).group(1))
        lab = _label_for(root / "label", num, img)
        name = btcv_case_name(num)
        refs.append(CaseRef(name, "btcv", img, "nifti", True, _loader(img, lab, name, hidden)))
    return check_unique(refs, root)


def _label_for(folder: Path, num: int, img: Path) -> Path:
    """The label file of scan ``num`` (same extension as the image preferred; the expected name if none)."""
    ext = ".nii.gz" if img.name.endswith(".gz") else ".nii"
    for e in (ext, ".nii" if ext == ".nii.gz" else ".nii.gz"):
        for digits in (f"{num:04d}", str(num)):
            p = folder / f"label{digits}{e}"
            if p.is_file():
                return p
    return folder / f"label{num:04d}{ext}"


def orphan_labels(src) -> list[str]:
    """Problems (one line each) for label files under the BTCV root of ``src`` that have no image."""
    root = find_btcv_root(src)
    nums = {int(_IMG.fullmatch(p.name).group(1)) for p in _images(root / "img")}
    out = []
    if (root / "label").is_dir():
        for p in sorted((root / "label").iterdir()):
            m = _LAB.fullmatch(p.name)
            if m and int(m.group(1)) not in nums:
                out.append(f"{p}: label without an image (expected {root / 'img' / btcv_files(int(m.group(1)))[0]})")
    return out


def check_organ_map(arr, path: Path, image_shape, image_path: Path) -> np.ndarray:
    """``arr`` as a uint8 BTCV organ map of ``image_shape``: integer codes 0..13, else an error naming
    ``path``."""
    arr = as_volume(arr, path, "label")
    if tuple(arr.shape) != tuple(image_shape):
        raise VersemiError(f"{path}: label shape {tuple(arr.shape)} does not match image shape "
                           f"{tuple(image_shape)} of {image_path.name}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise VersemiError(f"{path}: label has NaN/inf voxels")
        frac = arr[arr != np.round(arr)]
        if frac.size:
            raise VersemiError(f"{path}: label has non-integer values (e.g. {float(frac[0]):g}); expected the "
                               f"BTCV organ codes 0..{BTCV_MAX_CODE}")
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi > BTCV_MAX_CODE:
        bad = np.unique(arr[(arr < 0) | (arr > BTCV_MAX_CODE)])
        raise VersemiError(f"{path}: label values {bad.tolist()[:8]} out of range (BTCV organ codes are "
                           f"0..{BTCV_MAX_CODE})")
    return arr.astype(np.uint8)


def check_same_affine(laff: np.ndarray, iaff: np.ndarray, spacing, lab: Path, img: Path) -> None:
    """The label's voxel-to-world affine must match its image's to 5% of the smallest voxel."""
    diff = float(np.abs(np.asarray(laff) - np.asarray(iaff)).max())
    if not np.isfinite(diff) or diff > 0.05 * min(spacing):
        raise VersemiError(f"{lab}: label affine (voxel -> world) does not match the image's ({img.name}): "
                           f"largest difference {diff:.4g} mm")


def _loader(img: Path, lab: Path, name: str, hidden_dir: Path | None):
    def load() -> BtcvCase:
        arr, spacing, affine = nifti_canonical(img, "image")
        image = check_image(arr, img)
        if not lab.is_file():
            raise VersemiError(f"{lab}: label file is missing for image {img.name} (missing label)")
        larr, lsp, laff = nifti_canonical(lab, "label")
        organs = check_organ_map(larr, lab, image.shape, img)
        check_same_spacing(lsp, spacing, lab, img)
        check_same_affine(laff, affine, spacing, lab, img)
        spleen = (organs == SPLEEN_CODE).astype(np.uint8)
        if not spleen.any():
            raise VersemiError(f"{lab}: no spleen voxels (organ code {SPLEEN_CODE}) in the label map")
        hidden = hidden_for(hidden_dir, name, image.shape, reorient=True)
        legend = dict(STRUCTURES) if hidden is not None else dict(BTCV_LEGEND)
        return BtcvCase(name, "btcv", image, spleen, spacing, affine, img, organs if hidden is None else hidden,
                        fmt="nifti", label_source=lab, organs=organs, legend=legend)

    return load
