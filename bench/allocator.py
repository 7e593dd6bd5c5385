"""The allocator setting (``versemi/allocator.py``) side by side: glibc's defaults vs keeping memory.

Runs ``bench.train_speed`` twice in child processes, once with ``VERSEMI_ALLOCATOR=system`` and once with
the default (``keep``), each timing this package's step and the authors' call pattern under the same
allocator, and records for each child its wall time, user and kernel CPU seconds, minor page faults
and peak RSS (``resource.getrusage`` of the child).

    python -m bench.allocator --out results/bench [--configs 8,32,4 16,96,2] [--reps 3]

Writes ``<out>/allocator.csv`` (one line per allocator, step and configuration) with machine info.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from versemi import allocator
from versemi.provenance import machine as machine_info
from versemi.utils import atomic_path


def run_child(mode: str, configs: list[str], reps: int) -> tuple[pd.DataFrame, dict]:
    """bench.train_speed in a child process under allocator ``mode``: its rows and its resource use."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env[allocator.ENV] = mode
    with tempfile.TemporaryDirectory() as tmp:
        code = ("import sys; from versemi import allocator; allocator.configure(); "
                "from bench import train_speed; sys.exit(train_speed.main(sys.argv[1:]))")
        t0 = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", code, "--out", tmp, "--reps", str(reps), "--configs",
                                  *configs], env=env, cwd=Path(__file__).resolve().parents[1])
        _, status, ru = os.wait4(child.pid, 0)   # this child's own resource use
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        if child.returncode != 0:
            raise SystemExit(f"bench.allocator: the {mode} child failed with exit code {child.returncode}")
        rows = pd.read_csv(Path(tmp) / "train_speed.csv")
    use = {"child_wall_s": wall, "child_user_s": ru.ru_utime, "child_sys_s": ru.ru_stime,
           "child_minor_faults": ru.ru_minflt, "child_peak_rss_gb": ru.ru_maxrss / 2**20}  # ru_maxrss in kB
    return rows, use


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--quick", action="store_true", help="the demo configuration only")
    ap.add_argument("--configs", nargs="+", default=None, metavar="F,PATCH,BATCH")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    if not allocator.is_glibc():
        print("bench.allocator: not glibc; nothing to compare")
        return 0
    configs = args.configs or (["8,32,4"] if args.quick else ["8,32,4", "16,96,2"])
    frames = []
    for mode in ("system", "keep"):
        rows, use = run_child(mode, configs, args.reps)
        rows.insert(0, "allocator", mode)
        for k, v in use.items():
            rows[k] = v
        frames.append(rows)
    df = pd.concat(frames, ignore_index=True)
    base = df[df["allocator"] == "system"].set_index(["what", "config"])
    for side in ("ours_s", "reference_s"):
        df[f"{side[:-2]}_gain_vs_system"] = [base.loc[(w, c), side] / v
                                             for w, c, v in zip(df["what"], df["config"], df[side])]
    for k, v in machine_info().items():
        df[k] = v
    out = Path(args.out) / "allocator.csv"
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
    cols = ["allocator", "what", "config", "reference_s", "ours_s", "speedup", "ours_gain_vs_system",
            "reference_gain_vs_system", "child_sys_s", "child_minor_faults"]
    print(df[cols].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
