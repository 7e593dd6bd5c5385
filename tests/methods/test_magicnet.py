"""MagicNet: magic-cube partition and recovery (cross-image and within-image), cube-location loss, blended
small-cube pseudo-labels, on top of a mean teacher."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

import versemi.methods.magicnet  # noqa: F401  (registers "magicnet")
from versemi.config import make_config
from versemi.methods import StepContext, get_method
from versemi.methods.magicnet import (
    MagicVNet,
    blend_pseudo_label,
    class_weights,
    cross_mix,
    cross_permutations,
    cross_unmix,
    cube_grid,
    encode_cubes,
    location_labels,
    magic_dice,
    partition,
    recover,
    resolve_cube_size,
    shuffle_cubes,
    staircase_rampup,
    started,
    transposed_order,
    unshuffle_cubes,
)
from versemi.model import BackboneOut, count_parameters
from versemi.train import train

from .helpers import batch


# ------------------------------------------------------------------------------- cube geometry
def test_cube_size_follows_the_patch():
    assert resolve_cube_size((96, 96, 96)) == 32            # released: 3^3 cubes of 32^3
    assert cube_grid((96, 96, 96), 32) == (3, 3, 3)
    assert resolve_cube_size((32, 32, 32)) == 16            # CPU profiles: 2^3 cubes of 16^3
    assert resolve_cube_size((64, 64, 32)) == 32            # la-real: 2 x 2 x 1 cubes of 32^3
    assert resolve_cube_size((64, 64, 64), 32) == 32
    with pytest.raises(ValueError):
        resolve_cube_size((32, 32, 32), 32)                 # a single cube: no partition
    with pytest.raises(ValueError):
        resolve_cube_size((96, 96, 96), 24)


def test_partition_lists_cubes_by_the_released_location_label():
    # 4 x 4 x 6 volume, cubes of 2: grid (2, 2, 3); label = i + 2 j + 4 k (released get_loc_mask)
    x = torch.arange(4 * 4 * 6, dtype=torch.float).view(1, 1, 4, 4, 6)
    cubes = partition(x, 2)
    lab = location_labels((2, 2, 3))
    assert cubes.shape == (1, 12, 1, 2, 2, 2)
    for i in range(2):
        for j in range(2):
            for k in range(3):
                assert lab[i, j, k] == i + 2 * j + 4 * k
                assert torch.equal(cubes[0, lab[i, j, k], 0], x[0, 0, 2 * i:2 * i + 2, 2 * j:2 * j + 2, 2 * k:2 * k + 2])


@pytest.mark.parametrize("shape", [(3, 2, 8, 8, 8), (2, 1, 8, 4, 12)])
def test_partition_shuffle_recovery_is_the_identity_for_images_and_label_maps(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    y = (torch.rand((shape[0], *shape[2:]), generator=g) > 0.5).long()
    grid = cube_grid(shape[2:], 4)
    n = math.prod(grid)
    assert torch.equal(recover(partition(x, 4), grid), x)
    assert torch.equal(recover(partition(y, 4), grid), y)
    for seed in range(5):   # any permutation: shared by the batch or one per image
        shared = torch.randperm(n, generator=g)
        per_image = torch.stack([torch.randperm(n, generator=g) for _ in range(shape[0])])
        for order in (shared, per_image):
            sx, sy = shuffle_cubes(partition(x, 4), order), shuffle_cubes(partition(y, 4), order)
            if seed == 0 and order is shared:
                assert not torch.equal(recover(sx, grid), x)       # the shuffle does move cubes
            assert torch.equal(recover(unshuffle_cubes(sx, order), grid), x)
            assert torch.equal(recover(unshuffle_cubes(sy, order), grid), y)


def test_location_labels_match_the_shuffle():
    x = torch.randn(2, 1, 8, 8, 8)
    cubes = partition(x, 4)
    order = torch.tensor([5, 0, 7, 2, 1, 6, 3, 4])       # slot s holds the cube of location order[s]
    shuffled = shuffle_cubes(cubes, order)
    lab = location_labels((2, 2, 2))
    for s in range(8):
        i, j, k = [int(v) for v in (lab == order[s]).nonzero()[0]]
        assert torch.equal(shuffled[:, s, 0], x[:, 0, 4 * i:4 * i + 4, 4 * j:4 * j + 4, 4 * k:4 * k + 4])


def test_released_transposed_within_recovery_swaps_first_and_last_cube_axes():
    x = torch.arange(6 ** 3, dtype=torch.float).view(1, 1, 6, 6, 6)
    placed = recover(shuffle_cubes(partition(x, 2), transposed_order((3, 3, 3))), (3, 3, 3))
    for i, j, k in [(0, 0, 1), (2, 1, 0), (1, 2, 2), (1, 1, 1)]:
        assert torch.equal(placed[0, 0, 2 * i:2 * i + 2, 2 * j:2 * j + 2, 2 * k:2 * k + 2],
                           x[0, 0, 2 * k:2 * k + 2, 2 * j:2 * j + 2, 2 * i:2 * i + 2])
    with pytest.raises(ValueError):
        transposed_order((2, 2, 1))


def test_cross_mixing_is_a_mosaic_that_unmixing_restores():
    # sample b is filled with the value b: cube n of mixed image b must show perm[n, b]
    b, n = 4, 8
    x = torch.arange(b, dtype=torch.float).view(b, 1, 1, 1, 1).expand(b, 1, 8, 8, 8).clone()
    perm = cross_permutations(np.random.default_rng(0), n, b)
    assert perm.shape == (n, b) and all(sorted(p.tolist()) == list(range(b)) for p in perm)
    mixed = cross_mix(x, perm, 4)
    assert torch.equal(partition(mixed, 4)[:, :, 0, 0, 0, 0], perm.t().float())
    assert len(torch.unique(mixed[0])) > 1                 # a mosaic of labeled and unlabeled cubes
    # real images and label maps: mixing then un-mixing restores every image
    g = torch.Generator().manual_seed(1)
    img = torch.randn(b, 1, 8, 8, 8, generator=g)
    lab = (torch.rand(b, 8, 8, 8, generator=g) > 0.5).long()
    assert torch.equal(cross_unmix(cross_mix(img, perm, 4), perm, 4), img)
    assert torch.equal(cross_unmix(cross_mix(lab, perm, 4), perm, 4), lab)
    # features at the bottleneck scale use the same permutation at the cube's scale there
    feat = torch.randn(b, 3, 2, 2, 2, generator=g)
    assert torch.equal(cross_unmix(cross_mix(feat, perm, 1), perm, 1), feat)


# ------------------------------------------------------------------------------- losses and blending
def test_dice_is_the_released_two_class_batch_dice():
    logits = torch.randn(2, 2, 3, 3, 3)
    target = (torch.rand(2, 3, 3, 3) > 0.6).long()
    p = torch.softmax(logits, 1)
    per_class = []
    for c in range(2):
        t = (target == c).float()
        per_class.append(1 - (2 * (p[:, c] * t).sum() + 1e-10) / ((p[:, c] ** 2).sum() + (t ** 2).sum() + 1e-10))
    assert torch.allclose(magic_dice(p, target), torch.stack(per_class).mean(), atol=1e-6)
    perfect = F.one_hot(target, 2).movedim(-1, 1).float()
    assert magic_dice(perfect, target) < 1e-6


def test_blending_weights_follow_the_class_frequencies():
    w = class_weights(torch.tensor([900, 100]))
    assert torch.allclose(w, torch.tensor([1.0, 1 / 9]))
    assert class_weights(torch.tensor([0, 0])) is None
    assert torch.allclose(class_weights(torch.tensor([900, 100]), t_dist=2.0), torch.tensor([1.0, 1 / 3]))
    teacher = torch.zeros(1, 2, 1, 1, 3)
    teacher[0, :, 0, 0, 0] = torch.tensor([2.0, 0.0])      # teacher: background (weight 1 -> the cubes decide)
    teacher[0, :, 0, 0, 1] = torch.tensor([0.0, 2.0])      # teacher: foreground (weight 1/9 -> teacher decides)
    teacher[0, :, 0, 0, 2] = torch.tensor([0.0, 0.2])      # weak foreground, cubes strongly background
    cubes = torch.zeros(1, 2, 1, 1, 3)
    cubes[0, :, 0, 0, 0] = torch.tensor([0.0, 1.0])
    cubes[0, :, 0, 0, 1] = torch.tensor([1.0, 0.0])
    cubes[0, :, 0, 0, 2] = torch.tensor([5.0, 0.0])
    # voxel 2: (8/9) (0, 0.2) + (1/9) (5, 0) = (0.556, 0.178) -> background
    assert blend_pseudo_label(teacher, cubes, w).tolist() == [[[[1, 1, 0]]]]


def test_ramp_and_branch_starts_as_fractions_of_the_released_30000_iterations():
    m = get_method("magicnet")
    o = m.options
    ramp = [o["consistency"] * staircase_rampup(t, 30000, o["rampup_fraction"], o["rampup_units"])
            for t in (0, 299, 300, 11999, 12000, 29999)]
    assert ramp[0] == ramp[1] == pytest.approx(0.2 * math.exp(-5))     # iter // 300 = 0
    assert ramp[2] == pytest.approx(0.2 * math.exp(-5 * (39 / 40) ** 2))
    assert ramp[3] < 0.2 and ramp[4] == ramp[5] == 0.2
    assert not started(11999, 30000, o["within_start_fraction"]) and started(12000, 30000, o["within_start_fraction"])
    assert not started(10 ** 6, 30000, None)
    cfg = make_config("magicnet", "paper")
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.lr_step, cfg.steps, cfg.batch_size,
            cfg.unlabeled_batch_size, cfg.dropout, cfg.amp) == ("sgd", 0.01, 1e-4, 12000, 30000, 2, 2, 0.0, False)
    assert [m.lr_at(cfg, "net", s) for s in (11999, 12000, 24000)] == pytest.approx([0.01, 1e-3, 1e-4])


def test_class_counts_refresh_every_twenty_steps_and_survive_a_resume():
    m = get_method("magicnet")
    m._log_classes(0, torch.tensor([0, 0, 1]))
    assert m._counts.tolist() == [2, 1]                       # step 0 % 20 == 0: refreshed at once
    for s in range(1, 20):
        m._log_classes(s, torch.tensor([1]))
    assert m._counts.tolist() == [2, 1] and m._pending.tolist() == [0, 19]
    m._log_classes(20, torch.tensor([0]))
    assert m._counts.tolist() == [1, 19] and m._pending.tolist() == [0, 0]
    m._log_classes(21, torch.tensor([1, 1]))
    other = get_method("magicnet")
    other.load_state_dict(m.state_dict())
    assert other._counts.tolist() == [1, 19] and other._pending.tolist() == [0, 2]


# ------------------------------------------------------------------------------- network and step
def test_sixteen_voxel_cubes_go_through_the_network_at_32():
    net = MagicVNet(4, head="none", patch=(32, 32, 32))
    assert (net.cube_size, net.grid, net.n_cubes, net.cube_net_size) == (16, (2, 2, 2), 8, 32)
    assert net.fc_layer[0].in_features == 16 * 4 * 8       # bottleneck 2^3 per cube, as released at 32^3
    x5, skips, scale = encode_cubes(net, torch.randn(3, 1, 16, 16, 16))
    assert scale == 2 and x5.shape == (3, 64, 2, 2, 2)
    assert net.locate(x5).shape == (3, 8)


def test_uni_variant_prompt_changes_the_whole_and_the_recovered_predictions():
    torch.manual_seed(0)
    net = MagicVNet(4, head="dynamic", patch=(32, 32, 32)).train()
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(net(x, [1, 1]), net(x, [2, 2]))
        perm = cross_permutations(np.random.default_rng(0), 8, 2)
        feats = net.backbone(cross_mix(x, perm, 16))
        rec = BackboneOut(bottleneck=cross_unmix(feats.bottleneck, perm, 1),
                          decoder=cross_unmix(feats.decoder, perm, 16), skips=())
        assert not torch.allclose(net.head(rec, [1, 1]), net.head(rec, [3, 3]))
    fixed = MagicVNet(4, head="none", patch=(32, 32, 32)).eval()
    with torch.no_grad():
        assert torch.equal(fixed(x, [1, 1]), fixed(x, [2, 2]))   # task-specific: the prompt is ignored


def _nets_and_method(head, **options):
    torch.manual_seed(0)
    method = get_method("magicnet", options)
    cfg = make_config("magicnet", "smoke", head=head)
    nets = method.build_networks(cfg)
    return method, nets


def test_step_runs_every_branch():
    # within-image decoding and blending on from the start, blending counts given
    method, nets = _nets_and_method("dynamic", within_start_fraction=0.0, blend_start_fraction=0.0)
    method._counts = torch.tensor([900, 100])
    lab, unlab = batch(1, 1, [1]), batch(2, 2, [3, 4])
    c = StepContext(nets=nets, optimizers={}, stage="train", step=1, stage_step=1, stage_steps=10,
                    rng=np.random.default_rng(0), options=method.options)
    out = method.step(c, lab, unlab)
    assert {"sup", "ce", "dice", "dice_cross", "dice_within", "loc", "cons", "flipped_fraction"} <= set(out)
    assert out["within"] == 1 and out["blend"] == 1
    assert torch.isfinite(out["loss"]) and out["dice_within"] > 0
    assert out["sup"] == pytest.approx(float(torch.stack([out[k] for k in ("ce", "dice", "dice_cross",
                                                                           "dice_within")]).mean()))
    out["loss"].backward()
    assert nets["net"].fc_layer[0].weight.grad.abs().sum() > 0     # the location loss reaches its head
    assert all(p.grad is None for p in nets["teacher"].parameters())


def test_within_recovery_inverts_the_shuffle_or_uses_the_released_placement():
    torch.manual_seed(0)
    net = MagicVNet(4, head="none", patch=(32, 32, 32)).eval()
    grid, b = (2, 2, 2), 2
    order = torch.tensor([3, 6, 0, 7, 1, 5, 2, 4])
    dec = torch.randn(b, 4, 32, 32, 32)
    x5 = torch.randn(b, 64, 2, 2, 2)
    # what the within-image branch sees: the images' cubes in shuffled slots, flattened to (B*N, ...)
    dec_s = shuffle_cubes(partition(dec, 16), order).flatten(0, 1)
    x5_s = shuffle_cubes(partition(x5, 1), order).flatten(0, 1)
    task = torch.tensor([1, 1])
    with torch.no_grad():
        whole = net.head(BackboneOut(bottleneck=x5, decoder=dec, skips=()), task)
        plain = get_method("magicnet")._within_logits(net, x5_s, dec_s, order, b, grid, task)
        released = get_method("magicnet", {"transposed_within_recovery": True})._within_logits(
            net, x5_s, dec_s, order, b, grid, task)
    assert torch.allclose(plain, whole, atol=1e-6)
    assert not torch.allclose(released, whole, atol=1e-3)
    moved = recover(shuffle_cubes(partition(dec, 16), transposed_order(grid)), grid)
    with torch.no_grad():
        assert torch.allclose(released, net.head(BackboneOut(bottleneck=x5, decoder=moved, skips=()), task), atol=1e-6)


def test_magicnet_trains_on_fixed_batch():
    method, nets = _nets_and_method("none", within_start_fraction=0.0, blend_start_fraction=0.0,
                                    rampup_fraction=0.0)
    # Adam 1e-3 as the CPU profiles (at 1e-2 Adam's sign-like steps on the 4096-wide location head overshoot)
    opt = {"net": torch.optim.Adam(nets["net"].parameters(), 1e-3, betas=(0.5, 0.999))}
    lab, unlab = batch(1, 1, [1]), batch(1, 2, [1])
    losses, sup, loc = [], [], []
    for step in range(6):
        c = StepContext(nets=nets, optimizers=opt, stage="train", step=step, stage_step=step, stage_steps=6,
                        rng=np.random.default_rng(0), options=method.options)
        out = method.train_step(c, lab, unlab)
        assert all(torch.isfinite(v).all() for v in out.values())
        losses.append(out["loss"].item())
        sup.append(out["sup"].item())
        loc.append(out["loc"].item())
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    assert sup[-1] < sup[0] and loc[-1] < loc[0], (sup, loc)


@pytest.mark.parametrize("datasets,steps", [(("la",), 1), (("pancreas", "la", "spleen", "lung"), 2)])
def test_one_smoke_run_task_specific_and_uni(smoke_root, tmp_path, datasets, steps):
    # the 2-step run reaches the within-image branch and the blending at its step 1 (0.4 of the run)
    cfg = make_config("magicnet", "smoke", datasets=datasets, steps=steps, val_every=steps, ckpt_every=steps)
    assert cfg.head == ("none" if len(datasets) == 1 else "dynamic")
    summary = train(cfg, smoke_root / "data" / "smoke" / "prepared", tmp_path / "run", progress=False)
    assert summary is not None
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert set(state["nets"]) == {"net", "teacher"} and any(k.startswith("fc_layer.") for k in state["nets"]["net"])
    assert sum(state["method"]["class_counts"]) > 0
    assert (tmp_path / "run" / "best.pt").is_file()
    rows = pd.read_csv(tmp_path / "run" / "metrics.csv")
    # within-image branch and blending start at 0.4 of the run: step 1 of 2 (blending counts from step 0)
    assert rows["within"].tolist() == [0.0, 1.0][:steps] and rows["blend"].tolist() == [0.0, 1.0][:steps]


def test_paper_configuration_builds():
    cfg = make_config("magicnet", "paper")
    assert cfg.n_filters == 16 and cfg.patch == (96, 96, 96) and cfg.head == "dynamic"
    method = get_method("magicnet", cfg.options)
    nets = method.build_networks(cfg)
    opts = method.build_optimizers(cfg, nets)
    net = nets["net"]
    assert (net.cube_size, net.grid, net.n_cubes) == (32, (3, 3, 3), 27)
    # VerSemiNet (dynamic head, f = 16) 9,484,144 + location head 2048*4096+4096 + 2*4096 + 4096*27+27
    assert count_parameters(net.fc_layer) == 8_511_515
    assert count_parameters(net) == 9_484_144 + 8_511_515 == count_parameters(nets["teacher"])
    assert isinstance(opts["net"], torch.optim.SGD) and opts["net"].defaults["momentum"] == 0.9
    assert method.teachers() == {"teacher": "net"}
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 32, 32), [2]).shape == (1, 2, 32, 32, 32)
