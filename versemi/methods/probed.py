"""The conflict-probed twins of VerSemi and Sup-only: the same training, step for step (tested: the same losses
and weights), with the per-task gradient cosines and norms of the shared parameters logged every
``probe_every`` steps (:class:`versemi.conflict.ConflictProbe`; the inter-dataset conflict that the paper's
conclusion names as its open problem). Not in the paper. ``versemi_probed`` probes the dataset tasks and the
synthetic task (prompt T + 1); ``sup_only_probed`` (on several datasets: the Uni-Sup-only baseline) the
dataset tasks only. Two registrations of one concept, hence one file.
"""

from __future__ import annotations

from versemi.conflict import ConflictProbe

from .base import register
from .sup_only import SupOnly
from .versemi import VerSemi

PROBE_EVERY = 50


@register
class VerSemiProbed(ConflictProbe, VerSemi):
    name = "versemi_probed"
    display_name = "VerSemi (probed)"
    universal = True   # named by the method on several datasets, as VerSemi
    default_options = {**VerSemi.default_options, "probe_every": PROBE_EVERY}


@register
class SupOnlyProbed(ConflictProbe, SupOnly):
    name = "sup_only_probed"
    display_name = "Sup-only (probed)"
    probe_synthetic = False   # the baseline has no synthetic task
    default_options = {**SupOnly.default_options, "probe_every": PROBE_EVERY}
