"""Batches and step contexts for the method tests (smoke-sized, CPU)."""

import numpy as np
import torch

from versemi.methods import StepContext, frozen_copy, get_method
from versemi.model import VerSemiNet


def batch(b, seed, tasks):
    """``b`` 32^3 samples: a 12^3 cube of foreground at a random place, brighter in the image."""
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros(b, 32, 32, 32, dtype=torch.long)
    for i in range(b):
        z, yy, x = torch.randint(4, 16, (3,), generator=g).tolist()
        y[i, z:z + 12, yy:yy + 12, x:x + 12] = 1
    img = (y.float() * 2 + 0.3 * torch.randn(b, 32, 32, 32, generator=g)).unsqueeze(1)
    return {"image": img, "label": y, "task": torch.tensor(tasks)}


def ctx(net, stage, step=0, steps=10, teacher=None, optimizers=None, **options):
    nets = {"net": net} if teacher is None else {"net": net, "teacher": teacher}
    return StepContext(nets=nets, optimizers=optimizers or {}, stage=stage, step=step, stage_step=step,
                       stage_steps=steps, rng=np.random.default_rng(3), options=options)


def trains_on_fixed_batch(name, options, head, dropout, terms):
    """12 Adam steps of method ``name`` through its own ``train_step`` on a fixed batch: every step's
    losses hold ``terms`` and are finite, and the loss goes down."""
    torch.manual_seed(0)
    net = VerSemiNet(n_filters=4, head=head, dropout=dropout).train()
    method = get_method(name, options)
    nets = {"net": net}
    for teacher, student in method.teachers().items():
        nets[teacher] = frozen_copy(nets[student])
    opt = {"net": torch.optim.Adam(net.parameters(), 1e-2, betas=(0.5, 0.999))}
    lab = batch(4, 1, [1, 2, 3, 1])
    unlab = batch(4, 2, [2, 3, 4, 1]) if method.uses_unlabeled else None
    stage = method.stages(100)[0]
    losses = []
    for step in range(12):
        c = StepContext(nets=nets, optimizers=opt, stage=stage[0], step=step, stage_step=step,
                        stage_steps=stage[1], rng=np.random.default_rng(0), options=method.options)
        out = method.train_step(c, lab, unlab)
        assert terms <= set(out), set(out)
        assert all(torch.isfinite(v).all() for v in out.values())
        losses.append(out["loss"].item())
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


def run_steps(method_name, options, n=3):
    """``n`` Adam steps of method ``name`` on fixed batches of the four tasks (two of stage 1, then stage 2)
    from one seeded network; returns the network and each step's output."""
    torch.manual_seed(0)
    net = VerSemiNet(n_filters=4).train()
    method = get_method(method_name, options)
    opt = {"net": torch.optim.Adam(net.parameters(), 1e-2, betas=(0.5, 0.999))}
    lab, unlab = batch(4, 1, [1, 2, 3, 4]), batch(4, 2, [2, 3, 4, 1])
    outs = []
    for step in range(n):
        stage = "stage1" if step < 2 else "stage2"
        c = StepContext(nets={"net": net}, optimizers=opt, stage=stage, step=step, stage_step=step, stage_steps=10,
                        rng=np.random.default_rng([0, step]), options=method.options)
        outs.append(method.train_step(c, lab, unlab))
    return net, outs
