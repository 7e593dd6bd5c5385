"""Evaluation over cases: segment each case, score it, write one row per case to a CSV.

:func:`evaluate_cases` chains :func:`~versemi.evaluate.inference.sliding_window_predict` (the paper
protocol by default), optionally :func:`~versemi.evaluate.metrics.largest_component`, and
:func:`~versemi.evaluate.metrics.case_metrics` on ``label == 1``, as the authors' released
``test_all_case`` (``test_util.py`` of maxwell0027/VerSemi) does for one test list; unlike it, every case
is kept as a row (columns :data:`~versemi.evaluate.metrics.CSV_COLUMNS`) instead of only the average.
Images and labels are (D0, D1, D2) arrays in one axis order; distances are in voxels unless ``in_mm``;
``seconds`` is wall-clock time per case (inference + metrics).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from versemi.evaluate.inference import sliding_window_predict
from versemi.evaluate.metrics import CSV_COLUMNS, METRICS, case_metrics, largest_component
from versemi.utils import VersemiError, atomic_path


def evaluate_cases(net, cases: Iterable, task_id: int, out_csv, patch_size=(96, 96, 96), stride=(16, 16, 4),
                   protocol: str = "paper", lcc: bool = False, device=None, progress: bool = True, *,
                   batch_size: int = 8, overlap: float = 0.5, amp=False, in_mm: bool = False,
                   compile: bool = False):
    """Segment and score each case; write a per-case CSV atomically; return it as a DataFrame.

    Args:
        cases: iterable of ``(case_name, image, label, spacing)``: image and label (D0, D1, D2) arrays in
            the same axis order; the foreground is ``label == 1`` (as the authors); spacing a 3-tuple (mm)
            or None.
        task_id: the prompt used for every case.
        out_csv: output path; columns ``case, task, dice, jaccard, hd95, asd, empty_pred, empty_gt,
            n_pred_voxels, n_gt_voxels, seconds`` (seconds = inference + metrics for the case).
        lcc: keep only the largest connected component of the prediction (off in the paper protocol).
        in_mm: distances in mm using each case's spacing (default False: voxel units, as the paper).
        compile: compile the network once for all cases (see :func:`sliding_window_predict`).
        Other arguments as :func:`sliding_window_predict`.
    """
    rows = []
    for item in tqdm(cases, desc=f"evaluate task {task_id}", disable=not progress, unit="case"):
        try:
            case, image, label, spacing = item
        except (TypeError, ValueError):
            raise VersemiError("each case must be a tuple (case_name, image, label, spacing)") from None
        label = np.asarray(label)
        if np.shape(image) != label.shape:
            raise VersemiError(f"{case}: image shape {np.shape(image)} and label shape {label.shape} differ")
        if in_mm and spacing is None:
            raise VersemiError(f"{case}: in_mm=True but the case has no voxel spacing")
        t0 = time.perf_counter()
        pred, _ = sliding_window_predict(net, image, task_id, patch_size, stride, protocol, batch_size, device,
                                         overlap=overlap, amp=amp, compile=compile, name=str(case))
        if lcc:
            pred = largest_component(pred)
        gt = label == 1
        m = case_metrics(pred.astype(bool), gt, spacing if in_mm else None)
        rows.append({"case": str(case), "task": int(task_id), **{k: m[k] for k in METRICS},
                     "empty_pred": m["empty_pred"], "empty_gt": m["empty_gt"],
                     "n_pred_voxels": int(np.count_nonzero(pred)), "n_gt_voxels": int(np.count_nonzero(gt)),
                     "seconds": time.perf_counter() - t0})
    df = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    with atomic_path(Path(out_csv), suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    return df
