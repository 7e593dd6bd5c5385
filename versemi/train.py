"""The one trainer used by every method.

``train(cfg, prepared_dir, run_dir)`` runs the stages of ``cfg.method`` for ``cfg.steps`` optimisation
steps:

* device: CUDA when present, else CPU; bf16 autocast only on CUDA (``cfg.amp``);
* optimiser: Adam (VerSemi's) or SGD with optional step decay, per config;
* EMA teacher for the methods that use one, decay ``min(1 - 1/(step+1), alpha)`` (BCP: plain alpha);
* data: labeled / unlabeled patch samplers whose batch at step ``s`` is a pure function of
  (seed, stream, s); masks and noise are drawn from generators seeded by (seed, s). So a run resumed
  from a checkpoint follows exactly the trajectory of an uninterrupted one (tested on CPU);
* checkpoints every ``ckpt_every`` steps, written atomically (``last.pt``; the previous one is kept as
  ``prev.pt`` and used, with a warning naming the file, if ``last.pt`` is unreadable);
* validation every ``val_every`` steps on a validation split carved from the *training* cases
  (mean Dice over the run's datasets); the best model is kept as ``best.pt``. Selecting on the test set
  (as the authors do) is available only as ``selection="test"``;
* a metrics CSV, a validation CSV, TensorBoard events and a tqdm progress bar;
* a non-finite loss stops training with an error naming the step and the loss terms; the last good
  checkpoint stays in place;
* multi-GPU/multi-process with ``torchrun`` (or any ``torch.distributed`` launcher): each rank draws
  its own batches (a stream per rank) and gradients are averaged with ``all_reduce`` after backward;
  the same code path runs with the gloo backend on CPU (tested with 2 processes).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from versemi.data.registry import DATASETS
from versemi.experiments import RunConfig
from versemi.methods import StepContext, get_method
from versemi.model import VerSemiNet
from versemi.utils import VersemiError, atomic_path, atomic_write_text, get_device, seed_everything

NUM_TASKS = 4


class TrainingDiverged(VersemiError):
    """A loss became NaN/inf."""


# ----------------------------------------------------------------------------- building blocks
def build_net(cfg: RunConfig) -> VerSemiNet:
    return VerSemiNet(in_channels=1, n_filters=cfg.n_filters, num_tasks=NUM_TASKS, head=cfg.head,
                      dropout=cfg.dropout)


def build_optimizer(cfg: RunConfig, net: torch.nn.Module):
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return opt


def lr_at(cfg: RunConfig, step: int) -> float:
    if cfg.lr_step and cfg.lr_step > 0:
        return cfg.lr * (cfg.lr_gamma ** (step // cfg.lr_step))
    return cfg.lr


def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, alpha: float) -> None:
    with torch.no_grad():
        for t, s in zip(teacher.parameters(), student.parameters()):
            t.mul_(alpha).add_(s.detach(), alpha=1 - alpha)
        for t, s in zip(teacher.buffers(), student.buffers()):
            t.copy_(s)


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    return int(np.random.SeedSequence([seed, stream, step]).generate_state(1, dtype=np.uint64)[0] % (2**62))


def locate_stage(stages: list[tuple[str, int]], step: int) -> tuple[str, int, int]:
    start = 0
    for name, n in stages:
        if step < start + n:
            return name, step - start, n
        start += n
    name, n = stages[-1]
    return name, n - 1, n


def _to_device(batch: dict | None, device) -> dict | None:
    if batch is None:
        return None
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def maybe_init_distributed(device: torch.device) -> bool:
    """Initialise torch.distributed when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return True
    return False


# ----------------------------------------------------------------------------- data
def split_cases(cfg: RunConfig, prepared_dir, split: str) -> list[dict]:
    """Cases of the run's datasets for ``split`` in labeled | unlabeled | val | test.

    With ratio 100 (fully supervised) every training case outside the validation split is labeled.
    """
    from versemi.data.loaders import load_split_cases

    ratio = 10 if cfg.ratio == 100 else cfg.ratio
    if split == "unlabeled":
        split = "unlabeled_train"  # the validation cases never enter training
    if cfg.ratio == 100 and split == "labeled":
        return (load_split_cases(prepared_dir, cfg.datasets, ratio, "labeled")
                + [c for c in load_split_cases(prepared_dir, cfg.datasets, ratio, "unlabeled_train")
                   if c.get("label") is not None])
    if cfg.ratio == 100 and split == "unlabeled_train":
        return []
    return load_split_cases(prepared_dir, cfg.datasets, ratio, split)


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(run_dir: Path) -> dict | None:
    """The newest readable checkpoint of ``run_dir`` (last.pt, else prev.pt), or None."""
    for name in ("last.pt", "prev.pt"):
        p = run_dir / name
        if not p.is_file():
            continue
        try:
            state = torch.load(p, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or "net" not in state or "step" not in state:
                raise ValueError("missing keys")
            return state
        except Exception as e:  # noqa: BLE001 - a corrupt checkpoint is reported and skipped
            warnings.warn(f"{p}: unreadable checkpoint ({type(e).__name__}: {e}); trying the previous one",
                          stacklevel=2)
    return None


# ----------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(net: VerSemiNet, cases: list[dict], cfg: RunConfig, device) -> dict[str, float]:
    """Mean Dice per dataset on full volumes (sliding window with ``cfg.val_stride``)."""
    from versemi.evaluate import case_metrics, sliding_window_predict

    per: dict[str, list[float]] = {}
    for c in cases:
        pred, _ = sliding_window_predict(net, c["image"], int(c["task"]), patch_size=cfg.eval_patch,
                                         stride=cfg.val_stride, batch_size=4)
        per.setdefault(c.get("dataset", str(c["task"])), []).append(case_metrics(pred, c["label"])["dice"])
    return {k: float(np.mean(v)) for k, v in per.items()}


# ----------------------------------------------------------------------------- the loop
def train(cfg: RunConfig, prepared_dir, run_dir, device: str | None = None, progress: bool = True,
          resume: bool = True, stop_after: int | None = None) -> dict:
    """Train ``cfg`` into ``run_dir``; returns a summary dict. ``stop_after`` ends the loop early after
    that many steps (used to test resuming)."""
    from versemi.data.loaders import PatchSampler

    dev = get_device(device)
    launched = maybe_init_distributed(dev)
    rank, world = _dist_info()
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())

    method = get_method(cfg.method, cfg.options)
    seed_everything(cfg.seed)
    net = build_net(cfg).to(dev)
    teacher = None
    if method.uses_teacher:
        teacher = copy.deepcopy(net)
        for p in teacher.parameters():
            p.requires_grad_(False)
    opt = build_optimizer(cfg, net)

    lab_cases = split_cases(cfg, prepared_dir, "labeled")
    if len(lab_cases) < 1:
        raise VersemiError(f"{prepared_dir}: no labeled cases for {cfg.datasets} at {cfg.ratio}%")
    lab_sampler = PatchSampler(lab_cases, cfg.patch, cfg.batch_size, seed=cfg.seed,
                               crop="random" if cfg.pos_fraction is None else "posneg",
                               pos_fraction=0.5 if cfg.pos_fraction is None else cfg.pos_fraction,
                               stream=10 + rank, labeled=True)
    unlab_sampler = None
    if method.uses_unlabeled:
        unlab_cases = split_cases(cfg, prepared_dir, "unlabeled")
        if not unlab_cases:
            raise VersemiError(f"{prepared_dir}: method {cfg.method} needs unlabeled cases; none found")
        unlab_sampler = PatchSampler(unlab_cases, cfg.patch, cfg.unlabeled_batch_size, seed=cfg.seed,
                                     crop=cfg.crop_unlabeled, stream=20 + rank, labeled=False)
    val_split = {"val": "val", "test": "test", "last": None}[cfg.selection]
    val_cases = split_cases(cfg, prepared_dir, val_split) if (val_split and rank == 0) else []

    stages = method.stages(cfg.steps)
    total = sum(n for _, n in stages)
    run_tasks = tuple(sorted(DATASETS[d].task_id for d in cfg.datasets))
    rows: list[dict] = []
    val_rows: list[dict] = []
    best = {"score": -1.0, "step": -1}
    start = 0
    state = load_checkpoint(run_dir) if resume else None
    if state is not None:
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        if teacher is not None and state.get("teacher") is not None:
            teacher.load_state_dict(state["teacher"])
        rows, val_rows, best, start = state["rows"], state["val_rows"], state["best"], state["step"]

    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"), purge_step=start)

    use_amp = bool(cfg.amp and dev.type == "cuda")
    t_start = time.perf_counter()
    elapsed_before = float(state.get("elapsed", 0.0)) if state else 0.0
    end = total if stop_after is None else min(total, start + stop_after)
    bar = tqdm(range(start, end), initial=start, total=total, disable=not progress or rank != 0,
               desc=cfg.label(), dynamic_ncols=True)
    net.train()
    for step in bar:
        stage, stage_step, stage_steps = locate_stage(stages, step)
        if stage_step == 0:
            method.on_stage_start(stage, net, teacher)
        torch.manual_seed(step_seed(cfg.seed, step, 1 + rank))
        rng = np.random.default_rng([cfg.seed, 2 + rank, step])
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        lab = _to_device(lab_sampler.batch(step), dev)
        unlab = _to_device(unlab_sampler.batch(step), dev) if unlab_sampler is not None else None
        ctx = StepContext(net=net, teacher=teacher, stage=stage, step=step, stage_step=stage_step,
                          stage_steps=stage_steps, rng=rng, options=method.options, num_tasks=NUM_TASKS,
                          tasks=run_tasks)
        t0 = time.perf_counter()
        amp_ctx = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()
        with amp_ctx:
            out = method.step(ctx, lab, unlab)
        loss = out["loss"]
        if not torch.isfinite(loss):
            bad = [k for k, v in out.items() if torch.is_tensor(v) and not torch.isfinite(v).all()]
            raise TrainingDiverged(f"{run_dir}: non-finite loss at step {step} (stage {stage}); "
                                   f"non-finite terms: {', '.join(bad)}; last good checkpoint kept in {run_dir}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1:
            for p in net.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= world
        opt.step()
        if teacher is not None:
            alpha = (method.ema_alpha(step, cfg.ema_decay) if hasattr(method, "ema_alpha")
                     else min(1 - 1 / (step + 1), cfg.ema_decay))
            ema_update(teacher, net, alpha)
        row = {"step": step, "stage": stage, "lr": opt.param_groups[0]["lr"],
               "seconds": time.perf_counter() - t0,
               **{k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1}}
        rows.append(row)
        if writer is not None:
            for k, v in row.items():
                if k not in ("step", "stage"):
                    writer.add_scalar(f"train/{k}", v, step)
        if progress and rank == 0:
            bar.set_postfix(stage=stage, loss=f"{row['loss']:.3f}")

        last = step == total - 1
        if rank == 0 and val_cases and ((step + 1) % cfg.val_every == 0 or last):
            scores = validate(net, val_cases, cfg, dev)
            net.train()
            score = float(np.mean(list(scores.values())))
            val_rows += [{"step": step, "dataset": k, "dice": v} for k, v in scores.items()]
            for k, v in scores.items():
                writer.add_scalar(f"val/dice_{k}", v, step)
            if teacher is not None:
                t_scores = validate(teacher, val_cases, cfg, dev)
                val_rows += [{"step": step, "dataset": k, "dice": v, "model": "ema"} for k, v in t_scores.items()]
            if score > best["score"]:
                best = {"score": score, "step": step}
                save_checkpoint(run_dir / "best.pt", {"net": net.state_dict(), "step": step + 1, "score": score})
        if rank == 0 and ((step + 1) % cfg.ckpt_every == 0 or last or step + 1 == end):
            if (run_dir / "last.pt").is_file():
                os.replace(run_dir / "last.pt", run_dir / "prev.pt")
            save_checkpoint(run_dir / "last.pt", {
                "net": net.state_dict(), "opt": opt.state_dict(),
                "teacher": teacher.state_dict() if teacher is not None else None,
                "step": step + 1, "rows": rows, "val_rows": val_rows, "best": best,
                "elapsed": elapsed_before + time.perf_counter() - t_start})
            _write_logs(run_dir, rows, val_rows)
    bar.close()
    if writer is not None:
        writer.close()
    if launched:
        dist.barrier()
        dist.destroy_process_group()
    return {"run_dir": str(run_dir), "steps_done": end, "total_steps": total, "best": best,
            "train_seconds": elapsed_before + time.perf_counter() - t_start}


def _write_logs(run_dir: Path, rows: list[dict], val_rows: list[dict]) -> None:
    """metrics.csv (deterministic: loss terms, lr), timing.csv (step times), val.csv."""
    df = pd.DataFrame(rows)
    with atomic_path(run_dir / "metrics.csv") as tmp:
        df.drop(columns=["seconds"], errors="ignore").to_csv(tmp, index=False)
    with atomic_path(run_dir / "timing.csv") as tmp:
        df[["step", "stage", "seconds"]].to_csv(tmp, index=False)
    with atomic_path(run_dir / "val.csv") as tmp:
        pd.DataFrame(val_rows, columns=["step", "dataset", "dice", "model"]).to_csv(tmp, index=False)


# ----------------------------------------------------------------------------- after training
def load_run_net(run_dir, which: str | None = None, device=None) -> tuple[VerSemiNet, RunConfig]:
    """The trained network of a run: ``which`` = best | last (default: the run's selection rule)."""
    run_dir = Path(run_dir)
    cfg = RunConfig.from_yaml(run_dir / "config.yaml")
    which = which or ("last" if cfg.selection == "last" else "best")
    path = run_dir / f"{which}.pt"
    if which == "best" and not path.is_file():
        path = run_dir / "last.pt"  # no validation happened (e.g. selection=last)
    if not path.is_file():
        raise VersemiError(f"{run_dir}: no checkpoint {which}.pt; was the run trained?")
    net = build_net(cfg)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["net"])
    return net.to(get_device(device)).eval(), cfg


def finish_run(run_dir, prepared_dir, device=None, evaluate: bool = True, progress: bool = True) -> dict:
    """Evaluate the selected model on every test set of the run and mark the run complete."""
    run_dir = Path(run_dir)
    cfg = RunConfig.from_yaml(run_dir / "config.yaml")
    summary: dict = {"config": cfg.to_dict(), "label": cfg.label()}
    state = load_checkpoint(run_dir)
    if state is None or state["step"] < sum(n for _, n in get_method(cfg.method, cfg.options).stages(cfg.steps)):
        raise VersemiError(f"{run_dir}: training is not finished; run it again to resume")
    summary["train_seconds"] = state.get("elapsed")
    summary["best"] = state.get("best")
    if evaluate:
        summary["test"] = evaluate_run(run_dir, prepared_dir, split="test", device=device, progress=progress)
    summary["machine"] = machine_info()
    atomic_write_text(run_dir / "DONE.json", json.dumps(summary, indent=1, default=str))
    return summary


def evaluate_run(run_dir, prepared_dir, split: str = "test", datasets=None, device=None, lcc: bool = False,
                 progress: bool = True, protocol: str | None = None, compile: bool = False,
                 batch_size: int | None = None) -> dict:
    """Per-case CSV ``eval/<split>_<dataset>.csv`` and a summary (mean, std) per dataset.

    ``compile``: run the network through ``torch.compile`` (see :func:`versemi.evaluate.sliding_window_predict`).
    ``batch_size``: windows per forward pass; ``None``: 1 for a compiled network on a CPU (the fastest
    there, ``results/bench/eval_speed.csv``), else 8."""
    from versemi.evaluate import _net_device, evaluate_cases, summarize

    run_dir = Path(run_dir)
    net, cfg = load_run_net(run_dir, device=device)
    if batch_size is None:
        batch_size = 1 if (compile and _net_device(net).type == "cpu") else 8
    out = {}
    for ds in datasets or cfg.datasets:
        sub = copy.copy(cfg)
        sub.datasets = (ds,)
        cases = split_cases(sub, prepared_dir, split)
        task = cases[0]["task"] if cases else None
        tuples = ((c["name"], c["image"], c["label"], c.get("spacing")) for c in cases)
        suffix = "" if protocol in (None, cfg.eval_protocol) else f"_{protocol}"
        df = evaluate_cases(net, tuples, int(task), run_dir / "eval" / f"{split}_{ds}{suffix}.csv",
                            patch_size=cfg.eval_patch, stride=cfg.eval_stride,
                            protocol=protocol or cfg.eval_protocol, lcc=lcc, progress=progress, compile=compile,
                            batch_size=batch_size)
        out[ds] = summarize(df)
    return out


def machine_info() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpus": os.cpu_count(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
