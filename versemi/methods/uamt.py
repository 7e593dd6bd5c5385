"""Uncertainty-aware Mean Teacher (Yu et al., MICCAI 2019), after the released
``code/train_LA_meanteacher_certainty_unlabel.py`` of the repository yulequan/UA-MT:

* student sees labeled + unlabeled samples; the teacher (EMA, kept in train mode so MC dropout is active;
  the network needs ``dropout > 0``) sees the unlabeled samples with Gaussian noise N(0, 0.1) clipped to
  +-0.2, ``T`` = 8 times; uncertainty = predictive entropy of the mean softmax;
* consistency = voxel-wise MSE between student and teacher softmaxes (both channels) kept only where the
  uncertainty is below (0.75 + 0.25 ramp(t)) ln 2, summed and divided by 2 x (number of kept voxels);
* loss = 0.5 (CE + Dice) on labeled + 0.1 ramp(t) x consistency.
"""

from __future__ import annotations

import math

import torch

from .base import Method, StepContext, register, sigmoid_rampup
from .mean_teacher import noisy, ramp_weight, student_pass


@register
class UAMT(Method):
    name = "uamt"
    display_name = "UA-MT"
    uses_unlabeled = True
    uses_teacher = True
    default_options = {"consistency": 0.1, "rampup_fraction": 1.0, "sup_weight": 0.5, "mc_passes": 8}
    config_defaults = {"dropout": 0.5}      # MC dropout needs a dropout network (VNet(has_dropout=True))
    # code/train_LA_meanteacher_certainty_unlabel.py: SGD 0.01 (momentum 0.9, wd 1e-4), /10 every 2,500
    # iterations, 6,000 iterations, batch 4 = 2 labeled + 2 unlabeled
    paper_source = 'yulequan/UA-MT code/train_LA_meanteacher_certainty_unlabel.py (argparse defaults; SGD and the lr step in the training loop); RandomRotFlip and RandomCrop(112, 112, 80) in the dataset transform'
    paper_settings = dict(optimizer="sgd", lr=0.01, weight_decay=1e-4, lr_step=2500, batch_size=2,
                          unlabeled_batch_size=2, steps=6000, augment="rotflip")
    paper_la_patch = (112, 112, 80)     # RandomCrop((112, 112, 80)) of the LA script

    def step(self, ctx: StepContext, lab: dict, unlab: dict):
        o = self.options
        logits_u, sup, g = student_pass(ctx, lab, unlab, o["sup_weight"])
        xu, tu = unlab["image"], unlab["task"]
        was_training = ctx.teacher.training
        ctx.teacher.train()  # MC dropout on, as the released code
        with torch.no_grad():
            p_t = torch.softmax(ctx.teacher(noisy(xu, g), tu), 1)
            # T stochastic passes, two copies of the unlabeled batch per forward as the released code
            reps = max(1, o["mc_passes"] // 2)
            acc = torch.zeros_like(p_t)
            for _ in range(reps):
                xx = torch.cat([noisy(xu, g), noisy(xu, g)])
                pp = torch.softmax(ctx.teacher(xx, torch.cat([tu, tu])), 1)
                acc += pp[: xu.shape[0]] + pp[xu.shape[0]:]
            p_mean = acc / (2 * reps)
            uncertainty = -(p_mean * torch.log(p_mean + 1e-6)).sum(1, keepdim=True)
        ctx.teacher.train(was_training)

        ramp = sigmoid_rampup(ctx.stage_step, o["rampup_fraction"] * ctx.stage_steps)
        threshold = (0.75 + 0.25 * ramp) * math.log(2)
        mask = (uncertainty < threshold).float()
        dist = (torch.softmax(logits_u, 1) - p_t) ** 2
        cons = (mask * dist).sum() / (2 * mask.sum() + 1e-16)
        w = ramp_weight(ctx, o["consistency"], o["rampup_fraction"])
        return {"loss": sup + w * cons, "sup": sup.detach(), "cons": cons.detach(),
                "certain_fraction": mask.mean().detach(), "cons_weight": torch.tensor(w)}
