"""CutMix box masks and mixing (versemi/mixing.py): the box volume, seeded positions, the mixed image
and the L_aux targets for different and equal tasks."""

import numpy as np
import pytest
import torch

from versemi.mixing import box_mask, laux_targets, mix


@pytest.mark.parametrize("size,ratio", [((96, 96, 96), 2 / 3), ((48, 48, 48), 0.5), ((32, 64, 16), 0.25)])
def test_box_mask_volume_is_ratio_cubed(size, ratio):
    m = box_mask(4, size, ratio, np.random.default_rng(0))
    inside = (m == 0).float().sum(dim=(1, 2, 3))
    expected = np.prod([int(s * ratio) for s in size])
    assert torch.all(inside == expected)
    assert inside[0].item() / np.prod(size) == pytest.approx(ratio ** 3, rel=1e-6)
    assert set(torch.unique(m).tolist()) <= {0.0, 1.0}


def test_box_mask_positions_random_and_seeded():
    a = box_mask(8, (32, 32, 32), 0.5, np.random.default_rng(1))
    b = box_mask(8, (32, 32, 32), 0.5, np.random.default_rng(1))
    assert torch.equal(a, b)
    assert not all(torch.equal(a[0], a[i]) for i in range(1, 8))
    shared = box_mask(4, (32, 32, 32), 0.5, np.random.default_rng(1), per_sample=False)
    assert all(torch.equal(shared[0], shared[i]) for i in range(4))


def test_mix_and_laux_targets_different_and_same_tasks():
    m = box_mask(2, (8, 8, 8), 0.5, np.random.default_rng(0))
    ya = torch.ones(2, 8, 8, 8)
    yb = torch.zeros(2, 8, 8, 8)
    yb[:, :, :, :4] = 1
    x_mix = mix(ya.unsqueeze(1), yb.unsqueeze(1) * 2, m)
    assert x_mix.shape == (2, 1, 8, 8, 8)
    torch.testing.assert_close(x_mix[:, 0], ya * m + 2 * yb * (1 - m))
    ta, tb = laux_targets(ya, yb, m, torch.tensor([1, 3]), torch.tensor([2, 3]))
    # sample 0: different tasks -> each prompt sees only its own visible structure
    torch.testing.assert_close(ta[0], ya[0] * m[0])
    torch.testing.assert_close(tb[0], yb[0] * (1 - m[0]))
    assert (ta[0] * tb[0]).sum() == 0
    # sample 1: same task -> both targets are the mixed label
    y_mix = ya[1] * m[1] + yb[1] * (1 - m[1])
    torch.testing.assert_close(ta[1], y_mix)
    torch.testing.assert_close(tb[1], y_mix)
