"""DTC: a segmentation and a level-set output from one decoder, tied by the dual-task consistency."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import versemi.methods.dtc  # noqa: F401  (registers "dtc")
from versemi.config import make_config
from versemi.methods import get_method, sigmoid_rampup
from versemi.methods.dtc import (
    dtc_rampup,
    dual_task_consistency,
    dual_task_outputs,
    levelset_to_prob,
    signed_distance,
)
from versemi.model import HEAD_BIAS_NUMS, HEAD_WEIGHT_NUMS, VerSemiNet, count_parameters
from versemi.train import train

from .helpers import batch, ctx, trains_on_fixed_batch


def test_signed_distance_of_a_cube_is_negative_inside_zero_on_its_surface_positive_outside():
    y = np.zeros((3, 7, 7, 7), dtype=np.int64)
    y[0, 2:5, 2:5, 2:5] = 1          # a 3^3 cube: 26 surface voxels around one centre voxel
    y[2] = 1                         # a patch entirely inside the object
    sdf = signed_distance(torch.from_numpy(y))
    assert sdf.shape == y.shape and sdf.dtype == np.float32
    s = sdf[0]
    # inside, away from the surface: distance 2 to the background, the largest inside -> -1
    assert s[3, 3, 3] == -1.0
    # the 26 other cube voxels touch the background through a face: the zero level set
    cube = s[2:5, 2:5, 2:5].copy()
    cube[1, 1, 1] = 0.0
    assert np.all(cube == 0.0)
    # outside: distance to the cube over the largest outside distance (sqrt(12), at the eight corners)
    outside = y[0] == 0
    assert np.all(s[outside] > 0)
    assert s[1, 3, 3] == pytest.approx(1 / math.sqrt(12))
    assert s[0, 3, 3] == pytest.approx(2 / math.sqrt(12))
    assert s[0, 0, 0] == pytest.approx(1.0) and s[6, 6, 6] == pytest.approx(1.0)
    assert s.min() == -1.0 and s.max() == pytest.approx(1.0)
    # no surface in the patch: an empty mask (released) and a full one (released: NaN) are all zeros
    assert np.all(sdf[1] == 0) and np.all(sdf[2] == 0)


def test_signed_distance_is_per_sample_and_in_range_on_random_masks():
    rng = np.random.default_rng(0)
    y = (rng.random((2, 9, 10, 11)) > 0.6).astype(np.uint8)
    sdf = signed_distance(y)
    assert sdf.min() >= -1.0 and sdf.max() <= 1.0
    assert np.all(sdf[y == 0] > 0) and np.all(sdf[y == 1] <= 0)
    assert np.array_equal(signed_distance(y[1:]), sdf[1:])     # each sample its own normalisation


def test_levelset_to_prob_is_sigmoid_of_minus_1500_times_the_level_set():
    lsf = torch.tensor([0.0, 1 / 1500, -1 / 1500, 0.01, -0.01, 1.0, -1.0])
    p = levelset_to_prob(lsf)
    expected = [0.5, 1 / (1 + math.e), math.e / (1 + math.e), 1 / (1 + math.exp(15)), 1 / (1 + math.exp(-15)),
                0.0, 1.0]
    assert torch.allclose(p, torch.tensor(expected), atol=1e-7)


def test_consistency_vanishes_when_the_segmentation_is_the_transformed_level_set():
    g = torch.Generator().manual_seed(0)
    lsf = (torch.rand(2, 4, 5, 6, generator=g) * 2 - 1) / 500     # within a few 1/1500 of the surface
    logits = torch.stack([torch.zeros_like(lsf), -1500 * lsf], 1)  # softmax foreground = sigmoid(-1500 lsf)
    prob = torch.softmax(logits, 1)[:, 1]
    assert dual_task_consistency(lsf, prob).item() < 1e-12
    flipped = dual_task_consistency(lsf, 1 - prob).item()          # the opposite segmentation
    assert flipped == pytest.approx(torch.mean((2 * levelset_to_prob(lsf) - 1) ** 2).item(), rel=1e-6)
    assert flipped > 0.1


@pytest.mark.parametrize("head", ["none", "dynamic"])
def test_level_set_is_tanh_of_channel_1_of_the_second_head_output(head):
    torch.manual_seed(0)
    net = VerSemiNet(n_filters=4, head=head).eval()
    x, t = batch(2, 0, [1, 3])["image"], torch.tensor([1, 3])
    seg, lsf = dual_task_outputs(net, x, t)
    assert seg.shape == (2, 2, 32, 32, 32) and lsf.shape == (2, 32, 32, 32)
    assert torch.allclose(seg, net(x, t))                            # the evaluated output
    second = net.head(net.backbone(x), t, return_second=True)[1]
    assert torch.allclose(lsf, torch.tanh(second[:, 1]))
    assert lsf.abs().max() < 1
    if head == "none":   # a loss on the level set alone trains channel 1 of the second output, not channel 0
        net.zero_grad()
        dual_task_outputs(net, x, t)[1].sum().backward()
        g = net.static_heads.grad[0]
        w4 = g[sum(HEAD_WEIGHT_NUMS[:3]):sum(HEAD_WEIGHT_NUMS)].reshape(2, 8)
        b4 = g[sum(HEAD_WEIGHT_NUMS) + sum(HEAD_BIAS_NUMS[:3]):]
        assert torch.all(w4[0] == 0) and b4[0] == 0 and w4[1].abs().sum() > 0 and b4[1] != 0


def test_released_ramp_is_a_staircase_of_40_steps_over_the_whole_run():
    for s in (0, 149, 150, 299, 300, 3000, 5999, 6000, 7000):
        assert dtc_rampup(s, 6000, 1.0, 40) == sigmoid_rampup(s // 150, 40)
    assert dtc_rampup(0, 6, 1.0, 40) == pytest.approx(math.exp(-5))
    assert dtc_rampup(3, 6, 1.0, 40) == pytest.approx(math.exp(-5 / 4))       # half-way: t = 20/40
    assert dtc_rampup(6, 6, 1.0, 40) == 1.0
    assert dtc_rampup(75, 6000, 1.0, 0) == sigmoid_rampup(75, 6000)           # smooth ramp
    m = get_method("dtc")
    assert (m.options["consistency"], m.options["beta"], m.options["levelset_sharpness"]) == (1.0, 0.3, 1500.0)


def test_step_supervises_labeled_samples_and_ties_the_two_outputs_on_all_samples():
    torch.manual_seed(0)
    net = VerSemiNet(n_filters=4, head="dynamic").eval()   # eval: no batch statistics couple the samples
    m = get_method("dtc")
    lab, unlab = batch(2, 1, [1, 2]), batch(2, 2, [3, 4])
    c = ctx(net, "train", step=0, steps=100, **m.options)
    with torch.no_grad():
        out = m.step(c, lab, unlab)
        other = dict(unlab, image=unlab["image"] + 1.0)
        out2 = m.step(c, lab, other)
    # the labeled terms see only the labeled samples; the consistency sees the unlabeled ones too
    for k in ("sup", "dice", "sdf", "ce"):
        assert torch.allclose(out[k], out2[k]), k
    assert not torch.allclose(out["cons"], out2["cons"])
    # released: Dice + 0.3 x MSE(LSF, SDF); the cross-entropy is logged, not added
    assert torch.allclose(out["sup"], out["dice"] + 0.3 * out["sdf"])
    w = math.exp(-5)
    assert out["cons_weight"].item() == pytest.approx(w)
    assert torch.allclose(out["loss"], out["sup"] + w * out["cons"])
    with torch.no_grad():
        seg, lsf = dual_task_outputs(net, torch.cat([lab["image"], unlab["image"]]), torch.tensor([1, 2, 3, 4]))
        target = torch.from_numpy(signed_distance(lab["label"]))
        assert torch.allclose(out["sdf"], torch.mean((lsf[:2] - target) ** 2))
        prob = torch.softmax(seg, 1)[:, 1]
        assert torch.allclose(out["cons"], torch.mean((torch.sigmoid(-1500 * lsf) - prob) ** 2))
    m_ce = get_method("dtc", {"ce_weight": 1.0})
    with torch.no_grad():
        out3 = m_ce.step(c, lab, unlab)
    assert torch.allclose(out3["sup"], out["dice"] + out["ce"] + 0.3 * out["sdf"])


def test_dtc_trains_on_fixed_batch():
    trains_on_fixed_batch("dtc", {}, "dynamic", 0.0, {"sup", "dice", "sdf", "cons", "cons_weight"})


@pytest.mark.parametrize("datasets", [("la",), None])
def test_one_smoke_run_task_specific_and_uni(smoke_root, tmp_path, datasets):
    kw = {"datasets": datasets} if datasets else {}
    cfg = make_config("dtc", "smoke", steps=2, val_every=2, ckpt_every=2, **kw)
    assert cfg.head == ("none" if datasets else "dynamic")
    assert cfg.row_name() == ("DTC" if datasets else "Uni-DTC")
    run = tmp_path / "run"
    train(cfg, smoke_root / "data" / "smoke" / "prepared", run, progress=False)
    rows = pd.read_csv(run / "metrics.csv")
    assert len(rows) == 2 and {"sdf", "cons", "cons_weight"} <= set(rows.columns)
    assert np.isfinite(rows["loss"]).all()
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file()


def test_paper_configuration_builds():
    for kw, head, n_params in (({}, "dynamic", 9_484_144), ({"datasets": ("la",)}, "none", 9_436_652)):
        cfg = make_config("dtc", "paper", **kw)
        assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.lr_step, cfg.lr_gamma) == \
            ("sgd", 0.01, 0.9, 1e-4, 2500, 0.1)
        assert (cfg.steps, cfg.batch_size, cfg.unlabeled_batch_size, cfg.dropout) == (6000, 2, 2, 0.5)
        assert (cfg.n_filters, cfg.head) == (16, head)
        m = get_method("dtc", cfg.options)
        nets = m.build_networks(cfg)
        assert set(nets) == {"net"} and count_parameters(nets["net"]) == n_params
        opt = m.build_optimizers(cfg, nets)["net"]
        assert isinstance(opt, torch.optim.SGD) and opt.defaults["lr"] == 0.01
        assert [m.lr_at(cfg, "net", s) for s in (2499, 2500, 5000)] == pytest.approx([0.01, 1e-3, 1e-4])
        net = nets["net"].eval()
        with torch.no_grad():
            seg, lsf = dual_task_outputs(net, torch.zeros(1, 1, 32, 32, 32), torch.tensor([2]))
        assert seg.shape == (1, 2, 32, 32, 32) and lsf.shape == (1, 32, 32, 32)
    cpu = make_config("dtc", "demo")
    assert (cpu.optimizer, cpu.lr, cpu.dropout) == ("adam", 1e-3, 0.0)   # CPU profiles: VerSemi's recipe
