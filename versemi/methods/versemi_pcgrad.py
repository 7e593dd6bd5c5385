"""VerSemi with PCGrad gradient surgery between its tasks: one mitigation of the inter-dataset conflict that the
paper's conclusion names as its open problem (``versemi/conflict.py``). Not in the paper; PCGrad is Yu et al.,
"Gradient Surgery for Multi-Task Learning" (NeurIPS 2020).

The losses are VerSemi's (``versemi/methods/versemi.py``, unchanged), grouped into one objective per task:

* for each dataset task ``k`` of the labeled batch, L_sup on that task's samples (``task_losses``), from one
  more forward pass of the labeled batch at the same parameters (its BatchNorm statistics restored after);
* ``synthetic``: every other term of the step, the synthetic-prompt and mixed-image terms (L_syn and L_aux in
  stage 1; L_syn, L_unsup and L_lab in stage 2), whose gradient is the step's total gradient minus that of
  the full-batch L_sup (the same forward pass, so the same graph).

Their gradients over the shared parameters go through :func:`versemi.conflict.pcgrad` (the other tasks in an
order drawn from (seed, step)) and the sum of the projected gradients is the update, with the run's optimiser.
Where no pair conflicts, the update differs from VerSemi's only in that L_sup's batch-level Dice is taken per
task. ``pcgrad_conflicts`` (the conflicting pairs of the step) is logged. Option ``probe_every``: the conflict
probe of :class:`versemi.conflict.ConflictProbe`, before the update. About twice VerSemi's step time (one more
labeled forward pass and one backward pass per task).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from versemi.conflict import (
    ConflictProbe,
    flat_gradient,
    group_params,
    objective_gradients,
    pcgrad,
    preserved_state,
    probe_rng,
    set_flat_grad,
    task_losses,
)
from versemi.losses import supervised_loss

from .base import register
from .versemi import VerSemi

FULL = "_full_batch_sup"


@register
class VerSemiPCGrad(ConflictProbe, VerSemi):
    name = "versemi_pcgrad"
    display_name = "VerSemi + PCGrad"
    universal = True   # named by the method on several datasets, as VerSemi ("VerSemi + PCGrad", not "Uni-")
    default_options = {**VerSemi.default_options, "probe_every": 0}

    def update_step(self, ctx, lab: dict, unlab: dict | None):
        net, opt = ctx.net, ctx.optimizers["net"]
        params = group_params(net)
        with ctx.autocast():
            out = self.step(ctx, lab, unlab)
        if not torch.isfinite(out["loss"]):
            ctx.backward(out)   # raises TrainingDiverged naming the step and the terms
        total = flat_gradient(out["loss"], params)
        x, y, t = lab["image"], lab["label"], lab["task"]
        with preserved_state(net), ctx.autocast():
            logits = net(x, t)
            objectives = {FULL: supervised_loss(logits, y), **task_losses(logits, y, t, ctx.synthetic_task)}
            grads = objective_gradients(objectives, net)   # before the buffers are restored (BN saves them)
        tasks = [grads[k]["all"] for k in objectives if k != FULL] + [total - grads[FULL]["all"]]
        seed = ctx.cfg.seed if ctx.cfg is not None else 0
        projected = pcgrad(tasks, probe_rng(seed, ctx.step))
        conflicts = sum(int(torch.dot(tasks[i], tasks[j]) < 0) for i in range(len(tasks))
                        for j in range(i + 1, len(tasks)))
        opt.zero_grad(set_to_none=True)
        set_flat_grad(params, torch.stack(projected).sum(0))
        if ctx.world > 1:
            for p in params:
                dist.all_reduce(p.grad)
                p.grad /= ctx.world
        opt.step()
        return {**out, "pcgrad_conflicts": torch.tensor(float(conflicts))}

