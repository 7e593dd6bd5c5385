"""VerSemi: the stage-1 and stage-2 terms, the released stage-2 variant and the ablation switches."""

import torch

from versemi.methods import get_method
from versemi.model import VerSemiNet

from .helpers import batch, ctx, trains_on_fixed_batch


def test_versemi_trains_on_fixed_batch():
    trains_on_fixed_batch("versemi", {}, "dynamic", 0.0, {"sup", "syn", "aux"})


def test_versemi_stage2_terms_and_authors_variant():
    torch.manual_seed(0)
    net = VerSemiNet(n_filters=4).train()
    lab, unlab = batch(4, 1, [1, 2, 3, 4]), batch(4, 2, [2, 2, 3, 3])
    paper = get_method("versemi")
    assert [s for s, _ in paper.stages(10)] == ["stage1", "stage2"]
    out = paper.step(ctx(net, "stage2", **paper.options), lab, unlab)
    assert {"sup", "syn", "unsup", "lab"} <= set(out) and "aux" not in out
    authors = get_method("versemi", {"authors_stage2": True})
    out_a = authors.step(ctx(net, "stage2", **authors.options), lab, unlab)
    # same draws, same sup/syn; the broadcast labeled-region term differs from the per-sample one
    torch.testing.assert_close(out["sup"], out_a["sup"])
    torch.testing.assert_close(out["syn"], out_a["syn"])
    assert abs(out["lab"].item() - out_a["lab"].item()) > 1e-6
    # the paper's variant (detached P_agg, per-sample labeled region) and the released code's give different gradients
    grads = []
    for method in (paper, authors):
        net.zero_grad()
        out = method.step(ctx(net, "stage2", **method.options), lab, unlab)
        out["loss"].backward()
        grads.append(net.controller.weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


def test_versemi_ablation_switches():
    net = VerSemiNet(n_filters=4).train()
    lab = batch(4, 1, [1, 2, 3, 4])
    m = get_method("versemi", {"laux": False, "consistency": False})
    assert m.stages(10) == [("stage1", 10)] and not m.uses_unlabeled
    out = m.step(ctx(net, "stage1"), lab, None)
    assert "aux" not in out and "syn" in out
    m = get_method("versemi", {"syn": False})
    out = m.step(ctx(net, "stage1"), lab, None)
    assert "syn" not in out and "aux" in out


def test_without_the_synthetic_task_prompt_5_is_never_trained():
    """w/o Task#5: no term of either stage reaches prompt 5's head; stage 2 is L_sup alone, no unlabeled."""
    torch.manual_seed(0)
    net = VerSemiNet(n_filters=4, head="multi").train()   # one static head per prompt: row 4 is prompt 5
    lab = batch(4, 1, [1, 2, 3, 4])
    m = get_method("versemi", {"syn": False})
    assert not m.uses_unlabeled and [s for s, _ in m.stages(10)] == ["stage1", "stage2"]
    for stage in ("stage1", "stage2"):
        net.zero_grad()
        out = m.step(ctx(net, stage), lab, None)
        out["loss"].backward()
        assert net.static_heads.grad[4].abs().sum() == 0 and net.static_heads.grad[:4].abs().sum() > 0
    assert set(out) == {"loss", "sup"}


def test_pass_by_pass_update_equals_the_single_graph_update():
    """train_step back-propagates each backbone pass on its own: the same losses, gradients, BatchNorm
    running statistics and updated weights as one backward of step()'s whole graph (float tolerance)."""
    import copy

    import numpy as np

    from versemi.methods import StepContext

    lab, unlab = batch(4, 1, [1, 2, 3, 4]), batch(4, 2, [2, 3, 4, 1])
    for options, stage in [({}, "stage1"), ({}, "stage2"), ({"authors_stage2": True}, "stage2"),
                           ({"laux": False}, "stage1"), ({"syn": False}, "stage2")]:
        torch.manual_seed(0)
        nets = [VerSemiNet(n_filters=4).train()]
        nets.append(copy.deepcopy(nets[0]))
        # SGD: the update is linear in the gradient (Adam's first step is lr * sign(g) and would magnify the
        # float noise of near-zero gradients into lr-sized differences)
        opts = [torch.optim.SGD(n.parameters(), 0.1) for n in nets]
        method = get_method("versemi", options)

        c = [StepContext(nets={"net": n}, optimizers={"net": o}, stage=stage, step=0, stage_step=0, stage_steps=10,
                         rng=np.random.default_rng(7), options=method.options) for n, o in zip(nets, opts)]
        by_pass = method.train_step(c[0], lab, unlab)
        grads = {k: p.grad.clone() for k, p in nets[0].named_parameters() if p.grad is not None}
        whole = method.step(c[1], lab, unlab)
        opts[1].zero_grad(set_to_none=True)
        whole["loss"].backward()
        grads_whole = {k: p.grad.clone() for k, p in nets[1].named_parameters() if p.grad is not None}
        opts[1].step()
        assert set(by_pass) == set(whole)
        for k in whole:
            torch.testing.assert_close(by_pass[k], whole[k].detach(), rtol=1e-5, atol=1e-6)
        assert grads.keys() == grads_whole.keys() and grads
        for k in grads:
            torch.testing.assert_close(grads[k], grads_whole[k], rtol=1e-4, atol=1e-6)
        for (k, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"{options} {stage}: {k}")
