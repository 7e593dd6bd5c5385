"""BCP: pre-training on mixed labeled pairs, then bidirectional copy-paste with teacher pseudo-labels."""

import copy

import pytest
import torch
from torch.nn import functional as F

from versemi.checkpoints import BEST, save_checkpoint
from versemi.config import make_config
from versemi.methods import get_method
from versemi.methods.bcp import masked_dice_ce
from versemi.model import VerSemiNet

from .helpers import batch, ctx, trains_on_fixed_batch


def test_bcp_trains_on_fixed_batch():
    trains_on_fixed_batch("bcp", {}, "none", 0.0, {"mix_sup"})


def test_bcp_selftrain_uses_teacher_pseudo_labels():
    torch.manual_seed(0)
    net = VerSemiNet(n_filters=4, head="none").train()
    teacher = copy.deepcopy(net)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(1.0)
    m = get_method("bcp")
    assert [s for s, _ in m.stages(100)] == ["pretrain", "selftrain"]
    old_opt = torch.optim.SGD(net.parameters(), lr=0.5)
    c = ctx(net, "selftrain", teacher=teacher, optimizers={"net": old_opt}, **m.options)
    c.cfg = make_config("bcp", "smoke")
    m.on_stage_start("selftrain", c)   # the teacher restarts from the pre-trained student
    assert c.optimizers["net"] is not old_opt and isinstance(c.optimizers["net"], torch.optim.Adam)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), teacher.state_dict().values()))
    out = m.step(c, batch(4, 1, [1] * 4), batch(4, 2, [1] * 4))
    assert {"mix_l", "mix_u"} <= set(out) and torch.isfinite(out["loss"])
    assert m.ema_alpha(0, 0.99) == 0.99   # plain decay, no warm-up


def test_bcp_selftrain_starts_from_the_best_pretrained_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = VerSemiNet(n_filters=4, head="none").train()
    best = VerSemiNet(n_filters=4, head="none")
    save_checkpoint(tmp_path / BEST, {"net": best.state_dict(), "step": 5, "score": 0.5})
    teacher = copy.deepcopy(net)
    m = get_method("bcp")
    c = ctx(net, "selftrain", teacher=teacher, optimizers={}, **m.options)
    c.cfg, c.where = make_config("bcp", "smoke"), str(tmp_path)
    m.on_stage_start("selftrain", c)
    for a, b, t in zip(net.state_dict().values(), best.state_dict().values(), teacher.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(t, b)
    assert m.select_per_stage


def test_bcp_learning_rate_is_constant_then_divided_by_ten_every_sixth_of_self_training():
    m = get_method("bcp")
    cfg = make_config("bcp", "paper")
    assert (cfg.optimizer, cfg.lr, cfg.steps, cfg.batch_size, cfg.amp) == ("sgd", 0.01, 17000, 4, False)
    assert [m.lr_at(cfg, "net", s) for s in (0, 1999)] == [0.01, 0.01]
    assert m.lr_at(cfg, "net", 2000) == 0.01 and m.lr_at(cfg, "net", 2000 + 2499) == 0.01
    assert m.lr_at(cfg, "net", 2000 + 2500) == pytest.approx(1e-3)
    assert m.lr_at(cfg, "net", 2000 + 14999) == pytest.approx(1e-7)


def test_masked_dice_is_per_sample_and_class_without_squares():
    logits = torch.randn(2, 2, 4, 4, 4)
    target = (torch.rand(2, 4, 4, 4) > 0.7).long()
    region = (torch.rand(2, 4, 4, 4) > 0.3).float()
    p = torch.softmax(logits, 1)
    dices = []
    for i in range(2):
        for c in range(2):
            t = (target[i] == c).float()
            dices.append((2 * (p[i, c] * t * region[i]).sum() + 1e-5) / (((p[i, c] + t) * region[i]).sum() + 1e-5))
    ce = (F.cross_entropy(logits, target, reduction="none") * region).sum() / region.sum()
    expected = ((1 - torch.stack(dices).mean()) + ce) / 2
    assert torch.allclose(masked_dice_ce(logits, target, region), expected, atol=1e-6)
