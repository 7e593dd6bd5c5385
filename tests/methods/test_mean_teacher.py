"""Mean Teacher: supervised + ramped consistency with an EMA teacher on noisy unlabeled input."""

import torch

from versemi.methods import get_method
from versemi.methods.mean_teacher import noisy

from .helpers import trains_on_fixed_batch


def test_mean_teacher_trains_on_fixed_batch():
    trains_on_fixed_batch("mean_teacher", {}, "dynamic", 0.0, {"sup", "cons"})


def test_noise_is_clipped_and_teacher_declared():
    x = torch.zeros(2, 1, 8, 8, 8)
    n = noisy(x, torch.Generator().manual_seed(0), std=1.0, clip=0.2)
    assert n.abs().max() <= 0.2 + 1e-7 and n.abs().max() > 0.1
    assert get_method("mean_teacher").teachers() == {"teacher": "net"}
