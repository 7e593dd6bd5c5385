"""How sure the book's numbers are: two-level bootstrap confidence intervals over seeds and cases, paired
effects between two table rows with a test of the same quantity, equivalence tests, Holm's correction.

**The quantity.** A row's score on a set of datasets is the *average over datasets* (each dataset weighs
the same, as the paper's "average" column) of the dataset's mean, itself the mean over seeds of that seed's
mean over its test cases (:func:`versemi.companion.tables.cell_stats`). A seed draws its own phantoms, split
and initialisation, so the test cases of two seeds are different cases: the data are a two-level hierarchy,
seeds, then cases within a seed and dataset.

**Intervals** (:func:`hierarchical_bootstrap`): a percentile interval from a two-level bootstrap — resample
the seeds with replacement, then, within every drawn seed and dataset, its cases with replacement, and
recompute the quantity. ``scipy.stats.bootstrap`` resamples one level, hence this numpy version. With S seeds
the seed level has only C(2S - 1, S) distinct resamples (3 seeds: 10; 1 seed: 1, and the interval then
reflects the cases only); :func:`distinct_seed_resamples` says it on the page.

**Paired effects** (:func:`paired_effect`): the difference of two rows on the same (dataset, seed, case)
triples — the same quantity as the difference of their averages, because the average is linear — with its
bootstrap interval and the p-value of a sign-flip randomisation test of *that* quantity (each paired
difference's sign flipped at random under the null hypothesis that the two rows are exchangeable on every
case), so the test and the reported effect measure the same thing (a pooled Wilcoxon test would weight the
datasets by their case counts while the average weighs them equally). One-sided versions test a direction;
:func:`equivalence_test` runs the two one-sided tests (TOST) of a margin.

**Several claims**: :func:`holm` (``statsmodels``' ``multipletests(method="holm")``) adjusts the p-values of
the claims tested together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from versemi.companion.tables import AVERAGE, PCT_METRICS, ordered_datasets, with_rows
from versemi.utils import VersemiError

N_BOOT = 4000          # bootstrap resamples of an interval
N_PERM = 4000          # sign-flip resamples of a p-value
ALTERNATIVES = ("two-sided", "greater", "less")
SPREAD_COLUMNS = ["row", "dataset", "n_seeds", "between", "sampling", "excess", "ratio"]


def distinct_seed_resamples(n_seeds: int) -> int:
    """How many different multisets the seed level of the bootstrap can draw: C(2S - 1, S)."""
    return math.comb(2 * n_seeds - 1, n_seeds) if n_seeds > 0 else 0


@dataclass
class Hierarchy:
    """Values arranged as ``groups[(seed, dataset)] -> 1-D array`` of case values, with the seeds and
    datasets in a fixed order (every seed must have every dataset)."""

    seeds: list
    datasets: list
    groups: dict

    @classmethod
    def from_frame(cls, df: pd.DataFrame, value: str = "value") -> Hierarchy:
        """From a long table with columns ``dataset``, ``value`` and (optional) ``seed``; a seed missing a
        dataset is an error (the average would change meaning)."""
        if df.empty:
            raise VersemiError("no values to summarise")
        seed = df["seed"] if "seed" in df else pd.Series(0, index=df.index)
        seeds = sorted(seed.unique().tolist())
        datasets = list(dict.fromkeys(df["dataset"]))
        groups = {}
        for (s, d), sub in df.assign(_seed=seed).groupby(["_seed", "dataset"], sort=False):
            groups[(s, d)] = sub[value].to_numpy(np.float64)
        missing = [(s, d) for s in seeds for d in datasets if (s, d) not in groups]
        if missing:
            raise VersemiError(f"seed/dataset pairs without cases: {missing}; every seed needs every dataset")
        return cls(seeds, datasets, groups)

    def statistic(self) -> float:
        """Mean over datasets of (mean over seeds of the case mean)."""
        return float(np.mean([np.mean([self.groups[(s, d)].mean() for s in self.seeds]) for d in self.datasets]))


def hierarchical_bootstrap(h: Hierarchy, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap replicates of :meth:`Hierarchy.statistic`: seeds resampled with replacement,
    then the cases of every drawn (seed, dataset) with replacement. Vectorised: the case-level resample
    means of each (seed, dataset) are drawn once per replicate and the seed draw picks among them."""
    rng = np.random.default_rng(seed)
    S, D = len(h.seeds), len(h.datasets)
    # case-level resample means: (S, D, n_boot), drawn independently for every seed slot of a replicate
    # (a seed drawn twice gets two independent case resamples, as the two-level bootstrap prescribes)
    seed_draw = rng.integers(0, S, size=(n_boot, S))
    total = np.zeros(n_boot)
    for d in h.datasets:
        per_slot = np.zeros((n_boot, S))
        for k in range(S):
            for si, s in enumerate(h.seeds):
                x = h.groups[(s, d)]
                rows = np.flatnonzero(seed_draw[:, k] == si)
                if rows.size:
                    idx = rng.integers(0, x.size, size=(rows.size, x.size))
                    per_slot[rows, k] = x[idx].mean(axis=1)
        total += per_slot.mean(axis=1)
    return total / D


def interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates."""
    a = (1 - level) / 2
    return float(np.quantile(replicates, a)), float(np.quantile(replicates, 1 - a))


def signflip_p(h: Hierarchy, alternative: str = "two-sided", n_perm: int = N_PERM, seed: int = 0,
               null: float = 0.0) -> float:
    """Randomisation p-value of :meth:`Hierarchy.statistic` of paired differences against ``null``: the
    differences minus ``null`` have their signs flipped independently at random (exchangeable under the
    null hypothesis), ``p = (1 + #{T* at least as extreme as T}) / (1 + n_perm)``."""
    if alternative not in ALTERNATIVES:
        raise VersemiError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    rng = np.random.default_rng(seed)
    S, D = len(h.seeds), len(h.datasets)
    observed = h.statistic() - null
    flipped = np.zeros(n_perm)
    for d in h.datasets:
        per_seed = np.zeros(n_perm)
        for s in h.seeds:
            x = h.groups[(s, d)] - null
            signs = rng.choice((-1.0, 1.0), size=(n_perm, x.size))
            per_seed += (signs * x).mean(axis=1)
        flipped += per_seed / S
    flipped /= D
    tol = 1e-12 * max(1.0, abs(observed))
    if alternative == "greater":
        k = np.count_nonzero(flipped >= observed - tol)
    elif alternative == "less":
        k = np.count_nonzero(flipped <= observed + tol)
    else:
        k = np.count_nonzero(np.abs(flipped) >= abs(observed) - tol)
    return float((1 + k) / (1 + n_perm))


def _values(case_df: pd.DataFrame, row: str, metric: str, datasets: Sequence[str] | None,
            rows: str = "config") -> pd.DataFrame:
    df = with_rows(case_df, rows)
    sel = df[df["row"] == row]
    if sel.empty:
        raise VersemiError(f"no cases of row {row!r}; rows: {sorted(df['row'].unique())}")
    if datasets is not None:
        sel = sel[sel["dataset"].isin(list(datasets))]
    scale = 100.0 if metric in PCT_METRICS else 1.0
    keys = ["dataset", "case", *(["seed"] if "seed" in sel else [])]
    return sel[keys].assign(value=sel[metric].astype(float) * scale).dropna(subset=["value"])


def row_interval(case_df: pd.DataFrame, row: str, metric: str = "dice", datasets: Sequence[str] | None = None,
                 n_boot: int = N_BOOT, seed: int = 0, rows: str = "config") -> dict:
    """A table row's average over datasets (Dice/Jaccard in %) with its two-level bootstrap 95% interval:
    ``{mean, lo, hi, n_seeds, n_cases, seed_resamples}``. ``rows``: as
    :func:`~versemi.companion.tables.with_rows` (``"key"`` for ablation variants)."""
    h = Hierarchy.from_frame(_values(case_df, row, metric, datasets, rows))
    lo, hi = interval(hierarchical_bootstrap(h, n_boot, seed))
    return {"mean": h.statistic(), "lo": lo, "hi": hi, "n_seeds": len(h.seeds),
            "n_cases": int(sum(v.size for v in h.groups.values())),
            "seed_resamples": distinct_seed_resamples(len(h.seeds))}


def paired_differences(case_df: pd.DataFrame, a: str, b: str, metric: str = "dice",
                       datasets: Sequence[str] | None = None, rows: str = "config") -> pd.DataFrame:
    """``a - b`` on the (dataset, case[, seed]) pairs both rows have (Dice/Jaccard in points); NaN pairs
    (a distance of an empty prediction) are left out. Columns: the keys and ``value``."""
    A, B = _values(case_df, a, metric, datasets, rows), _values(case_df, b, metric, datasets, rows)
    keys = [k for k in ("dataset", "case", "seed") if k in A and k in B]
    m = A.merge(B, on=keys, suffixes=("_a", "_b"))
    if m.empty:
        raise VersemiError(f"rows {a!r} and {b!r} share no test case")
    return m[keys].assign(value=m["value_a"] - m["value_b"])


def paired_effect(case_df: pd.DataFrame, a: str, b: str, metric: str = "dice",
                  datasets: Sequence[str] | None = None, alternative: str = "two-sided",
                  n_boot: int = N_BOOT, n_perm: int = N_PERM, seed: int = 0, rows: str = "config") -> dict:
    """The effect ``a - b`` (average over datasets of the paired differences; points for Dice/Jaccard,
    voxels for distances) with its two-level bootstrap 95% interval and the sign-flip p-value of the same
    quantity (``alternative``: the direction tested). ``{effect, lo, hi, p, n_seeds, n_pairs,
    seed_resamples, datasets}``."""
    h = Hierarchy.from_frame(paired_differences(case_df, a, b, metric, datasets, rows))
    lo, hi = interval(hierarchical_bootstrap(h, n_boot, seed))
    return {"effect": h.statistic(), "lo": lo, "hi": hi, "p": signflip_p(h, alternative, n_perm, seed),
            "n_seeds": len(h.seeds), "n_pairs": int(sum(v.size for v in h.groups.values())),
            "seed_resamples": distinct_seed_resamples(len(h.seeds)), "datasets": list(h.datasets)}


def equivalence_test(case_df: pd.DataFrame, a: str, b: str, margin: float, metric: str = "dice",
                     datasets: Sequence[str] | None = None, n_boot: int = N_BOOT, n_perm: int = N_PERM,
                     seed: int = 0, rows: str = "config") -> dict:
    """Two one-sided tests of ``|a - b| < margin``: ``p_equivalent`` = max of the sign-flip p-values of
    ``effect > -margin`` and ``effect < margin`` (small when the effect lies inside the margin), and
    ``p_outside`` = min of those of ``effect > margin`` and ``effect < -margin`` (small when it lies
    outside), with the effect and its interval as :func:`paired_effect`."""
    if margin <= 0:
        raise VersemiError(f"an equivalence margin must be positive, got {margin}")
    h = Hierarchy.from_frame(paired_differences(case_df, a, b, metric, datasets, rows))
    lo, hi = interval(hierarchical_bootstrap(h, n_boot, seed))
    p_lower = signflip_p(h, "greater", n_perm, seed, null=-margin)
    p_upper = signflip_p(h, "less", n_perm, seed, null=margin)
    p_above = signflip_p(h, "greater", n_perm, seed, null=margin)
    p_below = signflip_p(h, "less", n_perm, seed, null=-margin)
    return {"effect": h.statistic(), "lo": lo, "hi": hi, "margin": margin,
            "p_equivalent": max(p_lower, p_upper), "p_outside": min(p_above, p_below),
            "n_seeds": len(h.seeds), "n_pairs": int(sum(v.size for v in h.groups.values())),
            "seed_resamples": distinct_seed_resamples(len(h.seeds)), "datasets": list(h.datasets)}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (``statsmodels.stats.multitest.multipletests(method="holm")``) of the
    non-NaN entries of ``pvalues``; NaN stays NaN (a claim not tested does not count in the family)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out.tolist()


def spread_sources(case_df: pd.DataFrame, metric: str = "dice", datasets: Sequence[str] | None = None,
                   rows: str = "config") -> pd.DataFrame:
    """Where the spread of a row's score over seeds comes from: how far the seed means move (``between``,
    the sample std over seeds, ddof 1) against how far the finite test sets alone would move them
    (``sampling``: the root mean over seeds of the squared standard error of a seed's case mean,
    ``sd(cases) / sqrt(n)``). Under pure test-set sampling ``E[between^2] = sampling^2``; what is left,
    ``excess = sqrt(max(between^2 - sampling^2, 0))``, estimates the std that training, split and the
    training draw add. One line per (row, dataset) and per row's ``average`` over datasets (its sampling
    error: ``sqrt(sum_d se_d^2) / D`` within a seed, the datasets' test cases being independent), in points
    for Dice/Jaccard; columns ``row, dataset, n_seeds, between, sampling, excess, ratio`` (``ratio`` =
    between / sampling). Rows with fewer than two seeds are left out (no spread to explain)."""
    df = with_rows(case_df, rows)
    if "seed" not in df or df.empty:
        return pd.DataFrame(columns=SPREAD_COLUMNS)
    if datasets is not None:
        df = df[df["dataset"].isin(list(datasets))]
    scale = 100.0 if metric in PCT_METRICS else 1.0
    g = df.dropna(subset=[metric]).groupby(["row", "dataset", "seed"], sort=False)[metric]
    per = pd.DataFrame({"mean": g.mean() * scale, "se": g.std(ddof=1) * scale / np.sqrt(g.size())}).reset_index()
    lines = []

    def line(row, dataset, means, se):
        between = float(np.std(means, ddof=1))
        sampling = _rms(se)
        lines.append({"row": row, "dataset": dataset, "n_seeds": len(means), "between": between,
                      "sampling": sampling, "excess": math.sqrt(max(between ** 2 - sampling ** 2, 0.0)),
                      "ratio": between / sampling if sampling > 0 else math.nan})

    for row in dict.fromkeys(per["row"]):
        sub = per[per["row"] == row]
        ds = ordered_datasets(sub["dataset"].unique())
        for d in ds:
            x = sub[sub["dataset"] == d]
            if len(x) >= 2:
                line(row, d, x["mean"].to_numpy(), x["se"].to_numpy())
        wide = sub.pivot(index="seed", columns="dataset", values=["mean", "se"]).dropna()
        if len(wide) >= 2 and len(ds) > 1:
            avg = wide["mean"][ds].mean(axis=1).to_numpy()
            se = np.sqrt((wide["se"][ds] ** 2).sum(axis=1).to_numpy()) / len(ds)
            line(row, AVERAGE, avg, se)
    return pd.DataFrame(lines, columns=SPREAD_COLUMNS)


def _rms(x) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def spread_sentence(sources: pd.DataFrame, bar: float = 2.0) -> str:
    """One paragraph of :func:`spread_sources` at the level of a row's average: how much the test sets
    alone move it, how much it moved, which rows move beyond sampling (the two largest excesses), and
    how many rows stay within ``bar`` points of std."""
    avg = sources[sources["dataset"] == AVERAGE] if len(sources) else sources
    if avg.empty:
        return "With one seed per run there is no spread over seeds to explain."
    within = int((avg["ratio"] <= 1).sum())
    top = avg.sort_values("excess", ascending=False).head(2)
    top = top[top["excess"] > 0]
    worst = ", ".join(f"{r} ({e:.1f})" for r, e in zip(top["row"], top["excess"]))
    text = (f"The finite test sets alone move a row's average by {_rms(avg['sampling']):.1f} points between seeds "
            f"(root mean square over the {len(avg)} rows with two seeds or more); it moved by "
            f"{_rms(avg['between']):.1f}. {within} of {len(avg)} rows move no more than their test sets explain")
    text += f"; the largest excess over sampling (points): {worst}." if worst else "."
    n_bar = int((avg["between"] <= bar).sum())
    return text + (f" {n_bar} of {len(avg)} rows have a spread of at most {bar:g} points; with the test sets "
                   f"this size, sampling alone puts a row's expected spread at "
                   f"{float(avg['sampling'].min()):.1f}-{float(avg['sampling'].max()):.1f} points.")
