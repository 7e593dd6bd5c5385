"""UniSeg: universal prompt + prompt generator at the bottleneck, nnU-Net's Dice + CE, poly SGD, clipping."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

import versemi.methods.uniseg  # noqa: F401  (registers "uniseg")
from versemi.checkpoints import load_checkpoint
from versemi.config import make_config
from versemi.methods import StepContext, get_method
from versemi.methods.uniseg import UniSegNet, nnunet_dice_ce
from versemi.model import VerSemiNet, count_parameters
from versemi.train import train
from versemi.utils import VersemiError

from .helpers import batch


def _ctx(net, optimizer, method, step=0, steps=100):
    return StepContext(nets={"net": net}, optimizers={"net": optimizer}, stage="train", step=step, stage_step=step,
                       stage_steps=steps, rng=np.random.default_rng(0), options=method.options)


# ------------------------------------------------------------------------------------------------ loss
def test_loss_is_batch_foreground_dice_without_squares_plus_ce():
    # two 1x1x2 samples; foreground probabilities p = sigmoid(l1 - l0)
    logits = torch.zeros(2, 2, 1, 1, 2)
    logits[:, 1] = torch.tensor([[[[0.0, 2.0]]], [[[-1.0, 1.0]]]])
    y = torch.tensor([[[[0, 1]]], [[[1, 1]]]])
    p = torch.sigmoid(logits[:, 1] - logits[:, 0])
    tp = (p * y).sum()
    fp = (p * (1 - y)).sum()
    fn = ((1 - p) * y).sum()
    dice = (2 * tp + 1e-5) / (2 * tp + fp + fn + 1e-5 + 1e-8)
    expected = F.cross_entropy(logits, y) + 1 - dice
    assert torch.allclose(nnunet_dice_ce(logits, y), expected, atol=1e-6)
    # background is not part of the Dice: no foreground anywhere and p = 0.01 everywhere gives Dice ~ 0
    # (a background-including Dice would be ~0.5)
    empty = torch.zeros(1, 2, 1, 1, 2)
    empty[0, 1] = -torch.log(torch.tensor(99.0))
    y0 = torch.zeros(1, 1, 1, 2, dtype=torch.long)
    assert (nnunet_dice_ce(empty, y0) - F.cross_entropy(empty, y0)).item() == pytest.approx(1.0, abs=1e-3)
    # one Dice over the batch, not the mean of per-sample Dices
    per_sample = np.mean([nnunet_dice_ce(logits[i:i + 1], y[i:i + 1]).item() for i in range(2)])
    assert nnunet_dice_ce(logits, y).item() != pytest.approx(per_sample, abs=1e-4)


# ------------------------------------------------------------------------------------------ the prompt
@pytest.mark.parametrize("f", [4, 16])
def test_prompt_and_fused_bottleneck_shapes(f):
    net = UniSegNet(n_filters=f, patch=(32, 32, 32)).eval()
    c = 16 * f
    assert tuple(net.universal_prompt.shape) == (1, 4, 2, 2, 2)       # (1, T, patch / 16)
    assert net.fusion_layer.hidden == (c + 4) // 4                     # C + T -> (C + T)//4 -> ... -> T
    assert net.fusion_layer.block0[0].in_channels == c + 4 and net.fusion_layer.block2[0].out_channels == 4
    assert net.block_five_up.conv[0].in_channels == c + 1              # the decoder takes the fused bottleneck
    with torch.no_grad():
        logits, feats = net(torch.randn(3, 1, 32, 32, 32), [1, 3, 4], return_features=True)
    assert logits.shape == (3, 2, 32, 32, 32)
    assert feats["bottleneck"].shape == (3, c, 2, 2, 2)
    assert feats["task_prompts"].shape == (3, 4, 2, 2, 2)
    assert feats["task_prompt"].shape == (3, 1, 2, 2, 2)
    assert feats["fused"].shape == (3, c + 1, 2, 2, 2)
    assert torch.equal(feats["fused"][:, :c], feats["bottleneck"])   # [features, prompt], in this order
    assert torch.equal(feats["fused"][:, c:], feats["task_prompt"])
    wide = UniSegNet(n_filters=f, patch=(96, 64, 32))
    assert tuple(wide.universal_prompt.shape) == (1, 4, 6, 4, 2)


def test_the_prompt_changes_the_output_per_task_and_a_zeroed_prompt_does_not():
    torch.manual_seed(0)
    net = UniSegNet(n_filters=4, patch=(32, 32, 32)).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        outs = [net(x, t) for t in (1, 2, 3, 4)]
        for i in range(4):
            for j in range(i + 1, 4):
                assert (outs[i] - outs[j]).abs().max() > 1e-3, (i + 1, j + 1)
        # zero the generator's last convolution: every task prompt is the same (zero) map
        last = net.fusion_layer.block2
        last[0].weight.zero_()
        last[0].bias.zero_()
        same = [net(x, t) for t in (1, 2, 3, 4)]
        _, feats = net(x, 2, return_features=True)
    assert torch.count_nonzero(feats["task_prompts"]) == 0
    assert all(torch.equal(same[0], o) for o in same[1:])
    # the prompt-free ablation (head="none") ignores the task id and has no prompt parameters
    plain = UniSegNet(n_filters=4, patch=(32, 32, 32), head="none").eval()
    assert not any("prompt" in k or "fusion" in k for k in plain.state_dict())
    with torch.no_grad():
        assert torch.equal(plain(x, 1), plain(x, 4))
    assert count_parameters(plain) == count_parameters(VerSemiNet(n_filters=4, head="none"))
    with pytest.raises(ValueError, match=r"1\.\.4"):
        net(x, 5)   # UniSeg has T prompts and no synthetic task


def test_per_sample_prompts_equal_the_released_one_task_batch_selection():
    torch.manual_seed(1)
    net = UniSegNet(n_filters=4, patch=(32, 32, 32)).eval()
    x = torch.randn(4, 1, 32, 32, 32)
    tasks = torch.tensor([3, 1, 4, 2])
    with torch.no_grad():
        mixed = net(x, tasks)
        for i in range(4):   # a mixed batch: each sample as if it ran alone with its own task
            assert torch.allclose(mixed[i:i + 1], net(x[i:i + 1], int(tasks[i])), atol=1e-5)
        _, feats = net(x, 2, return_features=True)   # a one-task batch: the released index_select(task_id[0])
        released = torch.index_select(feats["task_prompts"], 1, torch.tensor([1]))
        assert torch.equal(feats["task_prompt"], released)
        many = net.forward_prompts(x, [1, [2, 2, 3, 3], 4])
        for got, t in zip(many, [1, [2, 2, 3, 3], 4]):
            assert torch.allclose(got, net(x, t), atol=1e-6)


def test_prompt_is_resized_only_for_inputs_of_another_size():
    torch.manual_seed(2)
    net = UniSegNet(n_filters=4, patch=(64, 64, 32)).eval()
    assert net.universal_at((4, 4, 2)) is net.universal_prompt
    small = net.universal_at((2, 2, 2))
    assert small.shape == (1, 4, 2, 2, 2)
    expected = F.interpolate(net.universal_prompt, size=(2, 2, 2), mode="trilinear", align_corners=False)
    assert torch.equal(small, expected)
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 32, 32), 1).shape == (1, 2, 32, 32, 32)


# -------------------------------------------------------------------------------------------- training
def test_universal_prompt_and_generator_learn_from_a_supervised_step():
    torch.manual_seed(3)
    net = UniSegNet(n_filters=4, patch=(32, 32, 32)).train()
    m = get_method("uniseg")
    before = net.universal_prompt.detach().clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    out = m.train_step(_ctx(net, opt, m), batch(4, 1, [1, 2, 3, 4]), None)
    assert {"loss", "sup", "grad_norm"} <= set(out)
    g = net.universal_prompt.grad
    assert g is not None and g.abs().sum() > 0
    assert all(g[0, k].abs().sum() > 0 for k in range(4))   # every task's channel feeds the generator
    assert net.fusion_layer.block0[0].weight.grad.abs().sum() > 0
    assert not torch.equal(before, net.universal_prompt.detach())


def test_gradients_are_clipped_to_the_released_norm():
    torch.manual_seed(4)
    net = UniSegNet(n_filters=4, patch=(32, 32, 32)).train()
    m = get_method("uniseg", {"grad_clip": 1e-3})
    params0 = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=1.0)   # no momentum: the update is minus the clipped gradient
    out = m.train_step(_ctx(net, opt, m), batch(2, 5, [1, 2]), None)
    assert out["grad_norm"] > 1e-3          # the norm before clipping
    step = torch.sqrt(sum(((p.detach() - q) ** 2).sum() for p, q in zip(net.parameters(), params0)))
    assert step.item() == pytest.approx(1e-3, rel=1e-3)
    assert get_method("uniseg").options["grad_clip"] == 12.0


def test_uniseg_trains_on_fixed_batch():
    torch.manual_seed(0)
    net = UniSegNet(n_filters=4, patch=(32, 32, 32)).train()
    m = get_method("uniseg")
    opt = torch.optim.Adam(net.parameters(), 1e-2, betas=(0.5, 0.999))
    lab = batch(4, 1, [1, 2, 3, 1])
    losses = []
    for step in range(12):
        out = m.train_step(_ctx(net, opt, m, step), lab, None)
        assert all(torch.isfinite(v).all() for v in out.values())
        losses.append(out["loss"].item())
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


def test_poly_learning_rate_per_epoch_and_nesterov_sgd():
    m = get_method("uniseg")
    cfg = make_config("uniseg", "paper")
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.steps, cfg.head) == \
        ("sgd", 0.01, 0.99, 3e-5, 2, 200000, "dynamic")
    assert m.lr_at(cfg, "net", 0) == 0.01 and m.lr_at(cfg, "net", 199) == 0.01   # 200 iterations per epoch
    assert m.lr_at(cfg, "net", 200) == pytest.approx(0.01 * (1 - 1 / 1000) ** 0.9)
    assert m.lr_at(cfg, "net", 199999) == pytest.approx(0.01 * (1 / 1000) ** 0.9)
    smoke = make_config("uniseg", "smoke", steps=10)
    lrs = [m.lr_at(smoke, "net", s) for s in range(10)]
    assert lrs[0] == smoke.lr and all(a > b for a, b in zip(lrs, lrs[1:]))   # the same shape on short runs
    assert lrs[5] == pytest.approx(smoke.lr * 0.5 ** 0.9)
    assert get_method("uniseg", {"poly_exponent": 0}).lr_at(smoke, "net", 9) == smoke.lr
    net = UniSegNet(n_filters=4, patch=(32, 32, 32))
    opt = m.build_optimizers(make_config("uniseg", "paper", n_filters=4, patch=(32, 32, 32)), {"net": net})["net"]
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.99 and opt.defaults["weight_decay"] == 3e-5
    assert isinstance(m.build_optimizers(smoke, {"net": net})["net"], torch.optim.Adam)   # CPU profiles: Adam


# ------------------------------------------------------------------------------------ configs and runs
def test_one_dataset_and_multi_head_are_refused():
    m = get_method("uniseg")
    with pytest.raises(VersemiError, match="uniseg.*UniSeg.*universal.*'la'"):
        m.build_networks(make_config("uniseg", "smoke", datasets=("la",)))
    with pytest.raises(VersemiError, match="UniSeg.*'multi'"):
        m.build_networks(make_config("uniseg", "smoke", head="multi"))
    assert not m.uses_unlabeled


@pytest.fixture(scope="module")
def prepared(smoke_root):
    return smoke_root / "data" / "smoke" / "prepared"


def test_smoke_run_on_all_datasets_and_refusal_of_a_task_specific_run(prepared, tmp_path):
    cfg = make_config("uniseg", "smoke", steps=2, val_every=2, ckpt_every=2)
    assert cfg.head == "dynamic" and not cfg.task_specific
    summary = train(cfg, prepared, tmp_path / "uni", progress=False)
    assert summary is not None
    state = load_checkpoint(tmp_path / "uni")
    assert state["step"] == 2 and "universal_prompt" in state["nets"]["net"]
    metrics = pd.read_csv(tmp_path / "uni" / "metrics.csv")
    assert np.isfinite(metrics["loss"]).all() and metrics["lr"].iloc[1] < metrics["lr"].iloc[0]
    assert len(pd.read_csv(tmp_path / "uni" / "val.csv")) > 0
    with pytest.raises(VersemiError, match="universal"):
        train(make_config("uniseg", "smoke", datasets=("la",), steps=2, val_every=2, ckpt_every=2), prepared,
              tmp_path / "la", progress=False)


def test_paper_configuration_builds():
    cfg = make_config("uniseg", "paper")
    assert cfg.n_filters == 16 and cfg.patch == (96, 96, 96)
    m = get_method("uniseg", cfg.options)
    nets = m.build_networks(cfg)
    net = nets["net"]
    base = count_parameters(VerSemiNet(n_filters=16, head="none"))                    # 9,436,652
    fusion = (260 * 65 * 27 + 65) + (65 * 65 * 27 + 65) + (65 * 4 * 27 + 4) + 2 * (65 + 65 + 4)
    assert count_parameters(net.fusion_layer) == fusion == 577_797
    assert count_parameters(net) == base + fusion + 4 * 6 ** 3 + 128 * 8 == 10_016_337   # + prompt + 1 channel
    opt = m.build_optimizers(cfg, nets)["net"]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == 10_016_337
    net.eval()
    with torch.no_grad():
        logits, feats = net(torch.randn(1, 1, 32, 32, 32), 2, return_features=True)
    assert logits.shape == (1, 2, 32, 32, 32)
    assert feats["fused"].shape == (1, 257, 2, 2, 2) and feats["task_prompts"].shape == (1, 4, 2, 2, 2)
