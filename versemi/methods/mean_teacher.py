"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017) as the 3D SSL line uses it (SSL4MIS / UA-MT):
student on labeled + unlabeled samples, EMA teacher on the unlabeled samples with Gaussian input noise
N(0, 0.1) clipped to +-0.2; loss = 0.5 (CE + Dice) on labeled + w(t) * MSE(softmax student, softmax
teacher) on unlabeled, w(t) = 0.1 * sigmoid_rampup(t, ramp length)."""

from __future__ import annotations

import torch

from versemi.losses import supervised_loss

from .base import Method, StepContext, register, sigmoid_rampup


def noisy(x: torch.Tensor, generator: torch.Generator | None = None, std: float = 0.1, clip: float = 0.2):
    noise = torch.randn(x.shape, generator=generator, device="cpu").to(x.device) * std
    return x + noise.clamp(-clip, clip)


def student_pass(ctx: StepContext, lab: dict, unlab: dict, sup_weight: float):
    """Student logits of the unlabeled samples (B_u, 2, ...), the weighted supervised loss on the labeled
    samples, and a noise generator seeded from the step's rng (labeled and unlabeled in one batch)."""
    b = lab["image"].shape[0]
    logits = ctx.net(torch.cat([lab["image"], unlab["image"]]), torch.cat([lab["task"], unlab["task"]]))
    sup = sup_weight * supervised_loss(logits[:b], lab["label"])
    return logits[b:], sup, torch.Generator().manual_seed(int(ctx.rng.integers(2**62)))


def ramp_weight(ctx: StepContext, weight: float, rampup_fraction: float) -> float:
    """``weight`` * sigmoid ramp-up reaching 1 after ``rampup_fraction`` of the stage."""
    return weight * sigmoid_rampup(ctx.stage_step, rampup_fraction * ctx.stage_steps)


@register
class MeanTeacher(Method):
    name = "mean_teacher"
    display_name = "MT"
    uses_unlabeled = True
    uses_teacher = True
    default_options = {"consistency": 0.1, "rampup_fraction": 1.0, "sup_weight": 0.5}
    # SSL4MIS / UA-MT scripts: SGD 0.01 (momentum 0.9, wd 1e-4), /10 every 2,500 iterations, 6,000
    # iterations, batch 2 labeled + 2 unlabeled
    paper_source = 'yulequan/UA-MT code/train_LA_meanteacher_certainty_unlabel.py (argparse defaults; SGD and the lr step in the training loop)'
    paper_settings = dict(optimizer="sgd", lr=0.01, weight_decay=1e-4, lr_step=2500, batch_size=2,
                          unlabeled_batch_size=2, steps=6000, augment="rotflip")
    paper_la_patch = (112, 112, 80)

    def step(self, ctx: StepContext, lab: dict, unlab: dict):
        o = self.options
        logits_u, sup, g = student_pass(ctx, lab, unlab, o["sup_weight"])
        with torch.no_grad():
            p_t = torch.softmax(ctx.teacher(noisy(unlab["image"], g), unlab["task"]), 1)
        cons = torch.mean((torch.softmax(logits_u, 1) - p_t) ** 2)
        w = ramp_weight(ctx, o["consistency"], o["rampup_fraction"])
        return {"loss": sup + w * cons, "sup": sup.detach(), "cons": cons.detach(),
                "cons_weight": torch.tensor(w)}
