import numpy as np
import pytest
import torch

from versemi.losses import aggregate_prompts, aux_loss, dice_loss, supervised_loss
from versemi.mixing import box_mask, laux_targets, mix


def _ref_dice(p, y, eps=1e-5):
    y = y.float()
    return 1 - (2 * (p * y).sum() + eps) / ((p * p).sum() + (y * y).sum() + eps)


def test_dice_loss_matches_definition_hard_and_soft():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(3, 8, 9, 10, generator=g)
    y = (torch.rand(3, 8, 9, 10, generator=g) > 0.7).long()
    torch.testing.assert_close(dice_loss(p, y), _ref_dice(p, y))
    soft = torch.rand(3, 8, 9, 10, generator=g)
    torch.testing.assert_close(dice_loss(p, soft), _ref_dice(p, soft))
    # batch-level: not the mean of per-sample Dice losses
    per_sample = torch.stack([_ref_dice(p[i], y[i]) for i in range(3)]).mean()
    assert abs(dice_loss(p, y).item() - per_sample.item()) > 1e-6
    assert dice_loss(torch.zeros(2, 4, 4, 4), torch.zeros(2, 4, 4, 4)).item() == pytest.approx(0.0)


def test_supervised_loss_is_dice_plus_ce():
    logits = torch.randn(2, 2, 4, 4, 4, requires_grad=True)
    y = (torch.rand(2, 4, 4, 4) > 0.5).long()
    ref = _ref_dice(torch.softmax(logits, 1)[:, 1], y) + torch.nn.functional.cross_entropy(logits, y)
    torch.testing.assert_close(supervised_loss(logits, y), ref)


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


def test_aggregate_is_max_over_prompts_and_detached_by_default():
    ps = [torch.rand(2, 4, 4, 4, requires_grad=True) for _ in range(4)]
    agg = aggregate_prompts(ps)
    torch.testing.assert_close(agg, torch.stack(ps).max(0).values.detach())
    assert not agg.requires_grad
    assert aggregate_prompts(ps, detach=False).requires_grad


def test_aux_loss_is_mean_of_two_dice_losses():
    la, lb = torch.randn(2, 2, 4, 4, 4), torch.randn(2, 2, 4, 4, 4)
    ta, tb = (torch.rand(2, 4, 4, 4) > 0.5).float(), (torch.rand(2, 4, 4, 4) > 0.5).float()
    ref = 0.5 * (_ref_dice(torch.softmax(la, 1)[:, 1], ta) + _ref_dice(torch.softmax(lb, 1)[:, 1], tb))
    torch.testing.assert_close(aux_loss(la, lb, ta, tb), ref)
