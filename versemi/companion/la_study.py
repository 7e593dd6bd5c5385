"""The real Left Atrium chapter's evidence from the ``la-real`` study: committed per-run exports over seeds,
intervals over cases and seeds, Holm-corrected comparisons, and the choice between these and the earlier
single-seed export.

The study (:func:`versemi.experiments.la_real_study_configs`, ``versemi study run la-real --profile la-real``)
commits one folder per run and seed under ``results/studies/la-real/la-real/`` (``versemi/studies.py``). Until
one of its runs is committed, the chapter keeps rendering the earlier export ``results/la-real/``
(40 training cases, one seed; :mod:`versemi.companion.la_real`) and says so (:func:`source_note`).

* :func:`committed_la_study` reads the committed runs (:func:`versemi.studies.study_results`, committed only:
  the page builds without the data);
* :func:`intervals` / :func:`interval_table`: each run's mean over seeds of the mean over the 20 real test
  cases, with the two-level bootstrap 95% interval (seeds, then cases;
  :func:`versemi.companion.uncertainty.row_interval`). The joint run is scored on the real LA cases only;
* :func:`comparisons`: the paired effects of a fixed family of questions (:func:`comparison_family`) with
  sign-flip p-values, Holm-corrected together (:func:`versemi.companion.uncertainty.holm`);
* :func:`as_la_results`: the study as the :class:`~versemi.companion.la_real.LaResults` the settings,
  summary, published-comparison and glue functions of :mod:`versemi.companion.la_real` read.

The export scores the runs on the x0.5 grid they ran on (1.25 mm voxels). :func:`score_released`
(``versemi study score-released la-real --la-data PATH``) scores each committed run once more on the released
grid (0.625 mm, :func:`versemi.companion.la_real.evaluate_fullres`) and commits ``cases_fullres.csv`` and its
provenance beside the run's export, without training; :func:`released_cases` reads them back. The intervals and
paired comparisons stay on the x0.5 grid (every run has those scores); the summary the prose quotes, the upper
bound's check and the comparison with the published numbers (which are on the released grid) use the released
grid once every committed run is scored there (:func:`as_la_results`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from versemi.companion.la_real import (
    GRID_RELEASED,
    GRID_TRAINED,
    LaResults,
    evaluate_fullres,
    provenance_commit,
    summarize_cases,
)
from versemi.companion.tables import METHOD_ORDER, PCT_METRICS
from versemi.companion.uncertainty import N_BOOT, N_PERM, holm, paired_effect, row_interval
from versemi.config import FULLY_SUPERVISED, RunConfig
from versemi.data.prepare import VAL_FRACTION
from versemi.data.registry import authors_split
from versemi.studies import STUDIES_DIR, StudyResults, study_results
from versemi.utils import VersemiError

STUDY = "la-real"
PROFILE = "la-real"
LEGACY_DIR = "results/la-real"
ALPHA = 0.05
METRIC_TITLES = {"dice": "Dice (%)", "jaccard": "Jaccard (%)", "hd95": "95HD (vox)", "asd": "ASD (vox)"}
HYBRID_TEXT = "real LA + phantom CT (hybrid)"
RELEASED_FILE = "cases_fullres.csv"        # a run's real LA test cases scored on the released grid
RELEASED_RECORD = "cases_fullres.json"     # who scored them: the provenance record and the run


# ------------------------------------------------------------------------------------------- reading
def committed_la_study(out=STUDIES_DIR, profile: str = PROFILE) -> StudyResults | None:
    """The committed runs of the ``la-real`` study under ``out`` (None while none is exported):
    :func:`versemi.studies.study_results` with ``source="committed"``, so no data and no training are needed."""
    if not any((Path(out) / profile / STUDY).glob("*/seed-*/run.json")):
        return None
    return study_results(STUDY, profile, source="committed", out=out)


def la_cases(results: StudyResults) -> pd.DataFrame:
    """The study's per-case lines on the real LA test cases (the joint run's phantom CT test cases left out)."""
    return results.cases[results.cases["dataset"] == "la"].reset_index(drop=True)


def run_table(results: StudyResults) -> pd.DataFrame:
    """One line per committed run label, in the chapter's order (ratio, then the paper's row order, the
    hybrid after its LA-only twin): ``run, method, ratio, trained on, seeds``; indexed by ``run``."""
    lines = {}
    for r in results.records:
        cfg = RunConfig.from_dict(r["config"])
        line = lines.setdefault(r["label"], {
            "run": r["label"], "method": cfg.row_name(), "ratio": cfg.ratio,
            "trained on": "real LA" if cfg.task_specific else HYBRID_TEXT, "seeds": []})
        line["seeds"].append(int(r["seed"]))

    def order(line):
        m = METHOD_ORDER.index(line["method"]) if line["method"] in METHOD_ORDER else len(METHOD_ORDER)
        return (line["ratio"] == FULLY_SUPERVISED, line["ratio"], m, line["trained on"] != "real LA")

    rows = sorted(lines.values(), key=order)
    for line in rows:
        line["seeds"] = ", ".join(str(s) for s in sorted(line["seeds"]))
    return pd.DataFrame(rows, columns=["run", "method", "ratio", "trained on", "seeds"]).set_index("run")


# ----------------------------------------------------------------------------------------- intervals
def intervals(results: StudyResults, metric: str = "dice", n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per run (:func:`run_table` order): ``mean, lo, hi`` (Dice/Jaccard in %, distances in voxels; the
    two-level bootstrap 95% interval over seeds and real LA test cases), ``n_seeds``, ``n_cases`` and
    ``seed_resamples`` (distinct seed-level resamples: 1 for a single-seed run, whose interval reflects the
    cases only)."""
    cases = la_cases(results)
    lines = []
    for label in run_table(results).index:
        ci = row_interval(cases, label, metric, ("la",), n_boot=n_boot, seed=seed, rows="key")
        lines.append({"run": label, **ci})
    return pd.DataFrame(lines).set_index("run")


def _fmt(ci, digits: int = 1) -> str:
    return f"{ci['mean']:.{digits}f} [{ci['lo']:.{digits}f}, {ci['hi']:.{digits}f}]"


def interval_table(results: StudyResults, metrics=("dice", "hd95"), n_boot: int = N_BOOT) -> pd.DataFrame:
    """The chapter's results table: :func:`run_table` with 'mean [95% CI]' of each metric, the number of
    test cases x seeds and of empty predictions (a model that found no atrium on a case)."""
    table = run_table(results)
    for m in metrics:
        ci = intervals(results, m, n_boot)
        table[f"{METRIC_TITLES[m]} [95% CI]"] = [_fmt(ci.loc[r], 1 if m in PCT_METRICS else 2) for r in table.index]
    cases = la_cases(results)
    table["cases x seeds"] = cases.groupby("method").size().reindex(table.index).to_numpy()
    table["empty predictions"] = cases.groupby("method")["empty_pred"].sum().reindex(table.index).astype(int).to_numpy()
    return table


# --------------------------------------------------------------------------------------- comparisons
def _best_two(results: StudyResults, ratio: int) -> list[str]:
    """The two runs of ``ratio`` with the highest mean Dice (the first: the best)."""
    runs = run_table(results)
    labels = list(runs.index[runs["ratio"] == ratio])
    if len(labels) < 2:
        return []
    means = la_cases(results).groupby("method")["dice"].mean()
    return sorted(labels, key=lambda k: -means[k])[:2]


def comparison_family(results: StudyResults) -> list[tuple[str, str, str]]:
    """The questions the chapter tests together, ``(a, b, question)`` with both runs committed: at each
    label ratio every run against Sup-only of that ratio, VerSemi against BCP, the best run against the
    runner-up; the joint run against VerSemi on LA alone and the upper bound against VerSemi. A pair is
    asked once (the first question that names it)."""
    runs = run_table(results)
    have = set(runs.index)
    by = {(r["method"], r["ratio"], r["trained on"] == "real LA"): k for k, r in runs.iterrows()}
    out, seen = [], set()

    def ask(a, b, question):
        if a in have and b in have and a != b and frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            out.append((a, b, question))

    for ratio in sorted({int(r) for r in runs["ratio"] if int(r) != FULLY_SUPERVISED}):
        sup = by.get(("Sup-only", ratio, True))
        best = _best_two(results, ratio)
        if best:
            ask(best[0], best[1], f"the best at {ratio}% against the runner-up")
        ask(by.get(("VerSemi", ratio, True)), by.get(("BCP", ratio, True)), f"VerSemi against BCP at {ratio}%")
        for label in runs.index[runs["ratio"] == ratio]:
            ask(label, sup, f"{label} against Sup-only at {ratio}%")
    for label, r in runs[runs["trained on"] == HYBRID_TEXT].iterrows():
        ask(label, by.get(("VerSemi", int(r["ratio"]), True)), "segmenting together: the joint run against "
                                                                 "VerSemi on LA alone")
    upper = by.get(("Fully supervised", FULLY_SUPERVISED, True))
    ask(upper, by.get(("VerSemi", 10, True)), "the upper bound against VerSemi at 10%")
    return out


def comparisons(results: StudyResults, metric: str = "dice", n_boot: int = N_BOOT, n_perm: int = N_PERM,
                alpha: float = ALPHA) -> pd.DataFrame:
    """Every question of :func:`comparison_family`: the paired effect ``a - b`` on the (seed, case) pairs of
    the real LA test cases (points for Dice/Jaccard) with its 95% interval, the two-sided sign-flip p-value
    and the Holm-adjusted one over the whole family; ``significant`` = adjusted p < ``alpha``."""
    cases = la_cases(results)
    lines = []
    for a, b, question in comparison_family(results):
        e = paired_effect(cases, a, b, metric, ("la",), n_boot=n_boot, n_perm=n_perm, rows="key")
        lines.append({"question": question, "a": a, "b": b, "effect": e["effect"], "lo": e["lo"], "hi": e["hi"],
                      "p": e["p"], "n_seeds": e["n_seeds"], "n_pairs": e["n_pairs"]})
    cols = ["question", "a", "b", "effect", "lo", "hi", "p", "p_holm", "significant", "n_seeds", "n_pairs"]
    if not lines:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(lines)
    df["p_holm"] = holm(df["p"].tolist())
    df["significant"] = df["p_holm"] < alpha
    return df[cols]


def verdict_text(results: StudyResults, table: pd.DataFrame | None = None, n_boot: int = N_BOOT) -> str:
    """Who is best at each label ratio, with the interval, and whether its lead over the runner-up survives
    Holm's correction (from :func:`comparisons`, computed when ``table`` is None); one sentence per ratio."""
    table = comparisons(results, n_boot=n_boot) if table is None else table
    ci = intervals(results, "dice", n_boot)
    runs = run_table(results)
    parts = []
    for ratio in sorted({int(r) for r in runs["ratio"] if int(r) != FULLY_SUPERVISED}):
        best = _best_two(results, ratio)
        if not best:
            continue
        line = table[(table["a"] == best[0]) & (table["b"] == best[1])]
        if line.empty:
            continue
        t = line.iloc[0]
        verdict = "significant" if t["significant"] else "not significant"
        parts.append(f"At {ratio}% the highest mean Dice is {best[0]}'s, {_fmt(ci.loc[best[0]])} %; its lead over "
                     f"{best[1]} is {t['effect']:.1f} points [{t['lo']:.1f}, {t['hi']:.1f}], {verdict} after Holm's "
                     f"correction over {len(table)} comparisons (adjusted p = {t['p_holm']:.3g}).")
    return " ".join(parts) if parts else "No label ratio has two committed runs yet."


def study_times(results: StudyResults) -> pd.DataFrame:
    """Training wall time per run: mean, min and max over its seeds (s, rounded), the number of seeds and
    the median step time (s), indexed by run in :func:`run_table` order."""
    t = results.times().groupby("method").agg(mean_s=("train_seconds", "mean"), min_s=("train_seconds", "min"),
                                              max_s=("train_seconds", "max"), seeds=("seed", "nunique"),
                                              step_s=("median_step_s", "median"))
    return t.reindex(run_table(results).index).round({"mean_s": 0, "min_s": 0, "max_s": 0, "step_s": 3})


# ------------------------------------------------------------------------------ the chapter's adapter
def validation_size() -> int:
    """How many of the 80 training cases ``versemi prepare`` holds out for model selection on the full release:
    :data:`~versemi.data.prepare.VAL_FRACTION` of the authors' unlabeled_20 list (at least 1), as
    :func:`~versemi.data.prepare.make_splits` draws it."""
    return max(1, int(round(VAL_FRACTION * len(authors_split("la")["unlabeled_20"]))))


def data_text() -> str:
    """What the study's runs were trained and tested on (the authors' LA lists and the split rule)."""
    return (f"the 100 real LA cases of the UA-MT release: the 80 standard training cases (8 / 16 labeled, the rest "
            f"unlabeled; {validation_size()} of the unlabeled held out for validation) and the 20 standard test cases")


def as_la_results(results: StudyResults, out=STUDIES_DIR) -> LaResults:
    """The study as :class:`~versemi.companion.la_real.LaResults`: the summary of the real LA cases pooled over
    seeds on the x0.5 grid, and on the released grid too when every run is scored there
    (:func:`released_cases` under ``out``), and a provenance dict with one entry per run label (the first
    seed's config, the training seconds summed over seeds), the seeds, the machine and commit of the first
    record."""
    order = list(run_table(results).index)
    summary = summarize_cases(la_cases(results))
    summary.insert(1, "grid", GRID_TRAINED)
    summary = summary.set_index("method").loc[order].reset_index()
    full = released_cases(results, out)
    if full is not None:
        s2 = summarize_cases(full)
        s2.insert(1, "grid", GRID_RELEASED)
        summary = pd.concat([summary, s2.set_index("method").loc[order].reset_index()], ignore_index=True)
    runs = {}
    for r in results.records:
        line = runs.setdefault(r["label"], {"run": r["run"], "train_seconds": 0.0, "best": r.get("best"),
                                            "config": r["config"], "code": r["provenance"].get("code")})
        line["train_seconds"] += float(r.get("train_seconds") or 0.0)
    prov0 = results.records[0]["provenance"]
    prov = {"profile": results.profile, "seeds": results.seeds, "machine": prov0.get("machine", {}),
            "git": prov0.get("git", {}), "runs": {k: runs[k] for k in order}, "data": data_text(),
            "training_cases": f"80 (first 8 / 16 labeled); {validation_size()} of the unlabeled held out for validation"}
    return LaResults(Path(out) / results.profile / STUDY, summary, prov)


# ------------------------------------------------------------------------------ the released grid
def _committed_records(out, profile: str):
    for rec_path in sorted((Path(out) / profile / STUDY).glob("*/seed-*/run.json")):
        yield rec_path.parent, json.loads(rec_path.read_text())


def score_released(la_data, prepared_dir, runs_root="results/runs", out=STUDIES_DIR, profile: str = PROFILE,
                   retrain: bool = False, device=None, labels=None, skip_missing: bool = False,
                   progress: bool = True) -> list[Path]:
    """Score every committed run of the study under ``out`` that has no released-grid scores of that run yet
    (module docstring): its test predictions on ``prepared_dir``'s real LA cases, upsampled to the released
    volumes of ``la_data`` (:func:`~versemi.companion.la_real.evaluate_fullres`), written atomically as
    :data:`RELEASED_FILE` (``run, case`` and the metrics) with :data:`RELEASED_RECORD` (the run, the
    :func:`versemi.provenance.record` of the scoring code and, for a retrained run, its check).

    The run folders come from ``runs_root``. A committed run whose folder is not there is a
    :class:`VersemiError` naming it, unless ``retrain``: then its recorded config is trained again through the
    run cache (:func:`versemi.runs.get_or_train`, seeded, so the same network up to floating-point
    reduction order), which must land in the folder the record names (same config and prepared data) and be
    trained by code of the recorded fingerprint; the record then keeps how far the retrained run's x0.5 test
    Dice is from the committed ``cases.csv`` (``retrained``: the largest and the mean absolute difference
    per case). ``labels``: only these run labels; ``skip_missing``: leave a run whose folder is not there
    unscored instead (the page then stays on the x0.5 grid). Returns the files written."""
    from versemi.companion.figures import save_table
    from versemi.provenance import record
    from versemi.runs import collect_case_metrics, done_record, get_or_train, run_dir_for
    from versemi.utils import atomic_write_text

    if not Path(la_data).is_dir():
        raise VersemiError(f"{la_data}: the Left Atrium data is not there; pass --la-data")
    written = []
    for folder, rec in _committed_records(out, profile):
        if labels and rec["label"] not in labels:
            continue
        dest = folder / RELEASED_FILE
        if dest.is_file() and set(pd.read_csv(dest, usecols=["run"])["run"]) == {rec["run"]}:
            continue
        run_dir = Path(runs_root) / rec["run"]
        check = None
        if not (run_dir / "DONE.json").is_file():
            if skip_missing and not retrain:
                continue
            if not retrain:
                raise VersemiError(f"{run_dir}: the run folder of {folder} ({rec['label']}, seed {rec['seed']}) is "
                                   f"not there; pass the run cache that trained it (--runs) or retrain it (--retrain)")
            cfg = RunConfig.from_dict(rec["config"])
            here = run_dir_for(cfg, prepared_dir, runs_root)
            if here != run_dir:
                raise VersemiError(f"{folder}: its config on {prepared_dir} is run {here.name}, not the recorded "
                                   f"{rec['run']}: another preparation of the data, so the run cannot be trained again")
            if progress:
                print(f"retraining {rec['label']} seed {rec['seed']} ({rec['run']})", flush=True)
            get_or_train(cfg, prepared_dir, runs_root, device=device, progress=progress)
            code = done_record(run_dir).get("provenance", {}).get("code")
            if code != rec["provenance"].get("code"):
                raise VersemiError(f"{run_dir}: retrained by code {code}, the committed run by "
                                   f"{rec['provenance'].get('code')}; score it from a checkout of that code")
            mine = collect_case_metrics({rec["label"]: run_dir}).query("dataset == 'la'").set_index("case")["dice"]
            theirs = pd.read_csv(folder / "cases.csv").query("dataset == 'la'").set_index("case")["dice"]
            diff = (mine - theirs.reindex(mine.index)).abs()
            check = {"x05_dice_max_abs_diff": float(diff.max()), "x05_dice_mean_abs_diff": float(diff.mean()),
                     "cases": int(diff.notna().sum())}
        if progress:
            print(f"released grid: {rec['label']} seed {rec['seed']} ({rec['run']})", flush=True)
        cases = evaluate_fullres(run_dir, prepared_dir, la_data)
        cases.insert(0, "run", rec["run"])
        save_table(cases, dest, float_format="%.6g")
        atomic_write_text(folder / RELEASED_RECORD, json.dumps({"run": rec["run"], "retrained": check,
                                                                 "scored_by": record()}, indent=1, default=str) + "\n")
        written.append(dest)
    return written


def _released_frames(results: StudyResults, out) -> dict[tuple[str, int], pd.DataFrame]:
    """(run label, seed) -> the released-grid lines of that committed run of ``results`` (``case`` and the
    metrics), for every run scored there (:func:`score_released`) by the very run the study holds."""
    want = {(r["label"], int(r["seed"])): r["run"] for r in results.records}
    frames = {}
    for folder, rec in _committed_records(out, results.profile):
        key = (rec["label"], int(rec["seed"]))
        path = folder / RELEASED_FILE
        if want.get(key) != rec["run"] or not path.is_file():
            continue
        df = pd.read_csv(path)
        if set(df["run"]) == {rec["run"]}:
            frames[key] = df.drop(columns="run")
    return frames


def released_cases(results: StudyResults, out=STUDIES_DIR) -> pd.DataFrame | None:
    """The released-grid lines (``method`` = run label, ``seed``, ``case`` and the metrics) of every run of
    ``results``, or None while one of them has none (the page then quotes the x0.5 grid)."""
    frames = _released_frames(results, out)
    keys = [(r["label"], int(r["seed"])) for r in results.records]
    if set(frames) != set(keys):
        return None
    cases = pd.concat([frames[k].assign(method=k[0], seed=k[1]) for k in keys], ignore_index=True)
    return cases[["method", "seed", *[c for c in cases.columns if c not in ("method", "seed")]]]


def released_table(results: StudyResults, out=STUDIES_DIR) -> pd.DataFrame:
    """The runs scored on the released grid so far (:func:`score_released`), indexed by run label in the chapter's
    order: the seeds scored, the mean over those seeds of the mean Dice (%) over the 20 test cases on the released
    grid and on the x0.5 grid (the same runs and seeds), and the difference in points. Empty while none is."""
    cols = ["seeds", "Dice (%) released grid", "Dice (%) x0.5 grid", "released - x0.5 (points)", "cases x seeds"]
    frames = _released_frames(results, out)
    if not frames:
        return pd.DataFrame(columns=cols)
    x05 = la_cases(results)
    df = pd.DataFrame([{"run": label, "seed": seed, "released": 100 * full["dice"].mean(), "cases": len(full),
                        "x05": 100 * x05[(x05["method"] == label) & (x05["seed"] == seed)]["dice"].mean()}
                       for (label, seed), full in frames.items()])
    g = df.groupby("run", sort=False)
    table = pd.DataFrame({"seeds": g["seed"].apply(lambda s: ", ".join(map(str, sorted(s)))),
                          "Dice (%) released grid": g["released"].mean().round(1),
                          "Dice (%) x0.5 grid": g["x05"].mean().round(1)})
    table["released - x0.5 (points)"] = (table["Dice (%) released grid"] - table["Dice (%) x0.5 grid"]).round(1)
    table["cases x seeds"] = g["cases"].sum()
    return table.loc[[k for k in run_table(results).index if k in table.index], cols]


def released_text(results: StudyResults | None, out=STUDIES_DIR, label: str = "Fully supervised 100%") -> str:
    """The prose's released-grid value of run ``label``: its mean Dice over the seeds scored there
    (:func:`released_table`) with those seeds, or what there is instead."""
    if results is None:
        return "the value above (the earlier export is scored on the released grid)"
    table = released_table(results, out)
    if label not in table.index:
        return "a value not scored yet"
    return f"{table.loc[label, 'Dice (%) released grid']:.1f} % (seeds {table.loc[label, 'seeds']})"


def grid_text(results: LaResults | None) -> str:
    """The grid whose scores the chapter's prose quotes (:meth:`~versemi.companion.la_real.LaResults.released`):
    the released 0.625 mm grid when the results were scored there, else the x0.5 grid the models ran on."""
    if results is not None and results.summary["grid"].astype(str).str.startswith("released").any():
        return "on the released grid (0.625 mm)"
    return "on the x0.5 grid the models ran on (1.25 mm)"


def commits_text(results: StudyResults) -> str:
    """The commits that trained the study's runs (12 hex digits each) and how many runs a dirty tree trained."""
    commits = ", ".join(provenance_commit({"git": {"commit": c}}) for c in results.commits)
    dirty = sum(bool(r["provenance"].get("git", {}).get("dirty")) for r in results.records)
    return commits + (f" ({dirty} run(s) from a tree with uncommitted changes)" if dirty else "")


def source_note(study: StudyResults | None, legacy: LaResults | None, out=STUDIES_DIR) -> str:
    """Which results the page shows, in words: the committed study (runs, seeds, commits, runs still
    missing) or, until it has a run, the earlier single-seed export; with the command that produces the
    study."""
    profile = study.profile if study is not None else PROFILE
    cmd = f"versemi study run {STUDY} --profile {profile} --seeds 2333 1 2"
    if study is not None:
        per = study.seeds_per_run()
        single = [k for k, n in per.items() if n == 1]
        text = (f"**This page shows the committed `{STUDY}` study** (`{Path(out) / profile / STUDY}`): "
                f"{len(per)} runs, {len(study.records)} (run, seed) exports over seed(s) "
                f"{', '.join(map(str, study.seeds))}, trained by commit(s) {commits_text(study)}.")
        if single:
            text += f" Single-seed runs (their intervals reflect the test cases only): {', '.join(single)}."
        if study.missing:
            text += f" Not committed yet: {', '.join(study.missing)}."
        if study.superseded:
            text += f" Runs of {len(study.superseded)} other code version(s) are left out."
        return text + f" Produced by `{cmd}`."
    if legacy is not None:
        return (f"**This page shows the earlier export `{legacy.out}`**: 40 of the 80 training cases and one seed, "
                f"whose differences between methods are inside single-seed noise. The `{STUDY}` study on all 80 "
                f"training cases with three seeds has no committed run yet; `{cmd}` produces it.")
    return f"**No LA results are committed yet**; `{cmd}` produces them."


def reproduce_la_study(la_data, data_dir="results/data", runs_root="results/runs", out=STUDIES_DIR,
                       seeds=(2333,), profile: str = PROFILE) -> list[Path]:
    """Prepare the study's hybrid folder (the real LA from ``la_data`` and the phantom CT sets,
    :func:`versemi.hybrid.ensure_la_real`), then train and export the missing runs of the study for
    ``seeds`` (:func:`versemi.studies.run_study`) and score the committed runs whose folders are in
    ``runs_root`` on the released grid (:func:`score_released`). Returns the exported folders."""
    from versemi.hybrid import ensure_la_real
    from versemi.studies import run_study

    if not Path(la_data).is_dir():
        raise VersemiError(f"{la_data}: the Left Atrium data is not there; pass la_data")
    prepared = ensure_la_real(data_dir, la_data, profile=profile)
    done = run_study(STUDY, profile, seeds, out, data_dir, runs_root)
    score_released(la_data, prepared, runs_root, out, profile, skip_missing=True)
    return done
