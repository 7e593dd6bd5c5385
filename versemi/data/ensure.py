"""The prepared data of a profile, generated on demand for the phantom profiles.

``<data_dir>/<profile>/raw`` holds the raw files (phantoms in the datasets' own formats) and
``<data_dir>/<profile>/prepared`` the prepared cases with their ``manifest.json``. The phantoms of
another seed than the authors' (:data:`DEFAULT_SEED`) are another draw of every case and live beside
them, in ``<data_dir>/<profile>-seed<seed>`` (the multi-seed studies, ``versemi/studies.py``).
"""

from __future__ import annotations

from pathlib import Path

from versemi.config import get_profile
from versemi.data.phantoms import generate
from versemi.data.prepare import load_manifest, prepare
from versemi.data.registry import ALL_DATASETS
from versemi.locks import folder_lock
from versemi.utils import VersemiError

DEFAULT_SEED = 2333   # the authors' seed: the default of every seed in the package


def data_root(data_dir: str | Path, profile: str, seed: int = DEFAULT_SEED) -> Path:
    """``<data_dir>/<profile>`` for the default seed, ``<data_dir>/<profile>-seed<seed>`` for another draw
    of the phantoms (a real-data profile has one folder whatever the seed)."""
    if int(seed) == DEFAULT_SEED or not get_profile(profile).is_phantom:
        return Path(data_dir) / profile
    return Path(data_dir) / f"{profile}-seed{int(seed)}"


def prepared_dir(data_dir: str | Path, profile: str, seed: int = DEFAULT_SEED) -> Path:
    """``<data_root>/prepared``: where ``versemi prepare`` writes a profile's data by default."""
    return data_root(data_dir, profile, seed) / "prepared"


def ensure_data(data_dir: str | Path = "results/data", profile: str = "demo", seed: int = DEFAULT_SEED) -> Path:
    """The prepared-data folder of ``profile`` under ``data_dir``.

    For a phantom profile the phantoms are generated and prepared when the folder is missing; for a
    real-data profile (paper, la-real) it must have been prepared with ``versemi prepare`` (a
    :class:`VersemiError` says how). Concurrent callers generate the data once (a folder lock).
    """
    prof = get_profile(profile)
    prepared = prepared_dir(data_dir, profile, seed)
    if (prepared / "manifest.json").is_file():
        _check_seed(prepared, prof.is_phantom, seed)
        return prepared
    if not prof.is_phantom:
        raise VersemiError(f"{prepared}: no prepared data for profile {profile!r}; run `versemi prepare "
                           f"--src <your raw data> --out {prepared} --profile {profile}` first")
    root = data_root(data_dir, profile, seed)
    with folder_lock(root, "phantom data"):   # two notebooks starting at once generate it once
        if not (prepared / "manifest.json").is_file():
            generate(root / "raw", profile=profile, seed=seed)
            prepare(ALL_DATASETS, root / "raw", prepared, profile=profile, seed=seed)
    return prepared


def _check_seed(prepared: Path, phantom: bool, seed: int) -> None:
    """Phantoms prepared under another seed than the one asked for are a :class:`VersemiError` (the runs
    would silently be trained on another draw)."""
    have = load_manifest(prepared).get("seed")
    if phantom and have is not None and int(have) != int(seed):
        raise VersemiError(f"{prepared}: phantoms of seed {have}, but seed {seed} was asked for; remove the "
                           f"folder or use another data folder")
