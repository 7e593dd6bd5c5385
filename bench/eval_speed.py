"""Speed and agreement of the evaluation protocols against the authors' routine (not a test).

Every row segments the same volumes with the same network weights and the same windows:

* ``authors_test_single_case``: the authors' own ``test_single_case`` (``test_util.py`` of
  maxwell0027/VerSemi, read from ``--authors-repo`` at run time and never copied here) driving their own
  ``VNet`` (``vnet_odod_mix.py``) loaded with this network's weights. Their function moves each window to
  the GPU with ``.cuda()``; on a machine without CUDA that call is made a no-op for the duration, so
  their code runs unchanged on the CPU;
* ``reference_unbatched_numpy``: an independent one-window-at-a-time routine in the same style (numpy
  accumulation on the host), the baseline when the authors' repository is not available;
* ``paper_eager``: :func:`versemi.evaluate.sliding_window_predict`, ``protocol="paper"`` (batched
  windows, on-device accumulation, eager PyTorch);
* ``paper_compiled``: the same with ``compile=True`` (``torch.compile``, weights frozen): the steady
  state, and the same plus the one-off compilation (``compilation_once``: the first compiled call minus
  that volume's steady time);
* ``paper_compiled_steady_batch1``: the compiled network fed one window per call (when ``--batch-size``
  is not 1): on a CPU, batching windows gains nothing at the paper width and costs cache locality;
* ``fast_eager``: ``protocol="fast"`` (MONAI, Gaussian blending, overlap 0.5: fewer windows);
* ``metrics``: :func:`versemi.evaluate.case_metrics` against medpy's ``dc``/``jc``/``hd95``/``asd``.

The contenders run interleaved, volume by volume, for ``--repeats`` rounds; a row's seconds are the sum
over volumes of the per-volume median, so that noise from a shared machine hits every contender alike.

Agreement rows give, against the baseline, the largest absolute difference of the averaged softmax and
the number of voxels whose label differs, summed over the volumes. With ``--run`` the agreement is also
measured for a trained run on its prepared test cases (its own patch and stride), which is what
"identical output" means in practice: a random network sits near p = 0.5 everywhere.

Usage::

    .venv/bin/python -m bench.eval_speed --out results/bench --authors-repo PATH \\
        --la-dir ../shared/data/LA --n-volumes 3 [--run results/runs/versemi-... --data results/data/la-real/prepared]
    .venv/bin/python -m bench.eval_speed --out results/bench --quick     # synthetic, small, no authors' code

Writes ``<out>/eval_speed.csv`` atomically (columns: what, config, seconds, ratio, value, n_windows,
n_volumes, n_voxels (of the agreement rows), threads, baseline, platform, python, torch, cpus, cuda)
and prints it. ``ratio`` is baseline seconds / row seconds (> 1: faster than the baseline); for
metrics, medpy seconds / ours.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

from bench.train_speed import authors_source, load_authors_vnet
from versemi.evaluate import case_metrics, sliding_window_predict, window_starts
from versemi.model import VerSemiNet
from versemi.provenance import machine as machine_info
from versemi.utils import atomic_path, get_device


# ----------------------------------------------------------------------------------------- the authors'
def load_authors_test_single_case(repo: str):
    """The authors' ``test_single_case`` function, compiled from their ``test_util.py``.

    Only that function is taken (the module's other imports, such as their dataset classes and
    torchvision, are not needed by it); it runs in a namespace with the modules it uses."""
    src = authors_source(repo, "test_util.py")
    tree = ast.parse(src)
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "test_single_case"), None)
    if fn is None:
        raise SystemExit(f"{repo}: test_util.py has no test_single_case")
    namespace = {"math": math, "np": np, "torch": torch, "F": F}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), f"{repo}/test_util.py", "exec"), namespace)
    return namespace["test_single_case"]


@contextlib.contextmanager
def cuda_call_is_noop(device: torch.device):
    """On a CPU run, ``tensor.cuda()`` returns the tensor itself (the authors' routine calls it)."""
    if device.type == "cuda":
        yield
        return
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


def authors_predict(fn, vnet, image, task, patch, stride, device):
    if stride[0] != stride[1]:
        raise SystemExit(f"the authors' routine has one stride for x and y; got {stride}")
    with cuda_call_is_noop(device), torch.no_grad():  # their train.py wraps the call in @torch.no_grad()
        label, score = fn(vnet, None, image, task, stride[0], stride[2], patch, num_classes=2)
    return label.astype(np.uint8), score


# --------------------------------------------------------------------------------- independent baseline
def unbatched_reference(net, image: np.ndarray, task_id: int, patch, stride, device):
    """Per-window loop with host-side numpy accumulation, written independently in the authors' style."""
    orig = image.shape
    pad = [(max(p - s, 0) // 2, max(p - s, 0) - max(p - s, 0) // 2) for s, p in zip(orig, patch)]
    vol = np.pad(image, pad) if any(a or b for a, b in pad) else image
    total = np.zeros((2,) + vol.shape, dtype=np.float32)
    hits = np.zeros(vol.shape, dtype=np.float32)
    prompt = torch.tensor([task_id])
    net.eval()
    with torch.no_grad():
        for a in window_starts(vol.shape[0], patch[0], stride[0]):
            for b in window_starts(vol.shape[1], patch[1], stride[1]):
                for c in window_starts(vol.shape[2], patch[2], stride[2]):
                    box = (slice(a, a + patch[0]), slice(b, b + patch[1]), slice(c, c + patch[2]))
                    chunk = torch.from_numpy(np.ascontiguousarray(vol[box])).float()[None, None].to(device)
                    soft = F.softmax(net(chunk, prompt.to(device)), dim=1).cpu().numpy()[0]
                    total[(slice(None),) + box] += soft
                    hits[box] += 1
    mean = total / hits[None]
    keep = tuple(slice(lo, lo + n) for (lo, _), n in zip(pad, orig))
    return np.argmax(mean, axis=0)[keep].astype(np.uint8), mean[(slice(None),) + keep]


# ------------------------------------------------------------------------------------------------ helpers
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, volume, device):
    """(seconds, result) of one call."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn(volume)
    _sync(device)
    return time.perf_counter() - t0, out


def _n_windows(shape, patch, stride) -> int:
    padded = [max(s, p) for s, p in zip(shape, patch)]
    return math.prod(len(window_starts(d, p, s)) for d, p, s in zip(padded, patch, stride))


def _agreement(ref, other) -> tuple[float, int, int]:
    """(max |prob diff|, differing labels, voxels) summed over volumes."""
    diff = max(float(np.abs(np.asarray(r[1], np.float32) - o[1]).max()) for r, o in zip(ref, other))
    n_diff = sum(int((r[0] != o[0]).sum()) for r, o in zip(ref, other))
    return diff, n_diff, sum(r[0].size for r in ref)


def _la_volumes(la_dir: str, n: int) -> list[np.ndarray]:
    import h5py

    root = Path(la_dir)
    names = [ln.strip() for ln in (root / "test.list").read_text().splitlines() if ln.strip()]
    out = []
    for name in names[:n]:
        hits = list(root.glob(f"*/{name}/mri_norm2.h5"))
        if not hits:
            raise SystemExit(f"{root}: no */{name}/mri_norm2.h5 for a case of test.list")
        with h5py.File(hits[0], "r") as f:
            out.append(np.asarray(f["image"][:], dtype=np.float32))
    return out


def _synthetic_volumes(shape, n: int, rng) -> list[np.ndarray]:
    return [(ndimage.gaussian_filter(rng.normal(size=shape), 3.0) * 8).astype(np.float32) for _ in range(n)]


def _synthetic_pair(shape, rng):
    grid = np.indices(shape).astype(np.float32)
    centre = np.array(shape, np.float32) / 2
    radii = np.array(shape, np.float32) / 4
    gt = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1
    noise = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    pred = (sum(((g - c - 2) / (r * 1.1)) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1) ^ (noise > 0.12)
    return pred, gt


class _PairOutput(torch.nn.Module):
    """``net(x, t)`` -> ``(logits, None)``: the call signature the authors' routine expects."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t):
        return self.net(x, t), None


def _authors_twin(vnet_cls, net: VerSemiNet, device):
    """(network for the authors' routine, its description). At the paper width (f = 16) the authors' VNet
    holding ``net``'s weights (same keys and shapes, equal logits: tests/test_authors_twin.py); their class
    hard-codes the head's widths for f = 16, so at other widths ``net`` itself answers their call."""
    if net.n_filters != 16 or net.head_kind != "dynamic":
        return _PairOutput(net).eval(), "their routine driving this VerSemiNet (their VNet is f=16 only)"
    twin = vnet_cls(n_filters=16, n_classes=2, n_branches=1).to(device)
    twin.load_state_dict(net.state_dict(), strict=True)
    return twin.eval(), "their routine driving their VNet with the same weights"


def trained_agreement(run_dir: str, data_dir: str, fn, vnet_cls, device, batch_size: int) -> list[dict]:
    """Authors' routine and network vs the compiled paper protocol on a trained run's test cases."""
    import copy

    from versemi.runs import load_run_net
    from versemi.train import split_cases

    net, cfg = load_run_net(run_dir, device=device)
    net.eval()
    rows = []
    for ds in cfg.datasets:
        sub = copy.copy(cfg)
        sub.datasets = (ds,)
        cases = split_cases(sub, data_dir, "test")
        patch, stride = tuple(cfg.eval_patch), tuple(cfg.eval_stride)
        twin = _authors_twin(vnet_cls, net, device)[0] if fn is not None else None
        ref, comp, eag = [], [], []
        for c in cases:
            img, task = np.asarray(c["image"], np.float32), int(c["task"])
            ref.append(authors_predict(fn, twin, img, task, patch, stride, device) if fn is not None
                       else unbatched_reference(net, img, task, patch, stride, device))
            eag.append(sliding_window_predict(net, img, task, patch, stride, "paper", batch_size))
            comp.append(sliding_window_predict(net, img, task, patch, stride, "paper", batch_size, compile=True))
        cfg_s = (f"trained run {Path(run_dir).name} ({cfg.profile}, f={cfg.n_filters}), {ds} test cases, "
                 f"patch={'x'.join(map(str, patch))} stride={'/'.join(map(str, stride))}")
        for what, other in (("paper_eager", eag), ("paper_compiled", comp)):
            d, n, tot = _agreement(ref, other)
            rows.append(dict(what=f"trained_{what}_vs_baseline_max_abs_prob_diff", config=cfg_s, value=d,
                             n_volumes=len(cases)))
            rows.append(dict(what=f"trained_{what}_vs_baseline_label_voxels_differing", config=cfg_s, value=n,
                             n_volumes=len(cases), n_voxels=tot))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/bench", help="output folder (eval_speed.csv)")
    ap.add_argument("--authors-repo", default=os.environ.get("VERSEMI_AUTHORS_REPO"),
                    help="checkout or bare mirror of maxwell0027/VerSemi (default $VERSEMI_AUTHORS_REPO)")
    ap.add_argument("--la-dir", default=None, help="real LA root (test.list + */<case>/mri_norm2.h5): time on its "
                                                   "first --n-volumes test cases instead of synthetic volumes")
    ap.add_argument("--n-volumes", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="synthetic 80x80x64 volumes, patch 64, f=8")
    ap.add_argument("--shape", type=int, nargs=3, help="synthetic volume shape (default 112 112 88)")
    ap.add_argument("--patch", type=int, nargs=3, help="patch (default 96 96 96, quick 64 64 64)")
    ap.add_argument("--stride", type=int, nargs=3, default=(16, 16, 4))
    ap.add_argument("--filters", type=int, help="network width (default 16, quick 8)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--overlap", type=float, default=0.5, help="fast protocol overlap")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2, help="rounds over the volumes (median per volume)")
    ap.add_argument("--run", default=None, help="a trained run folder: agreement on its test cases")
    ap.add_argument("--data", default=None, help="prepared data folder of --run")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    f = args.filters or (8 if args.quick else 16)
    patch = tuple(args.patch or ((64, 64, 64) if args.quick else (96, 96, 96)))
    stride = tuple(args.stride)
    if args.la_dir:
        volumes = _la_volumes(args.la_dir, args.n_volumes)
        source = f"real LA test cases (first {len(volumes)} of test.list)"
    else:
        shape = tuple(args.shape or ((80, 80, 64) if args.quick else (112, 112, 88)))
        volumes = _synthetic_volumes(shape, args.n_volumes, rng)
        source = f"synthetic {'x'.join(map(str, shape))}"
    shapes = ", ".join("x".join(map(str, v.shape)) for v in volumes)
    n_win = sum(_n_windows(v.shape, patch, stride) for v in volumes)
    cfg = (f"f={f} {source} [{shapes}] patch={'x'.join(map(str, patch))} "
           f"stride={'/'.join(map(str, stride))} bs={args.batch_size}")
    net = VerSemiNet(n_filters=f).to(device).eval()
    task = 2

    fn = vnet_cls = None
    if args.authors_repo:
        fn = load_authors_test_single_case(args.authors_repo)
        vnet_cls = load_authors_vnet(args.authors_repo)
        baseline_name = "authors_test_single_case"
        twin, how = _authors_twin(vnet_cls, net, device)
        cfg += f"; baseline: {how}"
        baseline = lambda v: authors_predict(fn, twin, v, task, patch, stride, device)  # noqa: E731
    else:
        baseline_name = "reference_unbatched_numpy"
        baseline = lambda v: unbatched_reference(net, v, task, patch, stride, device)  # noqa: E731

    # warm-up: imports, allocator, oneDNN/cuDNN plans (so that no eager row pays first-call set-up)
    import monai.inferers  # noqa: F401
    from medpy.metric import binary as mb

    with torch.inference_mode():
        net(torch.zeros((1, 1) + patch, device=device), task)

    contenders = {
        "baseline": baseline,
        "eager": lambda v: sliding_window_predict(net, v, task, patch, stride, "paper", args.batch_size),
        "compiled": lambda v: sliding_window_predict(net, v, task, patch, stride, "paper", args.batch_size,
                                                     compile=True),
        "fast": lambda v: sliding_window_predict(net, v, task, patch, stride, "fast", args.batch_size,
                                                 overlap=args.overlap),
    }
    if args.batch_size != 1:  # on a CPU one window per call is often the fastest for the compiled network
        contenders["compiled_bs1"] = lambda v: sliding_window_predict(net, v, task, patch, stride, "paper", 1,
                                                                      compile=True)
    # the one-off compilation: the first compiled call, minus that volume's steady time (below)
    t_first, _ = _timed(contenders["compiled"], volumes[0], device)
    if "compiled_bs1" in contenders:
        _timed(contenders["compiled_bs1"], volumes[0], device)  # its own (second) compilation, not timed
    # rounds over the volumes, the contenders interleaved so that machine noise hits them alike;
    # per volume the median over rounds, summed over volumes
    times = {k: [[] for _ in volumes] for k in contenders}
    outs = {k: [None] * len(volumes) for k in contenders}
    for _ in range(max(1, args.repeats)):
        for i, v in enumerate(volumes):
            for k, contender in contenders.items():
                t, outs[k][i] = _timed(contender, v, device)
                times[k][i].append(t)
    sec = {k: float(sum(np.median(ts) for ts in times[k])) for k in contenders}
    compile_s = max(t_first - float(np.median(times["compiled"][0])), 0.0)
    t_base, t_eager, t_comp2, t_fast = sec["baseline"], sec["eager"], sec["compiled"], sec["fast"]
    t_comp1 = t_comp2 + compile_s
    out_base, out_eager, out_comp, out_fast = outs["baseline"], outs["eager"], outs["compiled"], outs["fast"]
    n_fast = sum(_n_windows(v.shape, patch, [max(int(p * (1 - args.overlap)), 1) for p in patch]) for v in volumes)

    pred, gt = _synthetic_pair(volumes[0].shape, rng)
    t0 = time.perf_counter()
    ref_m = (mb.dc(pred, gt), mb.jc(pred, gt), mb.hd95(pred, gt), mb.asd(pred, gt))
    t_medpy = time.perf_counter() - t0
    t0 = time.perf_counter()
    our_m = case_metrics(pred, gt)
    t_ours = time.perf_counter() - t0
    metric_err = max(abs(a - our_m[k]) for a, k in zip(ref_m, ("dice", "jaccard", "hd95", "asd")))

    nv = len(volumes)
    rows = [
        dict(what=baseline_name, seconds=t_base, ratio=1.0, n_windows=n_win),
        dict(what="paper_eager", seconds=t_eager, ratio=t_base / t_eager, n_windows=n_win),
        dict(what="paper_compiled_incl_compilation", seconds=t_comp1, ratio=t_base / t_comp1, n_windows=n_win),
        dict(what="compilation_once", seconds=compile_s, n_windows=n_win),
        dict(what="paper_compiled_steady", seconds=t_comp2, ratio=t_base / t_comp2, n_windows=n_win),
        *([dict(what="paper_compiled_steady_batch1", seconds=sec["compiled_bs1"],
                ratio=t_base / sec["compiled_bs1"], n_windows=n_win)] if "compiled_bs1" in sec else []),
        dict(what=f"fast_eager_overlap{args.overlap:g}", seconds=t_fast, ratio=t_base / t_fast, n_windows=n_fast),
    ]
    pairs = [("paper_eager", out_eager), ("paper_compiled", out_comp)]
    if "compiled_bs1" in outs:
        pairs.append(("paper_compiled_batch1", outs["compiled_bs1"]))
    for what, other in pairs:
        d, n, tot = _agreement(out_base, other)
        rows.append(dict(what=f"{what}_vs_baseline_max_abs_prob_diff", value=d, n_windows=n_win))
        rows.append(dict(what=f"{what}_vs_baseline_label_voxels_differing", value=n, n_windows=n_win, n_voxels=tot))
    _, n_fast_diff, n_vox = _agreement(out_eager, out_fast)
    rows.append(dict(what="fast_vs_paper_label_fraction_differing", value=n_fast_diff / n_vox, n_windows=n_fast))
    rows = [{"config": cfg, "n_volumes": nv, **r} for r in rows]
    mcfg = f"vol={'x'.join(map(str, volumes[0].shape))} synthetic pair"
    rows += [dict(what="metrics_medpy_dc_jc_hd95_asd", config=mcfg, seconds=t_medpy, ratio=1.0, n_volumes=1),
             dict(what="metrics_case_metrics", config=mcfg, seconds=t_ours, ratio=t_medpy / t_ours,
                  value=metric_err, n_volumes=1)]
    if args.run:
        if not args.data:
            raise SystemExit("--run needs --data (the prepared data folder of the run)")
        rows += trained_agreement(args.run, args.data, fn, vnet_cls, device, args.batch_size)

    import pandas as pd

    info = machine_info()
    df = pd.DataFrame(rows, columns=["what", "config", "seconds", "ratio", "value", "n_windows", "n_volumes",
                                     "n_voxels"])
    df["threads"] = torch.get_num_threads()
    df["baseline"] = baseline_name
    for k, v in info.items():
        df[k] = v
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "eval_speed.csv")
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    with pd.option_context("display.width", 220, "display.max_columns", 20, "display.max_colwidth", 70):
        print(df[["what", "seconds", "ratio", "value", "n_windows", "n_volumes", "n_voxels"]].to_string(index=False))
    print(f"config: {cfg}; {info}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
