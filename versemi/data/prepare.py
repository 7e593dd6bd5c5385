"""``versemi prepare``: raw datasets -> one HDF5 per case + ``manifest.json`` with the 10% / 20% splits.

Preprocessing per dataset (``PREP_VERSION``; the parameters are also stored in every file and the manifest):

=========  ========  =======================================  ===================  ==========================
dataset    modality  intensity                                 spacing (paper)      crop
=========  ========  =======================================  ===================  ==========================
pancreas   CT        clip HU to [-125, 275], scale to [0, 1]   1 x 1 x 1 mm         label bbox +- 25 mm
                     (CoraNet, used by VerSemi)
spleen     CT        clip HU to [-125, 275], scale to [0, 1]   1 x 1 x 1 mm         label bbox +- 25 mm
                     (abdominal soft-tissue window)
lung       CT        clip HU to [-1000, 400], scale to [0, 1]  1 x 1 x 1 mm         label bbox +- 25 mm
                     (lung window L -300 / W 1400)
la         MRI       z-score over the whole volume             never resampled      UA-MT h5: kept as released;
                     (UA-MT h5 files: already z-scored, kept)                       NRRD: x/y label bbox +- 15
                                                                                    voxels, all slices
=========  ========  =======================================  ===================  ==========================

* The spleen and lung windows and their 1 mm spacing are **this project's choice**: the authors ship only
  the case names for these datasets; their preprocessing is unpublished.
  Soft tissue (-125..275 HU) covers the spleen (~40-60 HU) with its surroundings; the lung window keeps
  parenchyma (~-850 HU) and solid nodules apart.
* Pancreas follows CoraNet's intent (1 mm, HU window, 25-voxel margin at 1 mm, minimum 96^3) but resamples
  with the true slice spacing (CoraNet's script used the in-plane spacing for all three axes).
* Unlabeled CT scans (MSD imagesTs) are cropped to the body (HU > -500) bounding box +- the margin.
* A crop box smaller than the minimum size is first enlarged (centred, inside the volume) so the minimum
  is filled with real context; only a volume smaller than the minimum is padded. (CoraNet pads; at 1 mm
  the pancreas box +- 25 voxels rarely falls below 96, so the two agree on real data.)
* The profile's :class:`~versemi.config.PrepareSpec` (``versemi/config.py``) sets the spacing rule, the
  minimum size, the CT margin and the LA zoom. Profiles ``demo`` / ``smoke`` (phantoms): target spacing = the
  per-axis median spacing of the dataset's cases (nnU-Net's rule; keeps phantom volumes near their native
  size while giving every case of a dataset one spacing), minimum size 32 per axis. ``paper``: the table
  above, minimum size 96; ``la-real``: LA volumes resampled x0.5 (1.25 mm), minimum size 48.
* Resampling: ``scipy.ndimage.zoom`` (order 1 for images, order 0 for labels and hidden labels) after
  cropping in the native grid. Volumes smaller than the minimum size are padded symmetrically with the
  background value (0 for CT after scaling, the volume minimum for MRI).
* Files that are already preprocessed (UA-MT ``mri_norm2.h5``, the authors' flat ``<name>.h5``) are stored
  as they are; a UA-MT image that does not look z-scored (|mean| > 5 or std outside 0.1-10) is z-scored.
* NIH cases #25 and #70 duplicate other scans (TCIA removed them; the authors' lists omit them): they are
  excluded from every split when present and listed under ``excluded``.

Outputs: ``out/<dataset>/<name>.h5`` (image float32, label uint8 if labeled, hidden_label uint8 for
phantoms; attrs task, dataset, spacing, source, preprocessing (JSON), shape [, hidden_legend: JSON
{structure: code}]) and ``out/manifest.json``, written last. A run writes into a staging folder and swaps it in at the end, so a
failure leaves the previous output untouched and no partial files; re-running with the same inputs and
seed gives byte-identical files.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from versemi.config import get_profile
from versemi.data import readers, staging
from versemi.data.readers import KNOWN_DUPLICATES, CaseRef, RawCase
from versemi.data.registry import DATASETS, STRUCTURES, authors_split, get_dataset
from versemi.locks import folder_lock
from versemi.utils import VersemiError

PREP_VERSION = "versemi-prep-1"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "versemi-prepared/1"
RATIOS = ("10", "20")
VAL_FRACTION = 0.2

WINDOWS = {"pancreas": (-125.0, 275.0), "spleen": (-125.0, 275.0), "lung": (-1000.0, 400.0)}
BODY_HU = -500.0
LA_XY_MARGIN = 15  # voxels; the midpoint of UA-MT's random 10-20


# ------------------------------------------------------------------------------------- preprocessing

def dataset_params(dataset: str, profile: str, target_spacing) -> dict:
    """The preprocessing parameters of ``dataset`` under ``profile`` (stored in files and manifest)."""
    info = get_dataset(dataset)
    prof = get_profile(profile).prepare
    p = {"version": PREP_VERSION, "profile": profile, "dataset": dataset, "modality": info.modality,
         "min_size": prof.min_size}
    if info.modality == "CT":
        p.update({"intensity": "clip_scale", "window_hu": list(WINDOWS[dataset]),
                  "target_spacing": [float(s) for s in target_spacing],
                  "spacing_rule": "median of cases" if prof.spacing == "median" else "fixed",
                  "margin_mm": prof.margin_mm, "crop": "label bbox +- margin (body HU > -500 if unlabeled)",
                  "resample": "scipy.ndimage.zoom order 1 image / 0 label"})
    else:
        zoom = prof.la_zoom
        p.update({"intensity": "zscore (whole volume)", "target_spacing": None,
                  "resample": (f"scipy.ndimage.zoom x{zoom} (order 1 image / 0 label)" if zoom else "none"),
                  "crop": f"x/y label bbox +- {LA_XY_MARGIN} voxels (NRRD); UA-MT h5 kept as released"})
        if zoom:
            p["la_zoom"] = float(zoom)
    return p


def _bbox(mask: np.ndarray):
    idx = [np.flatnonzero(mask.any(axis=tuple(j for j in range(mask.ndim) if j != i))) for i in range(mask.ndim)]
    return [(int(i[0]), int(i[-1]) + 1) for i in idx]


def _expand(box, margin_vox, shape):
    return [(max(0, lo - m), min(s, hi + m)) for (lo, hi), m, s in zip(box, margin_vox, shape)]


def _grow(box, min_vox, shape):
    """Enlarge each side of ``box`` to ``min_vox`` voxels where the volume allows (real context rather than
    padding), keeping it centred and inside the volume."""
    out = []
    for (lo, hi), m, s in zip(box, min_vox, shape):
        need = max(0, min(m, s) - (hi - lo))
        lo -= need // 2
        hi += need - need // 2
        if lo < 0:
            lo, hi = 0, hi - lo
        if hi > s:
            lo, hi = max(0, lo - (hi - s)), s
        out.append((lo, hi))
    return out


def _crop(arr, box):
    return None if arr is None else arr[tuple(slice(lo, hi) for lo, hi in box)]


def _pad_to(arr, min_size, value, axes=(0, 1, 2)):
    if arr is None:
        return None, [(0, 0)] * 3
    pads = []
    for i, s in enumerate(arr.shape):
        need = max(0, min_size - s) if i in axes else 0
        pads.append((need // 2, need - need // 2))
    if any(a or b for a, b in pads):
        arr = np.pad(arr, pads, mode="constant", constant_values=value)
    return arr, pads


def _zoom(arr, factors, order):
    if arr is None:
        return None
    out_shape = tuple(max(1, int(round(s * f))) for s, f in zip(arr.shape, factors))
    if out_shape == arr.shape:
        return arr
    real = [o / s for o, s in zip(out_shape, arr.shape)]
    return ndimage.zoom(arr, real, order=order, mode="nearest", prefilter=False)


def _zscore(image: np.ndarray) -> np.ndarray:
    x = image.astype(np.float64)
    std = x.std()
    return ((x - x.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def preprocess_case(case: RawCase, params: dict) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None,
                                                            tuple, dict]:
    """Apply ``params`` to one case -> (image, label, hidden, spacing, case_info)."""
    info: dict = {"native_shape": list(case.image.shape), "native_spacing": [float(s) for s in case.spacing],
                  "format": case.fmt}
    image, label, hidden = case.image, case.label, case.hidden
    if case.preprocessed:
        if case.dataset == "la" and (abs(float(image.mean())) > 5 or not 0.1 <= float(image.std()) <= 10):
            image = _zscore(image)
            info["kept_as_is"] = False
            info["note"] = "UA-MT-layout image did not look z-scored: z-scored over the volume"
        else:
            info["kept_as_is"] = True
            info["note"] = ("UA-MT release: already z-scored (before its crop); kept as released"
                            if case.dataset == "la" else "authors' preprocessed file: kept as is")
        spacing = tuple(case.spacing)
        if case.dataset == "la" and params.get("la_zoom"):
            z = params["la_zoom"]
            image, label, hidden = _zoom(image, (z,) * 3, 1), _zoom(label, (z,) * 3, 0), _zoom(hidden, (z,) * 3, 0)
            spacing = tuple(s * a / b for s, a, b in zip(spacing, case.image.shape, image.shape))
            info["note"] += f"; resampled x{z} for the CPU profile"
        return image.astype(np.float32), label, hidden, spacing, info
    if params["modality"] == "MRI":  # challenge NRRD
        image = _zscore(image)
        if label is not None:
            box = _bbox(label > 0)
            box = _expand(box[:2], [LA_XY_MARGIN] * 2, image.shape[:2]) + [(0, image.shape[2])]
        else:
            box = [(0, s) for s in image.shape]
        image, label, hidden = _crop(image, box), _crop(label, box), _crop(hidden, box)
        bg = float(image.min())
        image, pads = _pad_to(image, params["min_size"], bg, axes=(0, 1))
        label, _ = _pad_to(label, params["min_size"], 0, axes=(0, 1))
        hidden, _ = _pad_to(hidden, params["min_size"], 0, axes=(0, 1))
        info.update({"crop_box": [list(b) for b in box], "pad": [list(p) for p in pads]})
        return image, label, hidden, tuple(case.spacing), info
    lo, hi = params["window_hu"]
    if label is not None:
        box = _bbox(label > 0)
    else:
        body = image > BODY_HU
        box = _bbox(body) if body.any() else [(0, s) for s in image.shape]
    margin = [int(math.ceil(params["margin_mm"] / s)) for s in case.spacing]
    box = _expand(box, margin, image.shape)
    target = params["target_spacing"]
    # at least min_size voxels *after* resampling, taken from the volume where it is large enough
    box = _grow(box, [int(math.ceil(params["min_size"] * t / s)) for t, s in zip(target, case.spacing)],
                image.shape)
    image = (np.clip(_crop(image, box), lo, hi) - lo) / (hi - lo)
    image = image.astype(np.float32)
    label, hidden = _crop(label, box), _crop(hidden, box)
    factors = [s / t for s, t in zip(case.spacing, target)]
    if any(abs(f - 1) > 1e-3 for f in factors):
        image = np.clip(_zoom(image, factors, 1), 0.0, 1.0).astype(np.float32)
        label = _zoom(label, factors, 0)
        hidden = _zoom(hidden, factors, 0)
        spacing = tuple(float(t) for t in target)
    else:
        spacing = tuple(float(s) for s in case.spacing)
    image, pads = _pad_to(image, params["min_size"], 0.0)
    label, _ = _pad_to(label, params["min_size"], 0)
    hidden, _ = _pad_to(hidden, params["min_size"], 0)
    info.update({"crop_box": [list(b) for b in box], "margin_vox": margin, "pad": [list(p) for p in pads]})
    return image, label, hidden, spacing, info


def write_case_h5(path: Path, image, label, hidden, attrs: dict) -> None:
    """Write one prepared case (deterministic bytes: no timestamps, fixed attribute order)."""
    kw = {"compression": "gzip", "compression_opts": 4, "track_times": False}
    with h5py.File(path, "w", libver="earliest") as f:
        f.create_dataset("image", data=np.ascontiguousarray(image, dtype=np.float32), **kw)
        if label is not None:
            f.create_dataset("label", data=np.ascontiguousarray(label, dtype=np.uint8), **kw)
        if hidden is not None:
            f.create_dataset("hidden_label", data=np.ascontiguousarray(hidden, dtype=np.uint8), **kw)
        for k, v in attrs.items():
            f.attrs[k] = v


# ------------------------------------------------------------------------------------------- splits

def make_splits(dataset: str, present: dict[str, bool], seed: int) -> dict:
    """Splits for the cases ``present`` (name -> has a label), following the authors' lists.

    labeled / unlabeled / test keep the authors' order and membership restricted to the present cases;
    cases unknown to the authors' lists go to 'unlabeled' only. 'val' (model selection, instead of the test
    set) is drawn by ``seed`` from the labeled-on-disk cases of the authors' unlabeled_20 list (a subset of
    unlabeled in both ratios, so both ratios share it): 20%, at least 1. 'unlabeled_train' = unlabeled
    minus val.
    """
    authors = authors_split(dataset)
    known = set().union(*authors.values())
    excluded = [n for n in KNOWN_DUPLICATES.get(dataset, ()) if n in present]
    names = [n for n in present if n not in excluded]
    unknown = sorted(n for n in names if n not in known)
    pool = [n for n in authors["unlabeled_20"] if n in present and present[n]]
    if not pool:
        pool = [n for n in authors["unlabeled_10"] if n in present and present[n]]
    n_val = max(1, int(round(VAL_FRACTION * len(pool)))) if pool else 0
    rng = np.random.default_rng([seed, DATASETS[dataset].task_id, 0x5A1])
    val_idx = sorted(rng.choice(len(pool), size=n_val, replace=False).tolist()) if n_val else []
    val = [pool[i] for i in val_idx]
    out = {}
    for r in RATIOS:
        labeled = [n for n in authors[f"labeled_{r}"] if n in present]
        unlabeled = [n for n in authors[f"unlabeled_{r}"] if n in present] + unknown
        test = [n for n in authors["test"] if n in present]
        for n in labeled + test:
            if not present[n]:
                raise VersemiError(f"case {n!r} of dataset {dataset!r} is in the authors' "
                                   f"{'labeled' if n in labeled else 'test'} list but has no label")
        out[r] = {"labeled": labeled, "unlabeled": unlabeled, "val": [n for n in val if n in unlabeled],
                  "unlabeled_train": [n for n in unlabeled if n not in val], "test": test}
    expected = sum(len(authors[k]) for k in ("labeled_20", "unlabeled_20", "test"))
    found = sum(1 for n in names if n in known)
    return {"ratios": out, "complete": found == expected,
            "counts": {"authors_cases": expected, "present_authors_cases": found, "unknown_cases": len(unknown),
                       "missing_authors_cases": expected - found},
            "excluded": excluded, "val_rule": f"{VAL_FRACTION:.0%} of the labeled-on-disk authors' unlabeled_20 "
                                              f"cases (>= 1), drawn with seed {seed}; val is part of 'unlabeled'"}


# ---------------------------------------------------------------------------------------- verification

def check_case(case: RawCase) -> list[str]:
    """Problems of a readable case that the readers do not already reject."""
    problems = []
    if not all(0.1 <= s <= 10.0 for s in case.spacing):
        problems.append(f"{case.source}: voxel spacing {tuple(round(s, 4) for s in case.spacing)} mm outside "
                        "the sane range 0.1-10 mm")
    return problems


def verify_raw(datasets, src) -> list[str]:
    """Read every raw case of ``datasets`` and return ALL problems (one line each: file + problem)."""
    problems: list[str] = []
    for ds in datasets:
        try:
            refs = readers.list_raw_cases(src, ds)
        except VersemiError as e:
            problems.append(str(e))
            continue
        for ref in tqdm(refs, desc=f"verify {ds}", unit="case", leave=False, disable=None):
            try:
                case = ref.load()
            except VersemiError as e:
                problems.append(str(e))
                continue
            if ref.expects_label and case.label is None:
                problems.append(f"{ref.source}: missing label")
            problems += check_case(case)
    return problems


# ------------------------------------------------------------------------------------------- prepare

def _target_spacing(refs: list[CaseRef], dataset: str, profile: str):
    rule = get_profile(profile).prepare.spacing
    if DATASETS[dataset].modality != "CT":
        return None
    if rule != "median":
        return tuple(rule)
    sps = [ref.load().spacing for ref in tqdm(refs, desc=f"spacing {dataset}", unit="case", leave=False,
                                              disable=None)]
    return tuple(float(np.round(np.median([s[i] for s in sps]), 4)) for i in range(3))


def _read_legend(src: Path) -> str | None:
    p = src / "hidden_labels" / "legend.json"
    if not p.is_file():
        return None
    try:
        return json.dumps(json.loads(p.read_text()), sort_keys=True)
    except (OSError, ValueError) as e:
        raise VersemiError(f"{p}: cannot read the hidden-label legend: {e}") from None


def _prepare_dataset(ds: str, src: Path, stage: Path, profile: str, seed: int) -> dict:
    refs = readers.list_raw_cases(src, ds)
    target = _target_spacing(refs, ds, profile)
    params = dataset_params(ds, profile, target or (1.0, 1.0, 1.0))
    legend = _read_legend(src)
    (stage / ds).mkdir(parents=True, exist_ok=True)
    cases = []
    for ref in tqdm(refs, desc=f"prepare {ds}", unit="case", leave=False, disable=None):
        done = staging.finished(stage, f"{ds}/{ref.name}.h5", ref.source)
        if done is not None:   # finished by a run that was killed (versemi/data/staging.py)
            cases.append(done)
            continue
        case = ref.load()
        problems = check_case(case)
        if problems:
            raise VersemiError(problems[0])
        image, label, hidden, spacing, info = preprocess_case(case, params)
        rel = f"{ds}/{case.name}.h5"
        attrs = {"task": np.int64(DATASETS[ds].task_id), "dataset": ds,
                 "spacing": np.asarray(spacing, dtype=np.float64),
                 "source": readers.relative_source(case.source, src),
                 "preprocessing": json.dumps({**params, "case": info}, sort_keys=True),
                 "shape": np.asarray(image.shape, dtype=np.int64)}
        if hidden is not None and legend is not None:
            attrs["hidden_legend"] = legend
        write_case_h5(stage / rel, image, label, hidden, attrs)
        cases.append({"name": case.name, "file": rel, "shape": list(image.shape),
                      "spacing": [float(s) for s in spacing], "labeled": label is not None,
                      "label_fraction": float(label.mean()) if label is not None else None,
                      "has_hidden": hidden is not None, "source": attrs["source"]})
        staging.record(stage, rel, cases[-1], ref.source)
    keep = {c["file"] for c in cases}
    for f in (stage / ds).iterdir():   # cases staged by a killed run whose raw case is gone
        if f.suffix == ".h5" and f"{ds}/{f.name}" not in keep:
            f.unlink()
    present = {c["name"]: c["labeled"] for c in cases}
    splits = make_splits(ds, present, seed)
    return {"task": DATASETS[ds].task_id, "title": DATASETS[ds].title, "modality": DATASETS[ds].modality,
            "profile": profile, "seed": seed, "preprocessing": params, "cases": cases, "splits": splits["ratios"],
            "complete": splits["complete"], "counts": splits["counts"], "excluded": splits["excluded"],
            "val_rule": splits["val_rule"]}


def prepare(datasets, src, out, profile: str = "demo", verify: bool = False, seed: int = 2333,
            wait: bool = True) -> Path:
    """Preprocess ``datasets`` found under ``src`` into ``out``; returns the path of ``out/manifest.json``.

    ``verify=True`` first reads every raw case and raises ONE VersemiError listing all problems before
    anything is written. Datasets already prepared in ``out`` and not named here are kept in the manifest.
    One process at a time writes ``out`` (``versemi/locks.py``; ``wait=False``: a ``LockBusy`` naming the
    holder instead of waiting).
    """
    if isinstance(datasets, str):
        datasets = list(DATASETS) if datasets == "all" else [datasets]
    datasets = list(dict.fromkeys(datasets))
    for ds in datasets:
        get_dataset(ds)
    get_profile(profile)  # an unknown profile is a VersemiError naming the known ones
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise VersemiError(f"{src}: source folder does not exist")
    if verify:
        problems = verify_raw(datasets, src)
        if problems:
            raise VersemiError(f"{len(problems)} problem(s) in the raw data under {src}:\n"
                               + "\n".join(f"  - {p}" for p in problems))
    with folder_lock(out, "prepared data", wait=wait):
        return _prepare_into(datasets, src, out, profile, seed)


def _prepare_into(datasets: list[str], src: Path, out: Path, profile: str, seed: int) -> Path:
    """The writing part of :func:`prepare` (under the folder lock), resumable per case
    (``versemi/data/staging.py``)."""
    previous = {}
    with contextlib.suppress(VersemiError):
        previous = load_manifest(out)["datasets"]
    stage = staging.open_stage(out, staging.stage_key(datasets, src, profile, seed, PREP_VERSION))
    entries = {ds: _prepare_dataset(ds, src, stage, profile, seed) for ds in datasets}
    merged = {ds: e for ds, e in previous.items() if ds not in entries}
    merged.update(entries)
    order = [d for d in DATASETS if d in merged]
    doc = {"format": MANIFEST_FORMAT, "prep_version": PREP_VERSION, "seed": seed,
           "datasets": {d: merged[d] for d in order}}
    staging.swap_in(stage, out, datasets, out / MANIFEST, json.dumps(doc, indent=1) + "\n")
    return out / MANIFEST


# ----------------------------------------------------------------------------------------- loading

def _hint(out: Path) -> str:
    return f"run `versemi prepare --src <raw data> --out {out}` first"


def load_manifest(out) -> dict:
    """The manifest of a prepared folder; a missing or incomplete folder is a VersemiError."""
    return read_manifest(out, MANIFEST_FORMAT, "prepared folder", _hint(Path(out)),
                         lambda doc: [c for e in doc["datasets"].values() for c in e["cases"]],
                         required="datasets")


def read_manifest(out, fmt: str, what: str, hint: str, cases_of, required: str,
                  kind: str = "versemi manifest") -> dict:
    """A manifest of format ``fmt`` in folder ``out`` (``what`` names the folder in errors, ``hint`` says how to
    make it, ``kind`` names the manifest), checked to have key ``required`` and every case file ``cases_of(doc)`` lists; a missing,
    unreadable or incomplete folder is a VersemiError. Shared by the training data and the external test
    sets (``versemi/data/external.py``)."""
    out = Path(out)
    p = out / MANIFEST
    if not p.is_file():
        state = "does not exist" if not out.exists() else "has no manifest.json (missing or incomplete)"
        raise VersemiError(f"{out}: {what} {state}; {hint}")
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise VersemiError(f"{p}: unreadable manifest ({e}); {hint}") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt or required not in doc:
        raise VersemiError(f"{p}: not a {kind} ({fmt}); {hint}")
    for c in cases_of(doc):
        if not (out / c["file"]).is_file():
            raise VersemiError(f"{out / c['file']}: prepared case file is missing (incomplete folder); {hint}")
    return doc


def decode_legend(raw) -> dict:
    """The {structure: code} legend of a prepared case's hidden label map, from its ``hidden_legend``
    attribute (JSON text, bytes or an already decoded dict); a file without one (None) holds the phantom
    generator's codes, :data:`~versemi.data.registry.STRUCTURES`."""
    if raw is None:
        return dict(STRUCTURES)
    if isinstance(raw, bytes):
        raw = raw.decode()
    return dict(json.loads(raw)) if isinstance(raw, str) else dict(raw)


def load_case(path) -> dict:
    """One prepared case: dict(image, label (None if unlabeled), hidden_label (uint8 codes, None if the
    file has none), hidden_legend ({structure: code}, None without hidden labels), attrs)."""
    path = Path(path)
    if not path.is_file():
        raise VersemiError(f"{path}: prepared case file is missing; {_hint(path.parent.parent)}")
    try:
        with h5py.File(path, "r") as f:
            if "image" not in f:
                raise VersemiError(f"{path}: prepared case has no 'image' dataset; {_hint(path.parent.parent)}")
            d = {"image": f["image"][()], "label": f["label"][()] if "label" in f else None,
                 "hidden_label": f["hidden_label"][()] if "hidden_label" in f else None}
            attrs = {}
            for k, v in f.attrs.items():
                attrs[k] = v.tolist() if isinstance(v, np.ndarray) else (v.item() if isinstance(v, np.generic) else v)
            if "preprocessing" in attrs:
                attrs["preprocessing"] = json.loads(attrs["preprocessing"])
            if "hidden_legend" in attrs:
                attrs["hidden_legend"] = json.loads(attrs["hidden_legend"])
            d["hidden_legend"] = decode_legend(attrs.get("hidden_legend")) if d["hidden_label"] is not None else None
            d["attrs"] = attrs
    except VersemiError:
        raise
    except Exception as e:  # noqa: BLE001
        raise VersemiError(f"{path}: cannot read prepared case ({type(e).__name__}: {e}); "
                           f"{_hint(path.parent.parent)}") from None
    return d
