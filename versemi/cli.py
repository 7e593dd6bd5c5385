"""Command line: ``versemi phantoms | prepare | train | evaluate | study | run | book``.

Pipeline stages as verbs (as nnU-Net): phantoms -> prepare -> train -> evaluate; ``run`` executes a
named group of notebooks through papermill, ``book`` executes all notebooks and builds the book; ``study``
trains an experiment group over several seeds and exports the results that are committed
(``versemi/studies.py``).
User errors (bad paths/values/files) print one line and exit with code 2; other failures exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from versemi.allocator import configure as configure_allocator
from versemi.companion.book import cli_book, cli_run
from versemi.companion.notebooks import groups
from versemi.config import RunConfig, make_config, profile_names
from versemi.data.ensure import prepared_dir
from versemi.data.external import EXTERNAL_SETS, prepare_external
from versemi.data.phantoms import generate
from versemi.data.prepare import prepare
from versemi.data.registry import ALL_DATASETS
from versemi.evaluate.inference import PROTOCOLS
from versemi.experiments import STUDY_GROUPS
from versemi.methods import method_names
from versemi.runs import evaluate_run, get_or_train
from versemi.studies import SEEDS, STUDIES_DIR, run_study, study_status
from versemi.utils import VersemiError, get_device

DATASETS = ALL_DATASETS


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=2333, help="random seed (default: 2333, the authors')")


def _add_no_wait(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-wait", action="store_true",
                   help="exit with code 2, naming the holder, when another process is writing the same output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="versemi", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantoms", help="write the embedded phantom datasets in the real raw formats")
    p.add_argument("--out", required=True, help="output folder for the raw phantom datasets")
    p.add_argument("--profile", default="demo", choices=profile_names("phantom"), help="case counts and volume sizes")
    p.add_argument("--dataset", default="all", choices=("all",) + DATASETS)
    _add_common(p)
    p.set_defaults(func=_cmd_phantoms)

    p = sub.add_parser("prepare", help="preprocess raw datasets into one HDF5 per case + a manifest")
    p.add_argument("--dataset", default="all", choices=("all",) + DATASETS)
    p.add_argument("--src", required=True, help="raw data root (phantoms or real datasets)")
    p.add_argument("--out", required=True, help="output folder for prepared cases and manifest.json")
    p.add_argument("--profile", default="demo", choices=profile_names(),
                   help="resampling, crop and minimum size (versemi/config.py)")
    p.add_argument("--verify", action="store_true", help="check the raw data first and report all problems")
    p.add_argument("--external", choices=tuple(EXTERNAL_SETS),
                   help="prepare an external test set (e.g. btcv: the unseen-site spleen) like the training data")
    p.add_argument("--training", help="with --external: the prepared training folder whose preparation it follows")
    _add_no_wait(p)
    _add_common(p)
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("train", help="train one run (cached by config hash; resumes an interrupted run)")
    p.add_argument("--method", default="versemi", help=" | ".join(method_names()))
    p.add_argument("--profile", default="demo", help=" | ".join(profile_names()) + " (default: demo)")
    p.add_argument("--datasets", default="all", help="comma-separated subset of pancreas,la,spleen,lung, or all")
    p.add_argument("--ratio", type=int, default=10, help="%% of training cases labeled: 10, 20 or 100")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (YAML value), e.g. --set steps=500 --set options.laux=false")
    p.add_argument("--config", help="a config YAML written by a previous run (overrides the flags above)")
    p.add_argument("--data", help="prepared data folder (default: results/data/<profile>/prepared)")
    p.add_argument("--runs", default="results/runs", help="run cache root (default: results/runs)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation at the end")
    _add_no_wait(p)
    _add_common(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a trained run on a split (per-case CSV + summary)")
    p.add_argument("run_dir", help="a run folder (results/runs/<method>-<hash>)")
    p.add_argument("--data", required=True, help="prepared data folder")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--protocol", default=None, choices=list(PROTOCOLS), help="default: the run's protocol")
    p.add_argument("--lcc", action="store_true", help="keep the largest connected component (off in VerSemi)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network once for all cases (about 2x faster per window on a CPU; same "
                        "windows, float32 rounding differences only)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="windows per forward pass (default: 1 with --compile on a CPU, else 8)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("study", help="train an experiment group over several seeds and export its results "
                                     "(results/studies/, committed; the book renders them)")
    p.add_argument("action", choices=["run", "status", "batch", "score-released"],
                   help="run: train what is missing and export each "
                   "run as it finishes; status: what is exported, and whether by the current code; batch: the same "
                   "as run for several studies with --workers single-thread processes, cheapest runs first "
                   "(versemi/batch.py); score-released (la-real only): score each committed run on the released "
                   "0.625 mm LA grid beside its export (versemi/companion/la_study.py)")
    p.add_argument("study", choices=list(STUDY_GROUPS), nargs="+")
    p.add_argument("--profile", default="demo", choices=profile_names())
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                   help=f"seeds (data draw, validation split and training; default {' '.join(map(str, SEEDS))})")
    p.add_argument("--only", action="append", default=None, metavar="LABEL", help="only this run label (repeatable)")
    p.add_argument("--out", default=STUDIES_DIR, help=f"export root (default {STUDIES_DIR})")
    p.add_argument("--data-dir", default="results/data", help="data root (phantoms are generated there)")
    p.add_argument("--runs", default="results/runs", help="run cache root (default: results/runs)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2, help="batch: worker processes (one torch thread each)")
    p.add_argument("--commit-to", default=None, metavar="REPO",
                   help="batch: git checkout to commit each export into (the --out folder must be inside it)")
    p.add_argument("--dry-run", action="store_true", help="batch: print the plan and its estimated cost only")
    p.add_argument("--la-data", default=None, metavar="DIR",
                   help="score-released: the Left Atrium folder (UA-MT layout) with the released volumes; batch "
                        "(la-real): score each run on the released grid right after its export")
    p.add_argument("--retrain", action="store_true",
                   help="score-released: train a committed run again (seeded, same config) when its run folder "
                        "is not in --runs, and record how far its x0.5 scores are from the committed ones")
    p.add_argument("--skip-missing", action="store_true",
                   help="score-released: leave a committed run whose folder is not in --runs unscored (its page "
                        "stays on the x0.5 grid) instead of stopping; --retrain wins")
    p.set_defaults(func=_cmd_study)

    p = sub.add_parser("book", help="execute every notebook with papermill, then build the Jupyter Book")
    p.add_argument("--profile", default="demo", choices=profile_names("notebooks"))
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="notebook parameter (YAML value), repeatable")
    p.add_argument("--only", action="append", default=None, metavar="NAME",
                   help="execute only this registered notebook (repeatable)")
    p.add_argument("--no-build", action="store_true", help="execute the notebooks, do not build the book")
    p.add_argument("--timeout", type=float, default=None, help="seconds per notebook cell (default: none)")
    p.add_argument("--kernel", default="python3")
    p.add_argument("--serial-runs", action="store_true",
                   help="let each notebook train its runs in turn instead of training them side by side first "
                        "(on a multi-core CPU with phantom data)")
    _add_no_wait(p)
    p.set_defaults(func=_cmd_book)

    p = sub.add_parser("run", help="re-execute a notebook group with other parameters (papermill)")
    p.add_argument("group", help=", ".join(groups()))
    p.add_argument("--profile", default="demo", choices=profile_names("notebooks"))
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--into-book", action="store_true",
                   help="write into book/executed instead of results/executed/<group>-<hash>/")
    p.add_argument("--out", default=None, help="output folder (default: results/executed/<group>-<hash>/)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per notebook cell (default: none)")
    p.add_argument("--kernel", default="python3")
    g = p.add_argument_group("cluster", "train the group's runs as submitit jobs before the notebooks run "
                                        "(versemi/cluster.py)")
    g.add_argument("--executor", choices=["local", "slurm"], default=None,
                   help="local: subprocesses of this machine; slurm: a SLURM job array (default: train inside the "
                        "notebooks, as without a cluster)")
    g.add_argument("--slurm-partition", default=None, help="SLURM partition (default: the cluster's)")
    g.add_argument("--gpus-per-run", type=int, default=None,
                   help="GPUs (tasks, data-parallel) per run; default 1 on SLURM, the local GPUs (0 or 1) locally")
    g.add_argument("--max-parallel", type=int, default=4, help="jobs running at once (default 4)")
    g.add_argument("--job-timeout", type=int, default=24 * 60, metavar="MIN",
                   help="wall-clock limit per job in minutes (default 1440); SLURM requeues a job that reaches "
                        "it and its runs resume from their checkpoints")
    g.add_argument("--mem-gb", type=int, default=None, help="memory per job (default: by profile)")
    _add_no_wait(p)
    p.set_defaults(func=_cmd_run)

    return parser


def _cmd_book(args) -> int:
    return cli_book(args)


def _cmd_run(args) -> int:
    return cli_run(args)


def parse_overrides(items: list[str]) -> dict:
    """["steps=5", "options.laux=false"] -> {"steps": 5, "options": {"laux": False}} (values as YAML)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise VersemiError(f"expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            val = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise VersemiError(f"cannot parse the value of {key}: {e}") from None
        target = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = val
    return out


def _cmd_phantoms(args) -> int:
    datasets = DATASETS if args.dataset == "all" else (args.dataset,)
    generate(args.out, profile=args.profile, seed=args.seed, datasets=datasets)
    return 0


def _cmd_prepare(args) -> int:
    if args.external:
        if not args.training:
            raise VersemiError(f"--external {args.external} needs --training <prepared training folder> (its spleen's "
                               "spacing, window and crop are followed)")
        print(prepare_external(args.external, args.src, args.out, args.training, verify=args.verify,
                               wait=not args.no_wait))
        return 0
    datasets = DATASETS if args.dataset == "all" else (args.dataset,)
    prepare(datasets, args.src, args.out, profile=args.profile, verify=args.verify, seed=args.seed,
            wait=not args.no_wait)
    return 0


def _cmd_train(args) -> int:
    get_device(args.device)  # a forced --device cuda without a GPU fails before anything else
    if args.config:
        cfg = RunConfig.from_yaml(args.config)
    else:
        datasets = DATASETS if args.datasets == "all" else tuple(d.strip() for d in args.datasets.split(","))
        overrides = parse_overrides(args.overrides)
        cfg = make_config(args.method, args.profile, datasets=datasets, ratio=args.ratio, seed=args.seed,
                          **overrides)
    data = args.data or prepared_dir("results/data", cfg.profile)
    run_dir = get_or_train(cfg, data, args.runs, device=args.device, evaluate=not args.no_eval, wait=not args.no_wait)
    print(run_dir)
    return 0


def _cmd_study(args) -> int:
    if args.action == "batch":
        from versemi.batch import plan, run_batch

        if args.dry_run:
            items = plan(args.study, args.profile, args.seeds, args.out, args.data_dir, labels=args.only)
            for it in items:
                also = "".join(f" + {st}" for st, _ in it.also)
                print(f"{it.cost_s / 60:7.1f} min  seed {it.seed:<5} {it.label}  [{it.study}{also}]")
            print(f"{len(items)} runs, {sum(it.cost_s for it in items) / 3600:.1f} CPU-hours of training steps "
                  f"(estimated from results/bench/method_costs.csv)")
            return 0
        return 1 if run_batch(args.study, args.profile, args.seeds, args.workers, args.out, args.data_dir, args.runs,
                              commit_to=args.commit_to, device=args.device, labels=args.only,
                              la_data=args.la_data) else 0
    if args.action == "score-released":
        from versemi.companion.la_study import STUDY, score_released
        from versemi.hybrid import ensure_la_real

        if args.study != [STUDY] or not args.la_data:
            raise VersemiError(f"score-released scores the {STUDY} study only: versemi study score-released {STUDY} "
                               "--profile la-real --la-data DIR")
        get_device(args.device)
        prepared = ensure_la_real(args.data_dir, args.la_data, profile=args.profile)
        for path in score_released(args.la_data, prepared, args.runs, args.out, args.profile, retrain=args.retrain,
                                   device=args.device, labels=args.only,
                                   skip_missing=args.skip_missing):
            print(path, flush=True)
        return 0
    for study in args.study:
        if args.action == "status":
            print(study_status(study, args.profile, args.seeds, args.out).to_string(index=False))
            continue
        get_device(args.device)
        run_study(study, args.profile, args.seeds, args.out, args.data_dir, args.runs, labels=args.only,
                  device=args.device, on_export=lambda p: print(p, flush=True))
    return 0


def _cmd_evaluate(args) -> int:
    summary = evaluate_run(args.run_dir, args.data, split=args.split, device=args.device, lcc=args.lcc,
                           protocol=args.protocol, compile=args.compile, batch_size=args.batch_size)
    print(json.dumps(summary, indent=1, default=float))
    return 0


def main(argv: list[str] | None = None) -> int:
    configure_allocator()   # keep freed memory between steps (versemi/allocator.py; VERSEMI_ALLOCATOR=system: off)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VersemiError as e:
        print(f"versemi {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # unwritable/missing paths, disk full: the user's environment, not a bug
        where = f"{e.filename}: " if e.filename else ""
        print(f"versemi {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"versemi {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
