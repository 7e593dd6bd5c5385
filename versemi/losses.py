"""Losses of VerSemi, after the paper and the released ``utils1/losses.py`` and ``train.py`` of the repository
maxwell0027/VerSemi.

Shapes: ``logits`` (B, 2, D, H, W); probabilities of the foreground ``prob`` (B, D, H, W);
labels ``y`` (B, D, H, W) in {0, 1} (any integer/bool/float dtype); soft targets allowed where noted.
"""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
from torch.nn import functional as F

DICE_EPS = 1e-5

# 1 - (2 sum(p y) + eps) / (sum(p^2) + sum(y^2) + eps), summed over the whole batch (batch=True).
_MONAI_DICE = DiceLoss(include_background=True, squared_pred=True, batch=True,
                       smooth_nr=DICE_EPS, smooth_dr=DICE_EPS, reduction="mean")


def dice_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Batch-level soft Dice loss with squared denominators (the authors' ``dice_loss``).

    prob: (B, ...) foreground probabilities; target: same shape, hard {0,1} or soft in [0, 1].
    Returns a scalar. Computed by MONAI's ``DiceLoss(squared_pred=True, batch=True,
    smooth_nr=smooth_dr=1e-5)``, which equals the definition exactly (tested).
    """
    if prob.shape != target.shape:
        raise ValueError(f"dice_loss: prob {tuple(prob.shape)} and target {tuple(target.shape)} differ")
    return _MONAI_DICE(prob.unsqueeze(1), target.to(prob.dtype).unsqueeze(1))


def foreground_prob(logits: torch.Tensor) -> torch.Tensor:
    """softmax(logits)[:, 1]: (B, 2, ...) -> (B, ...)."""
    return torch.softmax(logits, dim=1)[:, 1]


def supervised_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Dice(softmax foreground, y) + CE(logits, y). logits (B, 2, ...), y (B, ...) in {0, 1}."""
    y = y.long()
    return dice_loss(foreground_prob(logits), y) + F.cross_entropy(logits, y)


def synthetic_loss(logits_syn: torch.Tensor, y_mix: torch.Tensor) -> torch.Tensor:
    """L_syn: Dice of the synthetic-prompt (Task#5) prediction on the mixed image against the mixed label."""
    return dice_loss(foreground_prob(logits_syn), y_mix)


def aux_loss(logits_a: torch.Tensor, logits_b: torch.Tensor,
             target_a: torch.Tensor, target_b: torch.Tensor) -> torch.Tensor:
    """L_aux: mean of the Dice losses of the two source prompts on the mixed image.

    logits_a: prediction with the prompts of the first half; target_a from ``mixing.laux_targets``.
    """
    return 0.5 * (dice_loss(foreground_prob(logits_a), target_a) + dice_loss(foreground_prob(logits_b), target_b))


def aggregate_prompts(probs: list[torch.Tensor] | torch.Tensor, detach: bool = True) -> torch.Tensor:
    """P_agg = max_k p_k over the task prompts k = 1..T.

    probs: list of (B, ...) foreground probabilities (or a stacked (T, B, ...) tensor). The paper treats
    P_agg as a target, so it is detached by default; the authors' stage-2 code does not detach it
    (``detach=False`` reproduces that).
    """
    stacked = torch.stack(list(probs)) if not torch.is_tensor(probs) else probs
    agg = stacked.amax(dim=0).clamp(0.0, 1.0)
    return agg.detach() if detach else agg
