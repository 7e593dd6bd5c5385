"""The one training loop, for every method.

``train(cfg, prepared_dir, run_dir)`` runs the stages of ``cfg.method`` for ``cfg.steps`` optimisation
steps. The method (``versemi/methods/``) declares its networks, teachers, optimisers, stages and step;
this module only

* places the run on a device (CUDA when present, else CPU; bf16 autocast only on CUDA, ``cfg.amp``);
* draws the batches: labeled / unlabeled patch samplers whose batch at step ``s`` is a pure function of
  (seed, stream, s); masks and noise come from generators seeded by (seed, s), so a run resumed from a
  checkpoint follows exactly the trajectory of an uninterrupted one (tested on CPU);
* sets each optimiser's learning rate, calls the method's step, keeps every teacher an EMA of its
  student (decay from the method);
* validates every ``val_every`` steps on a validation split carved from the *training* cases (mean Dice
  over the run's datasets) and keeps the best evaluated network as ``best.pt`` (``selection="test"``
  selects on the test set, as the authors' released code; ``"last"`` does no selection);
* checkpoints every ``ckpt_every`` steps, atomically, every network and optimiser the method declares
  (``versemi/checkpoints.py``); writes ``metrics.csv``, ``timing.csv``, ``val.csv``, TensorBoard events
  and a tqdm progress bar;
* stops on a non-finite loss with an error naming the step and the loss terms (the last good checkpoint
  stays in place);
* runs under ``torchrun`` (any ``torch.distributed`` launcher): each rank draws its own batches (a
  stream per rank) and gradients are averaged after backward; the same code path runs with the gloo
  backend on CPU (tested with 2 processes).

What happens before (the run cache) and after (selection, test evaluation, provenance) is
``versemi/runs.py``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from versemi.checkpoints import BEST, LAST, load_checkpoint, save_checkpoint
from versemi.config import RunConfig
from versemi.data.loaders import PatchSampler, load_split_cases
from versemi.evaluate import case_metrics, sliding_window_predict
from versemi.methods import NUM_TASKS, Method, StepContext, TrainingDiverged, get_method
from versemi.model import set_activation_checkpointing
from versemi.provenance import code_state, warn_if_code_changed
from versemi.utils import VersemiError, atomic_path, atomic_write_text, get_device, seed_everything

__all__ = ["train", "split_cases", "validate", "ema_update", "step_seed", "locate_stage", "TrainingDiverged",
           "OutOfMemory", "is_out_of_memory", "out_of_memory_as"]


# ----------------------------------------------------------------------------- building blocks
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, alpha: float) -> None:
    """teacher <- alpha teacher + (1 - alpha) student (parameters); buffers copied from the student."""
    with torch.no_grad():
        for t, s in zip(teacher.parameters(), student.parameters()):
            t.mul_(alpha).add_(s.detach(), alpha=1 - alpha)
        for t, s in zip(teacher.buffers(), student.buffers()):
            t.copy_(s)


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 62-bit seed that is a pure function of (seed, stream, step)."""
    return int(np.random.SeedSequence([seed, stream, step]).generate_state(1, dtype=np.uint64)[0] % (2**62))


def locate_stage(stages: list[tuple[str, int]], step: int) -> tuple[str, int, int]:
    """(stage name, step within the stage, stage length) of the global ``step``."""
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


def _init_distributed(device: torch.device) -> bool:
    """Initialise torch.distributed when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return True
    return False


class OutOfMemory(VersemiError):
    """An allocation failed (CPU or GPU); the message names the settings that reduce memory."""


def is_out_of_memory(e: BaseException) -> bool:
    """A Python ``MemoryError``, CUDA's ``torch.OutOfMemoryError``, or the CPU allocator's failure
    (a RuntimeError "can't allocate memory")."""
    if isinstance(e, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(e, RuntimeError) and ("can't allocate memory" in str(e) or "out of memory" in str(e))


@contextlib.contextmanager
def out_of_memory_as(describe: Callable[[], str]):
    """Turn an allocation failure inside the block into :class:`OutOfMemory` with the message
    ``describe()`` (built only then); any other exception passes unchanged."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - only an allocation failure is translated
        if is_out_of_memory(e):
            raise OutOfMemory(describe()) from None
        raise


def _oom_message(run, step: int, what: str) -> str:
    c = run.cfg
    return (f"{run.run_dir}: out of memory in {what} at step {step} (batch_size={c.batch_size} labeled + "
            f"unlabeled_batch_size={c.unlabeled_batch_size}, patch={list(c.patch)}, n_filters={c.n_filters}); "
            f"reduce them, e.g. --set batch_size=2 --set unlabeled_batch_size=2 or --set patch=[64,64,64], and "
            f"run again: training resumes from the last checkpoint, kept in {run.run_dir}")


# ----------------------------------------------------------------------------- data
def split_cases(cfg: RunConfig, prepared_dir, split: str) -> list[dict]:
    """Cases of the run's datasets for ``split`` in labeled | unlabeled | val | test.

    The unlabeled pool excludes the validation cases. A fully supervised run (``cfg.fully_supervised``)
    labels every training case outside the validation split and has no unlabeled pool.
    """
    if split == "unlabeled":
        split = "unlabeled_train"  # the validation cases never enter training
    if cfg.fully_supervised and split == "labeled":
        return (load_split_cases(prepared_dir, cfg.datasets, cfg.split_ratio, "labeled")
                + [c for c in load_split_cases(prepared_dir, cfg.datasets, cfg.split_ratio, "unlabeled_train")
                   if c.get("label") is not None])
    if cfg.fully_supervised and split == "unlabeled_train":
        return []
    return load_split_cases(prepared_dir, cfg.datasets, cfg.split_ratio, split)


# ----------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(net: torch.nn.Module, cases: list[dict], cfg: RunConfig, device=None) -> dict[str, float]:
    """Mean Dice per dataset on full volumes (sliding window with ``cfg.eval_patch``/``cfg.val_stride``)."""
    per: dict[str, list[float]] = {}
    for c in cases:
        pred, _ = sliding_window_predict(net, c["image"], int(c["task"]), patch_size=cfg.eval_patch,
                                         stride=cfg.val_stride, batch_size=4)
        per.setdefault(c.get("dataset", str(c["task"])), []).append(case_metrics(pred, c["label"])["dice"])
    return {k: float(np.mean(v)) for k, v in per.items()}


# ----------------------------------------------------------------------------- the run's state
@dataclass
class _Run:
    """Everything the loop carries: the method, its networks and optimisers, samplers and logs."""

    cfg: RunConfig
    run_dir: Path
    dev: torch.device
    rank: int
    world: int
    method: Method
    nets: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    stages: list[tuple[str, int]]
    lab: PatchSampler
    unlab: PatchSampler | None
    val_cases: list[dict]
    rows: list[dict] = field(default_factory=list)
    val_rows: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"score": -1.0, "step": -1})
    start: int = 0
    elapsed_before: float = 0.0
    code: dict = field(default_factory=dict)   # the code that trains: fingerprint and git state

    @property
    def total(self) -> int:
        return sum(n for _, n in self.stages)



def _setup(cfg: RunConfig, prepared_dir, run_dir: Path, dev: torch.device, rank: int, world: int) -> _Run:
    """Build the method's networks (right after seeding) and optimisers, and the data samplers."""
    method = get_method(cfg.method, cfg.options)
    seed_everything(cfg.seed)
    nets = {k: v.to(dev) for k, v in method.build_networks(cfg).items()}
    if cfg.checkpoint_activations:
        set_activation_checkpointing(nets.values())
    optimizers = method.build_optimizers(cfg, nets)

    lab_cases = split_cases(cfg, prepared_dir, "labeled")
    if len(lab_cases) < 1:
        raise VersemiError(f"{prepared_dir}: no labeled cases for {cfg.datasets} at {cfg.ratio}%")
    lab = PatchSampler(lab_cases, cfg.patch, cfg.batch_size, seed=cfg.seed,
                       crop="random" if cfg.pos_fraction is None else "posneg",
                       pos_fraction=0.5 if cfg.pos_fraction is None else cfg.pos_fraction,
                       stream=10 + rank, labeled=True, augment=cfg.augment)
    unlab = None
    if method.uses_unlabeled:
        unlab_cases = split_cases(cfg, prepared_dir, "unlabeled")
        if not unlab_cases:
            raise VersemiError(f"{prepared_dir}: method {cfg.method} needs unlabeled cases; none found")
        unlab = PatchSampler(unlab_cases, cfg.patch, cfg.unlabeled_batch_size, seed=cfg.seed,
                             crop=cfg.crop_unlabeled, stream=20 + rank, labeled=False, augment=cfg.augment)
    val_split = {"val": "val", "test": "test", "last": None}[cfg.selection]
    val_cases = split_cases(cfg, prepared_dir, val_split) if (val_split and rank == 0) else []
    return _Run(code=code_state(cfg.method), cfg=cfg, run_dir=run_dir, dev=dev, rank=rank, world=world, method=method, nets=nets,
                optimizers=optimizers, stages=method.stages(cfg.steps), lab=lab, unlab=unlab, val_cases=val_cases)


def _resume(run: _Run) -> None:
    """Load the newest readable checkpoint into ``run`` (nothing when there is none)."""
    state = load_checkpoint(run.run_dir)
    if state is None:
        return
    for name, net in run.nets.items():
        if name not in state["nets"]:
            raise VersemiError(f"{run.run_dir / LAST}: checkpoint lacks the network {name!r} of method "
                               f"{run.cfg.method!r}; delete the run folder to retrain")
        net.load_state_dict(state["nets"][name])
    for name, opt in run.optimizers.items():
        if name in state["optimizers"]:
            opt.load_state_dict(state["optimizers"][name])
    run.method.load_state_dict(state.get("method") or {})
    run.rows, run.val_rows, run.best, run.start = state["rows"], state["val_rows"], state["best"], state["step"]
    run.elapsed_before = float(state.get("elapsed", 0.0))
    warn_if_code_changed(state.get("code"), run.code, f"{run.run_dir}: resuming")


def _context(run: _Run, step: int) -> StepContext:
    stage, stage_step, stage_steps = locate_stage(run.stages, step)
    torch.manual_seed(step_seed(run.cfg.seed, step, 1 + run.rank))
    rng = np.random.default_rng([run.cfg.seed, 2 + run.rank, step])
    return StepContext(nets=run.nets, optimizers=run.optimizers, stage=stage, step=step, stage_step=stage_step,
                       stage_steps=stage_steps, rng=rng, options=run.method.options, num_tasks=NUM_TASKS,
                       tasks=run.cfg.task_prompts, cfg=run.cfg, amp=bool(run.cfg.amp and run.dev.type == "cuda"),
                       world=run.world, where=str(run.run_dir))


def _one_step(run: _Run, step: int) -> dict:
    """Stage hook, learning rates, batches, the method's step, EMA teachers; returns the log row."""
    ctx = _context(run, step)
    if ctx.stage_step == 0:
        run.method.on_stage_start(ctx.stage, ctx)   # may replace an optimiser, load the best checkpoint
        if step > 0 and run.method.select_per_stage:
            run.best = {"score": -1.0, "step": -1}   # the model is selected among this stage's validations
    for name, opt in run.optimizers.items():
        for g in opt.param_groups:
            g["lr"] = run.method.lr_at(run.cfg, name, step)
    lab = _to_device(run.lab.batch(step), run.dev)
    unlab = _to_device(run.unlab.batch(step), run.dev) if run.unlab is not None else None
    t0 = time.perf_counter()
    out = run.method.train_step(ctx, lab, unlab)
    for teacher, student in run.method.teachers().items():
        ema_update(run.nets[teacher], run.nets[student], run.method.ema_alpha(step, run.cfg.ema_decay))
    lrs = {("lr" if name == "net" else f"lr_{name}"): opt.param_groups[0]["lr"]
           for name, opt in run.optimizers.items()}
    return {"step": step, "stage": ctx.stage, **lrs, "seconds": time.perf_counter() - t0,
            **{k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1}}


def _validate_and_select(run: _Run, step: int, writer: SummaryWriter) -> None:
    """Validate the evaluated network (and every teacher), keep ``best.pt`` on a new best mean Dice."""
    net = run.nets[run.method.eval_network]
    scores = validate(net, run.val_cases, run.cfg, run.dev)
    net.train()
    score = float(np.mean(list(scores.values())))
    run.val_rows += [{"step": step, "dataset": k, "dice": v} for k, v in scores.items()]
    for k, v in scores.items():
        writer.add_scalar(f"val/dice_{k}", v, step)
    for teacher in run.method.teachers():
        t_scores = validate(run.nets[teacher], run.val_cases, run.cfg, run.dev)
        model = "ema" if teacher == "teacher" else teacher
        run.val_rows += [{"step": step, "dataset": k, "dice": v, "model": model} for k, v in t_scores.items()]
    if score > run.best["score"]:
        run.best = {"score": score, "step": step}
        save_checkpoint(run.run_dir / BEST, {"net": net.state_dict(), "step": step + 1, "score": score,
                                             "code": run.code})


def _checkpoint(run: _Run, step: int, elapsed: float) -> None:
    save_checkpoint(run.run_dir / LAST, {
        "nets": {k: v.state_dict() for k, v in run.nets.items()},
        "optimizers": {k: v.state_dict() for k, v in run.optimizers.items()},
        "method": run.method.state_dict(),
        "step": step + 1, "rows": run.rows, "val_rows": run.val_rows, "best": run.best, "elapsed": elapsed,
        "code": run.code}, keep_previous=True)
    write_logs(run.run_dir, run.rows, run.val_rows)


# ----------------------------------------------------------------------------- the loop
def train(cfg: RunConfig, prepared_dir, run_dir, device: str | None = None, progress: bool = True,
          resume: bool = True, stop_after: int | None = None) -> dict:
    """Train ``cfg`` into ``run_dir``; returns a summary dict. ``stop_after`` ends the loop early after
    that many steps (used to test resuming)."""
    dev = get_device(device)
    launched = _init_distributed(dev)
    rank, world = _dist_info()
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())

    run = _setup(cfg, prepared_dir, run_dir, dev, rank, world)
    if resume:
        _resume(run)
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=run.start) if rank == 0 else None
    t_start = time.perf_counter()
    total = run.total
    end = total if stop_after is None else min(total, run.start + stop_after)
    bar = tqdm(range(run.start, end), initial=run.start, total=total, disable=not progress or rank != 0,
               desc=cfg.label(), dynamic_ncols=True)
    for net in run.nets.values():
        net.train()
    for step in bar:
        with out_of_memory_as(partial(_oom_message, run, step, "training")):
            row = _one_step(run, step)
        run.rows.append(row)
        if writer is not None:
            for k, v in row.items():
                if k not in ("step", "stage"):
                    writer.add_scalar(f"train/{k}", v, step)
        if progress and rank == 0:
            bar.set_postfix(stage=row["stage"], loss=f"{row['loss']:.3f}")
        last = step == total - 1
        _, stage_step, stage_steps = locate_stage(run.stages, step)
        stage_end = run.method.select_per_stage and stage_step == stage_steps - 1
        if rank == 0 and run.val_cases and ((step + 1) % cfg.val_every == 0 or last or stage_end):
            with out_of_memory_as(partial(_oom_message, run, step, "validation")):
                _validate_and_select(run, step, writer)
        if rank == 0 and ((step + 1) % cfg.ckpt_every == 0 or last or step + 1 == end):
            _checkpoint(run, step, run.elapsed_before + time.perf_counter() - t_start)
    bar.close()
    if writer is not None:
        writer.close()
    if launched:
        dist.barrier()
        dist.destroy_process_group()
    return {"run_dir": str(run_dir), "steps_done": end, "total_steps": total, "best": run.best,
            "train_seconds": run.elapsed_before + time.perf_counter() - t_start}


def write_logs(run_dir: Path, rows: list[dict], val_rows: list[dict]) -> None:
    """metrics.csv (deterministic: loss terms, lr), timing.csv (step times), val.csv."""
    df = pd.DataFrame(rows)
    with atomic_path(run_dir / "metrics.csv") as tmp:
        df.drop(columns=["seconds"], errors="ignore").to_csv(tmp, index=False)
    with atomic_path(run_dir / "timing.csv") as tmp:
        df[["step", "stage", "seconds"]].to_csv(tmp, index=False)
    with atomic_path(run_dir / "val.csv") as tmp:
        pd.DataFrame(val_rows, columns=["step", "dataset", "dice", "model"]).to_csv(tmp, index=False)
