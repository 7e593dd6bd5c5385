"""Studies: experiment groups repeated over seeds, trained in batches, exported small and committed.

A *study* is a named experiment group of ``versemi/experiments.py`` (:data:`~versemi.experiments.STUDY_GROUPS`)
under a profile, repeated for several seeds. Seed ``s`` is one draw of everything a seed can change: the
phantoms (every case drawn anew, ``versemi/data/ensure.py``), the validation split drawn by ``versemi
prepare``, and the training seed (initialisation, sampling, masks). The authors' seed 2333 is the first.

:func:`run_study` trains each (config, seed) through the run cache (``versemi/runs.py``) and, as soon as a
run is complete, exports it into ``<out>/<profile>/<study>/<key>/seed-<s>/``:

* ``cases.csv``  per-case test metrics with the run's placing fields (:func:`versemi.runs.collect_case_metrics`);
* ``loss.csv``   the training loss of every step; ``val.csv``: every validation Dice (step, dataset, network);
* ``conflict.csv`` (a run of the conflict study's probed methods only) the gradient-conflict scalars of every
                 probed step (``step`` and the ``conflict/...`` columns, ``versemi/conflict.py``);
* ``run.json``   label, seed, config, run folder name, training seconds, best validation score and the
                 run's provenance record (code fingerprint, commit, machine, libraries; ``DONE.json``).

These files are a few kB per run and are committed (``results/studies/``): the book renders them with
:func:`load_study` without training, and says for each page which numbers are committed and which are
computed live. Regenerate them with ``versemi study run <study> --profile <p> --seeds ...``; the export of
a run is rewritten atomically, so a batch killed half-way leaves only complete runs behind.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from versemi.config import RunConfig
from versemi.conflict import PREFIX as CONFLICT_PREFIX
from versemi.data.ensure import DEFAULT_SEED, ensure_data
from versemi.experiments import STUDY_GROUPS
from versemi.generalisation import SOURCE_DATASET, external_cases
from versemi.provenance import DATA_CODE, check_compatible, code_fingerprint, method_fingerprint
from versemi.runs import (
    collect_case_metrics,
    done_record,
    get_or_train,
    run_available,
    run_dir_for,
    run_times,
    selection_table,
)
from versemi.utils import VersemiError, atomic_write_text

STUDIES_DIR = "results/studies"
SEEDS = (DEFAULT_SEED, 1, 2)   # the seeds of the committed studies: the authors' first


def study_configs(study: str, profile: str, seed: int, ratio: int = 10) -> dict[str, RunConfig]:
    """label -> config of ``study`` under ``profile`` with ``seed`` and label ``ratio`` (an unknown study is
    an error)."""
    try:
        group = STUDY_GROUPS[study]
    except KeyError:
        raise VersemiError(f"unknown study {study!r}; expected one of {', '.join(STUDY_GROUPS)}") from None
    return group(profile, seed, ratio)


def run_key(label: str) -> str:
    """Folder name of a run label: 'Sup-only (LA) 10%' -> 'sup-only-la-10'."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def export_dir(out: str | Path, profile: str, study: str, label: str, seed: int) -> Path:
    """``<out>/<profile>/<study>/<key>/seed-<seed>``: the committed files of one run."""
    return Path(out) / profile / study / run_key(label) / f"seed-{int(seed)}"


def _metrics_curves(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """From one read of ``metrics.csv``: the total training loss of every step (``step, stage, loss``) and the
    ``step`` and ``conflict/...`` scalars of every probed step, None for a run that logged none (every method
    but the conflict study's probed ones)."""
    metrics = pd.read_csv(run_dir / "metrics.csv")
    cols = [c for c in metrics.columns if c.startswith(CONFLICT_PREFIX + "/")]
    conflict = metrics[["step", *cols]].dropna(subset=cols, how="all").reset_index(drop=True) if cols else None
    return metrics[["step", "stage", "loss"]], conflict


def _val_curve(run_dir: Path) -> pd.DataFrame:
    """step, dataset, dice, model: every validation (``val.csv``; model empty for the trained network,
    ``ema`` for an EMA teacher)."""
    return pd.read_csv(run_dir / "val.csv")[["step", "dataset", "dice", "model"]]


def run_record(label: str, run_dir, seed: int) -> dict:
    """The record of a complete run that a study keeps (``run.json``): label, seed, run folder name, config,
    training seconds, best validation, its line of :func:`versemi.runs.run_times` (``times``) and of
    :func:`versemi.runs.selection_table` (``selection``), and the run's provenance record."""
    run_dir = Path(run_dir)
    done = done_record(run_dir)
    times = run_times({label: run_dir}).iloc[0].to_dict()
    selection = selection_table({label: run_dir}).iloc[0].to_dict()
    return {"label": label, "seed": int(seed), "run": run_dir.name, "config": done["config"],
            "train_seconds": done.get("train_seconds"), "best": done.get("best"),
            "times": _plain(times), "selection": _plain(selection), "provenance": done.get("provenance", {})}


def _plain(d: dict) -> dict:
    """numpy scalars -> Python values (for JSON)."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in d.items()}


def run_cases(study: str | None, label: str, run_dir, seed: int, data_dir="results/data", profile: str | None = None,
              device=None, progress: bool = False) -> pd.DataFrame:
    """The per-case lines a run contributes to ``study`` (with ``seed``): its test cases
    (:func:`versemi.runs.collect_case_metrics`); for the generalisation study its MSD-spleen test cases and
    its cases of the unseen site (:func:`versemi.generalisation.external_cases`)."""
    run_dir = Path(run_dir)
    cases = collect_case_metrics({label: run_dir})
    if cases.empty:
        raise VersemiError(f"{run_dir}: no test evaluation to export")
    if study == "generalisation":   # the same runs as the SOTA group, scored on the unseen site too
        profile = profile or RunConfig.from_yaml(run_dir / "config.yaml").profile
        extra = external_cases(run_dir, data_dir, profile, int(seed), device=device, progress=progress)
        cases = pd.concat([cases[cases["dataset"] == SOURCE_DATASET], extra.assign(method=label)[cases.columns]],
                          ignore_index=True)
    cases.insert(1, "seed", int(seed))
    return cases


def export_run(label: str, run_dir, seed: int, dest, cases: pd.DataFrame | None = None) -> Path:
    """Write the committed files of a complete run (module docstring) into ``dest``, atomically (the
    folder is built beside and swapped in). ``cases``: the run's lines of its study (default: its test
    cases, :func:`run_cases`)."""
    run_dir, dest = Path(run_dir), Path(dest)
    cases = run_cases(None, label, run_dir, seed) if cases is None else cases
    record = run_record(label, run_dir, seed)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cases.to_csv(tmp / "cases.csv", index=False)
    loss, conflict = _metrics_curves(run_dir)
    loss.to_csv(tmp / "loss.csv", index=False)
    _val_curve(run_dir).to_csv(tmp / "val.csv", index=False)
    if conflict is not None:
        conflict.to_csv(tmp / "conflict.csv", index=False)
    atomic_write_text(tmp / "run.json", json.dumps(record, indent=1, default=str) + "\n")
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def run_study(study: str, profile: str, seeds=SEEDS, out=STUDIES_DIR, data_dir="results/data",
              runs_root="results/runs", labels=None, device=None, progress: bool = True, on_export=None) -> list[Path]:
    """Train and export every run of ``study`` for each seed in turn (seed-major: the first seed of every
    run before the second). ``labels``: only these run labels. Runs already exported by the same code are
    skipped. ``on_export(path)``: called after each export (e.g. to commit it). Returns the exported
    folders."""
    done = []
    for seed in seeds:
        cfgs = study_configs(study, profile, int(seed))
        if labels is not None:
            unknown = sorted(set(labels) - set(cfgs))
            if unknown:
                raise VersemiError(f"study {study!r} has no run(s) {unknown}; its runs: {list(cfgs)}")
            cfgs = {k: v for k, v in cfgs.items() if k in labels}
        prepared = ensure_data(data_dir, profile, int(seed))
        for label, cfg in cfgs.items():
            dest = export_dir(out, profile, study, label, seed)
            if exported_by_current_code(dest, cfg, prepared):
                continue
            run_dir = get_or_train(cfg, prepared, runs_root, device=device, progress=progress)
            cases = run_cases(study, label, run_dir, int(seed), data_dir, profile, device, progress)
            done.append(export_run(label, run_dir, int(seed), dest, cases))
            if on_export is not None:
                on_export(done[-1])
    return done


def _current(record: dict) -> bool:
    """Whether a run record was produced by this checkout's code (shared and method code; the data is
    checked apart, :meth:`StudyResults.same_data`)."""
    prov = record.get("provenance", {})
    method = record.get("config", {}).get("method")
    return prov.get("code") == code_fingerprint() and (not method or prov.get("method_code") == method_fingerprint(method))


def exported_by_current_code(dest: Path, cfg: RunConfig | None = None, prepared=None) -> bool:
    """Whether ``dest`` holds an export made by this checkout's code (shared and method code) and, given
    the run's ``cfg`` and ``prepared`` data, trained on exactly that data (the run folder name, a hash of
    config and manifest, is the recorded one): a recalibrated phantom generator leaves the code fingerprint
    as it was but changes the data, and such an export is stale."""
    if not (dest / "run.json").is_file():
        return False
    record = json.loads((dest / "run.json").read_text())
    if not _current(record):
        return False
    return cfg is None or prepared is None or run_dir_for(cfg, prepared, ".").name == record["run"]


@dataclass
class StudyResults:
    """The results of a study: ``cases`` (one line per run, seed, dataset and case: the columns of
    :func:`versemi.runs.collect_case_metrics` plus ``seed``), ``val`` and ``losses`` (``method, seed`` +
    the run's validations and training losses), ``records`` (the run.json of every run) and ``conflict``
    (``method, seed, step`` + the gradient-conflict scalars of the probed runs; empty for other studies)."""

    study: str
    profile: str
    cases: pd.DataFrame
    val: pd.DataFrame
    losses: pd.DataFrame
    records: list[dict]
    source: str = "committed"     # committed (exported files) | live (run folders of this build)
    not_trained: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["method", "reason"]))
    missing: list[str] = field(default_factory=list)   # runs of the study asked for but not committed yet
    superseded: dict = field(default_factory=dict)     # other code versions' committed runs left out: code -> n
    conflict: pd.DataFrame = field(default_factory=pd.DataFrame)   # the probed runs' conflict.csv lines
    method_code_left_out: list[str] = field(default_factory=list)  # "label seed s" of another method code

    def times(self) -> pd.DataFrame:
        """Training cost per run and seed (the columns of :func:`versemi.runs.run_times` plus ``seed``)."""
        return pd.DataFrame([{**r["times"], "seed": r["seed"]} for r in self.records])

    def selection(self) -> pd.DataFrame:
        """The checkpoint each run was evaluated with (:func:`versemi.runs.selection_table` plus ``seed``)."""
        return pd.DataFrame([{**r["selection"], "seed": r["seed"]} for r in self.records])

    @property
    def seeds(self) -> list[int]:
        return sorted({int(r["seed"]) for r in self.records})

    @property
    def commits(self) -> list[str]:
        return sorted({str(r["provenance"].get("git", {}).get("commit", "unknown")) for r in self.records})

    @property
    def code(self) -> str | None:
        codes = {r["provenance"].get("code") for r in self.records}
        return codes.pop() if len(codes) == 1 else None

    def code_is_current(self) -> bool:
        """Whether this checkout's code is the code that produced the results: the shared training and
        evaluation code and each run's method module."""
        return self.code is not None and all(_current(r) for r in self.records)

    def same_data(self, prepared, seed: int) -> bool | None:
        """Whether the runs of ``seed`` were trained on exactly the data prepared in ``prepared``: a run's folder
        name is the hash of its config and of the prepared data's manifest, so recomputing it from this
        data must give the recorded name. None when no run has that seed."""
        recs = [r for r in self.records if int(r["seed"]) == int(seed)]
        if not recs:
            return None
        return all(run_dir_for(RunConfig.from_dict(r["config"]), prepared, ".").name == r["run"] for r in recs)

    def seeds_per_run(self) -> pd.Series:
        return self.cases.groupby("method", sort=False)["seed"].nunique()

    def command(self) -> str:
        seeds = " ".join(str(s) for s in self.seeds)
        return f"versemi study run {self.study} --profile {self.profile} --seeds {seeds}"


def results_from_runs(runs: dict[str, Path], seed: int, study: str = "live", profile: str | None = None,
                      check_code: bool = True) -> StudyResults:
    """The complete run folders of this build (label -> folder, one seed) as :class:`StudyResults`, the same
    tables as committed results (``source="live"``)."""
    cases = collect_case_metrics(runs, check_code=check_code)
    if len(cases):
        cases.insert(1, "seed", int(seed))
    records = [run_record(label, d, seed) for label, d in runs.items()]
    val = [_val_curve(Path(d)).assign(method=label, seed=int(seed)) for label, d in runs.items()]
    curves = {label: _metrics_curves(Path(d)) for label, d in runs.items()}
    losses = [loss.assign(method=label, seed=int(seed)) for label, (loss, _) in curves.items()]
    conflict = [c.assign(method=label, seed=int(seed)) for label, (_, c) in curves.items() if c is not None]
    profile = profile or (records[0]["config"]["profile"] if records else "")
    concat = lambda frames: pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()  # noqa: E731
    return StudyResults(study, profile, cases, concat(val), concat(losses), records, source="live",
                        conflict=concat(conflict))


def evidence_version(provenance: dict) -> str:
    """The version of a committed run's evidence: ``<shared training code>/<data code>`` fingerprints (the
    data code covers readers, preparation and the phantom generator: a recalibrated generator re-draws
    the phantoms with the training code unchanged, and runs on the two draws are two versions)."""
    return f"{provenance.get('code')}/{provenance.get('data_code')}"


def current_version() -> str:
    """:func:`evidence_version` of this checkout."""
    return f"{code_fingerprint()}/{code_fingerprint(entries=DATA_CODE)}"


def committed_codes(study: str, profile: str, out=STUDIES_DIR) -> dict[str, dict]:
    """The evidence versions among the committed runs of ``study`` (:func:`evidence_version`) -> ``{"runs":
    {(label, seed), ...}, "time": newest export time}``. While a changed training code (or phantom
    generator) re-trains a study, its runs are committed one by one next to the previous version's
    (:func:`study_results` chooses)."""
    versions: dict[str, dict] = {}
    for rec_path in sorted((Path(out) / profile / study).glob("*/seed-*/run.json")):
        rec = json.loads(rec_path.read_text())
        v = versions.setdefault(evidence_version(rec["provenance"]), {"runs": set(), "time": ""})
        v["runs"].add((rec["label"], int(rec["seed"])))
        v["time"] = max(v["time"], str(rec["provenance"].get("time", "")))
    return versions


def load_study(study: str, profile: str, out=STUDIES_DIR, labels=None, code: str | None = None) -> StudyResults | None:
    """The committed results of ``study`` (None when nothing is exported). ``labels``: only these runs;
    ``code``: only the runs of that evidence version (:func:`committed_codes`). Runs produced by
    different training code are otherwise a :class:`VersemiError`
    (:func:`versemi.provenance.check_compatible`): a study is one code's evidence."""
    root = Path(out) / profile / study
    records, cases, val, losses, conflict = [], [], [], [], []
    for rec_path in sorted(root.glob("*/seed-*/run.json")):
        rec = json.loads(rec_path.read_text())
        if labels is not None and rec["label"] not in labels:
            continue
        if code is not None and evidence_version(rec["provenance"]) != code:
            continue
        records.append(rec)
        cases.append(pd.read_csv(rec_path.parent / "cases.csv"))
        for frames, name in ((val, "val.csv"), (losses, "loss.csv")):
            frames.append(pd.read_csv(rec_path.parent / name).assign(method=rec["label"], seed=int(rec["seed"])))
        if (rec_path.parent / "conflict.csv").is_file():
            conflict.append(pd.read_csv(rec_path.parent / "conflict.csv").assign(method=rec["label"],
                                                                                 seed=int(rec["seed"])))
    if not records:
        return None
    check_compatible({f"{r['label']} seed {r['seed']}": r["provenance"].get("code") for r in records},
                     f"study {study!r} ({root})")
    keep = one_method_code(records)
    left_out = [f"{r['label']} seed {r['seed']}" for r, k in zip(records, keep) if not k]
    records, cases, val, losses = ([x for x, k in zip(xs, keep) if k] for xs in (records, cases, val, losses))
    if left_out:   # drop the conflict lines of the runs left out
        kept = pd.DataFrame([(r["label"], int(r["seed"])) for r in records], columns=["method", "seed"])
        conflict = [c.merge(kept) for c in conflict]
    return StudyResults(study, profile, pd.concat(cases, ignore_index=True), pd.concat(val, ignore_index=True),
                        pd.concat(losses, ignore_index=True), records,
                        conflict=pd.concat(conflict, ignore_index=True) if conflict else pd.DataFrame(),
                        method_code_left_out=left_out)


def one_method_code(records: list[dict]) -> list[bool]:
    """Which run records a study keeps so that the seeds of one run come from one method module (a method
    fixed while its runs are re-trained seed by seed leaves both versions committed for a while): per run
    label, the records of this checkout's method code when it has any, else of the method code with the
    most seeds (the newest export on a tie). Returns one flag per record."""
    chosen = {}
    for label in dict.fromkeys(r["label"] for r in records):
        recs = [r for r in records if r["label"] == label]
        codes = {r["provenance"].get("method_code") for r in recs}
        if len(codes) == 1:
            chosen[label] = codes.pop()
            continue
        method = recs[0].get("config", {}).get("method")
        current = method_fingerprint(method) if method else None
        by_code = {c: [r for r in recs if r["provenance"].get("method_code") == c] for c in codes}
        chosen[label] = current if current in by_code else max(
            by_code, key=lambda c: (len(by_code[c]), max(str(r["provenance"].get("time", "")) for r in by_code[c])))
    return [r["provenance"].get("method_code") == chosen[r["label"]] for r in records]


def study_status(study: str, profile: str, seeds=SEEDS, out=STUDIES_DIR) -> pd.DataFrame:
    """One line per (run, seed) of ``study``: whether it is exported and by the current code."""
    lines = []
    for seed in seeds:
        for label in study_configs(study, profile, int(seed)):
            dest = export_dir(out, profile, study, label, seed)
            exported = (dest / "run.json").is_file()
            lines.append({"run": label, "seed": int(seed), "exported": exported,
                          "current_code": exported and exported_by_current_code(dest)})
    return pd.DataFrame(lines)

SOURCES = ("auto", "committed", "live")


def choose_code(versions: dict[str, dict], labels) -> tuple[str | None, dict]:
    """Which code version's committed runs a page shows, and what it leaves out.

    A version's *coverage* is the number of runs of ``labels`` it has for its best-covered seed. The choice:
    the current code's version when it covers every run; else the version that covers most (the newest on
    a tie): while a changed training code re-trains a study run by run, the previous evidence stays on the
    page, marked as produced by older code, until the new code's runs cover more of the study. Returns
    ``(code, {other code: number of its runs left out})``."""
    if not versions:
        return None, {}
    labels = set(labels)

    def coverage(v):
        seeds = {s for _, s in v["runs"]}
        return max(len(labels & {lab for lab, s in v["runs"] if s == seed}) for seed in seeds)

    current = current_version()
    if current in versions and coverage(versions[current]) == len(labels):
        code = current
    else:
        code = max(versions, key=lambda c: (coverage(versions[c]), versions[c]["time"]))
    return code, {c: len(v["runs"]) for c, v in versions.items() if c != code}


def live_results(study: str, profile: str, seed: int = DEFAULT_SEED, data_dir="results/data",
                 runs_root="results/runs", labels=None, device=None, progress: bool = True,
                 ratio: int = 10) -> StudyResults:
    """Train (or fetch from the run cache) the runs of ``study`` for one seed in this build, keeping going
    past configs the data cannot support (listed in ``not_trained``, :func:`versemi.runs.run_available`)."""
    cfgs = study_configs(study, profile, int(seed), ratio)
    if labels is not None:
        cfgs = {k: v for k, v in cfgs.items() if k in set(labels)}
    prepared = ensure_data(data_dir, profile, int(seed))
    runs, not_trained = run_available(cfgs, prepared, runs_root, device=device, progress=progress)
    res = results_from_runs(runs, int(seed), study=study, profile=profile)
    if study == "generalisation" and runs:
        res.cases = pd.concat([run_cases(study, k, d, int(seed), data_dir, profile, device) for k, d in runs.items()],
                              ignore_index=True)
    res.not_trained = not_trained
    return res


def study_results(study: str, profile: str, source: str = "auto", seed: int = DEFAULT_SEED, labels=None,
                  data_dir="results/data", runs_root="results/runs", out=STUDIES_DIR, device=None,
                  progress: bool = True, ratio: int = 10) -> StudyResults:
    """The results of ``study`` for a page: the committed ones (``source="committed"``, or ``"auto"`` when
    the profile has committed results of these runs at label ``ratio``) or :func:`live_results`
    (``"live"``, or ``"auto"`` without committed results). ``labels``: only these runs."""
    if source not in SOURCES:
        raise VersemiError(f"results source must be one of {', '.join(SOURCES)}, got {source!r}")
    expected = study_configs(study, profile, int(seed), ratio)
    committed = None
    if source != "live":
        code, superseded = choose_code(committed_codes(study, profile, out), labels if labels is not None else expected)
        committed = load_study(study, profile, out, labels=labels, code=code) if code is not None else None
        if committed is not None:
            committed.superseded = superseded
    if committed is not None and all(r["label"] in expected and int(r["config"]["ratio"]) == expected[r["label"]].ratio
                                     for r in committed.records):
        have = {r["label"] for r in committed.records}
        committed.missing = [label for label in (labels if labels is not None else expected) if label not in have]
        return committed
    if source == "committed":
        raise VersemiError(f"no committed results of study {study!r} for profile {profile!r} under {out}; "
                           f"run `versemi study run {study} --profile {profile}` or use source='live'")
    return live_results(study, profile, seed, data_dir, runs_root, labels, device, progress, ratio)
