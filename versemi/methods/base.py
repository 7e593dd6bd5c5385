"""The Method interface and the StepContext a method sees at each step (see the package docstring)."""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from versemi.model import VerSemiNet
from versemi.utils import VersemiError

if TYPE_CHECKING:
    from versemi.config import RunConfig

__all__ = ["NUM_TASKS", "Method", "StepContext", "TrainingDiverged", "build_net", "build_optimizer", "frozen_copy",
           "get_method", "get_method_class", "method_names", "poly_lr", "register", "sigmoid_rampup", "step_lr",
           "unregister"]

NUM_TASKS = 4   # the prompts of the four datasets; the synthetic task is NUM_TASKS + 1


class TrainingDiverged(VersemiError):
    """A loss became NaN/inf."""


def sigmoid_rampup(current: float, length: float) -> float:
    """exp(-5 (1 - t)^2) with t = clip(current / length, 0, 1) (Laine & Aila; used by the UA-MT family)."""
    if length <= 0:
        return 1.0
    t = float(np.clip(current / length, 0.0, 1.0))
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def build_optimizer(cfg: RunConfig, params, nesterov: bool = False) -> torch.optim.Optimizer:
    """The run's optimiser over ``params``: Adam (lr, betas, weight decay) or SGD (lr, momentum, weight
    decay; Nesterov momentum when ``nesterov``, as nnU-Net and DoDNet), from the config."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=bool(nesterov and cfg.momentum > 0))


def poly_lr(cfg: RunConfig, step: int, epochs: int, exponent: float) -> float:
    """The poly schedule updated once per epoch, ``lr (1 - e / E) ** exponent``, with the run's steps cut
    into ``E = epochs`` equal epochs and ``e = floor(step E / steps)`` (nnU-Net's ``poly_lr`` as UniSeg
    uses it; DoDNet's ``adjust_learning_rate``); ``exponent = 0`` gives a constant rate."""
    epochs = max(1, int(epochs))
    epoch = min(epochs - 1, int(step) * epochs // max(1, cfg.steps))
    return cfg.lr * (1 - epoch / epochs) ** float(exponent)


def step_lr(cfg: RunConfig, step: int) -> float:
    """``cfg.lr`` times ``cfg.lr_gamma`` every ``cfg.lr_step`` steps (constant when ``lr_step`` is 0)."""
    if cfg.lr_step and cfg.lr_step > 0:
        return cfg.lr * (cfg.lr_gamma ** (step // cfg.lr_step))
    return cfg.lr


@dataclass
class StepContext:
    """What a method sees at one step: its networks and optimisers, where the step is, and its RNG.

    ``update``/``backward`` are the trainer's: they check the loss is finite (a
    :class:`TrainingDiverged` names the step and the non-finite terms), back-propagate, average the
    gradients over processes under ``torch.distributed`` and (``update``) step the optimiser.
    """

    nets: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    stage: str
    step: int            # global step (0-based, over all stages)
    stage_step: int      # step within the stage
    stage_steps: int     # length of the stage
    rng: np.random.Generator   # pure function of (seed, step): masks, mixing ratios
    options: dict = field(default_factory=dict)
    num_tasks: int = NUM_TASKS
    tasks: tuple[int, ...] | None = None   # the run's task prompts (default 1..num_tasks)
    cfg: RunConfig | None = None
    amp: bool = False                      # bf16 autocast around the forward passes (CUDA only)
    world: int = 1
    where: str = ""                        # the run folder, for error messages

    @property
    def net(self) -> torch.nn.Module:
        return self.nets["net"]

    @property
    def teacher(self) -> torch.nn.Module | None:
        return self.nets.get("teacher")

    @property
    def synthetic_task(self) -> int:
        return self.num_tasks + 1

    @property
    def task_prompts(self) -> tuple[int, ...]:
        return tuple(self.tasks) if self.tasks else tuple(range(1, self.num_tasks + 1))

    def autocast(self):
        """The forward-pass context: bf16 autocast on CUDA when the run asks for it, else nothing."""
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()

    def backward(self, out: dict[str, torch.Tensor] | torch.Tensor, params=None) -> None:
        """Back-propagate ``out["loss"]`` (or a tensor) after checking it is finite; under
        ``torch.distributed`` average the gradients of ``params`` over the processes."""
        loss = out["loss"] if isinstance(out, dict) else out
        if not torch.isfinite(loss):
            terms = out.items() if isinstance(out, dict) else [("loss", out)]
            bad = [k for k, v in terms if torch.is_tensor(v) and not torch.isfinite(v).all()]
            raise TrainingDiverged(f"{self.where}: non-finite loss at step {self.step} (stage {self.stage}); "
                                   f"non-finite terms: {', '.join(bad)}; last good checkpoint kept in {self.where}")
        loss.backward()
        if params is not None:
            self.average_gradients(params)

    def average_gradients(self, params) -> None:
        """Under ``torch.distributed``, average the gradients of ``params`` over the processes (else nothing)."""
        if self.world > 1:
            for p in params:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world

    def update(self, out: dict[str, torch.Tensor] | torch.Tensor, optimizer: str = "net") -> None:
        """One optimisation step of ``optimizer`` on ``out["loss"]``: zero its gradients, back-propagate
        (:meth:`backward`) and step."""
        opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        self.backward(out, [p for g in opt.param_groups for p in g["params"]])
        opt.step()


class Method:
    """Base class. Subclasses set ``name`` (the registry key), ``display_name`` and implement ``step``
    (or ``train_step``)."""

    name = "base"
    display_name = "base"
    uses_unlabeled = False
    uses_teacher = False           # an EMA teacher "teacher" of the network "net"
    eval_network = "net"           # the network that is validated, selected and evaluated
    default_options: dict = {}
    universal = False              # a universal model by design (UniSeg, DoDNet): its multi-dataset run is
                                   # named by the method ("UniSeg"), not as a task-unified baseline ("Uni-")
    select_per_stage = False       # True: validate at the end of every stage and select the evaluated
                                   # model among the last stage's validations (BCP: the best pre-trained
                                   # model starts self-training; the best self-trained one is evaluated)
    config_defaults: dict = {}     # RunConfig fields the method needs in every profile (e.g. dropout)
    paper_settings: dict = {}      # RunConfig fields of the released code, applied in the paper profile
    paper_la_patch: tuple | None = None   # the released LA script's patch (paper profile, LA-only runs)
    paper_source: str = ""         # the released files and lines of paper_settings (the book's settings table)

    def __init__(self, options: dict | None = None):
        unknown = set(options or {}) - set(self.default_options)
        if unknown:
            raise VersemiError(f"method {self.name!r} has no option(s) {sorted(unknown)}; "
                               f"known: {sorted(self.default_options)}")
        self.options = {**self.default_options, **(options or {})}

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Refuse a run configuration the method cannot train (a :class:`VersemiError` naming the method);
        called when a :class:`~versemi.config.RunConfig` is validated. Default: everything is accepted."""

    # ---------------------------------------------------------------- what the trainer builds
    def build_networks(self, cfg: RunConfig) -> dict[str, torch.nn.Module]:
        """name -> network, built in this order right after the run's seed is set (so the initial
        weights are a function of the seed). Default: the prompted V-Net ``"net"`` (and a frozen copy
        ``"teacher"`` when the method uses a teacher)."""
        nets: dict[str, torch.nn.Module] = {"net": build_net(cfg)}
        for teacher, student in self.teachers().items():
            nets[teacher] = frozen_copy(nets[student])
        return nets

    def teachers(self) -> dict[str, str]:
        """Teacher network name -> the student it follows by EMA (default: ``{"teacher": "net"}`` for a
        method that uses a teacher, else none)."""
        return {"teacher": "net"} if self.uses_teacher else {}

    def build_optimizers(self, cfg: RunConfig, nets: dict[str, torch.nn.Module]) -> dict[str, torch.optim.Optimizer]:
        """name -> optimiser; default: the config's optimiser over ``nets["net"]``."""
        return {"net": build_optimizer(cfg, nets["net"].parameters())}

    def lr_at(self, cfg: RunConfig, optimizer: str, step: int) -> float:
        """Learning rate of ``optimizer`` at ``step`` (default: the config's step schedule)."""
        return step_lr(cfg, step)

    def ema_alpha(self, step: int, decay: float) -> float:
        """EMA decay at ``step``: ``min(1 - 1/(step+1), decay)`` (the Mean Teacher warm-up)."""
        return min(1 - 1 / (step + 1), decay)

    def state_dict(self) -> dict:
        """Method state that a checkpoint must carry besides networks and optimisers (default none)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` when a run resumes."""

    # ---------------------------------------------------------------- the schedule
    def stages(self, steps: int) -> list[tuple[str, int]]:
        """Split the run's ``steps`` into named stages (default: one stage)."""
        return [("train", steps)]

    def on_stage_start(self, stage: str, ctx: StepContext) -> None:
        """Called when a stage begins, before its first step (e.g. BCP re-initialises its teacher)."""

    # ---------------------------------------------------------------- one step
    def step(self, ctx: StepContext, lab: dict, unlab: dict | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def train_step(self, ctx: StepContext, lab: dict, unlab: dict | None) -> dict[str, torch.Tensor]:
        """Compute the step's losses (:meth:`step`, under ``ctx.autocast()``) and minimise ``"loss"``
        with the ``"net"`` optimiser. Returns the dict of losses (scalars are logged)."""
        with ctx.autocast():
            out = self.step(ctx, lab, unlab)
        ctx.update(out, "net")
        return out


def build_net(cfg: RunConfig) -> VerSemiNet:
    """The prompted V-Net of the run (width, head variant, dropout from the config)."""
    return VerSemiNet(in_channels=1, n_filters=cfg.n_filters, num_tasks=NUM_TASKS, head=cfg.head,
                      dropout=cfg.dropout)


def frozen_copy(net: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``net`` whose parameters take no gradient (a teacher)."""
    t = copy.deepcopy(net)
    for p in t.parameters():
        p.requires_grad_(False)
    return t

# --------------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available under ``cls.name`` (configs, the CLI, the trainer)."""
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a registered method (tests register temporary ones)."""
    _REGISTRY.pop(name, None)


def method_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_method_class(name: str) -> type[Method]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise VersemiError(f"unknown method {name!r}; expected one of {', '.join(_REGISTRY)}") from None


def get_method(name: str, options: dict | None = None) -> Method:
    """An instance of the method registered as ``name`` with ``options``."""
    return get_method_class(name)(options)
