"""What each compared method costs: parameters and the time of one training step, side by side.

    python -m bench.method_costs --out results/bench [--profiles demo paper] [--reps 3] [--methods ...]

For each profile (default: ``demo``; ``paper`` is added on CUDA, where its 96^3 batches fit a budget) and
each registered method, the run configuration of the SOTA group's multi-dataset row
(``make_config(method, profile)``: the Uni- variant, or the universal model itself; the paper profile with
the method's released settings) builds the method's networks and optimisers exactly as the trainer does
(``Method.build_networks`` / ``build_optimizers``), and one training step (``Method.train_step``: every
forward, backward and optimiser update of the method, teachers' EMA excluded) is timed on a random batch of
the configuration's labeled and unlabeled batch sizes and patch. The methods take turns (round robin) in
every repetition after one untimed warm-up step each, and the fastest repetition is kept (the ``timeit``
convention: on a shared machine the other processes only ever add time).

Writes ``<out>/method_costs.csv`` atomically (lines of profiles not measured in this call are kept): one
line per (profile, method) with ``params_eval`` (the evaluated network), ``params_trained`` (every network
with an optimiser: discriminators, linear maps...), ``params_all`` (teachers included), ``step_ms``,
``step_vs_sup_only`` (the ratio to Sup-only measured in the same call), the batch and patch, and the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench import save_profiles
from versemi.config import make_config
from versemi.methods import NUM_TASKS, StepContext, get_method, method_names
from versemi.utils import VersemiError, get_device, seed_everything

PROFILES = ("demo",)


def _batch(n: int, patch, seed: int, device) -> dict:
    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(n, *patch, dtype=torch.long)
    d, h, w = patch
    label[:, d // 4: 3 * d // 4, h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
    image = (label.float() + 0.3 * torch.randn(n, *patch, generator=g)).unsqueeze(1)
    task = torch.arange(n) % NUM_TASKS + 1
    return {"image": image.to(device), "label": label.to(device), "task": task.to(device)}


def build(name: str, profile: str, dev: torch.device, **overrides) -> dict:
    """The networks, optimisers and one random labeled (and unlabeled) batch of method ``name`` under
    ``profile`` (``make_config(name, profile, **overrides)``), built as the trainer builds them, positioned at
    the last stage (every term of the method on); with the parameter counts of the module docstring."""
    cfg = make_config(name, profile, **overrides)
    method = get_method(name, cfg.options)
    seed_everything(0)
    nets = {k: v.to(dev).train() for k, v in method.build_networks(cfg).items()}
    opts = method.build_optimizers(cfg, nets)
    trained = {id(p) for o in opts.values() for g in o.param_groups for p in g["params"]}
    lab = _batch(cfg.batch_size, cfg.patch, 1, dev)
    unlab = _batch(cfg.unlabeled_batch_size, cfg.patch, 2, dev) if method.uses_unlabeled else None
    stage, n = method.stages(cfg.steps)[-1]   # the last stage: every term of the method is on
    offset = sum(k for _, k in method.stages(cfg.steps)[:-1])
    return dict(cfg=cfg, method=method, nets=nets, opts=opts, lab=lab, unlab=unlab, stage=stage, n=n,
                offset=offset, times=[],
                params_eval=sum(p.numel() for p in nets[method.eval_network].parameters()),
                params_all=sum(p.numel() for m in nets.values() for p in m.parameters()),
                params_trained=sum(p.numel() for m in nets.values() for p in m.parameters() if id(p) in trained))


def timed_step(s: dict, dev: torch.device, i: int) -> float:
    """Seconds of one ``Method.train_step`` of the state ``s`` of :func:`build` (CUDA synchronised)."""
    ctx = StepContext(nets=s["nets"], optimizers=s["opts"], stage=s["stage"], step=s["offset"] + s["n"] - 1,
                      stage_step=s["n"] - 1, stage_steps=s["n"], rng=np.random.default_rng(i),
                      options=s["method"].options, tasks=s["cfg"].task_prompts, cfg=s["cfg"])
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    s["method"].train_step(ctx, s["lab"], s["unlab"])
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - t0


def method_costs(profile: str, methods: Sequence[str] | None = None, reps: int = 3, device: str | None = None,
                 **overrides) -> pd.DataFrame:
    """Parameter counts and the fastest of ``reps`` timed training steps of each method of ``methods``
    (default: every registered method) under ``profile`` (module docstring); ``overrides`` change the
    configurations (e.g. ``steps``). Columns: ``profile, method, row, params_eval, params_trained,
    params_all, step_ms, step_vs_sup_only, batch, unlabeled_batch, patch, device, reps``."""
    if reps < 1:
        raise VersemiError(f"reps must be >= 1, got {reps}")
    dev = get_device(device)
    state = {name: build(name, profile, dev, **overrides) for name in (methods or method_names())}
    for s in state.values():
        timed_step(s, dev, 0)   # warm-up
    for i in range(reps):
        for s in state.values():
            s["times"].append(timed_step(s, dev, i + 1))
    rows = []
    for name, s in state.items():
        cfg = s["cfg"]
        rows.append({"profile": profile, "method": name, "row": cfg.row_name(), "params_eval": s["params_eval"],
                     "params_trained": s["params_trained"], "params_all": s["params_all"],
                     "step_ms": 1000 * min(s["times"]), "batch": cfg.batch_size,
                     "unlabeled_batch": cfg.unlabeled_batch_size if s["unlab"] is not None else 0,
                     "patch": "x".join(map(str, cfg.patch)), "device": dev.type, "reps": reps})
    df = pd.DataFrame(rows)
    base = df.loc[df["method"] == "sup_only", "step_ms"]
    df.insert(df.columns.get_loc("step_ms") + 1, "step_vs_sup_only",
              df["step_ms"] / float(base.iloc[0]) if len(base) else float("nan"))
    return df


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--profiles", nargs="+", default=None, help="default: demo (and paper on CUDA)")
    ap.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--quick", action="store_true", help="one repetition")
    args = ap.parse_args(argv)
    profiles = args.profiles or [*PROFILES, *(["paper"] if get_device(args.device).type == "cuda" else [])]
    frames = []
    for profile in profiles:
        print(f"method costs: {profile} ...", file=sys.stderr, flush=True)
        frames.append(method_costs(profile, args.methods, 1 if args.quick else args.reps, args.device))
    save_profiles(pd.concat(frames, ignore_index=True), Path(args.out) / "method_costs.csv", profiles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
