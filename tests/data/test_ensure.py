"""The prepared data of a profile: generated on demand for phantom profiles, a clear error otherwise."""

import pytest

from versemi.data.ensure import ensure_data, prepared_dir
from versemi.utils import VersemiError


def test_real_profiles_must_be_prepared_by_the_user(tmp_path):
    with pytest.raises(VersemiError, match=r"no prepared data for profile 'paper'; run `versemi prepare"):
        ensure_data(tmp_path, "paper")
    with pytest.raises(VersemiError, match="unknown profile 'x'"):
        ensure_data(tmp_path, "x")


def test_phantom_profile_is_generated_once(smoke_root):
    data_dir = smoke_root / "data"
    p = ensure_data(data_dir, "smoke")   # the session fixture generated it: nothing is regenerated
    assert p == prepared_dir(data_dir, "smoke") and (p / "manifest.json").is_file()
    mtime = (p / "manifest.json").stat().st_mtime
    assert ensure_data(data_dir, "smoke") == p and (p / "manifest.json").stat().st_mtime == mtime
    assert (data_dir / "smoke" / "raw").is_dir()
