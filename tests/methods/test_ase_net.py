"""ASE-Net: dynamic convolution (DyBAC) V-Net, two discriminators fooled by the segmenter, three-way
consistency with an EMA teacher."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

import versemi.methods.ase_net  # noqa: F401  (registers "ase_net")
from versemi.checkpoints import load_checkpoint
from versemi.config import make_config
from versemi.methods import StepContext, frozen_copy, get_method
from versemi.methods.ase_net import (
    Discriminator3d,
    DyBAC3d,
    DynamicConv3d,
    DyVNet,
    disc_ce,
    discriminator_loss,
    foreground_map,
    three_way_consistency,
)
from versemi.model import ConvStage, count_parameters
from versemi.train import train

from .helpers import batch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: the per-sample grouped convolutions are small, and extra threads only contend."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _params(net):
    return [p.detach().clone() for p in net.parameters()]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def _tiny(options=None, head="none"):
    """The method with tiny networks (f = 4, ndf = 4) and their optimisers; Adam 1e-2 for speed."""
    torch.manual_seed(0)
    m = get_method("ase_net", {"ndf": 4, **(options or {})})
    net = DyVNet(n_filters=4, head=head, dropout=0.5)
    nets = {"net": net, "teacher": frozen_copy(net),
            "disc_lu": Discriminator3d(ndf=4), "disc_tn": Discriminator3d(ndf=4)}
    opts = {k: torch.optim.Adam(nets[k].parameters(), 1e-2, betas=(0.9, 0.99))
            for k in ("net", "disc_lu", "disc_tn")}
    return m, nets, opts


def _ctx(m, nets, opts, step=0, steps=100):
    return StepContext(nets=nets, optimizers=opts, stage="train", step=step, stage_step=step, stage_steps=steps,
                       rng=np.random.default_rng(step), options=m.options)


# ------------------------------------------------------------------------------------ dynamic convolution
@pytest.mark.parametrize("stride", [1, 2])
def test_dynamic_convolution_with_one_hot_attention_is_an_ordinary_depthwise_convolution(stride):
    torch.manual_seed(0)
    dc = DynamicConv3d(4, 5, 3, stride=stride, padding=1, kernels=3)
    x = torch.randn(2, 4, 6, 6, 6)
    for k in range(3):
        onehot = F.one_hot(torch.tensor([k, k]), 3).float()
        ref = F.conv3d(x, dc.weight[k], stride=stride, padding=1, groups=4)
        assert torch.allclose(dc.depthwise(x, onehot), ref, atol=1e-5)
    # each sample gets its own kernel mix: sample 0 kernel 2, sample 1 kernel 0
    out = dc.depthwise(x, F.one_hot(torch.tensor([2, 0]), 3).float())
    assert torch.allclose(out[0:1], F.conv3d(x[0:1], dc.weight[2], stride=stride, padding=1, groups=4), atol=1e-5)
    assert torch.allclose(out[1:2], F.conv3d(x[1:2], dc.weight[0], stride=stride, padding=1, groups=4), atol=1e-5)
    # a mix is the mix of the convolutions (linearity in the kernel)
    a = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    mixed = sum(a[:, k, None, None, None, None] * F.conv3d(x, dc.weight[k], stride=stride, padding=1, groups=4)
                for k in range(3))
    assert torch.allclose(dc.depthwise(x, a), mixed, atol=1e-5)


def test_dynamic_convolution_with_equal_kernels_is_an_ordinary_convolution_whatever_the_input():
    torch.manual_seed(0)
    dc = DynamicConv3d(4, 6, 3, padding=1)
    with torch.no_grad():
        dc.weight.copy_(dc.weight[:1].expand_as(dc.weight))
    depthwise = torch.nn.Conv3d(4, 4, 3, padding=1, groups=4, bias=False)
    with torch.no_grad():
        depthwise.weight.copy_(dc.weight[0])
    for seed in (1, 2):
        x = torch.randn(3, 4, 5, 5, 5, generator=torch.Generator().manual_seed(seed)) * seed
        assert torch.allclose(dc(x), dc.pointwise(depthwise(x)), atol=1e-5)


def test_attention_is_a_softened_input_dependent_distribution_over_the_kernels():
    torch.manual_seed(0)
    dc = DynamicConv3d(8, 8, 3, padding=1)           # K = 4, temperature 34 (released defaults)
    assert (dc.kernels, dc.temperature) == (4, 34.0)
    assert dc.attention[1].out_channels == int(8 * 0.25) + 1
    x = torch.randn(2, 8, 4, 4, 4)
    x[1] += 3.0
    a = dc.attend(x)
    assert a.shape == (2, 4) and torch.allclose(a.sum(1), torch.ones(2))
    assert not torch.allclose(a[0], a[1])                 # depends on the input
    logits = dc.attention(x).flatten(1)
    assert torch.allclose(a, torch.softmax(logits / 34.0, 1))


def test_dybac_multiplies_by_a_spatial_map_before_the_dynamic_convolution():
    torch.manual_seed(0)
    block = DyBAC3d(8, 8)
    sse, dc = block[0], block[1]
    assert sse.excite[0].out_channels == 1                # max(1, 8 // 16): released C // 16 would be 0
    x = torch.randn(2, 8, 4, 4, 4)
    gate = sse.excite(x)
    assert gate.shape == (2, 1, 4, 4, 4) and bool(((gate > 0) & (gate < 1)).all())
    assert torch.allclose(block(x), dc(x * gate), atol=1e-6)


def test_dyvnet_puts_dybac_where_the_released_vnet_dy_does_and_keeps_the_layout():
    net = DyVNet(n_filters=4, head="none")
    dynamic = {n.split(".")[0] for n, mod in net.named_modules() if isinstance(mod, DynamicConv3d)}
    assert dynamic == {"block_two", "block_three", "block_four", "block_five", "block_six", "block_seven",
                       "block_eight"}
    assert sum(isinstance(mod, DynamicConv3d) for mod in net.modules()) == 2 + 3 + 3 + 3 + 3 + 3 + 2
    assert isinstance(net.block_one, ConvStage)            # block one: an ordinary convolution
    assert isinstance(net.block_one_dw.conv[0], torch.nn.Conv3d)
    assert isinstance(net.block_five_up.conv[0], torch.nn.ConvTranspose3d)
    x = torch.randn(2, 1, 32, 32, 32)
    assert net(x, torch.tensor([1, 2])).shape == (2, 2, 32, 32, 32)


def test_the_prompt_changes_the_output_of_the_uni_variant_only():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 32, 32, 32)
    uni = DyVNet(n_filters=4, head="dynamic").eval()
    with torch.no_grad():
        assert not torch.allclose(uni(x, 1), uni(x, 2))
        assert not torch.allclose(uni(x, 2), uni(x, 4))
    specific = DyVNet(n_filters=4, head="none").eval()
    with torch.no_grad():
        assert torch.equal(specific(x, 1), specific(x, 3))


# ---------------------------------------------------------------------------------------- losses
def test_three_way_consistency_by_hand_and_no_gradient_to_the_teacher():
    # softmax of (0, log 3) = (1/4, 3/4); of (0, 0) = (1/2, 1/2); of (0, -log 3) = (3/4, 1/4)
    shape = (1, 1, 2, 2, 2)
    def logits(v):
        return torch.cat([torch.zeros(shape), torch.full(shape, v)], 1)
    s = logits(np.log(3)).requires_grad_(True)
    n = logits(0.0).requires_grad_(True)
    t = logits(-np.log(3)).requires_grad_(True)
    # per class: (p_s - p_t)^2 = 1/4, (p_n - p_t)^2 = 1/16, (p_s - p_n)^2 = 1/16 -> (6/16) / 3 = 1/8
    val = three_way_consistency(s, n, t)
    assert val.item() == pytest.approx(1 / 8, abs=1e-6)
    n2 = logits(0.5).requires_grad_(True)                 # (the midpoint n is stationary: use another)
    three_way_consistency(s, n2, t).backward()
    assert s.grad.abs().sum() > 0 and n2.grad.abs().sum() > 0 and t.grad is None
    assert three_way_consistency(s, s, s).item() == pytest.approx(0.0)


def test_discriminator_loss_is_half_the_sum_of_real_and_fake_cross_entropies():
    class Const(torch.nn.Module):      # logits (0, z) with z = mean of the map
        def forward(self, m, x):
            return torch.stack([torch.zeros(len(m)), m.mean(dim=(1, 2, 3, 4))], 1)
    real, fake, img = torch.full((2, 1, 2, 2, 2), 2.0), torch.full((2, 1, 2, 2, 2), -1.0), torch.zeros(2, 1, 2, 2, 2)
    expected = 0.5 * (np.log(1 + np.exp(-2.0)) + np.log(1 + np.exp(-1.0)))
    assert discriminator_loss(Const(), real, img, fake, img).item() == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------------------------------ adversarial steps
def test_a_discriminator_step_lowers_its_loss_and_changes_only_discriminator_parameters():
    m, nets, opts = _tiny()
    lab, unlab = batch(2, 1, [1, 1]), batch(2, 2, [1, 1])
    unlab["image"] = unlab["image"] * 0.5 - 1.0          # unlabeled images look different: learnable
    before = {k: _params(v) for k, v in nets.items()}
    student_buffers = [b.clone() for b in nets["net"].buffers()]
    c = _ctx(m, nets, opts)
    xu_noisy = m.noisy_unlabeled(c, unlab)
    losses = []
    for _ in range(6):
        torch.manual_seed(0)                              # the same dropout masks: the loss on fixed inputs
        out = m.discriminator_step(c, lab, unlab, xu_noisy)
        losses.append((out["d_lu"].item(), out["d_tn"].item()))
        if len(losses) == 1:
            assert _same(before["net"], _params(nets["net"])) and _same(before["teacher"], _params(nets["teacher"]))
            assert all(torch.equal(a, b) for a, b in zip(student_buffers, nets["net"].buffers()))
            assert not _same(before["disc_lu"], _params(nets["disc_lu"]))
            assert not _same(before["disc_tn"], _params(nets["disc_tn"]))
    assert losses[-1][0] < losses[0][0] and losses[-1][1] < losses[0][1], losses
    assert nets["net"].training                            # the student is left in training mode


def test_a_segmenter_adversarial_step_raises_the_discriminators_loss():
    m, nets, opts = _tiny()
    lab, unlab = batch(2, 1, [1, 1]), batch(2, 2, [1, 1])
    c = _ctx(m, nets, opts)
    xu_noisy = m.noisy_unlabeled(c, unlab)
    d_lu, d_tn, net, teacher = nets["disc_lu"], nets["disc_tn"], nets["net"], nets["teacher"]
    d_params = {k: _params(nets[k]) for k in ("disc_lu", "disc_tn")}
    x_all, t_all = torch.cat([lab["image"], unlab["image"]]), torch.cat([lab["task"], unlab["task"]])

    def d_losses():
        """Both discriminators' losses (real vs fake, and on the fakes alone) on the predictions of the
        segmenter as its step sees them (training mode, the same dropout masks every time)."""
        torch.manual_seed(0)
        with torch.no_grad():
            net.train()
            d_lu.eval()
            d_tn.eval()
            p = foreground_map(net(x_all, t_all))
            p_n = foreground_map(net(xu_noisy, unlab["task"]))
            p_t = foreground_map(teacher(unlab["image"], unlab["task"]))
            return (discriminator_loss(d_lu, p[:2], lab["image"], p[2:], unlab["image"]).item(),
                    discriminator_loss(d_tn, p_t, unlab["image"], p_n, unlab["image"]).item(),
                    disc_ce(d_lu, p[2:], unlab["image"], False).item(),
                    disc_ce(d_tn, p_n, unlab["image"], False).item())

    for d in (d_lu, d_tn):
        d.requires_grad_(False)
    init = copy.deepcopy(net.state_dict())
    for i, term in enumerate(("adv_lu", "adv_tn")):   # fool one discriminator at a time, from the same net
        net.load_state_dict(init)
        c.optimizers["net"] = torch.optim.Adam(net.parameters(), 1e-3, betas=(0.9, 0.99))
        start = d_losses()
        for _ in range(3):
            torch.manual_seed(0)
            out = m.segmenter_losses(c, lab, unlab, xu_noisy)
            c.update({"loss": out[term]}, "net")
        end = d_losses()
        # that discriminator's loss rises: overall and on the fakes alone
        assert end[i] > start[i] and end[2 + i] > start[2 + i], (term, start, end)
    assert all(_same(d_params[k], _params(nets[k])) for k in d_params)   # the discriminators are untouched


def test_segmenter_loss_combines_the_terms_with_the_ramped_weight():
    m, nets, opts = _tiny({"consistency": 2.0})
    lab, unlab = batch(2, 1, [1, 1]), batch(2, 2, [1, 1])
    c = _ctx(m, nets, opts, step=50, steps=100)
    torch.manual_seed(0)
    out = m.segmenter_losses(c, lab, unlab, m.noisy_unlabeled(c, unlab))
    w = 2.0 * np.exp(-5 * 0.5 ** 2)
    assert out["cons_weight"].item() == pytest.approx(w)
    assert out["adv"].item() == pytest.approx(0.5 * (out["adv_lu"] + out["adv_tn"]).item())
    assert out["loss"].item() == pytest.approx((out["sup"] + w * (out["adv"] + out["cons"])).item(), rel=1e-6)
    assert out["cons"].item() > 0


def test_train_step_lowers_the_loss_on_a_fixed_batch():
    m, nets, opts = _tiny()
    lab, unlab = batch(2, 1, [1, 2]), batch(2, 2, [2, 1])
    losses = []
    for step in range(8):
        c = _ctx(m, nets, opts, step=step, steps=100)
        out = m.train_step(c, lab, unlab)
        assert {"sup", "cons", "adv_lu", "adv_tn", "d_lu", "d_tn"} <= set(out)
        assert all(torch.isfinite(v).all() for v in out.values())
        assert all(p.requires_grad for k in ("disc_lu", "disc_tn") for p in nets[k].parameters())
        losses.append(out["loss"].item())
        with torch.no_grad():   # the trainer's EMA
            for t, s in zip(nets["teacher"].parameters(), nets["net"].parameters()):
                t.mul_(0.99).add_(0.01 * s)
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


# ------------------------------------------------------------------------------------ configuration
def test_learning_rates_follow_the_released_step_and_the_discriminators_are_constant():
    m = get_method("ase_net")
    cfg = make_config("ase_net", "paper")
    assert (cfg.optimizer, cfg.lr, cfg.betas, cfg.steps, cfg.batch_size, cfg.dropout) == \
        ("adam", 1e-3, (0.9, 0.99), 6000, 2, 0.5)
    assert [m.lr_at(cfg, "net", s) for s in (0, 2499, 2500, 4999)] == [1e-3] * 4
    assert m.lr_at(cfg, "net", 5000) == pytest.approx(1e-4) and m.lr_at(cfg, "net", 5999) == pytest.approx(1e-4)
    assert m.lr_at(cfg, "disc_lu", 5999) == m.lr_at(cfg, "disc_tn", 0) == 1e-3
    smoke = make_config("ase_net", "smoke", steps=12)     # the same shape: the last sixth at a tenth
    assert [m.lr_at(smoke, "net", s) for s in (0, 9, 10, 11)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])
    assert m.teachers() == {"teacher": "net"} and m.eval_network == "net"


def test_paper_configuration_builds_with_the_expected_sizes():
    cfg = make_config("ase_net", "paper")
    assert (cfg.n_filters, cfg.head) == (16, "dynamic")
    m = get_method("ase_net", cfg.options)
    torch.manual_seed(0)
    nets = m.build_networks(cfg)
    opts = m.build_optimizers(cfg, nets)
    assert set(nets) == {"net", "teacher", "disc_lu", "disc_tn"} and set(opts) == {"net", "disc_lu", "disc_tn"}
    assert {k: count_parameters(v) for k, v in nets.items()} == {
        "net": 1_397_749, "teacher": 1_397_749, "disc_lu": 255_567, "disc_tn": 255_567}
    assert not any(p.requires_grad for p in nets["teacher"].parameters())
    assert opts["disc_lu"].param_groups[0]["betas"] == (0.9, 0.99)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        nets["net"].eval()
        logits = nets["net"](x, torch.tensor([2]))
        assert logits.shape == (1, 2, 32, 32, 32)
        nets["disc_lu"].eval()
        assert nets["disc_lu"](foreground_map(logits), x).shape == (1, 2)


# ------------------------------------------------------------------------------------ smoke runs
@pytest.mark.parametrize("datasets, head", [(("la",), "none"), (None, "dynamic")])
def test_one_smoke_run_trains_and_checkpoints_all_four_networks(smoke_root, tmp_path, datasets, head):
    kw = {"datasets": datasets} if datasets else {}
    cfg = make_config("ase_net", "smoke", steps=2, val_every=2, ckpt_every=2, **kw)
    assert cfg.head == head and cfg.dropout == 0.5
    run = tmp_path / "run"
    train(cfg, smoke_root / "data" / "smoke" / "prepared", run, progress=False)
    state = load_checkpoint(run)
    assert set(state["nets"]) == {"net", "teacher", "disc_lu", "disc_tn"}
    assert set(state["optimizers"]) == {"net", "disc_lu", "disc_tn"}
    metrics = pd.read_csv(run / "metrics.csv")
    assert len(metrics) == 2 and {"d_lu", "d_tn", "adv_lu", "adv_tn", "cons", "lr_disc_lu"} <= set(metrics)
    assert np.isfinite(metrics["loss"]).all()
    assert (run / "val.csv").is_file()


def test_frozen_copy_of_dyvnet_is_an_independent_teacher():
    net = DyVNet(n_filters=4, head="none")
    t = frozen_copy(net)
    assert count_parameters(t) == count_parameters(net) and t is not net
    assert copy.deepcopy(t).block_two.conv[0][1].temperature == 34.0
