"""The fast evaluation protocols against the paper protocol, on one trained network and its real test cases.

    python -m bench.protocols --out results/bench [--la-dir ../shared/data/LA] [--run RUN --data DATA]
                              [--repeats 2] [--quick]

Issue 12's target 4: a protocol at least 10x faster than the paper protocol (eager, which equals the
authors' ``test_single_case``: ``bench/eval_speed.py`` checks that) on the same trained network and
configuration, with a mean Dice difference of at most 0.5 points over the test cases. The network is the
``la-real`` profile's Sup-only 10 % run (``make_config("sup_only", "la-real", datasets=("la",))``) trained on
the real Left Atrium cases of ``--la-dir`` (prepared into ``--data-dir`` by ``versemi prepare`` and trained
through the run cache the first time: about 10-25 min on one CPU thread; reused afterwards), evaluated on its
20 test cases with the run's own patch and stride; ``--run``/``--data`` take any trained run instead. Without
either (``--quick``, the tests) it is the smoke profile's LA phantom run, and the rows say so.

Contenders (``versemi.evaluate.inference.sliding_window_predict``): ``paper`` eager (the baseline) and
compiled, ``fast`` (MONAI, Gaussian, overlap 0.5 and 0.25) eager, and ``whole`` (one pass over the whole
zero-padded volume) eager: compiled, ``whole`` would compile once per volume shape (about a minute each on
this CPU), which no test set of varying shapes pays back. Every contender runs on every case in each of ``--repeats`` rounds,
interleaved case by case so that machine noise hits them alike; a case's time is its median over rounds
and a contender's time the sum over cases. A compiled contender's compilations (one per network and window
shape) happen in an untimed first round and are reported apart.

Writes ``<out>/protocols.csv``: one line per contender with ``seconds``, ``ratio`` (paper eager seconds /
contender seconds), ``compile_s``, ``dice`` (mean over cases, %), ``delta_dice`` (mean of contender minus paper
per case, points), ``max_abs_delta_dice``, ``label_fraction_differing`` (voxels whose label differs from the
paper protocol's, over all test voxels), ``windows`` (network evaluations of one patch or, for ``whole``, the
padded volume's size in patches), the run, and the machine.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.eval_speed import _n_windows as grid_windows
from versemi.config import data_note, make_config
from versemi.evaluate.inference import sliding_window_predict, whole_shape
from versemi.evaluate.metrics import case_metrics
from versemi.provenance import machine as machine_info
from versemi.utils import VersemiError, atomic_path


def contenders(patch, stride, batch_size: int) -> dict:
    """name -> (protocol, keyword arguments of ``sliding_window_predict``)."""
    return {
        "paper_eager": ("paper", dict(stride=stride, batch_size=batch_size)),
        "paper_compiled": ("paper", dict(stride=stride, batch_size=batch_size, compile=True)),
        "fast_eager_overlap0.5": ("fast", dict(overlap=0.5, batch_size=batch_size)),
        "fast_eager_overlap0.25": ("fast", dict(overlap=0.25, batch_size=batch_size)),
        "whole_eager": ("whole", {}),
    }


def n_windows(shape, patch, protocol: str, kw: dict) -> float:
    """Network evaluations of one patch a protocol spends on a volume (``whole``: its padded volume in patches)."""
    if protocol == "whole":
        return math.prod(whole_shape(shape, patch)) / math.prod(patch)
    if protocol == "paper":
        steps = kw["stride"]
    else:
        steps = [max(int(p * (1 - kw["overlap"])), 1) for p in patch]
    # MONAI's scan interval is patch * (1 - overlap) with the last window moved inside, as window_starts
    return float(grid_windows(shape, patch, steps))


def compare(net, cases: list[dict], patch, stride, batch_size: int = 4, repeats: int = 2,
            names=None) -> pd.DataFrame:
    """The contenders of :func:`contenders` (or only ``names``) on ``cases`` (dicts with ``image``,
    ``label``, ``task``): one line each (module docstring)."""
    table = contenders(tuple(patch), tuple(stride), int(batch_size))
    if names is not None:
        table = {k: v for k, v in table.items() if k in set(names) | {"paper_eager"}}
    if not cases:
        raise VersemiError("bench.protocols: no test cases to evaluate")

    def call(name, case):
        protocol, kw = table[name]
        t0 = time.perf_counter()
        label, _ = sliding_window_predict(net, np.asarray(case["image"], np.float32), int(case["task"]),
                                          tuple(patch), protocol=protocol, **kw)
        return time.perf_counter() - t0, label

    first = {k: [call(k, c)[0] for c in cases] for k in table}        # compilation round (untimed)
    times = {k: [[] for _ in cases] for k in table}
    labels = {k: [None] * len(cases) for k in table}
    for _ in range(max(1, int(repeats))):
        for i, c in enumerate(cases):
            for k in table:
                t, labels[k][i] = call(k, c)
                times[k][i].append(t)
    sec = {k: float(sum(np.median(ts) for ts in times[k])) for k in table}
    dice = {k: np.array([100 * case_metrics(lab, np.asarray(c["label"]))["dice"] for lab, c in zip(labels[k], cases)])
            for k in table}
    n_vox = sum(int(np.asarray(c["label"]).size) for c in cases)
    rows = []
    for k, (protocol, kw) in table.items():
        delta = dice[k] - dice["paper_eager"]
        differing = sum(int((a != b).sum()) for a, b in zip(labels[k], labels["paper_eager"]))
        rows.append(dict(what=k, protocol=protocol, compiled=bool(kw.get("compile", False)), seconds=sec[k],
                         ratio=sec["paper_eager"] / sec[k],
                         compile_s=max(sum(first[k]) - sec[k], 0.0) if kw.get("compile") else 0.0,
                         dice=float(dice[k].mean()), delta_dice=float(delta.mean()),
                         max_abs_delta_dice=float(np.abs(delta).max()),
                         label_fraction_differing=differing / n_vox,
                         windows=float(sum(n_windows(np.asarray(c["image"]).shape, patch, protocol, kw) for c in cases)),
                         n_cases=len(cases), repeats=int(repeats)))
    return pd.DataFrame(rows)


def trained_run(la_dir: str | None, data_dir: str, runs_root: str, quick: bool, device=None) -> tuple[Path, Path, str]:
    """(run folder, prepared data folder, what it is): the la-real Sup-only 10 % run on the real LA of
    ``la_dir`` (prepared and trained on first use), or the smoke profile's LA phantom run (``quick``)."""
    from versemi.data.ensure import ensure_data, prepared_dir
    from versemi.data.prepare import prepare
    from versemi.runs import get_or_train

    if la_dir:
        profile = "la-real"
        prepared = prepared_dir(data_dir, profile)
        if not (prepared / "manifest.json").is_file():
            prepare(["la"], la_dir, prepared, profile=profile)
        what = f"real LA ({la_dir}), la-real profile"
    elif quick:
        profile = "smoke"
        prepared = ensure_data(data_dir, profile)
        what = "LA phantoms, smoke profile (not the real-LA target of issue 12)"
    else:
        raise VersemiError("bench.protocols: give --la-dir (the real Left Atrium folder), --run/--data, or --quick")
    cfg = make_config("sup_only", profile, datasets=("la",), ratio=10)
    return Path(get_or_train(cfg, prepared, runs_root, device=device)), prepared, what


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--la-dir", default=None, help="the real Left Atrium folder (UA-MT layout)")
    ap.add_argument("--run", default=None, help="a trained run folder instead (with --data)")
    ap.add_argument("--data", default=None, help="the prepared data folder of --run")
    ap.add_argument("--data-dir", default="results/data", help="where --la-dir is prepared")
    ap.add_argument("--runs", default="results/runs", help="run cache for the trained run")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="the smoke profile's LA phantom run, one round")
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from versemi.runs import load_run_net
    from versemi.train import split_cases

    if args.run:
        if not args.data:
            raise SystemExit("--run needs --data (the prepared data folder of the run)")
        run_dir, prepared, what = Path(args.run), Path(args.data), None
    else:
        run_dir, prepared, what = trained_run(args.la_dir, args.data_dir, args.runs, args.quick, args.device)
    net, cfg = load_run_net(run_dir, device=args.device)
    if what is None:
        what = data_note(cfg.profile)
    frames = []
    for ds in cfg.datasets:
        sub = copy.copy(cfg)
        sub.datasets = (ds,)
        cases = split_cases(sub, prepared, "test")
        df = compare(net, cases, cfg.eval_patch, cfg.eval_stride, args.batch_size, 1 if args.quick else args.repeats)
        df.insert(1, "config", f"{what}: {cfg.row_name()} ({run_dir.name}, f={cfg.n_filters}), {len(cases)} {ds} "
                                f"test cases, patch={'x'.join(map(str, cfg.eval_patch))} "
                                f"stride={'/'.join(map(str, cfg.eval_stride))}")
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df["threads"] = torch.get_num_threads()
    for k, v in machine_info().items():
        df[k] = v
    path = Path(args.out) / "protocols.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df[["what", "seconds", "ratio", "compile_s", "dice", "delta_dice", "max_abs_delta_dice",
                  "label_fraction_differing", "windows"]].to_string(index=False))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
