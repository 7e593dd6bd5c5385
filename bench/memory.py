"""Peak memory and time of one VerSemi training step, ours against the released call pattern, each in its own
process.

    python -m bench.memory --out results/bench [--configs 16,96,8] [--steps 2] [--authors-repo PATH]
                           [--authors-stage2-batch 4]

Issue 12's target 3: at the paper configuration (f = 16, 96^3, 8 labeled + 8 unlabeled) both stages of this
package's step (``VerSemi.train_step``: back-propagated pass by pass, the released stage-2 variant), the same
step with activation checkpointing (``versemi/model.py``'s ``set_activation_checkpointing``: the memory it saves
and the time it costs, side by side; ``--no-checkpointing`` leaves it out) and the
released call pattern (``bench/train_speed.py``'s ``authors_stage1_step`` / ``authors_stage2_step``: one full
forward per prompt, one backward; the authors' own ``VNet`` with ``--authors-repo``). Each (side, stage) runs
in a fresh child process under the entry points' allocator setting (``versemi/allocator.py``): a warm-up
step, then ``steps`` timed steps; the peak resident memory above the process after building the network and
the batch is the windowed peak of ``bench/method_resources.py`` (``_peak_rss_window``: ``VmHWM`` reset through
``/proc/self/clear_refs``), and the child's peak RSS that resident memory plus the window's peak (``os.wait4``'s
``ru_maxrss`` would include the parent's memory, which the child starts from before ``exec``; it is kept only
for a child killed for memory, which reports nothing itself). The released stage 2 at the paper's batch needs more memory
than a 24 GiB machine has, so its batch is ``--authors-stage2-batch`` (the row says which batch ran).

Writes ``<out>/memory.csv``: ``side, stage, config, batch, peak_rss_gb, peak_above_start_gb, step_s``
(median of the timed steps), ``steps``, ``status``, ``memory`` (how the peak was measured), ``repeat`` (with
``--repeats N`` every side and stage runs in N fresh processes, the sides interleaved), with the
machine's columns; the file is rewritten after
every child.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from versemi.provenance import machine as machine_info
from versemi.utils import atomic_path

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from versemi import allocator
allocator.configure()
torch.set_num_threads(int(sys.argv[7]))
from bench.train_speed import AuthorsCall, authors_stage1_step, authors_stage2_step, load_authors_vnet, step_inputs
from versemi.methods import StepContext, get_method
from versemi.model import VerSemiNet, set_activation_checkpointing
side, stage, f, patch, batch, steps, _, repo, out = sys.argv[1:10]
f, patch, batch, steps = int(f), int(patch), int(batch), int(steps)
torch.manual_seed(0)
inputs = step_inputs(batch, patch, 0)
lab, unlab = inputs["lab"], inputs["unlab"]
x, y, t, xu = lab["image"], lab["label"], lab["task"], unlab["image"]
if side.startswith("ours"):
    net = VerSemiNet(n_filters=f).train()
    if side == "ours-ckpt":
        set_activation_checkpointing(net)
    method = get_method("versemi", {"authors_stage2": True})
    opt = torch.optim.Adam(net.parameters(), 1e-3, betas=(0.5, 0.999))
    def step(i):
        ctx = StepContext(nets={"net": net}, optimizers={"net": opt}, stage=stage, step=i, stage_step=i,
                          stage_steps=10, rng=np.random.default_rng(i), options=method.options)
        method.train_step(ctx, lab, unlab)
else:
    inner = load_authors_vnet(repo)(n_classes=2, n_branches=1) if repo != "-" and f == 16 else VerSemiNet(n_filters=f)
    net = AuthorsCall(inner, authors=repo != "-" and f == 16).train()
    opt = torch.optim.Adam(net.parameters(), 1e-3, betas=(0.5, 0.999))
    def step(i):
        rng = np.random.default_rng(i)
        loss = authors_stage1_step(net, x, y, t, rng) if stage == "stage1" else authors_stage2_step(net, x, y, t, xu, rng)
        opt.zero_grad()
        loss.backward()
        opt.step()
from bench.method_resources import _peak_rss_window, _status_kib
start_kb = _status_kib("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
window = _peak_rss_window()
step(0)
times = []
for i in range(1, steps + 1):
    t0 = time.perf_counter()
    step(i)
    times.append(time.perf_counter() - t0)
above, how = window()
json.dump({"start_kb": start_kb, "above_bytes": above, "how": how, "step_s": float(np.median(times))},
          open(out, "w"))
"""


SIDES = {"ours": "ours (VerSemi.train_step)",
         "ours-ckpt": "ours (VerSemi.train_step), activation checkpointing",
         "authors": "released call pattern"}


def measure(side: str, stage: str, f: int, patch: int, batch: int, steps: int, threads: int,
            authors_repo: str | None) -> dict:
    """One (side, stage) in a fresh child process: its peak RSS, the peak above its start, and the median
    step time."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "child.json"
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        child = subprocess.Popen([sys.executable, "-c", CHILD, side, stage, str(f), str(patch), str(batch),
                                  str(steps), str(threads), authors_repo or "-", str(out)],
                                 env=env, cwd=Path(__file__).resolve().parents[1])
        _, status, ru = os.wait4(child.pid, 0)
        res = json.loads(out.read_text()) if status == 0 and out.is_file() else None
    # a killed child reports nothing: its ru_maxrss is then the peak (it includes the memory the child
    # started from before exec, the parent's, which a child killed for memory far exceeds)
    row = {"side": SIDES[side], "stage": stage,
           "config": f"f={f} patch={patch}^3", "batch": f"{batch}+{batch}", "peak_rss_gb": ru.ru_maxrss / 2 ** 20,
           "peak_above_start_gb": float("nan"), "step_s": float("nan"), "steps": steps, "threads": threads,
           "status": "ran", "memory": "ru_maxrss of the killed process"}
    if res is None:   # e.g. killed by the kernel's out-of-memory killer (signal 9)
        row["status"] = (f"killed by signal {os.WTERMSIG(status)} (out of memory?)" if os.WIFSIGNALED(status)
                         else f"failed with exit status {os.waitstatus_to_exitcode(status)}")
        return row
    above = res["above_bytes"] / 2 ** 30
    row.update(peak_rss_gb=res["start_kb"] / 2 ** 20 + above, peak_above_start_gb=above, step_s=res["step_s"],
               memory=res["how"])
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--configs", nargs="+", default=["16,96,8"], metavar="F,PATCH,BATCH")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--authors-repo", default=os.environ.get("VERSEMI_AUTHORS_REPO"))
    ap.add_argument("--authors-stage2-batch", type=int, default=4,
                    help="the released stage 2's batch (its paper batch does not fit 24 GiB)")
    ap.add_argument("--no-checkpointing", dest="checkpointing", action="store_false",
                    help="leave out our step with activation checkpointing (model.set_activation_checkpointing)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="fresh processes per side and stage (the budget chapter shows medians and the spread)")
    ap.add_argument("--stages", nargs="+", default=["stage1", "stage2"], choices=["stage1", "stage2"])
    ap.add_argument("--quick", action="store_true", help="f=4, 32^3, batch 2, one step")
    args = ap.parse_args(argv)
    configs = ["4,32,2"] if args.quick else args.configs
    steps = 1 if args.quick else args.steps
    rows = []
    path = Path(args.out) / "memory.csv"
    path.parent.mkdir(parents=True, exist_ok=True)

    def save():   # after every child: a later out-of-memory kill loses nothing measured before it
        df = pd.DataFrame(rows)
        for k, v in machine_info().items():
            df[k] = v
        with atomic_path(path, suffix=".csv") as tmp:
            df.to_csv(tmp, index=False)
        return df

    for c in configs:
        f, patch, batch = (int(v) for v in c.split(","))
        for stage in args.stages:
            # the released stage 2: the paper's batch does not fit; from --authors-stage2-batch down to the
            # largest that runs (each batch that was killed keeps its row; later repeats use the one that ran)
            b_ref = min(batch, args.authors_stage2_batch) if stage == "stage2" and not args.quick else batch
            for rep in range(args.repeats):   # sides interleaved per repeat: a drift of the machine hits all
                for side in ("ours", "ours-ckpt") if args.checkpointing else ("ours",):
                    rows.append({**measure(side, stage, f, patch, batch, steps, args.threads, args.authors_repo),
                                 "repeat": rep})
                    save()
                while True:
                    rows.append({**measure("authors", stage, f, patch, b_ref, steps, args.threads,
                                           args.authors_repo), "repeat": rep})
                    save()
                    if rows[-1]["status"] == "ran" or b_ref <= 1:
                        break
                    b_ref //= 2
                print(*rows[-3:], sep="\n", flush=True)
    df = save()
    print(df[["side", "stage", "config", "batch", "peak_rss_gb", "peak_above_start_gb", "step_s", "status"]]
          .to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
