"""``make bench``: every benchmark, results in ``results/bench/*.csv`` with machine info.

    python -m bench.run --out results/bench [--quick] [--authors-repo PATH] [--la-dir PATH]

``--authors-repo`` points at a checkout (or bare mirror) of maxwell0027/VerSemi; it is read at run
time for the side-by-side timing and never copied into this repository.
"""

from __future__ import annotations

import argparse
import sys

from bench import (
    allocator,
    eval_speed,
    flops,
    head_costs,
    memory,
    method_costs,
    method_resources,
    protocols,
    run_speed,
    train_speed,
)
from versemi.allocator import configure as configure_allocator


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--authors-repo", default=None)
    ap.add_argument("--la-dir", default=None, help="real LA root for the evaluation timing (else synthetic)")
    args = ap.parse_args(argv)
    configure_allocator()   # as every entry point (versemi/allocator.py); both sides of each ratio share it
    extra = ["--quick"] if args.quick else []
    rc = train_speed.main(["--out", args.out, *extra]
                          + (["--authors-repo", args.authors_repo] if args.authors_repo else []))
    # whole demo runs of this checkout against the commit before the speed work (~70 min on one core:
    # VerSemi and Sup-only, 3 repeats per side)
    rc |= run_speed.main(["--out", args.out, *extra]) or 0
    rc |= eval_speed.main(["--out", args.out, *extra]
                          + (["--authors-repo", args.authors_repo] if args.authors_repo else [])
                          + (["--la-dir", args.la_dir] if args.la_dir else [])) or 0
    # the fast protocols against the paper protocol on a trained real-LA run (trained on first use: ~25 min)
    if args.la_dir or args.quick:
        rc |= protocols.main(["--out", args.out, *(["--la-dir", args.la_dir] if args.la_dir else ["--quick"])]) or 0
    else:
        print("bench.protocols skipped: it needs --la-dir (the real LA folder) for its trained run", file=sys.stderr)
    # both stages' peak memory and time at the paper's batch, each side in its own process (~15 min on 2 cores)
    rc |= memory.main(["--out", args.out, *extra] + (["--authors-repo", args.authors_repo] if args.authors_repo else [])) or 0
    rc |= head_costs.main(["--out", args.out, *extra]) or 0
    rc |= method_costs.main(["--out", args.out, *extra]) or 0
    rc |= allocator.main(["--out", args.out, *extra]) or 0
    rc |= flops.main(["--out", args.out, *extra]) or 0
    # the paper profile's memory and step of every method (about 10 min on 2 cores; --quick: the smoke profile)
    rc |= method_resources.main(["--out", args.out, "--profile", "smoke" if args.quick else "paper"]) or 0
    return rc


if __name__ == "__main__":
    sys.exit(main())
