"""Embedded default data: procedural 3D phantoms written in each dataset's real raw format.

The real datasets cannot be shipped, so ``generate`` writes look-alikes in exactly the layouts
that the real downloads have, so the readers and ``prepare`` run on them unchanged::

    <out>/Pancreas-CT/PANCREAS_0001/<study>/<series>/1-001.dcm ...   DICOM CT series (NIH Pancreas-CT)
    <out>/TCIA_pancreas_labels-02-05-2017/label0001.nii.gz          pancreas label on the DICOM grid
    <out>/Task09_Spleen/{dataset.json,imagesTr,labelsTr,imagesTs}     MSD layout (spleen_2.nii.gz ...)
    <out>/Task06_Lung/{dataset.json,imagesTr,labelsTr,imagesTs}       MSD layout (lung_001.nii.gz ...)
    <out>/LA/2018LA_Seg_Training Set/<ID>/mri_norm2.h5, LA/train.list, LA/test.list   (UA-MT layout)
    <out>/hidden_labels/<dataset>/<case>.nii.gz, hidden_labels/legend.json
    <out>/PHANTOMS.json                                               provenance

Geometry conventions (the contract with the readers):

* Volumes are generated as arrays indexed (x, y, z) = (DICOM column, DICOM row, slice), the
  patient axes being LPS (x to the patient's left, y posterior, z superior), z ascending.
* DICOM: one file per slice, ``InstanceNumber`` 1 is the most superior slice (highest z), as in
  many clinical exports, so a reader must sort by ``ImagePositionPatient`` (not by file name) to
  match the label.  Stored pixels are uint16 = HU + 1024 (``RescaleIntercept`` -1024, slope 1).
  ``PixelSpacing`` = (row spacing, column spacing) = (sy, sx).
* NIfTI (pancreas labels, MSD images/labels, hidden labels of CT cases): the (x, y, z) array with
  the RAS affine of that geometry, ``diag(-sx, -sy, sz)`` and origin ``(-ox, -oy, oz)`` where
  ``(ox, oy, oz)`` is the LPS position of voxel (0, 0, 0); qform and sform code 1.  For the
  pancreas this is exactly the geometry of the sorted DICOM series.
* LA: the h5 arrays are (x, y, z) like UA-MT's, image float32 z-scored over the whole volume
  *before* the x/y crop around the atrium (as UA-MT's script does), label uint8 0/1; the h5
  carries no spacing (as the real files), its hidden label NIfTI has affine ``diag(sx, sy, sz)``.
* Hidden labels hold every structure (codes :data:`STRUCTURES`); the exposed label of each
  dataset is exactly ``hidden == code`` of its target (pancreas, spleen, tumour, left_atrium).

Every case is drawn from its own generator seeded by ``(seed, task id, crc32(case name))``, so
a case does not depend on the others nor on the profile's case list; the same seed gives
byte-identical files (fixed DICOM UIDs derived from the seed, no timestamps, gzip mtime 0).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from versemi.data import anatomy
from versemi.data.anatomy import STRUCTURES
from versemi.data.registry import DATASETS, authors_split
from versemi.utils import VersemiError, atomic_write_text

__all__ = ["STRUCTURES", "PROFILES", "generate", "case_ids", "dataset_roots"]

GENERATOR = "versemi.data.phantoms"
VERSION = "1.0"

TARGET = {"pancreas": "pancreas", "spleen": "spleen", "lung": "tumour", "la": "left_atrium"}


@dataclass(frozen=True)
class Profile:
    """Case counts and raw volume sizes of one phantom profile.

    ``n_train`` / ``n_test``: how many of the authors' train / test names (None: all of them; a number
    takes half labeled, half unlabeled training names);
    ``n_extra``: unlabeled imagesTs cases of the MSD sets; CT: in-plane matrix, slice count,
    field of view (mm) and slice spacing (mm) ranges; LA: the uncropped matrix, spacings,
    random crop margin (voxels per side) and minimum cropped width (voxels)."""

    n_train: int | None
    n_test: int | None
    n_extra: int
    ct_xy: tuple[int, int]
    ct_z: tuple[int, int]
    ct_fov: tuple[float, float]
    ct_dz: tuple[float, float]
    la_xy: tuple[int, int]
    la_z: tuple[int, int]
    la_dxy: tuple[float, float]
    la_dz: tuple[float, float]
    la_margin: tuple[int, int]
    la_min_w: int


PROFILES: dict[str, Profile] = {
    "smoke": Profile(5, 2, 1, (40, 44), (28, 32), (300.0, 340.0), (6.0, 8.0),
                     (52, 56), (22, 24), (3.4, 3.8), (4.0, 4.5), (4, 7), 28),
    "demo": Profile(None, None, 2, (64, 80), (44, 64), (320.0, 400.0), (3.5, 5.0),
                    (88, 100), (40, 48), (1.9, 2.3), (2.0, 2.6), (8, 14), 48),
}

MIN_TARGET_VOXELS = 8


def _profile(profile: str) -> Profile:
    try:
        return PROFILES[profile]
    except KeyError:
        raise VersemiError(f"unknown phantom profile {profile!r}; expected one of {', '.join(PROFILES)}") from None


def _dataset(name: str) -> str:
    if name not in DATASETS:
        raise VersemiError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return name


# ----------------------------------------------------------------------------------------------
# case lists
# ----------------------------------------------------------------------------------------------

def _extra_names(dataset: str, n: int) -> list[str]:
    """Unlabeled MSD imagesTs cases: the smallest case numbers not used by the authors' lists."""
    if dataset not in ("spleen", "lung") or n <= 0:
        return []
    split = authors_split(dataset)
    used = {int(c.split("_")[1]) for v in split.values() for c in v}
    width = 2 if dataset == "spleen" else 3
    out, k = [], 1
    while len(out) < n:
        if k not in used:
            out.append(f"{dataset}_{k:0{width}d}")
        k += 1
    return out


def _split_names(dataset: str, profile: str) -> tuple[list[str], list[str], list[str]]:
    """(train, test, extra unlabeled) case names of a profile, in the authors' naming."""
    p = _profile(profile)
    split = authors_split(_dataset(dataset))
    train = list(split["labeled_20"]) + list(split["unlabeled_20"])
    test = list(split["test"])
    if p.n_train is not None:
        # a small profile keeps both kinds of training case: half labeled (first of the authors' labeled
        # list) and half unlabeled (first of their unlabeled list at 20%, which is unlabeled at 10% too)
        n_lab = p.n_train // 2
        train = list(split["labeled_10"])[:n_lab] + list(split["unlabeled_20"])[: p.n_train - n_lab]
    if p.n_test is not None:
        test = test[: p.n_test]
    return train, test, _extra_names(dataset, p.n_extra)


def case_ids(dataset: str, profile: str) -> list[str]:
    """Case names generated for ``dataset`` under ``profile``: the authors' train names (labeled_20
    then unlabeled_20 order), their test names, then (spleen, lung only) the unlabeled imagesTs
    cases, named like the authors' cases (e.g. 'spleen_01', 'lung_002')."""
    train, test, extra = _split_names(dataset, profile)
    return train + test + extra


def dataset_roots(dataset: str) -> list[str]:
    """Top-level folders under ``out`` that hold a dataset's raw phantom files."""
    return {"pancreas": ["Pancreas-CT", "TCIA_pancreas_labels-02-05-2017"], "spleen": ["Task09_Spleen"],
            "lung": ["Task06_Lung"], "la": ["LA"]}[_dataset(dataset)] + [f"hidden_labels/{dataset}"]


def _msd_file(dataset: str, name: str) -> str:
    """MSD file name of an authors' case name: spleen ids are not zero padded, lung ids are (3)."""
    num = int(name.split("_")[1])
    return f"spleen_{num}.nii.gz" if dataset == "spleen" else f"lung_{num:03d}.nii.gz"


# ----------------------------------------------------------------------------------------------
# one case
# ----------------------------------------------------------------------------------------------

@dataclass
class _Case:
    name: str
    labels: np.ndarray            # full hidden label map on the raw grid (LA: cropped grid)
    image: np.ndarray             # HU (CT, float32) or z-scored MRI (LA, cropped)
    spacing: tuple[float, float, float]
    origin_lps: tuple[float, float, float] = (0.0, 0.0, 0.0)
    info: dict = field(default_factory=dict)
    full_image: np.ndarray | None = None   # LA only: z-scored volume before the crop
    crop: tuple[slice, slice] | None = None


def _case_rng(seed: int, dataset: str, name: str, attempt: int) -> np.random.Generator:
    key = [int(seed), DATASETS[dataset].task_id, zlib.crc32(name.encode()), attempt]
    return np.random.default_rng(np.random.SeedSequence(key))


def _r(v: float, nd: int = 4) -> float:
    """Round so that the value survives a DICOM decimal string unchanged."""
    return float(f"{v:.{nd}f}")


def _build_ct(dataset: str, name: str, p: Profile, rng) -> _Case:
    n = int(rng.integers(p.ct_xy[0], p.ct_xy[1] + 1))
    nz = int(rng.integers(p.ct_z[0], p.ct_z[1] + 1))
    sxy = _r(rng.uniform(*p.ct_fov) / n)
    sz = _r(rng.uniform(*p.ct_dz), 2)
    builder = anatomy.thorax_ct if dataset == "lung" else anatomy.abdomen_ct
    ph = builder(rng, (n, n, nz), (sxy, sxy, sz))
    ox = _r(-(n - 1) / 2 * sxy + rng.uniform(-5, 5), 3)
    oy = _r(-(n - 1) / 2 * sxy + rng.uniform(-30, 10), 3)
    oz = _r(rng.uniform(-350, -50), 3)
    return _Case(name, ph.labels, ph.image, (sxy, sxy, sz), (ox, oy, oz), ph.info)


def _build_la(name: str, p: Profile, rng) -> _Case:
    n = int(rng.integers(p.la_xy[0], p.la_xy[1] + 1))
    nz = int(rng.integers(p.la_z[0], p.la_z[1] + 1))
    sxy = _r(rng.uniform(*p.la_dxy))
    sz = _r(rng.uniform(*p.la_dz))
    ph = anatomy.heart_mri(rng, (n, n, nz), (sxy, sxy, sz))
    img = ph.image.astype(np.float64)
    full = ((img - img.mean()) / img.std()).astype(np.float32)   # z-score before the crop (UA-MT)
    la = ph.labels == STRUCTURES["left_atrium"]
    crop = []
    for ax in (0, 1):
        idx = np.flatnonzero(la.any(axis=tuple(a for a in range(3) if a != ax)))
        lo, hi = int(idx[0]), int(idx[-1])
        pad = (max(p.la_min_w - (hi - lo + 1) - 2 * p.la_margin[0], 0) + 1) // 2
        lo = max(lo - int(rng.integers(p.la_margin[0], p.la_margin[1] + 1)) - pad, 0)
        hi = min(hi + 1 + int(rng.integers(p.la_margin[0], p.la_margin[1] + 1)) + pad, la.shape[ax])
        crop.append(slice(lo, hi))
    crop = tuple(crop)
    return _Case(name, ph.labels[crop], full[crop], (sxy, sxy, sz), (0.0, 0.0, 0.0), ph.info,
                 full_image=full, crop=crop)


def _valid(dataset: str, case: _Case) -> bool:
    counts = np.bincount(case.labels.ravel(), minlength=anatomy.N_CODES)
    need = [TARGET[dataset]] + (["pancreas", "spleen"] if dataset in ("pancreas", "spleen") else [])
    return all(counts[STRUCTURES[k]] >= MIN_TARGET_VOXELS for k in need)


def _build_case(dataset: str, name: str, profile: str, seed: int) -> _Case:
    """Generate one case (deterministic in (seed, dataset, name)); a draw whose target or required
    organs come out smaller than MIN_TARGET_VOXELS voxels is redrawn with the next attempt number."""
    p = _profile(profile)
    for attempt in range(20):
        rng = _case_rng(seed, dataset, name, attempt)
        case = _build_la(name, p, rng) if dataset == "la" else _build_ct(dataset, name, p, rng)
        if _valid(dataset, case):
            case.info["attempt"] = attempt
            return case
    raise RuntimeError(f"phantom {dataset}/{name}: no valid draw in 20 attempts")  # a generator bug


# ----------------------------------------------------------------------------------------------
# writers
# ----------------------------------------------------------------------------------------------

def _ras_affine(spacing, origin_lps) -> np.ndarray:
    sx, sy, sz = spacing
    ox, oy, oz = origin_lps
    aff = np.diag([-sx, -sy, sz, 1.0])
    aff[:3, 3] = [-ox, -oy, oz]
    return aff


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
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


def _write_dicom_series(root: Path, case: _Case, seed: int, rng) -> None:
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
        z = _r(oz + k * sz, 3)
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


def _msd_json(dataset: str, train_cases: list[str], test_cases: list[str]) -> dict:
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
        "training": [{"image": f"./imagesTr/{_msd_file(dataset, c)}", "label": f"./labelsTr/{_msd_file(dataset, c)}"}
                     for c in train_cases],
        "test": [f"./imagesTs/{_msd_file(dataset, c)}" for c in test_cases],
    }


def _write_case(stage: Path, dataset: str, case: _Case, seed: int, labeled: bool) -> None:
    target = (case.labels == STRUCTURES[TARGET[dataset]]).astype(np.uint8)
    hidden = stage / "hidden_labels" / dataset / f"{case.name}.nii.gz"
    if dataset == "la":
        _write_h5(stage / "LA" / "2018LA_Seg_Training Set" / case.name / "mri_norm2.h5", case.image, target)
        _save_nifti(hidden, case.labels, np.diag([*case.spacing, 1.0]))
        return
    affine = _ras_affine(case.spacing, case.origin_lps)
    _save_nifti(hidden, case.labels, affine)
    if dataset == "pancreas":
        num = int(case.name[4:])
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1, zlib.crc32(case.name.encode()), 999]))
        _write_dicom_series(stage / "Pancreas-CT", case, seed, rng)
        _save_nifti(stage / "TCIA_pancreas_labels-02-05-2017" / f"label{num:04d}.nii.gz", target, affine)
        return
    task = "Task09_Spleen" if dataset == "spleen" else "Task06_Lung"
    fname = _msd_file(dataset, case.name)
    _save_nifti(stage / task / ("imagesTr" if labeled else "imagesTs") / fname, _hu_int16(case.image), affine)
    if labeled:
        _save_nifti(stage / task / "labelsTr" / fname, target, affine)


# ----------------------------------------------------------------------------------------------
# generate
# ----------------------------------------------------------------------------------------------

def _read_provenance(out: Path) -> dict:
    path = out / "PHANTOMS.json"
    if not path.is_file():
        return {}
    try:
        prov = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise VersemiError(f"{path}: unreadable phantom provenance file ({e})") from None
    if not isinstance(prov, dict) or prov.get("generator") != GENERATOR:
        raise VersemiError(f"{path}: not written by {GENERATOR}; refusing to write phantoms into {out}")
    return prov


def _write_provenance(out: Path, prov: dict) -> None:
    ds = prov["datasets"]
    profiles = {d.get("profile") for d in ds.values()}
    seeds = {d.get("seed") for d in ds.values()}
    prov["profile"] = profiles.pop() if len(profiles) == 1 else "mixed"
    prov["seed"] = seeds.pop() if len(seeds) == 1 else "mixed"
    prov["datasets"] = {k: ds[k] for k in sorted(ds)}
    atomic_write_text(out / "PHANTOMS.json", json.dumps(prov, indent=1, sort_keys=False) + "\n")


def _range(values) -> list:
    arr = np.asarray(values, dtype=float)
    return [arr.min(axis=0).round(4).tolist(), arr.max(axis=0).round(4).tolist()]


def _generate_dataset(out: Path, dataset: str, profile: str, seed: int, prov: dict) -> dict:
    train, test, extra = _split_names(dataset, profile)
    labeled = train + test
    stage = out / f".staging-{dataset}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    cases_info = {}
    try:
        for name in tqdm(labeled + extra, desc=f"phantoms {dataset}", leave=False, disable=None):
            case = _build_case(dataset, name, profile, seed)
            _write_case(stage, dataset, case, seed, labeled=name not in extra)
            cases_info[name] = {"shape": list(case.labels.shape), "spacing": list(case.spacing),
                                "labeled": name not in extra,
                                "target_voxels": int((case.labels == STRUCTURES[TARGET[dataset]]).sum()),
                                **case.info}
        if dataset in ("spleen", "lung"):
            task = "Task09_Spleen" if dataset == "spleen" else "Task06_Lung"
            (stage / task / "imagesTs").mkdir(parents=True, exist_ok=True)
            (stage / task / "dataset.json").write_text(json.dumps(_msd_json(dataset, labeled, extra), indent=4) + "\n")
        if dataset == "la":
            (stage / "LA" / "train.list").write_text("".join(f"{c}\n" for c in train))
            (stage / "LA" / "test.list").write_text("".join(f"{c}\n" for c in test))
        # mark the dataset as ours before its folders appear, then swap the folders in
        entry = {"profile": profile, "seed": int(seed), "complete": False}
        prov["datasets"][dataset] = entry
        _write_provenance(out, prov)
        for rel in dataset_roots(dataset):
            dst, src = out / rel, stage / rel
            old = out / f".old-{dataset}-{rel.replace('/', '_')}"
            if old.exists():
                shutil.rmtree(old)
            if dst.exists():
                os.replace(dst, old)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            if old.exists():
                shutil.rmtree(old)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    shapes = [v["shape"] for v in cases_info.values()]
    spacings = [v["spacing"] for v in cases_info.values()]
    entry.update({
        "complete": True,
        "n_cases": len(cases_info), "n_train": len(train), "n_test": len(test), "n_unlabeled_extra": len(extra),
        "roots": dataset_roots(dataset), "target": TARGET[dataset],
        "shape_range": _range(shapes), "spacing_range_mm": _range(spacings),
        "cases": cases_info,
    })
    _write_provenance(out, prov)
    return {"n_cases": len(cases_info), "root": str(out / dataset_roots(dataset)[0])}


def generate(out, profile: str = "demo", seed: int = 2333,
             datasets=("pancreas", "la", "spleen", "lung")) -> dict:
    """Write the phantom datasets under ``out`` in their real raw layouts (see the module doc).

    Returns ``{dataset: {"n_cases": int, "root": str}}``.  Re-running with the same arguments
    rewrites identical bytes.  Each dataset is built in a staging folder and swapped in, so a
    dataset folder is never seen half-written; folders of a dataset that ``out/PHANTOMS.json``
    does not list as phantoms are never overwritten (a user error is raised instead)."""
    _profile(profile)  # validates the name
    if isinstance(datasets, str):
        datasets = (datasets,)
    datasets = [_dataset(d) for d in datasets]
    if not datasets:
        raise VersemiError("no dataset requested")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise VersemiError(f"phantom seed must be a non-negative integer, got {seed!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VersemiError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    prov = _read_provenance(out) or {"generator": GENERATOR, "version": VERSION, "datasets": {}}
    prov["version"] = VERSION
    prov["legend"] = dict(STRUCTURES)
    prov["geometry"] = ("arrays (x, y, z) = (DICOM column, row, slice), LPS patient axes, z ascending; "
                        "NIfTI affine RAS diag(-sx, -sy, sz); DICOM InstanceNumber 1 = most superior slice; "
                        "LA h5 (x, y, z) cropped in x/y, hidden label affine diag(sx, sy, sz)")
    for d in datasets:
        for rel in dataset_roots(d):
            if (out / rel).exists() and d not in prov["datasets"]:
                raise VersemiError(f"{out / rel}: exists and is not a phantom folder listed in "
                                   f"{out / 'PHANTOMS.json'}; refusing to overwrite it")
    atomic_write_text(out / "hidden_labels" / "legend.json", json.dumps(STRUCTURES, indent=1) + "\n")
    summary = {}
    # one BLAS thread: the float32 LA images are stored exactly, and a threaded BLAS may sum in a
    # different order with another thread count (then the bytes would depend on the machine load)
    with threadpool_limits(limits=1):
        for d in datasets:
            summary[d] = _generate_dataset(out, d, profile, int(seed), prov)
    return summary


def file_digest(root) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative posix path -> hex digest); used to check that
    two generations are byte-identical."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
