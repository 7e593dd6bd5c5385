"""UniSeg (Ye et al., MICCAI 2023): a prompt-driven universal segmentation model, after the released
repository yeerwen/UniSeg (commit e3ae40d), on this companion's V-Net.

It is *fully supervised*: one network is trained on the labeled cases of all the run's datasets at once
(no unlabeled data), and the task is told to the network by a learned prompt at the bottleneck.

Network (:class:`UniSegNet`; ``Upstream/nnunet/network_architecture/Prompt_generic_UNet.py``,
``UniSeg_model.__init__`` lines 226-234 and ``forward`` lines 306-338):

* the V-Net encoder of :class:`~versemi.model.VerSemiNet` (``ConvStage`` / ``Resample``, same parameter
  names) gives the bottleneck ``x5`` (B, C, d, h, w), C = 16f, (d, h, w) = input size / 16;
* the **universal prompt** is one learnable tensor (1, T, d0, h0, w0) shared by all tasks, T = number of
  tasks (4) and (d0, h0, w0) the bottleneck size of the training patch (``cfg.patch`` / 16), initialised
  from N(0, 1) (released: ``intermedia_prompt = randn(1, T, P0/16, P1/32, P2/32)``, whose nnU-Net pools
  4/5/5 times; this V-Net pools 4 times on every axis);
* the **prompt generator** (released ``fusion_layer`` = ``StackedFusionConvLayers`` lines 11-79): the
  prompt, repeated over the batch, is concatenated *after* the bottleneck channels, (B, C + T, d, h, w), and
  three 3x3x3 conv -> InstanceNorm3d (affine) -> LeakyReLU(0.01) blocks map C + T -> (C + T) // 4 ->
  (C + T) // 4 -> T channels: one image-conditioned **task-specific prompt** per task, (B, T, d, h, w);
* the prompt of the sample's task (channel ``task - 1``) is concatenated after the bottleneck,
  (B, C + 1, d, h, w), and this fused bottleneck is what the decoder decodes: the V-Net decoder of
  :func:`versemi.model.build_decoder` / :func:`~versemi.model.decode`, whose first up-step takes C + 1
  channels;
* output: the static head of :class:`~versemi.model.VerSemiNet` with ``head="none"`` (``precls_conv`` =
  BatchNorm + ReLU + 1x1x1 conv f -> 8, then one 180-parameter 8->8->8->2 head shared by all tasks), so
  that UniSeg differs from the companion's prompt-free network only where UniSeg puts its task knowledge.
  Logits (B, 2, D, H, W), channel 1 = foreground; the evaluated output is that full-resolution output
  (the released validation/inference turns deep supervision off, ``UniSeg_Trainer.validate``).

Loss (``Upstream/nnunet/training/loss_functions/dice_loss.py``: ``SoftDiceLoss`` lines 156-192,
``DC_and_CE_loss`` lines 302-359, as ``nnUNetTrainer.py`` line 109 builds it): CE + soft Dice over the
whole batch (``batch_dice=True``), foreground only (``do_bg=False``), denominators 2 tp + fp + fn (not
squared), smooth 1e-5 (:func:`nnunet_dice_ce`).

Training (``Upstream/nnunet/training/network_training/UniSeg_Trainer.py`` ``run_iteration`` lines
163-221 and ``nnUNetTrainerV2.py``): one supervised step per batch; gradients clipped to a total norm of
12 (line 210); SGD lr 0.01, momentum 0.99, Nesterov, weight decay 3e-5 (``nnUNetTrainerV2.py`` lines 49,
170-174; ``nnUNetTrainer.py`` line 128); poly learning rate ``lr0 (1 - epoch / 1000) ** 0.9`` updated
once per epoch (``nnUNetTrainerV2.maybe_update_lr``, lines 399-413; ``poly_lr.py``), here
:meth:`UniSeg.lr_at` with the run's steps cut into ``poly_epochs`` = 1000 equal "epochs", in every profile
(BCP's convention: the CPU profiles' short runs keep the released shape; ``poly_exponent=0`` gives a
constant rate).

Where this port had to decide (the book's reproducibility chapter):

1. Per-sample task prompts. The released forward selects the prompt of ``task_id[0]`` for the whole batch
   (``index_select`` line 322), which is right only because its sampler draws every batch from one task
   (``dataset_loading.py`` ``DataLoader3D_UniSeg.generate_train_batch``, 50 batches per task per epoch).
   This companion's batches mix tasks, so each sample gets the prompt of its own task; for a one-task batch
   this is the released selection (tested).
2. Deep supervision left out. nnU-Net's trainer adds a 1x1x1 output at every decoder scale and weights
   their losses 1, 1/2, 1/4, ... (``UniSeg_Trainer.initialize`` lines 108-122). It is the generic
   nnU-Net training device (every nnU-Net trainer has it), not UniSeg's contribution; the V-Net decoder of
   this companion (:func:`~versemi.model.decode`, reused as the brief asks) has no per-scale outputs, and
   every other method here trains the full-resolution output only, so the comparison isolates the prompt.
3. The head is model.py's static ``head="none"`` head, not the released bias-free 1x1x1 conv: UniSeg's
   conditioning is its prompt (a dynamic head would condition twice), and with the companion's own static
   head UniSeg is exactly the companion's prompt-free network plus UniSeg's prompt.
4. Backbone blocks keep the V-Net's InstanceNorm (no affine) + ReLU and PyTorch's default initialisation;
   only the prompt generator follows nnU-Net's conv -> InstanceNorm(affine) -> LeakyReLU(0.01) blocks
   (``ConvDropoutNormNonlin``; dropout p = 0 as ``UniSeg_Trainer.initialize_network`` line 75), also with
   PyTorch's default initialisation instead of ``InitWeights_He(1e-2)``.
5. Inputs of another size than the training patch: the released prompt has the bottleneck size of the
   training patch and nnU-Net only ever runs patch-sized windows. Here the prompt is resized trilinearly
   (``align_corners=False``) to the bottleneck of any other input (e.g. a 32^3 probe of the 96^3 paper
   network); at the training patch it is used as is.
6. Dice reported as 1 - Dice: the released loss is CE - Dice (it goes negative); 1 - Dice has the same
   gradient and keeps the logged loss positive.
7. One dataset is refused (:meth:`UniSeg.check_config`, a :class:`~versemi.utils.VersemiError` naming
   the method): UniSeg is universal by design and the paper has no task-specific variant; with one task
   the prompt generator's output would always be read at the same channel, i.e. the prompt would carry no
   task information, and the run would be the prompt-free network with nnU-Net's loss and schedule.
8. ``head`` of the run config: ``"dynamic"`` (the default of a run on several datasets) is UniSeg with its
   prompt; ``"none"`` removes the prompt (an ablation: the prompt-free network, task ids ignored);
   ``"multi"`` (per-task static heads) has no UniSeg meaning and is refused.

``paper_settings`` cannot express (listed, not reproduced): nnU-Net's data augmentation (``moreDA``:
rotation, scaling, elastic deformation, gamma, mirroring), its foreground oversampling (a third of each
batch centred on foreground; the companion's ``pos_fraction`` also centres the rest on background, which
nnU-Net does not, so it is left at uniform crops), its 64 x 192 x 192 patch at its own spacing (the
companion's 96^3 is kept for all methods), fp16 mixed precision (the paper profile trains in fp32),
mirrored test-time augmentation and Gaussian-weighted windows, and the momentum drop to 0.95 with
re-initialisation when the validation Dice is 0 at epoch 100 (``nnUNetTrainerV2.on_epoch_end``).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from versemi.model import (
    PromptedHeadMixin,
    Resample,
    apply_dynamic_head,
    build_decoder,
    build_encoder,
    build_prompted_head,
    decode,
)
from versemi.model import encode as encode_vnet
from versemi.utils import VersemiError

from .base import NUM_TASKS, Method, StepContext, build_optimizer, poly_lr, register

DOWNSAMPLE = 16      # the V-Net's four 2x down-steps: bottleneck size = input size / 16
DICE_SMOOTH = 1e-5   # nnUNetTrainer: SoftDiceLoss(smooth=1e-5)


def nnunet_dice_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """nnU-Net v1's ``DC_and_CE_loss`` for two classes, as UniSeg trains with it (``batch_dice=True``,
    ``do_bg=False``, smooth 1e-5), reported as CE + (1 - Dice).

    logits (B, 2, D, H, W); y (B, D, H, W) in {0, 1}. With p the foreground softmax, tp = sum(p y),
    fp = sum(p (1 - y)), fn = sum((1 - p) y) over the whole batch:
    Dice = (2 tp + 1e-5) / (2 tp + fp + fn + 1e-5 + 1e-8); CE = mean voxel cross-entropy.
    """
    y = y.long()
    p = torch.softmax(logits, 1)[:, 1]
    t = y.to(p.dtype)
    tp = (p * t).sum()
    fp = (p * (1 - t)).sum()
    fn = ((1 - p) * t).sum()
    dice = (2 * tp + DICE_SMOOTH) / (2 * tp + fp + fn + DICE_SMOOTH + 1e-8)
    return F.cross_entropy(logits, y) + (1 - dice)


class PromptGenerator(nn.Sequential):
    """The released ``fusion_layer`` (``StackedFusionConvLayers`` with three blocks): (B, c_in, d, h, w)
    -> (B, n_out, d, h, w) through c_in -> c_in // 4 -> c_in // 4 -> n_out, each block a 3x3x3 conv ->
    InstanceNorm3d(affine) -> LeakyReLU(0.01)."""

    def __init__(self, c_in: int, n_out: int, n_blocks: int = 3):
        hidden = c_in // 4
        widths = [c_in] + [hidden] * (n_blocks - 1) + [n_out]
        blocks = OrderedDict()
        for i in range(n_blocks):
            blocks[f"block{i}"] = nn.Sequential(nn.Conv3d(widths[i], widths[i + 1], 3, padding=1),
                                                nn.InstanceNorm3d(widths[i + 1], affine=True),
                                                nn.LeakyReLU(0.01, inplace=True))
        super().__init__(blocks)
        self.hidden = hidden


class UniSegNet(nn.Module):
    """The V-Net with UniSeg's universal prompt at the bottleneck (module docstring).

    Args:
        in_channels: image channels (1).
        n_filters: base width f; the bottleneck has C = 16f channels.
        num_tasks: T, the number of task prompts (task ids 1..T; UniSeg has no synthetic prompt).
        patch: the training patch (D, H, W); the universal prompt is (1, T, D/16, H/16, W/16).
        head: ``"dynamic"`` UniSeg with its prompt; ``"none"`` no prompt (task ids checked, then ignored).
        dropout: Dropout3d probability in training at the V-Net's two places (:func:`versemi.model.decode`;
            0 as released).

    ``net(x, task_ids)`` -> logits (B, 2, D, H, W); ``task_ids`` an int, a list or a (B,) tensor in 1..T.
    Input sizes must be divisible by 16 and at least 32 on every axis.
    """

    def __init__(self, in_channels: int = 1, n_filters: int = 16, num_tasks: int = NUM_TASKS,
                 patch: tuple[int, int, int] = (96, 96, 96), head: str = "dynamic", dropout: float = 0.0):
        super().__init__()
        if head not in ("dynamic", "none"):
            raise VersemiError(f"UniSeg: head must be 'dynamic' (with the universal prompt) or 'none' (no "
                               f"prompt), got {head!r}; UniSeg has no per-task static heads ('multi')")
        patch = tuple(int(v) for v in patch)
        if len(patch) != 3 or any(v < 32 or v % DOWNSAMPLE for v in patch):
            raise VersemiError(f"UniSeg: patch must be three sizes divisible by 16 and >= 32, got {patch}")
        if num_tasks < 1 or n_filters < 1 or in_channels < 1:
            raise ValueError("in_channels, n_filters and num_tasks must be positive")
        f = n_filters
        self.in_channels, self.n_filters, self.num_tasks, self.head_kind = in_channels, f, num_tasks, head
        self.num_prompts = num_tasks          # the evaluator checks task ids against this
        self.patch, self.dropout_p = patch, float(dropout)
        self.prompted = head == "dynamic"

        build_encoder(self, in_channels, f)
        build_decoder(self, f)
        if self.prompted:
            self.universal_prompt = nn.Parameter(torch.randn(1, num_tasks, *(v // DOWNSAMPLE for v in patch)))
            self.fusion_layer = PromptGenerator(16 * f + num_tasks, num_tasks)
            self.block_five_up = Resample(16 * f + 1, 8 * f, up=True)   # decodes the fused bottleneck
        build_prompted_head(self, f, num_tasks + 1, "none")   # precls_conv + one static head

    # ------------------------------------------------------------------ pieces
    def encode_task(self, task_ids, batch: int, device) -> torch.Tensor:
        """(B,) long task ids, checked to lie in 1..T (int, list or tensor; one id is broadcast)."""
        return PromptedHeadMixin.encode_task(self, task_ids, batch, device)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """Bottleneck x5 (B, 16f, D/16, H/16, W/16) and the skips (x4, x3, x2) of input x (B, C, D, H, W)."""
        return encode_vnet(self, x)

    def universal_at(self, size) -> torch.Tensor:
        """The universal prompt (1, T, *size): as learned at the training patch's bottleneck size, resized
        trilinearly for any other bottleneck size (decision 5)."""
        p = self.universal_prompt
        if tuple(p.shape[2:]) != tuple(size):
            p = F.interpolate(p, size=tuple(size), mode="trilinear", align_corners=False)
        return p

    def task_prompts(self, x5: torch.Tensor) -> torch.Tensor:
        """The prompt generator: [x5, universal prompt] (B, 16f + T, ...) -> task prompts (B, T, d, h, w)."""
        up = self.universal_at(x5.shape[2:]).to(x5.dtype).expand(x5.shape[0], -1, -1, -1, -1)
        return self.fusion_layer(torch.cat([x5, up], 1))

    @staticmethod
    def select(prompts: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The prompt of each sample's task: prompts (B, T, ...) and task (B,) in 1..T -> (B, 1, ...)."""
        return prompts[torch.arange(prompts.shape[0], device=prompts.device), task - 1].unsqueeze(1)

    def decode_and_head(self, fused: torch.Tensor, skips: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decoder output (B, f, D, H, W), pre-classifier output (B, 8, ...) and logits (B, 2, ...) of a
        (fused) bottleneck."""
        dec = decode(self, fused, skips, self.dropout_p)
        pre = self.precls_conv(dec)
        return dec, pre, apply_dynamic_head(pre, self.static_heads.expand(pre.shape[0], -1))

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, task_ids, return_features: bool = False):
        """Logits (B, 2, D, H, W) for x (B, C, D, H, W) and task ids (B,) in 1..T.

        With ``return_features=True`` returns ``(logits, features)``: ``global`` (B, 16f) (GAP of the
        bottleneck), ``bottleneck`` (B, 16f, d, h, w), ``decoder`` (B, f, D, H, W), ``prehead``
        (B, 8, D, H, W) and, with the prompt, ``task_prompts`` (B, T, d, h, w), ``task_prompt``
        (B, 1, d, h, w) and ``fused`` (B, 16f + 1, d, h, w), the bottleneck the decoder sees.
        """
        t = self.encode_task(task_ids, x.shape[0], x.device)
        x5, skips = self.encode(x)
        feats: dict[str, torch.Tensor] = {}
        if self.prompted:
            prompts = self.task_prompts(x5)
            chosen = self.select(prompts, t)
            fused = torch.cat([x5, chosen], 1)
            feats.update(task_prompts=prompts, task_prompt=chosen, fused=fused)
        else:
            fused = x5
        dec, pre, logits = self.decode_and_head(fused, skips)
        if not return_features:
            return logits
        feats.update({"global": x5.mean(dim=(2, 3, 4)), "bottleneck": x5, "decoder": dec, "prehead": pre})
        return logits, feats

    def forward_prompts(self, x: torch.Tensor, prompts: list) -> list[torch.Tensor]:
        """Logits for several task-id vectors on one input: the encoder and the prompt generator (both
        task-independent) run once, the decoder and head once per prompt — the same numbers as one full
        forward per prompt (InstanceNorm keeps no statistics; the head's BatchNorm is updated per prompt)."""
        b = x.shape[0]
        ts = [self.encode_task(p, b, x.device) for p in prompts]
        x5, skips = self.encode(x)
        gen = self.task_prompts(x5) if self.prompted else None
        out = []
        for t in ts:
            fused = torch.cat([x5, self.select(gen, t)], 1) if self.prompted else x5
            out.append(self.decode_and_head(fused, skips)[2])
        return out


@register
class UniSeg(Method):
    name = "uniseg"
    display_name = "UniSeg"
    uses_unlabeled = False
    universal = True   # a universal model by design: its run on all datasets is "UniSeg", not "Uni-UniSeg"
    default_options = {"poly_exponent": 0.9, "poly_epochs": 1000, "grad_clip": 12.0, "nesterov": True}
    # Upstream/nnunet/training/network_training/: nnUNetTrainerV2.py lines 49 (initial_lr 1e-2), 170-174
    # (SGD momentum 0.99, Nesterov), 399-413 (poly lr, 1000 epochs); nnUNetTrainer.py line 128 (weight decay
    # 3e-5); UniSeg_Trainer.py lines 34 (1000 epochs) and 40 (50 batches per task and epoch: 50 x 4 tasks x
    # 1000 epochs = 200,000 iterations); experiment_planning/UniSeg_Planner3D.py lines 144-147 (batch 2).
    # No unlabeled data; no dropout (UniSeg_Trainer.py line 75).
    paper_source = 'yeerwen/UniSeg Upstream/nnunet/training/network_training/nnUNetTrainerV2.py lines 49, 170-174, 399-413; nnUNetTrainer.py line 128; UniSeg_Trainer.py lines 34, 40, 75; UniSeg_Planner3D.py lines 144-147'
    paper_settings = dict(optimizer="sgd", lr=0.01, momentum=0.99, weight_decay=3e-5, lr_step=0, batch_size=2,
                          steps=200000, dropout=0.0)

    @classmethod
    def check_config(cls, cfg) -> None:
        """Refuse what UniSeg cannot be: a run on one dataset (no task for the prompt to tell apart) or a
        ``multi`` head (decisions 7 and 8)."""
        if cfg.task_specific:
            raise VersemiError(
                f"method {cls.name!r} ({cls.display_name}) is a universal model trained on several datasets at "
                f"once; got the single dataset {cfg.datasets[0]!r}, on which its task prompt carries no "
                f"information (the paper has no task-specific UniSeg). Train it on several datasets, e.g. "
                f"all four (the default datasets of make_config).")
        if cfg.head not in ("dynamic", "none"):
            raise VersemiError(f"method {cls.name!r} ({cls.display_name}): head must be 'dynamic' (the "
                               f"universal prompt) or 'none' (no prompt), got {cfg.head!r}")

    def build_networks(self, cfg):
        self.check_config(cfg)
        return {"net": UniSegNet(in_channels=1, n_filters=cfg.n_filters, num_tasks=NUM_TASKS, patch=cfg.patch,
                                 head=cfg.head, dropout=cfg.dropout)}

    def build_optimizers(self, cfg, nets):
        """SGD with Nesterov momentum as nnU-Net (``nesterov`` option) when the config asks for SGD; the
        config's optimiser otherwise (Adam in the CPU profiles)."""
        return {"net": build_optimizer(cfg, nets["net"].parameters(), nesterov=self.options["nesterov"])}

    def lr_at(self, cfg, optimizer: str, step: int) -> float:
        """nnU-Net's poly schedule per "epoch" (:func:`~versemi.methods.base.poly_lr`) with the run's steps
        cut into ``poly_epochs`` = 1000 (e = step // 200 in the paper profile's 200,000 steps, as released)."""
        return poly_lr(cfg, step, self.options["poly_epochs"], self.options["poly_exponent"])

    def step(self, ctx: StepContext, lab: dict, unlab: dict | None):
        logits = ctx.net(lab["image"], lab["task"])
        loss = nnunet_dice_ce(logits, lab["label"])
        return {"loss": loss, "sup": loss.detach()}

    def train_step(self, ctx: StepContext, lab: dict, unlab: dict | None):
        """One supervised step with the released gradient clipping (total norm ``grad_clip``, 12;
        ``UniSeg_Trainer.run_iteration`` line 210). The clipped norm is logged as ``grad_norm``."""
        with ctx.autocast():
            out = self.step(ctx, lab, unlab)
        opt = ctx.optimizers["net"]
        params = [p for g in opt.param_groups for p in g["params"]]
        opt.zero_grad(set_to_none=True)
        ctx.backward(out, params)
        clip = self.options["grad_clip"]
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip and clip > 0 else math.inf)
        opt.step()
        out["grad_norm"] = norm.detach()
        return out
