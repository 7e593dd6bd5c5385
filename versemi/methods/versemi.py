"""VerSemi (Zeng et al., IEEE TMI), after the paper and the released ``train.py`` / ``vnet_odod_mix.py`` of the
repository maxwell0027/VerSemi.

Stage ``stage1`` (labeled only; the authors' released run): per labeled batch split into halves a, b,

    L_sup = Dice + CE with each sample's prompt
    x_mix = x_a M + x_b (1 - M),  y_mix = y_a M + y_b (1 - M)      (M: box mask, cube side 2/3)
    L_syn = Dice(F(x_mix, prompt T+1), y_mix)
    L_aux = mean(Dice(F(x_mix, task_a), y_a M), Dice(F(x_mix, task_b), y_b (1 - M)))
            (both targets = y_mix when task_a == task_b)
    loss  = L_sup + L_syn + L_aux

Stage ``stage2`` (adds the unlabeled data, as the paper states): with ratios r ~ U(0.3, 0.6),

    L_sup as above;  L_syn on a labeled-labeled mix (ratio r)
    x_u,mix = x_u M_u + x_l (1 - M_u)
    P_agg   = max_k softmax_fg(F(x_u,mix, prompt k)), k over the run's tasks (1..T in the paper)
              (a target: detached)
    L_unsup = Dice(F(x_u,mix, prompt T+1), P_agg)
    L_lab   = Dice(F(x_u,mix, prompt T+1) (1 - M_u), y_l (1 - M_u))   (the labeled cube)
    loss    = L_sup + L_syn + L_unsup + L_lab

All prompts on one image share one backbone pass (``net.backbone`` + ``net.head``), which is
numerically the same as the authors' one full forward per prompt, gradients and BatchNorm running
statistics included (tested), and 2-3x cheaper.

Switches (``options``): ``laux``; ``syn`` (False: prompt T+1 is never used, so it is never trained:
no L_syn, and stage 2 keeps only L_sup, since L_unsup and L_lab are both defined through the synthetic
prompt — without Task#5 VerSemi has no path from the unlabeled data to the network, and the unlabeled data
are not loaded); ``consistency`` (False = stage 1 for all steps, no unlabeled stage: the authors'
released setting), ``stage1_fraction``, ``mask_ratio``, ``unlab_ratio_range``, and ``authors_stage2``:
reproduce the released stage-2 code instead of the paper: P_agg not detached, and the labeled-region
term computed with the (B,1,...) x (B,...) broadcast that forms a B x B outer product. The head
variants (dynamic / multi / none) are a property of the network, chosen in the run config.
"""

from __future__ import annotations

import torch

from versemi.losses import (
    aggregate_prompts,
    aux_loss,
    dice_loss,
    foreground_prob,
    supervised_loss,
    synthetic_loss,
)
from versemi.mixing import box_mask, laux_targets, mix

from .base import Method, StepContext, register


@register
class VerSemi(Method):
    name = "versemi"
    display_name = "VerSemi"
    uses_unlabeled = True
    uses_teacher = False
    default_options = {"laux": True, "syn": True, "consistency": True, "stage1_fraction": 0.5,
                       "mask_ratio": 2 / 3, "unlab_ratio_range": (0.3, 0.6), "authors_stage2": False}

    def __init__(self, options=None):
        super().__init__(options)
        # the unlabeled data enter only through the synthetic prompt (L_unsup and L_lab train prompt T+1)
        self.uses_unlabeled = bool(self.options["consistency"] and self.options["syn"])

    def stages(self, steps: int):
        if not self.options["consistency"]:
            return [("stage1", steps)]
        n1 = max(1, round(steps * self.options["stage1_fraction"]))
        return [("stage1", n1), ("stage2", max(1, steps - n1))]

    def step(self, ctx: StepContext, lab: dict, unlab: dict | None):
        """Every term of the step in one graph (the losses of the module docstring)."""
        terms: dict = {}
        for one_pass in self.passes(ctx, lab, unlab):
            terms.update(one_pass())
        return _total(terms)

    def train_step(self, ctx: StepContext, lab: dict, unlab: dict | None):
        """The step's update, back-propagated pass by pass: each backbone pass's terms are differentiated as
        soon as they are computed, so that only one pass's activations are alive at a time (stage 1: the
        labeled batch, then its mix; stage 2: also the unlabeled mix), and the optimiser steps once on the
        accumulated gradients. The loss is a sum of per-pass terms and the weights do not change between the
        passes, so the gradients are those of :meth:`step`'s single graph up to the order of float additions,
        and the BatchNorm running statistics see the same forward passes in the same order (tested); the peak
        memory is the largest pass's instead of their sum."""
        opt = ctx.optimizers["net"]
        opt.zero_grad(set_to_none=True)
        terms: dict = {}
        for one_pass in self.passes(ctx, lab, unlab):
            with ctx.autocast():
                part = one_pass()
            if part:
                ctx.backward(_total(part))
                terms.update({k: v.detach() for k, v in part.items()})
        ctx.average_gradients([p for g in opt.param_groups for p in g["params"]])
        opt.step()
        return _total(terms)

    def passes(self, ctx: StepContext, lab: dict, unlab: dict | None) -> list:
        """The step as a list of callables, one per backbone pass, each returning the dict of the terms that
        pass produces; called in order (masks and mixing ratios are drawn from ``ctx.rng`` inside them)."""
        o = self.options
        x, y, t = lab["image"], lab["label"], lab["task"]
        sup = [lambda: {"sup": supervised_loss(ctx.net(x, t), y)}]
        if ctx.stage == "stage1":
            return sup + [lambda: self._mixed_terms(ctx, x, y, t, o["mask_ratio"], with_aux=True)]
        lo, hi = o["unlab_ratio_range"]
        passes = sup + [lambda: self._mixed_terms(ctx, x, y, t, float(ctx.rng.uniform(lo, hi)), with_aux=False)]
        if o["syn"]:   # without prompt T+1 nothing learns from the unlabeled data: L_sup only
            passes.append(lambda: self._unlabeled_terms(ctx, lab, unlab))
        return passes

    # ------------------------------------------------------------------
    def _mixed_terms(self, ctx: StepContext, x, y, t, ratio: float, with_aux: bool) -> dict:
        """L_syn (and L_aux) on a labeled-labeled mix of the two batch halves."""
        o = self.options
        out = {}
        if not (o["syn"] or (with_aux and o["laux"])):
            return out
        net = ctx.net
        h = x.shape[0] // 2
        m = box_mask(h, tuple(x.shape[2:]), ratio, ctx.rng, device=x.device)
        ya, yb = y[:h].float(), y[h:2 * h].float()
        feats = net.backbone(mix(x[:h], x[h:2 * h], m))
        if o["syn"]:
            out["syn"] = synthetic_loss(net.head(feats, ctx.synthetic_task), mix(ya, yb, m))
        if with_aux and o["laux"]:
            ta, tb = laux_targets(ya, yb, m, t[:h], t[h:2 * h])
            logits_b = net.head(feats, t[h:2 * h])
            logits_a = net.head(feats, t[:h])
            out["aux"] = aux_loss(logits_a, logits_b, ta, tb)
        return out

    def _unlabeled_terms(self, ctx: StepContext, lab: dict, unlab: dict) -> dict:
        """Stage 2's L_unsup and L_lab on an unlabeled-labeled mix (one backbone pass)."""
        o = self.options
        net = ctx.net
        x, y = lab["image"], lab["label"]
        lo, hi = o["unlab_ratio_range"]
        xu = unlab["image"]
        n = min(xu.shape[0], x.shape[0])
        mu = box_mask(n, tuple(x.shape[2:]), float(ctx.rng.uniform(lo, hi)), ctx.rng, device=x.device)
        feats = net.backbone(mix(xu[:n], x[:n], mu))
        p_syn = foreground_prob(net.head(feats, ctx.synthetic_task))
        prompts = ctx.task_prompts  # the run's tasks (all four in the paper's setting)
        if o["authors_stage2"]:
            p_agg = aggregate_prompts([foreground_prob(net.head(feats, k)) for k in prompts], detach=False)
        else:
            with torch.no_grad():
                p_agg = aggregate_prompts([foreground_prob(net.head(feats, k)) for k in prompts])
        terms = {"unsup": dice_loss(p_syn, p_agg)}  # L_unsup = Dice(F(x_u,mix, T+1), P_agg)
        cube = 1 - mu
        yl = y[:n].float()
        if o["authors_stage2"]:
            # (B,1,...) * (B,...) broadcasts to a B x B outer product in the released code
            terms["lab"] = dice_loss(cube[:, None] * p_syn[None], cube[:, None] * yl[None])
        else:
            terms["lab"] = dice_loss(p_syn * cube, yl * cube)
        return terms


def _total(terms: dict) -> dict:
    loss = sum(terms.values())
    return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}

