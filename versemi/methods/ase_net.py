"""ASE-Net: adversarial self-ensembling with dynamic convolution (Lei et al., IEEE TMI 2022, "Semi-supervised
medical image segmentation using adversarial consistency learning and dynamic convolution network"), after the
released repository SUST-reynole/ASE-Net (``ASE-NET/code/train_ASE-Net_3D.py``, ``networks/vnet_dy.py``,
``networks/discriminator.py``, ``utils/losses.py: softmax_mse_loss_three``, ``test_LA_our.py``).

A mean teacher (student ``net``, EMA teacher ``teacher``) whose student is trained against two discriminators
(the paper's adversarial consistency training strategy, ACTS):

* ``disc_lu`` tells the student's prediction on a *labeled* image (real, class 1) from its prediction on an
  *unlabeled* image (fake, class 0);
* ``disc_tn`` tells the teacher's prediction on a clean unlabeled image (real) from the student's prediction on
  the same image with Gaussian noise N(0, 0.1) clipped to +-0.2 (fake).

Each discriminator sees a foreground-probability map (B, 1, D, H, W) together with its image (B, 1, D, H, W) and
returns two logits (B, 2). One step, in the released order:

1. **discriminator step**: the student in eval mode and the teacher (train mode, as released) predict without
   gradient; each discriminator (train mode) minimises 0.5 [CE(D(real), 1) + CE(D(fake), 0)] with its own Adam
   optimiser;
2. **segmenter step** (student in train mode, discriminators in eval mode and frozen)::

       sup  = 0.5 (CE + Dice)                                   on the labeled samples
       cons = mean over voxels and both classes of
              [(p_s - p_t)^2 + (p_n - p_t)^2 + (p_s - p_n)^2] / 3  (``softmax_mse_loss_three``)
              p_s: student on the clean unlabeled image, p_n: student on the noisy one, p_t: teacher on the
              noisy one (no gradient)
       adv  = 0.5 [CE(disc_lu(p_s), 1) + CE(disc_tn(p_n), 1)]   (fool both: "labeled-like", "teacher-like")
       loss = sup + w(t) (adv + cons),   w(t) = consistency x sigmoid_rampup(t, rampup_fraction x steps)

The segmenter is a V-Net in which the paper's DyBAC (dynamic-convolution-based bidirectional attention
component) replaces the 3x3x3 convolutions where the released ``networks/vnet_dy.py: VNet_dy`` puts it: in
every convolution of blocks two to eight (block one, the down- and up-sampling convolutions stay ordinary).
DyBAC = spatial squeeze-excitation (``sSE_Module_3D``: 1x1x1 conv C -> C/16, 1x1x1 conv -> 1, BatchNorm, sigmoid;
the input is multiplied by the map) then a dynamic convolution (``Dynamic_conv3d``): K = 4 depthwise k^3
kernels per channel mixed by an input-dependent attention softmax(fc2(ReLU(fc1(GAP(x)))) / T), T = 34, followed
by a 1x1x1 pointwise convolution C -> C_out (with bias). Each sample gets its own mixed kernel (one grouped
convolution over the whole batch). The network keeps this companion's V-Net layout (InstanceNorm, no block
nine, no finest skip, Dropout3d where the UA-MT V-Net has it) and its prompted head
(:class:`~versemi.model.PromptedHeadMixin`): ``head="none"`` for a task-specific run, ``head="dynamic"`` for
the task-unified Uni-ASE-Net. The discriminators follow ``networks/discriminator.py: Discriminator_3D``.
The evaluated network is the student ``net`` (``test_LA_our.py`` loads a student ``VNet_dy`` checkpoint).

Decisions (where the released code is ambiguous, broken, or cannot apply as written):

* The 3D script trains a plain ``VNet``; its own test script and the paper use the dynamic-convolution
  ``VNet_dy`` (``vnet_dy.py``; ``vnet_dy_v2.py`` keeps the second convolution of each block ordinary and is not
  used by any script). We follow ``vnet_dy.py``.
* The 3D script imports ``FC3DDiscriminator``, which is not in the repository (nor ``dataloaders.la_heart``
  and ``test_util_1``). We use the 3D discriminator the repository ships, ``Discriminator_3D`` (the same
  layout with DyBAC blocks, 3x3x3 kernels and adaptive average pooling, so any patch size works), ndf = 64.
* The released network has one sigmoid output (``n_classes=num_classes-1``); ours has two softmax classes.
  Discriminators get the foreground probability (softmax channel 1 = sigmoid of the logit difference), one
  channel as in 3D. With one channel the released ``softmax_mse_loss_three`` is a softmax over a single
  channel, identically 1, so the released 3D consistency is zero; we compute it on the two-class softmax, as
  the function (and the 2D script) intends.
* The released supervised Dice is computed on the no-gradient eval-mode pass of the discriminator step, so
  only the BCE term trains; we use 0.5 (CE + Dice) with gradient on the training pass (as the 2D script and
  the paper). Dice is the squared-denominator batch soft Dice (``utils/losses.py: dice_loss``).
* Learning rates: the 3D script builds Adam(1e-3, betas (0.9, 0.99)) for the segmenter and both
  discriminators, but its step decay sets lr = base_lr x 0.1^(iter // 2500) with base_lr = 0.01 at
  iterations 2,500 and 5,000: 1e-3 (unchanged) then 1e-4 for the last 1,000 of 6,000 iterations. We keep
  that shape as fractions of the run (``lr_decay_fraction`` = 2500/6000, :meth:`ASENet.lr_at`): the run's lr
  until 5/6 of the steps, a tenth of it after. Discriminators: constant ``d_lr`` = 1e-3 (the unused
  ``--D_lr`` 1e-4 argument is ignored, as released).
* The dynamic convolution's temperature is 34 and never annealed (``update_temperature`` is never called;
  the README's ``--temperature 0.1`` is an argument the 3D script does not have). Kernels are initialised
  from N(0, 1) as released.
* sSE hidden width: released ``C // 16`` is 0 for C < 16 (the CPU profiles' widths 4 and 8); we use
  ``max(1, C // 16)``, which equals the released value at the paper width (16).
* Batch: the released script uses 1 labeled + 1 unlabeled sample; the companion's runs need at least 2
  labeled samples, so the paper profile uses 2 + 2 (the same 1:1 ratio).
* The discriminators are task-agnostic (not prompted) in the Uni- variant: they judge a probability map and
  its image, whatever the task; the segmenter and the teacher are prompted by each sample's task.
* The consistency ramp uses the step itself instead of ``iter // 150`` (the same sigmoid ramp without the
  150-iteration staircase), reaching full weight at the end of the run (40 x 150 = 6,000 iterations).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from versemi.losses import supervised_loss
from versemi.model import VerSemiNet

from .base import NUM_TASKS, Method, StepContext, build_optimizer, frozen_copy, register
from .mean_teacher import noisy, ramp_weight

# networks/vnet_dy.py: Dynamic_conv3d defaults
DY_KERNELS = 4
DY_TEMPERATURE = 34.0
DY_RATIO = 0.25
# train_ASE-Net_3D.py: Adam betas of the segmenter and the discriminators
ADAM_BETAS = (0.9, 0.99)


# ----------------------------------------------------------------------------------------------- DyBAC
class SpatialSE3d(nn.Module):
    """Spatial squeeze-excitation (``sSE_Module_3D``): x * sigmoid(BN(conv(conv(x)))) with 1x1x1 convs
    C -> max(1, C // 16) -> 1; the map (B, 1, D, H, W) is shared by all channels."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(1, channels // 16)
        self.excite = nn.Sequential(nn.Conv3d(channels, hidden, 1), nn.Conv3d(hidden, 1, 1),
                                    nn.BatchNorm3d(1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.excite(x)


class DynamicConv3d(nn.Module):
    """Dynamic depthwise convolution then a pointwise one (``Dynamic_conv3d`` of ``vnet_dy.py``).

    ``weight`` (K, C, 1, k, k, k) holds K depthwise kernels per channel. For an input x (B, C, D, H, W) the
    attention a = softmax(fc2(ReLU(fc1(GAP(x)))) / temperature) (B, K) mixes them into one kernel per sample,
    sum_k a_bk weight_k, applied with stride/padding (one grouped convolution over the batch), and a 1x1x1
    convolution C -> C_out (with bias) follows. fc1: C -> int(C ratio) + 1 (K when C == 3), fc2: -> K, both
    1x1x1 without bias.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1, padding: int = 1,
                 kernels: int = DY_KERNELS, temperature: float = DY_TEMPERATURE, ratio: float = DY_RATIO):
        super().__init__()
        self.c_in, self.c_out, self.k, self.stride, self.padding = c_in, c_out, kernel_size, stride, padding
        self.kernels, self.temperature = kernels, float(temperature)
        hidden = kernels if c_in == 3 else int(c_in * ratio) + 1
        self.attention = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Conv3d(c_in, hidden, 1, bias=False),
                                       nn.ReLU(inplace=True), nn.Conv3d(hidden, kernels, 1, bias=False))
        self.weight = nn.Parameter(torch.randn(kernels, c_in, 1, kernel_size, kernel_size, kernel_size))
        self.pointwise = nn.Conv3d(c_in, c_out, 1)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K) kernel attention of each sample (rows sum to 1)."""
        return torch.softmax(self.attention(x).flatten(1) / self.temperature, dim=1)

    def depthwise(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """The depthwise convolution of each sample with its kernel mix ``attn`` (B, K): (B, C, D', H', W')."""
        b, c = x.shape[:2]
        mixed = (attn.to(self.weight.dtype) @ self.weight.reshape(self.kernels, -1))
        w = mixed.reshape(b * c, 1, self.k, self.k, self.k).to(x.dtype)
        out = F.conv3d(x.reshape(1, b * c, *x.shape[2:]), w, stride=self.stride, padding=self.padding, groups=b * c)
        return out.reshape(b, c, *out.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x, self.attend(x)))


class DyBAC3d(nn.Sequential):
    """DyBAC as the released segmenter uses it (``vnet_dy.py: DYBAC_3D``): spatial SE then the dynamic
    convolution; the normalisation and ReLU of the surrounding stage follow it."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1, padding: int = 1,
                 kernels: int = DY_KERNELS, temperature: float = DY_TEMPERATURE):
        super().__init__(SpatialSE3d(c_in),
                         DynamicConv3d(c_in, c_out, kernel_size, stride, padding, kernels, temperature))


class DyConvStage(nn.Sequential):
    """``n`` x (DyBAC 3x3x3 -> InstanceNorm3d -> ReLU): :class:`~versemi.model.ConvStage` with DyBAC in place
    of each convolution (``vnet_dy.py: ConvBlock``); indices 0, 3, 6 hold the DyBACs."""

    def __init__(self, n_convs: int, c_in: int, c_out: int, kernels: int = DY_KERNELS,
                 temperature: float = DY_TEMPERATURE):
        layers = []
        for i in range(n_convs):
            layers += [DyBAC3d(c_in if i == 0 else c_out, c_out, kernels=kernels, temperature=temperature),
                       nn.InstanceNorm3d(c_out), nn.ReLU(inplace=True)]
        super().__init__()
        self.conv = nn.Sequential(*layers)


class DyVNet(VerSemiNet):
    """The companion's prompted V-Net (:class:`~versemi.model.VerSemiNet`: same encoder/decoder layout,
    down/up-sampling, dropout and prompted head) with DyBAC stages in blocks two to eight, where the released
    ``VNet_dy`` has them; block one stays an ordinary convolution stage. ``forward(x, task_ids)`` -> logits
    (B, 2, D, H, W)."""

    DYNAMIC_BLOCKS = {"block_two": 2, "block_three": 3, "block_four": 3, "block_five": 3,
                      "block_six": 3, "block_seven": 3, "block_eight": 2}
    WIDTH = {"block_two": 2, "block_three": 4, "block_four": 8, "block_five": 16,
             "block_six": 8, "block_seven": 4, "block_eight": 2}

    def __init__(self, in_channels: int = 1, n_filters: int = 16, num_tasks: int = NUM_TASKS,
                 head: str = "dynamic", dropout: float = 0.0, kernels: int = DY_KERNELS,
                 temperature: float = DY_TEMPERATURE):
        super().__init__(in_channels=in_channels, n_filters=n_filters, num_tasks=num_tasks, head=head,
                         dropout=dropout)
        for name, n in self.DYNAMIC_BLOCKS.items():
            c = self.WIDTH[name] * n_filters
            setattr(self, name, DyConvStage(n, c, c, kernels, temperature))


# ------------------------------------------------------------------------------------------- discriminator
class Discriminator3d(nn.Module):
    """``networks/discriminator.py: Discriminator_3D``: map and image each go through a 3x3x3 stride-2 conv
    to ``ndf`` channels, are added, then LeakyReLU(0.2) + Dropout3d(0.5); three DyBAC blocks (spatial SE,
    stride-2 dynamic convolution, BatchNorm, ReLU) to 2, 4, 8 ndf channels, each followed by LeakyReLU(0.2)
    (and Dropout3d(0.5) but the last); global average pooling; a linear layer to two logits (B, 2)
    (class 1 = real)."""

    def __init__(self, map_channels: int = 1, image_channels: int = 1, ndf: int = 64):
        super().__init__()
        self.conv0 = nn.Conv3d(map_channels, ndf, 3, stride=2, padding=1)
        self.conv1 = nn.Conv3d(image_channels, ndf, 3, stride=2, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(SpatialSE3d(c), DynamicConv3d(c, 2 * c, 3, stride=2, padding=1),
                          nn.BatchNorm3d(2 * c), nn.ReLU(inplace=True))
            for c in (ndf, 2 * ndf, 4 * ndf))
        self.classifier = nn.Linear(8 * ndf, 2)

    def forward(self, prob_map: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv0(prob_map) + self.conv1(image), 0.2)
        x = F.dropout3d(x, 0.5, training=self.training)
        for i, block in enumerate(self.blocks):
            x = F.leaky_relu(block(x), 0.2)
            if i < len(self.blocks) - 1:
                x = F.dropout3d(x, 0.5, training=self.training)
        return self.classifier(x.mean(dim=(2, 3, 4)))


# ------------------------------------------------------------------------------------------------ losses
def foreground_map(logits: torch.Tensor) -> torch.Tensor:
    """(B, 2, ...) logits -> (B, 1, ...) softmax foreground probability (what a discriminator sees)."""
    return torch.softmax(logits, 1)[:, 1:2]


def disc_ce(disc: nn.Module, prob_map: torch.Tensor, image: torch.Tensor, real: bool) -> torch.Tensor:
    """Cross-entropy of the discriminator's two logits against the class ``real`` (1) or fake (0)."""
    logits = disc(prob_map, image)
    target = torch.full((logits.shape[0],), int(real), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), target)


def discriminator_loss(disc: nn.Module, real_map, real_image, fake_map, fake_image) -> torch.Tensor:
    """0.5 [CE(D(real), 1) + CE(D(fake), 0)] (``DAN_loss`` of the released scripts)."""
    return 0.5 * (disc_ce(disc, real_map, real_image, True) + disc_ce(disc, fake_map, fake_image, False))


def three_way_consistency(logits_s: torch.Tensor, logits_n: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
    """``softmax_mse_loss_three`` averaged: mean of [(p_s - p_t)^2 + (p_n - p_t)^2 + (p_s - p_n)^2] / 3 over
    every voxel, class and sample; p = softmax over the two classes. The target ``logits_t`` is detached."""
    p_s, p_n = torch.softmax(logits_s, 1), torch.softmax(logits_n, 1)
    p_t = torch.softmax(logits_t.detach(), 1)
    return (((p_s - p_t) ** 2 + (p_n - p_t) ** 2 + (p_s - p_n) ** 2) / 3).mean()


# ------------------------------------------------------------------------------------------------ method
@register
class ASENet(Method):
    """Options: ``consistency`` (weight w of adv + cons at full ramp; 1.0 as the 3D script's
    ``--consistency``), ``rampup_fraction`` (fraction of the run over which w ramps up: 40 x 150 / 6000),
    ``sup_weight`` (0.5), ``d_lr`` (discriminators' Adam learning rate), ``ndf`` (discriminator width),
    ``lr_decay_fraction`` (segmenter lr / 10 after twice this fraction of the run, see the module docstring),
    ``kernels`` / ``temperature`` (dynamic convolution)."""

    name = "ase_net"
    display_name = "ASE-Net"
    uses_unlabeled = True
    uses_teacher = True
    DISCRIMINATORS = ("disc_lu", "disc_tn")
    default_options = {"consistency": 1.0, "rampup_fraction": 1.0, "sup_weight": 0.5, "d_lr": 1e-3, "ndf": 64,
                       "lr_decay_fraction": 2500 / 6000, "kernels": DY_KERNELS, "temperature": DY_TEMPERATURE}
    config_defaults = {"dropout": 0.5}   # VNet(..., has_dropout=True) in train_ASE-Net_3D.py: create_model
    # ASE-NET/code/train_ASE-Net_3D.py (argparse defaults, lines 32-68; VNet(has_dropout=True), line 123;
    # optimisers, lines 162-169): Adam 1e-3 betas (0.9, 0.99), no weight decay, 6,000 iterations, batch 2 =
    # 1 labeled + 1 unlabeled (here 2 + 2: the companion needs >= 2 labeled samples); the lr step
    # (lines 337-340) is ASENet.lr_at
    paper_source = 'SUST-reynole/ASE-Net ASE-NET/code/train_ASE-Net_3D.py lines 32-68 (argparse defaults), 123 (dropout), 162-169 (optimisers), 337-340 (lr step)'
    paper_settings = dict(optimizer="adam", lr=1e-3, betas=ADAM_BETAS, weight_decay=0.0, lr_step=0,
                          batch_size=2, unlabeled_batch_size=2, steps=6000, dropout=0.5)

    # ------------------------------------------------------------------ networks and optimisers
    def build_networks(self, cfg):
        o = self.options
        net = DyVNet(in_channels=1, n_filters=cfg.n_filters, num_tasks=NUM_TASKS, head=cfg.head,
                     dropout=cfg.dropout, kernels=o["kernels"], temperature=o["temperature"])
        nets: dict[str, nn.Module] = {"net": net, "teacher": frozen_copy(net)}
        for name in self.DISCRIMINATORS:
            nets[name] = Discriminator3d(ndf=o["ndf"])
        return nets

    def build_optimizers(self, cfg, nets):
        opts = {"net": build_optimizer(cfg, nets["net"].parameters())}
        for name in self.DISCRIMINATORS:
            opts[name] = torch.optim.Adam(nets[name].parameters(), lr=self.options["d_lr"], betas=ADAM_BETAS)
        return opts

    def lr_at(self, cfg, optimizer: str, step: int) -> float:
        """Discriminators: constant ``d_lr``. Segmenter: ``cfg.lr`` x 0.1^max(0, step // every - 1), every =
        ``lr_decay_fraction`` of the run (released: base_lr 0.01 x 0.1^(iter // 2500) set at iterations 2,500
        and 5,000 on an optimiser built with 1e-3, i.e. 1e-3 until iteration 5,000, then 1e-4)."""
        if optimizer in self.DISCRIMINATORS:
            return self.options["d_lr"]
        every = max(1, round(self.options["lr_decay_fraction"] * cfg.steps))
        return cfg.lr * 0.1 ** max(0, step // every - 1)

    # ------------------------------------------------------------------ one step
    def noisy_unlabeled(self, ctx: StepContext, unlab: dict) -> torch.Tensor:
        """The unlabeled images + N(0, 0.1) noise clipped to +-0.2 (one draw per step, from ``ctx.rng``)."""
        g = torch.Generator().manual_seed(int(ctx.rng.integers(2**62)))
        return noisy(unlab["image"], g)

    def discriminator_step(self, ctx: StepContext, lab: dict, unlab: dict, xu_noisy: torch.Tensor) -> dict:
        """Update both discriminators on no-gradient predictions (student in eval mode, teacher in train mode,
        as released). Returns their losses (detached)."""
        net, teacher = ctx.net, ctx.teacher
        d_lu, d_tn = ctx.nets["disc_lu"], ctx.nets["disc_tn"]
        xl, tl, xu, tu = lab["image"], lab["task"], unlab["image"], unlab["task"]
        b = xl.shape[0]
        net.eval()
        teacher.train()
        d_lu.train()
        d_tn.train()
        with torch.no_grad(), ctx.autocast():
            p_all = foreground_map(net(torch.cat([xl, xu]), torch.cat([tl, tu]))).float()
            p_noisy = foreground_map(net(xu_noisy, tu)).float()
            p_teacher = foreground_map(teacher(xu, tu)).float()
        net.train()
        with ctx.autocast():
            loss_lu = discriminator_loss(d_lu, p_all[:b], xl, p_all[b:], xu)
        ctx.update({"loss": loss_lu}, "disc_lu")
        with ctx.autocast():
            loss_tn = discriminator_loss(d_tn, p_teacher, xu, p_noisy, xu)
        ctx.update({"loss": loss_tn}, "disc_tn")
        return {"d_lu": loss_lu.detach(), "d_tn": loss_tn.detach()}

    def segmenter_losses(self, ctx: StepContext, lab: dict, unlab: dict, xu_noisy: torch.Tensor) -> dict:
        """The segmenter's loss terms (with gradient; discriminators in eval mode). Keys: loss, sup, cons,
        adv_lu, adv_tn, adv, cons_weight."""
        o = self.options
        net, teacher = ctx.net, ctx.teacher
        d_lu, d_tn = ctx.nets["disc_lu"], ctx.nets["disc_tn"]
        xl, yl, tl, xu, tu = lab["image"], lab["label"], lab["task"], unlab["image"], unlab["task"]
        b = xl.shape[0]
        net.train()
        teacher.train()
        d_lu.eval()
        d_tn.eval()
        logits = net(torch.cat([xl, xu]), torch.cat([tl, tu]))
        logits_u = logits[b:]
        logits_noisy = net(xu_noisy, tu)
        with torch.no_grad():
            logits_teacher = teacher(xu_noisy, tu)
        sup = o["sup_weight"] * supervised_loss(logits[:b], yl)
        cons = three_way_consistency(logits_u, logits_noisy, logits_teacher)
        adv_lu = disc_ce(d_lu, foreground_map(logits_u), xu, True)       # look labeled
        adv_tn = disc_ce(d_tn, foreground_map(logits_noisy), xu, True)   # look like the teacher
        adv = 0.5 * (adv_lu + adv_tn)
        w = ramp_weight(ctx, o["consistency"], o["rampup_fraction"])
        return {"loss": sup + w * (adv + cons), "sup": sup, "cons": cons, "adv_lu": adv_lu, "adv_tn": adv_tn,
                "adv": adv, "cons_weight": torch.tensor(w)}

    def train_step(self, ctx: StepContext, lab: dict, unlab: dict):
        xu_noisy = self.noisy_unlabeled(ctx, unlab)
        d_out = self.discriminator_step(ctx, lab, unlab, xu_noisy)
        discs = [ctx.nets[n] for n in self.DISCRIMINATORS]
        for d in discs:
            d.requires_grad_(False)
        try:
            with ctx.autocast():
                out = self.segmenter_losses(ctx, lab, unlab, xu_noisy)
            ctx.update(out, "net")
        finally:
            for d in discs:
                d.requires_grad_(True)
                d.train()
        return {**{k: v.detach() for k, v in out.items()}, **d_out}
