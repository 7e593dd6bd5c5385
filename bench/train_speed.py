"""Training-step time of VerSemi (stage 1 and stage 2): this package vs the authors' call pattern.

The authors' released training runs the whole network once per prompt: stage 1 calls it 4 times per
step (x; x_mix with prompt 5, task_b, task_a), stage 2 7 times. This package runs the backbone once
per distinct input and only the prompted head per prompt (2 and 3 backbone passes). The reference side
uses the authors' own network class when ``--authors-repo`` points at a checkout (or bare git mirror)
of maxwell0027/VerSemi (read at run time, never copied into this repository); without it, it uses this
package's network called the authors' way (same arithmetic, same parameter count).

    python -m bench.train_speed --out results/bench [--quick] [--authors-repo PATH] [--configs 16,96,2 ...]

Writes ``<out>/train_speed.csv`` with seconds per step, the ratio and machine info, and the ratio split into
its two factors: ``flop_ratio`` (the reference's FLOPs per step over ours, counted by
``torch.utils.flop_counter``: convolutions and matrix products, forward and backward) and ``efficiency_ratio``
(``speedup / flop_ratio``: how much faster per FLOP our step runs than the reference's). Both sides compute
the released step (stage 2: ``P_agg`` not detached, the broadcast labeled-region term; ours with
``options.authors_stage2``), and each row carries ``loss_abs_diff`` / ``grad_rel_diff``: the two steps' loss
and gradients on the same weights and inputs (:func:`step_equivalence`), so that the speed is never bought by
computing something else.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.flops import count_flops
from versemi.losses import dice_loss, foreground_prob, supervised_loss
from versemi.methods import StepContext, get_method
from versemi.mixing import box_mask, laux_targets, mix
from versemi.model import VerSemiNet
from versemi.provenance import machine as machine_info
from versemi.utils import atomic_path


def authors_source(repo: str, name: str) -> str:
    """The text of ``name`` in the authors' repository: a checkout, or the HEAD of a bare git mirror."""
    p = Path(repo) / name
    if p.is_file():
        return p.read_text()
    return subprocess.check_output(["git", "-C", str(repo), "show", f"HEAD:{name}"], text=True)


def load_authors_vnet(repo: str):
    """The authors' VNet class from a checkout or a bare mirror of their repository."""
    src = Path(tempfile.mkdtemp()) / "vnet_odod_mix.py"
    src.write_text(authors_source(repo, "vnet_odod_mix.py"))
    spec = importlib.util.spec_from_file_location("authors_vnet", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.VNet


class AuthorsCall(torch.nn.Module):
    """Wrap a network so that ``net(x, t)`` returns the segmentation logits (the authors' returns a pair)."""

    def __init__(self, net, authors: bool):
        super().__init__()
        self.net, self.authors = net, authors

    def forward(self, x, t):
        t = torch.as_tensor(t).reshape(-1)
        if t.numel() == 1:
            t = t.expand(x.shape[0])
        out = self.net(x, t.float() if self.authors else t)
        return out[0] if self.authors else out


def authors_stage1_step(net, x, y, t, rng, ratio=2 / 3):
    """The released pretrain step: one full forward per prompt (4 per step)."""
    h = x.shape[0] // 2
    out = net(x, t)
    m = box_mask(h, tuple(x.shape[2:]), ratio, rng)
    x_mix, y_mix = mix(x[:h], x[h:], m), mix(y[:h].float(), y[h:].float(), m)
    o5 = net(x_mix, 5)
    ob = net(x_mix, t[h:])
    oa = net(x_mix, t[:h])
    ta, tb = laux_targets(y[:h].float(), y[h:].float(), m, t[:h], t[h:])
    return (supervised_loss(out, y) + dice_loss(foreground_prob(o5), y_mix)
            + 0.5 * (dice_loss(foreground_prob(ob), tb) + dice_loss(foreground_prob(oa), ta)))


def authors_stage2_step(net, x, y, t, xu, rng):
    """The released stage-2 step: 7 full forwards (x; sup mix prompt 5; unlabeled mix prompts 5, 1..4)."""
    h = x.shape[0] // 2
    out = net(x, t)
    m = box_mask(h, tuple(x.shape[2:]), float(rng.uniform(0.3, 0.6)), rng)
    o_sup5 = net(mix(x[:h], x[h:], m), 5)
    mu = box_mask(x.shape[0], tuple(x.shape[2:]), float(rng.uniform(0.3, 0.6)), rng)
    xm = mix(xu, x, mu)
    p5 = foreground_prob(net(xm, 5))
    agg = torch.stack([foreground_prob(net(xm, k)) for k in (1, 2, 3, 4)]).amax(0)
    cube = 1 - mu   # the released labeled-region term: (B,1,...) x (B,...) broadcasts to a B x B product
    return (supervised_loss(out, y) + dice_loss(foreground_prob(o_sup5), mix(y[:h].float(), y[h:].float(), m))
            + dice_loss(p5, agg) + dice_loss(cube[:, None] * p5[None], cube[:, None] * y.float()[None]))


def step_inputs(batch: int, patch: int, seed: int, device=None) -> dict:
    """A random labeled and unlabeled batch of ``batch`` cubes of side ``patch`` (every foreground voxel drawn
    with probability 0.2; prompts 1-4 in turn) for timing and comparing training steps:
    ``{"lab": {...}, "unlab": {...}}`` in the trainer's batch format."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, patch, patch, patch, generator=g).to(device)
    y = (torch.rand(batch, patch, patch, patch, generator=g) > 0.8).long().to(device)
    xu = torch.randn(batch, 1, patch, patch, patch, generator=g).to(device)
    t = torch.tensor([1, 2, 3, 4] * (batch // 4) + [1] * (batch % 4)).to(device)
    return {"lab": {"image": x, "label": y, "task": t}, "unlab": {"image": xu, "label": y, "task": t}}


def step_equivalence(f: int, patch: int, batch: int, device) -> dict[str, tuple[float, float]]:
    """Per stage: (largest |loss difference|, largest gradient difference over all parameters relative to the
    largest gradient entry; conv biases before a BatchNorm have gradients of float noise only, so a
    per-parameter relative measure would compare noise with noise) between this package's training step (``VerSemi.train_step`` with the released
    stage-2 variant, back-propagated pass by pass) and the released call pattern (:func:`authors_stage1_step`,
    :func:`authors_stage2_step`: one full forward per prompt, one backward) on the same network weights,
    inputs and random draws. SGD with learning rate 0 keeps the weights, so the gradients can be read after
    the step."""
    inputs = step_inputs(batch, patch, 1, device)
    lab, unlab = inputs["lab"], inputs["unlab"]
    x, y, t, xu = lab["image"], lab["label"], lab["task"], unlab["image"]
    method = get_method("versemi", {"authors_stage2": True})
    out = {}
    for stage in ("stage1", "stage2"):
        torch.manual_seed(0)
        ours = VerSemiNet(n_filters=f).to(device).train()
        ref = VerSemiNet(n_filters=f).to(device).train()
        ref.load_state_dict(ours.state_dict())
        opt = torch.optim.SGD(ours.parameters(), lr=0.0)
        ctx = StepContext(nets={"net": ours}, optimizers={"net": opt}, stage=stage, step=0, stage_step=0,
                          stage_steps=10, rng=np.random.default_rng(0), options=method.options)
        loss_ours = float(method.train_step(ctx, lab, unlab)["loss"])
        rng, call = np.random.default_rng(0), AuthorsCall(ref, authors=False)
        loss_ref = (authors_stage1_step(call, x, y, t, rng) if stage == "stage1"
                    else authors_stage2_step(call, x, y, t, xu, rng))
        loss_ref.backward()
        diff = scale = 0.0
        for a, b in zip(ours.parameters(), ref.parameters()):
            ga = a.grad if a.grad is not None else torch.zeros_like(a)
            gb = b.grad if b.grad is not None else torch.zeros_like(b)
            diff, scale = max(diff, float((ga - gb).abs().max())), max(scale, float(gb.abs().max()))
        out[stage] = (abs(loss_ours - float(loss_ref)), diff / (scale or 1.0))
    return out


def time_it(fn, reps: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


@contextlib.contextmanager
def cpu_bf16_reference_kernels(device, amp: bool):
    """Inside: oneDNN switched off where bf16 autocast runs on a CPU, so that convolutions take PyTorch's
    reference kernels; elsewhere (fp32, CUDA) nothing changes. The trainer never autocasts on a CPU
    (``StepContext.amp`` is CUDA only): on a CPU the bf16 rows exist for ``bench/gpu.py --dry-run``, which
    checks this benchmark's code, not the CPU's bf16 kernels. Those are not dependable: on CPUs with
    AVX512-BF16/AMX, oneDNN's bf16 conv3d primitives have given wrong results (pytorch/pytorch#169688), and
    the dry run's bf16 stage 2 diverged at its first step on some CI machines (non-finite ``sup``) while it
    is finite on CPUs without those instructions."""
    if not (amp and torch.device(device).type == "cpu"):
        yield
        return
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def bench(f: int, patch: int, batch: int, reps: int, authors_repo: str | None, device,
          amp: bool = False) -> list[dict]:
    """Both sides' median seconds per step for one configuration; ``amp``: bf16 autocast around both sides'
    forward passes and losses (as ``RunConfig.amp`` on CUDA; on a CPU with the reference kernels of
    :func:`cpu_bf16_reference_kernels`)."""
    with cpu_bf16_reference_kernels(device, amp):
        return _bench(f, patch, batch, reps, authors_repo, device, amp)


def _bench(f: int, patch: int, batch: int, reps: int, authors_repo: str | None, device, amp: bool) -> list[dict]:
    torch.manual_seed(0)
    ours = VerSemiNet(n_filters=f).to(device).train()
    if authors_repo and f == 16:
        ref = AuthorsCall(load_authors_vnet(authors_repo)(n_classes=2, n_branches=1), authors=True).to(device)
        ref_name = "authors' VNet, released call pattern"
    else:
        ref = AuthorsCall(VerSemiNet(n_filters=f), authors=False).to(device)
        ref_name = "this VerSemiNet, released call pattern"
    ref.train()
    inputs = step_inputs(batch, patch, 0, device)
    lab, unlab = inputs["lab"], inputs["unlab"]
    x, y, t, xu = lab["image"], lab["label"], lab["task"], unlab["image"]
    method = get_method("versemi", {"authors_stage2": True})   # the released stage 2, as the reference computes
    opt_o = torch.optim.Adam(ours.parameters(), 1e-3, betas=(0.5, 0.999))
    opt_r = torch.optim.Adam(ref.parameters(), 1e-3, betas=(0.5, 0.999))

    def run_ours(stage):
        def fn():
            ctx = StepContext(nets={"net": ours}, optimizers={"net": opt_o}, stage=stage, step=0, stage_step=0,
                              stage_steps=10, rng=np.random.default_rng(0), options=method.options)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                method.train_step(ctx, lab, unlab)   # the trainer's step: back-propagated pass by pass
        return fn

    def run_ref(stage):
        def fn():
            rng = np.random.default_rng(0)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = (authors_stage1_step(ref, x, y, t, rng) if stage == "stage1"
                        else authors_stage2_step(ref, x, y, t, xu, rng))
            opt_r.zero_grad()
            loss.backward()
            opt_r.step()
        return fn

    same = step_equivalence(f, patch, batch, device)
    rows = []
    for stage in ("stage1", "stage2"):
        s_ref = time_it(run_ref(stage), reps)
        s_ours = time_it(run_ours(stage), reps)
        g_ref, g_ours = count_flops(run_ref(stage)) / 1e9, count_flops(run_ours(stage)) / 1e9
        rows.append({"what": f"VerSemi {stage} step", "config": f"f={f} patch={patch}^3 batch={batch}+{batch}",
                     "precision": "bf16 autocast" if amp else "fp32",
                     "reference": ref_name, "reference_s": s_ref, "ours_s": s_ours, "speedup": s_ref / s_ours,
                     "reference_gflop": g_ref, "ours_gflop": g_ours, "flop_ratio": g_ref / g_ours,
                     "efficiency_ratio": (s_ref / s_ours) / (g_ref / g_ours),
                     "loss_abs_diff": same[stage][0], "grad_rel_diff": same[stage][1]})
        print(rows[-1], flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--quick", action="store_true", help="demo config only, fewer repetitions")
    ap.add_argument("--authors-repo", default=None)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--configs", nargs="+", default=None, metavar="F,PATCH,BATCH",
                    help="width,patch,batch triples (default 8,32,4 16,64,4 16,96,8; the last is the paper's: "
                         "with the authors' call pattern it needs more than 24 GiB of memory on a CPU)")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.configs:
        try:
            configs = [tuple(int(v) for v in c.split(",")) for c in args.configs]
        except ValueError:
            raise SystemExit(f"--configs: expected width,patch,batch triples, got {args.configs}") from None
        if any(len(c) != 3 for c in configs):
            raise SystemExit(f"--configs: expected width,patch,batch triples, got {args.configs}")
    else:
        configs = [(8, 32, 4)] if args.quick else [(8, 32, 4), (16, 64, 4), (16, 96, 8)]
    rows = []
    for f, p, b in configs:
        reps = args.reps if p <= 64 else 1
        rows += bench(f, p, b, reps, args.authors_repo, device)
    df = pd.DataFrame(rows)
    for k, v in machine_info().items():
        df[k] = v
    out = Path(args.out) / "train_speed.csv"
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
    print(df[["what", "config", "reference_s", "ours_s", "speedup", "flop_ratio", "efficiency_ratio"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
