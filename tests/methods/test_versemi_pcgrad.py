"""VerSemi + PCGrad: the update is the sum of PCGrad's projections of the per-task gradients
(versemi/methods/versemi_pcgrad.py)."""

from __future__ import annotations

import copy

import numpy as np
import torch

from versemi import conflict as C
from versemi.losses import supervised_loss
from versemi.methods import StepContext, get_method
from versemi.model import VerSemiNet

from .helpers import batch, run_steps


def test_versemi_pcgrad_updates_with_the_projected_sum():
    net0, plain = run_steps("versemi", {}, n=1)
    net1, pc = run_steps("versemi_pcgrad", {}, n=3)
    assert float(pc[0]["loss"].detach()) == float(plain[0]["loss"].detach())          # the same losses before the first update
    assert all(torch.isfinite(o["loss"]) and 0 <= float(o["pcgrad_conflicts"]) <= 10 for o in pc)
    assert any(not torch.equal(a, b) for a, b in zip(net0.parameters(), net1.parameters()))
    # one step by hand: the update is the sum of the projected per-task gradients
    torch.manual_seed(0)
    net = VerSemiNet(n_filters=4).train()
    ref = copy.deepcopy(net)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    method = get_method("versemi_pcgrad", {})
    lab = batch(4, 1, [1, 2, 1, 2])
    c = StepContext(nets={"net": net}, optimizers={"net": opt}, stage="stage1", step=0, stage_step=0,
                    stage_steps=10, rng=np.random.default_rng(5), options=method.options)
    method.train_step(c, lab, None)
    params = C.group_params(ref)
    delta = torch.cat([(p0 - p1).reshape(-1) for p0, p1 in zip(params, C.group_params(net))])
    out = get_method("versemi", {}).step(StepContext(nets={"net": ref}, optimizers={}, stage="stage1", step=0,
                                                     stage_step=0, stage_steps=10, rng=np.random.default_rng(5)),
                                         lab, None)
    total = torch.cat([g.reshape(-1) for g in torch.autograd.grad(out["loss"], params)])
    logits = ref(lab["image"], lab["task"])
    objs = {"full": supervised_loss(logits, lab["label"]),
            "pancreas": supervised_loss(logits[[0, 2]], lab["label"][[0, 2]]),
            "la": supervised_loss(logits[[1, 3]], lab["label"][[1, 3]])}
    g = C.objective_gradients(objs, ref)
    tasks = [g["pancreas"]["all"], g["la"]["all"], total - g["full"]["all"]]
    expect = torch.stack(C.pcgrad(tasks, C.probe_rng(0, 0))).sum(0)
    assert torch.allclose(delta, expect, atol=1e-5)
