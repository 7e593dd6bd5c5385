"""The budget chapter (notebook ``09_budget``): what a schedule, a step and an evaluation cost, from files.

Everything here reads committed files and never times anything: the benchmark CSVs that ``make bench``
writes into ``results/bench/`` (``bench/train_speed.py``, ``bench/eval_speed.py``, ``bench/allocator.py``, ``bench/protocols.py``,
``bench/memory.py``, ``bench/run_speed.py``)
and the learning-curve study (``versemi study run curves``, :mod:`versemi.studies`). Each table keeps the
machine columns of its CSV, so a page always says where a number was measured.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from versemi.utils import VersemiError

MACHINE = ("platform", "torch", "cpus", "cuda")
BENCH_FILES = {"train": "train_speed.csv", "eval": "eval_speed.csv", "allocator": "allocator.csv",
               "protocols": "protocols.csv", "memory": "memory.csv", "run": "run_speed.csv"}
DICE_TOLERANCE = 0.5   # points: issue 12's bound on the mean Dice difference of a fast protocol


def read_bench(bench_dir, name: str) -> pd.DataFrame | None:
    """The committed benchmark CSV ``name`` (train | eval | allocator | protocols | memory | run) of ``bench_dir``;
    None when absent."""
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
    ratio (reference / ours), with what the reference is; where the CSV has them, the ratio's two factors
    (reference FLOPs / ours, and the rest: per-FLOP efficiency)."""
    cols = ["what", "config", "reference", "reference_s", "ours_s", "speedup", "flop_ratio", "efficiency_ratio"]
    out = df[[c for c in cols if c in df]].copy()
    return out.rename(columns={"reference_s": "reference s/step", "ours_s": "ours s/step", "speedup": "ratio",
                               "flop_ratio": "FLOP ratio", "efficiency_ratio": "efficiency ratio"})


def allocator_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per allocator mode (glibc default ``system`` vs ``keep``) and step: both sides' seconds per step,
    the gain of ``keep`` over ``system`` for each side, and the child process's kernel time, minor page
    faults and peak RSS."""
    cols = ["allocator", "what", "config", "reference_s", "ours_s", "speedup", "ours_gain_vs_system",
            "reference_gain_vs_system", "child_sys_s", "child_minor_faults", "child_peak_rss_gb"]
    return df[[c for c in cols if c in df]].copy()


def run_speed_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per run of ``bench/run_speed.py`` (a whole ``versemi train``: training and test evaluation): the median
    wall seconds over the repeats of the earlier commit (*before*) and of this checkout (*after*), the ratio
    before / after (> 1: faster now), the repeats ``n`` of the side with fewer, each side's spread (max - min,
    seconds), each side's median mean test Dice over the run's datasets (%), and the two commits."""
    g = df.groupby(["run", "side"], sort=False)
    wall = g["wall_s"].median().unstack("side")
    spread = (g["wall_s"].max() - g["wall_s"].min()).unstack("side")
    dice_cols = [c for c in df if c.startswith("dice_")]
    dice = (df.assign(dice=df[dice_cols].mean(axis=1) * 100).groupby(["run", "side"], sort=False)["dice"]
            .median().unstack("side"))
    commits = df.groupby("side")["commit"].first()
    out = pd.DataFrame({"before s": wall["before"], "after s": wall["after"],
                        "ratio": wall["before"] / wall["after"], "n": g.size().unstack("side").min(axis=1),
                        "before spread s": spread["before"], "after spread s": spread["after"],
                        "before Dice %": dice["before"], "after Dice %": dice["after"]})
    out["before commit"], out["after commit"] = commits.get("before"), commits.get("after")
    return out.reset_index()


def eval_speed_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per evaluation variant: seconds, ratio to the baseline, windows and volumes."""
    cols = ["what", "seconds", "ratio", "n_windows", "n_volumes", "baseline"]
    return df[[c for c in cols if c in df]].copy()


def ratio_of(df: pd.DataFrame, what: str, config_contains: str = "", column: str = "speedup") -> float:
    """The ``column`` of the first line of ``df`` whose ``what`` is ``what`` and whose ``config`` contains
    ``config_contains`` (NaN when there is none)."""
    sel = df[(df["what"] == what) & df["config"].astype(str).str.contains(config_contains, regex=False)]
    return float(sel[column].iloc[0]) if len(sel) else float("nan")


def protocols_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per evaluation protocol on the trained run of ``bench/protocols.py``: seconds over the test
    cases, the ratio to the paper protocol (eager), compilation seconds, mean Dice (%), the mean and the
    largest per-case Dice difference to the paper protocol (points), the fraction of voxels labelled
    differently, and the network evaluations spent (in patches)."""
    cols = ["what", "seconds", "ratio", "compile_s", "dice", "delta_dice", "max_abs_delta_dice",
            "label_fraction_differing", "windows"]
    out = df[[c for c in cols if c in df]].copy()
    return out.rename(columns={"delta_dice": "mean ΔDice", "max_abs_delta_dice": "max |ΔDice|",
                               "label_fraction_differing": "labels differing", "windows": "patches evaluated"})


def fastest_within(df: pd.DataFrame, tolerance: float = DICE_TOLERANCE) -> pd.Series | None:
    """The fastest protocol of ``bench/protocols.py``'s table whose mean Dice difference to the paper
    protocol is within ``tolerance`` points (the paper protocol itself excluded); None when none is."""
    ok = df[(df["what"] != "paper_eager") & (df["delta_dice"].abs() <= tolerance)]
    return None if ok.empty else ok.sort_values("ratio", ascending=False).iloc[0]


def _median_over_repeats(df: pd.DataFrame) -> pd.DataFrame:
    """Lines of ``bench/memory.py`` measured in several fresh processes (``--repeats``) folded into one per side,
    stage and batch: the medians, the number of processes ``n`` and the spread (max - min) of the peak."""
    if "status" not in df:
        df = df.assign(status="ran")
    keys = ["side", "stage", "config", "batch", "status"]
    g = df.groupby(keys, sort=False, dropna=False)
    med = g[["peak_rss_gb", "peak_above_start_gb", "step_s"]].median()
    med["n"] = g.size()
    med["peak spread GB"] = g["peak_above_start_gb"].max() - g["peak_above_start_gb"].min()
    return med.reset_index()[["side", "stage", "config", "batch", "peak_rss_gb", "peak_above_start_gb", "step_s",
                              "n", "peak spread GB", "status"]]


def memory_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per side and stage of ``bench/memory.py``: the batch that ran, the process's peak RSS and the
    peak above its start (GB), seconds per step (medians over the ``n`` fresh processes of ``--repeats``, with
    the spread of the peak) and how the process ended (a child killed for memory keeps
    its line); with each line's peak above start as a fraction of the released call pattern's at the same stage
    and batch (1 on the released line; empty when that did not run), and its time per step over our plain
    step's at the same stage and batch (what a memory saving such as activation checkpointing costs)."""
    cols = ["side", "stage", "config", "batch", "peak_rss_gb", "peak_above_start_gb", "step_s", "status"]
    out = _median_over_repeats(df[[c for c in cols if c in df]])
    ran = out[out["status"] == "ran"]
    ref = ran[~ran["side"].str.startswith("ours")].set_index(["stage", "batch"])["peak_above_start_gb"]
    plain = ran[ran["side"] == "ours (VerSemi.train_step)"].set_index(["stage", "batch"])["step_s"]
    key = pd.MultiIndex.from_frame(out[["stage", "batch"]])
    ok = (out["status"] == "ran").to_numpy()
    out["ours / released (peak above start)"] = np.where(
        ok, out["peak_above_start_gb"].to_numpy() / ref.reindex(key).to_numpy(), np.nan)
    out["s/step / ours"] = np.where(ok, out["step_s"].to_numpy() / plain.reindex(key).to_numpy(), np.nan)
    return out.rename(columns={"peak_rss_gb": "peak RSS GB", "peak_above_start_gb": "peak above start GB",
                               "step_s": "s/step"})
