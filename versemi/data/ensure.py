"""The prepared data of a profile, generated on demand for the phantom profiles.

``<data_dir>/<profile>/raw`` holds the raw files (phantoms in the datasets' own formats) and
``<data_dir>/<profile>/prepared`` the prepared cases with their ``manifest.json``.
"""

from __future__ import annotations

from pathlib import Path

from versemi.config import get_profile
from versemi.data.phantoms import generate
from versemi.data.prepare import prepare
from versemi.data.registry import ALL_DATASETS
from versemi.locks import folder_lock
from versemi.utils import VersemiError


def prepared_dir(data_dir: str | Path, profile: str) -> Path:
    """``<data_dir>/<profile>/prepared``: where ``versemi prepare`` writes a profile's data by default."""
    return Path(data_dir) / profile / "prepared"


def ensure_data(data_dir: str | Path = "results/data", profile: str = "demo", seed: int = 2333) -> Path:
    """The prepared-data folder of ``profile`` under ``data_dir``.

    For a phantom profile the phantoms are generated and prepared when the folder is missing; for a
    real-data profile (paper, la-real) it must have been prepared with ``versemi prepare`` (a
    :class:`VersemiError` says how). Concurrent callers generate the data once (a folder lock).
    """
    prof = get_profile(profile)
    prepared = prepared_dir(data_dir, profile)
    if (prepared / "manifest.json").is_file():
        return prepared
    if not prof.is_phantom:
        raise VersemiError(f"{prepared}: no prepared data for profile {profile!r}; run `versemi prepare "
                           f"--src <your raw data> --out {prepared} --profile {profile}` first")
    root = Path(data_dir) / profile
    with folder_lock(root, "phantom data"):   # two notebooks starting at once generate it once
        if not (prepared / "manifest.json").is_file():
            generate(root / "raw", profile=profile, seed=seed)
            prepare(ALL_DATASETS, root / "raw", prepared, profile=profile, seed=seed)
    return prepared
