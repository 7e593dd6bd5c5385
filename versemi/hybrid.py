"""The hybrid prepared folder: the real Left Atrium beside phantom CT sets, for the joint VerSemi run.

On these machines the only way to ask whether segmenting together helps a *real* task is to train VerSemi
on the real LA together with the phantom pancreas, spleen and lung sets and score it on the real LA test
cases (the ``la-real`` study's :data:`~versemi.experiments.HYBRID_LABEL` run). A run reads one prepared
folder, so the phantom CT sets are prepared *into the real-LA prepared folder* of the ``la-real`` profile,
next to the real LA (``versemi prepare`` keeps the datasets of a folder that a call does not name):

* the real LA: ``versemi prepare --dataset la --profile la-real`` (x0.5, 1.25 mm);
* the phantoms: drawn by the generator (``versemi/data/phantoms``) under a phantom profile (default ``demo``:
  the authors' case counts) and a seed, written to ``<data_root>/hybrid-phantoms/raw``, and prepared with the
  **la-real** profile's CT rules (fixed 1 x 1 x 1 mm spacing, HU windows, 25 mm margin, minimum 48 voxels;
  :func:`versemi.data.prepare.dataset_params`), so that the la-real patch (64 x 64 x 32) covers 64 x 64 x
  32 mm of CT as the paper's 96^3 patches cover 96 mm at 1 mm;
* ``<prepared>/HYBRID.json`` (format ``versemi-hybrid/1``) says which datasets are real and which are
  phantoms (profile, seed, generator version). It is a file beside the manifest, not in it: a later
  ``versemi prepare --dataset la`` with the same inputs rewrites an identical manifest, and the runs of the
  folder keep their identities.

Every run's identity hashes the whole manifest (``versemi/runs.py``), the LA-only runs of the study as well:
prepare the folder **once, completely, before training any run of it** (:func:`ensure_la_real`), or the runs
trained before the phantoms were added are stale.

``python -m versemi.hybrid --la <LA folder> [--data-dir results/data]`` prepares it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from versemi.config import get_profile
from versemi.data.ensure import DEFAULT_SEED, data_root, prepared_dir
from versemi.data.phantoms import generate
from versemi.data.phantoms.writers import VERSION as PHANTOM_VERSION
from versemi.data.prepare import MANIFEST, load_manifest, prepare
from versemi.data.registry import DATASETS
from versemi.locks import folder_lock
from versemi.utils import VersemiError, atomic_write_text

HYBRID = "HYBRID.json"
HYBRID_FORMAT = "versemi-hybrid/1"
REAL_DATASET = "la"
PHANTOM_DATASETS = ("pancreas", "spleen", "lung")   # the CT sets of the joint run
PHANTOM_PROFILE = "demo"                            # the authors' case counts
PROFILE = "la-real"


def phantom_root(data_dir, profile: str = PROFILE) -> Path:
    """``<data_root of profile>/hybrid-phantoms/raw``: the raw phantoms of the hybrid folder."""
    return data_root(data_dir, profile) / "hybrid-phantoms" / "raw"


def _phantoms_complete(raw: Path, datasets, phantom_profile: str, seed: int) -> bool:
    """Whether ``raw/PHANTOMS.json`` lists complete phantoms of ``datasets`` of (profile, seed) written by
    this generator version."""
    try:
        prov = json.loads((raw / "PHANTOMS.json").read_text())
    except (OSError, ValueError):
        return False
    ds = prov.get("datasets", {})
    return prov.get("version") == PHANTOM_VERSION and all(
        d in ds and ds[d].get("profile") == phantom_profile and ds[d].get("seed") == int(seed)
        and ds[d].get("complete") is True for d in datasets)


def ensure_phantoms(raw, datasets=PHANTOM_DATASETS, phantom_profile: str = PHANTOM_PROFILE,
                    seed: int = DEFAULT_SEED) -> Path:
    """The raw phantoms of ``datasets`` in ``raw``, generated (under the folder's lock) unless complete."""
    raw = Path(raw)
    if not get_profile(phantom_profile).is_phantom:
        raise VersemiError(f"profile {phantom_profile!r} has no phantoms; choose a phantom profile")
    with folder_lock(raw, "phantom data"):
        if not _phantoms_complete(raw, datasets, phantom_profile, seed):
            generate(raw, profile=phantom_profile, seed=int(seed), datasets=tuple(datasets))
    return raw


def hybrid_record(prepared) -> dict | None:
    """``<prepared>/HYBRID.json`` (None when the folder is not a hybrid one)."""
    path = Path(prepared) / HYBRID
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise VersemiError(f"{path}: unreadable hybrid record ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != HYBRID_FORMAT:
        raise VersemiError(f"{path}: not a {HYBRID_FORMAT} record")
    return doc


def _check_prepared_ct(prepared: Path, doc: dict | None, datasets) -> None:
    """Refuse to replace CT data of ``prepared`` that is not a phantom set of its hybrid record (e.g. real
    scans prepared there by hand)."""
    if doc is None:
        return
    known = set((hybrid_record(prepared) or {}).get("phantom", {}).get("datasets", []))
    for d in datasets:
        entry = doc["datasets"].get(d)
        if entry is not None and d not in known and not all(c.get("has_hidden") for c in entry["cases"]):
            raise VersemiError(f"{prepared}: dataset {d!r} is prepared there from real scans; refusing to "
                               "replace it with phantoms")


def prepare_hybrid(out, raw_phantoms, la_src=None, datasets=PHANTOM_DATASETS, phantom_profile: str = PHANTOM_PROFILE,
                   seed: int = DEFAULT_SEED, profile: str = PROFILE) -> Path:
    """Make ``out`` a hybrid prepared folder (module docstring): the real LA (prepared from ``la_src`` when
    ``out`` has none) and the phantom ``datasets`` (generated into ``raw_phantoms`` when missing, prepared
    with ``profile``'s rules), then ``HYBRID.json``. Nothing is redone when the record already describes this
    request. ``seed``: the phantoms' draw and the split seed (the manifest's seed must be the same). Returns
    ``out/manifest.json``."""
    out, datasets = Path(out), tuple(dict.fromkeys(datasets))
    bad = [d for d in datasets if d not in DATASETS or DATASETS[d].modality != "CT"]
    if bad or not datasets:
        raise VersemiError(f"hybrid phantoms must be CT datasets ({', '.join(PHANTOM_DATASETS)}), got {list(datasets)}")
    doc = load_manifest(out) if (out / MANIFEST).is_file() else None
    if doc is None or REAL_DATASET not in doc["datasets"]:
        if la_src is None:
            raise VersemiError(f"{out}: no prepared Left Atrium; pass the LA folder (--la) to prepare it")
        prepare([REAL_DATASET], la_src, out, profile=profile, seed=int(seed))
        doc = load_manifest(out)
    if doc.get("seed") is not None and int(doc["seed"]) != int(seed):
        raise VersemiError(f"{out}: prepared with seed {doc['seed']}; the hybrid phantoms need the same seed "
                           f"(got {seed}) so that the folder has one split seed")
    la_entry = doc["datasets"][REAL_DATASET]
    if any(c.get("has_hidden") for c in la_entry["cases"]):
        raise VersemiError(f"{out}: its Left Atrium cases are phantoms (hidden labels); a hybrid folder holds the "
                           "real LA")
    wanted = {"format": HYBRID_FORMAT, "profile": profile, "real": [REAL_DATASET],
              "phantom": {"datasets": list(datasets), "profile": phantom_profile, "seed": int(seed),
                          "generator_version": PHANTOM_VERSION}}
    have = hybrid_record(out)
    if have is not None and {k: have.get(k) for k in wanted} == wanted and all(d in doc["datasets"] for d in datasets):
        return out / MANIFEST
    _check_prepared_ct(out, doc, datasets)
    ensure_phantoms(raw_phantoms, datasets, phantom_profile, seed)
    prepare(list(datasets), raw_phantoms, out, profile=profile, seed=int(seed))
    note = (f"real {DATASETS[REAL_DATASET].title} beside phantom {', '.join(datasets)} (profile {phantom_profile}, "
            f"seed {seed}) prepared with the {profile} profile's rules; numbers of a run on the phantom sets "
            "say nothing about real scans")
    atomic_write_text(out / HYBRID, json.dumps({**wanted, "note": note}, indent=1) + "\n")
    return out / MANIFEST


def ensure_la_real(data_dir="results/data", la_src=None, profile: str = PROFILE, phantom_profile: str = PHANTOM_PROFILE,
                   seed: int = DEFAULT_SEED) -> Path:
    """The prepared folder of the ``la-real`` study (``<data_dir>/<profile>/prepared``), made hybrid with
    :func:`prepare_hybrid` (phantoms under :func:`phantom_root`) when it is not yet; returns the folder."""
    out = prepared_dir(data_dir, profile)
    prepare_hybrid(out, phantom_root(data_dir, profile), la_src, phantom_profile=phantom_profile, seed=seed,
                   profile=profile)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m versemi.hybrid", description=__doc__.splitlines()[0])
    ap.add_argument("--la", default=None, help="the Left Atrium folder (UA-MT layout), when not prepared yet")
    ap.add_argument("--data-dir", default="results/data")
    ap.add_argument("--profile", default=PROFILE)
    ap.add_argument("--phantom-profile", default=PHANTOM_PROFILE)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    a = ap.parse_args(argv)
    try:
        out = ensure_la_real(a.data_dir, a.la, a.profile, a.phantom_profile, a.seed)
    except VersemiError as e:
        print(f"error: {e}")
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
