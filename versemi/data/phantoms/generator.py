"""``generate``: write the phantom datasets under a folder, each built in a staging folder and swapped in.

The layouts and geometry conventions are described in ``versemi/data/phantoms/__init__.py``; the
provenance file ``<out>/PHANTOMS.json`` records the generator, profile, seed and every case drawn, and
marks a folder as ours (folders it does not list are never overwritten).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from versemi.data.registry import ALL_DATASETS, DATASETS, STRUCTURES
from versemi.utils import VersemiError, atomic_write_text

from .cases import build_case, check_dataset, phantom_spec, split_names
from .writers import VERSION, dataset_roots, msd_json, write_case

GENERATOR = "versemi.data.phantoms"


def _read_provenance(out: Path) -> dict:
    """``out/PHANTOMS.json`` ({} when absent); a file not written by this generator is a user error."""
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
    """Write ``prov`` with its summary keys (profile, seed: one value or 'mixed'), datasets sorted."""
    ds = prov["datasets"]
    profiles = {d.get("profile") for d in ds.values()}
    seeds = {d.get("seed") for d in ds.values()}
    prov["profile"] = profiles.pop() if len(profiles) == 1 else "mixed"
    prov["seed"] = seeds.pop() if len(seeds) == 1 else "mixed"
    prov["datasets"] = {k: ds[k] for k in sorted(ds)}
    atomic_write_text(out / "PHANTOMS.json", json.dumps(prov, indent=1, sort_keys=False) + "\n")


def _range(values) -> list:
    """[per-axis minimum, per-axis maximum] of a list of 3-vectors, rounded to 4 decimals."""
    arr = np.asarray(values, dtype=float)
    return [arr.min(axis=0).round(4).tolist(), arr.max(axis=0).round(4).tolist()]


def _generate_dataset(out: Path, dataset: str, profile: str, seed: int, prov: dict) -> dict:
    """Draw and write every case of ``dataset`` into a staging folder, then swap its folders in."""
    train, test, extra = split_names(dataset, profile)
    labeled = train + test
    stage = out / f".staging-{dataset}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    cases_info = {}
    try:
        for name in tqdm(labeled + extra, desc=f"phantoms {dataset}", leave=False, disable=None):
            case = build_case(dataset, name, profile, seed)
            write_case(stage, dataset, case, seed, labeled=name not in extra)
            cases_info[name] = {"shape": list(case.labels.shape), "spacing": list(case.spacing),
                                "labeled": name not in extra,
                                "target_voxels": int((case.labels == STRUCTURES[DATASETS[dataset].structure]).sum()),
                                **case.info}
        if dataset in ("spleen", "lung"):
            task = "Task09_Spleen" if dataset == "spleen" else "Task06_Lung"
            (stage / task / "imagesTs").mkdir(parents=True, exist_ok=True)
            (stage / task / "dataset.json").write_text(json.dumps(msd_json(dataset, labeled, extra), indent=4) + "\n")
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
        "roots": dataset_roots(dataset), "target": DATASETS[dataset].structure,
        "shape_range": _range(shapes), "spacing_range_mm": _range(spacings),
        "cases": cases_info,
    })
    _write_provenance(out, prov)
    return {"n_cases": len(cases_info), "root": str(out / dataset_roots(dataset)[0])}


def generate(out, profile: str = "demo", seed: int = 2333, datasets=ALL_DATASETS) -> dict:
    """Write the phantom datasets under ``out`` in their real raw layouts (see the package doc).

    Returns ``{dataset: {"n_cases": int, "root": str}}``.  Re-running with the same arguments
    rewrites identical bytes.  Each dataset is built in a staging folder and swapped in, so a
    dataset folder is never seen half-written; folders of a dataset that ``out/PHANTOMS.json``
    does not list as phantoms are never overwritten (a user error is raised instead)."""
    phantom_spec(profile)  # validates the name
    if isinstance(datasets, str):
        datasets = (datasets,)
    datasets = [check_dataset(d) for d in datasets]
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
