"""The conflict chapter (beyond the paper): the gradient conflict between datasets, the transfer between them,
whether the first explains the second, and PCGrad as one mitigation, read from the conflict study.

The study (``versemi/experiments.py::conflict_configs``) holds, per seed, the two probed runs (VerSemi and
Uni-Sup-only with the gradient probe of ``versemi/conflict.py``), VerSemi on the four datasets, the four
leave-one-dataset-out VerSemi runs, VerSemi on each dataset alone, and VerSemi + PCGrad.

* :func:`conflict_lines`: the probed scalars as the long table of :func:`versemi.conflict.conflict_table`
  (``method, seed, step, group, kind, a, b, value``).
* :func:`cosine_matrix`, :func:`group_summary`, :func:`plot_cosine_matrices`, :func:`plot_trajectories`: the
  task x task mean cosine (over probed steps and seeds), its per-layer-group summary and its course.
* :func:`transfer_table`, :func:`plot_transfer`: the effect on dataset ``j`` of adding dataset ``k`` to the
  joint training, Dice(``j`` | all four) - Dice(``j`` | all but ``k``) in points, and of the other three
  together, Dice(``j`` | all four) - Dice(``j`` | ``j`` alone): paired over the same test cases and seeds
  (:func:`versemi.companion.uncertainty.paired_effect`: two-level bootstrap 95% interval over seeds and cases,
  sign-flip p-value), Holm-corrected over the whole matrix.
* :func:`conflict_vs_transfer`, :func:`plot_conflict_vs_transfer`: per ordered pair (``j``, ``k``) the mean
  cosine of the two tasks' gradients against the transfer of ``k`` to ``j``, with Spearman's rank
  correlation (``scipy.stats.spearmanr``) and its percentile bootstrap interval over the pairs.
* :func:`pcgrad_table`: VerSemi + PCGrad - VerSemi per dataset and on the average over datasets, paired.
* :func:`glue_values`, :func:`limitation_row`: the numbers the prose quotes and the claims chapter's line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from scipy import stats

from versemi.companion.tables import fmt_value
from versemi.companion.uncertainty import N_BOOT, N_PERM, holm, paired_effect
from versemi.conflict import GROUPS, SYNTHETIC, conflict_table, mean_cosine_matrix, task_order
from versemi.data.registry import ALL_DATASETS
from versemi.experiments import CONFLICT_PCGRAD, CONFLICT_PROBED, CONFLICT_UNI_PROBED, conflict_loo_label
from versemi.utils import VersemiError

ALPHA = 0.05
PROBED = (CONFLICT_PROBED, CONFLICT_UNI_PROBED)
ALONE = "the other three"      # the ``added`` entry of the joint-vs-alone line of the transfer table
TRANSFER_COLUMNS = ["target", "added", "effect", "lo", "hi", "p", "p_holm", "significant"]


def full_label(ratio: int = 10) -> str:
    return f"VerSemi {ratio}%"


def alone_label(dataset: str, ratio: int = 10) -> str:
    return f"VerSemi ({dataset}) {ratio}%"


def status_text(results) -> str:
    """What of the study this page shows: the seeds, and the runs not committed yet (each section then says
    what it cannot show)."""
    missing = list(getattr(results, "missing", []) or [])
    seeds = ", ".join(map(str, results.seeds)) if results.records else "none"
    text = f"Runs of the conflict study on this page: {len(results.records)} (seeds {seeds})."
    if missing:
        text += f" Not committed yet: {', '.join(missing)}; the sections that need them say so."
    return text


# ------------------------------------------------------------------------------------------ the gradients
def conflict_lines(results) -> pd.DataFrame:
    """The probed runs' conflict scalars of a :class:`versemi.studies.StudyResults` as a long table (module
    docstring); empty (with the columns) when no probed run is there."""
    cols = ["method", "seed", "step", "group", "kind", "a", "b", "value"]
    if results is None or results.conflict is None or results.conflict.empty:
        return pd.DataFrame(columns=cols)
    return conflict_table(results.conflict)[cols]


def cosine_matrix(lines: pd.DataFrame, method: str, group: str = "all") -> pd.DataFrame:
    """Task x task mean cosine of ``method``'s probed steps and seeds (one layer group)."""
    sub = lines[lines["method"] == method]
    if sub.empty:
        raise VersemiError(f"no probed steps of {method!r}; probed: {sorted(lines['method'].unique())}")
    return mean_cosine_matrix(sub, group)


def pair_table(lines: pd.DataFrame, group: str = "all") -> pd.DataFrame:
    """One line per probed method and task pair: ``method, a, b, mean, sd, share_negative, n`` (mean and
    standard deviation of the cosine over probed steps and seeds, the share of them below 0, their count)."""
    cos = lines[(lines["kind"] == "cos") & (lines["group"] == group)]
    g = cos.groupby(["method", "a", "b"], sort=False)["value"]
    out = pd.DataFrame({"mean": g.mean(), "sd": g.std(), "share_negative": g.apply(lambda v: float((v < 0).mean())),
                        "n": g.size()}).reset_index()
    return out.sort_values(["method", "mean"], ignore_index=True)


def group_summary(lines: pd.DataFrame) -> pd.DataFrame:
    """Per probed method and layer group: the mean cosine over every task pair, probed step and seed, the share
    of negative cosines, the most conflicting pair (lowest mean) and its mean cosine."""
    rows = []
    for method in [m for m in PROBED if m in set(lines["method"])]:
        for group in (*GROUPS, "all"):
            pairs = pair_table(lines[lines["method"] == method], group)
            cos = lines[(lines["method"] == method) & (lines["kind"] == "cos") & (lines["group"] == group)]
            if pairs.empty:
                continue
            worst = pairs.iloc[0]
            rows.append({"method": method, "group": group, "mean cosine": float(cos["value"].mean()),
                         "share negative": float((cos["value"] < 0).mean()),
                         "most conflicting pair": f"{worst['a']} / {worst['b']}", "its mean cosine": float(worst["mean"])})
    return pd.DataFrame(rows)


def norm_table(lines: pd.DataFrame) -> pd.DataFrame:
    """The magnitudes: per probed method and task, the mean L2 norm of the task's gradient over probed steps and
    seeds in each layer group (columns) and over all shared parameters; tasks in the paper's order."""
    norms = lines[lines["kind"] == "norm"]
    if norms.empty:
        return pd.DataFrame(columns=["method", "task", *GROUPS, "all"])
    t = norms.pivot_table(index=["method", "a"], columns="group", values="value", aggfunc="mean").reset_index()
    t = t.rename(columns={"a": "task"}).rename_axis(columns=None)
    rank = {n: i for i, n in enumerate(task_order(t["task"]))}
    t = t.sort_values(["method", "task"], key=lambda c: c.map(rank) if c.name == "task" else c, ignore_index=True)
    return t[["method", "task", *[g for g in (*GROUPS, "all") if g in t.columns]]]


def plot_cosine_matrices(lines: pd.DataFrame, group: str = "all", title: str = ""):
    """Heat maps of the mean cosine matrix of each probed method (one layer group). Returns the Figure."""
    methods = [m for m in PROBED if m in set(lines["method"])]
    fig, axes = plt.subplots(1, len(methods), figsize=(4.6 * len(methods), 4.0), squeeze=False)
    for ax, method in zip(axes[0], methods):
        mat = cosine_matrix(lines, method, group)
        sns.heatmap(mat, vmin=-1, vmax=1, center=0, cmap="RdBu_r", annot=True, fmt=".2f", square=True, cbar=False,
                    ax=ax, annot_kws={"size": 8})
        ax.set_title(method, fontsize=9)
    fig.suptitle(title or f"Mean cosine of the per-task gradients ({group} shared parameters)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_trajectories(lines: pd.DataFrame, method: str = CONFLICT_PROBED, group: str = "all"):
    """Cosine of every task pair of ``method`` at each probed step (mean over seeds; the band spans the
    seeds). Returns the Figure."""
    cos = lines[(lines["method"] == method) & (lines["kind"] == "cos") & (lines["group"] == group)]
    fig, ax = plt.subplots(figsize=(8.5, 3.6))
    for (a, b), g in cos.groupby(["a", "b"], sort=False):
        by = g.groupby("step")["value"]
        m = by.mean()
        line, = ax.plot(m.index, m.to_numpy(), marker=".", lw=1, label=f"{a} / {b}",
                        ls="--" if SYNTHETIC in (a, b) else "-")
        if g["seed"].nunique() > 1:
            ax.fill_between(m.index, by.min().to_numpy(), by.max().to_numpy(), color=line.get_color(), alpha=0.12)
    ax.axhline(0, color="k", lw=0.6)
    ax.set(xlabel="training step", ylabel="cosine", title=f"{method}: per-task gradient cosine ({group} parameters)")
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------- the transfer
def transfer_table(cases: pd.DataFrame, ratio: int = 10, n_boot: int = N_BOOT, n_perm: int = N_PERM) -> pd.DataFrame:
    """One line per (``target`` dataset, ``added`` dataset): the effect in Dice points of adding ``added`` to
    the joint VerSemi training, as seen on ``target``'s test cases, with its 95% interval, the sign-flip p, its
    Holm adjustment over every line, ``significant`` and the pairs and seeds (module docstring); ``added`` =
    :data:`ALONE` compares the four-dataset run with the run on ``target`` alone. Lines whose runs are not
    in ``cases`` are left out."""
    have = set(cases["method"])
    full = full_label(ratio)
    if full not in have:
        return pd.DataFrame(columns=TRANSFER_COLUMNS)
    rows = []
    for j in [d for d in ALL_DATASETS if d in set(cases.loc[cases["method"] == full, "dataset"])]:
        others = [(k, conflict_loo_label(k, ratio)) for k in ALL_DATASETS if k != j] + [(ALONE, alone_label(j, ratio))]
        for k, b in others:
            if b not in have:
                continue
            r = paired_effect(cases, full, b, datasets=[j], n_boot=n_boot, n_perm=n_perm, rows="key")
            rows.append({"target": j, "added": k, "effect": r["effect"], "lo": r["lo"], "hi": r["hi"], "p": r["p"],
                         "n_seeds": r["n_seeds"], "n_pairs": r["n_pairs"]})
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=TRANSFER_COLUMNS)
    df["p_holm"] = holm(df["p"].tolist())
    df["significant"] = df["p_holm"] < ALPHA
    return df


def transfer_matrix(transfer: pd.DataFrame) -> pd.DataFrame:
    """The target x added matrix of effects (points), with the :data:`ALONE` column last."""
    m = transfer.pivot(index="target", columns="added", values="effect")
    rows = [d for d in ALL_DATASETS if d in m.index]
    cols = [d for d in ALL_DATASETS if d in m.columns] + ([ALONE] if ALONE in m.columns else [])
    return m.loc[rows, cols]


def plot_transfer(transfer: pd.DataFrame, title: str = ""):
    """Heat map of :func:`transfer_matrix`; a star marks a Holm-significant effect. Returns the Figure."""
    m = transfer_matrix(transfer)
    sig = transfer.pivot(index="target", columns="added", values="significant").reindex_like(m)
    text = m.map(lambda v: "" if pd.isna(v) else f"{v:+.1f}") + sig.map(lambda s: "*" if s is True else "")
    lim = max(1.0, float(np.nanmax(np.abs(m.to_numpy()))))
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    sns.heatmap(m.astype(float), vmin=-lim, vmax=lim, center=0, cmap="RdBu", annot=text.to_numpy(), fmt="",
                cbar_kws={"label": "Dice points"}, ax=ax)
    ax.set(xlabel="dataset added to the joint training", ylabel="test set")
    ax.set_title(title or "Transfer: Dice(all four) - Dice(without the column's dataset)", fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------- conflict vs transfer
def _no_correlation(n: int) -> dict:
    return {"rho": math.nan, "lo": math.nan, "hi": math.nan, "p": math.nan, "n": n}


def conflict_vs_transfer(lines: pd.DataFrame, transfer: pd.DataFrame, method: str = CONFLICT_PROBED,
                         group: str = "all", n_boot: int = N_BOOT, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Per ordered dataset pair (``target``, ``added``) of the transfer table (the :data:`ALONE` lines left
    out): the mean cosine of their gradients in ``method``'s probed steps and the transfer effect; and Spearman's
    rank correlation ``{rho, lo, hi, p, n}`` with a percentile bootstrap 95% interval over the pairs (each
    unordered pair's cosine enters twice, once per direction: the interval is optimistic for that reason)."""
    pairs = transfer[transfer["added"] != ALONE]
    if pairs.empty or method not in set(lines["method"]):
        return pd.DataFrame(columns=["target", "added", "cosine", "effect"]), _no_correlation(0)
    mat = cosine_matrix(lines, method, group)
    df = pairs[["target", "added", "effect", "significant"]].copy()
    df["cosine"] = [mat.loc[j, k] if j in mat.index and k in mat.columns else np.nan
                    for j, k in zip(df["target"], df["added"])]
    df = df.dropna(subset=["cosine"]).reset_index(drop=True)
    x, y = df["cosine"].to_numpy(float), df["effect"].to_numpy(float)
    if len(df) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:   # too few, or all tied: no rank correlation
        return df, _no_correlation(len(df))
    rho, p = stats.spearmanr(x, y)
    # percentile bootstrap over the pairs; a resample whose cosines or effects are all tied has no rank
    # correlation and is drawn again (scipy.stats.bootstrap would return NaN for the whole interval)
    rng = np.random.default_rng(seed)
    reps = []
    while len(reps) < n_boot:
        idx = rng.integers(0, len(x), size=(n_boot, len(x)))
        for i in idx:
            if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
                reps.append(stats.spearmanr(x[i], y[i])[0])
    lo, hi = np.quantile(np.asarray(reps[:n_boot]), [0.025, 0.975])
    return df, {"rho": float(rho), "lo": float(lo), "hi": float(hi), "p": float(p), "n": len(df)}


def plot_conflict_vs_transfer(pairs: pd.DataFrame, corr: dict, title: str = ""):
    """Scatter of :func:`conflict_vs_transfer`'s pairs with the rank correlation in the title."""
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    ax.scatter(pairs["cosine"], pairs["effect"], c=np.where(pairs["significant"], "C3", "C0"), s=28)
    for _, r in pairs.iterrows():
        ax.annotate(f"{r['added']}→{r['target']}", (r["cosine"], r["effect"]), fontsize=6, xytext=(3, 2),
                    textcoords="offset points")
    ax.axhline(0, color="k", lw=0.6)
    ax.axvline(0, color="k", lw=0.6)
    ax.set(xlabel="mean gradient cosine of the two tasks", ylabel="transfer (Dice points)")
    ax.set_title(title or f"Spearman rho {corr['rho']:+.2f} [{corr['lo']:+.2f}, {corr['hi']:+.2f}], "
                          f"n = {corr['n']} ordered pairs", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------- the mitigation
def pcgrad_table(cases: pd.DataFrame, ratio: int = 10, n_boot: int = N_BOOT, n_perm: int = N_PERM) -> pd.DataFrame:
    """VerSemi + PCGrad - VerSemi (Dice points) on each dataset (Holm over the datasets) and on the average over
    datasets (``dataset`` = ``average``, the primary comparison, not adjusted): effect, 95% interval, p, pairs,
    seeds. Empty without both runs."""
    full = full_label(ratio)
    if not {full, CONFLICT_PCGRAD} <= set(cases["method"]):
        return pd.DataFrame(columns=["dataset", "effect", "lo", "hi", "p", "p_holm"])
    rows = []
    for d in [d for d in ALL_DATASETS if d in set(cases["dataset"])]:
        r = paired_effect(cases, CONFLICT_PCGRAD, full, datasets=[d], n_boot=n_boot, n_perm=n_perm, rows="key")
        rows.append({"dataset": d, **{k: r[k] for k in ("effect", "lo", "hi", "p", "n_pairs", "n_seeds")}})
    df = pd.DataFrame(rows)
    df["p_holm"] = holm(df["p"].tolist())
    r = paired_effect(cases, CONFLICT_PCGRAD, full, n_boot=n_boot, n_perm=n_perm, rows="key")
    avg = {"dataset": "average", **{k: r[k] for k in ("effect", "lo", "hi", "p", "n_pairs", "n_seeds")}, "p_holm": r["p"]}
    return pd.concat([df, pd.DataFrame([avg])], ignore_index=True)


# ------------------------------------------------------------------------------------------- the prose
def hurting_pairs(transfer: pd.DataFrame) -> list[str]:
    """'adding k hurts j' for every Holm-significant negative line of the transfer table."""
    bad = transfer[(transfer["significant"]) & (transfer["effect"] < 0)]
    return [f"adding {r['added']} hurts {r['target']} ({r['effect']:+.1f} points)" if r["added"] != ALONE
            else f"joint training hurts {r['target']} against training on it alone ({r['effect']:+.1f} points)"
            for _, r in bad.iterrows()]


def glue_values(lines: pd.DataFrame, transfer: pd.DataFrame, corr: dict, pcgrad: pd.DataFrame) -> dict[str, str]:
    """The values the conflict chapter's prose quotes (``myst_nb.glue`` names ``cf_*``)."""
    out = {}
    pairs = pair_table(lines)
    versemi = pairs[pairs["method"] == CONFLICT_PROBED]
    if len(versemi):
        w = versemi.iloc[0]
        out.update(cf_worst_pair=f"{w['a']} / {w['b']}", cf_worst_cos=fmt_value(w["mean"], sign=True),
                   cf_worst_share=f"{100 * w['share_negative']:.0f}")
        cos = lines[(lines["method"] == CONFLICT_PROBED) & (lines["kind"] == "cos") & (lines["group"] == "all")]
        out["cf_share_negative"] = f"{100 * float((cos['value'] < 0).mean()):.0f}"
        out["cf_probes"] = str(int(cos.groupby("seed")["step"].nunique().max()))
        out["cf_seeds"] = str(int(cos["seed"].nunique()))
    else:
        out.update(cf_worst_pair="n/a", cf_worst_cos="n/a", cf_worst_share="n/a", cf_share_negative="n/a",
                   cf_probes="0", cf_seeds="0")
    hurt = hurting_pairs(transfer) if len(transfer) else []
    out["cf_hurting"] = "; ".join(hurt) if hurt else "no pair (after Holm correction)"
    out["cf_n_transfer"] = str(len(transfer))
    out["cf_rho"] = fmt_value(corr.get("rho", math.nan), sign=True)
    out["cf_rho_ci"] = f"[{fmt_value(corr.get('lo', math.nan), sign=True)}, {fmt_value(corr.get('hi', math.nan), sign=True)}]"
    out["cf_rho_n"] = str(corr.get("n", 0))
    avg = pcgrad[pcgrad["dataset"] == "average"] if len(pcgrad) else pcgrad
    if len(avg):
        a = avg.iloc[0]
        out.update(cf_pcgrad=fmt_value(a["effect"], 1, sign=True),
                   cf_pcgrad_ci=f"[{fmt_value(a['lo'], 1, sign=True)}, {fmt_value(a['hi'], 1, sign=True)}]",
                   cf_pcgrad_p=fmt_value(a["p"], 3))
    else:
        out.update(cf_pcgrad="n/a", cf_pcgrad_ci="n/a", cf_pcgrad_p="n/a")
    return out


LIMITATION_STATEMENT = ("Training one model on several datasets, conflicts inherent between the datasets may affect "
                        "training (the paper's conclusion, its stated limitation)")


def limitation_row(lines: pd.DataFrame, transfer: pd.DataFrame, corr: dict, pcgrad: pd.DataFrame,
                   seeds: Sequence[int] = (), alpha: float = ALPHA) -> dict:
    """The claims chapter's line for the paper's stated limitation, in the columns of
    :func:`versemi.companion.claims.evaluate_claims`: the measured effect is the most negative transfer effect
    (Dice points, :func:`transfer_table`) with its interval and Holm-adjusted p (over the transfer matrix);
    the verdict is *supported* when some transfer effect is significantly negative after Holm (joint training
    measurably hurt a dataset), *contradicted* when every one is significantly positive, *inconclusive*
    otherwise, *not testable here* without the study's runs; the note says what else was measured (the
    gradient cosines, their rank correlation with the transfer, PCGrad)."""
    base = {"claim": "dataset_conflict", "statement": LIMITATION_STATEMENT, "kind": "directional",
            "evidence": "conflict", "metric": "dice", "claimed": math.nan, "source": "the paper's conclusion",
            "confidence": "stated, no number", "p_other": math.nan, "p_other_holm": math.nan, "claimed_in_ci": None}
    if transfer.empty:
        return {**base, "compared": "", "measured": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                "n_seeds": 0, "n": 0, "p_claimed": math.nan, "p_claimed_holm": math.nan,
                "note": "the conflict study (10_conflict) has no runs in this build", "verdict": "not testable here"}
    worst = transfer.sort_values("effect").iloc[0]
    what = ("VerSemi on the four datasets - on the other three" if worst["added"] == ALONE
            else f"VerSemi on the four - without {worst['added']}")
    hurt = hurting_pairs(transfer)
    helped = bool(((transfer["p_holm"] < alpha) & (transfer["effect"] > 0)).all())
    v = glue_values(lines, transfer, corr, pcgrad)
    note = (f"{len(hurt)} of {len(transfer)} transfer effects significantly negative after Holm"
            + (f" ({'; '.join(hurt)})" if hurt else "")
            + f"; most conflicting gradient pair {v['cf_worst_pair']} (mean cosine {v['cf_worst_cos']}); rank "
              f"correlation of cosine and transfer {v['cf_rho']} {v['cf_rho_ci']}; PCGrad - VerSemi "
              f"{v['cf_pcgrad']} points {v['cf_pcgrad_ci']}"
            + (f"; seeds {', '.join(map(str, seeds))}" if seeds else ""))
    return {**base, "compared": f"{what}, on {worst['target']}", "measured": float(worst["effect"]),
            "ci_low": float(worst["lo"]), "ci_high": float(worst["hi"]), "n_seeds": int(worst["n_seeds"]),
            "n": int(worst["n_pairs"]), "p_claimed": float(worst["p"]), "p_claimed_holm": float(worst["p_holm"]),
            "note": note, "verdict": "supported" if hurt else ("contradicted" if helped else "inconclusive")}

