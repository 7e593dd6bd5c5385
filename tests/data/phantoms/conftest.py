from pathlib import Path

import pytest

from versemi.data.phantoms import case_ids, generate

SEED = 7


@pytest.fixture(scope="session")
def smoke(tmp_path_factory) -> Path:
    """The four phantom datasets of the smoke profile, generated once (seed 7)."""
    out = tmp_path_factory.mktemp("phantoms") / "raw"
    summary = generate(out, profile="smoke", seed=SEED)
    assert set(summary) == {"pancreas", "la", "spleen", "lung"}
    for d, s in summary.items():
        assert s["n_cases"] == len(case_ids(d, "smoke")) and Path(s["root"]).is_dir()
    return out
