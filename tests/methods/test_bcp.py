"""BCP: pre-training on mixed labeled pairs, then bidirectional copy-paste with teacher pseudo-labels."""

import copy

import torch

from versemi.methods import get_method
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
    c = ctx(net, "selftrain", teacher=teacher, **m.options)
    m.on_stage_start("selftrain", c)   # the teacher restarts from the pre-trained student
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), teacher.state_dict().values()))
    out = m.step(c, batch(4, 1, [1] * 4), batch(4, 2, [1] * 4))
    assert {"mix_l", "mix_u"} <= set(out) and torch.isfinite(out["loss"])
    assert m.ema_alpha(0, 0.99) == 0.99   # plain decay, no warm-up
