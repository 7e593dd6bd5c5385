"""Fixtures of the versemi.evaluate tests: a small VerSemiNet with non-trivial BatchNorm statistics."""

from __future__ import annotations

import pytest
import torch

from versemi.model import VerSemiNet


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    n = VerSemiNet(n_filters=4)
    # non-trivial BatchNorm statistics so eval mode is visibly different from train mode
    with torch.no_grad():
        for m in n.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return n
