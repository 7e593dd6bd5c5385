"""CauSSL (MC-Net+ based): three decoders with sharpened cross pseudo-labels and the min-max
algorithmic-independence term between the decoders' convolution weights."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import versemi.methods.caussl as caussl  # registers "caussl"
from versemi.checkpoints import load_checkpoint
from versemi.config import make_config
from versemi.losses import dice_loss
from versemi.methods import StepContext, get_method
from versemi.model import Resample, Upsample, count_parameters
from versemi.train import train

from .helpers import batch

CauSSL = caussl.CauSSL
ALL = ("pancreas", "la", "spleen", "lung")


def _setup(head="none", steps=5000, options=None, lr=1e-2):
    """A smoke-width (f=4) CauSSL with its networks and optimisers (Adam ``lr`` for the network)."""
    cfg = make_config("caussl", "smoke", head=head, datasets=("la",) if head == "none" else ALL)
    m = get_method("caussl", options)
    torch.manual_seed(0)
    nets = {k: v.train() for k, v in m.build_networks(cfg).items()}
    opts = m.build_optimizers(cfg, nets)
    for g in opts["net"].param_groups:
        g["lr"] = lr

    def ctx(step):
        return StepContext(nets=nets, optimizers=opts, stage="train", step=step, stage_step=step,
                           stage_steps=steps, rng=np.random.default_rng(0), options=m.options)

    return m, nets, opts, ctx


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(module, snap):
    return all(torch.equal(v, snap[k]) for k, v in module.state_dict().items())


# ------------------------------------------------------------------------------ the dependence term
def test_dependence_is_zero_for_orthogonal_weights_and_positive_otherwise():
    e = torch.eye(4)
    coeff = torch.tensor([[0.3, -2.0]])
    # the target row is orthogonal to both source rows: nothing predicts it, whatever the map
    assert caussl.dependence(e[2:3], [e[0:1], e[1:2]], coeff).item() == 0.0
    assert caussl.dependence(e[2:3], [e[0:1], e[1:2]], torch.randn(1, 2)).item() == 0.0
    # hand-checked: predicting (1,0,0,0) by 1*(1,0,0,0) + 1*(0,1,0,0): cos = 1/sqrt(2), cos^2 = 1/2
    assert caussl.dependence(e[0:1], [e[0:1], e[1:2]], torch.tensor([[1.0, 1.0]])).item() == pytest.approx(0.5)
    assert caussl.dependence(e[0:1], [e[0:1], e[1:2]], torch.tensor([[2.0, 0.0]])).item() == pytest.approx(1.0)
    # the sign of the cosine does not matter (squared), and rows are averaged: (1 + 0) / 2
    w = torch.stack([e[0], e[3]])             # target rows (1,0,0,0), (0,0,0,1); sources span e0, e1
    src = [torch.stack([e[0], e[1]]), torch.stack([e[1], e[0]])]
    p = torch.tensor([[-1.0, 0, 0, 0], [1.0, 0, 0, 0]])
    assert caussl.dependence(w, src, p).item() == pytest.approx(0.5)
    # conv-shaped weights are viewed as rows (out_channels, in * k^3)
    wc = torch.randn(3, 2, 3, 3, 3)
    assert 0 < caussl.dependence(wc, [wc, torch.randn_like(wc)], torch.randn(3, 6)).item() <= 1


def test_branch_dependence_layers_sources_and_maps():
    m, nets, _, _ = _setup()
    net, maps = nets["net"], nets["maps"]
    layers = caussl.dependence_layers(net)
    # blocks six (3), seven (3), eight (2) convs and the pre-classifier conv; no up-sampling layer
    assert len(layers) == 9 and [tuple(w.shape) for w in layers][-1] == (8, 4, 1, 1, 1)
    assert [tuple(p.shape) for p in maps.maps[0]] == [(w.shape[0], 2 * w.shape[0]) for w in layers]
    assert all(p.std().item() < 5e-3 for p in maps.parameters())   # N(0, 1e-3)
    icm = caussl.branch_dependence(net, maps, "maps")
    assert icm.shape == (3,) and bool((icm > 0).all()) and bool((icm < 1).all())
    # ICM_1 by hand: decoder 1 from [decoder 2; decoder 3] (released stacking order), averaged over layers
    d = net.decoders
    l2, l3 = caussl.dependence_layers(d[1]), caussl.dependence_layers(d[2])
    by_hand = torch.stack([caussl.dependence(w, [a, b], p) for w, a, b, p in zip(layers, l2, l3, maps.maps[0])]).mean()
    assert icm[0].item() == pytest.approx(by_hand.item())
    # ICM_3: decoder 3 from [decoder 2; decoder 1]
    by_hand3 = torch.stack([caussl.dependence(w, [a, b], p) for w, a, b, p in zip(l3, l2, layers, maps.maps[2])]).mean()
    assert icm[2].item() == pytest.approx(by_hand3.item())


@pytest.mark.parametrize("grad, live", [("released", (True, False, False)), ("all", (True, True, True)),
                                        ("maps", (False, False, False))])
def test_dependence_gradient_reaches_the_released_decoders_only(grad, live):
    _, nets, _, _ = _setup()
    net, maps = nets["net"], nets["maps"]
    caussl.branch_dependence(net, maps, grad).sum().backward()
    for dec, expected in zip(net.decoders, live):
        assert all((w.grad is not None and w.grad.abs().sum() > 0) == expected for w in caussl.dependence_layers(dec))
    assert all((p.grad is not None) == (grad == "maps") for p in maps.parameters())


# ------------------------------------------------------------------------------ the network
def test_three_decoders_differ_only_in_upsampling():
    _, nets, _, _ = _setup()
    net = nets["net"].eval()
    d1, d2, d3 = net.decoders
    s1, s2, s3 = d1.state_dict(), d2.state_dict(), d3.state_dict()
    for k in s2:
        assert k in s1 and s2[k].shape == s3[k].shape
        if not k.startswith(caussl.UP_BLOCKS):
            assert s1[k].shape == s2[k].shape, k
    assert set(s2) == set(s3)
    for name in caussl.UP_BLOCKS:
        assert isinstance(getattr(d1, name), Resample) and isinstance(getattr(d1, name).conv[0], nn.ConvTranspose3d)
        for dec, mode in ((d2, "trilinear"), (d3, "nearest")):
            up = getattr(dec, name).conv
            assert isinstance(up[0], nn.Conv3d) and up[0].kernel_size == (1, 1, 1)   # 1x1x1 conv, then interpolation
            assert up[1].mode == mode and up[1].scale_factor == 2
            assert (up[1].align_corners is True) == (mode == "trilinear")
    x, t = torch.randn(2, 1, 32, 32, 32), torch.tensor([2, 2])
    with torch.no_grad():
        o1, o2, o3 = net.forward_all(x, t)
        assert not torch.allclose(o1, o2) and not torch.allclose(o2, o3)
        assert torch.equal(net(x, t), o1)              # the evaluated output is decoder 1 (released test)
        # given decoder 1's weights and up-sampling, decoders 2 and 3 compute decoder 1's output
        for dec in (d2, d3):
            for name in caussl.UP_BLOCKS:
                setattr(dec, name, copy.deepcopy(getattr(d1, name)))
            dec.load_state_dict({k: s1[k] for k in dec.state_dict()})
        o1, o2, o3 = net.forward_all(x, t)
    assert torch.allclose(o1, o2, atol=1e-6) and torch.allclose(o1, o3, atol=1e-6)


def test_interp_conv3_option_uses_the_model_upsample():
    _, nets, _, _ = _setup(options={"up_block": "interp_conv3"})
    up = nets["net"].aux[0].block_five_up
    assert isinstance(up, Upsample) and up.conv[1].kernel_size == (3, 3, 3)
    with pytest.raises(ValueError, match="dependence_grad"):
        CauSSL({"dependence_grad": "both"})


def test_uni_variant_prompts_every_decoder_head():
    _, nets, _, _ = _setup(head="dynamic")
    net = nets["net"].eval()
    assert all(dec.head_kind == "dynamic" and hasattr(dec, "controller") for dec in net.decoders)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        a, b = net.forward_all(x, torch.tensor([1])), net.forward_all(x, torch.tensor([3]))
    for oa, ob in zip(a, b):
        assert not torch.allclose(oa, ob)
    # the task-specific model ignores the prompt
    _, nets, _, _ = _setup(head="none")
    net = nets["net"].eval()
    with torch.no_grad():
        a, b = net.forward_all(x, torch.tensor([1])), net.forward_all(x, torch.tensor([3]))
    assert all(torch.equal(oa, ob) for oa, ob in zip(a, b))


def test_dropout_mask_on_the_bottleneck_is_shared_by_the_decoders(monkeypatch):
    net = caussl.CauSSLNet(n_filters=4, head="none", dropout=0.5).train()
    x, t = torch.randn(1, 1, 32, 32, 32), torch.tensor([1])
    calls = []
    orig = torch.nn.functional.dropout3d
    monkeypatch.setattr(torch.nn.functional, "dropout3d",
                        lambda inp, *a, **k: (calls.append(tuple(inp.shape)), orig(inp, *a, **k))[1])
    net.forward_all(x, t)
    monkeypatch.undo()
    assert calls == [(1, 64, 2, 2, 2)] + [(1, 4, 32, 32, 32)] * 3


# ------------------------------------------------------------------------------ losses and schedule
def test_sharpen_and_schedule_as_released():
    p = torch.tensor([0.25, 0.75]).reshape(1, 2, 1, 1, 1)
    assert caussl.sharpen(p, 0.5).flatten().tolist() == pytest.approx([0.1, 0.9])
    m = CauSSL()
    assert m.schedule(5000) == (60, 40)
    maxima = [s for s in range(5000) if m.is_max_step(s, 5000)]
    assert maxima[:2] == [60, 120] and maxima[-1] == 4980 and len(maxima) == 83
    assert not m.dependence_active(59, 5000) and m.dependence_active(60, 5000)
    assert m.schedule(6) == (1, 0) and [s for s in range(6) if m.is_max_step(s, 6)] == [1, 2, 3, 4, 5]
    assert m.schedule(800) == (10, 6) and m.dependence_active(10, 800) and not m.dependence_active(9, 800)
    cfg = make_config("caussl", "paper")
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.steps, cfg.batch_size, cfg.unlabeled_batch_size,
            cfg.dropout) == ("sgd", 0.01, 1e-4, 5000, 2, 2, 0.5)
    assert m.lr_at(cfg, "net", 2499) == 0.01 and m.lr_at(cfg, "net", 2500) == pytest.approx(1e-3)
    assert m.lr_at(cfg, "maps", 4000) == 0.02
    assert make_config("caussl", "smoke").dropout == 0.0 and make_config("caussl", "smoke").optimizer == "adam"


def test_step_losses_by_hand():
    m, nets, _, ctx = _setup()
    lab, unlab = batch(2, 1, [2, 2]), batch(2, 2, [2, 2])
    net = nets["net"].eval()                                # no dropout: the same forward twice
    out = m.step(ctx(0), lab, unlab)
    assert {"sup", "cons", "cons_weight"} <= set(out) and "icm1" not in out
    with torch.no_grad():
        outs = net.forward_all(torch.cat([lab["image"], unlab["image"]]), torch.tensor([2] * 4))
    sup = sum(0.5 * (nn.functional.cross_entropy(o[:2], lab["label"]) + dice_loss(torch.softmax(o[:2], 1)[:, 1],
                                                                                   lab["label"])) for o in outs)
    pu = [torch.softmax(o[2:], 1) for o in outs]
    sh = [q ** 2 / (q ** 2).sum(1, keepdim=True) for q in pu]
    cons = sum(((pu[k] - sh[j]) ** 2).mean() for k in range(3) for j in range(3) if j != k)
    assert out["sup"].item() == pytest.approx(sup.item(), rel=1e-5)
    assert out["cons"].item() == pytest.approx(cons.item(), rel=1e-5)
    assert out["cons_weight"].item() == pytest.approx(0.1 * np.exp(-5.0))
    later = m.step(ctx(61), lab, unlab)
    icm = caussl.branch_dependence(net, nets["maps"], "maps")
    assert later["icm1"].item() == pytest.approx(icm[0].item(), rel=1e-5)
    assert (later["loss"] - later["sup"] - later["cons_weight"] * later["cons"]).item() == pytest.approx(
        3.0 * icm.sum().item(), rel=1e-4)


def test_maps_step_changes_only_the_maps_and_net_step_only_the_network():
    m, nets, opts, ctx = _setup(options={"max_steps": 3})
    net, maps = nets["net"], nets["maps"]
    lab, unlab = batch(2, 1, [2, 2]), batch(2, 2, [2, 2])
    n0, m0 = _snapshot(net), _snapshot(maps)
    before = caussl.branch_dependence(net, maps, "maps").detach()
    m.maximise(ctx(60))
    assert _same(net, n0) and not _same(maps, m0)
    assert bool((caussl.branch_dependence(net, maps, "maps") > before).all())   # maximised
    assert all(p.grad is None for p in net.parameters())
    n1, m1 = _snapshot(net), _snapshot(maps)
    out = m.train_step(ctx(61), lab, unlab)        # not a maximisation step; the dependence term is active
    assert "icm1" in out and "icm1_max" not in out
    assert _same(maps, m1) and not _same(net, n1)


def test_trains_on_fixed_batch():
    """8 steps of a 300-step schedule (a maximisation at step 4, the dependence minimised from then on):
    the supervised loss goes down and the network lowers decoder 1's dependence after the maximisation."""
    m, nets, _, ctx = _setup(steps=300)
    assert m.schedule(300) == (4, 2)
    lab, unlab = batch(2, 1, [2, 2]), batch(2, 2, [2, 2])
    rows = []
    for s in range(8):
        out = m.train_step(ctx(s), lab, unlab)
        assert all(torch.isfinite(v).all() for v in out.values())
        rows.append({k: float(v.detach()) for k, v in out.items()})
    assert ["icm1_max" in r for r in rows] == [i == 4 for i in range(8)]
    assert ["icm1" in r for r in rows] == [i >= 4 for i in range(8)]
    assert np.mean([r["sup"] for r in rows[-3:]]) < np.mean([r["sup"] for r in rows[:3]])
    assert rows[-1]["icm1"] < rows[4]["icm1"]


# ------------------------------------------------------------------------------ training runs and the paper
@pytest.mark.parametrize("head, datasets", [("none", ("la",)), ("dynamic", ALL)])
def test_smoke_run(smoke_root, tmp_path, head, datasets):
    prepared = smoke_root / "data" / "smoke" / "prepared"
    cfg = make_config("caussl", "smoke", datasets=datasets, steps=2, val_every=2, ckpt_every=2)
    assert cfg.head == head and cfg.row_name() == ("CauSSL" if head == "none" else "Uni-CauSSL")
    train(cfg, prepared, tmp_path / "run", progress=False)
    state = load_checkpoint(tmp_path / "run")
    assert set(state["nets"]) == {"net", "maps"} and set(state["optimizers"]) == {"net", "maps"}
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert metrics["lr_maps"].tolist() == [0.02, 0.02]
    assert np.isnan(metrics["icm1_max"][0]) and metrics["icm1_max"][1] > 0   # the maximisation at step 1
    assert np.isfinite(metrics["loss"]).all()


@pytest.mark.parametrize("datasets, head, n_net", [(None, "dynamic", 13_096_976), (("pancreas",), "none", 12_954_500)])
def test_paper_configuration_builds(datasets, head, n_net):
    cfg = make_config("caussl", "paper", **({"datasets": datasets} if datasets else {}))
    assert cfg.n_filters == 16 and cfg.head == head
    m = get_method("caussl")
    nets = m.build_networks(cfg)
    opts = m.build_optimizers(cfg, nets)
    # the V-Net (9,484,144 parameters with the dynamic head) + two decoders with their own heads
    assert count_parameters(nets["net"]) == n_net
    assert count_parameters(nets["maps"]) == 381_312      # 3 x (3 128x256, 3 64x128, 2 32x64, 1 8x16)
    assert isinstance(opts["net"], torch.optim.SGD) and opts["net"].defaults["weight_decay"] == 1e-4
    assert isinstance(opts["maps"], torch.optim.Adam) and opts["maps"].defaults["lr"] == 0.02
    assert opts["maps"].defaults["betas"] == (0.9, 0.999) and opts["maps"].defaults["weight_decay"] == 0
    net = nets["net"].eval()
    with torch.no_grad():
        x = torch.randn(1, 1, 32, 32, 32)
        assert net(x, torch.tensor([1])).shape == (1, 2, 32, 32, 32)
        assert [tuple(o.shape) for o in net.forward_all(x, torch.tensor([1]))] == [(1, 2, 32, 32, 32)] * 3
