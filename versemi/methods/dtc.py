"""Dual-Task Consistency (Luo et al., AAAI 2021), after the released LA code of the repository
HiLab-git/DTC (commit 2525b9c): ``code/train_la_dtc.py`` (the training loop), ``code/networks/vnet_sdf.py``
(the dual-output V-Net), ``code/utils/util.py: compute_sdf`` (the level-set target),
``code/utils/losses.py: dice_loss`` and ``code/test_util.py: test_single_case`` (what is evaluated).

One network, one decoder, two outputs per voxel: a segmentation and a level-set function (LSF) in
[-1, 1] (tanh), the normalised signed distance to the object's surface (negative inside). No teacher.

* labeled samples (the first ``batch_size`` of the step's batch): Dice(segmentation foreground
  probability, label) + ``beta`` (0.3) x MSE(LSF, :func:`signed_distance` of the label patch); the released
  script computes a cross-entropy too but only logs it (``ce_weight`` = 0, see "Decisions");
* every sample (labeled and unlabeled, one forward of the joint batch as released): dual-task consistency
  = mean over voxels and samples of (sigmoid(-k LSF) - p)^2, k = 1500 (:func:`levelset_to_prob`), p the
  segmentation foreground probability; gradients flow into both outputs (nothing is detached);
* loss = labeled loss + w(t) x consistency, w(t) = ``consistency`` (1.0) x sigmoid_rampup(t // 150, 40)
  over the released 6,000 iterations (:func:`dtc_rampup`: the same staircase as fractions of the run).

Shapes: images (B, 1, D, H, W); labels (B, D, H, W) in {0, 1}; segmentation logits (B, 2, D, H, W); LSF
(B, D, H, W), unitless (a distance divided by the largest distance of the patch).

Network: the run's :class:`~versemi.model.VerSemiNet` itself (``build_net``), so the checkpoint is a plain
VerSemiNet and ``net(x, task)`` is the segmentation. The prompted head already has a second 8->2 output
that VerSemi leaves unused; its channel 1, through tanh, is the LSF (:func:`dual_task_outputs`). The two
outputs thus share the decoder (as released) and the head's 8-channel trunk, and each is one affine map
of the same 8 features, as the released ``out_conv`` / ``out_conv2`` are of the last decoder features.
The same code gives the task-specific model (``head="none"``: one static head) and Uni-DTC
(``head="dynamic"``: both outputs are generated per sample from its task prompt).

Evaluated: the segmentation output (``eval_network = "net"``, its first head output), as the released
``test_single_case``, which thresholds sigmoid(segmentation) at 0.5 and computes the level-set mask only
to discard it.

Decisions (where the released code is ambiguous, broken, or does not apply to this companion):

1. 1-channel sigmoid -> 2-class softmax. The released LA network has one segmentation logit z and
   p = sigmoid(z); here p = softmax(logits)[:, 1] = sigmoid(l1 - l0), the same family of functions, so
   Dice, the consistency and the 0.5 threshold (= argmax) are unchanged. The LSF has one channel as
   released (channel 1 of the second head output); channel 0 of that output is unused.
2. Cross-entropy: the released script computes BCE(segmentation, label) (``loss_seg``) and logs it but
   does not add it: ``supervised_loss = loss_seg_dice + beta * loss_sdf``. Kept as released
   (``ce_weight`` = 0; the CE is still logged as ``ce``); ``ce_weight=1`` gives Dice + CE.
3. Consistency weight: the argparse has ``--consistency_weight 0.1`` and ``--consistency 1.0``; only
   ``args.consistency`` (1.0) enters ``get_current_consistency_weight``, so the weight is 1.0.
4. Ramp-up: released ``sigmoid_rampup(iter_num // 150, 40)``, a staircase of 40 steps of 150 iterations
   reaching 1 at iteration 6,000, the end of the run: ``rampup_fraction`` = 6000/6000 of the run and
   ``rampup_units`` = 40 stairs (0: a smooth ramp). Iteration counts are not used in any profile.
5. Signed distance of a patch without a surface: the released ``compute_sdf`` leaves an empty mask all
   zeros but divides 0 by 0 (NaN target, diverged training) for a patch entirely inside the object; both
   are all zeros here (no surface in the patch, no level-set target; the same rule as the empty mask).
6. Backbone: the companion's shared V-Net (InstanceNorm, no ``block_nine``, no finest skip) instead of the
   released BatchNorm V-Net with ``block_nine`` and the x1 skip, as for every baseline here. Dropout3d
   p = 0.5 at the released places (bottleneck, last decoder features; ``has_dropout=True``) in the paper
   profile; the CPU profiles keep VerSemi's network (no dropout): DTC does not need dropout to work.
7. Labeled/unlabeled batch: released batch 4 = 2 labeled + 2 unlabeled from a two-stream sampler; here the
   trainer's labeled and unlabeled batches are concatenated (labeled first) into one forward.
8. Uni-DTC: the level-set target is the label of the sample's own task; nothing else is task-dependent.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from skimage.segmentation import find_boundaries
from torch.nn import functional as F

from versemi.losses import dice_loss

from .base import Method, StepContext, register, sigmoid_rampup

LEVELSET_SHARPNESS = 1500.0   # k of the released ``torch.sigmoid(-1500 * outputs_tanh)``


def signed_distance(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    """Normalised signed distance of each sample's foreground, as the released ``compute_sdf``.

    labels: (B, D, H, W) (or (B, H, W)) in {0, 1}. Returns float32 of the same shape, per sample:
    outside = (Euclidean distance to the nearest foreground voxel) / its maximum over the patch, in (0, 1];
    inside = -(distance to the nearest background voxel) / its maximum, in [-1, 0); the inner boundary
    (foreground voxels with a background face-neighbour, ``skimage.segmentation.find_boundaries``
    mode ``inner``) = 0. A patch with no surface (all background or all foreground) is all zeros
    (module docstring, decision 5). Distances are in voxels (the released code passes no spacing).
    """
    arr = labels.detach().cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
    fg_all = arr.astype(bool)
    out = np.zeros(arr.shape, dtype=np.float32)
    for i, fg in enumerate(fg_all):
        if not fg.any() or fg.all():
            continue
        inside = distance_transform_edt(fg)      # 0 outside the object
        outside = distance_transform_edt(~fg)    # 0 inside the object
        sdf = outside / outside.max() - inside / inside.max()   # both minima are 0 (min-max as released)
        sdf[find_boundaries(fg, mode="inner")] = 0.0
        out[i] = sdf
    return out


def levelset_to_prob(lsf: torch.Tensor, k: float = LEVELSET_SHARPNESS) -> torch.Tensor:
    """The level set's foreground probability sigmoid(-k LSF): about 1 inside (LSF < 0), 0.5 on the
    surface (LSF = 0), about 0 outside. Same shape as ``lsf``."""
    return torch.sigmoid(-k * lsf)


def dual_task_outputs(net, x: torch.Tensor, task) -> tuple[torch.Tensor, torch.Tensor]:
    """Segmentation logits (B, 2, D, H, W) and LSF (B, D, H, W) in [-1, 1] of one forward of ``net``
    (a :class:`~versemi.model.VerSemiNet`) on ``x`` with prompts ``task``: the first head output, and tanh
    of channel 1 of the second (the released ``out_conv2`` and ``tanh(out_conv)``)."""
    seg, second = net.head(net.backbone(x), task, return_second=True)
    return seg, torch.tanh(second[:, 1])


def dual_task_consistency(lsf: torch.Tensor, prob: torch.Tensor, k: float = LEVELSET_SHARPNESS) -> torch.Tensor:
    """Mean over all voxels of all samples of (sigmoid(-k LSF) - p)^2 (the released ``consistency_loss``).
    lsf, prob: (B, D, H, W); prob is the segmentation's foreground probability."""
    return torch.mean((levelset_to_prob(lsf.float(), k) - prob.float()) ** 2)


def dtc_rampup(step: int, steps: int, fraction: float, units: int) -> float:
    """The released ramp ``sigmoid_rampup(iter // 150, 40)`` with its length as a fraction of the run:
    the ramp lasts ``fraction * steps`` steps and, with ``units`` > 0, rises in ``units`` equal stairs
    (released: 40 stairs of 150 iterations in 6,000); ``units`` = 0 ramps smoothly."""
    length = fraction * steps
    if length <= 0:
        return 1.0
    if units <= 0:
        return sigmoid_rampup(step, length)
    return sigmoid_rampup(math.floor(step * units / length), units)


@register
class DTC(Method):
    name = "dtc"
    display_name = "DTC"
    uses_unlabeled = True
    default_options = {"beta": 0.3, "consistency": 1.0, "rampup_fraction": 1.0, "rampup_units": 40,
                       "levelset_sharpness": LEVELSET_SHARPNESS, "ce_weight": 0.0}
    # code/train_la_dtc.py: argparse defaults (lines 33-40): max_iterations 6000, batch_size 4 with
    # labeled_bs 2, base_lr 0.01; SGD momentum 0.9, weight decay 1e-4 (lines 144-145); lr x0.1 every 2,500
    # iterations (lines 251-254); VNet(..., has_dropout=True) (lines 113-114): Dropout3d p = 0.5
    # (code/networks/vnet_sdf.py). RunConfig's momentum (0.9) and lr_gamma (0.1) are the released ones.
    paper_source = 'HiLab-git/DTC code/train_la_dtc.py lines 33-40 (argparse defaults), 113-114 (dropout), 144-145 (SGD), 251-254 (lr step)'
    paper_settings = dict(optimizer="sgd", lr=0.01, weight_decay=1e-4, lr_step=2500, batch_size=2,
                          unlabeled_batch_size=2, steps=6000, dropout=0.5)

    def consistency_weight(self, ctx: StepContext) -> float:
        o = self.options
        return o["consistency"] * dtc_rampup(ctx.stage_step, ctx.stage_steps, o["rampup_fraction"],
                                             o["rampup_units"])

    def step(self, ctx: StepContext, lab: dict, unlab: dict | None):
        o = self.options
        b = lab["image"].shape[0]
        if unlab is not None:
            x = torch.cat([lab["image"], unlab["image"]])
            task = torch.cat([lab["task"], unlab["task"]])
        else:
            x, task = lab["image"], lab["task"]
        logits, lsf = dual_task_outputs(ctx.net, x, task)
        prob = torch.softmax(logits.float(), 1)[:, 1]
        y = lab["label"].long()

        dice = dice_loss(prob[:b], y)
        ce = F.cross_entropy(logits[:b].float(), y)
        target = torch.from_numpy(signed_distance(y)).to(lsf.device)
        sdf = F.mse_loss(lsf[:b].float(), target)
        sup = dice + o["ce_weight"] * ce + o["beta"] * sdf

        cons = dual_task_consistency(lsf, prob, o["levelset_sharpness"])
        w = self.consistency_weight(ctx)
        return {"loss": sup + w * cons, "sup": sup.detach(), "dice": dice.detach(), "ce": ce.detach(),
                "sdf": sdf.detach(), "cons": cons.detach(), "cons_weight": torch.tensor(w)}
