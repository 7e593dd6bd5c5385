"""The hybrid prepared folder: a fake real-LA release (the authors' 100 names) prepared with the la-real
profile, the smoke phantoms' CT sets prepared beside it with the la-real CT rules, the record, idempotence
and the refusals."""

from __future__ import annotations

import json

import pytest

from versemi import hybrid
from versemi.config import make_config
from versemi.data.prepare import load_manifest
from versemi.runs import data_fingerprint
from versemi.train import split_cases
from versemi.utils import VersemiError

from .data.factories import write_la_release

CT = ("pancreas", "lung")   # two of the three CT sets keep the test fast; the joint run names all three


@pytest.fixture(scope="module")
def la_src(tmp_path_factory):
    root = tmp_path_factory.mktemp("la_release")
    train, test = write_la_release(root)
    return root, train, test


@pytest.fixture(scope="module")
def folder(smoke_root, la_src, tmp_path_factory):
    out = tmp_path_factory.mktemp("hybrid") / "prepared"
    raw = smoke_root / "data" / "smoke" / "raw"    # complete smoke phantoms: reused, not generated
    hybrid.prepare_hybrid(out, raw, la_src[0], datasets=CT, phantom_profile="smoke")
    return out, raw


def test_the_joint_run_names_the_three_ct_sets():
    assert hybrid.PHANTOM_DATASETS == ("pancreas", "spleen", "lung") and hybrid.PROFILE == "la-real"


def test_real_la_beside_phantom_ct_prepared_with_the_la_real_rules(folder, la_src):
    out, _ = folder
    _, train, test = la_src
    doc = load_manifest(out)
    assert list(doc["datasets"]) == ["pancreas", "la", "lung"]   # the registry's order
    la = doc["datasets"]["la"]
    assert len(la["cases"]) == 100 and not any(c["has_hidden"] for c in la["cases"])
    assert la["preprocessing"]["la_zoom"] == 0.5
    s10, s20 = la["splits"]["10"], la["splits"]["20"]
    assert (len(s10["labeled"]), len(s10["unlabeled"]), len(s10["val"]), len(s10["unlabeled_train"])) == (8, 72, 13, 59)
    assert (len(s20["labeled"]), len(s20["unlabeled"]), s20["val"]) == (16, 64, s10["val"])
    assert s10["test"] == test and set(s10["labeled"] + s10["unlabeled"]) == set(train)
    for d in CT:
        e = doc["datasets"][d]
        assert e["preprocessing"]["profile"] == "la-real" and e["preprocessing"]["target_spacing"] == [1.0, 1.0, 1.0]
        assert e["preprocessing"]["min_size"] == 48 and all(c["has_hidden"] for c in e["cases"])
        assert all(min(c["shape"]) >= 48 for c in e["cases"])
    rec = hybrid.hybrid_record(out)
    assert rec["real"] == ["la"] and rec["phantom"] == {"datasets": list(CT), "profile": "smoke", "seed": 2333,
                                                        "generator_version": hybrid.PHANTOM_VERSION}
    assert "say nothing about real scans" in rec["note"]
    # a run on the folder trains on real LA and phantom CT together
    cfg = make_config("versemi", "la-real", datasets=("pancreas", "la", "lung"))
    labeled = split_cases(cfg, out, "labeled")
    assert {c["dataset"] for c in labeled} == {"pancreas", "la", "lung"}
    assert sum(c["dataset"] == "la" for c in labeled) == 8


def test_a_second_call_redoes_nothing_and_a_re_prepared_la_keeps_the_identity(folder, la_src):
    out, raw = folder
    before = (out / "manifest.json").read_bytes(), data_fingerprint(out)
    mtime = (out / "manifest.json").stat().st_mtime_ns
    hybrid.prepare_hybrid(out, raw, la_src[0], datasets=CT, phantom_profile="smoke")
    assert (out / "manifest.json").stat().st_mtime_ns == mtime
    assert ((out / "manifest.json").read_bytes(), data_fingerprint(out)) == before
    assert hybrid.hybrid_record(out)["phantom"]["datasets"] == list(CT)


def test_refusals(folder, smoke_root, la_src, tmp_path):
    out, raw = folder
    with pytest.raises(VersemiError, match="CT datasets"):
        hybrid.prepare_hybrid(out, raw, datasets=("la",), phantom_profile="smoke")
    with pytest.raises(VersemiError, match="no prepared Left Atrium"):
        hybrid.prepare_hybrid(tmp_path / "empty", raw, None, datasets=CT, phantom_profile="smoke")
    with pytest.raises(VersemiError, match="same seed"):
        hybrid.prepare_hybrid(out, raw, datasets=CT, phantom_profile="smoke", seed=1)
    phantom_la = smoke_root / "data" / "smoke" / "prepared"   # LA phantoms, not the real LA
    with pytest.raises(VersemiError, match="are phantoms"):
        hybrid.prepare_hybrid(phantom_la, raw, datasets=CT, phantom_profile="smoke")
    with pytest.raises(VersemiError, match="no phantoms"):
        hybrid.ensure_phantoms(tmp_path / "raw", CT, phantom_profile="la-real")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / hybrid.HYBRID).write_text(json.dumps({"format": "other"}))
    with pytest.raises(VersemiError, match="versemi-hybrid/1"):
        hybrid.hybrid_record(tmp_path / "bad")
    assert hybrid.hybrid_record(tmp_path) is None


def test_paths_of_the_study_folder(tmp_path):
    assert hybrid.phantom_root(tmp_path) == tmp_path / "la-real" / "hybrid-phantoms" / "raw"
    with pytest.raises(VersemiError, match="no prepared Left Atrium"):
        hybrid.ensure_la_real(tmp_path)
    assert hybrid.main(["--data-dir", str(tmp_path)]) == 2
