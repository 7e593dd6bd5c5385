"""Which phantom cases a profile generates, and how one case is drawn (deterministic in seed and name).

Every case is drawn from its own generator seeded by ``(seed, task id, crc32(case name), attempt)``, so a
case does not depend on the others nor on the profile's case list. The case counts and raw volume sizes
of a profile are its :class:`~versemi.config.PhantomSpec` (``versemi/config.py``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from versemi.config import PROFILES, PhantomSpec, get_profile, profile_names
from versemi.data.registry import DATASETS, STRUCTURES, authors_split
from versemi.utils import VersemiError

from .abdomen import abdomen_ct
from .geometry import N_CODES
from .heart import heart_mri
from .thorax import thorax_ct

MIN_TARGET_VOXELS = 8


def phantom_spec(profile: str) -> PhantomSpec:
    """The phantom part of ``profile``; an unknown profile or one without phantoms (a real-data profile)
    is a :class:`VersemiError` naming the phantom profiles."""
    names = ", ".join(profile_names("phantom"))
    if profile not in PROFILES:
        raise VersemiError(f"unknown phantom profile {profile!r}; expected one of {names}")
    spec = get_profile(profile).phantoms
    if spec is None:
        raise VersemiError(f"profile {profile!r} has no phantoms (it runs on real data); "
                           f"phantom profiles: {names}")
    return spec


def check_dataset(name: str) -> str:
    """``name`` if it is one of the four datasets, else a :class:`VersemiError`."""
    if name not in DATASETS:
        raise VersemiError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return name


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


def split_names(dataset: str, profile: str) -> tuple[list[str], list[str], list[str]]:
    """(train, test, extra unlabeled) case names of a profile, in the authors' naming."""
    p = phantom_spec(profile)
    split = authors_split(check_dataset(dataset))
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
    train, test, extra = split_names(dataset, profile)
    return train + test + extra


@dataclass
class PhantomCase:
    """One drawn case before it is written (arrays (x, y, z) as in ``versemi/data/phantoms/__init__.py``)."""

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


def decimal_round(v: float, nd: int = 4) -> float:
    """Round so that the value survives a DICOM decimal string unchanged."""
    return float(f"{v:.{nd}f}")


def _build_ct(dataset: str, name: str, p: PhantomSpec, rng) -> PhantomCase:
    n = int(rng.integers(p.ct_xy[0], p.ct_xy[1] + 1))
    nz = int(rng.integers(p.ct_z[0], p.ct_z[1] + 1))
    sxy = decimal_round(rng.uniform(*p.ct_fov) / n)
    sz = decimal_round(rng.uniform(*p.ct_dz), 2)
    builder = thorax_ct if dataset == "lung" else abdomen_ct
    ph = builder(rng, (n, n, nz), (sxy, sxy, sz), thin_target_scale=p.thin_target_scale)
    ox = decimal_round(-(n - 1) / 2 * sxy + rng.uniform(-5, 5), 3)
    oy = decimal_round(-(n - 1) / 2 * sxy + rng.uniform(-30, 10), 3)
    oz = decimal_round(rng.uniform(-350, -50), 3)
    return PhantomCase(name, ph.labels, ph.image, (sxy, sxy, sz), (ox, oy, oz), ph.info)


def _build_la(name: str, p: PhantomSpec, rng) -> PhantomCase:
    n = int(rng.integers(p.la_xy[0], p.la_xy[1] + 1))
    nz = int(rng.integers(p.la_z[0], p.la_z[1] + 1))
    sxy = decimal_round(rng.uniform(*p.la_dxy))
    sz = decimal_round(rng.uniform(*p.la_dz))
    ph = heart_mri(rng, (n, n, nz), (sxy, sxy, sz))
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
    return PhantomCase(name, ph.labels[crop], full[crop], (sxy, sxy, sz), (0.0, 0.0, 0.0), ph.info,
                       full_image=full, crop=crop)


def _valid(dataset: str, case: PhantomCase) -> bool:
    counts = np.bincount(case.labels.ravel(), minlength=N_CODES)
    need = [DATASETS[dataset].structure] + (["pancreas", "spleen"] if dataset in ("pancreas", "spleen") else [])
    return all(counts[STRUCTURES[k]] >= MIN_TARGET_VOXELS for k in need)


def build_case(dataset: str, name: str, profile: str, seed: int) -> PhantomCase:
    """Generate one case (deterministic in (seed, dataset, name)); a draw whose target or required
    organs come out smaller than MIN_TARGET_VOXELS voxels is redrawn with the next attempt number."""
    p = phantom_spec(profile)
    for attempt in range(20):
        rng = _case_rng(seed, dataset, name, attempt)
        case = _build_la(name, p, rng) if dataset == "la" else _build_ct(dataset, name, p, rng)
        if _valid(dataset, case):
            case.info["attempt"] = attempt
            return case
    raise RuntimeError(f"phantom {dataset}/{name}: no valid draw in 20 attempts")  # a generator bug

