"""What one run of each compared method needs at a profile's settings: peak memory and the time of a step.

    python -m bench.method_resources --out results/bench [--profile paper] [--methods ...] [--device cuda]

For each registered method, a fresh Python process (so that each method's peak is its own) builds the run
configuration of the SOTA group's multi-dataset row (``make_config(method, profile)``, as
``bench/method_costs.py``: the paper profile has the method's released batch, patch and width), takes one
untimed warm-up step and one timed training step (``Method.train_step``: every forward, backward and
optimiser update of the last stage, on a random batch of the configuration's sizes), and reports

* ``peak_gb``: on CUDA ``torch.cuda.max_memory_allocated`` over both steps (what the GPU must hold); on a
  CPU the process's peak resident memory over the two steps above its resident memory before the networks
  were built (interpreter and libraries left out): the kernel's peak (``VmHWM``) is reset first through
  ``/proc/self/clear_refs``, so that a higher peak of the imports does not hide the steps' (where that file
  cannot be written, ``ru_maxrss`` is the fallback and the ``memory`` column says so); an upper bound of the
  tensors' peak since the allocator keeps freed pages (``versemi/allocator.py``);
* ``step_s``: the timed step, in seconds, on this device with this process's threads;
* ``measured``: the UTC date of the measurement (lines of one call share it; lines of other days were timed
  on another instance of the machine class and are no side-by-side comparison);
* ``gflop_step``: the floating-point operations of one more step as ``torch.utils.flop_counter`` counts them
  (convolutions and matmuls, forward and backward; ``bench/flops.py``), in GFLOP: the device-independent
  size of a step, from which a run's cost on another device follows at that device's attained rate.

Writes ``<out>/method_resources.csv`` (``method_resources_cuda.csv`` on CUDA, so a GPU measurement sits
beside the CPU one) atomically, one line per (profile, method) with the configuration's batch, patch and
steps per run and the machine; lines of profiles not measured in this call are kept, and so, with
``--methods``, are the lines of the profile's other methods. A method that fails (out of memory: its
process is killed) is reported at the end, exit code 1, after the others are measured and saved. The reproducibility
chapter turns these lines into the resources per run and the sweep's total
(:mod:`versemi.companion.resources`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from bench import save_profiles
from bench.flops import count_flops
from bench.method_costs import build, timed_step
from versemi.methods import method_names
from versemi.utils import VersemiError, get_device

GB = 1024 ** 3


def _status_kib(field: str) -> int | None:
    """A memory line of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in KiB, or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's record of this process's peak resident memory (``VmHWM``) to the current one
    (``echo 5 > /proc/self/clear_refs``, Linux 4.0 and later); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _peak_rss_window():
    """Start a CPU memory window: returns a function giving (bytes of peak resident memory since the start
    above the resident memory at the start, how it was measured)."""
    if _reset_peak_rss():
        start = _status_kib("VmRSS")
        return lambda: ((_status_kib("VmHWM") - start) * 1024, "peak RSS above the bare process")
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # KiB on Linux; a lower bound of the window
    return lambda: ((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start) * 1024,
                    "ru_maxrss rise (a lower bound: clear_refs not writable)")


def measure_one(name: str, profile: str, device: str | None = None, **overrides) -> dict:
    """The line of method ``name`` (module docstring), measured in this process: call it in a fresh one."""
    dev = get_device(device)
    window = _peak_rss_window()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    s = build(name, profile, dev, **overrides)
    timed_step(s, dev, 0)
    step = timed_step(s, dev, 1)
    peak, how = (torch.cuda.max_memory_allocated(dev), "cuda max allocated") if dev.type == "cuda" else window()
    flops = count_flops(lambda: timed_step(s, dev, 2))
    cfg = s["cfg"]
    return {"profile": profile, "method": name, "row": cfg.row_name(), "batch": cfg.batch_size,
            "unlabeled_batch": cfg.unlabeled_batch_size if s["unlab"] is not None else 0,
            "patch": "x".join(map(str, cfg.patch)), "n_filters": cfg.n_filters, "steps": int(cfg.steps),
            "params_all": s["params_all"], "peak_gb": peak / GB,
            "memory": how,
            "step_s": step, "gflop_step": flops / 1e9, "device": dev.type, "threads": torch.get_num_threads(),
            "measured": time.strftime("%Y-%m-%d", time.gmtime())}


def method_resources(profile: str = "paper", methods: Sequence[str] | None = None, device: str | None = None,
                     overrides: dict | None = None, timeout_s: float | None = None,
                     failures: list | None = None) -> pd.DataFrame:
    """One line per method of ``methods`` (default: every registered one), each measured in its own
    subprocess (``python -m bench.method_resources --one``) under ``profile`` with ``overrides`` of the
    configuration. A method whose process fails raises ``VersemiError`` with its output's tail (a process
    killed by a signal, e.g. the kernel's out-of-memory killer, says which); with a ``failures`` list the
    error is appended there instead and the other methods are measured."""
    rows = []
    for name in methods or method_names():
        cmd = [sys.executable, "-m", "bench.method_resources", "--one", name, "--profile", profile,
               "--overrides", json.dumps(overrides or {})] + (["--device", device] if device else [])
        print(f"method resources: {profile} {name} ...", file=sys.stderr, flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=dict(os.environ))
        if done.returncode != 0:
            why = (f"killed by signal {-done.returncode} (SIGKILL: most likely out of memory)"
                   if done.returncode < 0 else f"exit code {done.returncode}")
            err = VersemiError(f"bench.method_resources: {name} ({profile}) failed, {why}:\n{done.stderr[-2000:]}")
            if failures is None:
                raise err
            failures.append(err)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    ap.add_argument("--device", default=None)
    ap.add_argument("--overrides", default="{}", help="JSON of configuration overrides (tests: a tiny network)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)   # the per-method subprocess
    args = ap.parse_args(argv)
    overrides = json.loads(args.overrides)
    if args.one:
        from versemi.allocator import configure

        configure()
        print(json.dumps(measure_one(args.one, args.profile, args.device, **overrides)), flush=True)
        return 0
    failures: list = []
    df = method_resources(args.profile, args.methods, args.device, overrides, failures=failures)
    suffix = "_cuda" if get_device(args.device).type == "cuda" else ""
    if len(df):   # with --methods, the profile's other methods keep their lines
        save_profiles(df, Path(args.out) / f"method_resources{suffix}.csv", [args.profile],
                      keep_unmeasured="method" if args.methods else None)
    for err in failures:
        print(f"error: {err}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
