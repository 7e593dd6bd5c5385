"""The external BTCV test set: prepared like the training spleen, loaded like a split, verified, described."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from versemi.data.ensure import ensure_data
from versemi.data.external import (
    EXTERNAL_SETS,
    case_stats,
    ensure_external,
    external_dir,
    external_params,
    get_external,
    load_external_cases,
    load_external_manifest,
    prepare_external,
    site_shift,
    verify_external,
)
from versemi.data.loaders import load_split_cases
from versemi.data.phantoms import file_digest
from versemi.data.registry import DATASETS, STRUCTURES
from versemi.utils import VersemiError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Smoke training data, its digests, then the external set ensured beside it."""
    data_dir = tmp_path_factory.mktemp("ext") / "data"
    training = ensure_data(data_dir, "smoke")
    before = file_digest(training)
    ext = ensure_external(data_dir, "smoke")
    return data_dir, training, before, ext, data_dir / "smoke" / "raw" / "BTCV"


def test_external_sets_and_folders(data):
    data_dir, _, _, ext, raw = data
    es = get_external("btcv")
    assert list(EXTERNAL_SETS) == ["btcv"] and es.task == "spleen" and es.task_id == 3 == DATASETS["spleen"].task_id
    assert es.raw_folder == "BTCV" and es.n_cases == 30 and "btcv" not in DATASETS
    assert ext == external_dir(data_dir, "smoke") == data_dir / "smoke" / "external" / "btcv"
    assert external_dir(data_dir, "smoke", seed=5) == data_dir / "smoke-seed5" / "external" / "btcv"
    assert (raw / "RawData" / "Training" / "img" / "img0001.nii.gz").is_file()
    with pytest.raises(VersemiError, match="unknown external test set 'nope'; expected one of btcv"):
        get_external("nope")


def test_prepare_then_load_like_the_training_spleen(data):
    _, training, _, ext, _ = data
    tdoc = json.loads((training / "manifest.json").read_text())
    tparams = tdoc["datasets"]["spleen"]["preprocessing"]
    doc = load_external_manifest(ext)
    assert doc["preprocessing"]["window_hu"] == tparams["window_hu"]
    assert doc["preprocessing"]["target_spacing"] == tparams["target_spacing"]
    assert {k: v for k, v in doc["preprocessing"].items() if k not in ("dataset", "prepared_like")} == \
        {k: v for k, v in tparams.items() if k != "dataset"}
    cases = load_external_cases(ext)
    ref = load_split_cases(training, "spleen", 10, "test")[0]
    assert [c["name"] for c in cases] == ["btcv_0001", "btcv_0002", "btcv_0003", "btcv_0004"]
    for c in cases:
        assert set(c) == set(ref)
        assert c["task"] == 3 and c["dataset"] == "btcv" and c["label"].dtype == np.uint8
        assert set(np.unique(c["label"]).tolist()) == {0, 1} and c["label"].shape == c["image"].shape
        assert c["image"].dtype == np.float32 and 0 <= c["image"].min() and c["image"].max() <= 1
        assert c["spacing"] == pytest.approx(tuple(tparams["target_spacing"]))
        assert min(c["image"].shape) >= tparams["min_size"]
    hid = load_external_cases(ext, hidden=True)[0]
    assert hid["hidden_legend"] == STRUCTURES
    np.testing.assert_array_equal(hid["hidden_label"] == STRUCTURES["spleen"], hid["label"] == 1)


def test_training_prepared_folder_is_unchanged(data):
    _, training, before, _, _ = data
    assert file_digest(training) == before
    assert "btcv" not in json.loads((training / "manifest.json").read_text())["datasets"]


def test_deterministic_and_not_prepared_twice(data, tmp_path):
    data_dir, training, _, ext, raw = data
    stamp = (ext / "manifest.json").stat().st_mtime_ns
    assert ensure_external(data_dir, "smoke") == ext and (ext / "manifest.json").stat().st_mtime_ns == stamp
    again = tmp_path / "again"
    assert prepare_external("btcv", raw, again, training) == again / "manifest.json"
    assert file_digest(again) == file_digest(ext)


def test_prepared_again_when_made_from_other_parameters(data, tmp_path):
    data_dir, _, _, ext, _ = data
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    out = copy / "smoke" / "external" / "btcv"
    doc = json.loads((out / "manifest.json").read_text())
    doc["preprocessing"]["window_hu"] = [-100.0, 200.0]
    (out / "manifest.json").write_text(json.dumps(doc))
    assert ensure_external(copy, "smoke") == out
    assert file_digest(out) == file_digest(ext)


def test_verify_round_trip(data, tmp_path):
    _, training, _, ext, raw = data
    assert verify_external("btcv", raw) == [] and verify_external("btcv", raw, ext) == []
    bad = tmp_path / "BTCV"
    shutil.copytree(raw, bad)
    lab = bad / "RawData" / "Training" / "label"
    (lab / "label0002.nii.gz").unlink()
    shutil.copy(lab / "label0001.nii.gz", lab / "label0009.nii.gz")
    img = nib.load(str(lab / "label0003.nii.gz"))
    arr = np.asarray(img.dataobj)
    nib.save(nib.Nifti1Image(np.where(arr == 1, 0, arr).astype(np.uint8), img.affine), str(lab / "label0003.nii.gz"))
    problems = verify_external("btcv", bad)
    assert len(problems) == 3
    assert "label0009.nii.gz: label without an image" in problems[0]
    assert "label0002.nii.gz: label file is missing for image img0002.nii.gz" in problems[1]
    assert "label0003.nii.gz: no spleen voxels" in problems[2]
    out = tmp_path / "out"
    with pytest.raises(VersemiError, match=r"3 problem\(s\) in the raw btcv data(.|\n)*label0009(.|\n)*label0002"):
        prepare_external("btcv", bad, out, training, verify=True)
    assert not (out / "manifest.json").exists()
    # the prepared side of the round trip: a deleted case file and a case the raw data no longer has
    tampered = tmp_path / "tampered"
    shutil.copytree(ext, tampered)
    (tampered / "cases" / "btcv_0004.h5").unlink()
    assert any("btcv_0004.h5: prepared case file is missing" in p for p in verify_external("btcv", raw, tampered))
    shutil.copytree(ext, tampered, dirs_exist_ok=True)   # restored
    fewer = tmp_path / "fewer"
    shutil.copytree(raw, fewer)
    for p in fewer.rglob("*0004.nii.gz"):
        p.unlink()
    assert verify_external("btcv", fewer, tampered) == [f"{tampered / 'cases' / 'btcv_0004.h5'}: prepared case has "
                                                        "no raw case any more"]


def test_bad_inputs(data, tmp_path):
    _, training, _, ext, raw = data
    with pytest.raises(VersemiError, match="missing.*source folder does not exist"):
        prepare_external("btcv", tmp_path / "missing", tmp_path / "o", training)
    no_spleen = tmp_path / "prepared"
    shutil.copytree(training, no_spleen)
    doc = json.loads((no_spleen / "manifest.json").read_text())
    del doc["datasets"]["spleen"]
    (no_spleen / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(VersemiError, match="the spleen training data is not prepared there.*versemi prepare --dataset spleen"):
        external_params("btcv", no_spleen)
    with pytest.raises(VersemiError, match="does not exist.*prepare it first"):
        load_external_cases(tmp_path / "nothing")
    with pytest.raises(VersemiError, match="not a versemi external manifest"):
        load_external_cases(training)


def test_real_profiles_say_what_to_do(data, tmp_path):
    _, training, _, _, _ = data
    with pytest.raises(VersemiError, match=r"paper/prepared: no prepared training data.*versemi prepare --src"):
        ensure_external(tmp_path, "paper")
    shutil.copytree(training, tmp_path / "paper" / "prepared")
    raw = tmp_path / "paper" / "raw" / "BTCV"
    with pytest.raises(VersemiError) as e:
        ensure_external(tmp_path, "paper")
    msg = str(e.value)
    assert msg.startswith(f"{raw}: the raw btcv data are missing")
    assert "syn3193805" in msg and f"{raw}/RawData/Training/img/img0001.nii.gz" in msg
    assert not raw.exists()   # never generated for a real profile


def test_site_shift_describes_the_shift(data):
    data_dir, training, _, ext, raw = data
    df = site_shift(training, ext)
    assert list(df.columns) == ["MSD Spleen", "unseen site", "difference", "measured on"]
    assert df.index.name == "quantity" and len(df) == 11
    assert df.loc["slice thickness (mm)", "unseen site"] > df.loc["slice thickness (mm)", "MSD Spleen"] + 1
    assert df.loc["field of view (mm)", "difference"] < -20
    assert df.loc["spleen intensity mean (HU)", "difference"] > 15
    assert df.loc["noise lag-1 correlation (in-plane)", "difference"] > 0.3
    assert df.loc["labeled cases"].tolist()[:2] == [7.0, 4.0]
    raw_df = site_shift(training, ext, data_dir / "smoke" / "raw", raw)
    assert (raw_df["measured on"] == "raw scans").all()
    assert raw_df.loc["noise lag-1 correlation (in-plane)", "MSD Spleen"] < 0.2 < \
        raw_df.loc["noise lag-1 correlation (in-plane)", "unseen site"]


def test_case_stats_on_a_hand_made_volume():
    hu = np.zeros((10, 10, 4))
    spleen = np.zeros(hu.shape, bool)
    spleen[2:8, 2:8, :] = True
    hu[spleen] = 100.0
    hu[0] = -1000.0
    s = case_stats(hu, spleen, (2.0, 2.0, 5.0), (1.0, 1.0, 3.0), (300, 300, 40))
    assert s["spleen intensity mean (HU)"] == 100.0 and s["spleen intensity sd (HU)"] == 0.0
    assert s["soft-tissue intensity mean (HU)"] == 0.0 and s["spleen volume (ml)"] == pytest.approx(144 * 0.02)
    assert (s["slice thickness (mm)"], s["in-plane spacing (mm)"], s["field of view (mm)"]) == (3.0, 1.0, 300.0)
