"""The resumable staging folder of versemi prepare."""

import os

from versemi.data import staging


def test_keys_open_and_stale_folders(tmp_path):
    k1 = staging.stage_key(["la"], tmp_path, "smoke", 1, "v1")
    assert k1 == staging.stage_key(["la"], tmp_path, "smoke", 1, "v1")
    assert k1 != staging.stage_key(["la"], tmp_path, "smoke", 2, "v1") != staging.stage_key(["spleen"], tmp_path, "smoke", 1, "v1")
    out = tmp_path / "out"
    stale = out / ".prepare-000000000000"
    stale.mkdir(parents=True)
    stage = staging.open_stage(out, k1)
    assert stage.is_dir() and not stale.exists()
    (stage / "x").write_text("kept")
    assert (staging.open_stage(out, k1) / "x").read_text() == "kept"   # a second run resumes the same folder


def test_a_case_is_finished_only_with_its_entry_and_an_unchanged_source(tmp_path):
    stage, src = tmp_path / "stage", tmp_path / "raw.nii.gz"
    (stage / "la").mkdir(parents=True)
    src.write_bytes(b"raw")
    assert staging.finished(stage, "la/a.h5", src) is None
    (stage / "la" / "a.h5").write_bytes(b"h5")
    assert staging.finished(stage, "la/a.h5", src) is None          # HDF5 without its entry: killed mid-write
    staging.record(stage, "la/a.h5", {"name": "a", "shape": [1, 2, 3]}, src)
    assert staging.finished(stage, "la/a.h5", src) == {"name": "a", "shape": [1, 2, 3]}
    os.utime(src, ns=(1, 1))                                         # the raw case changed since
    assert staging.finished(stage, "la/a.h5", src) is None
    series = tmp_path / "series"
    series.mkdir()
    (series / "1.dcm").write_bytes(b"a")
    assert staging.source_stamp(series)[0] == 1
