"""Generalisation to an unseen site: every model that can segment the spleen, scored on an external test
set it never saw (the paper: BTCV spleen), beside its score on the MSD-spleen test set.

The external set is prepared exactly like the training spleen (``versemi/data/external.py``); a run is
evaluated on it with its spleen prompt (task 3) and its own evaluation protocol (window, stride), the
per-case scores going to ``<run>/eval/external_<set>.csv``. The generalisation *study* (``versemi study run
generalisation``) is the SOTA group's spleen-capable runs (:func:`versemi.experiments.generalisation_configs`:
they are the same runs, served by the run cache, only evaluated once more), exported with the MSD-spleen
test cases and the external cases of each run and seed.

:func:`drop_table` is the page's table: per row, the mean Dice on each set and the drop (MSD minus unseen,
points) with a two-level bootstrap interval (seeds resampled jointly for both sets, then each set's cases
within a seed) and a permutation p-value (set labels exchanged within each seed).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from versemi.data.external import ensure_external, load_external_cases
from versemi.evaluate.cases import evaluate_cases
from versemi.runs import load_run_net, run_config, run_fields
from versemi.utils import VersemiError

EXTERNAL_SET = "btcv"
SOURCE_DATASET = "spleen"        # the training dataset whose prompt the external set is scored with
SPLEEN_TASK = 3


def external_cases(run_dir, data_dir, profile: str, seed: int, name: str = EXTERNAL_SET, device=None,
                   progress: bool = False) -> pd.DataFrame:
    """The run's per-case scores on the external set ``name`` (evaluated once, then read from
    ``<run>/eval/external_<name>.csv``), with the columns of
    :func:`versemi.runs.collect_case_metrics` (``dataset`` = ``name``; ``method`` is filled by the caller)."""
    run_dir = Path(run_dir)
    csv = run_dir / "eval" / f"external_{name}.csv"
    cfg = run_config(run_dir)
    if SOURCE_DATASET not in cfg.datasets:
        raise VersemiError(f"{run_dir}: trained on {list(cfg.datasets)}, it has no spleen prompt to score "
                           f"the {name} set with")
    if csv.is_file():
        df = pd.read_csv(csv)
    else:
        net, cfg = load_run_net(run_dir, device=device)
        cases = load_external_cases(ensure_external(data_dir, profile, seed, name))
        tuples = ((c["name"], c["image"], c["label"], c.get("spacing")) for c in cases)
        df = evaluate_cases(net, tuples, SPLEEN_TASK, csv, patch_size=cfg.eval_patch, stride=cfg.eval_stride,
                            protocol=cfg.eval_protocol, progress=progress)
    df = df.copy()
    df.insert(0, "dataset", name)
    for i, (k, v) in enumerate(run_fields(cfg).items()):
        df.insert(1 + i, k, v)
    return df


def drop_table(cases: pd.DataFrame, metric: str = "dice", external: str = EXTERNAL_SET, n_boot: int = 2000,
               n_perm: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per table row: mean ``metric`` (points) on the MSD-spleen test cases and on the external set, the
    drop (MSD - external) with its 95% two-level bootstrap interval and the two-sided permutation p-value
    of "no drop", and the seeds and cases behind them. ``cases``: the generalisation study's cases (the
    ``row`` column names the table row; rows from several runs are kept apart by ``method``)."""
    need = {"method", "row", "dataset", "case", metric}
    if not need <= set(cases.columns):
        raise VersemiError(f"generalisation cases lack column(s) {sorted(need - set(cases.columns))}")
    df = cases.assign(seed=cases["seed"] if "seed" in cases else 0)
    lines = []
    for (method, row), sub in df.groupby(["method", "row"], sort=False):
        groups = _seed_groups(sub, metric, external)
        if not groups:
            continue
        reps = _bootstrap_drop(groups, n_boot, seed)
        lines.append({"row": row, "method": method,
                      "msd": float(np.mean([a.mean() for a, _ in groups])),
                      "unseen": float(np.mean([b.mean() for _, b in groups])),
                      "drop": _drop(groups), "drop_lo": float(np.quantile(reps, 0.025)),
                      "drop_hi": float(np.quantile(reps, 0.975)),
                      "p_drop": _permutation_p(groups, n_perm, seed), "n_seeds": len(groups),
                      "n_msd": int(sum(a.size for a, _ in groups)),
                      "n_unseen": int(sum(b.size for _, b in groups))})
    return pd.DataFrame(lines)


def _seed_groups(sub: pd.DataFrame, metric: str, external: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per seed (ascending) of one row's cases: (MSD-spleen values, external values) in points, NaN left out;
    seeds lacking either set are skipped."""
    groups = []
    for _, ss in sub.groupby("seed"):
        a = ss.loc[ss["dataset"] == SOURCE_DATASET, metric].dropna().to_numpy(float) * 100
        b = ss.loc[ss["dataset"] == external, metric].dropna().to_numpy(float) * 100
        if a.size and b.size:
            groups.append((a, b))
    return groups


def _drop(groups: list) -> float:
    """Mean over seeds of (MSD mean - external mean)."""
    return float(np.mean([a.mean() - b.mean() for a, b in groups]))


def _bootstrap_drop(groups: list, n_boot: int, seed: int) -> np.ndarray:
    """Replicates of the mean over seeds of (mean a - mean b): seeds drawn with replacement (the same seed's
    runs are scored on both sets, so a seed carries both), then each set's cases within the drawn seed."""
    rng = np.random.default_rng(seed)
    S = len(groups)
    draws = rng.integers(0, S, size=(n_boot, S))
    out = np.zeros(n_boot)
    for k in range(S):
        for si, (a, b) in enumerate(groups):
            rows = np.flatnonzero(draws[:, k] == si)
            if rows.size:
                ma = a[rng.integers(0, a.size, size=(rows.size, a.size))].mean(1)
                mb = b[rng.integers(0, b.size, size=(rows.size, b.size))].mean(1)
                out[rows] += ma - mb
    return out / S


def _permutation_p(groups: list, n_perm: int, seed: int) -> float:
    """Two-sided p-value of the drop under exchangeable set labels within each seed."""
    rng = np.random.default_rng(seed)
    observed = _drop(groups)
    stat = np.zeros(n_perm)
    for a, b in groups:
        pooled = np.concatenate([a, b])
        perm = np.argsort(rng.random((n_perm, pooled.size)), axis=1)
        x = pooled[perm]
        stat += x[:, :a.size].mean(1) - x[:, a.size:].mean(1)
    stat /= len(groups)
    tol = 1e-12 * max(1.0, abs(observed))
    return float((1 + np.count_nonzero(np.abs(stat) >= abs(observed) - tol)) / (1 + n_perm))


def drop_gap(cases: pd.DataFrame, row: str = "VerSemi", metric: str = "dice", external: str = EXTERNAL_SET,
             exclude=("Fully supervised",), n_boot: int = 2000, seed: int = 0) -> dict:
    """How much less ``row`` drops than the others: the mean drop of the other rows (the upper bound
    excluded) minus the drop of ``row``, in points, with a bootstrap interval and one-sided p-values (each
    row's replicates from :func:`_bootstrap_drop`, independent across rows). NaN without ``row`` or others."""
    df = cases.assign(seed=cases["seed"] if "seed" in cases else 0)
    reps, drops = {}, {}
    for i, (r, sub) in enumerate(df.groupby("row", sort=False)):
        groups = _seed_groups(sub, metric, external)
        if groups and r not in exclude:
            drops[r] = _drop(groups)
            reps[r] = _bootstrap_drop(groups, n_boot, seed + i)
    others = [k for k in drops if k != row]
    if row not in drops or not others:
        return {"effect": math.nan, "lo": math.nan, "hi": math.nan, "p_greater": math.nan, "p_less": math.nan,
                "n_rows": len(others)}
    effect = float(np.mean([drops[k] for k in others]) - drops[row])
    r = np.mean([reps[k] for k in others], axis=0) - reps[row]
    return {"effect": effect, "lo": float(np.quantile(r, 0.025)), "hi": float(np.quantile(r, 0.975)),
            "p_greater": float((1 + np.count_nonzero(r <= 0)) / (1 + r.size)),
            "p_less": float((1 + np.count_nonzero(r >= 0)) / (1 + r.size)), "n_rows": len(others)}
