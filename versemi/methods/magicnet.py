"""MagicNet (Chen et al., CVPR 2023: "MagicNet: Semi-Supervised Multi-Organ Segmentation via Magic-Cube
Partition and Recovery"), after the released code of the repository DeepMed-Lab-ECNU/MagicNet (commit
316d7ee): ``code/train_main_mact.py`` (the training loop this port follows; ``train_main_btcv.py`` differs
only where noted), ``code/utils/cube_utils.py`` (``get_part_and_rec_ind``, ``get_loc_mask``,
``OrganClassLogger``), ``code/utils/cube_losses.py`` (``get_patch_list``, ``cube_location_loss``,
``unmix_tensor``, ``get_mix_pl``), ``code/networks/magicnet.py`` (``VNet_Magic``, ``FcLayer``),
``code/utils/losses.py`` (``DiceLoss``) and ``code/utils/test_util.py`` (what is evaluated).

A mean teacher (the EMA teacher of :class:`~versemi.methods.Method`, decay 0.99 with the warm-up
``min(1 - 1/(t+1), 0.99)``, as the released ``update_ema_variables``) whose student learns from a "magic
cube": the patch (D, H, W) is split into a grid of cubes of edge ``c`` (released: 3 x 3 x 3 cubes of 32^3
in a 96^3 patch). One step, with the labeled and unlabeled samples concatenated (labeled first, B samples):

* **whole image**: the student on the batch; CE + Dice of the labeled part (``outputs``);
* **cross-image partition and recovery** (:func:`cross_mix`, released ``get_part_and_rec_ind``): at every
  cube position an independent random permutation of the B samples says which sample's cube the mixed
  image shows there (cubes keep their positions, so a mixed image is a mosaic of labeled and unlabeled
  cubes); the student's backbone runs on the mixed batch, its features are sent back to their source
  images with the inverse permutations (:func:`cross_unmix`), and the head predicts on the recovered
  features (released: ``forward_prediction_head`` on the gathered embedding). Labeled part: Dice against
  the label; unlabeled part: Dice against the pseudo-label (the consistency term);
* **within-image partition and recovery**: every image's cubes, shuffled (one permutation per step for
  all samples, drawn from ``ctx.rng``), each go through the encoder alone; the **cube-location loss**
  (released ``cube_location_loss``) classifies each cube's flattened bottleneck into its location
  ``l = i + g_D j + g_D g_H k`` (cube index i along D, j along H, k along W; released ``get_loc_mask``) with
  the location head ``Linear(16f (c'/16)^3, 4096) - BatchNorm1d - LeakyReLU(0.2) - Linear(4096, N)``
  (released ``FcLayer``; ``c'`` the edge at which a cube goes through the network, N the number of cubes),
  NLL averaged over the cubes of each image, then over the images. Once the within-image branch is on
  (MACT: when the consistency ramp is complete), the cubes are decoded, put back at their locations
  (:func:`recover`, the inverse of the shuffle) and the head predicts on the re-assembled features: a
  labeled Dice term is added to the supervised average (released ``loss_lab_local_dice``);
* **cube-wise pseudo-label blending** (released ``OrganClassLogger`` and ``get_mix_pl``): the teacher's
  logits on the unlabeled images (input noise N(0, 0.1) clipped to +-0.2) and the re-assembled small-cube
  logits of the same images are blended voxel-wise, ``(1 - w) teacher + w cubes``, with ``w`` the
  normalised pixel frequency of the teacher's predicted class (:func:`class_weights`: counts^(1/T),
  divided by their sum then by their maximum, T = ``t_dist`` = 1), the counts being those of the
  pseudo-labels of the last ``dist_every`` = 20 steps (refreshed when ``step % 20 == 0``, as released);
  the pseudo-label is the argmax of the blend (before blending starts: the teacher's argmax);
* **loss** = mean of the supervised terms {CE, Dice(whole), Dice(cross-recovered)[, Dice(within-
  recovered)]} + ``loc_weight`` (0.1) x location loss + w(t) x Dice(cross-recovered unlabeled,
  pseudo-label), w(t) = ``consistency`` (MACT 0.2) x ``sigmoid_rampup(t // 300, 40)``: 40 stairs reaching
  1 at iteration 12,000 of 30,000, i.e. ``rampup_fraction`` = 0.4 of the run in ``rampup_units`` = 40
  stairs (:func:`staircase_rampup`).

Dice (:func:`magic_dice`) is the released ``DiceLoss(n_classes)``: for each class (background included)
1 - (2 sum(p t) + 1e-10) / (sum(p^2) + sum(t^2) + 1e-10) over the whole batch, averaged over the classes.

Shapes (voxels): images (B, 1, D, H, W); labels (B, D, H, W); logits (B, 2, D, H, W); cube lists
(B, N, C, c, c, c) by location ``l``; cross-image permutations (N, B) (``perm[n, b]``: the sample whose cube
n the mixed image b shows); within-image orders (N,) or (B, N) (slot s holds location ``order[s]``).

Evaluated: the student's whole-image prediction ``net(x, task)`` (``eval_network = "net"``), as the
released ``test_util`` (``model(patch)[0]`` of the student after ``model.eval()``).

Decisions (where the released code is ambiguous, broken, or does not apply to this companion):

1. Binary tasks: ``n_classes = 2``. CE and the released multi-class Dice with two classes (background and
   foreground, averaged); the class-frequency weights of the blending are computed over {background,
   foreground}, pooled over all tasks in a Uni- run (the released code keeps one distribution for all its
   organs). The location head is class-free and unchanged.
2. Network: the companion's V-Net (:class:`~versemi.model.VerSemiNet`: InstanceNorm as released, but no
   ``block_nine`` and no finest skip; a prompted head ``precls_conv`` + 8-channel head instead of the
   released 1x1x1 ``out_conv``) plus the location head (:class:`MagicVNet`). The released "embedding" (the
   16-channel ``x9``) is the decoder output here (f channels); recovery is applied to the features and the
   head runs after it, as released. The unused released ``outputs_mix`` is not computed. No dropout.
3. What the prompted head reads after recovery: the dynamic head also reads the bottleneck (its global
   branch). The bottleneck is recovered with the same permutation as the decoder features (a cube of
   edge c is c/16 bottleneck voxels, so the cube grid is exact at the bottleneck), so every input of the
   head comes from the mixed (or cube-wise) pass, put back in place. The backbone is prompt-free, so no
   prompt is needed for a mosaic; the head is applied with each recovered image's own prompt. With
   ``head="none"`` the bottleneck is not read and this reduces to the released recovery.
4. Patch vs cubes (a cube that goes through the network alone must survive four 2x down-steps: an edge
   divisible by 16 and at least 32). ``cube_size`` (None = automatic): 32 when every axis of the patch is
   a multiple of 32 and one axis is at least 64 (paper profile 96^3: the released 3^3 cubes of 32^3;
   la-real 64 x 64 x 32: 2 x 2 x 1 cubes of 32^3), else 16 (smoke/demo 32^3: 2^3 cubes of 16^3).
   Cubes of 16^3 cannot pass four down-steps, so for the within-image branch (location loss and cube
   decoding) each cube is up-sampled x2 (trilinear) to 32^3 before the network and its decoder features and
   bottleneck are average-pooled x2 back to the cube's size before recovery (:func:`encode_cubes`, :func:`decode_cubes`). The
   cube thus goes through exactly the released 32^3 cube pass (bottleneck 2^3, location head input 16f x 8
   as released) at twice the magnification; zero-padding was rejected because InstanceNorm statistics of
   a padded cube are mostly padding. The cross-image branch mixes the 16^3 cubes directly. A 64^3 patch
   with ``cube_size=32`` runs the cubes natively. Non-cubic grids are supported.
5. Within-image recovery: the released ``unmix_tensor`` reads the cube list (built in (x, y, z) raster
   order by ``get_patch_list``) with the location formula ``x + 3y + 9z``, so the cube from grid position
   (x, y, z) is put at (z, y, x): 18 of the 27 cubes are placed transposed (checked by running the released
   functions on an index volume). Here the within-image predictions are recovered with the true inverse
   of the shuffle. ``transposed_within_recovery=True`` reproduces the released placement (cubic grids only).
6. Within-image shuffle: released, the cubes are encoded in raster order and only their bottleneck
   features and location labels are shuffled (one ``randperm`` shared by all images) before the location
   head; with InstanceNorm and BatchNorm1d this is numerically a no-op. Here the cubes themselves are
   shuffled before the encoder with one permutation per step shared by all images (the same
   distribution); recovery inverts it. The location head runs per image (BatchNorm1d over N cubes).
7. Cube-wise pseudo-logits: the released ``get_mix_pl`` decodes the unlabeled images' cube features a
   second time under ``no_grad`` with the student; here the within-image decoding is reused, detached
   (the same values in the released network, whose head is a per-voxel 1x1x1 conv).
8. Start of blending: the MACT script blends when ``consistency_weight > args.consistency``, which the
   ramp never exceeds (it reaches exactly 1.0 x 0.2), so as released MACT pseudo-labels are always the
   teacher's argmax, although the within-image branch (``>=``) starts at iteration 12,000. Default here:
   blending starts with the within-image branch (``blend_start_fraction`` = 0.4, reading ``>`` as the
   ``>=`` of the line above); ``blend_start_fraction=None`` reproduces the released MACT behaviour. Until
   the first class-count refresh the pseudo-label is the teacher's argmax; ``dist_every`` stays in steps.
9. Schedules as fractions of the run: the ramp (``iter_num // 300``, length 40: 12,000 of 30,000) and the
   within-image start (12,000 of 30,000) are 0.4 of the run; the learning-rate decay (x0.1 every 12,000
   iterations) is :attr:`MagicNet.paper_settings` ``lr_step`` (paper profile only; the CPU profiles use
   VerSemi's constant Adam 1e-3 for every method).
10. Batch: labeled and unlabeled batches are concatenated into the released joint batch; the cross-image
    permutations run over all B samples at every cube position; the teacher stays in training mode.
11. The teacher is an EMA copy of the whole :class:`MagicVNet`, location head included (unused).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from versemi.model import BackboneOut, VerSemiNet, decode
from versemi.model import encode as encode_vnet

from .base import NUM_TASKS, Method, StepContext, frozen_copy, register, sigmoid_rampup
from .mean_teacher import noisy

LOC_HIDDEN = 4096          # released FcLayer: Linear(.., 4096) - BatchNorm1d - LeakyReLU(0.2) - Linear(4096, N)
CUBE_NET_MIN = 32          # smallest edge a cube may have when it goes through the V-Net alone
DICE_SMOOTH = 1e-10        # released DiceLoss


# ------------------------------------------------------------------------------------ cube geometry
def resolve_cube_size(patch: tuple[int, int, int], cube_size: int | None = None) -> int:
    """The cube edge for a patch (module docstring, decision 4): ``cube_size`` if given, else 32 when
    every axis is a multiple of 32 and one is at least 64, else 16. Checks that the cube is a multiple
    of 16, divides every axis and gives at least two cubes."""
    patch = tuple(int(p) for p in patch)
    if cube_size is None:
        cube_size = 32 if all(p % 32 == 0 for p in patch) and max(patch) >= 64 else 16
    c = int(cube_size)
    if c < 16 or c % 16 or any(p % c for p in patch):
        raise ValueError(f"cube size {c} must be a multiple of 16 that divides the patch {patch}")
    if math.prod(p // c for p in patch) < 2:
        raise ValueError(f"cube size {c} gives a single cube in the patch {patch}; MagicNet needs at least two")
    return c


def cube_grid(spatial, cube: int) -> tuple[int, int, int]:
    """Number of cubes along D, H, W for a (D, H, W) volume and cube edge ``cube``."""
    spatial = tuple(int(s) for s in spatial)
    if len(spatial) != 3 or any(s % cube for s in spatial):
        raise ValueError(f"volume {spatial} is not divisible into cubes of {cube}")
    return tuple(s // cube for s in spatial)


def location_labels(grid: tuple[int, int, int]) -> torch.Tensor:
    """(g_D, g_H, g_W) long tensor: the location label ``i + g_D j + g_D g_H k`` of the cube at grid
    position (i, j, k) (released ``get_loc_mask``: ``x + W y + W H z`` with x along the first axis)."""
    gi, gj, gk = grid
    i, j, k = torch.meshgrid(torch.arange(gi), torch.arange(gj), torch.arange(gk), indexing="ij")
    return i + gi * j + gi * gj * k


def partition(x: torch.Tensor, cube: int) -> torch.Tensor:
    """Cut volumes into cubes listed by location label.

    x: (B, C, D, H, W) images/features or (B, D, H, W) label maps. Returns (B, N, C, c, c, c) (label maps:
    (B, N, c, c, c)); entry n is the cube whose location label (:func:`location_labels`) is n."""
    label_map = x.dim() == 4
    if label_map:
        x = x.unsqueeze(1)
    b, ch = x.shape[:2]
    gi, gj, gk = cube_grid(x.shape[2:], cube)
    cubes = x.reshape(b, ch, gi, cube, gj, cube, gk, cube).permute(0, 6, 4, 2, 1, 3, 5, 7)
    cubes = cubes.reshape(b, gi * gj * gk, ch, cube, cube, cube)
    return cubes[:, :, 0] if label_map else cubes


def recover(cubes: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`partition`: (B, N, C, c, c, c) -> (B, C, D, H, W), or (B, N, c, c, c) ->
    (B, D, H, W) for label maps."""
    label_map = cubes.dim() == 5
    if label_map:
        cubes = cubes.unsqueeze(2)
    b, n, ch, c = cubes.shape[:4]
    gi, gj, gk = grid
    if n != gi * gj * gk:
        raise ValueError(f"{n} cubes do not fill a {grid} grid")
    x = cubes.reshape(b, gk, gj, gi, ch, c, c, c).permute(0, 4, 3, 5, 2, 6, 1, 7)
    x = x.reshape(b, ch, gi * c, gj * c, gk * c)
    return x[:, 0] if label_map else x


def _per_sample(order: torch.Tensor, b: int) -> torch.Tensor:
    order = torch.as_tensor(order).long()
    return order.expand(b, -1) if order.dim() == 1 else order


def shuffle_cubes(cubes: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Within-image shuffle: slot s of image b receives the cube of location ``order[b, s]`` (``order``
    (N,) is shared by all images). cubes: (B, N, ...). The location labels of the result are ``order``."""
    o = _per_sample(order, cubes.shape[0]).to(cubes.device)
    return cubes[torch.arange(cubes.shape[0], device=cubes.device)[:, None], o]


def unshuffle_cubes(cubes: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`shuffle_cubes` (the cubes back in location order)."""
    return shuffle_cubes(cubes, torch.argsort(_per_sample(order, cubes.shape[0]), dim=1))


def transposed_order(grid: tuple[int, int, int]) -> torch.Tensor:
    """(N,) the placement of the released ``unmix_tensor`` as an order for :func:`shuffle_cubes`: applied to
    a location-ordered cube list it puts the cube of grid position (k, j, i) at (i, j, k) (module docstring,
    decision 5). Cubic grids only."""
    gi, gj, gk = grid
    if not gi == gj == gk:
        raise ValueError(f"the released placement is defined for cubic grids only, got {grid}")
    lab = location_labels(grid)                      # lab[i, j, k] = location of (i, j, k)
    order = torch.empty(lab.numel(), dtype=torch.long)
    order[lab.reshape(-1)] = lab.permute(2, 1, 0).reshape(-1)   # slot (i, j, k) <- cube (k, j, i)
    return order


def cross_permutations(rng: np.random.Generator, n_cubes: int, batch: int) -> torch.Tensor:
    """(N, B) long: an independent uniform permutation of the B samples for every cube position (released
    ``argsort(rand(bs, n, n, n), dim=0)``)."""
    return torch.from_numpy(np.stack([rng.permutation(batch) for _ in range(n_cubes)])).long()


def cross_mix(x: torch.Tensor, perm: torch.Tensor, cube: int) -> torch.Tensor:
    """Cross-image mosaic: cube n of output b is cube n of input ``perm[n, b]`` (cubes keep their
    positions). x: (B, C, D, H, W) or (B, D, H, W); perm: (N, B)."""
    cubes = partition(x, cube)
    b, n = cubes.shape[:2]
    p = perm.to(x.device).long()
    if tuple(p.shape) != (n, b):
        raise ValueError(f"cross permutation must be ({n}, {b}), got {tuple(p.shape)}")
    mixed = cubes[p.t(), torch.arange(n, device=x.device)[None, :]]
    return recover(mixed, cube_grid(x.shape[-3:], cube))


def cross_unmix(x: torch.Tensor, perm: torch.Tensor, cube: int) -> torch.Tensor:
    """Inverse of :func:`cross_mix` (released ``cube_rec_ind``: ``argsort`` of the permutation)."""
    return cross_mix(x, torch.argsort(perm.long(), dim=1), cube)


# ------------------------------------------------------------------------------------------ losses
def magic_dice(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Released ``DiceLoss(n_classes=2)`` on softmax probabilities ``prob`` (B, 2, ...) and a hard label map
    ``target`` (B, ...): per class 1 - (2 sum(p t) + 1e-10) / (sum(p^2) + sum(t^2) + 1e-10) over the
    whole batch, averaged over the two classes."""
    prob = prob.float()
    onehot = F.one_hot(target.long(), prob.shape[1]).movedim(-1, 1).to(prob.dtype)
    dims = [0] + list(range(2, prob.dim()))
    inter = 2 * (prob * onehot).sum(dims) + DICE_SMOOTH
    union = (prob * prob).sum(dims) + onehot.sum(dims) + DICE_SMOOTH
    return (1 - inter / union).mean()


def staircase_rampup(step: int, steps: int, fraction: float, units: int) -> float:
    """``sigmoid_rampup(floor(step / stair), units)`` with ``units`` stairs filling ``fraction`` of the run
    (released ``sigmoid_rampup(iter_num // 300, 40)`` over 12,000 of 30,000 iterations); ``units`` = 0
    ramps smoothly over the same length."""
    length = fraction * steps
    if length <= 0:
        return 1.0
    if units <= 0:
        return sigmoid_rampup(step, length)
    return sigmoid_rampup(math.floor(step * units / length + 1e-9), units)


def started(step: int, steps: int, fraction: float | None) -> bool:
    """Whether a branch that starts at ``fraction`` of the run is on at ``step`` (None: never)."""
    return fraction is not None and step >= math.ceil(fraction * steps - 1e-9)


def class_weights(counts: torch.Tensor, t_dist: float = 1.0) -> torch.Tensor | None:
    """Blending weight per class (released ``OrganClassLogger`` normalisation): counts^(1/T), divided by
    their sum, then by their maximum (the most frequent class gets 1). None when nothing was counted."""
    d = counts.double().clamp_min(0) ** (1.0 / t_dist)
    if float(d.sum()) <= 0:
        return None
    d = d / d.sum()
    return (d / d.max()).float()


def blend_pseudo_label(teacher_logits: torch.Tensor, cube_logits: torch.Tensor,
                       weights: torch.Tensor) -> torch.Tensor:
    """(B, ...) long: argmax of ``(1 - w) teacher + w cubes`` with ``w = weights[argmax teacher]`` per voxel.
    teacher_logits, cube_logits: (B, 2, ...) logits; weights: (2,) from :func:`class_weights`."""
    w = weights.to(teacher_logits.device, torch.float32)[teacher_logits.argmax(1)].unsqueeze(1)
    mixed = (1 - w) * teacher_logits.float() + w * cube_logits.float()
    return mixed.argmax(1)


# ------------------------------------------------------------------------------------------ network
class MagicVNet(VerSemiNet):
    """The run's prompted V-Net plus the cube-location head ``fc_layer`` (released ``VNet_Magic``).

    ``forward(x, task)`` is the whole-image prediction (logits (B, 2, D, H, W)), the evaluated output.
    ``cube_size``: the cube edge of the run's patch; ``n_cubes``: the location classes; a cube goes through
    the network at edge ``cube_net_size`` = max(cube_size, 32) (decision 4)."""

    def __init__(self, n_filters: int, num_tasks: int = NUM_TASKS, head: str = "dynamic", dropout: float = 0.0,
                 patch: tuple[int, int, int] = (96, 96, 96), cube_size: int | None = None):
        super().__init__(in_channels=1, n_filters=n_filters, num_tasks=num_tasks, head=head, dropout=dropout)
        self.cube_size = resolve_cube_size(patch, cube_size)
        self.grid = cube_grid(patch, self.cube_size)
        self.n_cubes = math.prod(self.grid)
        self.cube_net_size = max(self.cube_size, CUBE_NET_MIN)
        loc_in = 16 * n_filters * (self.cube_net_size // 16) ** 3
        self.fc_layer = nn.Sequential(nn.Linear(loc_in, LOC_HIDDEN), nn.BatchNorm1d(LOC_HIDDEN),
                                      nn.LeakyReLU(0.2, inplace=True), nn.Linear(LOC_HIDDEN, self.n_cubes))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """The encoder alone: bottleneck (B, 16f, D/16, H/16, W/16) and the skips (x4, x3, x2)."""
        return encode_vnet(self, x)

    def decode_features(self, x5: torch.Tensor, skips: tuple) -> torch.Tensor:
        """The decoder on encoder outputs: (B, f, D, H, W)."""
        return decode(self, x5, skips, self.dropout_p)

    def locate(self, bottleneck: torch.Tensor) -> torch.Tensor:
        """Location logits (n, N) of n cubes of one image from their bottlenecks (n, 16f, 2, 2, 2) (all the
        cubes of one image in one call: the BatchNorm1d statistics are those of the image's cubes)."""
        return self.fc_layer(bottleneck.flatten(1))


def encode_cubes(net: MagicVNet, cubes: torch.Tensor):
    """Encode a flat batch of cubes (n, 1, c, c, c) at the network's cube edge c' = max(c, 32): a cube of
    16 is up-sampled x2 (trilinear) first (decision 4). Returns the bottleneck (n, 16f, c'/16, ...) (the
    location head's input), the skips and the resampling factor c' / c."""
    scale = net.cube_net_size // cubes.shape[-1]
    inp = F.interpolate(cubes, scale_factor=scale, mode="trilinear", align_corners=False) if scale > 1 else cubes
    x5, skips = net.encode(inp)
    return x5, skips, scale


def decode_cubes(net: MagicVNet, x5: torch.Tensor, skips: tuple, scale: int):
    """Decode encoded cubes and bring the bottleneck and decoder features back to the cube's own edge c
    (average pooling by ``scale``): (n, 16f, c/16, ...) and (n, f, c, c, c)."""
    dec = net.decode_features(x5, skips)
    if scale > 1:
        return F.avg_pool3d(x5, scale), F.avg_pool3d(dec, scale)
    return x5, dec


def location_loss(net: MagicVNet, x5: torch.Tensor, order: torch.Tensor, batch: int) -> torch.Tensor:
    """NLL of the location head over the cubes of each image (slot s's label: ``order[b, s]``), averaged
    over the images (released ``cube_location_loss``). x5: (batch * N, 16f, ...) in slot order."""
    n = x5.shape[0] // batch
    labels = _per_sample(order, batch).to(x5.device)
    losses = [F.cross_entropy(net.locate(x5[b * n:(b + 1) * n]).float(), labels[b]) for b in range(batch)]
    return torch.stack(losses).mean()


# ------------------------------------------------------------------------------------------ method
@register
class MagicNet(Method):
    name = "magicnet"
    display_name = "MagicNet"
    uses_unlabeled = True
    uses_teacher = True
    default_options = {
        "cube_size": None,                 # None: 32 at a 96^3 patch (released), 16 at 32^3 (decision 4)
        "consistency": 0.2,                # MACT --consistency (BTCV: 0.1)
        "rampup_fraction": 12000 / 30000,  # sigmoid_rampup(iter // 300, 40): full at 12,000 of 30,000
        "rampup_units": 40,                # MACT --consistency_rampup (BTCV: 200 stairs of 350 = 70,000 it.)
        "loc_weight": 0.1,                 # loss = ... + 0.1 * loc_loss
        "within_start_fraction": 12000 / 30000,   # MACT: within-image branch once the ramp is complete
        "blend_start_fraction": 12000 / 30000,    # decision 8 (None: never, as the MACT script runs)
        "dist_every": 20,                  # class counts refreshed when step % 20 == 0
        "t_dist": 1.0,                     # --T_dist
        "noise_std": 0.1, "noise_clip": 0.2,      # teacher input noise
        "transposed_within_recovery": False,      # True: the released unmix_tensor placement (decision 5)
    }
    paper_source = ("DeepMed-Lab-ECNU/MagicNet code/train_main_mact.py lines 29-45 (argparse defaults), 148 (SGD), "
                    "323-326 (lr step); code/networks/magicnet.py (has_dropout=False)")
    paper_settings = dict(optimizer="sgd", lr=0.01, weight_decay=1e-4, lr_step=12000, batch_size=2,
                          unlabeled_batch_size=2, steps=30000, dropout=0.0)

    def __init__(self, options: dict | None = None):
        super().__init__(options)
        self._pending = torch.zeros(2, dtype=torch.long)   # pseudo-label voxels per class since the refresh
        self._counts = torch.zeros(2, dtype=torch.long)    # the counts the blending weights come from

    # ------------------------------------------------------------ networks and state
    def build_networks(self, cfg):
        net = MagicVNet(cfg.n_filters, NUM_TASKS, head=cfg.head, dropout=cfg.dropout, patch=cfg.patch,
                        cube_size=self.options["cube_size"])
        return {"net": net, "teacher": frozen_copy(net)}

    def state_dict(self) -> dict:
        return {"class_pending": self._pending.tolist(), "class_counts": self._counts.tolist()}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self._pending = torch.tensor(state["class_pending"], dtype=torch.long)
            self._counts = torch.tensor(state["class_counts"], dtype=torch.long)

    # ------------------------------------------------------------ schedule
    def consistency_weight(self, ctx: StepContext) -> float:
        o = self.options
        return o["consistency"] * staircase_rampup(ctx.stage_step, ctx.stage_steps, o["rampup_fraction"],
                                                   o["rampup_units"])

    def _log_classes(self, step: int, plabel: torch.Tensor) -> None:
        """Released ``OrganClassLogger``: count this step's pseudo-label voxels; at steps divisible by
        ``dist_every`` the counts since the last refresh become the blending counts."""
        self._pending += torch.bincount(plabel.reshape(-1).cpu(), minlength=2)[:2]
        if step % self.options["dist_every"] == 0:
            self._counts, self._pending = self._pending.clone(), torch.zeros(2, dtype=torch.long)

    # ------------------------------------------------------------ one step
    def step(self, ctx: StepContext, lab: dict, unlab: dict):
        o = self.options
        net: MagicVNet = ctx.net
        bl = lab["image"].shape[0]
        x = torch.cat([lab["image"], unlab["image"]])
        task = torch.cat([lab["task"], unlab["task"]]).to(x.device)
        y = lab["label"].long()
        b = x.shape[0]
        c = net.cube_size
        grid = cube_grid(x.shape[2:], c)
        if math.prod(grid) != net.n_cubes:
            raise ValueError(f"patch {tuple(x.shape[2:])} gives {math.prod(grid)} cubes of {c}; the location "
                             f"head was built for {net.n_cubes}")

        # whole image
        logits = net(x, task)
        ce = F.cross_entropy(logits[:bl].float(), y)
        dice = magic_dice(torch.softmax(logits[:bl].float(), 1), y)

        # cross-image partition and recovery
        perm = cross_permutations(ctx.rng, net.n_cubes, b)
        mixed = net.backbone(cross_mix(x, perm, c))
        rec = BackboneOut(bottleneck=cross_unmix(mixed.bottleneck, perm, c // 16),
                          decoder=cross_unmix(mixed.decoder, perm, c), skips=())
        logits_cross = net.head(rec, task)
        prob_cross = torch.softmax(logits_cross.float(), 1)
        dice_cross = magic_dice(prob_cross[:bl], y)

        # teacher on the noisy unlabeled images
        g = torch.Generator().manual_seed(int(ctx.rng.integers(2**62)))
        with torch.no_grad():
            t_logits = ctx.teacher(noisy(unlab["image"], g, o["noise_std"], o["noise_clip"]), unlab["task"])

        # within-image partition, location reasoning and recovery
        order = torch.from_numpy(ctx.rng.permutation(net.n_cubes)).long()
        cubes = shuffle_cubes(partition(x, c), order).flatten(0, 1)          # (B*N, 1, c, c, c)
        within_on = started(ctx.stage_step, ctx.stage_steps, o["within_start_fraction"])
        weights = class_weights(self._counts, o["t_dist"])
        blend_on = weights is not None and started(ctx.stage_step, ctx.stage_steps, o["blend_start_fraction"])
        x5, skips, scale = encode_cubes(net, cubes)
        loc = location_loss(net, x5, order, b)

        sup_terms = [ce, dice, dice_cross]
        out = {}
        cube_logits_u = None
        if within_on or blend_on:
            with contextlib.nullcontext() if within_on else torch.no_grad():
                x5_c, dec_c = decode_cubes(net, x5, skips, scale)
                logits_within = self._within_logits(net, x5_c, dec_c, order, b, grid, task)
            if within_on:
                dice_within = magic_dice(torch.softmax(logits_within[:bl].float(), 1), y)
                sup_terms.append(dice_within)
                out["dice_within"] = dice_within.detach()
            cube_logits_u = logits_within[bl:].detach()

        # pseudo-label: the teacher's argmax, or its blend with the re-assembled small-cube prediction
        if blend_on:
            plabel = blend_pseudo_label(t_logits, cube_logits_u, weights)
            out["flipped_fraction"] = (plabel != t_logits.argmax(1)).float().mean()
        else:
            plabel = t_logits.argmax(1)
        self._log_classes(ctx.step, plabel)

        sup = torch.stack(sup_terms).mean()
        cons = magic_dice(prob_cross[bl:], plabel)
        w = self.consistency_weight(ctx)
        loss = sup + o["loc_weight"] * loc + w * cons
        return {"loss": loss, "sup": sup.detach(), "ce": ce.detach(), "dice": dice.detach(),
                "dice_cross": dice_cross.detach(), "loc": loc.detach(), "cons": cons.detach(),
                "cons_weight": torch.tensor(w), "within": torch.tensor(float(within_on)),
                "blend": torch.tensor(float(blend_on)), **out}

    def _within_logits(self, net, x5_c, dec_c, order, b, grid, task):
        """Head on the re-assembled cube features: unshuffle to location order (or the released transposed
        placement), recover the bottleneck and decoder grids, apply the prompted head."""
        def assemble(feats):
            cubes = unshuffle_cubes(feats.reshape(b, -1, *feats.shape[1:]), order)
            if self.options["transposed_within_recovery"]:
                cubes = shuffle_cubes(cubes, transposed_order(grid))
            return recover(cubes, grid)
        return net.head(BackboneOut(bottleneck=assemble(x5_c), decoder=assemble(dec_c), skips=()), task)
