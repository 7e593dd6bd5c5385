"""Unseen-site phantoms in the BTCV layout: layout, determinism, labels, and the site shift in numbers."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from versemi.data.phantoms import build_case, case_ids, file_digest, generate_unseen
from versemi.data.phantoms.unseen import (
    UNSEEN_SITES,
    UnseenSite,
    build_unseen_case,
    correlated_noise,
    read_provenance,
    reshape_spleen,
    to_btcv,
    unseen_case_ids,
    unseen_complete,
    unseen_site,
)
from versemi.data.readers.btcv import BTCV_CODES, BTCV_TRAINING_IDS, list_btcv
from versemi.data.registry import STRUCTURES as S
from versemi.utils import VersemiError

SEED = 7


@pytest.fixture(scope="module")
def btcv(tmp_path_factory) -> Path:
    return generate_unseen(tmp_path_factory.mktemp("unseen") / "raw", profile="smoke", seed=SEED)


def test_layout_case_ids_and_provenance(btcv):
    assert btcv.name == "BTCV"
    files = sorted(file_digest(btcv))
    names = unseen_case_ids("smoke")
    assert names == ["btcv_0001", "btcv_0002", "btcv_0003", "btcv_0004"]
    assert files == sorted(["PHANTOMS.json", "hidden_labels/legend.json"]
                           + [f"RawData/Training/img/img000{i}.nii.gz" for i in range(1, 5)]
                           + [f"RawData/Training/label/label000{i}.nii.gz" for i in range(1, 5)]
                           + [f"hidden_labels/btcv/btcv_000{i}.nii.gz" for i in range(1, 5)])
    demo = unseen_case_ids("demo")
    assert len(demo) == 30 == UNSEEN_SITES["demo"].n_cases
    assert [int(n.split("_")[1]) for n in demo] == list(BTCV_TRAINING_IDS) == [*range(1, 11), *range(21, 41)]
    prov = read_provenance(btcv)
    assert prov["profile"] == "smoke" and prov["seed"] == SEED and set(prov["cases"]) == set(names)
    assert unseen_complete(btcv, "smoke", SEED) and not unseen_complete(btcv, "smoke", SEED + 1)
    img = nib.load(str(btcv / "RawData/Training/img/img0001.nii.gz"))
    assert img.get_data_dtype() == np.int16 and img.header.get_zooms()[2] >= 8.0


def test_deterministic_under_profile_and_seed(btcv, tmp_path):
    again = generate_unseen(tmp_path / "a", profile="smoke", seed=SEED)
    assert file_digest(again) == file_digest(btcv)
    generate_unseen(tmp_path / "a", profile="smoke", seed=SEED)   # in place: same bytes
    assert file_digest(again) == file_digest(btcv)
    other = file_digest(generate_unseen(tmp_path / "b", profile="smoke", seed=SEED + 1))
    assert other["RawData/Training/img/img0001.nii.gz"] != file_digest(btcv)["RawData/Training/img/img0001.nii.gz"]
    a, b = build_unseen_case("btcv_0002", "smoke", SEED), build_unseen_case("btcv_0002", "smoke", SEED)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.info == b.info


def test_labels_are_consistent(btcv):
    for ref in list_btcv(btcv):
        c = ref.load()
        np.testing.assert_array_equal(c.organs, to_btcv(c.hidden))
        np.testing.assert_array_equal(c.label, (c.hidden == S["spleen"]).astype(np.uint8))
        assert c.legend == S and c.label.sum() >= 8
        assert set(np.unique(c.organs).tolist()) <= {0, 1, 2, 3, 6, 7, 8, 9, 11}
        assert {1, 6, 8} <= set(np.unique(c.organs).tolist())   # spleen, liver, aorta in every scan
    lab = np.array([S["spleen"], S["kidney_right"], S["kidney_left"], S["liver"], S["pancreas"], S["bowel"],
                    S["fat"], S["aorta"], S["ivc"], S["stomach"]], dtype=np.uint8)
    assert to_btcv(lab).tolist() == [1, 2, 3, 6, 11, 0, 0, 8, 9, 7]
    assert BTCV_CODES["spleen"] == 1 and len(BTCV_CODES) == 13


def test_the_site_shift_is_there_in_numbers(btcv):
    site = unseen_site("smoke")
    msd = [build_case("spleen", n, "smoke", SEED) for n in case_ids("spleen", "smoke")]
    uns = [ref.load() for ref in list_btcv(btcv)]
    info = read_provenance(btcv)["cases"]
    # slice thickness and field of view: outside the MSD phantoms' ranges (smoke: 6-8 mm, 300-340 mm)
    assert min(c.spacing[2] for c in uns) >= 8.0 > max(c.spacing[2] for c in msd)
    assert all(site.fov_mm[0] - 8 <= v["fov_mm"] <= site.fov_mm[1] + 8 for v in info.values())
    assert max(v["fov_mm"] for v in info.values()) < min(c.labels.shape[0] * c.spacing[0] for c in msd)
    # portal-venous enhancement and calibration: brighter spleen (the MSD spleens: 45-75 HU)
    msd_hu = np.mean([c.image[c.labels == S["spleen"]].mean() for c in msd])
    uns_hu = np.mean([c.image[c.hidden == S["spleen"]].mean() for c in uns])
    assert uns_hu > msd_hu + 15, (uns_hu, msd_hu)
    # noise: above the MSD phantoms' 10-20 HU and correlated in-plane
    assert all(v["noise_hu"] >= 22 and v["noise_corr_vox"] >= 0.9 for v in info.values())
    # spleen: every case grew from its drawn ellipsoid
    assert all(v["spleen_ml"] > v["spleen_ml_drawn"] for v in info.values())
    assert all(1.02 <= v["hu_gain"] <= 1.06 and 5 <= v["hu_offset"] <= 15 for v in info.values())


def test_correlated_noise_has_its_sd_and_in_plane_correlation():
    w = correlated_noise(np.random.default_rng(0), (64, 64, 16), sd=25.0, corr_vox=1.0)
    assert w.dtype == np.float32 and w.std() == pytest.approx(25.0, rel=1e-3)
    lag_x = np.corrcoef(w[:-1].ravel(), w[1:].ravel())[0, 1]
    lag_z = np.corrcoef(w[..., :-1].ravel(), w[..., 1:].ravel())[0, 1]
    assert lag_x > 0.6 and abs(lag_z) < 0.05   # exp(-1/4) = 0.78 in-plane, none across slices
    white = correlated_noise(np.random.default_rng(0), (64, 64, 16), sd=10.0, corr_vox=0.0)
    assert abs(np.corrcoef(white[:-1].ravel(), white[1:].ravel())[0, 1]) < 0.05


def test_reshape_spleen_grows_into_fat_only():
    labels = np.full((40, 40, 20), S["fat"], dtype=np.uint8)
    x, y, z = np.meshgrid(*(np.arange(n) for n in labels.shape), indexing="ij")
    labels[(x - 20) ** 2 + (y - 20) ** 2 + ((z - 10) * 2) ** 2 <= 64] = S["spleen"]
    labels[:, 30:, :] = S["muscle"]
    labels[:, :, :3] = S["liver"]
    site = UnseenSite(1, (1, 1), (1, 1), spleen_grow_mm=(3.0, 3.0), spleen_lobulation_mm=(0.0, 0.0))
    out, info = reshape_spleen(np.random.default_rng(0), labels, (1.0, 1.0, 2.0), site)
    grown = (out == S["spleen"]) & (labels != S["spleen"])
    assert grown.sum() > 0.5 * (labels == S["spleen"]).sum()
    assert (labels[grown] == S["fat"]).all() and ((out == S["spleen"]) | (labels != S["spleen"])).all()
    assert (out[labels == S["muscle"]] == S["muscle"]).all() and (out[labels == S["liver"]] == S["liver"]).all()
    assert info["grow_mm"] == 3.0 and info["spleen_ml_drawn"] == pytest.approx((labels == S["spleen"]).sum() * 2e-3)


def test_bad_profiles_seeds_and_real_folders(tmp_path):
    with pytest.raises(VersemiError, match="unknown phantom profile 'nope'"):
        unseen_site("nope")
    with pytest.raises(VersemiError, match="profile 'paper' has no phantoms"):
        unseen_case_ids("paper")
    with pytest.raises(VersemiError, match="non-negative integer"):
        generate_unseen(tmp_path, "smoke", seed=-1)
    (tmp_path / "BTCV" / "RawData").mkdir(parents=True)
    with pytest.raises(VersemiError, match="BTCV: exists and was not written by .*refusing to overwrite"):
        generate_unseen(tmp_path, "smoke", seed=SEED)
    assert (tmp_path / "BTCV" / "RawData").is_dir()
