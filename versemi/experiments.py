"""Experiment configs, profiles and the run cache.

A run is fully described by a :class:`RunConfig`. Its folder is ``<runs_root>/<method>-<hash>`` where
the hash covers every field that changes the result (plus a fingerprint of the prepared data), so the
notebooks that need the same model share one run and a second book build trains nothing.
A run folder is complete only when ``DONE.json`` exists (written last, atomically); the cache never
serves an incomplete run, and an incomplete one resumes from its last checkpoint.

Profiles (DESIGN.md section 6):

=========  ======================  =========  =========  ======================================
profile    data                    width f    patch      purpose
=========  ======================  =========  =========  ======================================
smoke      tiny phantoms           4          32^3       tests and CI, seconds per run
demo       phantoms, paper counts  8          32^3       ``make book`` on a 2-core CPU
la-real    real LA x0.5, 40 cases  8          64x64x32   the real-data chapter on a CPU
paper      real datasets           16         96^3       GPU reproduction with the authors' settings
=========  ======================  =========  =========  ======================================
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from versemi.data.registry import DATASETS
from versemi.utils import VersemiError

if TYPE_CHECKING:
    import pandas as pd

ALL_DATASETS = ("pancreas", "la", "spleen", "lung")


@dataclass
class RunConfig:
    """Everything that defines one training run (and its evaluation protocol)."""

    method: str = "versemi"
    datasets: tuple[str, ...] = ALL_DATASETS
    ratio: int = 10                  # % of training cases labeled (100 = fully supervised)
    head: str = "dynamic"            # dynamic | multi | none
    options: dict = field(default_factory=dict)   # method options (see versemi/methods/<method>.py)
    profile: str = "demo"
    seed: int = 2333
    steps: int = 200                 # optimisation steps over all stages
    batch_size: int = 4              # labeled samples per step
    unlabeled_batch_size: int = 4
    patch: tuple[int, int, int] = (32, 32, 32)
    n_filters: int = 8
    dropout: float = 0.0
    optimizer: str = "adam"          # adam | sgd
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_step: int = 0                 # multiply lr by lr_gamma every lr_step steps (0: constant)
    lr_gamma: float = 0.1
    ema_decay: float = 0.99
    crop_unlabeled: str = "random"   # random | center (the authors only centre-crop unlabeled volumes)
    pos_fraction: float | None = None  # None: uniform random crops (authors); else pos/neg balanced
    val_every: int = 50
    selection: str = "val"           # val | last | test (test = select on the test set, as the authors)
    eval_patch: tuple[int, int, int] = (32, 32, 32)
    eval_stride: tuple[int, int, int] = (16, 16, 8)
    val_stride: tuple[int, int, int] = (16, 16, 16)
    eval_protocol: str = "paper"
    amp: bool = True                 # bf16 autocast, only ever on CUDA
    # not part of the identity of a run:
    ckpt_every: int = 50

    NON_IDENTITY = ("ckpt_every",)

    def __post_init__(self):
        self.datasets = tuple(self.datasets)
        self.patch = tuple(int(v) for v in self.patch)
        self.eval_patch = tuple(int(v) for v in self.eval_patch)
        self.eval_stride = tuple(int(v) for v in self.eval_stride)
        self.val_stride = tuple(int(v) for v in self.val_stride)
        self.betas = tuple(float(v) for v in self.betas)
        self.options = dict(self.options)
        if "unlab_ratio_range" in self.options:
            self.options["unlab_ratio_range"] = tuple(self.options["unlab_ratio_range"])
        self.validate()

    def validate(self) -> None:
        from versemi.methods import METHOD_NAMES

        if self.method not in METHOD_NAMES:
            raise VersemiError(f"unknown method {self.method!r}; expected one of {', '.join(METHOD_NAMES)}")
        bad = [d for d in self.datasets if d not in DATASETS]
        if bad or not self.datasets:
            raise VersemiError(f"unknown dataset(s) {bad}; expected a subset of {', '.join(DATASETS)}")
        if self.ratio not in (10, 20, 100):
            raise VersemiError(f"label ratio must be 10, 20 or 100 (%), got {self.ratio}")
        if self.head not in ("dynamic", "multi", "none"):
            raise VersemiError(f"head must be dynamic, multi or none, got {self.head!r}")
        if self.profile not in PROFILES:
            raise VersemiError(f"unknown profile {self.profile!r}; expected one of {', '.join(PROFILES)}")
        for name in ("patch", "eval_patch"):
            p = getattr(self, name)
            if len(p) != 3 or any(v < 32 or v % 16 for v in p):
                raise VersemiError(f"{name} must be three sizes divisible by 16 and >= 32, got {p}")
        if self.steps < 1 or self.batch_size < 2:
            raise VersemiError(f"steps must be >= 1 and batch_size >= 2 (the mixing pairs two halves); "
                               f"got steps={self.steps}, batch_size={self.batch_size}")
        if self.optimizer not in ("adam", "sgd"):
            raise VersemiError(f"optimizer must be adam or sgd, got {self.optimizer!r}")
        if self.selection not in ("val", "last", "test"):
            raise VersemiError(f"selection must be val, last or test, got {self.selection!r}")
        if self.crop_unlabeled not in ("random", "center"):
            raise VersemiError(f"crop_unlabeled must be random or center, got {self.crop_unlabeled!r}")
        if self.lr <= 0:
            raise VersemiError(f"lr must be positive, got {self.lr}")

    # ------------------------------------------------------------------
    @property
    def task_specific(self) -> bool:
        return len(self.datasets) == 1

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        d["options"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()}
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise VersemiError(f"unknown config key(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        try:
            d = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise VersemiError(f"{path}: config file not found") from None
        except yaml.YAMLError as e:
            raise VersemiError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(d, dict):
            raise VersemiError(f"{path}: expected a mapping of config keys")
        return cls.from_dict(d)

    def identity(self, data_fingerprint: str = "") -> str:
        d = {k: v for k, v in self.to_dict().items() if k not in self.NON_IDENTITY}
        blob = json.dumps({"config": d, "data": data_fingerprint}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def label(self) -> str:
        """Human-readable name, e.g. 'Uni-UA-MT 10%' or 'Sup-only (pancreas) 10%'."""
        names = {"sup_only": "Sup-only", "mean_teacher": "MT", "uamt": "UA-MT", "bcp": "BCP", "versemi": "VerSemi"}
        base = names[self.method]
        if self.method == "sup_only" and self.ratio == 100:
            base = "Fully supervised"
        if self.method != "versemi" and not self.task_specific:
            base = "Uni-" + base
        if self.task_specific:
            base += f" ({self.datasets[0]})"
        return f"{base} {self.ratio}%"


# ---------------------------------------------------------------------------- profiles
PROFILES: dict[str, dict] = {
    "smoke": dict(n_filters=4, patch=(32, 32, 32), steps=6, batch_size=2, unlabeled_batch_size=2,
                  val_every=3, ckpt_every=3, eval_patch=(32, 32, 32), eval_stride=(16, 16, 16),
                  val_stride=(32, 32, 32)),
    "demo": dict(n_filters=8, patch=(32, 32, 32), steps=200, batch_size=4, unlabeled_batch_size=4,
                 val_every=60, ckpt_every=60, eval_patch=(32, 32, 32), eval_stride=(16, 16, 8),
                 val_stride=(16, 16, 16)),
    # real LA on a CPU: volumes resampled x0.5 by `versemi prepare --profile la-real` (1.25 mm)
    "la-real": dict(n_filters=8, patch=(64, 64, 32), steps=1200, batch_size=4, unlabeled_batch_size=4,
                    val_every=250, ckpt_every=250, eval_patch=(64, 64, 32), eval_stride=(16, 16, 8),
                    val_stride=(32, 32, 16)),
    # The authors' settings: Adam 1e-3 (0.5, 0.999), batch 8 (+8), 96^3, stride 16/16/4.
    # Steps: 1000 epochs x ceil(22 x 5 / 8) = 13 it/epoch = 13,000 per VerSemi stage at 10%.
    "paper": dict(n_filters=16, patch=(96, 96, 96), steps=26000, batch_size=8, unlabeled_batch_size=8,
                  val_every=1000, ckpt_every=500, eval_patch=(96, 96, 96), eval_stride=(16, 16, 4),
                  val_stride=(32, 32, 16)),
}

# Per-method settings of the released code, applied in the paper profile only. In the CPU profiles every
# method uses VerSemi's optimiser (Adam 1e-3) so that a few hundred steps are a fair budget for all.
PAPER_METHOD_SETTINGS: dict[str, dict] = {
    "sup_only": dict(),
    "mean_teacher": dict(optimizer="sgd", lr=0.01, weight_decay=1e-4, lr_step=2500, batch_size=2,
                         unlabeled_batch_size=2, steps=6000),
    "uamt": dict(optimizer="sgd", lr=0.01, weight_decay=1e-4, lr_step=2500, batch_size=2,
                 unlabeled_batch_size=2, steps=6000, dropout=0.5),
    "bcp": dict(optimizer="sgd", lr=0.01, weight_decay=1e-4, batch_size=4, unlabeled_batch_size=4,
                steps=17000),
    "versemi": dict(),
}


# Method options that a CPU profile changes for its budget (the paper profile keeps the released values).
PROFILE_METHOD_OPTIONS: dict[tuple[str, str], dict] = {
    ("uamt", "smoke"): {"mc_passes": 2},
    ("uamt", "demo"): {"mc_passes": 4},   # released: T = 8 stochastic teacher passes
    ("uamt", "la-real"): {"mc_passes": 4},
}


def make_config(method: str = "versemi", profile: str = "demo", **overrides) -> RunConfig:
    """A RunConfig with the profile's defaults (and, in the paper profile, the method's released
    settings), then ``overrides``."""
    if profile not in PROFILES:
        raise VersemiError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    d: dict = dict(PROFILES[profile])
    if profile == "paper":
        d.update(PAPER_METHOD_SETTINGS.get(method, {}))
    if method == "uamt":
        d.setdefault("dropout", 0.5)
    datasets = overrides.get("datasets", ALL_DATASETS)
    if len(tuple(datasets)) == 1 and "head" not in overrides and method != "versemi":
        d["head"] = "none"  # a task-specific baseline needs no prompt (VerSemi keeps its prompted head)
    opts = {**PROFILE_METHOD_OPTIONS.get((method, profile), {}), **dict(overrides.pop("options", None) or {})}
    d.update(overrides)
    if opts:
        d["options"] = opts
    unknown = set(d) - {f.name for f in dataclasses.fields(RunConfig)}
    if unknown:
        raise VersemiError(f"unknown config key(s): {', '.join(sorted(unknown))}")
    return RunConfig(method=method, profile=profile, **d)


# ---------------------------------------------------------------------------- run cache
def data_fingerprint(prepared_dir: str | Path) -> str:
    m = Path(prepared_dir) / "manifest.json"
    if not m.is_file():
        raise VersemiError(f"{prepared_dir}: no manifest.json; run `versemi prepare` first")
    return hashlib.sha256(m.read_bytes()).hexdigest()[:12]


def run_dir_for(cfg: RunConfig, prepared_dir: str | Path, runs_root: str | Path) -> Path:
    return Path(runs_root) / f"{cfg.method}-{cfg.identity(data_fingerprint(prepared_dir))}"


def is_complete(run_dir: Path) -> bool:
    return (Path(run_dir) / "DONE.json").is_file()


def get_or_train(cfg: RunConfig, prepared_dir: str | Path, runs_root: str | Path = "results/runs",
                 device: str | None = None, progress: bool = True, evaluate: bool = True) -> Path:
    """Return the folder of a complete run of ``cfg``; train (resuming if possible) and evaluate only
    what is missing."""
    from versemi.train import finish_run, train

    run_dir = run_dir_for(cfg, prepared_dir, runs_root)
    if is_complete(run_dir):
        return run_dir
    train(cfg, prepared_dir, run_dir, device=device, progress=progress)
    finish_run(run_dir, prepared_dir, device=device, evaluate=evaluate, progress=progress)
    return run_dir


# ---------------------------------------------------------------------------- data for a profile
def ensure_data(data_dir: str | Path = "results/data", profile: str = "demo", seed: int = 2333) -> Path:
    """The prepared-data folder of ``profile`` under ``data_dir`` (``<data_dir>/<profile>/prepared``).

    For the phantom profiles (smoke, demo) the phantoms are generated and prepared when missing; for
    real-data profiles (paper, la-real) the folder must have been prepared with ``versemi prepare``.
    """
    root = Path(data_dir) / profile
    prepared = root / "prepared"
    if (prepared / "manifest.json").is_file():
        return prepared
    if profile not in ("smoke", "demo"):
        raise VersemiError(f"{prepared}: no prepared data for profile {profile!r}; run `versemi prepare "
                           f"--src <your raw data> --out {prepared} --profile {profile}` first")
    from versemi.data.phantoms import generate
    from versemi.data.prepare import prepare

    generate(root / "raw", profile=profile, seed=seed)
    prepare(ALL_DATASETS, root / "raw", prepared, profile=profile, seed=seed)
    return prepared


# ---------------------------------------------------------------------------- experiment groups
# The runs behind the book's tables. Notebooks ask for a group; the run cache trains what is missing,
# so the SOTA, ablation, t-SNE and failure-case notebooks share runs.
TASK_SPECIFIC_METHODS = {"paper": ("sup_only", "mean_teacher", "uamt", "bcp")}
UNI_METHODS = ("sup_only", "mean_teacher", "uamt", "bcp")


def sota_configs(profile: str = "demo", ratio: int = 10, seed: int = 2333, **overrides) -> dict[str, RunConfig]:
    """label -> config for the SOTA comparison: task-specific baselines per dataset, their Uni- variants
    on all four datasets with the prompted network, VerSemi, and the fully supervised upper bound."""
    out: dict[str, RunConfig] = {}
    task_methods = TASK_SPECIFIC_METHODS.get(profile, ("sup_only", "uamt", "bcp"))
    for m in task_methods:
        for d in ALL_DATASETS:
            c = make_config(m, profile, datasets=(d,), ratio=ratio, seed=seed, **overrides)
            out[c.label()] = c
    for m in UNI_METHODS:
        c = make_config(m, profile, ratio=ratio, seed=seed, **overrides)
        out[c.label()] = c
    c = make_config("versemi", profile, ratio=ratio, seed=seed, **overrides)
    out[c.label()] = c
    for d in ALL_DATASETS:
        c = make_config("sup_only", profile, datasets=(d,), ratio=100, seed=seed, **overrides)
        out[c.label()] = c
    return out


ABLATIONS: dict[str, dict] = {
    "VerSemi (full)": {},
    "w/o L_aux": {"options": {"laux": False}},
    "w/o synthetic Task#5": {"options": {"syn": False}},
    "w/o unlabeled consistency": {"options": {"consistency": False}},
    "multi-head (no controller)": {"head": "multi"},
    "no prompt (single head)": {"head": "none"},
}


# Switches that restore a behaviour of the authors' released code where this companion departs from it
# (book/reproducibility.md, "Deviations from the authors' code"; the number is that table's row).
DEVIATIONS: dict[str, dict] = {
    "VerSemi (full)": {},
    "#1 released: stage 1 only": {"options": {"consistency": False}},
    "#2-3 released stage-2 loss": {"options": {"authors_stage2": True}},
    "#5 released: selection on test": {"selection": "test"},
    "#6 released: centre-cropped unlabeled": {"crop_unlabeled": "center"},
}


def ablation_configs(profile: str = "demo", ratio: int = 10, seed: int = 2333, variants: dict | None = None,
                     **overrides) -> dict[str, RunConfig]:
    """label -> config for the ablations of VerSemi (each switch off one at a time).

    ``variants``: label -> changes to the full model (default :data:`ABLATIONS`; :data:`DEVIATIONS` gives
    the runs that each restore one behaviour of the authors' released code)."""
    out = {}
    for label, change in (ABLATIONS if variants is None else variants).items():
        kw = {**overrides, **change}
        if "options" in change and "options" in overrides:
            kw["options"] = {**overrides["options"], **change["options"]}
        out[label] = make_config("versemi", profile, ratio=ratio, seed=seed, **kw)
    return out


def run_group(configs: dict[str, RunConfig], prepared_dir, runs_root="results/runs", device=None,
              progress: bool = True) -> dict[str, Path]:
    """Train/evaluate every config that the cache lacks; label -> complete run folder."""
    return {label: get_or_train(cfg, prepared_dir, runs_root, device=device, progress=progress)
            for label, cfg in configs.items()}


def collect_case_metrics(runs: dict[str, Path], split: str = "test") -> pd.DataFrame:
    """Long table of per-case metrics of several runs: method label, dataset, case, metrics, flags."""
    import pandas as pd

    frames = []
    for label, run_dir in runs.items():
        for csv in sorted(Path(run_dir).glob(f"eval/{split}_*.csv")):
            ds = csv.stem[len(split) + 1:]
            if ds not in DATASETS:
                continue  # another protocol's file, e.g. test_la_fast.csv
            df = pd.read_csv(csv)
            df.insert(0, "dataset", ds)
            df.insert(0, "method", label)
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_seconds(runs: dict[str, Path]) -> pd.DataFrame:
    """Training wall time per run (from DONE.json)."""
    import pandas as pd

    rows = []
    for label, run_dir in runs.items():
        done = json.loads((Path(run_dir) / "DONE.json").read_text())
        rows.append({"method": label, "train_seconds": done.get("train_seconds"), "run": Path(run_dir).name})
    return pd.DataFrame(rows)


def la_real_configs(profile: str = "la-real", seed: int = 2333, **overrides) -> dict[str, RunConfig]:
    """The Left Atrium experiments of the paper's line of work on the real LA subset (40 training cases:
    8 / 16 labeled as every paper of the line; the 20 standard test cases): Sup-only with 8 and 16
    labeled, UA-MT, BCP and VerSemi with 8 labeled, and the fully supervised model on all training cases
    outside the validation split. All single-task (LA only)."""
    la = ("la",)
    mk = lambda m, r: make_config(m, profile, datasets=la, ratio=r, seed=seed, **overrides)  # noqa: E731
    cfgs = [mk("sup_only", 100), mk("sup_only", 10), mk("versemi", 10), mk("sup_only", 20), mk("bcp", 10),
            mk("uamt", 10)]
    return {c.label().replace(" (la)", ""): c for c in cfgs}
