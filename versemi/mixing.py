"""CutMix box masks and the mixing of images, labels and task targets, after the released ``train.py`` of
the repository maxwell0027/VerSemi (a cube of side ratio x patch per sample, or one per batch as BCP).

Conventions (as the authors'): a mask ``M`` is 1 outside one cube and 0 inside it;
``mix(a, b, M) = a * M + b * (1 - M)``, i.e. the cube shows ``b``.
Shapes: images (B, C, D, H, W); labels/probabilities (B, D, H, W); masks (B, D, H, W) float.
"""

from __future__ import annotations

import numpy as np
import torch


def box_mask(batch: int, spatial: tuple[int, int, int], ratio: float, rng: np.random.Generator,
             device=None, per_sample: bool = True) -> torch.Tensor:
    """(B, D, H, W) float mask: zeros inside one cube per sample, ones elsewhere.

    The cube's side on each axis is ``int(ratio * size)`` and its start is drawn uniformly from
    ``[0, size - side)`` (upper bound exclusive, as the authors' ``context_mask``; a start of 0 when the
    cube fills the axis). Works for any patch size (the authors hard-code 96). ``per_sample=False``
    draws one cube for the whole batch (BCP's convention).
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    sides = [int(s * ratio) for s in spatial]
    mask = torch.ones((batch, *spatial), dtype=torch.float32)
    n_draws = batch if per_sample else 1
    starts = [[int(rng.integers(0, s - c)) if s - c > 0 else 0 for s, c in zip(spatial, sides)]
              for _ in range(n_draws)]
    for i in range(batch):
        (z, y, x) = starts[i if per_sample else 0]
        mask[i, z:z + sides[0], y:y + sides[1], x:x + sides[2]] = 0.0
    return mask.to(device) if device is not None else mask


def mix(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """a * M + b * (1 - M), broadcasting a (B, D, H, W) mask over a channel axis when a is 5-D."""
    m = mask.unsqueeze(1) if (a.dim() == mask.dim() + 1) else mask
    return a * m + b * (1 - m)


def laux_targets(y_a: torch.Tensor, y_b: torch.Tensor, mask: torch.Tensor,
                 task_a: torch.Tensor, task_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of L_aux on x_mix = mix(x_a, x_b, M).

    Prompt ``task_a`` must find only ``y_a * M`` (its structure where its image is visible) and prompt
    ``task_b`` only ``y_b * (1 - M)``; for samples whose two tasks are equal both targets are the full
    mixed label ``mix(y_a, y_b, M)``. y_a, y_b, mask: (B, D, H, W); task_a, task_b: (B,).
    """
    y_a, y_b = y_a.to(mask.dtype), y_b.to(mask.dtype)
    t_a, t_b = y_a * mask, y_b * (1 - mask)
    same = (task_a.to(mask.device) == task_b.to(mask.device)).view(-1, *([1] * (mask.dim() - 1)))
    y_mix = mix(y_a, y_b, mask)
    return torch.where(same, y_mix, t_a), torch.where(same, y_mix, t_b)
