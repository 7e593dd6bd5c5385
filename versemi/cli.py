"""Command line: ``versemi phantoms | prepare | train | evaluate | run | book``.

Pipeline stages as verbs (as nnU-Net): phantoms -> prepare -> train -> evaluate; ``run`` executes a
named group of notebooks through papermill, ``book`` executes all notebooks and builds the book.
User errors (bad paths/values/files) print one line and exit with code 2; other failures exit 1.
"""

from __future__ import annotations

import argparse
import sys

from versemi.utils import VersemiError

DATASETS = ("pancreas", "la", "spleen", "lung")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=2333, help="random seed (default: 2333, the authors')")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="versemi", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantoms", help="write the embedded phantom datasets in the real raw formats")
    p.add_argument("--out", required=True, help="output folder for the raw phantom datasets")
    p.add_argument("--profile", default="demo", choices=["smoke", "demo"], help="case counts and volume sizes")
    p.add_argument("--dataset", default="all", choices=("all",) + DATASETS)
    _add_common(p)
    p.set_defaults(func=_cmd_phantoms)

    p = sub.add_parser("prepare", help="preprocess raw datasets into one HDF5 per case + a manifest")
    p.add_argument("--dataset", default="all", choices=("all",) + DATASETS)
    p.add_argument("--src", required=True, help="raw data root (phantoms or real datasets)")
    p.add_argument("--out", required=True, help="output folder for prepared cases and manifest.json")
    p.add_argument("--profile", default="demo", choices=["smoke", "demo", "paper", "la-real"])
    p.add_argument("--verify", action="store_true", help="check the raw data first and report all problems")
    _add_common(p)
    p.set_defaults(func=_cmd_prepare)

    return parser


def _cmd_phantoms(args) -> int:
    from versemi.data.phantoms import generate

    datasets = DATASETS if args.dataset == "all" else (args.dataset,)
    generate(args.out, profile=args.profile, seed=args.seed, datasets=datasets)
    return 0


def _cmd_prepare(args) -> int:
    from versemi.data.prepare import prepare

    datasets = DATASETS if args.dataset == "all" else (args.dataset,)
    prepare(datasets, args.src, args.out, profile=args.profile, verify=args.verify, seed=args.seed)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VersemiError as e:
        print(f"versemi {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"versemi {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
