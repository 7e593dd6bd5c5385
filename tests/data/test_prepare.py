import json
import os
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from versemi.config import get_profile
from versemi.data import prepare as P
from versemi.data.loaders import load_split_cases
from versemi.data.registry import STRUCTURES, authors_split
from versemi.utils import VersemiError

from . import factories as F

A = {d: authors_split(d) for d in ("pancreas", "la", "spleen", "lung")}
PANCREAS_NUMS = (1, 7, 13, 14, 64)          # labeled_10, labeled_20, unlabeled x2, test
SPLEEN = ("spleen_2", "spleen_9", "spleen_12", "spleen_13", "spleen_14", "spleen_46")
LUNG = ("lung_001", "lung_015", "lung_018", "lung_020", "lung_074")
LA_IDS = (A["la"]["labeled_10"][:2] + [A["la"]["labeled_20"][8]] + A["la"]["unlabeled_20"][:2] + A["la"]["test"][:1])
LUNG_TS = "lung_999"  # not in the authors' lists: unlabeled only


def build_src(root: Path) -> Path:
    for i, n in enumerate(PANCREAS_NUMS):
        F.write_pancreas_case(root, n, *F.ct_volume(seed=10 + i), seed=i)
    spleen = [(s, *F.ct_volume(seed=20 + i)) for i, s in enumerate(SPLEEN)]
    F.write_msd(root, "spleen", spleen, [("spleen_1", F.ct_volume(seed=29)[0])])
    lung = [(s, *F.ct_volume(seed=30 + i, organ_hu=20.0)) for i, s in enumerate(LUNG)]
    F.write_msd(root, "lung", lung, [(LUNG_TS, F.ct_volume(seed=39)[0])])
    F.write_la_h5(root / "LA", LA_IDS, seed=40)
    return root


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return build_src(tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="module")
def prepared(src, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "out"
    manifest = P.prepare("all", src, out, profile="smoke", seed=2333)
    return out, manifest


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_prepare_all_four_datasets(prepared, src):
    out, manifest = prepared
    assert manifest == out / "manifest.json"
    doc = P.load_manifest(out)
    assert list(doc["datasets"]) == ["pancreas", "la", "spleen", "lung"]
    for ds, entry in doc["datasets"].items():
        assert entry["task"] == {"pancreas": 1, "la": 2, "spleen": 3, "lung": 4}[ds]
        for c in entry["cases"]:
            d = P.load_case(out / c["file"])
            img, lab = d["image"], d["label"]
            assert img.dtype == np.float32 and list(img.shape) == c["shape"] == list(d["attrs"]["shape"])
            assert d["attrs"]["task"] == entry["task"] and d["attrs"]["dataset"] == ds
            assert (src / d["attrs"]["source"]).exists()
            pre = d["attrs"]["preprocessing"]
            assert pre["version"] == P.PREP_VERSION and pre["profile"] == "smoke"
            if ds == "la":
                assert pre["case"]["kept_as_is"] and img.shape == (24, 22, 12)
                assert d["attrs"]["spacing"] == [0.625] * 3
                continue
            assert min(img.shape) >= 32
            assert img.min() >= 0.0 and img.max() <= 1.0  # CT window -> [0, 1]
            assert d["attrs"]["spacing"] == pytest.approx(pre["target_spacing"])
            if c["labeled"]:
                assert set(np.unique(lab).tolist()) == {0, 1}
                assert c["label_fraction"] == pytest.approx(float(lab.mean()))
                lo, hi = pre["window_hu"]
                organ = 60.0 if ds != "lung" else 20.0
                assert float(img[lab > 0].mean()) == pytest.approx((organ - lo) / (hi - lo), abs=0.02)
            else:
                assert lab is None and c["label_fraction"] is None
    # pancreas DICOM spacing (0.7, 0.75, 2.0) is every case's: the median target keeps it
    assert doc["datasets"]["pancreas"]["preprocessing"]["target_spacing"] == [0.7, 0.75, 2.0]
    assert doc["datasets"]["lung"]["preprocessing"]["window_hu"] == [-1000.0, 400.0]


def test_manifest_splits_follow_the_authors_lists(prepared):
    doc = P.load_manifest(prepared[0])
    for ds, entry in doc["datasets"].items():
        present = {c["name"] for c in entry["cases"]}
        assert entry["complete"] is False
        assert entry["counts"]["present_authors_cases"] == len(present - {"spleen_01", LUNG_TS})
        for r in ("10", "20"):
            s = entry["splits"][r]
            assert s["labeled"] == [n for n in A[ds][f"labeled_{r}"] if n in present]
            assert s["test"] == [n for n in A[ds]["test"] if n in present]
            assert set(s["val"]) <= set(s["unlabeled"]) and len(s["val"]) >= 1
            assert not set(s["val"]) & (set(s["labeled"]) | set(s["test"]))
            assert s["unlabeled_train"] == [n for n in s["unlabeled"] if n not in s["val"]]
            assert set(s["labeled"]) | set(s["unlabeled"]) | set(s["test"]) == present
            assert not set(s["labeled"]) & set(s["unlabeled"])
        assert entry["splits"]["10"]["val"] == entry["splits"]["20"]["val"]
    pan = doc["datasets"]["pancreas"]["splits"]
    assert pan["10"]["labeled"] == ["data0001"] and pan["20"]["labeled"] == ["data0001", "data0007"]
    assert pan["10"]["unlabeled"][0] == "data0007" and pan["10"]["test"] == ["data0064"]
    assert doc["datasets"]["la"]["splits"]["10"]["labeled"] == LA_IDS[:2]
    lung = doc["datasets"]["lung"]
    assert LUNG_TS in lung["splits"]["10"]["unlabeled"] and LUNG_TS not in lung["splits"]["10"]["val"]
    assert "spleen_01" in doc["datasets"]["spleen"]["splits"]["20"]["unlabeled"]


def test_rerun_is_byte_identical(prepared, src, tmp_path):
    out, _ = prepared
    before = _files(out)
    time.sleep(1.1)  # any timestamp in the files would now differ
    P.prepare("all", src, tmp_path / "again", profile="smoke", seed=2333)
    again = _files(tmp_path / "again")
    assert sorted(again) == sorted(before)
    for k in before:
        if k != "manifest.json":
            assert again[k] == before[k], k
    assert again["manifest.json"] == before["manifest.json"]
    P.prepare("all", src, out, profile="smoke", seed=2333)  # in place: same bytes, no leftovers
    assert _files(out) == before
    P.prepare("all", src, tmp_path / "seed", profile="smoke", seed=7)
    other = json.loads((tmp_path / "seed" / "manifest.json").read_text())
    assert other["seed"] == 7


def test_verify_reports_all_problems_at_once_and_writes_nothing(tmp_path):
    src = tmp_path / "raw"
    hu, lab = F.ct_volume(seed=1)
    F.write_msd(src, "spleen", [("spleen_2", hu, lab), ("spleen_3", hu, lab)])
    (src / "Task09_Spleen" / "labelsTr" / "spleen_3.nii.gz").unlink()
    bad = hu.copy()
    bad[3, 3, 3] = np.nan
    folder = F.write_msd(src, "lung", [("lung_001", hu, lab)])
    F.write_nifti(folder / "imagesTr" / "lung_001.nii.gz", bad, F.lps_like_affine(), np.float32)
    F.write_pancreas_case(src, 1, hu, lab, pixel_spacing=(0.05, 0.05))
    out = tmp_path / "out"
    with pytest.raises(VersemiError) as ei:
        P.prepare(["pancreas", "la", "spleen", "lung"], src, out, profile="smoke", verify=True)
    msg = str(ei.value)
    assert msg.startswith("4 problem(s)")
    lines = msg.splitlines()[1:]
    assert len(lines) == 4
    assert any("PANCREAS_0001" in ln and "spacing" in ln and "0.1-10 mm" in ln for ln in lines)
    assert any("no Left Atrium" in ln for ln in lines)
    assert any("spleen_3.nii.gz" in ln and "missing label" in ln for ln in lines)
    assert any("lung_001.nii.gz" in ln and "NaN/inf" in ln for ln in lines)
    assert not out.exists()


def _visible(out: Path) -> dict[str, bytes]:
    """The output folder as a reader sees it (the staging folder of a failed run left aside)."""
    return {k: v for k, v in _files(out).items() if not k.startswith(".prepare-")}


def test_failure_midway_leaves_no_partial_output_and_the_next_run_resumes(src, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(src, raw)
    out = tmp_path / "out"
    P.prepare(["pancreas", "spleen"], raw, out, profile="smoke")
    good = _files(out)
    broken = raw / "Task09_Spleen" / "imagesTr" / "spleen_46.nii.gz"
    intact = broken.read_bytes()
    F.corrupt_gzip(broken)
    with pytest.raises(VersemiError, match="spleen_46.nii.gz.*cannot read image"):
        P.prepare(["pancreas", "spleen"], raw, out, profile="smoke")
    assert _visible(out) == good  # the previous complete output is untouched
    fresh = tmp_path / "fresh"
    with pytest.raises(VersemiError, match="spleen_46.nii.gz"):
        P.prepare(["pancreas", "spleen"], raw, fresh, profile="smoke")
    assert _visible(fresh) == {}  # no manifest, no case file where a reader looks
    staged = [k for k in _files(fresh) if k.endswith(".h5")]
    assert staged and not any("spleen_46" in k for k in staged)  # only finished cases are kept, for resuming
    with pytest.raises(VersemiError, match="fresh.*no manifest.json.*run `versemi prepare"):
        P.load_manifest(fresh)
    with pytest.raises(VersemiError, match="does not exist.*versemi prepare"):
        P.load_manifest(tmp_path / "never")
    # the raw case repaired: the next run resumes, and its output is what an uninterrupted run writes
    broken.write_bytes(intact)
    P.prepare(["pancreas", "spleen"], raw, fresh, profile="smoke")
    assert _files(fresh) == _visible(out)  # byte-identical, the staging folder gone
    os.remove(out / "spleen" / "spleen_02.h5")
    with pytest.raises(VersemiError, match="spleen_02.h5.*missing.*incomplete"):
        P.load_manifest(out)


def test_a_killed_prepare_resumes_from_its_finished_cases(src, tmp_path):
    """SIGKILL in the middle of a dataset: the finished cases are not prepared again, the result is the same."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    code = ("import sys; from versemi.data.prepare import prepare; "
            "prepare(['pancreas', 'spleen'], sys.argv[1], sys.argv[2], profile='smoke')")
    proc = subprocess.Popen([sys.executable, "-c", code, str(src), str(out)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob(".prepare-*/*/*.json"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in out.glob(".prepare-*/*/*.h5")
                   if p.with_suffix(".json").is_file()}
    assert len(done_before) >= 3 and not (out / "manifest.json").exists()
    P.prepare(["pancreas", "spleen"], src, out, profile="smoke")
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*/*.h5")}
    assert all(after[name] == mtime for name, mtime in done_before.items())  # moved in, not rewritten
    reference = tmp_path / "reference"
    P.prepare(["pancreas", "spleen"], src, reference, profile="smoke")
    assert _files(out) == _files(reference)


def test_prepare_other_datasets_are_kept_in_the_manifest(src, tmp_path):
    out = tmp_path / "out"
    P.prepare("la", src, out, profile="smoke")
    P.prepare(["spleen"], src, out, profile="smoke")
    doc = P.load_manifest(out)
    assert list(doc["datasets"]) == ["la", "spleen"]


def test_paper_profile_resamples_to_1mm_and_pads_to_96(tmp_path):
    src = tmp_path / "raw"
    hu, lab = F.ct_volume(seed=3)
    F.write_pancreas_case(src, 1, hu, lab)
    out = tmp_path / "out"
    P.prepare(["pancreas"], src, out, profile="paper")
    d = P.load_case(out / "pancreas" / "data0001.h5")
    assert d["attrs"]["spacing"] == [1.0, 1.0, 1.0] and d["image"].shape == (96, 96, 96)
    # physical label volume is preserved by the resampling: 5 x 4 x 4 voxels of 0.7 x 0.75 x 2 mm
    assert float(d["label"].sum()) == pytest.approx(5 * 0.7 * 4 * 0.75 * 4 * 2.0, rel=0.35)


def test_la_nrrd_is_zscored_and_cropped_in_xy_only(tmp_path):
    src = tmp_path / "raw"
    cid = A["la"]["labeled_10"][0]
    img, lab = F.write_la_nrrd(src / "2018LA_Seg_Training Set", cid, shape=(70, 60, 12))
    out = tmp_path / "out"
    P.prepare(["la"], src, out, profile="smoke")
    d = P.load_case(out / "la" / f"{cid}.h5")
    box = d["attrs"]["preprocessing"]["case"]["crop_box"]
    assert box == [[0, 18 + 15], [0, 16 + 15], [0, 12]]  # label bbox +- 15 voxels in x/y, all slices
    assert d["image"].shape == (33, 32, 12)  # y padded to the smoke minimum 32 (after), z never
    z = (img.astype(np.float64) - img.mean()) / img.std()
    np.testing.assert_allclose(d["image"][:, :31], z[0:33, 0:31, :], rtol=1e-5, atol=1e-5)
    assert np.all(d["image"][:, 31] == d["image"][:, :31].min())
    np.testing.assert_array_equal(d["label"][:, :31], (lab[0:33, 0:31, :] == 255).astype(np.uint8))
    assert d["attrs"]["spacing"] == pytest.approx([0.625, 0.625, 2.5])


def test_hidden_labels_are_cropped_like_the_label(tmp_path):
    src = tmp_path / "raw"
    hu, lab = F.ct_volume(shape=(40, 36, 12), seed=4, box=(slice(15, 20), slice(14, 18), slice(4, 8)))
    aff = F.lps_like_affine(spacing=(2.0, 2.0, 2.0))
    F.write_msd(src, "spleen", [("spleen_2", hu, lab)], affine=aff)
    hidden = lab * 4
    hidden[0, 0, 0] = 9  # outside the crop
    F.write_nifti(src / "hidden_labels" / "spleen" / "spleen_02.nii.gz", hidden, aff, np.uint8)
    (src / "hidden_labels" / "legend.json").write_text(json.dumps({"4": "spleen", "9": "corner"}))
    out = tmp_path / "out"
    P.prepare(["spleen"], src, out, profile="smoke")
    d = P.load_case(out / "spleen" / "spleen_02.h5")
    assert d["hidden_label"].shape == d["label"].shape
    np.testing.assert_array_equal(d["hidden_label"] == 4, d["label"] == 1)
    assert 9 not in d["hidden_label"] and d["attrs"]["hidden_legend"] == {"4": "spleen", "9": "corner"}
    # label at x 15..19 / y 14..17 of the L/P-pointing file = 20..24 / 18..21 in RAS; margin 25 mm = 13
    # voxels -> [7, 38) x [5, 35), then grown with real context to the smoke minimum of 32 voxels
    assert d["attrs"]["preprocessing"]["case"]["crop_box"] == [[7, 39], [4, 36], [0, 12]]
    assert d["image"].shape == (32, 32, 32) and d["attrs"]["preprocessing"]["case"]["pad"][:2] == [[0, 0], [0, 0]]


def test_authors_flat_files_are_kept_as_they_are(tmp_path):
    img, lab = F.mri_volume()
    F.write_flat(tmp_path / "flat", {"data0001": (img, lab), "spleen_02": (img, lab)})
    out = tmp_path / "out"
    P.prepare(["pancreas", "spleen"], tmp_path, out, profile="demo")
    d = P.load_case(out / "pancreas" / "data0001.h5")
    np.testing.assert_array_equal(d["image"], img)
    assert d["attrs"]["preprocessing"]["case"]["kept_as_is"] is True
    with pytest.raises(VersemiError, match="unknown task"):
        P.prepare(["lung"], tmp_path, tmp_path / "o2", profile="demo")


def test_cli_prepare_reports_user_errors(tmp_path, capsys):
    from versemi.cli import main  # the command line is another layer: only this test needs it

    assert main(["prepare", "--dataset", "lung", "--src", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_real_la_cases_through_prepare(la_real_dir, tmp_path):
    train = (la_real_dir / "train.list").read_text().split()
    test = (la_real_dir / "test.list").read_text().split()
    chosen = [train[1], train[0], train[20], test[0]]
    src = tmp_path / "src" / "LA" / "2018LA_Seg_Training Set"
    src.mkdir(parents=True)
    for cid in chosen:  # links, not copies
        (src / cid).symlink_to(la_real_dir / "2018LA_Seg_Training Set" / cid, target_is_directory=True)
    out = tmp_path / "out"
    P.prepare(["la"], tmp_path / "src", out, profile="paper")
    entry = P.load_manifest(out)["datasets"]["la"]
    for c in entry["cases"]:
        assert c["shape"][2] == 88 and c["shape"][0] > 100 and c["shape"][1] > 100
        assert 0.005 < c["label_fraction"] < 0.15
        assert c["source"] == f"LA/2018LA_Seg_Training Set/{c['name']}/mri_norm2.h5"
        with h5py.File(la_real_dir / "2018LA_Seg_Training Set" / c["name"] / "mri_norm2.h5") as f:
            raw = f["image"][()]
        np.testing.assert_array_equal(P.load_case(out / c["file"])["image"], raw)  # kept as released
    s = entry["splits"]
    assert s["10"]["labeled"] == [train[0], train[1]]  # train.list order, not the order of discovery
    assert s["10"]["test"] == [test[0]] and s["20"]["unlabeled"] == [train[20]]
    assert s["20"]["val"] == [train[20]]
    assert entry["complete"] is False and entry["counts"]["present_authors_cases"] == 4
    from versemi.companion.datasummary import plot_mid_slices

    png = tmp_path / "la_mid.png"
    plot_mid_slices(load_split_cases(out, ["la"], 10, "labeled"), png)
    assert png.stat().st_size > 10_000


def test_real_la_half_resolution_profile(la_real_dir, tmp_path):
    """The la-real CPU profile resamples the released volumes by x0.5 (labels nearest)."""
    cid = (la_real_dir / "test.list").read_text().split()[0]
    src = tmp_path / "src" / "LA" / "2018LA_Seg_Training Set"
    src.mkdir(parents=True)
    (src / cid).symlink_to(la_real_dir / "2018LA_Seg_Training Set" / cid, target_is_directory=True)
    P.prepare(["la"], tmp_path / "src", tmp_path / "out", profile="la-real")
    case = P.load_manifest(tmp_path / "out")["datasets"]["la"]["cases"][0]
    with h5py.File(la_real_dir / "2018LA_Seg_Training Set" / cid / "mri_norm2.h5") as f:
        full_shape, full_lab = f["image"].shape, f["label"][()]
    assert case["shape"] == [round(s / 2) for s in full_shape]
    assert case["spacing"][2] == pytest.approx(1.25)
    assert case["label_fraction"] == pytest.approx(float((full_lab == 1).mean()), rel=0.1)


def test_preprocessing_parameters_come_from_the_profile_table():
    for profile in ("smoke", "demo", "paper", "la-real"):
        spec = get_profile(profile).prepare
        ct = P.dataset_params("spleen", profile, (1.0, 1.0, 1.0))
        assert ct["min_size"] == spec.min_size and ct["margin_mm"] == spec.margin_mm
        assert ct["spacing_rule"] == ("median of cases" if spec.spacing == "median" else "fixed")
        la = P.dataset_params("la", profile, None)
        assert la.get("la_zoom") == spec.la_zoom and la["target_spacing"] is None
    assert P.dataset_params("la", "la-real", None)["la_zoom"] == 0.5
    with pytest.raises(VersemiError, match="unknown profile 'huge'"):
        P.prepare(["spleen"], ".", "out", profile="huge")
    assert P.decode_legend(None) == STRUCTURES  # a hidden label map stored without legend: the phantoms' codes
    assert P.decode_legend(json.dumps(STRUCTURES).encode()) == P.decode_legend({"spleen": 7, **STRUCTURES}) == STRUCTURES
