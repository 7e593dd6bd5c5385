"""External test sets: scans of another site, prepared exactly like the training data of their task and
scored with that task's prompt (the paper's generalisation test on unseen BTCV spleens).

An external set is not a training dataset: it is not in :data:`~versemi.data.registry.DATASETS`, has no
splits, and never changes the prepared folder of the four training datasets. Its cases are preprocessed
with the *training* spleen's parameters, read from the training prepared folder's manifest (target spacing,
HU window, crop margin and minimum size) and applied by :func:`versemi.data.prepare.preprocess_case` - the
same function, so the crop rule is the training one too: the label's bounding box +- the margin, as the
authors' test cases.

Folders (``<root>`` = :func:`versemi.data.ensure.data_root`)::

    <root>/raw/BTCV/RawData/Training/{img,label}/   raw scans (phantom profiles: generated unseen-site
                                                    phantoms, versemi/data/phantoms/unseen.py; real
                                                    profiles: the user's BTCV download)
    <root>/external/btcv/manifest.json               format versemi-external/1, written last
    <root>/external/btcv/cases/btcv_0001.h5          image float32 [0, 1], label uint8 (spleen), hidden_label
                                                    uint8 + attrs as the training files (hidden_legend JSON)

Preparation is staged and resumable per case (``versemi/data/staging.py``) and one process at a time writes
a folder (``versemi/locks.py``); the same inputs give byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm.auto import tqdm

from versemi.config import get_profile
from versemi.data import staging
from versemi.data.ensure import DEFAULT_SEED, data_root, ensure_data, prepared_dir
from versemi.data.phantoms.unseen import BTCV_FOLDER, generate_unseen, read_provenance, unseen_complete
from versemi.data.prepare import (
    MANIFEST,
    PREP_VERSION,
    check_case,
    load_case,
    load_manifest,
    preprocess_case,
    read_manifest,
    write_case_h5,
)
from versemi.data.readers import list_raw_cases, relative_source
from versemi.data.readers.btcv import SPLEEN_CODE, list_btcv, orphan_labels
from versemi.data.registry import DATASETS
from versemi.locks import folder_lock
from versemi.utils import VersemiError

EXTERNAL_FORMAT = "versemi-external/1"
CASES = "cases"


@dataclass(frozen=True)
class ExternalSet:
    """One external test set: ``task`` is the training dataset whose prompt and preprocessing it uses;
    ``reader(src)`` lists its labeled cases (CaseRefs whose RawCase label is the task's structure);
    ``layout_checks(src)`` returns extra layout problems; raw data live in ``<root>/raw/<raw_folder>``."""

    name: str
    title: str
    task: str
    task_id: int
    raw_folder: str
    reader: Callable
    layout_checks: Callable
    n_cases: int
    label_rule: str
    obtain: str


EXTERNAL_SETS: dict[str, ExternalSet] = {
    "btcv": ExternalSet(
        "btcv", "BTCV (MICCAI 2015 Multi-Atlas Labeling Beyond the Cranial Vault), abdominal CT", "spleen",
        DATASETS["spleen"].task_id, BTCV_FOLDER, list_btcv, orphan_labels, 30,
        f"spleen = organ code {SPLEEN_CODE} of the BTCV 13-organ label map",
        "download RawData.zip from the challenge's Synapse project syn3193805 "
        "(https://www.synapse.org/#!Synapse:syn3193805/wiki/217789, free registration; the 30 labeled "
        "training scans are used)"),
}


def get_external(name: str) -> ExternalSet:
    """The external set ``name``; an unknown name is a :class:`VersemiError` listing the known ones."""
    try:
        return EXTERNAL_SETS[name]
    except KeyError:
        raise VersemiError(f"unknown external test set {name!r}; expected one of {', '.join(EXTERNAL_SETS)}") from None


def external_dir(data_dir, profile: str, seed: int = DEFAULT_SEED, name: str = "btcv") -> Path:
    """``<data_root>/external/<name>``: where :func:`ensure_external` prepares an external set."""
    return data_root(data_dir, profile, seed) / "external" / get_external(name).name


def external_params(name: str, training_prepared_dir) -> dict:
    """The preprocessing of external set ``name``: its task's training parameters (from the training
    manifest) with ``dataset`` = the set and ``prepared_like`` = the task."""
    es = get_external(name)
    training = Path(training_prepared_dir)
    doc = load_manifest(training)
    entry = doc["datasets"].get(es.task)
    if entry is None:
        raise VersemiError(f"{training}: the {es.task} training data is not prepared there; {es.title} is "
                           f"prepared like it: run `versemi prepare --dataset {es.task} --out {training}` first")
    params = dict(entry["preprocessing"])
    if params.get("modality") != "CT" or "window_hu" not in params or "target_spacing" not in params:
        raise VersemiError(f"{training / MANIFEST}: the {es.task} preprocessing has no CT window / target "
                           "spacing (unsupported manifest)")
    return {**params, "dataset": es.name, "prepared_like": es.task}


def _phantom_summary(src: Path) -> dict | None:
    prov = read_provenance(src) or read_provenance(src / BTCV_FOLDER)
    return None if prov is None else {k: prov[k] for k in ("generator", "version", "profile", "seed")}


# --------------------------------------------------------------------------------------------- prepare
def prepare_external(name: str, src_root, out_dir, training_prepared_dir, verify: bool = False,
                     wait: bool = True) -> Path:
    """Prepare external set ``name`` from ``src_root`` into ``out_dir`` like the training data of its task in
    ``training_prepared_dir``; returns ``out_dir/manifest.json``.

    ``verify=True`` first reads every raw case (:func:`verify_external`) and raises ONE VersemiError
    listing all problems before anything is written; ``wait=False``: a ``LockBusy`` naming the holder
    instead of waiting for another writer of ``out_dir``.
    """
    es = get_external(name)
    src, out = Path(src_root), Path(out_dir)
    if not src.is_dir():
        raise VersemiError(f"{src}: source folder does not exist")
    params = external_params(name, training_prepared_dir)
    if verify:
        problems = verify_external(name, src)
        if problems:
            raise VersemiError(f"{len(problems)} problem(s) in the raw {es.name} data under {src}:\n"
                               + "\n".join(f"  - {p}" for p in problems))
    with folder_lock(out, "external test set", wait=wait):
        return _prepare_into(es, src, out, params)


def _prepare_into(es: ExternalSet, src: Path, out: Path, params: dict) -> Path:
    refs = es.reader(src)
    key = staging.stage_key([es.name], src, params["profile"], 0,
                            PREP_VERSION + json.dumps(params, sort_keys=True))
    stage = staging.open_stage(out, key)
    (stage / CASES).mkdir(exist_ok=True)
    cases = []
    for ref in tqdm(refs, desc=f"prepare {es.name}", unit="case", leave=False, disable=None):
        rel = f"{CASES}/{ref.name}.h5"
        done = staging.finished(stage, rel, ref.source)
        if done is not None:
            cases.append(done)
            continue
        case = ref.load()
        problems = check_case(case)
        if problems:
            raise VersemiError(problems[0])
        image, label, hidden, spacing, info = preprocess_case(case, params)
        attrs = {"task": np.int64(es.task_id), "dataset": es.name, "spacing": np.asarray(spacing, dtype=np.float64),
                 "source": relative_source(case.source, src),
                 "preprocessing": json.dumps({**params, "case": info}, sort_keys=True),
                 "shape": np.asarray(image.shape, dtype=np.int64)}
        legend = getattr(case, "legend", None)
        if hidden is not None and legend is not None:
            attrs["hidden_legend"] = json.dumps(legend, sort_keys=True)
        write_case_h5(stage / rel, image, label, hidden, attrs)
        cases.append({"name": case.name, "file": rel, "shape": list(image.shape),
                      "spacing": [float(s) for s in spacing], "labeled": True,
                      "label_fraction": float(label.mean()), "label_voxels": int(label.sum()),
                      "has_hidden": hidden is not None, "source": attrs["source"],
                      "native_shape": info["native_shape"], "native_spacing": info["native_spacing"]})
        staging.record(stage, rel, cases[-1], ref.source)
    keep = {c["file"] for c in cases}
    for f in (stage / CASES).iterdir():   # staged by a killed run for a raw case that is gone
        if f.suffix == ".h5" and f"{CASES}/{f.name}" not in keep:
            f.unlink()
    doc = {"format": EXTERNAL_FORMAT, "prep_version": PREP_VERSION, "name": es.name, "title": es.title,
           "task": es.task, "task_id": es.task_id, "label": es.label_rule, "prepared_like": es.task,
           "phantoms": _phantom_summary(src), "preprocessing": params, "cases": cases}
    staging.swap_in(stage, out, [CASES], out / MANIFEST, json.dumps(doc, indent=1) + "\n")
    return out / MANIFEST


def _current(out: Path, params: dict, phantoms: dict | None) -> bool:
    try:
        doc = load_external_manifest(out)
    except VersemiError:
        return False
    return doc.get("preprocessing") == params and doc.get("phantoms") == phantoms


def ensure_external(data_dir, profile: str, seed: int = DEFAULT_SEED, name: str = "btcv") -> Path:
    """The prepared folder of external set ``name`` for ``profile`` (``<data_root>/external/<name>``).

    Phantom profiles: the training data are ensured (:func:`~versemi.data.ensure.ensure_data`), the
    unseen-site phantoms generated into ``<data_root>/raw/BTCV`` and prepared, each once (folder locks).
    Real profiles: the training data must have been prepared and the raw scans put in
    ``<data_root>/raw/BTCV``; a :class:`VersemiError` says exactly what to do otherwise. A prepared folder
    made from other training parameters or other phantoms is prepared again.
    """
    es, prof = get_external(name), get_profile(profile)
    root = data_root(data_dir, profile, seed)
    out, raw = root / "external" / es.name, root / "raw" / es.raw_folder
    if prof.is_phantom:
        training = ensure_data(data_dir, profile, seed)
    else:
        training = prepared_dir(data_dir, profile, seed)
        if not (training / MANIFEST).is_file():
            raise VersemiError(f"{training}: no prepared training data for profile {profile!r}; {es.title} is "
                               f"prepared like the {es.task} training data, so run `versemi prepare --src <your "
                               f"raw data> --out {training} --profile {profile}` first")
    params = external_params(name, training)
    if prof.is_phantom:
        with folder_lock(raw, "unseen-site phantoms"):
            if not unseen_complete(raw, profile, seed):
                generate_unseen(raw.parent, profile, seed)
    elif not raw.is_dir():
        raise VersemiError(f"{raw}: the raw {es.name} data are missing. {es.title} is the paper's unseen "
                           f"{es.task} test set: {es.obtain}; unzip it so that "
                           f"{raw}/RawData/Training/img/img0001.nii.gz and "
                           f"{raw}/RawData/Training/label/label0001.nii.gz exist, then run this again")
    phantoms = _phantom_summary(raw)
    if _current(out, params, phantoms):
        return out
    with folder_lock(out, "external test set"):
        if not _current(out, params, phantoms):
            _prepare_into(es, raw, out, params)
    return out


# ------------------------------------------------------------------------------------------------ load
def _hint(out: Path) -> str:
    return (f"prepare it first: versemi.data.external.ensure_external(<data dir>, <profile>) or "
            f"prepare_external('btcv', <raw BTCV>, '{out}', <training prepared folder>)")


def load_external_manifest(prepared_external_dir) -> dict:
    """The manifest of a prepared external folder; a missing or incomplete folder is a VersemiError."""
    out = Path(prepared_external_dir)
    doc = read_manifest(out, EXTERNAL_FORMAT, "external test set folder", _hint(out), lambda d: d["cases"],
                        required="cases", kind="versemi external manifest")
    if not isinstance(doc["cases"], list):
        raise VersemiError(f"{out / MANIFEST}: not a versemi external manifest ({EXTERNAL_FORMAT}); {_hint(out)}")
    return doc


def load_external_cases(prepared_external_dir, hidden: bool = False) -> list[dict]:
    """The prepared external cases in manifest order, as :func:`versemi.data.loaders.load_split_cases`
    gives them: name, task (the task's prompt, 3 for BTCV), dataset ('btcv'), image (float32), label
    (uint8 0/1, the spleen), spacing (mm); with ``hidden`` also hidden_label and hidden_legend."""
    out = Path(prepared_external_dir)
    doc = load_external_manifest(out)
    cases = []
    for c in doc["cases"]:
        d = load_case(out / c["file"])
        item = {"name": c["name"], "task": int(d["attrs"]["task"]), "dataset": doc["name"], "image": d["image"],
                "label": d["label"], "spacing": tuple(d["attrs"]["spacing"])}
        if hidden:
            item.update(hidden_label=d["hidden_label"], hidden_legend=d["hidden_legend"])
        cases.append(item)
    return cases


# ---------------------------------------------------------------------------------------------- verify
def verify_external(name: str, src_root, prepared_dir=None) -> list[str]:
    """Every problem (one line each, naming the file) of the raw external set under ``src_root``: its
    layout, each case read and checked as ``versemi prepare --verify`` does; with ``prepared_dir`` also
    the prepared folder against the raw cases (every case present, readable, labeled, on the training
    grid). An empty list: all is well."""
    es = get_external(name)
    try:
        refs = es.reader(src_root)
        problems = list(es.layout_checks(src_root))
    except VersemiError as e:
        return [str(e)]
    for ref in tqdm(refs, desc=f"verify {es.name}", unit="case", leave=False, disable=None):
        try:
            case = ref.load()
        except VersemiError as e:
            problems.append(str(e))
            continue
        problems += check_case(case)
    if prepared_dir is not None:
        problems += _verify_prepared(es, Path(prepared_dir), [r.name for r in refs])
    return problems


def _verify_prepared(es: ExternalSet, out: Path, names: list[str]) -> list[str]:
    try:
        doc = load_external_manifest(out)
    except VersemiError as e:
        return [str(e)]
    problems = []
    have = [c["name"] for c in doc["cases"]]
    problems += [f"{out}: raw case {n} is not prepared (prepare again)" for n in names if n not in have]
    problems += [f"{out / c['file']}: prepared case has no raw case any more" for c in doc["cases"]
                 if c["name"] not in names]
    target = doc["preprocessing"]["target_spacing"]
    for c in doc["cases"]:
        path = out / c["file"]
        try:
            d = load_case(path)
        except VersemiError as e:
            problems.append(str(e))
            continue
        img, lab, sp = d["image"], d["label"], d["attrs"].get("spacing")
        if lab is None or lab.shape != img.shape or not lab.any():
            problems.append(f"{path}: label missing, empty or not of the image's shape")
        if list(img.shape) != c["shape"] or not np.isfinite(img).all() or img.min() < 0 or img.max() > 1:
            problems.append(f"{path}: image not of the manifest's shape or not finite in [0, 1]")
        if sp is None or not np.allclose(sp, target, rtol=2e-3):
            problems.append(f"{path}: spacing {sp} is not the training spacing {target}")
        if d["attrs"].get("task") != es.task_id:
            problems.append(f"{path}: task {d['attrs'].get('task')} is not {es.task_id} ({es.task})")
    return problems


# ------------------------------------------------------------------------------------------ site shift
def case_stats(hu: np.ndarray, spleen: np.ndarray, spacing, native_spacing, native_shape) -> dict:
    """Numbers of one case for :func:`site_shift`: spleen and soft-tissue (-125..275 HU) intensity mean/sd,
    noise inside the spleen eroded by one voxel (the sd of in-plane neighbour differences / sqrt 2, which
    sees the high-frequency part only: correlated noise of the same sd gives less; and the lag-1 in-plane
    correlation of the deviations: 0 for white noise), slice thickness, in-plane spacing, field of view and
    spleen volume. ``hu`` in HU, ``spleen`` a mask, ``spacing`` of ``hu``'s grid, ``native_*`` of the raw
    scan."""
    core = ndimage.binary_erosion(spleen)
    core = core if core.sum() >= 8 else spleen.astype(bool)
    vals = hu[core].astype(np.float64)
    dev = np.where(core, hu - vals.mean(), np.nan)
    a, b = dev[:-1], dev[1:]
    pair = np.isfinite(a) & np.isfinite(b)
    diff = (a - b)[pair]
    lag1 = float("nan")
    if pair.sum() > 2 and a[pair].std() > 0 and b[pair].std() > 0:
        lag1 = float(np.corrcoef(a[pair], b[pair])[0, 1])
    soft = (hu > -125) & (hu < 275) & ~spleen.astype(bool)
    return {"spleen intensity mean (HU)": vals.mean(), "spleen intensity sd (HU)": vals.std(),
            "soft-tissue intensity mean (HU)": float(hu[soft].mean()) if soft.any() else float("nan"),
            "soft-tissue intensity sd (HU)": float(hu[soft].std()) if soft.any() else float("nan"),
            "noise sd, high-frequency (HU)": float(diff.std() / np.sqrt(2)) if diff.size else float("nan"),
            "noise lag-1 correlation (in-plane)": lag1,
            "slice thickness (mm)": float(native_spacing[2]), "in-plane spacing (mm)": float(native_spacing[0]),
            "field of view (mm)": float(native_shape[0] * native_spacing[0]),
            "spleen volume (ml)": float(spleen.sum()) * float(np.prod(spacing)) / 1000.0}


def _prepared_stats(path: Path, window) -> dict:
    d = load_case(path)
    lo, hi = window
    info = d["attrs"]["preprocessing"]["case"]
    hu = d["image"].astype(np.float64) * (hi - lo) + lo
    return case_stats(hu, d["label"] > 0, d["attrs"]["spacing"], info["native_spacing"], info["native_shape"])


def _raw_stats(refs) -> list[dict]:
    out = []
    for ref in refs:
        case = ref.load()
        if case.label is not None and case.label.any():
            out.append(case_stats(case.image, case.label > 0, case.spacing, case.spacing, case.image.shape))
    return out


def site_shift(training_prepared_dir, external_prepared_dir, training_raw=None, external_raw=None,
               name: str = "btcv") -> pd.DataFrame:
    """The shift between the training spleen data and the external site, in numbers: one row per quantity
    (:func:`case_stats`, means over the labeled cases; the last row counts them), columns the training
    dataset's short title (``MSD Spleen``), ``unseen site``, ``difference`` (unseen - training) and
    ``measured on``.

    By default everything is measured on the prepared cases (intensities mapped back to HU through the
    window, so clipped at its ends; geometry from the native shape and spacing recorded in each file). With
    ``training_raw`` (the folder ``versemi prepare`` read) and ``external_raw`` (the raw external set) the
    numbers come from the raw scans on their native grids instead.
    """
    es = get_external(name)
    training, external = Path(training_prepared_dir), Path(external_prepared_dir)
    tdoc, edoc = load_manifest(training), load_external_manifest(external)
    if training_raw is not None and external_raw is not None:
        t_rows = _raw_stats(list_raw_cases(training_raw, es.task))
        e_rows = _raw_stats(es.reader(external_raw))
        where = "raw scans"
    else:
        entry = tdoc["datasets"].get(es.task)
        if entry is None:
            raise VersemiError(f"{training}: the {es.task} training data is not prepared there")
        t_rows = [_prepared_stats(training / c["file"], entry["preprocessing"]["window_hu"])
                  for c in entry["cases"] if c["labeled"]]
        e_rows = [_prepared_stats(external / c["file"], edoc["preprocessing"]["window_hu"]) for c in edoc["cases"]]
        where = "prepared cases"
    t, e = pd.DataFrame(t_rows).mean(), pd.DataFrame(e_rows).mean()
    col = DATASETS[es.task].short_title
    df = pd.DataFrame({col: t, "unseen site": e, "difference": e - t, "measured on": where})
    extra = pd.DataFrame({col: [float(len(t_rows))], "unseen site": [float(len(e_rows))],
                          "difference": [float(len(e_rows) - len(t_rows))], "measured on": [where]},
                         index=["labeled cases"])
    df = pd.concat([df, extra])
    df.index.name = "quantity"
    return df
