"""Evaluation: sliding-window inference, per-case metrics and the per-case CSV.

* :mod:`versemi.evaluate.inference`: :func:`sliding_window_predict` (the authors' ``test_single_case``
  protocol, batched, optionally compiled, and MONAI's Gaussian-blended ``"fast"`` protocol),
  :func:`window_starts`, and the input checks other modules share (:func:`check_patch`,
  :func:`net_device`);
* :mod:`versemi.evaluate.metrics`: :func:`case_metrics` (Dice, Jaccard, 95HD, ASD equal to medpy's, as
  the authors' ``calculate_metric_percase``), :func:`surface_distances`, :func:`largest_component`,
  :func:`summarize`, :data:`METRICS` and :data:`CSV_COLUMNS`;
* :mod:`versemi.evaluate.cases`: :func:`evaluate_cases`, one CSV row per case.

Array axis order everywhere is that of the prepared HDF5 volumes (the authors' ``(w, h, d)``).
"""

from versemi.evaluate.cases import evaluate_cases
from versemi.evaluate.inference import (
    PROTOCOLS,
    check_patch,
    net_device,
    sliding_window_predict,
    window_starts,
)
from versemi.evaluate.metrics import (
    CSV_COLUMNS,
    METRICS,
    case_metrics,
    largest_component,
    summarize,
    surface_distances,
)

__all__ = [
    "CSV_COLUMNS",
    "METRICS",
    "PROTOCOLS",
    "case_metrics",
    "check_patch",
    "evaluate_cases",
    "largest_component",
    "net_device",
    "sliding_window_predict",
    "summarize",
    "surface_distances",
    "window_starts",
]
