"""The experiment groups behind the book: which runs each table needs, and training them.

A group is a dict ``key -> RunConfig`` (the key is the run's display label, or the name of an
ablation/deviation variant). Notebooks ask for a group; the run cache (``versemi/runs.py``) trains
what is missing, so the SOTA, ablation, t-SNE and failure-case notebooks share runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from versemi.config import ALL_DATASETS, RATIOS, RunConfig, get_profile, make_config
from versemi.runs import run_available
from versemi.utils import VersemiError

# The baselines compared with VerSemi: the semi-supervised methods, each task-specific (one model per
# dataset) and task-unified (Uni-: one prompted model on the four datasets), and the universal models.
# The paper profile trains every one; the CPU profiles leave out task-specific Mean Teacher (its Uni-
# variant stays) and DoDNet, which there is the Uni-Sup-only run itself (``versemi/methods/dodnet.py``).
SSL_METHODS = ("uamt", "dtc", "ase_net", "bcp", "caussl", "magicnet")
TASK_SPECIFIC_METHODS = {"paper": ("sup_only", "mean_teacher", *SSL_METHODS)}
DEFAULT_TASK_SPECIFIC = ("sup_only", *SSL_METHODS)
UNI_METHODS = ("sup_only", "mean_teacher", *SSL_METHODS)
UNIVERSAL_METHODS = {"paper": ("dodnet", "uniseg")}
DEFAULT_UNIVERSAL = ("uniseg",)


def sota_configs(profile: str = "demo", ratio: int = 10, seed: int = 2333, **overrides) -> dict[str, RunConfig]:
    """label -> config for the SOTA comparison: task-specific baselines per dataset, their Uni- variants
    on all four datasets with the prompted network, the universal models, VerSemi, and the fully
    supervised upper bound."""
    cfgs: list[RunConfig] = []
    for m in TASK_SPECIFIC_METHODS.get(profile, DEFAULT_TASK_SPECIFIC):
        cfgs += [make_config(m, profile, datasets=(d,), ratio=ratio, seed=seed, **overrides) for d in ALL_DATASETS]
    cfgs += [make_config(m, profile, ratio=ratio, seed=seed, **overrides) for m in UNI_METHODS]
    cfgs += [make_config(m, profile, ratio=ratio, seed=seed, **overrides)
             for m in UNIVERSAL_METHODS.get(profile, DEFAULT_UNIVERSAL)]
    cfgs.append(make_config("versemi", profile, ratio=ratio, seed=seed, **overrides))
    cfgs += [make_config("sup_only", profile, datasets=(d,), ratio=100, seed=seed, **overrides) for d in ALL_DATASETS]
    return {c.label(): c for c in cfgs}


ABLATIONS: dict[str, dict] = {
    "VerSemi (full)": {},
    "w/o L_aux": {"options": {"laux": False}},
    "w/o synthetic Task#5": {"options": {"syn": False}},
    "w/o unlabeled consistency": {"options": {"consistency": False}},
    "multi-head (no controller)": {"head": "multi"},
    "no prompt (single head)": {"head": "none"},
}
FULL_MODEL = "VerSemi (full)"

# Switches that restore a behaviour of the authors' released code where this companion departs from it
# (book/reproducibility.md, "Deviations from the authors' code"; the number is that table's row).
DEVIATIONS: dict[str, dict] = {
    FULL_MODEL: {},
    # the released script trains stage 1 for 1,000 epochs, the first half of the paper's schedule
    "#1 released: stage 1 only": {"options": {"consistency": False}, "steps_scale": 0.5},
    "#2-3 released stage-2 loss": {"options": {"authors_stage2": True}},
    "#5 released: selection on test": {"selection": "test"},
    "#6 released: centre-cropped unlabeled": {"crop_unlabeled": "center"},
}


def ablation_configs(profile: str = "demo", ratio: int = 10, seed: int = 2333, variants: dict | None = None,
                     **overrides) -> dict[str, RunConfig]:
    """variant name -> config for the ablations of VerSemi (each switch off one at a time).

    ``variants``: name -> changes to the full model (default :data:`ABLATIONS`; :data:`DEVIATIONS` gives
    the runs that each restore one behaviour of the authors' released code)."""
    out = {}
    for label, change in (ABLATIONS if variants is None else variants).items():
        change = dict(change)
        scale = change.pop("steps_scale", None)   # a fraction of the profile's schedule
        kw = {**overrides, **change}
        if "options" in change and "options" in overrides:
            kw["options"] = {**overrides["options"], **change["options"]}
        if scale is not None:
            kw["steps"] = max(1, round(scale * int(kw.get("steps", get_profile(profile).train["steps"]))))
        out[label] = make_config("versemi", profile, ratio=ratio, seed=seed, **kw)
    return out


def la_real_configs(profile: str = "la-real", seed: int = 2333, **overrides) -> dict[str, RunConfig]:
    """The Left Atrium experiments of the paper's line of work on real LA (8 / 16 labeled as every paper
    of the line; the 20 standard test cases): Sup-only with 8 and 16 labeled, UA-MT, BCP and VerSemi with
    8 labeled, and the fully supervised model on all training cases outside the validation split. All
    single-task (LA only); keys without the dataset ('Sup-only 10%')."""
    mk = lambda m, r: make_config(m, profile, datasets=("la",), ratio=r, seed=seed, **overrides)  # noqa: E731
    cfgs = [mk("sup_only", 100), mk("sup_only", 10), mk("versemi", 10), mk("sup_only", 20), mk("bcp", 10),
            mk("uamt", 10)]
    return {c.label(with_dataset=False): c for c in cfgs}


# The real-LA study (issue 16): the protocol of the paper's line of work on all 80 training cases - 8 labeled +
# 72 unlabeled (10 %) and 16 + 64 (20 %), model selection on a validation split that ``versemi prepare`` carves
# from the unlabeled training cases (20 % of the authors' unlabeled_20 list: 13 of 64 on the full release, the
# same cases at both ratios), the 20 standard test cases - and the methods compared at each ratio.
LA_REAL_METHODS: dict[int, tuple[str, ...]] = {
    10: ("sup_only", "mean_teacher", "uamt", "dtc", "ase_net", "bcp", "caussl", "magicnet", "versemi"),
    20: ("sup_only", "bcp", "versemi"),
}
# The joint run: VerSemi on the real LA together with the phantom pancreas, spleen and lung sets (prepared into
# the same folder by ``versemi/hybrid.py``), scored on the real LA test cases. Its key says it is a hybrid.
HYBRID_LABEL = "VerSemi hybrid (real LA + phantom CT) 10%"


def la_real_study_configs(profile: str = "la-real", seed: int = 2333, **overrides) -> dict[str, RunConfig]:
    """label -> config of the ``la-real`` study: every method of :data:`LA_REAL_METHODS` at its ratios on LA
    alone (keys 'BCP 10%', 'BCP 20%', as :func:`la_real_configs`, whose runs it contains with the same
    identities), the fully supervised upper bound ('Fully supervised 100%': every training case outside the
    validation split) and the hybrid VerSemi run on the four datasets (:data:`HYBRID_LABEL`). Both label
    ratios live in one group, so a label names its ratio; a repeated label is an error."""
    mk = lambda m, r: make_config(m, profile, datasets=("la",), ratio=r, seed=seed, **overrides)  # noqa: E731
    cfgs = [mk("sup_only", 100)] + [mk(m, r) for r, methods in LA_REAL_METHODS.items() for m in methods]
    out: dict[str, RunConfig] = {}
    for c in cfgs:
        key = c.label(with_dataset=False)
        if key in out:
            raise VersemiError(f"la-real study: two runs share the label {key!r}")
        out[key] = c
    out[HYBRID_LABEL] = make_config("versemi", profile, datasets=ALL_DATASETS, ratio=RATIOS[0], seed=seed,
                                    **overrides)
    return out


CURVE_LENGTH = 1.5    # the learning-curve runs train this many times the profile's schedule
CURVE_POINTS = 24     # validations per learning-curve run


def curve_configs(profile: str = "demo", seed: int = 2333, **overrides) -> dict[str, RunConfig]:
    """The learning-curve study that chooses a profile's schedule: the fully supervised upper bound and
    Sup-only 10% of each dataset (task-specific), trained :data:`CURVE_LENGTH` times the profile's steps
    with :data:`CURVE_POINTS` validations (the curves are in each run's ``val.csv``)."""
    steps = int(round(CURVE_LENGTH * int(get_profile(profile).train["steps"])))
    every = max(1, steps // CURVE_POINTS)
    kw = dict(steps=steps, val_every=every, ckpt_every=every, seed=seed, **overrides)
    cfgs = [make_config("sup_only", profile, datasets=(d,), ratio=r, **kw) for r in (100, 10) for d in ALL_DATASETS]
    return {c.label(): c for c in cfgs}


def deviation_configs(profile: str = "demo", seed: int = 2333, ratio: int = 10, **overrides) -> dict[str, RunConfig]:
    """The runs that each restore one behaviour of the authors' released code (:data:`DEVIATIONS`)."""
    return ablation_configs(profile, ratio, seed, variants=DEVIATIONS, **overrides)


def generalisation_configs(profile: str = "demo", ratio: int = 10, seed: int = 2333, **overrides) -> dict[str, RunConfig]:
    """The SOTA group's runs that can segment the spleen (trained on it alone or with the other datasets):
    the models the unseen-site study scores on the external spleen set (``versemi/generalisation.py``)."""
    return {k: c for k, c in sota_configs(profile, ratio, seed, **overrides).items() if "spleen" in c.datasets}


# The conflict study (issue 19; beyond the paper, ``versemi/conflict.py``): the inter-dataset conflict that the
# paper's conclusion names as its open problem, measured three ways on the same seeds.
CONFLICT_PROBED = "VerSemi (probed)"
CONFLICT_UNI_PROBED = "Uni-Sup-only (probed)"
CONFLICT_PCGRAD = "VerSemi + PCGrad"
CONFLICT_PROBES = 40   # probed steps per probed run (every steps // 40 steps, from step 0)


def conflict_loo_label(dataset: str, ratio: int = 10) -> str:
    """The label of the joint VerSemi run trained on every dataset but ``dataset``."""
    return f"VerSemi w/o {dataset} {ratio}%"


def conflict_configs(profile: str = "demo", ratio: int = 10, seed: int = 2333, **overrides) -> dict[str, RunConfig]:
    """label -> config of the conflict study, every run at label ``ratio`` and the profile's schedule:

    * the gradient probes: ``VerSemi (probed)`` (``versemi_probed``: the same training as VerSemi, with the
      per-task gradient cosines logged :data:`CONFLICT_PROBES` times) and ``Uni-Sup-only (probed)``
      (``sup_only_probed``) on the four datasets;
    * the transfer matrix: ``VerSemi 10%`` on the four (the SOTA group's run), the four leave-one-dataset-out
      runs (:func:`conflict_loo_label`) and VerSemi on each dataset alone (``VerSemi (la) 10%``);
    * the mitigation: ``VerSemi + PCGrad`` (``versemi_pcgrad``) on the four."""
    mk = lambda m, ds: make_config(m, profile, datasets=tuple(ds), ratio=ratio, seed=seed, **overrides)  # noqa: E731
    steps = int(overrides.get("steps", get_profile(profile).train["steps"]))
    probe = {"options": {"probe_every": max(1, steps // CONFLICT_PROBES)}}
    out = {CONFLICT_PROBED: make_config("versemi_probed", profile, ratio=ratio, seed=seed, **{**overrides, **probe}),
           CONFLICT_UNI_PROBED: make_config("sup_only_probed", profile, ratio=ratio, seed=seed,
                                            **{**overrides, **probe})}
    full = mk("versemi", ALL_DATASETS)
    out[full.label()] = full
    for d in ALL_DATASETS:
        out[conflict_loo_label(d, ratio)] = mk("versemi", [x for x in ALL_DATASETS if x != d])
    for d in ALL_DATASETS:
        c = mk("versemi", [d])
        out[c.label()] = c
    out[CONFLICT_PCGRAD] = mk("versemi_pcgrad", ALL_DATASETS)
    return out


# The experiment groups that ``versemi study`` repeats over seeds (``versemi/studies.py``): name ->
# ``f(profile, seed, ratio) -> {label: RunConfig}``; the committed studies use the main label ratio (10 %), except
# ``la-real``, whose one group holds both ratios.
STUDY_GROUPS = {
    "sota": lambda profile, seed, ratio=10: sota_configs(profile, ratio, seed),
    "ablations": lambda profile, seed, ratio=10: ablation_configs(profile, ratio, seed),
    "deviations": lambda profile, seed, ratio=10: deviation_configs(profile, seed=seed, ratio=ratio),
    "curves": lambda profile, seed, ratio=10: curve_configs(profile, seed=seed),
    "generalisation": lambda profile, seed, ratio=10: generalisation_configs(profile, ratio, seed),
    "conflict": lambda profile, seed, ratio=10: conflict_configs(profile, ratio, seed),
    # both label ratios in one group (the labels name them): ``ratio`` is not used
    "la-real": lambda profile, seed, ratio=10: la_real_study_configs(profile, seed),
}


# The runs each notebook group of ``versemi run <group>`` trains with its default parameters (the notebooks'
# own calls: 02_train VerSemi + Uni-UA-MT, 03_sota the SOTA group at every ratio it shows, 04_ablations the
# ablations and released-code deviations, 05_tsne VerSemi + its default baseline Uni-Sup-only, 06_failures
# VerSemi (full) + w/o L_aux, 07_explorer VerSemi, 00_claims the SOTA group and the ablations, 10_conflict the
# conflict study). The cluster
# executor (``versemi/cluster.py``) trains them as jobs before the notebooks run; groups that train nothing
# (data, budget, la: its runs are trained only with ``rerun=true``) map to no run.
def _pick(configs: dict[str, RunConfig], labels: Sequence[str]) -> dict[str, RunConfig]:
    return {k: configs[k] for k in labels}


def _sota_all_ratios(profile: str, seed: int, ratio: int) -> dict[str, RunConfig]:
    return {k: c for r in resolve_ratios(profile, ratio) for k, c in sota_configs(profile, r, seed).items()}


NOTEBOOK_RUNS = {
    "train": lambda p, s, r: _pick(sota_configs(p, r, s), [f"VerSemi {r}%", f"Uni-UA-MT {r}%"]),
    "sota": _sota_all_ratios,
    "ablations": lambda p, s, r: {**ablation_configs(p, r, s), **deviation_configs(p, s, r)},
    "tsne": lambda p, s, r: _pick(sota_configs(p, r, s), [f"VerSemi {r}%", f"Uni-Sup-only {r}%"]),
    "failures": lambda p, s, r: _pick(ablation_configs(p, r, s), [FULL_MODEL, "w/o L_aux"]),
    "explorer": lambda p, s, r: _pick(sota_configs(p, r, s), [f"VerSemi {r}%"]),
    "claims": lambda p, s, r: {**sota_configs(p, 10, s), **ablation_configs(p, 10, s)},
    "conflict": lambda p, s, r: conflict_configs(p, r, s),
}


# The runs a notebook trains in *every* build, whatever results are committed: the notebooks that need a
# trained network (its metrics log, checkpoint, features or predictions), not only a study's tables. The
# book trains them first, side by side (``versemi/companion/book.py``); the others come from committed
# studies, or are trained by their notebooks while a study is not committed.
LIVE_RUNS = {
    "train": lambda p, s, r: _pick(sota_configs(p, r, s), [f"VerSemi {r}%"]),
    "tsne": NOTEBOOK_RUNS["tsne"],
    "failures": NOTEBOOK_RUNS["failures"],
    "explorer": NOTEBOOK_RUNS["explorer"],
}


def notebook_group_configs(groups: Sequence[str], profile: str, seed: int = 2333,
                           ratio: int = 10, live_only: bool = False) -> dict[str, RunConfig]:
    """label -> config of every run the notebooks of the notebook ``groups`` (``versemi/companion/notebooks.py``)
    train with their default parameters, one entry per distinct run (a run two groups share appears once,
    under its first label). Groups that train nothing give nothing. ``live_only``: only the runs those
    notebooks train in every build (:data:`LIVE_RUNS`)."""
    table = LIVE_RUNS if live_only else NOTEBOOK_RUNS
    out: dict[str, RunConfig] = {}
    seen: set[str] = set()
    for g in groups:
        for label, cfg in (table[g](profile, int(seed), int(ratio)) if g in table else {}).items():
            if cfg.identity() not in seen:
                seen.add(cfg.identity())
                out[label if label not in out else f"{g}: {label}"] = cfg
    return out


# --------------------------------------------------------------------------------- choosing and training
def select_configs(configs: dict[str, RunConfig], methods: Sequence[str] | None = None) -> dict[str, RunConfig]:
    """The configs whose key or table row (:meth:`RunConfig.row_name`) is in ``methods``.

    ``methods=None`` keeps all. ``methods=["VerSemi", "Uni-BCP", "Sup-only"]`` keeps 'VerSemi 10%',
    'Uni-BCP 10%' and the four 'Sup-only (<dataset>) 10%' runs. A name that matches nothing is an error
    (a typo would otherwise silently empty the table).
    """
    if methods is None:
        return dict(configs)
    wanted = [str(m) for m in methods]
    keep = {k: v for k, v in configs.items() if k in wanted or v.row_name() in wanted}
    known = {v.row_name() for v in configs.values()} | set(configs)
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise VersemiError(f"unknown method(s) {unknown}; choose among {sorted(known)}")
    return keep


def resolve_ratios(profile: str, ratio: int = 10, ratios: Sequence[int] | None = None) -> list[int]:
    """The label ratios the SOTA notebook runs: ``ratios`` if given, else [10, 20] in the paper profile
    (the paper reports both) and ``[ratio]`` otherwise; ``ratio`` always first (the main table)."""
    if ratios is None:
        ratios = list(RATIOS) if profile == "paper" else [ratio]
    out = [int(ratio)] + [int(r) for r in ratios if int(r) != int(ratio)]
    bad = [r for r in out if r not in RATIOS]
    if bad:
        raise VersemiError(f"label ratios must be 10 or 20 (%), got {bad}")
    return out


def train_sota(profile: str, ratios: Sequence[int], seed: int, prepared_dir, runs_root,
               methods: Sequence[str] | None = None, device=None,
               progress: bool = True) -> tuple[dict[int, dict], pd.DataFrame]:
    """Train (or fetch from the run cache) the SOTA group of every label ratio in ``ratios``, restricted
    to ``methods`` (:func:`select_configs`). Returns ``({ratio: {label: run folder}}, not_trained)`` where
    ``not_trained`` lists ``ratio, method, reason`` of the configs the data could not support
    (:func:`versemi.runs.run_available`)."""
    runs, skipped = {}, []
    for r in ratios:
        cfgs = select_configs(sota_configs(profile, int(r), seed), methods)
        runs[int(r)], nt = run_available(cfgs, prepared_dir, runs_root, device=device, progress=progress)
        skipped += [{"ratio": int(r), **row} for row in nt.to_dict("records")]
    return runs, pd.DataFrame(skipped, columns=["ratio", "method", "reason"])


def train_ablations(profile: str, ratio: int, seed: int, prepared_dir, runs_root,
                    ablations: Sequence[str] | None = None, reference_label: str = FULL_MODEL,
                    device=None, progress: bool = True, variants: dict | None = None) -> tuple[dict, pd.DataFrame]:
    """Train (or fetch) the ablation group (:func:`ablation_configs`), restricted to ``ablations`` (names
    of :data:`ABLATIONS`, or of ``variants`` when given, e.g. :data:`DEVIATIONS`; the full model is always
    included: the deltas are taken against it). Returns ``(runs, not_trained)``."""
    cfgs = ablation_configs(profile, ratio, seed, variants=variants)
    if ablations is not None:
        unknown = [a for a in ablations if a not in cfgs]
        if unknown:
            raise VersemiError(f"unknown ablation(s) {unknown}; choose among {list(cfgs)}")
        cfgs = {k: v for k, v in cfgs.items() if k == reference_label or k in ablations}
    return run_available(cfgs, prepared_dir, runs_root, device=device, progress=progress)
