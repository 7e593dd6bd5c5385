"""The paper's tables: rows, groups and cells built from the long per-case table of several runs.

Input: the long table of :func:`versemi.runs.collect_case_metrics` (one line per run key, dataset and
test case, with the run's placing fields ``row, method_id, trained_on, ratio, head, task_specific,
fully_supervised`` and the metrics ``dice, jaccard, hd95, asd, empty_pred, empty_gt``).

Conventions

* Dice and Jaccard are shown in % (``scale_pct=True``), HD95 and ASD in voxels, as the paper.
* A case with an empty prediction scores 0 on all four metrics (the authors' convention, kept by
  :func:`versemi.evaluate.case_metrics`); such cases stay in the means and are *counted* in every table
  (``n_empty_pred``), never dropped.
* HD95/ASD are NaN for a case whose ground truth is empty; they are left out of that metric's mean and
  counted (``n_nan``), as :func:`versemi.evaluate.summarize` does.
* Rows (:func:`with_rows`). ``rows="config"`` places each run from its configuration fields: the row is
  the run's :meth:`~versemi.config.RunConfig.row_name`, the group is *Task-specific* for a run on one
  dataset (it fills only its own dataset's column), *Unified (Uni-)* for a baseline on several datasets,
  *VerSemi* for VerSemi on several datasets, *Upper bound* for a fully supervised run. ``rows="key"``
  makes each run key its own row in the group *Other*: the variants of one model (the ablations, whose key
  is the variant's name) share every field that places a paper row, so only their key tells them apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from versemi.config import data_note, is_phantom, make_config
from versemi.data.registry import ALL_DATASETS, DATASETS
from versemi.evaluate import METRICS
from versemi.model import VerSemiNet, count_parameters
from versemi.utils import VersemiError

PCT_METRICS = ("dice", "jaccard")
METRIC_NAMES = {"dice": "Dice (%)", "jaccard": "Jaccard (%)", "hd95": "95HD (vox)", "asd": "ASD (vox)"}
METRIC_NAMES_RAW = {"dice": "Dice", "jaccard": "Jaccard", "hd95": "95HD (vox)", "asd": "ASD (vox)"}
DATASET_ORDER = ALL_DATASETS
DATASET_TITLES = {d: DATASETS[d].short_title for d in ALL_DATASETS}
AVERAGE = "average"
NA = "n/a"

# table groups and rows, in the paper's order
GROUPS = ("Task-specific", "Unified (Uni-)", "Universal", "VerSemi", "Upper bound", "Other")
SSL_ROWS = ("Sup-only", "MT", "UA-MT", "DTC", "ASE-Net", "BCP", "CauSSL", "MagicNet")
METHOD_ORDER = (*SSL_ROWS, *(f"Uni-{r}" for r in SSL_ROWS), "DoDNet", "UniSeg", "VerSemi", "Fully supervised")
# the columns of the long table that place a run in a paper table (versemi.runs.run_fields)
ROW_FIELDS = ("row", "method_id", "trained_on", "ratio", "task_specific", "fully_supervised")
ROW_MODES = ("config", "key")


# ---------------------------------------------------------------------------------------------- rows
def require(df: pd.DataFrame, cols: Sequence[str]) -> None:
    """A :class:`VersemiError` naming the columns of ``cols`` that ``df`` lacks."""
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise VersemiError(f"table lacks column(s) {missing}; got {list(df.columns)}")


def table_group(task_specific: bool, fully_supervised: bool, method_id: str) -> str:
    """The paper-table group of a run from its configuration fields (module docstring)."""
    if fully_supervised:
        return "Upper bound"
    if task_specific:
        return "Task-specific"
    if method_id == "versemi":
        return "VerSemi"
    from versemi.methods import get_method_class, method_names

    if method_id in method_names() and get_method_class(method_id).universal:
        return "Universal"
    return "Unified (Uni-)"


def with_rows(case_df: pd.DataFrame, rows: str = "config") -> pd.DataFrame:
    """``case_df`` with the columns ``row``, ``group`` and ``ratio`` of the table line of each case.

    ``rows="config"`` (the paper's tables): from the run fields (module docstring); the cases of a
    task-specific run on another dataset than its own are dropped, so that a column always comes from
    the run trained on that dataset. Two run keys that land on the same (row, dataset) are an error (e.g.
    ablation variants, which all are the row 'VerSemi': use ``rows="key"`` for them).
    ``rows="key"``: the run key (``method``) is the row, the group is 'Other', ``ratio`` is kept when the
    table has it.
    """
    if rows not in ROW_MODES:
        raise VersemiError(f"rows must be one of {ROW_MODES}, got {rows!r}")
    require(case_df, ["method", "dataset", "case"])
    out = case_df.copy()
    if rows == "key":
        out["row"] = out["method"].astype(str)
        out["group"] = "Other"
        if "ratio" not in out:
            out["ratio"] = None
        return out
    require(case_df, ROW_FIELDS)
    out["group"] = [table_group(bool(t), bool(f), str(m)) for t, f, m in
                    zip(out["task_specific"], out["fully_supervised"], out["method_id"])]
    own = ~out["task_specific"].astype(bool) | (out["trained_on"] == out["dataset"])
    out = out[own]
    keys = out.groupby(["row", "dataset"], sort=False)["method"].unique()
    clash = keys[keys.map(len) > 1]
    if len(clash):
        (row, ds), names = clash.index[0], list(clash.iloc[0])
        raise VersemiError(f"runs {names} are all the row {row!r} on {ds}: a paper table holds one run per "
                           f"row and dataset; pass rows='key' to show each run as its own row")
    return out


def _row_sort_key(row: str, group: str) -> tuple:
    g = GROUPS.index(group) if group in GROUPS else len(GROUPS)
    m = METHOD_ORDER.index(row) if row in METHOD_ORDER else len(METHOD_ORDER)
    return (g, m, row)


def ordered_rows(df: pd.DataFrame) -> list[str]:
    """The distinct ``row`` values of ``df`` (see :func:`with_rows`) in the paper's order."""
    pairs = df[["row", "group"]].drop_duplicates()
    return [r for r, g in sorted(zip(pairs["row"], pairs["group"]), key=lambda p: _row_sort_key(*p))]


def ordered_datasets(datasets: Iterable[str]) -> list[str]:
    """The distinct datasets in the paper's order (unknown names last, alphabetically)."""
    ds = list(dict.fromkeys(datasets))
    return sorted(ds, key=lambda d: (DATASET_ORDER.index(d) if d in DATASET_ORDER else 99, d))


# ------------------------------------------------------------------------------------------ comparison
def cell_stats(sub: pd.DataFrame, metric: str, scale: float) -> dict:
    """Mean and population std (ddof=0) of ``metric`` x ``scale`` over the cases of ``sub`` (NaN left
    out and counted in ``n_nan``), the number of cases ``n`` and of empty predictions ``n_empty_pred``.

    With a ``seed`` column (the runs of several seeds, :mod:`versemi.studies`) the mean is the mean of the
    per-seed means, ``std`` the spread over every case of every seed, ``n_seeds`` the number of seeds and
    ``seed_sd`` the sample std (ddof=1) of the per-seed means (NaN for one seed): how much the result moves
    when data draw, split and initialisation change."""
    v = np.asarray(sub[metric], dtype=np.float64) * scale
    ok = ~np.isnan(v)
    seeds = np.asarray(sub["seed"]) if "seed" in sub else np.zeros(len(sub), dtype=int)
    per_seed = [v[(seeds == s) & ok].mean() for s in dict.fromkeys(seeds) if ((seeds == s) & ok).any()]
    return {"mean": float(np.mean(per_seed)) if per_seed else math.nan,
            "std": float(v[ok].std(ddof=0)) if ok.any() else math.nan,
            "n": int(len(sub)),
            "n_empty_pred": int(np.asarray(sub["empty_pred"], dtype=bool).sum()) if "empty_pred" in sub else 0,
            "n_nan": int(v.size - ok.sum()),
            "n_seeds": len(per_seed),
            "seed_sd": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else math.nan}


def comparison_long(case_df: pd.DataFrame, metrics: Sequence[str] = METRICS, scale_pct: bool = True,
                    datasets: Sequence[str] | None = None, rows: str = "config") -> pd.DataFrame:
    """Numeric long table (for CSV): one line per (row, dataset, metric), plus the average over datasets.

    Columns: ``group, row, ratio, dataset, metric, unit, mean, std, n, n_empty_pred, n_nan, n_seeds,
    seed_sd`` (:func:`cell_stats`). ``std`` is the population std over cases (``ddof=0``, as ``np.std`` and
    the authors). The ``average`` lines are the mean of the per-dataset means (each dataset weighs the
    same, as the paper's average column) and exist only for rows that have every dataset shown; their
    ``std`` is NaN (not a per-case quantity), ``n``/``n_empty_pred`` are sums, and ``seed_sd`` is the
    sample std over seeds of the per-seed average over datasets. ``rows``: see :func:`with_rows`.
    """
    df = with_rows(case_df, rows)
    if datasets is not None:
        df = df[df["dataset"].isin(list(datasets))]
    ds_all = ordered_datasets(datasets if datasets is not None else df["dataset"])
    lines = []
    for row in ordered_rows(df):
        sub_row = df[df["row"] == row]
        group = sub_row["group"].iloc[0]
        ratio = sub_row["ratio"].iloc[0]
        for metric in metrics:
            scale = 100.0 if (scale_pct and metric in PCT_METRICS) else 1.0
            unit = "%" if scale == 100.0 else ("fraction" if metric in PCT_METRICS else "voxels")
            per_ds = []
            for ds in ds_all:
                sub = sub_row[sub_row["dataset"] == ds]
                if sub.empty:
                    continue
                st = cell_stats(sub, metric, scale)
                per_ds.append(st)
                lines.append({"group": group, "row": row, "ratio": ratio, "dataset": ds, "metric": metric,
                              "unit": unit, **st})
            if len(per_ds) == len(ds_all) and ds_all:
                means = [s["mean"] for s in per_ds]
                seed_avg = _per_seed_average(sub_row, metric, scale, ds_all)
                lines.append({"group": group, "row": row, "ratio": ratio, "dataset": AVERAGE, "metric": metric,
                              "unit": unit, "mean": float(np.mean(means)) if not np.isnan(means).any() else math.nan,
                              "std": math.nan, "n": sum(s["n"] for s in per_ds),
                              "n_empty_pred": sum(s["n_empty_pred"] for s in per_ds),
                              "n_nan": sum(s["n_nan"] for s in per_ds), "n_seeds": len(seed_avg),
                              "seed_sd": float(np.std(seed_avg, ddof=1)) if len(seed_avg) > 1 else math.nan})
    cols = ["group", "row", "ratio", "dataset", "metric", "unit", "mean", "std", "n", "n_empty_pred", "n_nan",
            "n_seeds", "seed_sd"]
    return pd.DataFrame(lines, columns=cols)


def _per_seed_average(sub_row: pd.DataFrame, metric: str, scale: float, datasets) -> list[float]:
    """Per seed, the mean over ``datasets`` of the per-dataset mean of ``metric`` (seeds that lack a
    dataset are left out)."""
    if "seed" not in sub_row:
        return []
    out = []
    for _, g in sub_row.groupby("seed", sort=True):
        m = [np.nanmean(np.asarray(g.loc[g["dataset"] == ds, metric], dtype=np.float64) * scale)
             for ds in datasets if (g["dataset"] == ds).any()]
        if len(m) == len(datasets):
            out.append(float(np.mean(m)))
    return out


def format_mean_std(mean: float, std: float, digits: int = 2) -> str:
    """'78.63 ± 3.21'; 'n/a' when the mean is NaN; the mean alone when std is NaN."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return NA
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_value(v: float, digits: int = 2, suffix: str = "", sign: bool = False) -> str:
    """``v`` with ``digits`` decimals (and its sign, '+1.20', when ``sign``) and ``suffix``; 'n/a' for
    None or NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return NA
    return f"{v:+.{digits}f}{suffix}" if sign else f"{v:.{digits}f}{suffix}"


def comparison_table(case_df: pd.DataFrame, metrics: Sequence[str] = METRICS, scale_pct: bool = True,
                     datasets: Sequence[str] | None = None, digits: int = 2, rows: str = "config") -> pd.DataFrame:
    """Wide display table: rows = methods (index ``(group, method)``), columns = ``(dataset, quantity)``.

    Quantities per dataset: one ``"mean ± std"`` string per metric (Dice/Jaccard in % when
    ``scale_pct``, distances in voxels) and ``"cases (empty pred.)"``, e.g. ``"4 (1)"``: the number of
    test cases and, in brackets, how many of them got an empty prediction (scored 0 on all four metrics,
    kept in the means). The ``average`` column is the mean over datasets of the per-dataset means (no
    ± since it is not a per-case spread); a row that lacks a dataset gets ``n/a`` there. Missing cells
    are ``n/a``. The numeric version is :func:`comparison_long`.
    """
    long = comparison_long(case_df, metrics, scale_pct, datasets, rows)
    if long.empty:
        return pd.DataFrame()
    ds_cols = [d for d in ordered_datasets(long["dataset"]) if d != AVERAGE] + [AVERAGE]
    names = METRIC_NAMES if scale_pct else METRIC_NAMES_RAW
    count_col = "cases (empty pred.)"
    lines, index = [], []
    for row in dict.fromkeys(long["row"]):
        sub = long[long["row"] == row]
        index.append((sub["group"].iloc[0], row))
        line = {}
        for ds in ds_cols:
            cell = sub[sub["dataset"] == ds]
            for metric in metrics:
                c = cell[cell["metric"] == metric]
                line[(ds, names[metric])] = (format_mean_std(c["mean"].iloc[0], c["std"].iloc[0], digits)
                                             if len(c) else NA)
            c0 = cell[cell["metric"] == metrics[0]]
            line[(ds, count_col)] = (f"{int(c0['n'].iloc[0])} ({int(c0['n_empty_pred'].iloc[0])})"
                                     if len(c0) else NA)
        lines.append(line)
    out = pd.DataFrame(lines, index=pd.MultiIndex.from_tuples(index, names=["group", "method"]))
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["dataset", ""])
    return out


def method_means(case_df: pd.DataFrame, metric: str = "dice", scale_pct: bool = True,
                 datasets: Sequence[str] | None = None, rows: str = "config") -> pd.DataFrame:
    """Mean of ``metric`` per table row and dataset (wide, one column per dataset plus ``average``);
    rows in the paper's order. ``average`` is NaN for a row that lacks a dataset."""
    long = comparison_long(case_df, (metric,), scale_pct, datasets, rows)
    wide = long.pivot(index="row", columns="dataset", values="mean")
    order = list(dict.fromkeys(long["row"]))
    cols = [d for d in ordered_datasets(c for c in wide.columns if c != AVERAGE)] + [AVERAGE]
    return wide.reindex(index=order, columns=cols)


def seed_spread(case_df: pd.DataFrame, metric: str = "dice", scale_pct: bool = True,
                datasets: Sequence[str] | None = None, rows: str = "config") -> pd.DataFrame:
    """How much each row moves across seeds: index = table rows (paper order), columns = the mean
    ``metric`` of each seed averaged over the datasets (``seed <s>``), their mean, and the sample std
    over seeds (ddof=1) per dataset (``sd <dataset>``) and of the average (``sd average``). Rows that lack
    a dataset have no average."""
    long = comparison_long(case_df, (metric,), scale_pct, datasets, rows)
    if long.empty:
        return pd.DataFrame()
    df = with_rows(case_df, rows)
    scale = 100.0 if (scale_pct and metric in PCT_METRICS) else 1.0
    ds_all = ordered_datasets(datasets if datasets is not None else df["dataset"])
    lines = {}
    for row in dict.fromkeys(long["row"]):
        sub = long[long["row"] == row].set_index("dataset")
        line = {}
        if AVERAGE in sub.index and "seed" in df:
            per_seed = df[df["row"] == row].groupby("seed", sort=True)
            for seed, g in per_seed:
                avg = _per_seed_average(g, metric, scale, ds_all)
                line[f"seed {seed}"] = avg[0] if avg else math.nan
        line["mean"] = sub["mean"].get(AVERAGE, math.nan)
        for ds in [*ds_all, AVERAGE]:
            line[f"sd {ds}"] = sub["seed_sd"].get(ds, math.nan)
        lines[row] = line
    return pd.DataFrame.from_dict(lines, orient="index")


def caption_table(df: pd.DataFrame, caption: str, precision: int = 2, hide_index: bool = False):
    """A pandas Styler of ``df`` with ``caption`` (floats to ``precision`` digits) for display."""
    st = df.style.set_caption(caption).format(precision=precision, na_rep=NA)
    return st.hide(axis="index") if hide_index else st


# ------------------------------------------------------------------------------------- runs: cost, selection
def run_times_table(times: pd.DataFrame) -> pd.DataFrame:
    """Training cost per run with its table line, from :func:`versemi.runs.run_times` of run folders or
    :meth:`versemi.studies.StudyResults.times` of a study.

    Columns: ``method`` (the run key), ``seed`` (when given), ``group`` (:func:`table_group`), ``row``,
    ``dataset`` (the one dataset of a task-specific run, else 'all'), ``train_seconds``, ``steps``,
    ``median_step_s``, ``run`` (the run folder's name)."""
    cols = ["method", *(["seed"] if "seed" in times else []), "group", "row", "dataset", "train_seconds", "steps",
            "median_step_s", "run"]
    if times.empty:
        return pd.DataFrame(columns=cols)
    t = times.copy()
    t["group"] = [table_group(bool(ts), bool(fs), str(m)) for ts, fs, m in
                  zip(t["task_specific"], t["fully_supervised"], t["method_id"])]
    t["dataset"] = [d if ts else "all" for d, ts in zip(t["trained_on"], t["task_specific"])]
    return t[cols]


def total_train_minutes(times: pd.DataFrame) -> float:
    """Training wall time in minutes of the distinct runs of :func:`run_times_table` (a run shared by
    several groups, e.g. the upper bound of two label ratios, counts once)."""
    return float(times.drop_duplicates("run")["train_seconds"].sum()) / 60


SELECTION_RULES = {
    "val": "the checkpoint with the best mean validation Dice, the validation split being carved from the "
           "training cases (unlabeled-pool cases whose labels are used only for model selection), never the "
           "test set; a run without any validation case keeps its last checkpoint",
    "last": "the last checkpoint (no model selection)",
    "test": "the checkpoint with the best test Dice, as the authors' released code does (optimistic: the "
            "test set is used for model selection)",
}


def describe_selection(sel: pd.DataFrame) -> str:
    """One sentence on the selection rule(s) of a selection table (:func:`versemi.runs.selection_table`
    of run folders or :meth:`versemi.studies.StudyResults.selection`), for the notebook's prose."""
    if sel.empty:
        return "no run"
    parts = []
    for rule in dict.fromkeys(sel["selection"]):
        sub = sel[sel["selection"] == rule]
        n_last = int((sub["checkpoint"] == "last.pt").sum()) if rule != "last" else 0
        extra = f" ({n_last} of {len(sub)} runs had no validation case and kept their last checkpoint)" \
            if n_last else ""
        parts.append(f"selection='{rule}': {SELECTION_RULES.get(rule, rule)}{extra}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------ data statement
def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def data_statement(profile: str) -> str:
    """A Markdown paragraph saying which data and budget produced the page, and whether its numbers
    can be compared with the reported ones. The network size and budget are read from the profile's
    configuration (:func:`versemi.config.make_config`), not typed."""
    c = make_config("versemi", profile)
    paper = make_config("versemi", "paper")
    shape = "x".join(map(str, c.patch))
    if is_phantom(profile):
        return (f"**{_cap(data_note(profile))}.** Every number on this page comes from *phantoms*: "
                f"procedurally generated volumes that imitate the four datasets, with a reduced network "
                f"(width f = {c.n_filters} instead of {paper.n_filters}, patch {shape} instead of "
                f"{'x'.join(map(str, paper.patch))}) and a budget of {c.steps} optimisation steps per run instead "
                f"of {paper.steps:,} for VerSemi in the paper profile. The numbers the paper and the baselines "
                f"report were obtained on the real datasets with the full network and budget. **The two are not "
                f"comparable**: the {profile} numbers show that the whole pipeline runs and how the methods rank on "
                f"phantoms, not how they perform on real scans.")
    if profile == "paper":
        return (f"**{_cap(data_note(profile))}.** The runs use the authors' settings (width f = "
                f"{c.n_filters}, patch {shape}, {c.steps:,} steps for VerSemi) on the real datasets prepared "
                f"with `versemi prepare`. Differences from the reported numbers remain possible: the model is "
                f"selected on a validation split carved from the training cases (the authors select on the test "
                f"set), and the baselines' reported numbers come from other papers with their own protocols.")
    return (f"**{_cap(data_note(profile))}.** Width f = {c.n_filters}, patch {shape}, {c.steps:,} steps "
            f"per run: a reduced budget on real data, not the paper's settings, so the numbers are not the "
            f"paper's and are not comparable with the reported ones.")


# ------------------------------------------------------------------------------------------- head variants
HEADS = ("dynamic", "multi", "none")


def head_parameter_counts(n_filters: int = 16, num_tasks: int = 4) -> pd.DataFrame:
    """Parameters of VerSemiNet per head variant: the whole network and the head-only part.

    The head-only part is what differs between variants: the global branch (BatchNorm) + controller of
    the dynamic head, or the static 180-number heads (``multi``: one per prompt, ``none``: one). The
    shared pre-classifier (``precls_conv``) and the backbone are counted in the total only. Columns:
    ``head, params_total, params_head, total_vs_dynamic_%, head_vs_dynamic_%`` (% relative to the
    dynamic head).
    """
    lines = []
    for head in HEADS:
        net = VerSemiNet(n_filters=n_filters, num_tasks=num_tasks, head=head)
        head_only = sum(p.numel() for n, p in net.named_parameters()
                        if n.startswith(("GAP.", "controller.", "static_heads")))
        lines.append({"head": head, "params_total": count_parameters(net), "params_head": int(head_only)})
    df = pd.DataFrame(lines)
    dyn = df.set_index("head").loc["dynamic"]
    df["total_vs_dynamic_%"] = 100.0 * (df["params_total"] / dyn["params_total"] - 1.0)
    df["head_vs_dynamic_%"] = 100.0 * (df["params_head"] / dyn["params_head"] - 1.0)
    return df


def head_costs_table(csv: str | Path, profile: str) -> pd.DataFrame:
    """The measured head-variant costs of ``profile``'s network from the committed benchmark ``csv``
    (``results/bench/head_costs.csv``, written by ``bench/head_costs.py``): its lines for ``profile``
    plus ``machine``, a text naming the machine they were measured on.

    A profile the file has no line for (e.g. the GPU profile, measured on a GPU only) gets the parameter
    counts of its network (:func:`head_parameter_counts`) with NaN times, ``reps`` 0 and ``device`` 'not
    measured'. A missing file is a :class:`VersemiError`."""
    path = Path(csv)
    if not path.is_file():
        raise VersemiError(f"{path}: no head-cost measurements; run `python -m bench.head_costs --out "
                           f"{path.parent}`")
    df = pd.read_csv(path)
    require(df, ["profile", "head", "forward_ms", "train_step_ms", "device", "patch", "batch", "reps"])
    sub = df[df["profile"] == profile].reset_index(drop=True)
    if sub.empty:
        cfg = make_config("versemi", profile)
        sub = head_parameter_counts(cfg.n_filters).assign(
            profile=profile, n_filters=cfg.n_filters, device="not measured", patch="x".join(map(str, cfg.patch)),
            batch=cfg.batch_size, reps=0)
        sub = sub.reindex(columns=[*df.columns, *(c for c in sub.columns if c not in df.columns)])
        sub["machine"] = (f"not measured: {path} has no line for the {profile} profile "
                          f"(`python -m bench.head_costs --profiles {profile}`)")
        return sub
    sub["machine"] = [f"{r.get('platform')}, {r.get('cpus')} CPUs, torch {r.get('torch')}, "
                      f"{r.get('cuda') if isinstance(r.get('cuda'), str) else 'no GPU'}" for _, r in sub.iterrows()]
    return sub


# ------------------------------------------------------------------------------------- released settings
def released_settings_table() -> pd.DataFrame:
    """One line per method with released training settings: the method, the settings the ``paper`` profile
    takes from its released code (each method's ``paper_settings``, the LA-only patch, the options whose
    defaults are the released values) and the released files and lines they come from."""
    from versemi.methods import get_method_class, method_names

    rows = []
    for name in method_names():
        cls = get_method_class(name)
        if not cls.paper_settings:
            continue
        parts = [f"{k}={_fmt_setting(v)}" for k, v in cls.paper_settings.items()]
        if cls.paper_la_patch:
            parts.append(f"LA-only patch={_fmt_setting(cls.paper_la_patch)}")
        rows.append({"method": cls.display_name, "registry name": name, "paper profile": ", ".join(parts),
                     "source": cls.paper_source})
    return pd.DataFrame(rows).sort_values("method", key=lambda s: s.str.lower(), ignore_index=True)


def _fmt_setting(v) -> str:
    if isinstance(v, (tuple, list)):
        return "x".join(str(x) for x in v)
    return f"{v:g}" if isinstance(v, float) else str(v)


def released_settings_markdown() -> str:
    """:func:`released_settings_table` as the Markdown table of the reproducibility chapter (a test keeps the
    chapter equal to it)."""
    return markdown_table(released_settings_table(), code_columns=("registry name",))


def markdown_table(df: pd.DataFrame, code_columns: Sequence[str] = ()) -> str:
    """``df`` as a pipe table of MyST Markdown (the generated sections of the book's Markdown chapters): one
    line per row, values as ``str``, those of ``code_columns`` as inline code."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "| " + " | ".join("---" for _ in df.columns) + " |"]
    lines += ["| " + " | ".join(f"`{v}`" if c in code_columns else str(v) for c, v in r.items()) + " |"
              for r in df.to_dict("records")]
    return "\n".join(lines)
