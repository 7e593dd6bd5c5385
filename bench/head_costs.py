"""What the dynamic head costs: parameters and step times of the three head variants of VerSemiNet.

    python -m bench.head_costs --out results/bench [--profiles smoke demo paper] [--reps 3] [--batch N]

For each profile (default: every profile the notebooks run with), the network of that profile
(``make_config("versemi", profile)``: width f, training patch, labeled batch size) is built three times,
with the dynamic head (global branch + controller), one static head per prompt (``multi``) and a single
static head (``none``), and timed on the current device (:func:`head_variant_costs`). Notebook
``04_ablations`` shows the committed result instead of timing at build time.

Writes ``<out>/head_costs.csv`` atomically (the lines of profiles not measured in this call are kept):
one line per (profile, head) with the columns of
:func:`head_variant_costs`, ``profile``, ``n_filters``, and the machine (``platform, python, torch,
cpus, cuda``: :func:`versemi.provenance.machine`). Times are of that machine: read them as ratios.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench import save_profiles
from versemi.companion.tables import HEADS, head_parameter_counts
from versemi.config import make_config, profile_names
from versemi.model import VerSemiNet
from versemi.utils import VersemiError, get_device


def head_variant_costs(n_filters: int = 8, patch: Sequence[int] = (32, 32, 32), batch: int = 2, reps: int = 3,
                       num_tasks: int = 4, device: str | None = None, backward: bool = True,
                       seed: int = 0) -> pd.DataFrame:
    """Parameter counts (:func:`versemi.companion.tables.head_parameter_counts`) and measured step times
    of the three head variants on ``device``.

    Each variant is a fresh network (seed ``seed``); each runs ``reps`` timed forward passes (eval mode,
    no grad; one prompt per sample, prompts cycling 1..T) and ``reps`` timed forward + backward passes
    (train mode, the sum of the logits as a stand-in loss) on the same random batch ``(batch, 1, *patch)``,
    after one untimed warm-up of each; the variants take turns (round robin) within each repetition.
    Times are the fastest of the ``reps`` passes in milliseconds (the ``timeit`` convention: on a shared
    machine the other processes only ever add time; CUDA is synchronised around each pass). Columns:
    ``head, params_total, params_head, total_vs_dynamic_%, head_vs_dynamic_%, forward_ms, train_step_ms,
    forward_vs_dynamic_%, train_step_vs_dynamic_%, device, patch, batch, reps``.
    """
    if reps < 1 or batch < 1:
        raise VersemiError(f"reps and batch must be >= 1, got reps={reps}, batch={batch}")
    dev = get_device(device)
    patch = tuple(int(p) for p in patch)
    counts = head_parameter_counts(n_filters, num_tasks).set_index("head")

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, 1, *patch), generator=gen).to(dev)
    tasks = torch.tensor([1 + i % num_tasks for i in range(batch)], device=dev)
    nets = {}
    for head in HEADS:
        torch.manual_seed(seed)
        nets[head] = VerSemiNet(n_filters=n_filters, num_tasks=num_tasks, head=head).to(dev)

    def forward(net):
        net.eval()
        with torch.no_grad():
            net(x, tasks)

    def train_step(net):
        net.train()
        net.zero_grad(set_to_none=True)
        net(x, tasks).sum().backward()

    def timed(fn, net) -> float:
        sync()
        t0 = time.perf_counter()
        fn(net)
        sync()
        return time.perf_counter() - t0

    kinds = [("forward", forward)] + ([("train_step", train_step)] if backward else [])
    times = {(h, k): [] for h in HEADS for k, _ in kinds}
    for k, fn in kinds:
        for h in HEADS:  # untimed warm-up
            fn(nets[h])
        for _ in range(reps):  # round robin, so that a change of the machine's load hits every variant
            for h in HEADS:
                times[(h, k)].append(timed(fn, nets[h]))
    lines = []
    for head in HEADS:
        c = counts.loc[head]
        lines.append({"head": head, "params_total": int(c["params_total"]), "params_head": int(c["params_head"]),
                      "total_vs_dynamic_%": float(c["total_vs_dynamic_%"]),
                      "head_vs_dynamic_%": float(c["head_vs_dynamic_%"]),
                      "forward_ms": 1000.0 * float(np.min(times[(head, "forward")])),
                      "train_step_ms": 1000.0 * float(np.min(times[(head, "train_step")])) if backward else math.nan})
    del nets
    df = pd.DataFrame(lines)
    dyn = df.set_index("head").loc["dynamic"]
    df["forward_vs_dynamic_%"] = 100.0 * (df["forward_ms"] / dyn["forward_ms"] - 1.0)
    df["train_step_vs_dynamic_%"] = 100.0 * (df["train_step_ms"] / dyn["train_step_ms"] - 1.0)
    df["device"] = str(dev)
    df["patch"] = "x".join(map(str, patch))
    df["batch"] = batch
    df["reps"] = reps
    return df


def profile_costs(profile: str, reps: int = 3, batch: int | None = None, device: str | None = None) -> pd.DataFrame:
    """:func:`head_variant_costs` of ``profile``'s VerSemi network (width, patch and, unless ``batch`` is
    given, labeled batch size of ``make_config("versemi", profile)``), with ``profile`` and ``n_filters``."""
    cfg = make_config("versemi", profile)
    df = head_variant_costs(cfg.n_filters, cfg.patch, batch=batch or cfg.batch_size, reps=reps, device=device)
    df.insert(0, "profile", profile)
    df.insert(1, "n_filters", cfg.n_filters)
    return df


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--profiles", nargs="+", default=None,
                    help="default: every notebook profile (with --quick: the phantom ones)")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per variant (the fastest is kept)")
    ap.add_argument("--batch", type=int, default=None, help="batch of the timing (default: the profile's)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--quick", action="store_true", help="one repetition, phantom profiles only")
    args = ap.parse_args(argv)
    reps = 1 if args.quick else args.reps
    if args.profiles is None:
        kinds = set(profile_names("phantom")) if args.quick else set(profile_names("notebooks"))
        args.profiles = [p for p in profile_names("notebooks") if p in kinds]
    frames = []
    for profile in args.profiles:
        print(f"head costs: {profile} ...", file=sys.stderr, flush=True)
        frames.append(profile_costs(profile, reps=reps, batch=args.batch, device=args.device))
    save_profiles(pd.concat(frames, ignore_index=True), Path(args.out) / "head_costs.csv", args.profiles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
