"""The distance to the machine's limit: FLOPs of one training step and one inference window, and the
fraction of this machine's attainable FLOP/s that they reach.

    python -m bench.flops --out results/bench [--profiles demo] [--methods sup_only versemi] [--threads 1]

* **Attainable FLOP/s** of this machine with ``threads`` torch threads: the fastest of ``reps`` runs of a large
  float32 matrix product (2 n^3 FLOPs, n = 2048) and of a large 3D convolution (the FLOPs counted by
  ``torch.utils.flop_counter``: 2 C_in C_out k^3 per output voxel) — the roofline of the two kinds of work a
  V-Net does.
* **Our step**: one training step of each method (``Method.train_step``: every forward, backward and
  optimiser update) under the profile's SOTA configuration (``make_config(method, profile)``), on a random
  batch of the configuration's sizes; its FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode``
  (matrix products and convolutions, forward and backward; element-wise work is not counted, so the
  fraction is of the counted work) and its fastest time of ``reps``.
* **Our inference**: one sliding window of the evaluated network (``eval_patch``, batch 1, ``no_grad``).

Writes ``<out>/flops.csv`` (lines of other profiles kept): ``profile, what, method, gflop, seconds,
gflop_per_s, of_matmul, of_conv3d`` (the achieved GFLOP/s as a fraction of each attainable rate) with the
machine's columns. The authors' step is not counted here: ``bench/train_speed.py`` counts both call patterns
side by side (``flop_ratio``, ``efficiency_ratio`` in ``train_speed.csv``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import save_profiles
from bench.method_costs import _batch
from versemi.config import make_config
from versemi.methods import StepContext, get_method
from versemi.utils import seed_everything


def _best(fn, reps: int) -> float:
    fn()   # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def count_flops(fn) -> int:
    """FLOPs of one call of ``fn`` as counted by ``torch.utils.flop_counter`` (matmuls and convolutions,
    forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def attainable(reps: int = 3, n: int = 2048, conv=(2, 32, 48, 3)) -> dict[str, tuple[float, float]]:
    """``{"matmul": (gflop, seconds), "conv3d": (gflop, seconds)}``: a float32 ``n x n`` matrix product and
    a 3D convolution of ``conv = (batch, channels, edge, kernel)`` (same padding, channels in = out), each
    the fastest of ``reps`` runs."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    mm = 2.0 * n ** 3
    bsz, ch, edge, k = conv
    x = torch.randn(bsz, ch, edge, edge, edge)
    layer = torch.nn.Conv3d(ch, ch, k, padding=k // 2, bias=False)
    with torch.no_grad():
        cf = count_flops(lambda: layer(x))
        return {"matmul": (mm / 1e9, _best(lambda: a @ b, reps)),
                "conv3d": (cf / 1e9, _best(lambda: layer(x), reps))}


def step_and_window(profile: str, method: str, reps: int = 3) -> dict[str, tuple[float, float]]:
    """``{"train_step": (gflop, seconds), "inference_window": (gflop, seconds)}`` of ``method`` under
    ``profile`` (module docstring)."""
    cfg = make_config(method, profile)
    m = get_method(method, cfg.options)
    seed_everything(0)
    nets = {k: v.train() for k, v in m.build_networks(cfg).items()}
    opts = m.build_optimizers(cfg, nets)
    lab = _batch(cfg.batch_size, cfg.patch, 1, "cpu")
    unlab = _batch(cfg.unlabeled_batch_size, cfg.patch, 2, "cpu") if m.uses_unlabeled else None
    stage, n = m.stages(cfg.steps)[-1]    # the last stage: every term of the method is on
    offset = sum(k for _, k in m.stages(cfg.steps)[:-1])
    calls = iter(range(10 ** 6))

    def step():
        ctx = StepContext(nets=nets, optimizers=opts, stage=stage, step=offset + n - 1, stage_step=n - 1,
                          stage_steps=n, rng=np.random.default_rng(next(calls)), options=m.options,
                          tasks=cfg.task_prompts, cfg=cfg)
        m.train_step(ctx, lab, unlab)

    out = {"train_step": (count_flops(step) / 1e9, _best(step, reps))}
    net = nets[m.eval_network].eval()
    window = torch.randn(1, 1, *cfg.eval_patch)
    task = torch.tensor([cfg.task_prompts[0]])
    with torch.no_grad():
        out["inference_window"] = (count_flops(lambda: net(window, task)) / 1e9, _best(lambda: net(window, task), reps))
    return out


def flops_table(profiles=("demo",), methods=("sup_only", "versemi"), reps: int = 3, threads: int = 1) -> pd.DataFrame:
    """The rows of ``flops.csv`` (module docstring) measured with ``threads`` torch threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        peak = attainable(reps)
        rows = []
        for profile in profiles:
            for what, (g, s) in peak.items():
                rows.append({"profile": profile, "what": f"attainable_{what}", "method": "", "gflop": g, "seconds": s})
            for method in methods:
                for what, (g, s) in step_and_window(profile, method, reps).items():
                    rows.append({"profile": profile, "what": what, "method": method, "gflop": g, "seconds": s})
    finally:
        torch.set_num_threads(before)
    df = pd.DataFrame(rows)
    df["gflop_per_s"] = df["gflop"] / df["seconds"]
    for what in ("matmul", "conv3d"):
        g, s = peak[what]
        df[f"of_{what}"] = df["gflop_per_s"] / (g / s)
    df["threads"] = int(threads)
    df["reps"] = int(reps)
    return df


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--profiles", nargs="+", default=["demo"])
    ap.add_argument("--methods", nargs="+", default=["sup_only", "versemi"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="one repetition")
    args = ap.parse_args(argv)
    df = flops_table(args.profiles, args.methods, 1 if args.quick else args.reps, args.threads)
    save_profiles(df, Path(args.out) / "flops.csv", args.profiles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
