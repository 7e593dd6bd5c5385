"""CauSSL (Miao et al., ICCV 2023), the MC-Net+ based 3D variant, after the released
``train_CT_MCCauSSL.py`` of the repository JuzhengMiao/CauSSL (with ``utils/losses.py``:
``dice_loss`` and ``l_correlation_cos_mean_mct1/2/3``, and ``networks/vnet.py``: ``VNet_mct``).

Network (:class:`CauSSLNet`): one V-Net encoder and three decoders that differ only in their
up-sampling (``VNet_mct``): decoder 1 is the V-Net's own (2x2x2 transposed convolutions), decoders 2 and 3
up-sample with a 1x1x1 convolution followed by x2 trilinear (``align_corners=True``) or nearest
interpolation (``UpsamplingDeconvBlockd``). Each decoder has its own prompted head (``head=cfg.head``:
one static head in a task-specific run, the controller-generated head of the sample's task in a Uni- run).
With ``dropout`` > 0 (0.5 in the paper profile: ``VNet_mct(has_dropout=True)``) one Dropout3d mask is
drawn on the bottleneck and shared by the three decoders (``VNet_mct.encoder``), and each decoder drops its
own last features (``VNet_mct.decoder``).

One training step (:meth:`CauSSL.train_step`):

1. *maximisation* (every ``max_every_fraction`` of the run — 60 of 5,000 iterations — once the run is past
   ``max_after_fraction`` — 40 of 5,000): ``max_steps`` = 60 Adam updates (lr 2e-2, PyTorch's default
   betas, no weight decay; optimiser ``"maps"``) of the linear maps alone, maximising the dependence
   ``ICM_1 + ICM_2 + ICM_3`` (:func:`branch_dependence`) with the network's weights fixed;
2. *minimisation*: one update of the segmentation network (optimiser ``"net"``) on
   ``sum_k 0.5 (CE + Dice)(decoder k, labeled)`` + ``w(t) sum_k sum_{j != k} MSE(p_k, sharpen(p_j))``
   on the unlabeled samples + ``3.0 sum_k ICM_k`` (the last term from the first maximisation on).

The algorithmic-independence (dependence) term. For each decoder ``k`` and each selected convolution
``l`` (:func:`dependence_layers`) with weight ``W_k`` of ``n`` output channels viewed as ``n`` rows, a
learnable ``n x 2n`` matrix ``P_{k,l}`` (initialised N(0, 1e-3), ``Linear_vector``) predicts ``W_k`` from
the rows of the other two decoders' weights stacked, ``P [W_a; W_b]``;
``ICM_k`` = mean over layers of the mean over rows of the squared cosine between predicted and actual
rows (:func:`dependence`). Sources (released order): decoder 1 from (2, 3), decoder 2 from (1, 3),
decoder 3 from (2, 1). It is 0 when each actual row is orthogonal to the other decoders' rows.

Which gradients the network gets from ``3.0 sum_k ICM_k`` (option ``dependence_grad``): in the released
``l_correlation_cos_mean_mct1`` the predicted decoder's weight is the live parameter and the other two come
from ``state_dict()`` (detached); in ``..._mct2``/``..._mct3`` every network weight comes from
``state_dict()`` or is detached, so ICM_2 and ICM_3 add to the loss value but send no gradient to the
network. ``"released"`` (default) reproduces this: only decoder 1's weights are pushed away from being
predictable by decoders 2 and 3. ``"all"``: each ICM_k sends gradient to decoder k's own weights (the
sources stay detached), the symmetric reading of the paper.

Evaluated output: decoder 1 (``test_CT_norm_mct.py`` takes ``y1, _, _ = net(patch)``, the other two
lines commented out), so ``net(x, task_ids)`` returns decoder 1's logits and the evaluator, validation
and selection see that decoder only.

Decisions (where the released code is ambiguous, broken, or does not fit a prompted network):

* layers of the dependence term: the released selection is every 3D conv weight of blocks six to nine
  and ``out_conv`` of each decoder (not the up-sampling blocks: 8 + 1 + 1 = 10 layers). VerSemi's V-Net
  has no ``block_nine`` (its finest skip is dropped) and no ``out_conv``; the last learned convolution
  before the head, ``precls_conv`` (f -> 8, 1x1x1), takes ``out_conv``'s place: 9 layers. The heads
  themselves (a static 180-vector, or a controller generating per-sample weights) are not convolution
  weights and are left out;
* decoders 2 and 3 use the released ``UpsamplingDeconvBlockd`` order (1x1x1 conv, then interpolation;
  trilinear with ``align_corners=True``), not model.py's :class:`~versemi.model.Upsample` (interpolation,
  then 3x3x3 conv: MC-Net+'s ``Upsampling_function``); option ``up_block="interp_conv3"`` selects the latter;
* normalisation: InstanceNorm (VerSemi's network) where ``VNet_mct`` has BatchNorm;
* ``VNet_mct`` builds ``block_five_trilinear``/``block_five_nearest`` but never uses them (no gradient,
  so SGD never touches them): not built here;
* the three released Adam optimisers (one per ICM_k, each over its own maps) are one Adam over all maps:
  Adam is element-wise and each ICM_k depends on its own maps only, so the updates are identical;
* during the maximisation the network's weights are detached (the released backward also fills the
  network's gradients, which its next ``zero_grad`` discards); during the minimisation the maps are
  detached (likewise): the net step changes only the network, the maps step only the maps;
* schedules: the maximisation period (60 iterations), its start (after iteration 40) and the consistency
  ramp-up (``sigmoid_rampup(iter // 150, 40)``: 6,000 iterations, i.e. 1.2 x the 5,000-iteration run) are
  fractions of the run (``max_every_fraction`` = 60/5000, ``max_after_fraction`` = 40/5000,
  ``rampup_fraction`` = 1.2), the ramp without the 150-iteration staircase (as :mod:`.uamt`); the inner
  count of 60 maximisation updates stays 60 at every run length;
* 5,000 steps (the released loop runs 5,001 updates; the evaluated checkpoint ``iter_5000.pth`` is the
  model after 5,000).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from versemi.losses import supervised_loss
from versemi.model import BackboneOut, PromptedDecoder, VerSemiNet, decode

from .base import NUM_TASKS, Method, StepContext, build_optimizer, register, step_lr
from .mean_teacher import ramp_weight

UP_BLOCKS = ("block_five_up", "block_six_up", "block_seven_up", "block_eight_up")
DEPENDENCE_BLOCKS = ("block_six", "block_seven", "block_eight")
# (target decoder, source decoders) of l_correlation_cos_mean_mct1/2/3, in the released stacking order
SOURCES = ((0, (1, 2)), (1, (0, 2)), (2, (1, 0)))


# --------------------------------------------------------------------------------------------- network
class InterpUp(nn.Sequential):
    """``VNet_mct``'s interpolating up-step (``UpsamplingDeconvBlockd``): 1x1x1 conv c_in -> c_out, x2
    interpolation (``trilinear`` with ``align_corners=True``, or ``nearest``), InstanceNorm3d, ReLU."""

    def __init__(self, c_in: int, c_out: int, mode: str):
        if mode not in ("trilinear", "nearest"):
            raise ValueError(f"unknown interpolation {mode!r}; expected trilinear or nearest")
        kw = {"align_corners": True} if mode == "trilinear" else {}
        super().__init__(OrderedDict(conv=nn.Sequential(nn.Conv3d(c_in, c_out, 1),
                                                        nn.Upsample(scale_factor=2, mode=mode, **kw),
                                                        nn.InstanceNorm3d(c_out), nn.ReLU(inplace=True))))


def interp_decoder(n_filters: int, num_tasks: int, head: str, mode: str, up_block: str) -> PromptedDecoder:
    """A decoder with its own prompted head that up-samples by ``mode`` (trilinear | nearest):
    ``up_block="conv1x1_interp"`` (released ``VNet_mct``) or ``"interp_conv3"`` (model.py's ``Upsample``)."""
    dec = PromptedDecoder(n_filters, num_tasks, head=head, up=mode)
    if up_block == "conv1x1_interp":
        f = n_filters
        for name, c_in, c_out in zip(UP_BLOCKS, (16 * f, 8 * f, 4 * f, 2 * f), (8 * f, 4 * f, 2 * f, f)):
            setattr(dec, name, InterpUp(c_in, c_out, mode))
    elif up_block != "interp_conv3":
        raise ValueError(f"unknown up_block {up_block!r}; expected conv1x1_interp or interp_conv3")
    return dec


class CauSSLNet(VerSemiNet):
    """The prompted V-Net (encoder, decoder 1 with transposed convolutions, head 1) plus ``aux`` =
    [trilinear decoder, nearest decoder], each with its own prompted head.

    ``forward(x, task_ids)`` -> decoder 1's logits (B, 2, D, H, W) (the evaluated output);
    :meth:`forward_all` -> the three decoders' logits, one encoder pass."""

    def __init__(self, n_filters: int = 16, num_tasks: int = NUM_TASKS, head: str = "dynamic",
                 dropout: float = 0.0, up_block: str = "conv1x1_interp"):
        super().__init__(in_channels=1, n_filters=n_filters, num_tasks=num_tasks, head=head, dropout=dropout)
        self.aux = nn.ModuleList([interp_decoder(n_filters, num_tasks, head, m, up_block)
                                  for m in ("trilinear", "nearest")])

    @property
    def decoders(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        """The modules holding decoder 1 (this network), 2 (trilinear) and 3 (nearest)."""
        return (self, self.aux[0], self.aux[1])

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """Encoder only: the bottleneck x5 (B, 16f, D/16, H/16, W/16) and the skips (x4, x3, x2)."""
        if x.dim() != 5 or x.shape[1] != self.in_channels or any(s % 16 or s < 32 for s in x.shape[2:]):
            raise ValueError(f"expected input (B, {self.in_channels}, D, H, W) with sizes divisible by 16 "
                             f"and at least 32, got {tuple(x.shape)}")
        x1 = self.block_one(x)
        x2 = self.block_two(self.block_one_dw(x1))
        x3 = self.block_three(self.block_two_dw(x2))
        x4 = self.block_four(self.block_three_dw(x3))
        return self.block_five(self.block_four_dw(x4)), (x4, x3, x2)

    def forward_all(self, x: torch.Tensor, task_ids) -> list[torch.Tensor]:
        """Logits (B, 2, D, H, W) of decoders 1, 2, 3. In training with dropout: one bottleneck mask for
        all three decoders, one mask per decoder on its last features (``VNet_mct``); the controllers see
        the bottleneck before dropout (as :func:`~versemi.model.decode`)."""
        x5, skips = self.encode(x)
        drop = self.training and self.dropout_p > 0
        x5_in = F.dropout3d(x5, self.dropout_p, training=True) if drop else x5
        outs = []
        for mod in self.decoders:
            dec = decode(mod, x5_in, skips, 0.0)
            if drop:
                dec = F.dropout3d(dec, self.dropout_p, training=True)
            outs.append(mod.head(BackboneOut(bottleneck=x5, decoder=dec, skips=skips), task_ids))
        return outs


# --------------------------------------------------------------------------------- dependence term
def dependence_layers(decoder: nn.Module) -> list[nn.Parameter]:
    """The convolution weights of one decoder that the dependence term compares: every Conv3d of
    ``block_six``, ``block_seven``, ``block_eight`` (3 + 3 + 2) and ``precls_conv``'s 1x1x1 conv (in place of
    the released ``block_nine`` + ``out_conv``): 9 weights, in a fixed order."""
    ws = [m.weight for b in DEPENDENCE_BLOCKS for m in getattr(decoder, b).modules() if isinstance(m, nn.Conv3d)]
    ws.append(decoder.precls_conv[2].weight)
    return ws


def dependence(target: torch.Tensor, sources: list[torch.Tensor], coeff: torch.Tensor) -> torch.Tensor:
    """Squared-cosine predictability of ``target`` from ``sources`` through the linear map ``coeff``.

    target: a weight (n, ...) viewed as n rows; sources: weights of the same shape; coeff: (n, len(sources)
    n). The prediction is ``coeff @ [sources stacked by rows]`` (n, m); returns the mean over the n rows of
    cos^2(predicted row, actual row) (``l_correlation_cos_mean_mct*``): in [0, 1], 0 when every target row
    is orthogonal to every source row."""
    n = target.shape[0]
    pred = coeff @ torch.cat([s.reshape(n, -1) for s in sources], 0)
    cos = (F.normalize(pred, dim=1) * F.normalize(target.reshape(n, -1), dim=1)).sum(1)
    return (cos * cos).mean()


class DependenceMaps(nn.Module):
    """The linear maps ``maps[k][l]`` (n_l x 2 n_l) predicting decoder k's layer l from the other two
    decoders (``Linear_vector``: entries N(0, 1e-3))."""

    def __init__(self, net: CauSSLNet, init_std: float = 1e-3):
        super().__init__()
        self.maps = nn.ModuleList()
        for _ in range(3):
            ps = nn.ParameterList()
            for w in dependence_layers(net):
                n = w.shape[0]
                ps.append(nn.Parameter(torch.randn(n, 2 * n) * init_std))
            self.maps.append(ps)


def branch_dependence(net: CauSSLNet, maps: DependenceMaps, grad: str) -> torch.Tensor:
    """(ICM_1, ICM_2, ICM_3): each decoder's dependence on the other two, averaged over the layers.

    ``grad``: ``"maps"`` (the maximisation: gradient to the maps only), ``"released"`` (the minimisation
    as released: gradient to decoder 1's weights only) or ``"all"`` (each ICM_k to decoder k's weights);
    the source weights are always detached."""
    layers = [dependence_layers(d) for d in net.decoders]
    out = []
    for k, srcs in SOURCES:
        live = grad == "all" or (grad == "released" and k == 0)
        terms = []
        for li, w in enumerate(layers[k]):
            coeff = maps.maps[k][li]
            terms.append(dependence(w if live else w.detach(), [layers[j][li].detach() for j in srcs],
                                    coeff if grad == "maps" else coeff.detach()))
        out.append(torch.stack(terms).mean())
    return torch.stack(out)


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^(1/T) renormalised over the class axis 1, detached (the released pseudo-label)."""
    q = p.pow(1.0 / temperature)
    return (q / q.sum(1, keepdim=True)).detach()


# --------------------------------------------------------------------------------------------- method
@register
class CauSSL(Method):
    name = "caussl"
    display_name = "CauSSL"
    uses_unlabeled = True
    default_options = {
        "sup_weight": 0.5,                 # 0.5 (CE + Dice) per decoder
        "consistency": 0.1,                # w(t) = 0.1 ramp
        "rampup_fraction": 6000 / 5000,    # sigmoid_rampup(iter // 150, 40): 6,000 of 5,000 iterations
        "temperature": 0.5,                # sharpening T
        "dependence_weight": 3.0,          # 3.0 (ICM_1 + ICM_2 + ICM_3)
        "max_steps": 60,                   # --max_step: Adam updates of the maps per maximisation
        "max_every_fraction": 60 / 5000,   # --min_step: a maximisation every 60 iterations ...
        "max_after_fraction": 40 / 5000,   # ... once past iteration 40
        "maps_lr": 2e-2,                   # Adam(linear_paras, 2e-2)
        "maps_init_std": 1e-3,             # Linear_vector.init_ratio
        "dependence_grad": "released",     # released | all (see the module docstring)
        "up_block": "conv1x1_interp",      # conv1x1_interp (VNet_mct) | interp_conv3 (model.Upsample)
    }
    # train_CT_MCCauSSL.py: argparse defaults (lines 46-63) max_iterations 5000, batch_size 4 with
    # labeled_bs 2, base_lr 0.01; SGD momentum 0.9, weight decay 1e-4 (line 150); lr x0.1 every 2,500
    # iterations (lines 267-271); VNet_mct(has_dropout=True) (line 102): Dropout3d 0.5
    paper_source = 'JuzhengMiao/CauSSL train_CT_MCCauSSL.py lines 46-63 (argparse defaults), 102 (dropout), 150 (SGD), 267-271 (lr step)'
    paper_settings = dict(optimizer="sgd", lr=0.01, weight_decay=1e-4, lr_step=2500, batch_size=2,
                          unlabeled_batch_size=2, steps=5000, dropout=0.5)

    def __init__(self, options: dict | None = None):
        super().__init__(options)
        if self.options["dependence_grad"] not in ("released", "all"):
            raise ValueError(f"dependence_grad must be 'released' or 'all', got {self.options['dependence_grad']!r}")

    # ------------------------------------------------------------------ networks and optimisers
    def build_networks(self, cfg):
        """``"net"``: :class:`CauSSLNet`; ``"maps"``: its :class:`DependenceMaps`."""
        net = CauSSLNet(n_filters=cfg.n_filters, num_tasks=NUM_TASKS, head=cfg.head, dropout=cfg.dropout,
                        up_block=self.options["up_block"])
        return {"net": net, "maps": DependenceMaps(net, self.options["maps_init_std"])}

    def build_optimizers(self, cfg, nets):
        """``"net"``: the run's optimiser over the network; ``"maps"``: Adam 2e-2 (PyTorch defaults
        otherwise) over the linear maps, as released in every profile."""
        return {"net": build_optimizer(cfg, nets["net"].parameters()),
                "maps": torch.optim.Adam(nets["maps"].parameters(), lr=self.options["maps_lr"])}

    def lr_at(self, cfg, optimizer: str, step: int) -> float:
        return self.options["maps_lr"] if optimizer == "maps" else step_lr(cfg, step)

    # ------------------------------------------------------------------ the alternation
    def schedule(self, steps: int) -> tuple[int, int]:
        """(period, start) in steps: a maximisation at every step s > start with s % period == 0."""
        o = self.options
        return max(1, round(o["max_every_fraction"] * steps)), round(o["max_after_fraction"] * steps)

    def is_max_step(self, step: int, steps: int) -> bool:
        period, start = self.schedule(steps)
        return step > start and step % period == 0

    def dependence_active(self, step: int, steps: int) -> bool:
        """Whether the network minimises the dependence at ``step``: from the first maximisation on
        (released: ``iter_num > 40 and iter_num_max > 0``)."""
        period, start = self.schedule(steps)
        return step >= (start // period + 1) * period

    def maximise(self, ctx: StepContext) -> torch.Tensor:
        """``max_steps`` updates of the maps (optimiser ``"maps"``) on -(ICM_1 + ICM_2 + ICM_3), the
        network fixed. Returns (3,) the dependences before the last update."""
        net, maps = ctx.net, ctx.nets["maps"]
        for _ in range(self.options["max_steps"]):
            icm = branch_dependence(net, maps, "maps")
            ctx.update({"loss": -icm.sum()}, "maps")
        return icm.detach()

    def step(self, ctx: StepContext, lab: dict, unlab: dict):
        """The network's losses (module docstring, step 2)."""
        o = self.options
        b = lab["image"].shape[0]
        outs = ctx.net.forward_all(torch.cat([lab["image"], unlab["image"]]), torch.cat([lab["task"], unlab["task"]]))
        sup = sum(o["sup_weight"] * supervised_loss(lg[:b], lab["label"]) for lg in outs)
        probs = [torch.softmax(lg[b:].float(), 1) for lg in outs]
        targets = [sharpen(p, o["temperature"]) for p in probs]
        cons = sum(torch.mean((probs[k] - targets[j]) ** 2) for k in range(3) for j in range(3) if j != k)
        w = ramp_weight(ctx, o["consistency"], o["rampup_fraction"])
        loss = sup + w * cons
        res = {"sup": sup.detach(), "cons": cons.detach(), "cons_weight": torch.tensor(w)}
        if self.dependence_active(ctx.stage_step, ctx.stage_steps):
            with torch.autocast(lab["image"].device.type, enabled=False):   # fp32, outside bf16 autocast
                icm = branch_dependence(ctx.net, ctx.nets["maps"], o["dependence_grad"])
            loss = loss + o["dependence_weight"] * icm.sum()
            res.update({f"icm{k + 1}": icm[k].detach() for k in range(3)})
        return {"loss": loss, **res}

    def train_step(self, ctx: StepContext, lab: dict, unlab: dict):
        """Maximisation of the maps when due (``"maps"``), then one network update (``"net"``)."""
        icm_max = self.maximise(ctx) if self.is_max_step(ctx.stage_step, ctx.stage_steps) else None
        with ctx.autocast():
            out = self.step(ctx, lab, unlab)
        ctx.update(out, "net")
        if icm_max is not None:
            out.update({f"icm{k + 1}_max": icm_max[k] for k in range(3)})
        return out
