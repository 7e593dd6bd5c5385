"""Sliding-window inference and per-case metrics (DESIGN.md §5, "Evaluation protocol").

Two inference protocols share one entry point, :func:`sliding_window_predict`:

* ``protocol="paper"`` reproduces the authors' ``test_single_case`` (patch 96³, stride 16/16/4, uniform
  averaging of softmax over overlapping windows, argmax), but batches the windows and keeps the
  running sums on the network's device;
* ``protocol="fast"`` is MONAI's ``sliding_window_inference`` with Gaussian blending and a coarser,
  overlap-defined stride. It is offered beside the paper protocol, never substituted for it; the
  difference between the two is measured by ``bench/eval_speed.py``.

Either protocol can run the network through ``torch.compile`` with frozen weights (``compile=True``):
the same windows and arithmetic, about twice as fast per window on a CPU, float32 rounding differences
only (``bench/eval_speed.py`` measures speed and label agreement against the authors' own routine).

Metrics (:func:`case_metrics`) follow ``medpy.metric.binary`` ``dc``, ``jc``, ``hd95`` and ``asd``
exactly (voxel units unless a spacing is given) but compute surface distances on a bounding box around
prediction ∪ ground truth. An empty prediction scores 0 on all four metrics as in the authors' code, and
is flagged in the ``empty_pred`` column rather than hidden.

Array axis order everywhere is that of the prepared HDF5 volumes (the authors' ``(w, h, d)``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

from versemi.utils import VersemiError, atomic_path, get_device

PROTOCOLS = ("paper", "fast")
METRICS = ("dice", "jaccard", "hd95", "asd")
CSV_COLUMNS = ("case", "task", "dice", "jaccard", "hd95", "asd", "empty_pred", "empty_gt",
               "n_pred_voxels", "n_gt_voxels", "seconds")


# ---------------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------------
def _triple(value, what: str, name: str) -> tuple[int, int, int]:
    if isinstance(value, (int, np.integer)):
        value = (int(value),) * 3
    try:
        t = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise VersemiError(f"{name}: {what} must be an int or three ints, got {value!r}") from None
    if len(t) != 3 or any(float(a) != float(b) for a, b in zip(t, value)):
        raise VersemiError(f"{name}: {what} must be three integers (one per array axis), got {value!r}")
    return t


def _check_patch(patch_size, name: str) -> tuple[int, int, int]:
    p = _triple(patch_size, "patch_size", name)
    bad = [s for s in p if s < 32 or s % 16]
    if bad:
        raise VersemiError(f"{name}: patch_size {p} is not valid for VerSemiNet: every axis must be divisible "
                           "by 16 and at least 32")
    return p


def _check_image(image, name: str) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise VersemiError(f"{name}: image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3:
        raise VersemiError(f"{name}: image must be 3-D (D0, D1, D2), got shape {image.shape}")
    if image.size == 0:
        raise VersemiError(f"{name}: image is empty (shape {image.shape})")
    if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise VersemiError(f"{name}: image must hold real numbers, got dtype {image.dtype}")
    image = np.asarray(image, dtype=np.float32)
    if not np.isfinite(image).all():
        n = int((~np.isfinite(image)).sum())
        raise VersemiError(f"{name}: image contains {n} non-finite values (NaN or inf)")
    return image


def _check_tasks(net, task_id, name: str) -> tuple[list[int], bool]:
    """Return (list of prompts, whether a list was given)."""
    many = isinstance(task_id, (list, tuple))
    tasks = list(task_id) if many else [task_id]
    if not tasks:
        raise VersemiError(f"{name}: empty list of task ids")
    out = []
    for t in tasks:
        if isinstance(t, torch.Tensor) and t.numel() == 1:
            t = t.item()
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise VersemiError(f"{name}: task ids must be integers, got {t!r}")
        out.append(int(t))
    n_prompts = getattr(net, "num_prompts", None)
    if n_prompts is not None:
        bad = [t for t in out if not 1 <= t <= n_prompts]
        if bad:
            raise VersemiError(f"{name}: task ids must lie in 1..{n_prompts}, got {bad}")
    return out, many


def _net_device(net) -> torch.device:
    for p in net.parameters():
        return p.device
    return torch.device("cpu")


@contextmanager
def _eval_mode(net):
    """net.eval() for the duration, then restore every submodule's own training flag."""
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _autocast(amp, device: torch.device, name: str):
    if amp in (False, None):
        return nullcontext()
    dtype = {True: torch.bfloat16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}.get(amp)
    if dtype is None:
        raise VersemiError(f"{name}: amp must be False, 'bf16' or 'fp16', got {amp!r}")
    if device.type != "cuda":
        raise VersemiError(f"{name}: amp={amp!r} requested on {device}; mixed precision is only used on CUDA")
    return torch.autocast(device_type="cuda", dtype=dtype)


def _centre_pad(shape: Sequence[int], patch: Sequence[int]) -> list[tuple[int, int]]:
    """(left, right) zero padding per axis: only axes smaller than the patch, left = pad // 2."""
    pads = []
    for s, p in zip(shape, patch):
        d = max(p - s, 0)
        pads.append((d // 2, d - d // 2))
    return pads


def window_starts(dim: int, patch: int, stride: int) -> list[int]:
    """Window start positions on one (already padded) axis, as the authors enumerate them.

    ``n = ceil((dim - patch) / stride) + 1`` windows starting at ``min(stride * i, dim - patch)``.
    """
    n = math.ceil((dim - patch) / stride) + 1
    return [min(stride * i, dim - patch) for i in range(n)]


# ---------------------------------------------------------------------------------------------------
# sliding-window inference
# ---------------------------------------------------------------------------------------------------
def _softmax_prompts(net, x: torch.Tensor, tasks: list[int], many: bool) -> list[torch.Tensor]:
    """Float32 softmax maps, one per prompt, for the window batch x (B, 1, ...)."""
    if many and hasattr(net, "forward_prompts"):
        logits = net.forward_prompts(x, tasks)  # one backbone (and, in eval mode, pre-classifier) pass
    else:
        logits = [net(x, t) for t in tasks]
    return [F.softmax(lg.float(), dim=1) for lg in logits]


# One compiled network at a time: [network, key, function] (the entry keeps that network alive until
# another one is compiled). The key holds the storage and version counter of every parameter and buffer,
# so any weight update (optimizer step, load_state_dict, ...) makes a new compilation instead of reusing
# weights frozen into the old one.
_COMPILED: list = [None, None, None]


def _weights_key(net) -> tuple:
    return tuple((t.data_ptr(), t._version, t.device.type, tuple(t.shape)) for t in
                 list(net.parameters()) + list(net.buffers()))


def _compiled_softmax(net, tasks: list[int], many: bool, name: str):
    """``torch.compile`` (Inductor, weights frozen as constants) of :func:`_softmax_prompts` for ``net``
    in its current state, or ``None`` (with a warning) where compilation is not available."""
    import warnings

    key = (_weights_key(net), tuple(tasks), many)
    if _COMPILED[0] is net and _COMPILED[1] == key:
        return _COMPILED[2]
    try:
        import torch._dynamo
        import torch._inductor.config as inductor_config
    except Exception as e:  # pragma: no cover - torch builds without the compiler stack
        warnings.warn(f"{name}: torch.compile is not available ({e}); running the network eagerly", stacklevel=3)
        return None
    torch._dynamo.reset()  # forget earlier networks: their frozen weights would otherwise stay cached
    compiled = torch.compile(lambda x: _softmax_prompts(net, x, tasks, many), dynamic=False)

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        # freezing must be on when Inductor compiles, which happens at the first call of each shape
        with inductor_config.patch(freezing=True):
            return compiled(x)

    _COMPILED[:] = [net, key, run]
    return run


class _WindowRunner:
    """Softmax maps of a window batch, eagerly or through a compiled network.

    The compiled network sees one batch shape only: a short last batch is padded with zero windows and
    their outputs dropped (no cross-window coupling in eval mode: InstanceNorm is per window and
    BatchNorm uses its running statistics), so nothing is recompiled for it."""

    def __init__(self, net, tasks, many, batch_size: int, compile: bool, name: str):
        self.net, self.tasks, self.many, self.batch_size = net, tasks, many, batch_size
        self.fn = _compiled_softmax(net, tasks, many, name) if compile else None

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.fn is None:
            return _softmax_prompts(self.net, x, self.tasks, self.many)
        n = x.shape[0]
        if n < self.batch_size:
            x = torch.cat([x, x.new_zeros((self.batch_size - n,) + tuple(x.shape[1:]))])
        try:
            out = self.fn(x)
        except Exception as e:  # e.g. no C++ compiler for Inductor's CPU code
            import warnings

            warnings.warn(f"compiling the network failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                          "running it eagerly", stacklevel=2)
            _COMPILED[:] = [None, None, None]
            self.fn = None
            return _softmax_prompts(self.net, x[:n], self.tasks, self.many)
        return [o[:n] for o in out]


def sliding_window_predict(net, image: np.ndarray, task_id, patch_size=(96, 96, 96), stride=(16, 16, 4),
                           protocol: str = "paper", batch_size: int = 8, device=None, *,
                           overlap: float | Sequence[float] = 0.5, amp=False, compile: bool = False,
                           name: str = "image"):
    """Segment one volume with a sliding window.

    Args:
        net: a network called as ``net(x, task_ids)`` -> logits (B, C, *patch) (C = 2 for VerSemiNet).
            When ``task_id`` is a list, a network with ``backbone(x)`` and ``head(feats, task)`` (as
            :class:`~versemi.model.VerSemiNet`) runs its backbone once per window batch and its head once
            per prompt; other networks are called once per prompt.
        image: (D0, D1, D2) array in the axis order of the prepared HDF5 (the authors' (w, h, d)); any real
            dtype, used as float32; must be finite.
        task_id: one prompt (int) or a list of prompts.
        patch_size: window size per array axis; each divisible by 16 and >= 32.
        stride: window step per array axis (``protocol="paper"`` only): ``(16, 16, 4)`` is the authors'
            ``stride_xy=16, stride_z=4``.
        protocol: ``"paper"`` or ``"fast"`` (see below).
        batch_size: windows per forward pass (MONAI's ``sw_batch_size`` for ``"fast"``).
        device: where inputs and accumulators live; ``None`` -> the network's device. The network must
            already be on that device (it is not moved).
        overlap: window overlap fraction for ``protocol="fast"`` (one value or one per axis).
        amp: ``False`` (default; the paper protocol is fp32), ``"bf16"`` or ``"fp16"`` autocast, CUDA only.
            Softmax and accumulation stay in float32.
        compile: run the network through ``torch.compile`` (Inductor) with its weights frozen as
            constants (convolution + normalisation + activation fusion, prepacked weights). About 2x faster
            per window on a CPU (``bench/eval_speed.py``), after a one-off compilation of several seconds
            that is reused for every later call with the same network, weights, prompts and window shape.
            Same protocol and windows; the logits differ from eager execution by float32 rounding
            (~1e-5), so a label can change only where the two class probabilities tie to that precision.
            Falls back to eager execution, with a warning, where compilation fails.
        name: what to call the volume in error messages (e.g. the case file).

    Returns:
        ``(label_map, prob_map)``: uint8 (D0, D1, D2) argmax labels and float32 (C, D0, D1, D2) averaged
        softmax; lists of those (one per prompt, in order) when ``task_id`` is a list.

    ``protocol="paper"`` is the authors' ``test_single_case``: axes smaller than the patch are zero padded
    (left ``pad // 2``, right the rest); per axis ``n = ceil((dim - patch) / stride) + 1`` windows start at
    ``min(stride * i, dim - patch)``; softmax outputs are summed and divided by the per-voxel window count;
    argmax (ties -> class 0, as ``np.argmax``); the padding is cropped away. Differences are of execution
    only: windows are batched (``batch_size``), the network runs in eval mode under
    ``torch.inference_mode`` (its previous train/eval flags are restored), and the sums stay on the device,
    added window by window in the authors' (x, y, z) order so the float32 sums match theirs; the count map
    is built as the product of per-axis counts (exact integers). Results can differ from a one-window-at-a-time
    loop only through the network's own batch-size dependent rounding (~1e-7).

    ``protocol="fast"`` is MONAI ``sliding_window_inference`` on the softmax maps with ``mode="gaussian"``
    (sigma 0.125 × patch), the given ``overlap`` (0.5 -> step = patch / 2, i.e. 48 voxels for a 96³ patch,
    against 16/16/4: about 25× fewer windows for an LA volume) and the same zero padding of axes smaller
    than the patch. It differs from the paper protocol in (1) fewer windows, (2) Gaussian rather than
    uniform weights, favouring window centres, and therefore (3) slightly different probabilities and
    labels near decision boundaries. ``stride`` is ignored by this protocol.
    """
    image = _check_image(image, name)
    patch = _check_patch(patch_size, name)
    if protocol not in PROTOCOLS:
        raise VersemiError(f"{name}: unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise VersemiError(f"{name}: batch_size must be a positive integer, got {batch_size!r}")
    tasks, many = _check_tasks(net, task_id, name)
    net_dev = _net_device(net)
    dev = net_dev if device is None else get_device(str(device))
    if dev.type != net_dev.type or (dev.index is not None and net_dev.index is not None and dev.index != net_dev.index):
        raise VersemiError(f"{name}: the network is on {net_dev} but device={device!r}; move it first "
                           f"(net.to(...)) or pass device=None")
    ac = _autocast(amp, dev, name)

    with _eval_mode(net), torch.inference_mode():
        runner = _WindowRunner(net, tasks, many, int(batch_size), bool(compile), name)
        if protocol == "paper":
            strides = _triple(stride, "stride", name)
            if any(s < 1 for s in strides):
                raise VersemiError(f"{name}: stride must be positive, got {strides}")
            probs = _predict_paper(runner, image, patch, strides, int(batch_size), dev, ac)
        else:
            probs = _predict_fast(runner, image, patch, overlap, int(batch_size), dev, ac, name)
        prob_np = [p.cpu().numpy() for p in probs]  # the one transfer per prompt
    labels = [np.argmax(p, axis=0).astype(np.uint8) for p in prob_np]
    if many:
        return labels, prob_np
    return labels[0], prob_np[0]


def _predict_paper(runner, image, patch, strides, batch_size, dev, ac) -> list[torch.Tensor]:
    shape = image.shape
    pads = _centre_pad(shape, patch)
    img = torch.from_numpy(np.ascontiguousarray(image)).to(dev)
    if any(sum(p) for p in pads):
        # F.pad takes pads for the last axis first
        img = F.pad(img, [v for p in reversed(pads) for v in p], mode="constant", value=0.0)
    padded = tuple(img.shape)
    starts = [window_starts(padded[a], patch[a], strides[a]) for a in range(3)]
    windows = [(xs, ys, zs) for xs in starts[0] for ys in starts[1] for zs in starts[2]]

    # per-voxel window count = product of per-axis coverage counts (windows are a Cartesian grid)
    axis_counts = []
    for a in range(3):
        c = torch.zeros(padded[a], dtype=torch.float32, device=dev)
        for s in starts[a]:
            c[s:s + patch[a]] += 1
        axis_counts.append(c)
    count = axis_counts[0][:, None, None] * axis_counts[1][None, :, None] * axis_counts[2][None, None, :]

    scores = None
    px, py, pz = patch
    for b0 in range(0, len(windows), batch_size):
        batch = windows[b0:b0 + batch_size]
        x = torch.stack([img[xs:xs + px, ys:ys + py, zs:zs + pz] for xs, ys, zs in batch])[:, None]
        with ac:
            out = runner(x)
        if scores is None:
            scores = [torch.zeros((o.shape[1],) + padded, dtype=torch.float32, device=dev) for o in out]
        for s_map, o in zip(scores, out):
            for k, (xs, ys, zs) in enumerate(batch):
                s_map[:, xs:xs + px, ys:ys + py, zs:zs + pz] += o[k]
    crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, shape))
    return [(s / count[None])[(slice(None),) + crop] for s in scores]


def _predict_fast(runner, image, patch, overlap, batch_size, dev, ac, name) -> list[torch.Tensor]:
    from monai.inferers import sliding_window_inference

    ov = overlap if isinstance(overlap, (list, tuple)) else [overlap] * 3
    if len(ov) != 3 or any(not 0 <= float(o) < 1 for o in ov):
        raise VersemiError(f"{name}: overlap must be in [0, 1) (one value or three), got {overlap!r}")
    img = torch.from_numpy(np.ascontiguousarray(image)).to(dev)[None, None]
    n_classes: list[int] = []

    def predictor(x):
        with ac:
            out = runner(x)
        if not n_classes:
            n_classes.extend(o.shape[1] for o in out)
        return torch.cat(out, dim=1)

    out = sliding_window_inference(img, roi_size=patch, sw_batch_size=batch_size, predictor=predictor,
                                   overlap=[float(o) for o in ov], mode="gaussian", sigma_scale=0.125,
                                   padding_mode="constant", cval=0.0, sw_device=dev, device=dev)
    out = torch.as_tensor(out)[0].float()
    return list(torch.split(out, n_classes, dim=0))


# ---------------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------------
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
    from skimage.measure import label

    m = np.asarray(mask)
    lab = label(m.astype(bool), connectivity=m.ndim)
    if lab.max() == 0:
        return np.zeros_like(m)
    keep = lab == (int(np.argmax(np.bincount(lab.ravel())[1:])) + 1)
    return keep.astype(m.dtype, copy=False)


# ---------------------------------------------------------------------------------------------------
# evaluation over cases
# ---------------------------------------------------------------------------------------------------
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
    import pandas as pd
    from tqdm.auto import tqdm

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
