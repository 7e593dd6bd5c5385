"""The task-prompted 3D V-Net of VerSemi.

A V-Net encoder/decoder (InstanceNorm, ReLU, strided-conv down, transposed-conv up, additive skips at
the three middle scales) whose segmentation head is *generated per sample* from a task prompt:

* the bottleneck feature ``x5`` (B, 16f, d, h, w) goes through ``GAP`` = BatchNorm3d + ReLU + global
  average pooling -> a (B, 16f) vector; it is concatenated with the one-hot prompt (B, T+1) and a
  1x1x1 conv (``controller``) maps it to 180 numbers per sample;
* the decoder output (B, f, D, H, W) goes through ``precls_conv`` = BatchNorm3d + ReLU + 1x1x1 conv
  f->8;
* the 180 numbers are the weights and biases of a per-sample head 8->8 (ReLU) 8->8 (ReLU) then two
  parallel 8->2 outputs (the first is the segmentation; the second exists in the authors' network
  and is unused). Split order: weights 64, 64, 16, 16, then biases 8, 8, 2, 2.

Parameter names and shapes follow the authors' released ``vnet_odod_mix.VNet`` so their checkpoints
load with :func:`load_authors_checkpoint`. At ``n_filters=16, num_tasks=4`` the network has
9,484,144 parameters.

Prompts are integers: ``1..num_tasks`` for the datasets (1 pancreas, 2 LA, 3 spleen, 4 lung tumour in
the paper) and ``num_tasks + 1`` for the synthetic task (Task#5).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint as _recompute

HEAD_CHANNELS = 8
NUM_CLASSES = 2
# weights of the per-sample head: 8->8, 8->8, 8->2 (segmentation), 8->2 (unused second output)
HEAD_WEIGHT_NUMS = (HEAD_CHANNELS * HEAD_CHANNELS, HEAD_CHANNELS * HEAD_CHANNELS,
                    HEAD_CHANNELS * NUM_CLASSES, HEAD_CHANNELS * NUM_CLASSES)
HEAD_BIAS_NUMS = (HEAD_CHANNELS, HEAD_CHANNELS, NUM_CLASSES, NUM_CLASSES)
HEAD_PARAMS = sum(HEAD_WEIGHT_NUMS) + sum(HEAD_BIAS_NUMS)  # 180

HeadKind = Literal["dynamic", "multi", "none"]


class ConvStage(nn.Sequential):
    """``n`` x (3x3x3 conv -> InstanceNorm3d -> ReLU); indices 0, 3, 6 hold the convs."""

    def __init__(self, n_convs: int, c_in: int, c_out: int):
        layers = []
        for i in range(n_convs):
            layers += [nn.Conv3d(c_in if i == 0 else c_out, c_out, 3, padding=1),
                       nn.InstanceNorm3d(c_out), nn.ReLU(inplace=True)]
        super().__init__(OrderedDict(conv=nn.Sequential(*layers)))


class Resample(nn.Sequential):
    """2x2x2 stride-2 conv (down) or transposed conv (up) -> InstanceNorm3d -> ReLU."""

    def __init__(self, c_in: int, c_out: int, up: bool):
        conv = (nn.ConvTranspose3d if up else nn.Conv3d)(c_in, c_out, 2, stride=2, padding=0)
        super().__init__(OrderedDict(conv=nn.Sequential(conv, nn.InstanceNorm3d(c_out), nn.ReLU(inplace=True))))


@dataclass
class BackboneOut:
    """What the prompt-independent part of the network computes for a batch.

    bottleneck: (B, 16f, D/16, H/16, W/16) encoder output ``x5``.
    decoder: (B, f, D, H, W) output of the last up-step (input of ``precls_conv``).
    """

    bottleneck: torch.Tensor
    decoder: torch.Tensor
    skips: tuple = ()     # (x4, x3, x2): the encoder features the decoder adds (extra decoders reuse them)


class PromptedHeadMixin:
    """The task-prompted segmentation head (module docstring): ``GAP`` + ``controller`` (dynamic), or
    ``static_heads`` (multi / none), and ``precls_conv``, as attributes of the network that mixes it in
    (so that the parameter names stay the authors'). Built by :func:`build_prompted_head`; a network with
    several decoders gives each extra decoder a :class:`PromptedDecoder` of its own.

    Needs ``self.num_prompts`` and ``self.head_kind``.
    """

    def encode_task(self, task_ids: torch.Tensor | int | list[int], batch: int, device) -> torch.Tensor:
        """Validated 1-D long tensor of prompts (B,), values in 1..num_tasks+1.

        Python ints are checked on the host; a tensor is checked with one device sync (skipped while
        ``torch.compile`` traces, so that the compiled network has no graph break here)."""
        if isinstance(task_ids, int) or (isinstance(task_ids, (list, tuple)) and task_ids
                                         and all(isinstance(v, int) for v in task_ids)):
            values = [task_ids] if isinstance(task_ids, int) else list(task_ids)
            bad = [v for v in values if not 1 <= v <= self.num_prompts]
            if bad:
                raise ValueError(f"task ids must lie in 1..{self.num_prompts}, got {values}")
            t = torch.tensor(values, dtype=torch.long, device=device)
        else:
            t = torch.as_tensor(task_ids, device=device).long().reshape(-1)
            if not torch.compiler.is_compiling() and bool(((t < 1) | (t > self.num_prompts)).any()):
                raise ValueError(f"task ids must lie in 1..{self.num_prompts}, got {t.tolist()}")
        if t.numel() == 1 and batch > 1:
            t = t.expand(batch)
        if t.numel() != batch:
            raise ValueError(f"got {t.numel()} task ids for a batch of {batch}")
        return t

    def global_feature(self, bottleneck: torch.Tensor) -> torch.Tensor:
        """(B, 16f) output of the global branch (BN + ReLU + GAP); dynamic head only."""
        if self.head_kind != "dynamic":
            raise ValueError("the global branch exists only for head='dynamic'")
        return self.GAP(bottleneck).flatten(1)

    def head_params(self, feats: BackboneOut, task_ids: torch.Tensor) -> torch.Tensor:
        """(B, 180) per-sample head parameters for the prompts ``task_ids`` (B,)."""
        if self.head_kind == "dynamic":
            g = self.global_feature(feats.bottleneck)
            onehot = F.one_hot(task_ids - 1, self.num_prompts).to(g.dtype)
            cond = torch.cat([g, onehot], 1)[:, :, None, None, None]
            return self.controller(cond).flatten(1)
        if self.head_kind == "multi":
            return self.static_heads[task_ids - 1]
        return self.static_heads.expand(task_ids.shape[0], -1)

    def head(self, feats: BackboneOut, task_ids, return_second: bool = False):
        """Logits (B, 2, D, H, W) of the prompted head on precomputed backbone features.

        Calling ``head`` several times on one ``backbone`` output is numerically the same as running
        the whole network once per prompt (also for the BatchNorm running statistics, which are
        updated once per call as they would be per full forward).
        """
        b = feats.decoder.shape[0]
        t = self.encode_task(task_ids, b, feats.decoder.device)
        params = self.head_params(feats, t)
        x = self.precls_conv(feats.decoder)   # BatchNorm in training mode: never recomputed
        return _segment(self, lambda a, p: apply_dynamic_head(a, p, return_second=return_second), x, params)

    def heads(self, feats: BackboneOut, prompts: list) -> list[torch.Tensor]:
        """Logits for several prompt vectors on the same backbone features.

        In training mode each prompt runs the pre-classifier again (as a full forward per prompt would:
        BatchNorm running statistics are updated once per prompt); in eval mode the pre-classifier is
        deterministic, so it runs once and only the per-sample heads differ.
        """
        if self.training:
            return [self.head(feats, p) for p in prompts]
        b = feats.decoder.shape[0]
        x = self.precls_conv(feats.decoder)
        return [apply_dynamic_head(x, self.head_params(feats, self.encode_task(p, b, x.device))) for p in prompts]



def build_prompted_head(mod: nn.Module, f: int, num_prompts: int, head: HeadKind) -> None:
    """Create the head's parameters on ``mod`` for decoder width ``f`` and bottleneck width 16f."""
    if head == "dynamic":
        mod.GAP = nn.Sequential(nn.BatchNorm3d(16 * f), nn.ReLU(inplace=True), nn.AdaptiveAvgPool3d(1))
        mod.controller = nn.Conv3d(16 * f + num_prompts, HEAD_PARAMS, kernel_size=1)
    else:
        n_heads = num_prompts if head == "multi" else 1
        mod.static_heads = nn.Parameter(torch.stack([_init_head_params() for _ in range(n_heads)]))
    mod.precls_conv = nn.Sequential(nn.BatchNorm3d(f), nn.ReLU(inplace=True),
                                    nn.Conv3d(f, HEAD_CHANNELS, kernel_size=1))


def build_encoder(mod: nn.Module, in_channels: int, f: int) -> None:
    """Create the V-Net encoder (``block_one`` .. ``block_five`` and the down-steps) on ``mod``."""
    mod.block_one = ConvStage(1, in_channels, f)
    mod.block_one_dw = Resample(f, 2 * f, up=False)
    mod.block_two = ConvStage(2, 2 * f, 2 * f)
    mod.block_two_dw = Resample(2 * f, 4 * f, up=False)
    mod.block_three = ConvStage(3, 4 * f, 4 * f)
    mod.block_three_dw = Resample(4 * f, 8 * f, up=False)
    mod.block_four = ConvStage(3, 8 * f, 8 * f)
    mod.block_four_dw = Resample(8 * f, 16 * f, up=False)
    mod.block_five = ConvStage(3, 16 * f, 16 * f)


def encode(mod: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """The encoder of ``mod`` (:func:`build_encoder`; ``mod.in_channels``): the bottleneck ``x5``
    (B, 16f, D/16, H/16, W/16) and the skips ``(x4, x3, x2)`` of x (B, C, D, H, W), sizes divisible by 16."""
    if x.dim() != 5 or x.shape[1] != mod.in_channels:
        raise ValueError(f"expected input (B, {mod.in_channels}, D, H, W), got {tuple(x.shape)}")
    if any(s % 16 or s < 32 for s in x.shape[2:]):
        raise ValueError(f"spatial size {tuple(x.shape[2:])} must be divisible by 16 and at least 32 "
                         "(four 2x down-steps, and InstanceNorm needs more than one voxel at the bottleneck)")
    x1 = _segment(mod, mod.block_one, x)
    x2 = _segment(mod, lambda a: mod.block_two(mod.block_one_dw(a)), x1)
    x3 = _segment(mod, lambda a: mod.block_three(mod.block_two_dw(a)), x2)
    x4 = _segment(mod, lambda a: mod.block_four(mod.block_three_dw(a)), x3)
    return _segment(mod, lambda a: mod.block_five(mod.block_four_dw(a)), x4), (x4, x3, x2)


def _segment(mod: nn.Module, fn, *xs: torch.Tensor) -> torch.Tensor:
    """``fn(*xs)``; under :func:`set_activation_checkpointing` and while gradients are recorded, without
    keeping ``fn``'s intermediate activations: they are recomputed in the backward pass
    (``torch.utils.checkpoint``, non-reentrant). A segment holds convolutions, InstanceNorm (no running
    statistics) and ReLU only, so the recomputation is exact."""
    if getattr(mod, "checkpoint_stages", False) and torch.is_grad_enabled():
        return _recompute(fn, *xs, use_reentrant=False)
    return fn(*xs)


def set_activation_checkpointing(nets, on: bool = True) -> int:
    """Switch activation checkpointing on or off in every module of ``nets`` (a module or an iterable of
    modules) that has an encoder or decoder (:class:`VerSemiNet`, :class:`PromptedDecoder` and the modules
    that contain them). Each down-step + conv stage of the encoder, each skip-sum + conv stage + up-step of
    the decoder and each training-mode application of the per-sample head (:func:`apply_dynamic_head`; the
    pre-classifier's BatchNorm is not recomputed) is then one segment whose activations are recomputed
    during the backward pass: the step keeps only the segment boundaries (the skips), trading about one
    more forward pass for memory (``bench/memory.py`` measures both). Same losses and gradients as without
    (tested). Returns the number of modules switched."""
    if isinstance(nets, nn.Module):
        nets = [nets]
    n = 0
    for net in nets:
        for m in net.modules():
            if hasattr(m, "block_five") or hasattr(m, "block_six"):
                m.checkpoint_stages = bool(on)
                n += 1
    return n


def build_decoder(mod: nn.Module, f: int, up: str = "transposed") -> None:
    """Create the V-Net decoder (``block_five_up`` .. ``block_eight_up``) on ``mod``.

    ``up``: ``"transposed"`` (the V-Net's 2x2x2 transposed convolutions) or ``"trilinear"`` /
    ``"nearest"`` (:class:`Upsample`: interpolation then a 3x3x3 convolution, the interpolating up-steps of
    MC-Net's ``Upsampling_function``; CauSSL's released decoders put a 1x1x1 convolution before the
    interpolation instead, which ``versemi/methods/caussl.py`` builds on top of this)."""
    mk = (lambda ci, co: Resample(ci, co, up=True)) if up == "transposed" else (lambda ci, co: Upsample(ci, co, up))
    mod.block_five_up = mk(16 * f, 8 * f)
    mod.block_six = ConvStage(3, 8 * f, 8 * f)
    mod.block_six_up = mk(8 * f, 4 * f)
    mod.block_seven = ConvStage(3, 4 * f, 4 * f)
    mod.block_seven_up = mk(4 * f, 2 * f)
    mod.block_eight = ConvStage(2, 2 * f, 2 * f)
    mod.block_eight_up = mk(2 * f, f)


def decode(mod: nn.Module, x5: torch.Tensor, skips: tuple, dropout: float = 0.0) -> torch.Tensor:
    """The decoder of ``mod`` (:func:`build_decoder`) from the bottleneck ``x5`` and the skips
    ``(x4, x3, x2)``: (B, f, D, H, W), the input of the pre-classifier.

    With ``dropout`` > 0 (training only) Dropout3d is applied where the UA-MT V-Net applies it
    (``code/networks/vnet.py`` of yulequan/UA-MT): on the bottleneck after the controller has seen it,
    and on the last decoder features before the classifier."""
    x4, x3, x2 = skips
    drop = mod.training and dropout > 0
    x5_in = F.dropout3d(x5, dropout, training=True) if drop else x5
    x6 = _segment(mod, lambda a, b: mod.block_six(mod.block_five_up(a) + b), x5_in, x4)
    x7 = _segment(mod, lambda a, b: mod.block_seven(mod.block_six_up(a) + b), x6, x3)
    x8 = _segment(mod, lambda a, b: mod.block_eight(mod.block_seven_up(a) + b), x7, x2)
    x8_up = _segment(mod, mod.block_eight_up, x8)  # the finest skip (x1) is not added
    return F.dropout3d(x8_up, dropout, training=True) if drop else x8_up


class Upsample(nn.Sequential):
    """Interpolation x2 (``mode`` trilinear or nearest) -> 3x3x3 conv -> InstanceNorm3d -> ReLU."""

    def __init__(self, c_in: int, c_out: int, mode: str):
        if mode not in ("trilinear", "nearest"):
            raise ValueError(f"unknown up-sampling {mode!r}; expected transposed, trilinear or nearest")
        kw = {"align_corners": False} if mode == "trilinear" else {}
        super().__init__(OrderedDict(conv=nn.Sequential(nn.Upsample(scale_factor=2, mode=mode, **kw),
                                                        nn.Conv3d(c_in, c_out, 3, padding=1),
                                                        nn.InstanceNorm3d(c_out), nn.ReLU(inplace=True))))


class PromptedDecoder(PromptedHeadMixin, nn.Module):
    """An extra decoder with its own prompted head, on the encoder of a :class:`VerSemiNet` (the
    multi-decoder and dual-output networks of the baselines). ``forward(feats, task_ids)`` takes the
    base network's :class:`BackboneOut` and returns logits (B, 2, D, H, W)."""

    def __init__(self, n_filters: int, num_tasks: int, head: HeadKind = "dynamic", up: str = "transposed",
                 dropout: float = 0.0):
        super().__init__()
        self.num_tasks, self.num_prompts, self.head_kind = num_tasks, num_tasks + 1, head
        self.dropout_p = float(dropout)
        build_decoder(self, n_filters, up)
        build_prompted_head(self, n_filters, self.num_prompts, head)

    def features(self, feats: BackboneOut) -> BackboneOut:
        """The base network's features with this decoder's output in place of the base decoder's."""
        return BackboneOut(bottleneck=feats.bottleneck, decoder=decode(self, feats.bottleneck, feats.skips,
                                                                       self.dropout_p), skips=feats.skips)

    def forward(self, feats: BackboneOut, task_ids, return_second: bool = False):
        return self.head(self.features(feats), task_ids, return_second=return_second)


class VerSemiNet(PromptedHeadMixin, nn.Module):
    """Task-prompted V-Net.

    Args:
        in_channels: image channels (1 for CT/MRI).
        n_filters: base width f (16 in the paper).
        num_tasks: number of real tasks T; prompts are 1..T and T+1 (synthetic task).
        head: ``"dynamic"`` (the paper: controller-generated per-sample head), ``"multi"`` (one static
            head per prompt, no controller; ablation) or ``"none"`` (one static head, prompt ignored;
            ablation).
        dropout: Dropout3d probability during training, at the two places of the UA-MT V-Net (:func:`decode`;
            0 in VerSemi, as the authors' training calls; the UA-MT family uses 0.5 for MC-dropout
            uncertainty).

    Input sizes must be divisible by 16 and at least 32 on every axis.
    """

    def __init__(self, in_channels: int = 1, n_filters: int = 16, num_tasks: int = 4,
                 head: HeadKind = "dynamic", dropout: float = 0.0):
        super().__init__()
        if head not in ("dynamic", "multi", "none"):
            raise ValueError(f"unknown head {head!r}; expected 'dynamic', 'multi' or 'none'")
        if num_tasks < 1 or n_filters < 1 or in_channels < 1:
            raise ValueError("in_channels, n_filters and num_tasks must be positive")
        f = n_filters
        self.in_channels, self.n_filters, self.num_tasks, self.head_kind = in_channels, f, num_tasks, head
        self.num_prompts = num_tasks + 1
        self.dropout_p = float(dropout)

        build_encoder(self, in_channels, f)
        build_decoder(self, f)
        build_prompted_head(self, f, self.num_prompts, head)

    # ------------------------------------------------------------------ backbone
    def backbone(self, x: torch.Tensor) -> BackboneOut:
        """Prompt-independent encoder/decoder. x: (B, C, D, H, W), sizes divisible by 16."""
        x5, skips = encode(self, x)
        return BackboneOut(bottleneck=x5, decoder=decode(self, x5, skips, self.dropout_p), skips=skips)

    def forward(self, x: torch.Tensor, task_ids, return_features: bool = False):
        """Segmentation logits (B, 2, D, H, W) for input x (B, C, D, H, W) and prompts task_ids (B,).

        With ``return_features=True`` returns ``(logits, features)`` where features holds
        ``global`` (B, 16f) (the controller's image input; for head != 'dynamic' the plain GAP of the
        bottleneck), ``bottleneck`` (B, 16f, d, h, w), ``decoder`` (B, f, D, H, W) and ``prehead``
        (B, 8, D, H, W), the output of ``precls_conv`` that the dynamic head convolves.
        """
        feats = self.backbone(x)
        if not return_features:
            return self.head(feats, task_ids)
        b = x.shape[0]
        t = self.encode_task(task_ids, b, x.device)
        params = self.head_params(feats, t)
        pre = self.precls_conv(feats.decoder)
        logits = apply_dynamic_head(pre, params)
        g = (self.global_feature(feats.bottleneck) if self.head_kind == "dynamic"
             else feats.bottleneck.mean(dim=(2, 3, 4)))
        return logits, {"global": g, "bottleneck": feats.bottleneck, "decoder": feats.decoder, "prehead": pre}

    def forward_prompts(self, x: torch.Tensor, prompts: list) -> list[torch.Tensor]:
        """Logits for several prompt vectors on the same input, sharing one backbone pass."""
        return self.heads(self.backbone(x), prompts)

    @property
    def synthetic_task(self) -> int:
        return self.num_prompts


def _init_head_params() -> torch.Tensor:
    """180 head parameters initialised like PyTorch's default for 1x1x1 convs."""
    parts_w, parts_b = [], []
    for wn, bn in zip(HEAD_WEIGHT_NUMS, HEAD_BIAS_NUMS):
        fan_in = wn // bn
        bound = 1.0 / math.sqrt(fan_in)
        parts_w.append(torch.empty(wn).uniform_(-bound, bound))
        parts_b.append(torch.empty(bn).uniform_(-bound, bound))
    return torch.cat(parts_w + parts_b)


def apply_dynamic_head(x: torch.Tensor, params: torch.Tensor, return_second: bool = False):
    """Apply per-sample 1x1x1 heads.

    x: (B, 8, D, H, W) features; params: (B, 180) in the order weights 64, 64, 16, 16, biases 8, 8, 2, 2.
    Returns logits (B, 2, D, H, W) of the first output (and of the second if ``return_second``).
    A 1x1x1 grouped convolution with one group per sample is a batched matrix product, which is how it
    is computed here (one call for the whole batch, no loop over samples).
    """
    b, c, *spatial = x.shape
    if c != HEAD_CHANNELS or params.shape != (b, HEAD_PARAMS):
        raise ValueError(f"head expects x (B, {HEAD_CHANNELS}, ...) and params (B, {HEAD_PARAMS}); "
                         f"got {tuple(x.shape)} and {tuple(params.shape)}")
    splits = torch.split(params, HEAD_WEIGHT_NUMS + HEAD_BIAS_NUMS, dim=1)
    ws, bs = splits[:4], splits[4:]
    h = x.reshape(b, c, -1)
    for i in range(2):
        h = F.relu(torch.baddbmm(bs[i].unsqueeze(2), ws[i].reshape(b, HEAD_CHANNELS, HEAD_CHANNELS), h))
    outs = [torch.baddbmm(bs[i].unsqueeze(2), ws[i].reshape(b, NUM_CLASSES, HEAD_CHANNELS), h)
            .reshape(b, NUM_CLASSES, *spatial) for i in (2, 3)]
    return (outs[0], outs[1]) if return_second else outs[0]


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def load_authors_checkpoint(net: VerSemiNet, path_or_state_dict, strict: bool = True) -> VerSemiNet:
    """Load weights saved by the authors' code (or by this package) into ``net``.

    Accepts a path to a ``torch.save`` file or an in-memory object that is either a state dict or a
    dict with key ``net`` (the authors' ``{'net', 'opt', 'epoch'}`` format); ``module.`` prefixes from
    ``nn.DataParallel`` are stripped. Raises ``ValueError`` listing missing/unexpected keys and shape
    mismatches.
    """
    src = str(path_or_state_dict) if isinstance(path_or_state_dict, (str, os.PathLike)) else "state dict"
    obj = path_or_state_dict
    if isinstance(obj, (str, os.PathLike)):
        if not os.path.isfile(obj):
            raise FileNotFoundError(f"{obj}: checkpoint file not found")
        try:
            obj = torch.load(obj, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise ValueError(f"{src}: cannot read checkpoint ({type(e).__name__}: {e})") from e
    if isinstance(obj, dict) and "net" in obj and isinstance(obj["net"], dict):
        obj = obj["net"]
    if not isinstance(obj, dict):
        raise ValueError(f"{src}: expected a state dict or a dict with key 'net', got {type(obj).__name__}")
    state = OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in obj.items())
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong or (strict and (missing or unexpected)):
        lines = [f"{src}: checkpoint does not match VerSemiNet(n_filters={net.n_filters}, "
                 f"num_tasks={net.num_tasks}, head={net.head_kind!r})"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:12])}"
                         f"{' ...' if len(unexpected) > 12 else ''}")
        if wrong:
            lines.append("  shape mismatches: " + "; ".join(wrong[:12]))
        raise ValueError("\n".join(lines))
    net.load_state_dict(state, strict=strict)
    return net
