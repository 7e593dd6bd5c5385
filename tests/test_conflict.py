"""The inter-dataset conflict tools: per-task gradient cosines (against a hand computation), PCGrad's
projection, the layer groups, and the metrics read back (the probed methods and VerSemi + PCGrad: tests/methods/)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from versemi import conflict as C
from versemi.model import VerSemiNet


class TwoTask(torch.nn.Module):
    """A linear 'network' with an encoder and a head parameter (named as the V-Net's groups)."""

    def __init__(self):
        super().__init__()
        self.block_one = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
        self.controller = torch.nn.Parameter(torch.tensor([0.3, 0.7]))


def test_task_gradient_cosines_equal_a_hand_computation():
    net = TwoTask()
    a, b = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 1.0, -1.0])
    u = torch.tensor([2.0, -1.0])
    w, h = net.block_one.detach(), net.controller.detach()
    # L1 = (w.a - 1)^2 + (h.u)^2,  L2 = (w.b)^2 + h.u   (h.u < 0: the head gradients point apart)
    objectives = {"la": (net.block_one @ a - 1) ** 2 + (net.controller @ u) ** 2,
                  "spleen": (net.block_one @ b) ** 2 + net.controller @ u}
    grads = C.objective_gradients(objectives, net)
    g1w, g2w = 2 * (w @ a - 1) * a, 2 * (w @ b) * b          # by hand
    g1h, g2h = 2 * (h @ u) * u, u
    assert torch.allclose(grads["la"]["encoder"], g1w) and torch.allclose(grads["spleen"]["head"], g2h)
    s = C.conflict_scalars(grads)
    hand = lambda x, y: float(x @ y / (x.norm() * y.norm()))  # noqa: E731
    assert s["conflict/encoder/cos/la~spleen"] == pytest.approx(hand(g1w, g2w), rel=1e-5)
    assert s["conflict/head/cos/la~spleen"] == pytest.approx(rel=1e-5, expected=hand(g1h, g2h)) and s["conflict/head/cos/la~spleen"] < 0
    assert s["conflict/all/cos/la~spleen"] == pytest.approx(hand(torch.cat([g1w, g1h]), torch.cat([g2w, g2h])), rel=1e-5)
    assert s["conflict/all/norm/la"] == pytest.approx(float(torch.cat([g1w, g1h]).norm()))
    assert np.isnan(s["conflict/decoder/cos/la~spleen"])     # no decoder parameter: no direction
    assert net.block_one.grad is None                        # .grad left alone


def test_pcgrad_removes_the_conflicting_component_exactly_and_keeps_the_rest():
    g1, g2 = torch.tensor([1.0, 1.0, 0.0]), torch.tensor([-1.0, 0.5, 0.0])
    p1, p2 = C.pcgrad([g1, g2])
    assert float(p1 @ g2) == pytest.approx(0.0, abs=1e-7) and float(p2 @ g1) == pytest.approx(0.0, abs=1e-7)
    assert C.cosine(p1, g2) >= -1e-7 and C.cosine(p2, g1) >= -1e-7
    assert torch.allclose(p1, g1 - (g1 @ g2) / (g2 @ g2) * g2)   # the projection of Algorithm 1
    g3 = torch.tensor([0.0, 0.0, 2.0])                           # orthogonal to both: no conflict
    g4 = torch.tensor([1.0, 2.0, 0.0])                           # agrees with g1
    out = C.pcgrad([g1, g3, g4], np.random.default_rng(0))
    assert all(torch.equal(o, g) for o, g in zip(out, [g1, g3, g4]))
    rng_out = C.pcgrad([g1, g2, g3], np.random.default_rng(1))
    assert torch.equal(rng_out[2], g3) and float(rng_out[0] @ g2) == pytest.approx(0.0, abs=1e-7)


def test_the_v_net_s_parameters_fall_into_three_groups():
    net = VerSemiNet(n_filters=4)
    groups = C.layer_groups(net)
    names = [n for g in C.GROUPS for n, _ in groups[g]]
    assert sorted(names) == sorted(n for n, _ in net.named_parameters()) and len(set(names)) == len(names)
    assert all(groups[g] for g in C.GROUPS)
    assert all(n.startswith(("block_one", "block_two", "block_three", "block_four", "block_five.", "block_five_dw"))
               for n, _ in groups["encoder"])
    assert {n.split(".")[0] for n, _ in groups["head"]} >= {"controller", "precls_conv"}


