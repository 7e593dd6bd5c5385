"""``make bench-gpu``: the benchmark rows on CUDA in one call, sized to finish in a few minutes.

* training step (``bench/train_speed.py``): this package against the authors' call pattern (their own
  ``VNet`` with ``--authors-repo``), at the paper's width and patch (f = 16, 96³), batch 2 + 2 and the
  paper's 8 + 8, in float32 and under bf16 autocast;
* evaluation (``bench/eval_speed.py``): the paper protocol eagerly and compiled, and the fast protocol,
  against the authors' ``test_single_case`` (with ``--authors-repo``) on synthetic volumes or the first real
  LA test cases (``--la-dir``);
* resources (``bench/method_resources.py``): every method's peak GPU memory, step time and FLOPs at the
  paper profile's settings, the lines the reproducibility chapter's cluster section turns into GPU hours.

Writes ``<out>/train_speed_cuda.csv``, ``<out>/eval_speed_cuda.csv`` and ``<out>/method_resources_cuda.csv`` with the device name and the
total wall time. ``--dry-run`` runs the same code on the CPU with a tiny network and writes
``*_dryrun.csv`` instead (resources: the smoke profile, two methods) (what the tests exercise, so the GPU call does not break unnoticed).

    python -m bench.gpu --out results/bench [--authors-repo PATH] [--la-dir PATH] [--dry-run]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from bench import eval_speed, method_resources, save_profiles, train_speed
from versemi.allocator import configure as configure_allocator
from versemi.provenance import machine as machine_info
from versemi.utils import VersemiError, atomic_path


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--authors-repo", default=None)
    ap.add_argument("--la-dir", default=None)
    ap.add_argument("--dry-run", action="store_true", help="the same rows on the CPU with a tiny network")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    configure_allocator()
    if args.dry_run:
        device, suffix = torch.device("cpu"), "dryrun"
        train_configs, reps = [(4, 32, 2)], 1
        eval_args = ["--quick", "--filters", "4", "--shape", "40", "40", "32", "--patch", "32", "32", "32",
                     "--stride", "16", "16", "16", "--n-volumes", "1", "--repeats", "1", "--batch-size", "1",
                     "--device", "cpu"]
    else:
        if not torch.cuda.is_available():
            raise VersemiError("bench.gpu: no CUDA device; use --dry-run to check the benchmark on the CPU")
        device, suffix = torch.device("cuda"), "cuda"
        train_configs, reps = [(16, 96, 2), (16, 96, 8)], args.reps
        eval_args = ["--device", "cuda", "--threads", "1", "--batch-size", "4"]
        eval_args += ["--la-dir", args.la_dir] if args.la_dir else []
    eval_args += ["--authors-repo", args.authors_repo] if args.authors_repo else []
    t0 = time.perf_counter()
    rows = []
    for f, patch, batch in train_configs:
        for amp in (False, True):
            rows += train_speed.bench(f, patch, batch, reps, args.authors_repo, device, amp=amp)
    train = pd.DataFrame(rows)
    with tempfile.TemporaryDirectory() as tmp:
        eval_speed.main(["--out", tmp, *eval_args])
        ev = pd.read_csv(Path(tmp) / "eval_speed.csv")
    if args.dry_run:
        res = method_resources.method_resources("smoke", ["sup_only", "versemi"], device="cpu")
    else:
        res = method_resources.method_resources("paper", device="cuda")
    total = time.perf_counter() - t0
    out = Path(args.out)
    save_profiles(res, out / f"method_resources_{suffix}.csv", list(res["profile"].unique()))
    for name, df in (("train_speed", train), ("eval_speed", ev)):
        df["device"] = device_name(device)
        df["bench_total_s"] = total
        for k, v in machine_info().items():
            df[k] = v
        with atomic_path(out / f"{name}_{suffix}.csv") as tmp:
            df.to_csv(tmp, index=False)
    print(f"bench.gpu: {device_name(device)}, {total:.0f} s; wrote {out}/train_speed_{suffix}.csv and "
          f"eval_speed_{suffix}.csv, method_resources_{suffix}.csv")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except VersemiError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
