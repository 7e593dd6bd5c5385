"""The conflict-probed twins of VerSemi and Sup-only: the same training with the conflict scalars logged
(versemi/methods/probed.py, versemi/conflict.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from versemi import conflict as C

from .helpers import run_steps


def test_the_probe_logs_the_conflict_and_leaves_the_training_unchanged():
    net0, plain = run_steps("versemi", {})
    net1, probed = run_steps("versemi_probed", {"probe_every": 1})
    for a, b in zip(plain, probed):
        assert float(a["loss"].detach()) == float(b["loss"].detach())
    for (k, p0), p1 in zip(net0.state_dict().items(), net1.state_dict().values()):
        assert torch.equal(p0, p1), k                               # weights and BatchNorm statistics
    keys = [k for k in probed[0] if k.startswith("conflict/")]
    assert "conflict/all/cos/pancreas~synthetic" in keys and "conflict/encoder/norm/lung" in keys
    assert all(-1 <= float(probed[0][k]) <= 1 for k in keys if "/cos/" in k)
    # read back as a run's metrics.csv
    rows = [{"step": i, **{k: float(v.detach()) for k, v in o.items()}} for i, o in enumerate(probed)]
    table = C.conflict_table(pd.DataFrame(rows))
    assert set(table["group"]) == {"encoder", "decoder", "head", "all"} and set(table["step"]) == {0, 1, 2}
    mat = C.mean_cosine_matrix(table)
    assert list(mat.index) == ["pancreas", "la", "spleen", "lung", "synthetic"]
    assert np.allclose(mat.to_numpy(), mat.to_numpy().T, equal_nan=True) and (np.diag(mat) == 1).all()
    got = mat.loc["la", "synthetic"]
    assert got == pytest.approx(table.query("group == 'all' and a == 'la' and b == 'synthetic'")["value"].mean())
    _, off = run_steps("versemi_probed", {"probe_every": 0}, n=1)
    assert not [k for k in off[0] if k.startswith("conflict/")]      # off: nothing computed


def test_sup_only_probed_has_no_synthetic_task():
    _, outs = run_steps("sup_only_probed", {}, n=1)
    keys = [k for k in outs[0] if k.startswith("conflict/all/cos/")]
    assert len(keys) == 6 and not any("synthetic" in k for k in keys)
