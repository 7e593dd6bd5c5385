"""Sliding-window inference: one volume in, argmax labels and averaged softmax maps out.

Two protocols share one entry point, :func:`sliding_window_predict`:

* ``protocol="paper"`` reproduces the authors' released ``test_single_case`` (``test_util.py`` of
  maxwell0027/VerSemi; patch 96³, stride 16/16/4, uniform averaging of softmax over overlapping windows,
  argmax), but batches the windows and keeps the running sums on the network's device;
* ``protocol="fast"`` is MONAI's ``sliding_window_inference`` with Gaussian blending and a coarser,
  overlap-defined stride;
* ``protocol="whole"`` runs the fully convolutional network once on the whole volume (zero padded to a
  multiple of 16 voxels per axis, and to at least the patch): no window overlaps at all, so it costs about
  the volume's voxels instead of the windows'. It is a measurement, not a recommendation: a network trained
  on patches sees another context on a whole volume, and ``bench/protocols.py`` (``results/bench/protocols.csv``)
  measures how far its Dice then moves from the paper protocol's on a trained run's real test cases.

The fast and whole protocols are offered beside the paper protocol, never substituted for it; the
difference between them is measured by ``bench/eval_speed.py`` and ``bench/protocols.py``.

Either protocol can run the network through ``torch.compile`` with frozen weights (``compile=True``):
the same windows and arithmetic, about twice as fast per window on a CPU, float32 rounding differences
only (``bench/eval_speed.py`` measures speed and label agreement against the authors' own routine).

Shapes: an image is a (D0, D1, D2) array in the axis order of the prepared HDF5 volumes (the authors'
``(w, h, d)``); windows are (B, 1, *patch) tensors; outputs are uint8 (D0, D1, D2) labels and float32
(C, D0, D1, D2) probabilities. Patch, stride and overlap are in voxels (overlap as a fraction).

Also here: the input checks shared with other modules (:func:`check_patch`, the patch sizes VerSemiNet
accepts), :func:`net_device` and :func:`window_starts` (the authors' window enumeration on one axis).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch.nn import functional as F

from versemi.utils import VersemiError, get_device

try:  # the compiler stack; without it compile=True runs the network eagerly, with a warning
    import torch._dynamo
    import torch._inductor.config as inductor_config
except Exception as e:  # pragma: no cover - torch builds without the compiler stack
    inductor_config = None
    _NO_COMPILER = str(e)

PROTOCOLS = ("paper", "fast", "whole")
WHOLE_MAX_VOXELS = 2 ** 26   # protocol="whole": larger (padded) volumes are an error, not an out-of-memory kill


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


def check_patch(patch_size, name: str) -> tuple[int, int, int]:
    """``patch_size`` (an int or three ints, voxels per array axis) as a 3-tuple that VerSemiNet accepts
    (every axis divisible by 16 and at least 32); a :class:`~versemi.utils.VersemiError` naming ``name``
    otherwise."""
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


def net_device(net) -> torch.device:
    """The device of the network's first parameter (CPU for a network without parameters)."""
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


def _padded_tensor(image: np.ndarray, pads: list[tuple[int, int]], dev: torch.device) -> torch.Tensor:
    """``image`` on ``dev``, zero padded by the (left, right) voxels of each axis in ``pads``."""
    img = torch.from_numpy(np.ascontiguousarray(image)).to(dev)
    if any(sum(p) for p in pads):
        # F.pad takes pads for the last axis first
        img = F.pad(img, [v for p in reversed(pads) for v in p], mode="constant", value=0.0)
    return img


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
    key = (_weights_key(net), tuple(tasks), many)
    if _COMPILED[0] is net and _COMPILED[1] == key:
        return _COMPILED[2]
    if inductor_config is None:  # pragma: no cover - torch builds without the compiler stack
        warnings.warn(f"{name}: torch.compile is not available ({_NO_COMPILER}); running the network eagerly",
                      stacklevel=3)
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
        protocol: ``"paper"``, ``"fast"`` or ``"whole"`` (see below).
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

    ``protocol="whole"`` pads every axis with zeros (left ``pad // 2``, as the paper protocol) to the larger
    of the patch and the next multiple of 16 (the network's downsampling factor), runs the network once on
    the padded volume (eval mode: BatchNorm uses its running statistics, so nothing depends on the window)
    and crops the softmax back. Every voxel sees the context of the whole volume instead of a window's, so
    probabilities differ from the windowed protocols near window borders; ``stride``, ``overlap`` and
    ``batch_size`` are ignored. Padded volumes above ``WHOLE_MAX_VOXELS`` voxels are an error (use a windowed
    protocol). For a compiled network each new volume shape is one compilation.
    """
    image = _check_image(image, name)
    patch = check_patch(patch_size, name)
    if protocol not in PROTOCOLS:
        raise VersemiError(f"{name}: unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise VersemiError(f"{name}: batch_size must be a positive integer, got {batch_size!r}")
    tasks, many = _check_tasks(net, task_id, name)
    net_dev = net_device(net)
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
        elif protocol == "fast":
            probs = _predict_fast(runner, image, patch, overlap, int(batch_size), dev, ac, name)
        else:
            probs = _predict_whole(runner, image, patch, dev, ac, name)
        prob_np = [p.cpu().numpy() for p in probs]  # the one transfer per prompt
    labels = [np.argmax(p, axis=0).astype(np.uint8) for p in prob_np]
    if many:
        return labels, prob_np
    return labels[0], prob_np[0]


def _predict_paper(runner, image, patch, strides, batch_size, dev, ac) -> list[torch.Tensor]:
    shape = image.shape
    pads = _centre_pad(shape, patch)
    img = _padded_tensor(image, pads, dev)
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


def whole_shape(shape: Sequence[int], patch: Sequence[int], multiple: int = 16) -> tuple[int, int, int]:
    """The padded shape ``protocol="whole"`` runs the network on: per axis the larger of the patch and the
    axis length rounded up to ``multiple`` voxels."""
    return tuple(max(int(p), -(-int(s) // multiple) * multiple) for s, p in zip(shape, patch))


def _predict_whole(runner, image, patch, dev, ac, name) -> list[torch.Tensor]:
    shape = image.shape
    padded = whole_shape(shape, patch)
    if math.prod(padded) > WHOLE_MAX_VOXELS:
        raise VersemiError(f"{name}: volume {tuple(shape)} padded to {padded} has more than {WHOLE_MAX_VOXELS} "
                           "voxels for protocol='whole'; use protocol='paper' or 'fast' (sliding windows)")
    pads = _centre_pad(shape, padded)
    img = _padded_tensor(image, pads, dev)
    runner.batch_size = 1
    with ac:
        out = runner(img[None, None])
    crop = (slice(None),) + tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, shape))
    return [o[0].float()[crop] for o in out]


def _predict_fast(runner, image, patch, overlap, batch_size, dev, ac, name) -> list[torch.Tensor]:
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
