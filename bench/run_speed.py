"""Whole-run speed before and after (issue 12, target 2): one training run, end to end, by this checkout and
by an earlier commit of it, side by side on the same prepared data and the same config.

    python -m bench.run_speed --out results/bench [--before bbd9ae5] [--runs versemi:all sup_only:la]
                              [--repeats 3] [--threads 1] [--data-dir results/data] [--quick]

The earlier commit is checked out into a temporary ``git worktree`` (detached, removed afterwards) and run
with this environment's interpreter, so both sides use the same libraries; only the package's code differs,
including its entry points' defaults (the allocator setting of ``versemi/allocator.py``, the evaluation
protocol's implementation). Each run is ``versemi train`` (training, then the test-set evaluation it does by
default) in its own process on a fresh run cache, with ``OMP_NUM_THREADS`` = ``--threads``; the wall time
covers the whole process. Both sides get this checkout's profile training defaults through ``--set`` (the
earlier commit's demo profile had a shorter schedule) and read one prepared folder (``versemi.data.ensure``
of this checkout; the prepared format is the same at both commits). Repeats interleave the sides (before,
after, before, after, ...) so that a change of the machine's load touches both.

Writes ``<out>/run_speed.csv``: one line per run, side and repeat (wall, user and kernel CPU seconds, peak
RSS, the run's own training seconds and its mean test Dice per dataset), with the side's commit and the
machine. The repeats are folded into medians per run and side with ``n``, the spread, and the ratio before /
after
(:func:`versemi.companion.budget.run_speed_table`, the budget chapter's table).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from versemi.companion.budget import run_speed_table
from versemi.config import get_profile
from versemi.data.ensure import ensure_data
from versemi.provenance import machine as machine_info
from versemi.utils import VersemiError, atomic_path

ROOT = Path(__file__).resolve().parents[1]
# The last commit before issue 12's speed work: c209dfd, its child, made the allocator setting a default of
# the entry points; everything the issue measured as "today" is this commit's code.
BEFORE = "bbd9ae5"
DEFAULT_RUNS = ("versemi:all", "sup_only:la")


def parse_run(spec: str) -> tuple[str, str]:
    """'versemi:all' -> ('versemi', 'all'): a method and its ``--datasets`` value."""
    method, sep, datasets = spec.partition(":")
    if not sep or not method or not datasets:
        raise VersemiError(f"bench.run_speed: a run is METHOD:DATASETS (e.g. sup_only:la), got {spec!r}")
    return method, datasets


def overrides(profile: str, **extra) -> list[str]:
    """``--set KEY=VALUE`` arguments giving a trainer this checkout's training defaults of ``profile`` (values
    as JSON, which the trainer's YAML parser reads), plus ``extra``."""
    args = []
    for k, v in {**get_profile(profile).train, **extra}.items():
        args += ["--set", f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"]
    return args


def commit_of(tree: Path) -> str:
    """The commit checked out in ``tree`` (with '+dirty' when it has uncommitted changes to tracked files)."""
    head = subprocess.check_output(["git", "-C", str(tree), "rev-parse", "--short=12", "HEAD"], text=True).strip()
    dirty = subprocess.run(["git", "-C", str(tree), "diff", "--quiet", "HEAD", "--"]).returncode != 0
    return head + ("+dirty" if dirty else "")


def add_worktree(rev: str, where: Path) -> Path:
    """A detached git worktree of this repository at ``rev`` in ``where``."""
    done = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise VersemiError(f"bench.run_speed: cannot check out {rev!r} of {ROOT} into a worktree: "
                           f"{done.stderr.strip()}")
    return where


def remove_worktree(where: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)], capture_output=True)
    shutil.rmtree(where, ignore_errors=True)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True)


def time_run(tree: Path, method: str, datasets: str, profile: str, prepared: Path, runs: Path,
             threads: int, extra: dict) -> dict:
    """``versemi train`` of the code in ``tree`` in a child process: its wall and CPU seconds, peak RSS and the
    run's DONE.json training seconds and mean test Dice per dataset. The peak RSS is ``os.wait4``'s
    ``ru_maxrss``, an upper bound: it includes the memory the child inherits from this process before ``exec``
    (``bench/memory.py`` measures peaks exactly)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.pop("VERSEMI_ALLOCATOR", None)   # each side's own default
    cmd = [sys.executable, "-m", "versemi.cli", "train", "--method", method, "--profile", profile,
           "--datasets", datasets, "--ratio", "10", "--data", str(prepared), "--runs", str(runs),
           *overrides(profile, **extra)]
    log = runs.with_suffix(".log")
    runs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        child = subprocess.Popen(cmd, cwd=tree, env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise VersemiError(f"bench.run_speed: `{' '.join(cmd)}` in {tree} failed; its output: "
                           f"{log.read_text()[-2000:]}")
    done = sorted(runs.glob("*/DONE.json"))
    if len(done) != 1:
        raise VersemiError(f"bench.run_speed: expected one finished run in {runs}, found {len(done)}")
    rec = json.loads(done[0].read_text())
    row = {"wall_s": wall, "user_s": ru.ru_utime, "sys_s": ru.ru_stime, "peak_rss_gb": ru.ru_maxrss / 2**20,
           "train_s": rec.get("train_seconds")}
    for ds, m in (rec.get("test") or {}).items():
        row[f"dice_{ds}"] = m.get("dice_mean")
    return row


def measure(runs: list[str], profile: str, before: str, repeats: int, threads: int, data_dir,
            extra: dict | None = None, log=print) -> pd.DataFrame:
    """Every run of ``runs`` (METHOD:DATASETS) by the code of ``before`` and by this checkout, ``repeats``
    times each, interleaved; one line per run, side and repeat."""
    prepared = ensure_data(data_dir, profile)
    specs = [parse_run(s) for s in runs]
    rows = []
    with tempfile.TemporaryDirectory(prefix="run_speed-") as tmp:
        tmp = Path(tmp)
        trees = {"before": add_worktree(before, tmp / "before"), "after": ROOT}
        try:
            commits = {side: commit_of(tree) for side, tree in trees.items()}
            for method, datasets in specs:
                for rep in range(repeats):
                    for side, tree in trees.items():
                        r = time_run(tree, method, datasets, profile, prepared,
                                     tmp / f"runs-{method}-{datasets}-{side}-{rep}", threads, extra or {})
                        rows.append({"run": f"{method}:{datasets}", "side": side, "commit": commits[side],
                                     "repeat": rep, "profile": profile, "threads": threads, **r})
                        log(f"{method}:{datasets} {side} ({commits[side]}) repeat {rep}: {r['wall_s']:.1f} s")
        finally:
            remove_worktree(trees["before"])
    df = pd.DataFrame(rows)
    for k, v in machine_info().items():
        df[k] = v
    return df


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--before", default=BEFORE, help=f"the earlier commit (default {BEFORE}: before issue 12)")
    ap.add_argument("--runs", nargs="+", default=None, metavar="METHOD:DATASETS")
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default="results/data")
    ap.add_argument("--quick", action="store_true", help="the smoke profile, Sup-only on LA, one repeat")
    args = ap.parse_args(argv)
    profile, repeats = ("smoke", 1) if args.quick else (args.profile, args.repeats)
    runs = args.runs or (["sup_only:la"] if args.quick else list(DEFAULT_RUNS))
    try:
        df = measure(runs, profile, args.before, repeats, args.threads, args.data_dir)
    except VersemiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) / "run_speed.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
    print(run_speed_table(df).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
