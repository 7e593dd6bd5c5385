import os
from pathlib import Path

import pytest
import torch

# two threads (the CI machine's cores) unless OMP_NUM_THREADS asks for another count (e.g. 1 on a shared machine)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or max(1, min(2, os.cpu_count() or 1))))

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
LA_REAL = SHARED / "data" / "LA"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def la_real_dir() -> Path:
    if not (LA_REAL / "train.list").is_file():
        pytest.skip("../shared/data/LA is not present")
    return LA_REAL


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory) -> Path:
    """A session-wide results root with the smoke phantoms prepared under ``<root>/data/smoke/prepared``
    (shared by the notebook tests, so their runs land in one run cache ``<root>/runs``)."""
    from versemi.data.ensure import ensure_data

    root = tmp_path_factory.mktemp("smoke_results")
    ensure_data(root / "data", "smoke", seed=2333)
    return root
