"""Unseen-site phantoms in the BTCV layout: the external spleen test set of the phantom profiles.

The paper tests generalisation on BTCV, abdominal CT from another hospital than MSD Task09 Spleen. These
phantoms stand in for it: the same abdominal anatomy generator as the MSD-spleen phantoms
(:func:`~versemi.data.phantoms.abdomen.abdomen_ct`) seen through another scanner and protocol, written in
BTCV's raw layout (read by :func:`versemi.data.readers.btcv.list_btcv`)::

    <out>/BTCV/RawData/Training/img/img0001.nii.gz      CT, int16 HU, NIfTI affine as the MSD phantoms
    <out>/BTCV/RawData/Training/label/label0001.nii.gz  13-organ map, BTCV codes (spleen 1, kidneys 2/3, liver 6,
                                                         stomach 7, aorta 8, IVC 9, pancreas 11; the organs the
                                                         phantom lacks - gallbladder, oesophagus, portal vein,
                                                         adrenals - are absent)
    <out>/BTCV/hidden_labels/btcv/btcv_0001.nii.gz       complete hidden map (codes STRUCTURES), legend.json
    <out>/BTCV/PHANTOMS.json                             provenance (written last: marks the folder complete)

What differs from the MSD-spleen phantoms (per case draws U(lo, hi); the MSD values from
``abdomen.py`` / ``trunk.py`` / :class:`~versemi.config.PhantomSpec`):

=====================  ============================================  =========================================
quantity               MSD-spleen phantoms                           unseen site (:class:`UnseenSite`)
=====================  ============================================  =========================================
HU calibration         exact (gain 1, offset 0)                      gain U(1.02, 1.06), offset U(5, 15) HU
noise                  white, sd U(10, 20) HU                        in-plane correlated (Gaussian kernel
                                                                     sigma U(0.9, 1.3) voxels), sd U(22, 32) HU
partial-volume blur    0.6 voxel of the finest axis                  0.7 voxel in-plane, 0.45 slice along z
slice thickness        demo U(2.5, 3.5) mm, smoke U(6, 8) mm         demo U(4.0, 5.0) mm, smoke U(8.0, 9.5) mm
field of view          demo U(320, 400) mm, smoke U(300, 340) mm     demo U(280, 330) mm, smoke U(260, 300) mm
contrast phase         mixed: c ~ U(0, 1); spleen U(45, 55) + 20c,   portal-venous (BTCV's phase), full
                       liver U(52, 66) + 15c, kidneys U(30, 36) + 5c  enhancement: spleen U(70, 90), liver
                       pancreas U(35, 45) + 8c, aorta 40 + 110c,     U(68, 85), kidneys U(110, 150), pancreas
                       IVC 40 + 70c                                  U(55, 75), aorta U(140, 180), IVC
                                                                     U(100, 130) HU
organ texture          4 HU at 6 mm                                  6 HU at 5 mm
spleen shape           scaled ellipsoid (x U(0.75, 1.3)) with notch  the same, surface pushed out by demo
                                                                     U(2, 6) mm / smoke U(4, 9) mm and
                                                                     lobulated by +- demo U(1.5, 3) / smoke
                                                                     U(3, 5) mm (20 mm correlation): larger,
                                                                     more irregular spleens
matrix (voxels)        PhantomSpec ct_xy, ct_z                       the same
=====================  ============================================  =========================================

Case count: the 30 BTCV training scans (ids 1-10, 21-40) in ``demo``, the first 4 in ``smoke``. Every case is
drawn from its own generator seeded by ``(seed, 3, crc32(name), attempt, SITE_TAG)``: deterministic under
(profile, seed), independent of the other cases, and never equal to an MSD-spleen draw.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from threadpoolctl import threadpool_limits

from versemi.data.readers.btcv import BTCV_CODES, BTCV_TRAINING_IDS, btcv_case_name, btcv_files
from versemi.data.registry import STRUCTURES
from versemi.utils import VersemiError, atomic_write_text

from .abdomen import abdomen_ct
from .cases import MIN_TARGET_VOXELS, PhantomCase, decimal_round, phantom_spec
from .geometry import N_CODES, S, smooth_fields, uniform
from .trunk import ct_tissue_table
from .writers import ras_affine, save_nifti

UNSEEN_GENERATOR = "versemi.data.phantoms.unseen"
UNSEEN_VERSION = "1.0"
BTCV_FOLDER = "BTCV"
SITE_TAG = 0xB7C5   # separates the unseen site's draws from every MSD-phantom draw

#: Portal-venous enhancement of the unseen site (HU before calibration).
PORTAL_VENOUS = {"spleen": (70.0, 90.0), "liver": (68.0, 85.0), "kidney_left": (110.0, 150.0),
                 "pancreas": (55.0, 75.0), "aorta": (140.0, 180.0), "ivc": (100.0, 130.0),
                 "bowel": (15.0, 35.0), "stomach": (5.0, 20.0)}


@dataclass(frozen=True)
class UnseenSite:
    """Scanner and protocol of the unseen site under one profile (ranges are per-case U(lo, hi) draws)."""

    n_cases: int
    fov_mm: tuple[float, float]          # in-plane field of view
    dz_mm: tuple[float, float]           # slice thickness (= slice spacing)
    spleen_grow_mm: tuple[float, float]  # outward push of the spleen surface
    spleen_lobulation_mm: tuple[float, float]
    hu_gain: tuple[float, float] = (1.02, 1.06)
    hu_offset: tuple[float, float] = (5.0, 15.0)
    noise_hu: tuple[float, float] = (22.0, 32.0)
    noise_corr_vox: tuple[float, float] = (0.9, 1.3)
    blur_xy_vox: float = 0.7
    blur_z_vox: float = 0.45
    texture_hu: float = 6.0
    texture_mm: float = 5.0
    lobulation_corr_mm: float = 20.0
    phase: str = "portal-venous"


UNSEEN_SITES: dict[str, UnseenSite] = {
    "smoke": UnseenSite(4, (260.0, 300.0), (8.0, 9.5), (4.0, 9.0), (3.0, 5.0)),
    "demo": UnseenSite(30, (280.0, 330.0), (4.0, 5.0), (2.0, 6.0), (1.5, 3.0)),
}


def unseen_site(profile: str) -> UnseenSite:
    """The unseen site of a phantom profile; any other profile is a :class:`VersemiError`."""
    phantom_spec(profile)   # unknown / real-data profiles: the phantom modules' error
    if profile not in UNSEEN_SITES:
        raise VersemiError(f"profile {profile!r} has no unseen-site phantoms; profiles with them: "
                           f"{', '.join(UNSEEN_SITES)}")
    return UNSEEN_SITES[profile]


def unseen_case_ids(profile: str) -> list[str]:
    """Case names of the unseen site: the BTCV training ids (btcv_0001 ...), the first ``n_cases``."""
    return [btcv_case_name(n) for n in BTCV_TRAINING_IDS[: unseen_site(profile).n_cases]]


def to_btcv(labels: np.ndarray) -> np.ndarray:
    """A phantom's hidden map (codes STRUCTURES) -> the BTCV 13-organ map (uint8; organs BTCV does not
    label, and those the phantom lacks, are 0)."""
    lut = np.zeros(N_CODES, dtype=np.uint8)
    for organ, code in BTCV_CODES.items():
        if organ in S:
            lut[S[organ]] = code
    return lut[labels]


def correlated_noise(rng, shape, sd: float, corr_vox: float) -> np.ndarray:
    """float32 noise of standard deviation ``sd`` correlated within each slice (Gaussian kernel of
    ``corr_vox`` voxels in x and y, none along z: a soft reconstruction kernel)."""
    w = rng.standard_normal(tuple(shape), dtype=np.float32)
    if corr_vox > 0:
        w = ndimage.gaussian_filter(w, (corr_vox, corr_vox, 0.0), mode="wrap")
    return w * np.float32(sd / max(float(w.std()), 1e-12))


def _axes(shape, spacing):
    return [((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32) for n, s in zip(shape, spacing)]


def reshape_spleen(rng, labels: np.ndarray, spacing, site: UnseenSite) -> tuple[np.ndarray, dict]:
    """Push the spleen surface out by ``spleen_grow_mm`` plus a smooth +-``spleen_lobulation_mm`` field,
    into fat and bowel only (the grown part connected to the spleen); voxels it leaves become fat.
    Returns the new map and {grow_mm, lobulation_mm, spleen_ml_drawn}."""
    sp = labels == S["spleen"]
    grow, lob = uniform(rng, *site.spleen_grow_mm), uniform(rng, *site.spleen_lobulation_mm)
    field = smooth_fields(rng, _axes(labels.shape, spacing), site.lobulation_corr_mm)[0]
    info = {"grow_mm": round(grow, 3), "lobulation_mm": round(lob, 3),
            "spleen_ml_drawn": round(float(sp.sum()) * float(np.prod(spacing)) / 1000.0, 3)}
    if not sp.any():
        return labels, info
    sdf = (ndimage.distance_transform_edt(~sp, sampling=spacing)
           - ndimage.distance_transform_edt(sp, sampling=spacing))
    allowed = sp | (labels == S["fat"]) | (labels == S["bowel"])
    new = (sdf <= grow + lob * field) & allowed
    comp, _ = ndimage.label(new)
    keep = np.unique(comp[new & sp])
    new &= np.isin(comp, keep[keep > 0])
    out = labels.copy()
    out[sp & ~new] = S["fat"]
    out[new] = S["spleen"]
    return out, info


def render_site(rng, labels: np.ndarray, spacing, site: UnseenSite) -> tuple[np.ndarray, dict]:
    """The unseen site's CT (float32 HU in [-1024, 3071]) of a hidden map: portal-venous tissue values,
    kidney medulla, bone cortex, bowel gas and the stomach's air cap, organ texture, HU calibration,
    partial-volume blur, in-plane correlated noise. Returns (hu, the drawn parameters)."""
    axes = _axes(labels.shape, spacing)
    lut = ct_tissue_table(rng, fat_hu=(-110, -85), bone_hu=(300, 500))
    for organ, rng_hu in PORTAL_VENOUS.items():
        lut[S[organ]] = uniform(rng, *rng_hu)
    lut[S["kidney_right"]] = lut[S["kidney_left"]]
    extra = np.zeros(labels.shape, dtype=np.float32)
    kid = (labels == S["kidney_left"]) | (labels == S["kidney_right"])
    depth = ndimage.distance_transform_edt(kid, sampling=spacing)
    extra[kid & (depth > uniform(rng, 5, 8))] -= np.float32(uniform(rng, 20, 35))
    bone = labels == S["bone"]
    extra[bone & ~ndimage.binary_erosion(bone)] += np.float32(uniform(rng, 250, 450))
    gas = smooth_fields(rng, axes, 10.0)[0]
    extra[(labels == S["bowel"]) & (gas > np.float32(uniform(rng, 1.3, 1.9)))] -= np.float32(uniform(rng, 700, 950))
    st = labels == S["stomach"]
    if st.any():
        ys = np.flatnonzero(st.any(axis=(0, 2)))
        cut = ys[0] + uniform(rng, 0.15, 0.35) * (ys[-1] - ys[0])
        cap = st & (np.arange(labels.shape[1])[None, :, None] <= cut)
        extra[cap] = np.float32(-1000.0) - lut[S["stomach"]]
    amp = np.zeros(N_CODES, dtype=np.float32)
    amp[[S["liver"], S["spleen"], S["pancreas"], S["kidney_left"], S["kidney_right"]]] = site.texture_hu
    amp[[S["bowel"], S["fat"], S["muscle"]]] = 8.0
    amp[S["bone"]] = 60.0
    hu = lut[labels] + extra + amp[labels] * smooth_fields(rng, axes, site.texture_mm)[0]
    gain, offset = uniform(rng, *site.hu_gain), uniform(rng, *site.hu_offset)
    hu = hu * np.float32(gain) + np.float32(offset)
    hu = ndimage.gaussian_filter(hu, (site.blur_xy_vox, site.blur_xy_vox, site.blur_z_vox), mode="nearest")
    sd, corr = uniform(rng, *site.noise_hu), uniform(rng, *site.noise_corr_vox)
    hu += correlated_noise(rng, hu.shape, sd, corr)
    np.clip(hu, -1024, 3071, out=hu)
    info = {"phase": site.phase, "hu_gain": round(gain, 4), "hu_offset": round(offset, 2), "noise_hu": round(sd, 2),
            "noise_corr_vox": round(corr, 3), "spleen_hu": round(float(lut[S["spleen"]]), 2),
            "liver_hu": round(float(lut[S["liver"]]), 2)}
    return hu.astype(np.float32), info


def _case_rng(seed: int, name: str, attempt: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), 3, zlib.crc32(name.encode()), attempt,
                                                         SITE_TAG]))


def build_unseen_case(name: str, profile: str, seed: int) -> PhantomCase:
    """One unseen-site case (deterministic in (profile, seed, name)): ``labels`` the complete hidden map
    (codes STRUCTURES), ``image`` HU; a draw whose spleen has fewer than MIN_TARGET_VOXELS voxels is
    redrawn with the next attempt number."""
    p, site = phantom_spec(profile), unseen_site(profile)
    for attempt in range(20):
        rng = _case_rng(seed, name, attempt)
        n = int(rng.integers(p.ct_xy[0], p.ct_xy[1] + 1))
        nz = int(rng.integers(p.ct_z[0], p.ct_z[1] + 1))
        fov = uniform(rng, *site.fov_mm)
        sxy, sz = decimal_round(fov / n), decimal_round(uniform(rng, *site.dz_mm), 2)
        spacing = (sxy, sxy, sz)
        ph = abdomen_ct(rng, (n, n, nz), spacing, thin_target_scale=p.thin_target_scale)
        labels, shape_info = reshape_spleen(rng, ph.labels, spacing, site)
        if int((labels == S["spleen"]).sum()) < MIN_TARGET_VOXELS:
            continue
        hu, render_info = render_site(rng, labels, spacing, site)
        origin = (decimal_round(-(n - 1) / 2 * sxy + uniform(rng, -5, 5), 3),
                  decimal_round(-(n - 1) / 2 * sxy + uniform(rng, -30, 10), 3),
                  decimal_round(uniform(rng, -350, -50), 3))
        info = {"attempt": attempt, "fov_mm": round(n * sxy, 2), **shape_info,
                "spleen_ml": round(float((labels == S["spleen"]).sum()) * sxy * sxy * sz / 1000.0, 3),
                **render_info}
        return PhantomCase(name, labels, hu, spacing, origin, info)
    raise RuntimeError(f"unseen-site phantom {name}: no valid draw in 20 attempts")  # a generator bug


def _save_nifti(path: Path, data: np.ndarray, spacing, origin_lps) -> None:
    """NIfTI with the MSD phantoms' geometry (:func:`~versemi.data.phantoms.writers.ras_affine`)."""
    save_nifti(path, data, ras_affine(spacing, origin_lps))


def read_provenance(btcv_dir) -> dict | None:
    """``<btcv_dir>/PHANTOMS.json`` when this generator wrote it, else None."""
    path = Path(btcv_dir) / "PHANTOMS.json"
    try:
        prov = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return prov if isinstance(prov, dict) and prov.get("generator") == UNSEEN_GENERATOR else None


def unseen_complete(btcv_dir, profile: str, seed: int) -> bool:
    """Whether ``btcv_dir`` holds this generator's complete unseen-site phantoms of (profile, seed)."""
    prov = read_provenance(btcv_dir)
    return bool(prov) and prov.get("version") == UNSEEN_VERSION and prov.get("profile") == profile \
        and prov.get("seed") == int(seed) and prov.get("complete") is True


def generate_unseen(out, profile: str = "demo", seed: int = 2333) -> Path:
    """Write the unseen-site phantoms of ``profile`` into ``<out>/BTCV`` (built in a staging folder and
    swapped in; the same arguments rewrite identical bytes) and return that folder. A ``BTCV`` folder not
    written by this generator (real data) is never overwritten."""
    site = unseen_site(profile)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise VersemiError(f"phantom seed must be a non-negative integer, got {seed!r}")
    out = Path(out)
    final = out / BTCV_FOLDER
    if final.exists() and read_provenance(final) is None:
        raise VersemiError(f"{final}: exists and was not written by {UNSEEN_GENERATOR} (real BTCV data?); "
                           "refusing to overwrite it")
    stage, old = out / f".staging-{BTCV_FOLDER}", out / f".old-{BTCV_FOLDER}"
    for d in (stage, old):
        if d.exists():
            shutil.rmtree(d)
    cases = {}
    try:
        with threadpool_limits(limits=1):
            for name in unseen_case_ids(profile):
                case = build_unseen_case(name, profile, int(seed))
                img_name, lab_name = btcv_files(int(name.split("_")[1]))
                raw = stage / "RawData" / "Training"
                _save_nifti(raw / "img" / img_name, np.clip(np.rint(case.image), -1024, 3071).astype(np.int16),
                            case.spacing, case.origin_lps)
                _save_nifti(raw / "label" / lab_name, to_btcv(case.labels), case.spacing, case.origin_lps)
                _save_nifti(stage / "hidden_labels" / "btcv" / f"{name}.nii.gz", case.labels, case.spacing,
                            case.origin_lps)
                cases[name] = {"shape": list(case.labels.shape), "spacing": list(case.spacing), **case.info}
        atomic_write_text(stage / "hidden_labels" / "legend.json", json.dumps(STRUCTURES, indent=1) + "\n")
        prov = {"generator": UNSEEN_GENERATOR, "version": UNSEEN_VERSION, "profile": profile, "seed": int(seed),
                "complete": True, "layout": "RawData/Training/{img,label}: BTCV as distributed",
                "btcv_codes": BTCV_CODES, "site": asdict(site), "portal_venous_hu": PORTAL_VENOUS, "cases": cases}
        atomic_write_text(stage / "PHANTOMS.json", json.dumps(prov, indent=1) + "\n")
        if final.exists():
            os.replace(final, old)
        os.replace(stage, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return final
