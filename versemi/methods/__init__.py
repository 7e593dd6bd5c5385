"""Training methods: one file each, each a step function over a labeled (and an unlabeled) batch.

A method is a subclass of :class:`Method`. The trainer (``versemi.train``) owns the networks, the
optimiser, the EMA teacher, data sampling, checkpoints and logging; a method only says

* which stages it has (``stages(cfg)`` -> list of (stage name, steps)),
* whether it needs unlabeled batches and an EMA teacher,
* and how to compute the losses of one step (``step(ctx, lab, unlab)`` -> dict of scalar tensors
  with the total under ``"loss"``).

Batches are dicts with ``image`` (B, 1, D, H, W) float, ``label`` (B, D, H, W) long and ``task``
(B,) long (the prompt of each sample: 1..T). Methods are registered by name in :data:`METHODS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from versemi.model import VerSemiNet


def sigmoid_rampup(current: float, length: float) -> float:
    """exp(-5 (1 - t)^2) with t = clip(current / length, 0, 1) (Laine & Aila; used by the UA-MT family)."""
    if length <= 0:
        return 1.0
    t = float(np.clip(current / length, 0.0, 1.0))
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


@dataclass
class StepContext:
    """What a method sees at one step."""

    net: VerSemiNet
    teacher: VerSemiNet | None
    stage: str
    step: int            # global step (0-based, over all stages)
    stage_step: int      # step within the stage
    stage_steps: int     # length of the stage
    rng: np.random.Generator   # pure function of (seed, step): masks, mixing ratios
    options: dict = field(default_factory=dict)
    num_tasks: int = 4
    tasks: tuple[int, ...] | None = None   # the run's task prompts (default 1..num_tasks)

    @property
    def synthetic_task(self) -> int:
        return self.num_tasks + 1

    @property
    def task_prompts(self) -> tuple[int, ...]:
        return tuple(self.tasks) if self.tasks else tuple(range(1, self.num_tasks + 1))


class Method:
    """Base class. Subclasses set ``name`` and implement ``step``."""

    name = "base"
    uses_unlabeled = False
    uses_teacher = False
    default_options: dict = {}

    def __init__(self, options: dict | None = None):
        unknown = set(options or {}) - set(self.default_options)
        if unknown:
            from versemi.utils import VersemiError

            raise VersemiError(f"method {self.name!r} has no option(s) {sorted(unknown)}; "
                               f"known: {sorted(self.default_options)}")
        self.options = {**self.default_options, **(options or {})}

    def stages(self, steps: int) -> list[tuple[str, int]]:
        """Split the run's ``steps`` into named stages (default: one stage)."""
        return [("train", steps)]

    def on_stage_start(self, stage: str, net: VerSemiNet, teacher: VerSemiNet | None) -> None:
        """Hook called when a stage begins (e.g. BCP re-initialises its teacher)."""

    def step(self, ctx: StepContext, lab: dict, unlab: dict | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def get_method(name: str, options: dict | None = None) -> Method:
    from versemi.utils import VersemiError

    from . import bcp, mean_teacher, sup_only, uamt, versemi  # noqa: F401  (registration)

    registry = {m.name: m for m in (sup_only.SupOnly, mean_teacher.MeanTeacher, uamt.UAMT, bcp.BCP,
                                    versemi.VerSemi)}
    if name not in registry:
        raise VersemiError(f"unknown method {name!r}; expected one of {', '.join(sorted(registry))}")
    return registry[name](options)


METHOD_NAMES = ("sup_only", "mean_teacher", "uamt", "bcp", "versemi")
