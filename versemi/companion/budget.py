"""The budget chapter (notebook ``09_budget``): what a schedule, a step and an evaluation cost, from files.

Everything here reads committed files and never times anything: the benchmark CSVs that ``make bench``
writes into ``results/bench/`` (``bench/train_speed.py``, ``bench/eval_speed.py``, ``bench/allocator.py``)
and the learning-curve study (``versemi study run curves``, :mod:`versemi.studies`). Each table keeps the
machine columns of its CSV, so a page always says where a number was measured.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from versemi.utils import VersemiError

MACHINE = ("platform", "torch", "cpus", "cuda")
BENCH_FILES = {"train": "train_speed.csv", "eval": "eval_speed.csv", "allocator": "allocator.csv"}


def read_bench(bench_dir, name: str) -> pd.DataFrame | None:
    """The committed benchmark CSV ``name`` (train | eval | allocator) of ``bench_dir``; None when absent."""
    try:
        path = Path(bench_dir) / BENCH_FILES[name]
    except KeyError:
        raise VersemiError(f"unknown benchmark {name!r}; expected one of {', '.join(BENCH_FILES)}") from None
    return pd.read_csv(path) if path.is_file() else None


def machine_of(df: pd.DataFrame) -> str:
    """'Linux-..., torch 2.13.0+cpu, 2 CPUs' from the machine columns of a benchmark CSV (its first line)."""
    row = df.iloc[0]
    cuda = row.get("cuda")
    device = f", {cuda}" if isinstance(cuda, str) and cuda else ""
    return f"{row.get('platform')}, torch {row.get('torch')}, {row.get('cpus')} CPUs{device}"


def train_speed_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per step and configuration: the reference's and this package's seconds per step and the
    ratio (reference / ours), with what the reference is."""
    out = df[["what", "config", "reference", "reference_s", "ours_s", "speedup"]].copy()
    return out.rename(columns={"reference_s": "reference s/step", "ours_s": "ours s/step", "speedup": "ratio"})


def allocator_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per allocator mode (glibc default ``system`` vs ``keep``) and step: both sides' seconds per step,
    the gain of ``keep`` over ``system`` for each side, and the child process's kernel time, minor page
    faults and peak RSS."""
    cols = ["allocator", "what", "config", "reference_s", "ours_s", "speedup", "ours_gain_vs_system",
            "reference_gain_vs_system", "child_sys_s", "child_minor_faults", "child_peak_rss_gb"]
    return df[[c for c in cols if c in df]].copy()


def eval_speed_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per evaluation variant: seconds, ratio to the baseline, windows and volumes."""
    cols = ["what", "seconds", "ratio", "n_windows", "n_volumes", "baseline"]
    return df[[c for c in cols if c in df]].copy()


def ratio_of(df: pd.DataFrame, what: str, config_contains: str = "", column: str = "speedup") -> float:
    """The ``column`` of the first line of ``df`` whose ``what`` is ``what`` and whose ``config`` contains
    ``config_contains`` (NaN when there is none)."""
    sel = df[(df["what"] == what) & df["config"].astype(str).str.contains(config_contains, regex=False)]
    return float(sel[column].iloc[0]) if len(sel) else float("nan")
