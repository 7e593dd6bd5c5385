"""Bidirectional Copy-Paste (Bai et al., CVPR 2023), after the released LA code (repository
DeepMed-Lab-ECNU/BCP, ``code/LA_BCP_train.py``: ``pre_train`` and ``self_train``; ``code/utils/BCP_utils.py``:
``mix_loss``; ``code/utils/losses.py``: ``mask_DiceLoss``):

* one box per batch (side = 2/3 of the patch on every axis, uniformly placed; mask 0 inside, 1 outside);
* stage ``pretrain``: labeled samples only, the two halves cut-mixed with the box; loss (Dice + CE) / 2
  on the mixed image against the mixed label; validated at its end, and the best pre-trained model
  (:attr:`~versemi.methods.Method.select_per_stage`) starts self-training;
* stage ``selftrain``: student and EMA teacher (decay 0.99 without warm-up) both start from the best
  pre-trained model, with a fresh optimiser whose learning rate is divided by 10 every 2,500 of the
  15,000 self-training iterations (:meth:`BCP.lr_at`; the same fraction of the stage in the CPU
  profiles); the teacher pseudo-labels the unlabeled halves (argmax, then the largest connected component);
  two mixed images: labeled-a outside the box with unlabeled-a inside, and unlabeled-b outside with
  labeled-b inside; each is supervised with (Dice + CE) / 2 computed separately on the box and on the
  outside, the real-label region weighted 1 and the pseudo-label region ``u_weight`` = 0.5; the two mixed
  losses are added. The evaluated model is the best of the self-training validations.

Dice is ``mask_DiceLoss``: per sample and per class (background included), soft probabilities times the
one-hot target over the region, denominators not squared, smooth 1e-5, then averaged over samples and
classes (:func:`masked_dice_ce`).

For the prompted (Uni-) network a mixed image is prompted with the task of the sample that fills the
outside of the box (the larger part); the pasted region keeps its own target. This is how a
task-agnostic copy-paste behaves when datasets are pooled, and it is what VerSemi's synthetic task is
designed to avoid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

from versemi.checkpoints import BEST
from versemi.mixing import box_mask, mix

from .base import Method, StepContext, build_optimizer, register


def masked_dice_ce(logits: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(Dice + CE) / 2 restricted to ``region`` (B, D, H, W) in {0, 1}.

    Dice as the released ``mask_DiceLoss``: for each sample and each of the two classes
    (2 sum(p t r) + 1e-5) / (sum((p + t) r) + 1e-5), one minus its mean over samples and classes; CE is
    the voxel cross-entropy averaged over the region (``mix_loss``)."""
    prob = torch.softmax(logits, 1)
    onehot = F.one_hot(target.long(), 2).movedim(-1, 1).to(prob.dtype)
    r = region.unsqueeze(1).to(prob.dtype)
    inter = (prob * onehot * r).sum(dim=(2, 3, 4))               # (B, 2)
    union = ((prob + onehot) * r).sum(dim=(2, 3, 4))
    dice = 1 - ((2 * inter + 1e-5) / (union + 1e-5)).mean()
    ce = (F.cross_entropy(logits, target.long(), reduction="none") * region).sum() / (region.sum() + 1e-16)
    return (dice + ce) / 2


def largest_component_batch(mask: torch.Tensor) -> torch.Tensor:
    """Keep the largest 26-connected foreground component of each sample of (B, D, H, W) {0,1}."""
    out = np.zeros(mask.shape, dtype=np.uint8)
    arr = mask.detach().cpu().numpy().astype(bool)
    for i in range(arr.shape[0]):
        lab, n = ndimage.label(arr[i], structure=np.ones((3, 3, 3)))
        if n > 0:
            sizes = np.bincount(lab.ravel())[1:]
            out[i] = lab == (int(np.argmax(sizes)) + 1)
    return torch.from_numpy(out).to(mask.device).long()


@register
class BCP(Method):
    name = "bcp"
    display_name = "BCP"
    uses_unlabeled = True
    uses_teacher = True
    select_per_stage = True
    default_options = {"mask_ratio": 2 / 3, "u_weight": 0.5, "pretrain_fraction": 2000 / 17000,
                       "lcc": True, "lr_decay_fraction": 2500 / 15000}
    # code/LA_BCP_train.py (argparse defaults): SGD 0.01 (momentum 0.9, wd 1e-4), batch 8 = 4 labeled +
    # 4 unlabeled, 2,000 pre-training + 15,000 self-training iterations
    paper_source = 'DeepMed-Lab-ECNU/BCP code/LA_BCP_train.py lines 33-55 (argparse defaults), 135 and 218 (SGD), 273-276 (lr step in self-training)'
    paper_settings = dict(optimizer="sgd", lr=0.01, weight_decay=1e-4, batch_size=4, unlabeled_batch_size=4,
                          steps=17000, augment="rotflip")
    paper_la_patch = (112, 112, 80)     # RandomCrop((112, 112, 80)) of the LA script

    def stages(self, steps: int):
        n_pre = max(1, round(steps * self.options["pretrain_fraction"]))
        return [("pretrain", n_pre), ("selftrain", max(1, steps - n_pre))]

    def lr_at(self, cfg, optimizer: str, step: int) -> float:
        """Constant in pre-training; in self-training divided by 10 every ``lr_decay_fraction`` of the
        stage (2,500 of 15,000 iterations as released: ``lr_ = base_lr * 0.1 ** (iter_num // 2500)``)."""
        (_, n_pre), (_, n_self) = self.stages(cfg.steps)
        if step < n_pre:
            return cfg.lr
        every = max(1, round(self.options["lr_decay_fraction"] * n_self))
        return cfg.lr * 0.1 ** ((step - n_pre) // every)

    def on_stage_start(self, stage, ctx):
        """Self-training: student and teacher from the best pre-trained model (``best.pt`` of the run,
        the current weights when no validation ran), and a fresh optimiser."""
        if stage != "selftrain":
            return
        best = Path(ctx.where) / BEST
        if ctx.where and best.is_file():
            ctx.net.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["net"])
        ctx.teacher.load_state_dict(ctx.net.state_dict())
        ctx.optimizers["net"] = build_optimizer(ctx.cfg, ctx.net.parameters())

    def ema_alpha(self, step: int, alpha: float) -> float:
        return alpha  # BCP: plain decay, no warm-up

    def step(self, ctx: StepContext, lab: dict, unlab: dict | None):
        o = self.options
        x, y, t = lab["image"], lab["label"], lab["task"]
        h = x.shape[0] // 2
        spatial = tuple(x.shape[2:])
        m = box_mask(h, spatial, o["mask_ratio"], ctx.rng, device=x.device, per_sample=False)
        if ctx.stage == "pretrain":
            x_mix = mix(x[:h], x[h:2 * h], m)
            y_mix = mix(y[:h].float(), y[h:2 * h].float(), m).long()
            loss = masked_dice_ce(ctx.net(x_mix, t[:h]), y_mix, torch.ones_like(m))
            return {"loss": loss, "mix_sup": loss.detach()}

        xu, tu = unlab["image"], unlab["task"]
        hu = xu.shape[0] // 2
        n = min(h, hu)
        m = m[:n]
        with torch.no_grad():
            p = ctx.teacher(xu[: 2 * n], tu[: 2 * n]).argmax(1)
            plab = largest_component_batch(p) if o["lcc"] else p
        la, lb, ua, ub = x[:n], x[h:h + n], xu[:n], xu[hu:hu + n]
        ya, yb, pa, pb = y[:n], y[h:h + n], plab[:n], plab[n:2 * n]
        # labeled-a outside the box, unlabeled-a inside
        out_l = ctx.net(mix(la, ua, m), t[:n])
        loss_l = masked_dice_ce(out_l, ya, m) + o["u_weight"] * masked_dice_ce(out_l, pa, 1 - m)
        # unlabeled-b outside the box, labeled-b inside
        out_u = ctx.net(mix(ub, lb, m), tu[n:2 * n])
        loss_u = o["u_weight"] * masked_dice_ce(out_u, pb, m) + masked_dice_ce(out_u, yb, 1 - m)
        loss = loss_l + loss_u
        return {"loss": loss, "mix_l": loss_l.detach(), "mix_u": loss_u.detach()}
