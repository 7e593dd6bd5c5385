"""Small synthetic per-case tables shaped like :func:`versemi.runs.collect_case_metrics` (no training):
each run's placing fields come from a real :class:`~versemi.config.RunConfig`, as in the package."""

from __future__ import annotations

import numpy as np
import pandas as pd

from versemi.config import RunConfig, make_config
from versemi.runs import run_fields

DS = ("pancreas", "la", "spleen", "lung")


def config(method: str = "versemi", dataset: str | None = None, ratio: int = 10, **kw) -> RunConfig:
    """A smoke-profile config: task-specific on ``dataset`` when given, else on the four datasets."""
    if dataset is not None:
        kw["datasets"] = (dataset,)
    return make_config(method, "smoke", ratio=ratio, **kw)


def cases_of(run: RunConfig | str, dataset: str, dice, hd95=None, empty=None, prefix: str = "c") -> pd.DataFrame:
    """Per-case lines of one run on ``dataset``. ``run``: a config (its key is its label) or a key alone
    (an ablation variant's name: the fields are those of the full VerSemi model)."""
    cfg, key = (make_config("versemi", "smoke"), run) if isinstance(run, str) else (run, run.label())
    dice = np.asarray(dice, dtype=float)
    n = len(dice)
    hd = np.asarray(hd95 if hd95 is not None else np.arange(1.0, n + 1), dtype=float)
    emp = np.asarray(empty if empty is not None else [False] * n, dtype=bool)
    df = pd.DataFrame({"method": key, "dataset": dataset, **run_fields(cfg),
                       "case": [f"{prefix}{i}" for i in range(n)],
                       "task": DS.index(dataset) + 1 if dataset in DS else 0, "dice": dice, "jaccard": dice / 2,
                       "hd95": hd, "asd": hd / 4, "empty_pred": emp, "empty_gt": False})
    return df


def universal(run: RunConfig | str, per_ds: dict) -> pd.DataFrame:
    """:func:`cases_of` of one run on several datasets (``{dataset: dice values}``)."""
    return pd.concat([cases_of(run, ds, v) for ds, v in per_ds.items()], ignore_index=True)


def sota_table() -> pd.DataFrame:
    """A SOTA-like table: task-specific BCP and the fully supervised bound on every dataset, VerSemi and
    Uni-BCP on all four, and a task-specific UA-MT that covers only spleen and lung."""
    rng = np.random.default_rng(0)
    frames = []
    for ds in DS:  # task-specific BCP and the fully supervised bound: one run per dataset
        frames.append(cases_of(config("bcp", ds), ds, rng.uniform(0.5, 0.7, 8)))
        frames.append(cases_of(config("sup_only", ds, 100), ds, rng.uniform(0.9, 0.95, 8)))
    frames.append(universal(config("versemi"), {ds: rng.uniform(0.7, 0.8, 8) for ds in DS}))
    frames.append(universal(config("bcp"), {ds: rng.uniform(0.4, 0.6, 8) for ds in DS}))
    # a task-specific run that covers only two datasets (e.g. not trainable on the others)
    frames.append(cases_of(config("uamt", "spleen"), "spleen", rng.uniform(0.75, 0.99, 8)))
    frames.append(cases_of(config("uamt", "lung"), "lung", rng.uniform(0.75, 0.99, 8)))
    return pd.concat(frames, ignore_index=True)
