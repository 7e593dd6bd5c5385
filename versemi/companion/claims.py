"""The paper's claims, one by one, each with what this companion measured and a verdict computed by one
stated rule.

A :class:`Claim` names what is claimed (the number comes from ``versemi/reference/``: the claimed value,
its source and confidence are read there, never typed here), the evidence that tests it (the SOTA or
ablation study of a profile, the real-LA runs, the head costs, the prompt-fidelity table), the two rows
compared (the competitor is the one the claim names, fixed before any test case is looked at) and the kind
of claim. :func:`evaluate_claims` measures each and gives its verdict:

* **directional** ("A beats B by x"): the effect ``a - b`` (average over datasets of the paired
  differences, :func:`versemi.companion.uncertainty.paired_effect`) with its two-level bootstrap 95%
  interval; two one-sided sign-flip tests, one on the claimed side and one on the other; the p-values of
  every claim tested on one evidence source are Holm-adjusted together
  (:func:`~versemi.companion.uncertainty.holm`). Verdict: *supported* when the claimed-side adjusted p is
  below ``alpha``, *contradicted* when the other side's is, *inconclusive* otherwise (the two cannot both
  hold: the two one-sided p-values of one statistic sum to at least 1). A separate flag says whether the
  claimed magnitude lies inside the interval.
* **equivalence** ("A within m of B"): two one-sided tests of the margin
  (:func:`~versemi.companion.uncertainty.equivalence_test`): *supported* when equivalence is shown
  (adjusted), *contradicted* when the effect lies significantly outside the margin, *inconclusive* otherwise.
* **absolute** ("A scores x on dataset D"): testable only on the real dataset (a phantom's Dice says
  nothing about a real scan's): *supported* when x lies inside the row's interval, *contradicted* otherwise.
* **cost** ("30% fewer parameters", "25% faster"): the measured ratio against the claimed one; *supported*
  when the measurement lies on the claimed side of 1 (for a timing: every repetition does), *contradicted*
  when it lies on the other side (every repetition), *inconclusive* when repetitions disagree.
* *not testable here*, with the reason, when the evidence does not exist in this build.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from versemi.companion.reference import ablation_claims, leading_number, reported_claims, reported_value
from versemi.companion.uncertainty import equivalence_test, holm, paired_effect, row_interval
from versemi.utils import VersemiError

VERDICTS = ("supported", "contradicted", "inconclusive", "not testable here")

KINDS = ("directional", "equivalence", "absolute", "cost", "untestable")
ALPHA = 0.05


@dataclass(frozen=True)
class Claim:
    """One claim of the paper (module docstring). ``ref``: where its number is in ``versemi/reference``:
    ``("relative", dataset key, metric, competitor)`` (``relative_claims.csv``), ``("ablation", component
    prefix)`` (``ablation.csv``) or ``("value", method, dataset)`` (``main_comparison.csv``); ``evidence``:
    the key of the evidence table it is tested on; ``rows``: ``"config"`` (paper-table rows) or ``"key"``
    (run keys, ablation variants)."""

    key: str
    statement: str
    kind: str
    evidence: str | None = None
    a: str | None = None
    b: str | None = None
    metric: str = "dice"
    datasets: tuple[str, ...] | None = None
    direction: str = "greater"            # the claimed sign of a - b
    rows: str = "config"
    ref: tuple = ()
    reason: str = ""                      # why it is not testable (kind untestable)
    scale: float = 1.0                    # claimed value unit -> measured unit (e.g. % -> fraction)


def _rel(dataset: str, metric: str, competitor: str) -> tuple:
    return ("relative", dataset, metric, competitor)


# The competitor of every relative claim is the one the claim names (the paper's summary names BCP as the
# second best on average).
CLAIMS: tuple[Claim, ...] = (
    Claim("avg_dice", "VerSemi's average Dice over the four datasets exceeds the second best (BCP) by {value} points",
          "directional", "sota", "VerSemi", "BCP", "dice", ref=_rel("average", "Dice(%)", "second")),
    Claim("avg_hd95", "VerSemi's average 95HD differs from the second best's (BCP) by {value} voxels",
          "directional", "sota", "VerSemi", "BCP", "hd95", direction="less", ref=_rel("average", "95HD(voxel)", "second")),
    Claim("pancreas_value", "VerSemi reaches {value} Dice on NIH Pancreas with 10% labels", "absolute", "sota",
          "VerSemi", None, "dice", ("pancreas",), ref=("value", "VerSemi", "pancreas")),
    Claim("pancreas_dice", "On Pancreas VerSemi's Dice exceeds MagicNet's by {value} points", "directional", "sota",
          "VerSemi", "MagicNet", "dice", ("pancreas",), ref=_rel("pancreas", "Dice(%)", "MagicNet")),
    Claim("pancreas_hd95", "On Pancreas VerSemi's 95HD differs from MagicNet's by {value} voxels", "directional", "sota",
          "VerSemi", "MagicNet", "hd95", ("pancreas",), direction="less", ref=_rel("pancreas", "95HD(voxel)", "MagicNet")),
    Claim("la_bcp", "On LA VerSemi is within {margin} Dice points of BCP", "equivalence", "sota", "VerSemi", "BCP",
          "dice", ("la",), ref=_rel("la", "Dice(%)", "BCP")),
    Claim("la_bcp_real", "On LA VerSemi is within {margin} Dice points of BCP (real LA, 8 labeled)", "equivalence",
          "la-real", "VerSemi 10%", "BCP 10%", "dice", ("la",), rows="key", ref=_rel("la", "Dice(%)", "BCP")),
    Claim("spleen_dice", "On Spleen VerSemi's Dice exceeds CauSSL's by {value} points", "directional", "sota",
          "VerSemi", "CauSSL", "dice", ("spleen",), ref=_rel("spleen", "Dice(%)", "CauSSL")),
    Claim("spleen_hd95", "On Spleen VerSemi's 95HD differs from CauSSL's by {value} voxels", "directional", "sota",
          "VerSemi", "CauSSL", "hd95", ("spleen",), direction="less", ref=_rel("spleen", "95HD(voxel)", "CauSSL")),
    Claim("lung_jaccard", "On Lung tumour VerSemi's Jaccard exceeds MagicNet's by {value} points", "directional",
          "sota", "VerSemi", "MagicNet", "jaccard", ("lung",), ref=_rel("lung", "Jaccard(%)", "MagicNet")),
    Claim("laux", "L_aux changes the average Dice by {value} points", "directional", "ablations", "VerSemi (full)",
          "w/o L_aux", "dice", rows="key", ref=("ablation", "Auxiliary constraint")),
    Claim("task5", "The synthetic Task#5 changes the Dice by {value} points", "directional", "ablations", "VerSemi (full)",
          "w/o synthetic Task#5", "dice", rows="key", ref=("ablation", "Synthetic Task#5")),
    Claim("head_params", "The dynamic head changes the parameter count of a multi-head design by {value}%", "cost",
          "head-params", "dynamic", "multi", "params", direction="less", ref=("ablation", "Dynamic task-prompted head")),
    Claim("head_speed", "The dynamic head changes the inference time of a multi-head design by {value}%", "cost",
          "head-speed", "dynamic", "multi", "forward_ms", direction="less", ref=("ablation", "Dynamic task-prompted head")),
    Claim("prompt_weakening", "Without L_aux the prompts weaken: other tasks' prompts segment structures that are "
          "absent", "directional", "fidelity", "VerSemi (full)", "w/o L_aux", "offtarget_fp_ml", direction="less",
          rows="key"),
    Claim("generalisation", "On an unseen site (BTCV spleen) VerSemi's Dice drops less than the other methods' "
          "(which drop by about {size} points, VerSemi not significantly)", "directional", "generalisation",
          "VerSemi", "the others' mean", "dice", ref=("generalisation",)),
    Claim("tsne", "VerSemi's features separate the tasks (t-SNE)", "untestable",
          reason="a t-SNE picture has no sampling distribution; the t-SNE chapter reports the silhouette of the "
          "task labels per run, which no stated test turns into a verdict"),
)


def claimed_value(claim: Claim) -> tuple[float, str, str]:
    """(claimed number, source, confidence) of ``claim`` from ``versemi/reference`` (NaN, '', '' without one).
    Relative claims give ``a - b``; equivalence claims their margin; cost claims a relative change in %
    (e.g. -30)."""
    if not claim.ref:
        return math.nan, "", ""
    kind = claim.ref[0]
    if kind == "relative":
        _, ds, metric, competitor = claim.ref
        rc = reported_claims()
        sel = rc[(rc["dataset_key"] == ds) & (rc["metric"] == metric) & rc["compared_to"].str.contains(competitor)]
        if sel.empty:
            raise VersemiError(f"claim {claim.key}: no line ({ds}, {metric}, {competitor}) in relative_claims.csv")
        line = sel.iloc[0]
        text = str(line["reported_delta"])
        if claim.kind == "equivalence":   # '|gap| < 0.5 (...)': the margin
            return float(text.split("<", 1)[1].split()[0]), str(line["source"]), str(line["confidence"])
        return leading_number(text), str(line["source"]), str(line["confidence"])
    if kind == "ablation":
        ab = ablation_claims()
        sel = ab[ab["component"].str.startswith(claim.ref[1])]
        if sel.empty:
            raise VersemiError(f"claim {claim.key}: no component {claim.ref[1]!r} in ablation.csv")
        line = sel.iloc[0]
        numbers = [float(x) for x in pd.Series([line["reported_change"]]).str.findall(r"[+-]?\d+(?:\.\d+)?").iloc[0]]
        value = numbers[0]
        if claim.key == "head_speed":   # "+x% speed": throughput x (1 + x/100), so time x 1 / (1 + x/100)
            value = -100.0 * (1 - 1 / (1 + abs(numbers[1]) / 100)) if len(numbers) > 1 else math.nan
        return value, str(line["source"]), str(line["confidence"])
    if kind == "generalisation":   # 'NA (blog: average Dice drop ~2%)' of the other methods, VerSemi none
        from versemi.companion.reference import reference_csv

        gb = reference_csv("generalization_btcv.csv")
        line = gb[gb["method"].str.startswith("other")].iloc[0]
        found = pd.Series([str(line["dice"])]).str.extract(r"~\s*([0-9.]+)")[0].iloc[0]
        return float(found), str(line["source"]), str(line["confidence"])
    if kind == "value":
        from versemi.companion.reference import reference_csv

        mc = reference_csv("main_comparison.csv")
        src = mc[mc["method"] == claim.ref[1]]
        return (reported_value(claim.ref[1], claim.ref[2], 10), str(src["source"].iloc[0]) if len(src) else "",
                str(src["confidence"].iloc[0]) if len(src) else "")
    raise VersemiError(f"claim {claim.key}: unknown reference kind {kind!r}")


@dataclass
class Measured:
    """What was measured for one claim (NaN where it does not apply)."""

    effect: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    p_claimed: float = math.nan      # one-sided p on the claimed side (directional) / equivalence p
    p_other: float = math.nan        # one-sided p on the other side / outside-the-margin p
    n_seeds: int = 0
    n: int = 0
    note: str = ""
    reps: list = field(default_factory=list)   # cost claims: the ratio of each repetition


def _has_rows(df: pd.DataFrame, claim: Claim) -> str:
    from versemi.companion.tables import with_rows

    rows = set(with_rows(df, claim.rows)["row"])
    missing = [r for r in (claim.a, claim.b) if r and r not in rows]
    return f"no runs of {', '.join(missing)} in this evidence" if missing else ""


def measure(claim: Claim, evidence: dict, n_boot: int = 2000, n_perm: int = 2000,
            phantom: Sequence[str] = ()) -> Measured:
    """Measure one claim on ``evidence`` (key -> table; module docstring). A missing table or row gives a
    :class:`Measured` whose ``note`` says what is missing; ``phantom``: the evidence keys that come from
    phantom data (an absolute number of a real dataset cannot be tested on them)."""
    df = evidence.get(claim.evidence) if claim.evidence else None
    if df is None or (isinstance(df, pd.DataFrame) and df.empty):
        return Measured(note=f"no {claim.evidence} evidence in this build")
    if claim.kind == "absolute" and claim.evidence in phantom:
        return Measured(note="an absolute score of the real dataset; this build's evidence is phantom data, "
                             "whose scores say nothing about real scans")
    if claim.kind == "cost":
        return _measure_cost(claim, df)
    if claim.evidence == "generalisation":
        from versemi.generalisation import drop_gap

        g = drop_gap(df, claim.a, claim.metric, n_boot=n_boot)
        if math.isnan(g["effect"]):
            return Measured(note=f"no {claim.a} or no other spleen model scored on the unseen site")
        up = claim.direction == "greater"
        return Measured(g["effect"], g["lo"], g["hi"], g["p_greater"] if up else g["p_less"],
                        g["p_less"] if up else g["p_greater"], int(df["seed"].nunique()) if "seed" in df else 1,
                        g["n_rows"], note="bootstrap p-values (the two sets hold different cases)")
    missing = _has_rows(df, claim)
    if missing:
        return Measured(note=missing)
    if claim.kind == "absolute":
        r = row_interval(df, claim.a, claim.metric, claim.datasets, n_boot, rows=claim.rows)
        return Measured(r["mean"], r["lo"], r["hi"], n_seeds=r["n_seeds"], n=r["n_cases"])
    if claim.kind == "equivalence":
        r = equivalence_test(df, claim.a, claim.b, claimed_value(claim)[0], claim.metric, claim.datasets, n_boot,
                             n_perm, rows=claim.rows)
        return Measured(r["effect"], r["lo"], r["hi"], r["p_equivalent"], r["p_outside"], r["n_seeds"], r["n_pairs"])
    other = "less" if claim.direction == "greater" else "greater"
    r = paired_effect(df, claim.a, claim.b, claim.metric, claim.datasets, claim.direction, n_boot, n_perm,
                      rows=claim.rows)
    p_other = paired_effect(df, claim.a, claim.b, claim.metric, claim.datasets, other, 1, n_perm,
                            rows=claim.rows)["p"]
    return Measured(r["effect"], r["lo"], r["hi"], r["p"], p_other, r["n_seeds"], r["n_pairs"])


def _measure_cost(claim: Claim, df: pd.DataFrame) -> Measured:
    """``df``: one line per head variant (``head``) with the ``metric`` column; several lines per head are
    repetitions (paired by order). The effect is the relative change of ``a`` against ``b`` in %."""
    a = df.loc[df["head"] == claim.a, claim.metric].to_numpy(float)
    b = df.loc[df["head"] == claim.b, claim.metric].to_numpy(float)
    if not len(a) or not len(b):
        return Measured(note=f"no {claim.a}/{claim.b} lines in the {claim.evidence} table")
    k = min(len(a), len(b))
    reps = (100.0 * (a[:k] / b[:k] - 1)).tolist()
    return Measured(float(np.median(reps)), float(min(reps)), float(max(reps)), n=k, reps=reps)


def verdict(claim: Claim, m: Measured, claimed: float, p_claimed_adj: float, p_other_adj: float,
            alpha: float = ALPHA) -> tuple[str, bool | None]:
    """(verdict, claimed magnitude inside the interval) by the rule of the claim's kind (module docstring)."""
    if claim.kind == "untestable" or (m.note and math.isnan(m.effect)):
        return "not testable here", None
    inside = None if math.isnan(claimed) or math.isnan(m.lo) else bool(m.lo <= claimed <= m.hi)
    if claim.kind == "absolute":
        return ("supported" if inside else "contradicted"), inside
    if claim.kind == "cost":
        side = (lambda x: x < 0) if claim.direction == "less" else (lambda x: x > 0)
        if all(side(r) for r in m.reps):
            return "supported", inside
        if not any(side(r) for r in m.reps):
            return "contradicted", inside
        return "inconclusive", inside
    if claim.kind == "equivalence":
        inside = None
    if p_claimed_adj < alpha:
        return "supported", inside
    if p_other_adj < alpha:
        return "contradicted", inside
    return "inconclusive", inside


def evaluate_claims(evidence: dict, claims: Sequence[Claim] = CLAIMS, alpha: float = ALPHA, n_boot: int = 2000,
                    n_perm: int = 2000, phantom: Sequence[str] = ()) -> pd.DataFrame:
    """One line per claim: the statement, its source and confidence, the claimed value, what was measured
    (effect, 95% interval, seeds, pairs), the p-values raw and Holm-adjusted within the claims tested on the
    same evidence, the verdict and whether the claimed magnitude lies inside the interval."""
    rows = []
    for c in claims:
        if c.kind not in KINDS:
            raise VersemiError(f"claim {c.key}: unknown kind {c.kind!r}")
        claimed, source, confidence = claimed_value(c)
        m = Measured(note=c.reason) if c.kind == "untestable" else measure(c, evidence, n_boot, n_perm, phantom)
        text = c.statement.format(value=f"{claimed:+g}" if c.kind != "absolute" else f"{claimed:g}",
                                  margin=f"{claimed:g}", size=f"{abs(claimed):g}")
        rows.append({"claim": c.key, "statement": text, "kind": c.kind, "evidence": c.evidence or "",
                     "compared": f"{c.a} - {c.b}" if c.b else (c.a or ""), "metric": c.metric,
                     "claimed": claimed, "source": source, "confidence": confidence, "measured": m.effect,
                     "ci_low": m.lo, "ci_high": m.hi, "n_seeds": m.n_seeds, "n": m.n, "p_claimed": m.p_claimed,
                     "p_other": m.p_other, "note": m.note, "_m": m, "_c": c})
    df = pd.DataFrame(rows)
    df["p_claimed_holm"], df["p_other_holm"] = np.nan, np.nan
    for idx in df.groupby("evidence").groups.values():
        df.loc[idx, "p_claimed_holm"] = holm(df.loc[idx, "p_claimed"].tolist())
        df.loc[idx, "p_other_holm"] = holm(df.loc[idx, "p_other"].tolist())
    out = [verdict(r["_c"], r["_m"], r["claimed"], r["p_claimed_holm"], r["p_other_holm"], alpha)
           for r in df.to_dict("records")]
    df["verdict"] = [v for v, _ in out]
    df["claimed_in_ci"] = [i for _, i in out]
    return df.drop(columns=["_m", "_c"])


def with_limitation(table: pd.DataFrame, limitation_csv) -> pd.DataFrame:
    """``table`` (of :func:`evaluate_claims`) with one more line: the paper's stated limitation, as the conflict
    chapter measured it (its ``tables/limitation.csv``, :func:`versemi.companion.conflict.limitation_row`), or
    *not testable here* when that chapter has not run."""
    from pathlib import Path

    from versemi.companion.conflict import limitation_row

    path = Path(limitation_csv)
    if path.is_file():
        line = pd.read_csv(path).iloc[0].to_dict()
        line["claimed_in_ci"] = None
    else:
        line = limitation_row(pd.DataFrame(columns=["method", "a", "b"]), pd.DataFrame(), {}, pd.DataFrame())
        line["note"] = f"the conflict chapter has not produced {path} in this build"
    return pd.concat([table, pd.DataFrame([line])[[c for c in table.columns if c in line]]], ignore_index=True)


def verdict_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many claims got each verdict (every verdict listed, zeros included)."""
    counts = table["verdict"].value_counts()
    return {v: int(counts.get(v, 0)) for v in VERDICTS}


def summary_sentence(counts: dict[str, int], n: int, note: str) -> str:
    """The page's opening line, from :func:`verdict_counts`."""
    return (f"Of the {n} claims, {counts['supported']} are supported, {counts['contradicted']} contradicted and "
            f"{counts['inconclusive']} inconclusive on this build's evidence ({note}); "
            f"{counts['not testable here']} cannot be tested here.")


def _fmt(x, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The claims table as the page shows it: one line per claim, numbers formatted, n/a where none."""
    def p(x):
        return "n/a" if isinstance(x, float) and math.isnan(x) else ("< 0.001" if x < 0.001 else f"{x:.3f}")

    return pd.DataFrame({
        "claim": table["statement"], "confidence of the source": table["confidence"],
        "evidence": table["evidence"], "compared": table["compared"], "metric": table["metric"],
        "claimed": table["claimed"].map(_fmt),
        "measured": table["measured"].map(_fmt),
        "95% CI": [f"[{_fmt(a)}, {_fmt(b)}]" if not math.isnan(a) else "n/a"
                   for a, b in zip(table["ci_low"], table["ci_high"])],
        "seeds": table["n_seeds"], "n": table["n"], "p": table["p_claimed"].map(p),
        "p (Holm)": table["p_claimed_holm"].map(p), "verdict": table["verdict"],
        "claimed in CI": table["claimed_in_ci"].map(lambda v: "n/a" if v is None or v != v else ("yes" if v else "no")),
    })


def untested_list(table: pd.DataFrame) -> str:
    """A Markdown list of the claims not testable here, each with its reason."""
    sel = table[table["verdict"] == "not testable here"]
    if sel.empty:
        return "Every claim was tested."
    return "\n".join(f"- *{r['statement']}*: {r['note']}." for r in sel.to_dict("records"))


# ------------------------------------------------------------------------------------------ the evidence
def select_claims(keys: Sequence[str] | None = None) -> tuple[Claim, ...]:
    """The claims with these keys (all of :data:`CLAIMS` when None); an unknown key is an error."""
    if keys is None:
        return CLAIMS
    known = {c.key: c for c in CLAIMS}
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise VersemiError(f"unknown claim(s) {unknown}; known: {list(known)}")
    return tuple(known[k] for k in keys)


def claim_rows(claims: Sequence[Claim] = CLAIMS, evidence: str = "sota") -> list[str]:
    """The table rows (or run keys) the claims tested on ``evidence`` compare: what a page must train or read."""
    return list(dict.fromkeys(r for c in claims if c.evidence == evidence for r in (c.a, c.b) if r))


def fidelity_cases(fid: pd.DataFrame) -> pd.DataFrame:
    """Per (model, scan) the mean false-positive volume (ml) of the other tasks' prompts whose structure is
    absent from the scan (the prompt-weakening measure of :func:`versemi.companion.fidelity.fidelity_summary`),
    as a case table: ``method, dataset, case, offtarget_fp_ml``."""
    from versemi.companion.fidelity import SYNTHETIC_TASK

    other = (fid["prompt"] != SYNTHETIC_TASK) & ~fid["own_prompt"].astype(bool)
    absent = other & fid["target_present"].eq(False)
    sub = fid[absent].assign(fp=pd.to_numeric(fid.loc[absent, "fp_ml"], errors="coerce"))
    out = sub.groupby(["model", "dataset", "case"], sort=False)["fp"].mean().reset_index()
    return out.rename(columns={"model": "method", "fp": "offtarget_fp_ml"})


def la_real_cases(la_dir) -> pd.DataFrame | None:
    """The committed real-LA per-case results (``results/la-real/cases.csv``) as a case table keyed by run
    label (``dataset`` = la, ``seed`` from the export's provenance); None when not exported."""
    import json
    from pathlib import Path

    path = Path(la_dir) / "cases.csv"
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    prov = Path(la_dir) / "provenance.json"
    if not prov.is_file():
        raise VersemiError(f"{prov}: missing beside {path}; export the real-LA results again")
    return df.assign(dataset="la", seed=int(json.loads(prov.read_text())["seed"]))


def head_evidence(bench_dir, n_filters: int = 16) -> dict[str, pd.DataFrame]:
    """The cost claims' evidence: ``head-params`` (parameter counts of the dynamic and multi heads' networks
    at width ``n_filters``, :func:`versemi.companion.tables.head_parameter_counts`) and ``head-speed`` (the
    forward times of ``results/bench/head_costs.csv`` for the widest profile measured; absent when the
    benchmark has not been run)."""
    from pathlib import Path

    from versemi.companion.tables import head_parameter_counts

    counts = head_parameter_counts(n_filters).rename(columns={"params_total": "params"})
    out = {"head-params": counts[["head", "params"]]}
    path = Path(bench_dir) / "head_costs.csv"
    if path.is_file():
        hc = pd.read_csv(path)
        if len(hc):
            widest = hc.loc[hc["n_filters"].idxmax(), "profile"]
            out["head-speed"] = hc[hc["profile"] == widest][["head", "forward_ms"]]
    return out



def generalisation_evidence(profile: str, claims: Sequence[Claim], source: str = "auto", **kwargs):
    """The unseen-site results the chosen claims need (None when none needs them, or when there are none:
    :func:`versemi.companion.generalisation.unseen_site_results`)."""
    from versemi.companion.generalisation import unseen_site_results

    if not any(c.evidence == "generalisation" for c in claims):
        return None
    return unseen_site_results(profile, source, **kwargs)
