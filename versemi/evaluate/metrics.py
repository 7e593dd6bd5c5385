"""Per-case segmentation metrics (Dice, Jaccard, 95HD, ASD), surface distances, the largest connected
component, and the summary of a per-case table.

:func:`case_metrics` follows ``medpy.metric.binary`` ``dc``, ``jc``, ``hd95`` and ``asd`` exactly (with
``connectivity=1``), as the authors' released ``calculate_metric_percase`` (``test_util.py`` of
maxwell0027/VerSemi) calls them, but computes surface distances on a bounding box around prediction ∪
ground truth. Dice and Jaccard are fractions in [0, 1]; 95HD and ASD are in voxels unless a spacing is
given (then in its units, mm for the prepared volumes). An empty prediction scores 0 on all four metrics
as in the authors' ``test_all_case``, and is flagged in the ``empty_pred`` column rather than hidden.

Masks are boolean (or 0/1) arrays of one shape, any number of axes (3-D (D0, D1, D2) volumes in the axis
order of the prepared HDF5 in practice). :data:`METRICS` names the four metrics and :data:`CSV_COLUMNS`
the columns of the per-case CSV written by :func:`versemi.evaluate.cases.evaluate_cases`, which
:func:`summarize` reduces to means and standard deviations.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage import measure

from versemi.utils import VersemiError

METRICS = ("dice", "jaccard", "hd95", "asd")
CSV_COLUMNS = ("case", "task", "dice", "jaccard", "hd95", "asd", "empty_pred", "empty_gt",
               "n_pred_voxels", "n_gt_voxels", "seconds")


_FOOTPRINT_CACHE: dict[int, np.ndarray] = {}


def _surface(mask: np.ndarray) -> np.ndarray:
    """Border voxels: mask XOR its erosion by the connectivity-1 cross (medpy's default footprint).

    Erosion uses scipy's default ``border_value=0`` so voxels on the array border count as surface,
    as in medpy.
    """
    fp = _FOOTPRINT_CACHE.setdefault(mask.ndim, ndimage.generate_binary_structure(mask.ndim, 1))
    return mask ^ ndimage.binary_erosion(mask, structure=fp, iterations=1)


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    sl = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        sl.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + 1 + margin, mask.shape[ax])))
    return tuple(sl)


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """(pred-surface -> gt-surface, gt-surface -> pred-surface) distances, as medpy's ``__surface_distances``.

    Both masks must be non-empty booleans of the same shape. Computed on the bounding box of pred ∪ gt
    plus a one-voxel margin (clipped to the array): inside it the erosion and the exact Euclidean distance
    transform give the same values as on the full array, because every surface voxel lies in the box and
    the margin is background (or the array border, where erosion treats outside as background in both).
    """
    box = _bbox(pred | gt, 1)
    p, g = pred[box], gt[box]
    sampling = None if spacing is None else np.asarray(spacing, dtype=np.float64)
    p_s, g_s = _surface(p), _surface(g)
    d_to_g = ndimage.distance_transform_edt(~g_s, sampling=sampling)
    d_to_p = ndimage.distance_transform_edt(~p_s, sampling=sampling)
    return d_to_g[p_s], d_to_p[g_s]


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing=None) -> dict:
    """Dice, Jaccard, HD95 and ASD of one binary prediction against its ground truth.

    Definitions are medpy's (``dc``, ``jc``, ``hd95``, ``asd`` of ``medpy.metric.binary`` with
    ``connectivity=1``): HD95 is the 95th percentile (linear interpolation) of the pooled pred->gt and
    gt->pred surface distances; ASD is the mean pred->gt surface distance. Distances are in voxels when
    ``spacing`` is None, else in the units of ``spacing`` (one value per axis, medpy's ``voxelspacing``).

    Conventions for empty masks (flags are always returned, so nothing is hidden):

    * empty prediction: dice = jaccard = hd95 = asd = 0 (the authors' convention), ``empty_pred=True``;
      this also holds when the ground truth is empty too (then ``empty_gt=True`` as well);
    * empty ground truth, non-empty prediction: dice = jaccard = 0, hd95 = asd = NaN, ``empty_gt=True``.
    """
    pred = np.asarray(pred).astype(bool, copy=False)
    gt = np.asarray(gt).astype(bool, copy=False)
    if pred.shape != gt.shape:
        raise VersemiError(f"prediction shape {pred.shape} does not match ground-truth shape {gt.shape}")
    if spacing is not None:
        spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, dtype=np.float64), (pred.ndim,)))
        if not all(math.isfinite(s) and s > 0 for s in spacing):
            raise VersemiError(f"voxel spacing must be positive and finite, got {spacing}")
    n_p, n_g = int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
    out = {"empty_pred": n_p == 0, "empty_gt": n_g == 0}
    if n_p == 0:
        return {"dice": 0.0, "jaccard": 0.0, "hd95": 0.0, "asd": 0.0, **out}
    inter = int(np.count_nonzero(pred & gt))
    dice = 2.0 * inter / float(n_p + n_g)
    union = n_p + n_g - inter
    jac = float(inter) / float(union)
    if n_g == 0:
        return {"dice": dice, "jaccard": jac, "hd95": math.nan, "asd": math.nan, **out}
    d_pg, d_gp = surface_distances(pred, gt, spacing)
    hd95 = float(np.percentile(np.hstack((d_pg, d_gp)), 95))
    asd = float(d_pg.mean())
    return {"dice": dice, "jaccard": jac, "hd95": hd95, "asd": asd, **out}


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest connected component of a binary mask (full connectivity: 26 in 3-D).

    Same as the peers' ``LargestCC`` (``skimage.measure.label`` default connectivity, largest label by
    voxel count, the lowest label on ties); an empty mask is returned empty (no error). Returns the
    mask's dtype.
    """
    m = np.asarray(mask)
    lab = measure.label(m.astype(bool), connectivity=m.ndim)
    if lab.max() == 0:
        return np.zeros_like(m)
    keep = lab == (int(np.argmax(np.bincount(lab.ravel())[1:])) + 1)
    return keep.astype(m.dtype, copy=False)


def summarize(df) -> dict:
    """Mean and population std (``ddof=0``, as ``np.std``) of each metric over cases.

    NaN values (hd95/asd of cases with an empty ground truth) are left out of that metric's mean/std and
    counted in ``n_nan_<metric>``. Empty predictions (scored 0) are included and counted in
    ``n_empty_pred``. Keys: ``n``, ``n_empty_pred``, ``n_empty_gt``, and ``<metric>_mean``,
    ``<metric>_std``, ``n_nan_<metric>`` for dice, jaccard, hd95, asd.
    """
    out: dict = {"n": int(len(df)),
                 "n_empty_pred": int(np.asarray(df["empty_pred"], dtype=bool).sum()) if len(df) else 0,
                 "n_empty_gt": int(np.asarray(df["empty_gt"], dtype=bool).sum()) if len(df) else 0}
    for k in METRICS:
        v = np.asarray(df[k], dtype=np.float64)
        ok = v[~np.isnan(v)]
        out[f"{k}_mean"] = float(ok.mean()) if ok.size else math.nan
        out[f"{k}_std"] = float(ok.std(ddof=0)) if ok.size else math.nan
        out[f"n_nan_{k}"] = int(v.size - ok.size)
    return out
