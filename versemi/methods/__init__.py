"""Training methods: one file each; a :class:`Method` declares everything the trainer asks.

The trainer (``versemi/train.py``) only loops over steps, feeds batches, checkpoints every network and
optimiser a method declares, validates and logs. A method declares

* its **networks** (:meth:`Method.build_networks`: name -> module, built from the run config; the one
  under :attr:`Method.eval_network` is validated, selected and evaluated),
* its **teachers** (:meth:`Method.teachers`: teacher name -> student name; the trainer keeps each an
  exponential moving average of its student after every step, decay :meth:`Method.ema_alpha`),
* its **optimisers** and their schedules (:meth:`Method.build_optimizers`, :meth:`Method.lr_at`),
* its **stages** and what happens between them (:meth:`Method.stages`, :meth:`Method.on_stage_start`,
  which may re-initialise a teacher or replace an optimiser through the :class:`StepContext`),
* and its **step**: :meth:`Method.step` returns the losses of one step (a dict of scalar tensors, the
  total under ``"loss"``) and the default :meth:`Method.train_step` minimises it with the ``"net"``
  optimiser. A method with several optimisers or alternating updates (adversarial discriminators,
  min-max steps) overrides :meth:`Method.train_step` and calls :meth:`StepContext.update` once per
  optimiser; per-task backward passes use :meth:`StepContext.backward` without a step.

Batches are dicts with ``image`` (B, 1, D, H, W) float, ``label`` (B, D, H, W) long and ``task``
(B,) long (the prompt of each sample: 1..T). Methods are registered by name with :func:`register`.
"""

from __future__ import annotations

from . import (  # noqa: F401  (each registers its method; probed and versemi_pcgrad: the conflict study's)
    ase_net,
    bcp,
    caussl,
    dodnet,
    dtc,
    magicnet,
    mean_teacher,
    probed,
    sup_only,
    uamt,
    uniseg,
    versemi,
    versemi_pcgrad,
)
from .base import *  # noqa: F403  (the interface: see base.__all__)

