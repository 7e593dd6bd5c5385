"""The losses of VerSemi (versemi/losses.py): Dice, Dice + CE, the aggregation over prompts, L_aux."""

import pytest
import torch

from versemi.losses import aggregate_prompts, aux_loss, dice_loss, supervised_loss


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
