"""Speed and agreement of the evaluation protocols (not a test).

Times, on one random volume with a randomly initialised VerSemiNet:

* ``reference``: a one-window-at-a-time routine in the style of the authors' ``test_single_case``
  (numpy slice -> tensor -> device, forward, softmax, copy back, numpy accumulation), written here
  independently;
* ``paper``: :func:`versemi.evaluate.sliding_window_predict` with ``protocol="paper"`` (batched windows,
  on-device accumulation);
* ``fast``: the same function with ``protocol="fast"`` (MONAI, Gaussian blending, overlap 0.5);
* ``metrics``: :func:`versemi.evaluate.case_metrics` against medpy's ``dc``/``jc``/``hd95``/``asd`` on a
  synthetic prediction/ground-truth pair of the same volume size.

It also reports the largest probability difference between ``paper`` and ``reference`` and the fraction of
voxels whose argmax differs between ``fast`` and ``paper``. With an untrained network that fraction says
little about a trained one; rerun with a checkpoint-loaded network for that.

Usage::

    .venv/bin/python -m bench.eval_speed --out results/bench            # LA size, paper config
    .venv/bin/python -m bench.eval_speed --out results/bench --quick    # 80x80x64, patch 64

Writes ``<out>/eval_speed.csv`` atomically (columns: what, config, seconds, ratio, value, n_windows,
cpu_count, threads, torch, device) and prints the table. ``ratio`` is reference seconds / row seconds
(a speed-up; > 1 is faster than the reference) for timings, medpy seconds / ours for metrics.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

from versemi.evaluate import case_metrics, sliding_window_predict, window_starts
from versemi.model import VerSemiNet
from versemi.utils import atomic_path, get_device


def unbatched_reference(net, image: np.ndarray, task_id: int, patch, stride, device):
    """Per-window loop with host-side numpy accumulation (the authors' way of doing it).

    Zero-pads the axes shorter than the patch around the centre, visits windows in x, y, z order at
    ``min(stride * i, dim - patch)``, adds each window's softmax (copied back to host memory) into a
    float32 numpy sum and a numpy hit counter, divides, takes ``np.argmax`` and removes the padding.
    """
    orig = image.shape
    pad = [(max(p - s, 0) // 2, max(p - s, 0) - max(p - s, 0) // 2) for s, p in zip(orig, patch)]
    vol = np.pad(image, pad) if any(a or b for a, b in pad) else image
    total = np.zeros((2,) + vol.shape, dtype=np.float32)
    hits = np.zeros(vol.shape, dtype=np.float32)
    prompt = torch.tensor([task_id])
    net.eval()
    with torch.no_grad():
        for a in window_starts(vol.shape[0], patch[0], stride[0]):
            for b in window_starts(vol.shape[1], patch[1], stride[1]):
                for c in window_starts(vol.shape[2], patch[2], stride[2]):
                    box = (slice(a, a + patch[0]), slice(b, b + patch[1]), slice(c, c + patch[2]))
                    chunk = torch.from_numpy(np.ascontiguousarray(vol[box])).float()[None, None].to(device)
                    soft = F.softmax(net(chunk, prompt.to(device)), dim=1).cpu().numpy()[0]
                    total[(slice(None),) + box] += soft
                    hits[box] += 1
    mean = total / hits[None]
    keep = tuple(slice(lo, lo + n) for (lo, _), n in zip(pad, orig))
    return np.argmax(mean, axis=0)[keep].astype(np.uint8), mean[(slice(None),) + keep]


def _timed(fn, device, repeats: int = 1):
    """(fastest wall time over ``repeats`` calls, result of the last call)."""
    best, out = math.inf, None
    for _ in range(max(1, repeats)):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _synthetic_pair(shape, rng):
    grid = np.indices(shape).astype(np.float32)
    centre = np.array(shape, np.float32) / 2
    radii = np.array(shape, np.float32) / 4
    gt = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1
    noise = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    pred = (sum(((g - c - 2) / (r * 1.1)) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1) ^ (noise > 0.12)
    return pred, gt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/bench", help="output folder (eval_speed.csv)")
    ap.add_argument("--quick", action="store_true", help="volume 80x80x64, patch 64 (CPU-friendly)")
    ap.add_argument("--shape", type=int, nargs=3, help="volume shape (default 112 112 88, quick 80 80 64)")
    ap.add_argument("--patch", type=int, nargs=3, help="patch (default 96 96 96, quick 64 64 64)")
    ap.add_argument("--stride", type=int, nargs=3, default=(16, 16, 4))
    ap.add_argument("--filters", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--overlap", type=float, default=0.5, help="fast protocol overlap")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="time each row this many times, keep the fastest")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    shape = tuple(args.shape or ((80, 80, 64) if args.quick else (112, 112, 88)))
    patch = tuple(args.patch or ((64, 64, 64) if args.quick else (96, 96, 96)))
    stride = tuple(args.stride)
    device = get_device(args.device)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    net = VerSemiNet(n_filters=args.filters).to(device).eval()
    image = (ndimage.gaussian_filter(rng.normal(size=shape), 3.0) * 8).astype(np.float32)
    task = 2

    padded = [max(s, p) for s, p in zip(shape, patch)]
    n_win = math.prod(len(window_starts(d, p, s)) for d, p, s in zip(padded, patch, stride))
    n_fast = math.prod(math.ceil((d - p) / max(int(p * (1 - args.overlap)), 1)) + 1 for d, p in zip(padded, patch))
    cfg = (f"f={args.filters} vol={'x'.join(map(str, shape))} patch={'x'.join(map(str, patch))} "
           f"stride={'/'.join(map(str, stride))} bs={args.batch_size}")

    # warm-up (imports, allocator, MKLDNN/cuDNN plans) so that no row pays for first-call setup
    import monai.inferers  # noqa: F401  (imported lazily by the fast protocol)
    from medpy.metric import binary as mb

    with torch.inference_mode():
        net(torch.zeros((1, 1) + patch, device=device), task)

    t_ref, (lab_ref, prob_ref) = _timed(lambda: unbatched_reference(net, image, task, patch, stride, device), device, args.repeats)
    t_pap, (lab_pap, prob_pap) = _timed(lambda: sliding_window_predict(
        net, image, task, patch, stride, "paper", args.batch_size, device=None), device, args.repeats)
    t_fast, (lab_fast, _) = _timed(lambda: sliding_window_predict(
        net, image, task, patch, stride, "fast", args.batch_size, overlap=args.overlap), device, args.repeats)

    pred, gt = _synthetic_pair(shape, rng)
    t_medpy, ref_m = _timed(lambda: (mb.dc(pred, gt), mb.jc(pred, gt), mb.hd95(pred, gt), mb.asd(pred, gt)), device, args.repeats)
    t_ours, our_m = _timed(lambda: case_metrics(pred, gt), device, args.repeats)
    metric_err = max(abs(a - our_m[k]) for a, k in zip(ref_m, ("dice", "jaccard", "hd95", "asd")))

    base = {"cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": (torch.cuda.get_device_name(device) if device.type == "cuda" else
                       f"cpu ({platform.processor() or platform.machine()})")}
    rows = [
        dict(what="reference_unbatched_numpy", config=cfg, seconds=t_ref, ratio=1.0, value=math.nan, n_windows=n_win),
        dict(what="paper_batched_on_device", config=cfg, seconds=t_pap, ratio=t_ref / t_pap, value=math.nan,
             n_windows=n_win),
        dict(what=f"fast_monai_gaussian_overlap{args.overlap:g}", config=cfg, seconds=t_fast, ratio=t_ref / t_fast,
             value=math.nan, n_windows=n_fast),
        dict(what="paper_vs_reference_max_abs_prob_diff", config=cfg, seconds=math.nan, ratio=math.nan,
             value=float(np.abs(prob_pap - prob_ref).max()), n_windows=n_win),
        dict(what="paper_vs_reference_label_disagreement_fraction", config=cfg, seconds=math.nan, ratio=math.nan,
             value=float((lab_pap != lab_ref).mean()), n_windows=n_win),
        dict(what="fast_vs_paper_label_disagreement_fraction", config=cfg, seconds=math.nan, ratio=math.nan,
             value=float((lab_fast != lab_pap).mean()), n_windows=n_fast),
        dict(what="metrics_medpy_dc_jc_hd95_asd", config=f"vol={'x'.join(map(str, shape))} synthetic pair",
             seconds=t_medpy, ratio=1.0, value=math.nan, n_windows=0),
        dict(what="metrics_case_metrics", config=f"vol={'x'.join(map(str, shape))} synthetic pair",
             seconds=t_ours, ratio=t_medpy / t_ours, value=metric_err, n_windows=0),
    ]
    rows = [{**r, **base} for r in rows]

    import pandas as pd
    df = pd.DataFrame(rows)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "eval_speed.csv")
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 60):
        print(df[["what", "seconds", "ratio", "value", "n_windows"]].to_string(index=False))
    print(f"config: {cfg}; foreground fraction paper={lab_pap.mean():.4f}; {base}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
