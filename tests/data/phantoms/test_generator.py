"""``generate``: provenance, determinism (the run cache depends on it) and refusal to overwrite."""

import json

import pytest

from versemi.data.phantoms import MIN_TARGET_VOXELS, STRUCTURES, case_ids, file_digest, generate
from versemi.utils import VersemiError

from .conftest import SEED


def test_legend_and_provenance(smoke):
    legend = json.loads((smoke / "hidden_labels" / "legend.json").read_text())
    assert legend == STRUCTURES and len(set(legend.values())) == len(legend)
    prov = json.loads((smoke / "PHANTOMS.json").read_text())
    assert prov["profile"] == "smoke" and prov["seed"] == SEED and prov["version"]
    for d in ("pancreas", "la", "spleen", "lung"):
        e = prov["datasets"][d]
        assert e["complete"] and e["n_cases"] == len(case_ids(d, "smoke")) and set(e["cases"]) == set(case_ids(d, "smoke"))
        assert all(c["target_voxels"] >= MIN_TARGET_VOXELS for c in e["cases"].values() if c["labeled"])
    assert not list(smoke.glob(".staging-*")) and not list(smoke.glob(".old-*"))


def test_same_seed_same_bytes_other_seed_differs(smoke, tmp_path):
    ref = file_digest(smoke)
    again = tmp_path / "again"
    generate(again, profile="smoke", seed=SEED)
    assert file_digest(again) == ref
    # regenerating in place is idempotent and leaves no stale files
    generate(again, profile="smoke", seed=SEED, datasets=("la", "lung"))
    assert file_digest(again) == ref
    other = tmp_path / "other"
    generate(other, profile="smoke", seed=SEED + 1, datasets=("spleen",))
    dig = file_digest(other)
    common = [k for k in dig if k.endswith(".nii.gz") and k in ref]
    assert common and all(dig[k] != ref[k] for k in common)


def test_refuses_to_overwrite_foreign_data_and_bad_arguments(tmp_path):
    real = tmp_path / "Task09_Spleen"
    real.mkdir()
    (real / "dataset.json").write_text("{}")
    with pytest.raises(VersemiError, match="Task09_Spleen"):
        generate(tmp_path, profile="smoke", datasets=("spleen",))
    assert (real / "dataset.json").read_text() == "{}"
    with pytest.raises(VersemiError, match="no phantoms"):
        generate(tmp_path / "x", profile="paper")
    with pytest.raises(VersemiError):
        generate(tmp_path / "x", profile="smoke", datasets=("kidney",))
    with pytest.raises(VersemiError):
        generate(tmp_path / "x", profile="smoke", seed=-1)
