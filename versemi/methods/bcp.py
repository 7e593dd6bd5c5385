"""Bidirectional Copy-Paste (Bai et al., CVPR 2023), after the released LA code (repository
DeepMed-Lab-ECNU/BCP, ``code/LA_BCP_train.py``: ``pre_train`` and ``self_train``, ``mix_loss``):

* one box per batch (side = 2/3 of the patch on every axis, uniformly placed; mask 0 inside, 1 outside);
* stage ``pretrain``: labeled samples only, the two halves cut-mixed with the box; loss (Dice + CE) / 2
  on the mixed image against the mixed label;
* stage ``selftrain``: the EMA teacher (re-initialised from the pre-trained student, decay 0.99 without
  warm-up) pseudo-labels the unlabeled halves (argmax, then the largest connected component); two mixed
  images: labeled-a outside the box with unlabeled-a inside, and unlabeled-b outside with labeled-b inside;
  each is supervised with (Dice + CE) / 2 computed separately on the box and on the outside, the real-label
  region weighted 1 and the pseudo-label region ``u_weight`` = 0.5; the two mixed losses are added.
  Dice here is the masked soft Dice over both classes (background included), as BCP's.

For the prompted (Uni-) network a mixed image is prompted with the task of the sample that fills the
outside of the box (the larger part); the pasted region keeps its own target. This is how a
task-agnostic copy-paste behaves when datasets are pooled, and it is what VerSemi's synthetic task is
designed to avoid.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

from versemi.mixing import box_mask, mix

from .base import Method, StepContext, register


def masked_dice_ce(logits: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(Dice + CE)/2 restricted to ``region`` (B, D, H, W) in {0,1}; Dice over both classes, eps 1e-5."""
    prob = torch.softmax(logits, 1)
    onehot = F.one_hot(target.long(), 2).movedim(-1, 1).to(prob.dtype)
    r = region.unsqueeze(1)
    inter = (prob * onehot * r).sum(dim=(0, 2, 3, 4))
    denom = (prob * prob * r).sum(dim=(0, 2, 3, 4)) + (onehot * onehot * r).sum(dim=(0, 2, 3, 4))
    dice = (1 - (2 * inter + 1e-5) / (denom + 1e-5)).mean()
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
    default_options = {"mask_ratio": 2 / 3, "u_weight": 0.5, "pretrain_fraction": 2000 / 17000,
                       "lcc": True}

    def stages(self, steps: int):
        n_pre = max(1, round(steps * self.options["pretrain_fraction"]))
        return [("pretrain", n_pre), ("selftrain", max(1, steps - n_pre))]

    def on_stage_start(self, stage, ctx):
        if stage == "selftrain":
            ctx.teacher.load_state_dict(ctx.net.state_dict())

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
