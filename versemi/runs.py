"""Run folders: the cache, resuming, model selection, the final evaluation and the provenance record.

A run is described by a :class:`~versemi.config.RunConfig`. Its folder is ``<runs_root>/<method>-<hash>``
where the hash covers every field that changes the result and a fingerprint of the prepared data, so
the notebooks that need the same model share one run and a second book build trains nothing. Life of a
folder:

1. ``config.yaml`` (written first), checkpoints and logs while training (``versemi/train.py``; an
   interrupted run resumes from its last checkpoint);
2. :func:`finish_run`: the selected network (:func:`selected_checkpoint`) is evaluated on every test set
   of the run (``eval/test_<dataset>.csv``) and ``DONE.json`` is written last, atomically, with the
   summary and the provenance record (``versemi/provenance.py``: code fingerprint, git state, machine);
3. the cache (:func:`get_or_train`) serves only folders with ``DONE.json``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path

import pandas as pd
import torch

from versemi.checkpoints import BEST, LAST, load_checkpoint
from versemi.config import RunConfig
from versemi.data.prepare import load_manifest
from versemi.data.registry import DATASETS
from versemi.evaluate import evaluate_cases, net_device, summarize
from versemi.locks import folder_lock
from versemi.methods import get_method
from versemi.provenance import check_compatible, code_state, record, warn_if_code_changed
from versemi.train import out_of_memory_as, split_cases, train
from versemi.utils import VersemiError, atomic_write_text, get_device

DONE = "DONE.json"


# ---------------------------------------------------------------------------------------- the cache
def data_fingerprint(prepared_dir: str | Path) -> str:
    """12 hex digits of the SHA-256 of the prepared folder's manifest."""
    m = Path(prepared_dir) / "manifest.json"
    if not m.is_file():
        raise VersemiError(f"{prepared_dir}: no manifest.json; run `versemi prepare` first")
    return hashlib.sha256(m.read_bytes()).hexdigest()[:12]


def run_dir_for(cfg: RunConfig, prepared_dir: str | Path, runs_root: str | Path) -> Path:
    """``<runs_root>/<method>-<identity hash>`` of ``cfg`` on the prepared data."""
    return Path(runs_root) / f"{cfg.method}-{cfg.identity(data_fingerprint(prepared_dir))}"


def is_complete(run_dir: Path) -> bool:
    return (Path(run_dir) / DONE).is_file()


def get_or_train(cfg: RunConfig, prepared_dir: str | Path, runs_root: str | Path = "results/runs",
                 device: str | None = None, progress: bool = True, evaluate: bool = True, wait: bool = True) -> Path:
    """The folder of a complete run of ``cfg``; trains (resuming if possible) and evaluates only what is
    missing.

    One process at a time trains a run folder (``versemi/locks.py``): a second one asking for the same run
    waits for the first and then serves its result (``wait=False``: a :class:`~versemi.locks.LockBusy`
    naming the holder); a holder that was killed is taken over with a warning and the run resumes from
    its last checkpoint."""
    run_dir = run_dir_for(cfg, prepared_dir, runs_root)
    if is_complete(run_dir):
        return run_dir
    with folder_lock(run_dir, "run", wait=wait):
        if is_complete(run_dir):   # finished by the process we waited for
            return run_dir
        train(cfg, prepared_dir, run_dir, device=device, progress=progress)
        finish_run(run_dir, prepared_dir, device=device, evaluate=evaluate, progress=progress)
    return run_dir


def run_group(configs: dict[str, RunConfig], prepared_dir, runs_root="results/runs", device=None,
              progress: bool = True) -> dict[str, Path]:
    """Train/evaluate every config that the cache lacks; label -> complete run folder."""
    return {label: get_or_train(cfg, prepared_dir, runs_root, device=device, progress=progress)
            for label, cfg in configs.items()}


def run_available(configs: dict[str, RunConfig], prepared_dir, runs_root, device=None,
                  progress: bool = True) -> tuple[dict[str, Path], pd.DataFrame]:
    """:func:`run_group`, one config at a time, keeping going past a config that the prepared data cannot
    support (a :class:`~versemi.utils.VersemiError`, e.g. a semi-supervised method on a dataset with no
    unlabeled case, as in the tiny smoke phantoms).

    Returns ``(runs, not_trained)``: label -> complete run folder, and a table ``method, reason`` of the
    configs that were not trained (shown by the notebooks, never dropped silently). Any other exception
    propagates.
    """
    runs, skipped = {}, []
    for label, cfg in configs.items():
        try:
            runs[label] = get_or_train(cfg, prepared_dir, runs_root, device=device, progress=progress)
        except VersemiError as e:
            # the reason without the builder's absolute paths (the page is published)
            reason = str(e).replace(str(prepared_dir), "prepared data").replace(str(runs_root), "runs")
            skipped.append({"method": label, "reason": reason})
    return runs, pd.DataFrame(skipped, columns=["method", "reason"])


# ----------------------------------------------------------------------------------- after training
def run_config(run_dir) -> RunConfig:
    """The config of a run folder (its ``config.yaml``)."""
    return RunConfig.from_yaml(Path(run_dir) / "config.yaml")


def selected_checkpoint(run_dir, which: str | None = None, cfg: RunConfig | None = None) -> Path:
    """The checkpoint a run is evaluated with: ``which`` = best | last, by default the run's selection
    rule (``last`` for ``selection="last"``, else ``best``); ``best.pt`` falls back to ``last.pt`` when no
    validation happened. ``cfg``: the run's config when the caller has read it already."""
    run_dir = Path(run_dir)
    cfg = cfg or run_config(run_dir)
    which = which or ("last" if cfg.selection == "last" else "best")
    path = run_dir / (BEST if which == "best" else LAST)
    if which == "best" and not path.is_file():
        path = run_dir / LAST
    if not path.is_file():
        raise VersemiError(f"{run_dir}: no checkpoint {which}.pt; was the run trained?")
    return path


def load_run_net(run_dir, which: str | None = None, device=None) -> tuple[torch.nn.Module, RunConfig]:
    """The trained, evaluated network of a run (in eval mode, on ``device``) and its config. A checkpoint
    written by other code than the code loading it gives a
    :class:`~versemi.provenance.CodeChangedWarning` naming both commits."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    path = selected_checkpoint(run_dir, which, cfg)
    method = get_method(cfg.method, cfg.options)
    net = method.build_networks(cfg)[method.eval_network]
    state = torch.load(path, map_location="cpu", weights_only=False)
    warn_if_code_changed(state.get("code"), code_state(cfg.method), f"{run_dir}: using the network of {path.name}")
    net.load_state_dict(state["net"] if "net" in state else state["nets"][method.eval_network])
    return net.to(get_device(device)).eval(), cfg


def finish_run(run_dir, prepared_dir, device=None, evaluate: bool = True, progress: bool = True) -> dict:
    """Evaluate the selected network on every test set of the run and mark the run complete
    (``DONE.json``: config, label, training time, best validation score, test summary, provenance)."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    summary: dict = {"config": cfg.to_dict(), "label": cfg.label()}
    state = load_checkpoint(run_dir)
    if state is None or state["step"] < sum(n for _, n in get_method(cfg.method, cfg.options).stages(cfg.steps)):
        raise VersemiError(f"{run_dir}: training is not finished; run it again to resume")
    summary["train_seconds"] = state.get("elapsed")
    summary["best"] = state.get("best")
    if evaluate:
        summary["test"] = evaluate_run(run_dir, prepared_dir, split="test", device=device, progress=progress)
    summary["provenance"] = record(cfg.to_dict())
    summary["machine"] = summary["provenance"]["machine"]
    atomic_write_text(run_dir / DONE, json.dumps(summary, indent=1, default=str))
    return summary


def evaluate_run(run_dir, prepared_dir, split: str = "test", datasets=None, device=None, lcc: bool = False,
                 progress: bool = True, protocol: str | None = None, compile: bool = False,
                 batch_size: int | None = None) -> dict:
    """Per-case CSV ``eval/<split>_<dataset>[_<protocol>].csv`` and a summary (mean, std) per dataset.

    ``compile``: run the network through ``torch.compile`` (see ``versemi/evaluate/inference.py``).
    ``batch_size``: windows per forward pass; ``None``: 1 for a compiled network on a CPU (the fastest
    there, ``results/bench/eval_speed.csv``), else 8."""
    run_dir = Path(run_dir)
    net, cfg = load_run_net(run_dir, device=device)
    check_same_preparation(cfg, prepared_dir, datasets or cfg.datasets)
    if batch_size is None:
        batch_size = 1 if (compile and net_device(net).type == "cpu") else 8
    out = {}
    for ds in datasets or cfg.datasets:
        sub = copy.copy(cfg)
        sub.datasets = (ds,)
        cases = split_cases(sub, prepared_dir, split)
        task = cases[0]["task"] if cases else None
        tuples = ((c["name"], c["image"], c["label"], c.get("spacing")) for c in cases)
        suffix = "" if protocol in (None, cfg.eval_protocol) else f"_{protocol}"
        with out_of_memory_as(lambda ds=ds: f"{run_dir}: out of memory evaluating {ds} ({batch_size} windows of "
                              f"{list(cfg.eval_patch)} per call); use `versemi evaluate --batch-size 1` "
                              f"(fewer windows per call) or a machine with more memory"):
            df = evaluate_cases(net, tuples, int(task), run_dir / "eval" / f"{split}_{ds}{suffix}.csv",
                                patch_size=cfg.eval_patch, stride=cfg.eval_stride,
                                protocol=protocol or cfg.eval_protocol, lcc=lcc, progress=progress, compile=compile,
                                batch_size=batch_size)
        out[ds] = summarize(df)
    return out


def check_same_preparation(cfg: RunConfig, prepared_dir, datasets) -> None:
    """A run is evaluated only on data prepared with its own profile (same resampling, crop and size):
    a :class:`VersemiError` naming both profiles otherwise."""
    entries = load_manifest(prepared_dir)["datasets"]
    for ds in datasets:
        prof = entries.get(ds, {}).get("profile")
        if prof is not None and prof != cfg.profile:
            raise VersemiError(f"{prepared_dir}: {ds} was prepared with profile {prof!r} but the run was trained "
                               f"with profile {cfg.profile!r}; evaluate it on data prepared with `versemi prepare "
                               f"--profile {cfg.profile}`")


# ---------------------------------------------------------------------------------- reading results
def done_record(run_dir) -> dict:
    """The ``DONE.json`` of a complete run."""
    p = Path(run_dir) / DONE
    if not p.is_file():
        raise VersemiError(f"{run_dir}: not a complete run (no {DONE})")
    return json.loads(p.read_text())


def run_fields(cfg: RunConfig) -> dict:
    """The config fields that place a run in a table: its row name, the method id, the datasets it was trained on
    (comma-joined), the label ratio, the head, and whether it is task-specific / fully supervised."""
    return {"row": cfg.row_name(), "method_id": cfg.method, "trained_on": ",".join(cfg.datasets), "ratio": cfg.ratio, "head": cfg.head,
            "task_specific": cfg.task_specific, "fully_supervised": cfg.fully_supervised}


def collect_case_metrics(runs: dict[str, Path], split: str = "test", check_code: bool = True) -> pd.DataFrame:
    """Long table of per-case metrics of several runs: one line per run label, dataset and case, with
    the run's placing fields (:func:`run_fields`), the metrics and flags of ``eval/<split>_<ds>.csv``.

    ``check_code``: the runs must have been trained and evaluated by the same code
    (:func:`versemi.provenance.check_compatible` on their recorded code fingerprints)."""
    frames = []
    fps = {}
    for label, run_dir in runs.items():
        cfg = run_config(run_dir)
        if check_code and is_complete(run_dir):
            fps[label] = done_record(run_dir).get("provenance", {}).get("code")
        for csv in sorted(Path(run_dir).glob(f"eval/{split}_*.csv")):
            ds = csv.stem[len(split) + 1:]
            if ds not in DATASETS:
                continue  # another protocol's file, e.g. test_la_fast.csv
            df = pd.read_csv(csv)
            df.insert(0, "dataset", ds)
            for i, (k, v) in enumerate(run_fields(cfg).items()):
                df.insert(1 + i, k, v)
            df.insert(0, "method", label)
            frames.append(df)
    if check_code:
        check_compatible(fps, "table")
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_times(runs: dict[str, Path]) -> pd.DataFrame:
    """Training cost per run: wall time (``DONE.json``), steps, the median step time (``timing.csv``)
    and the placing fields. Columns: ``method, <run_fields>, train_seconds, steps, median_step_s, run``."""
    rows = []
    for label, run_dir in runs.items():
        done = done_record(run_dir)
        m = pd.read_csv(Path(run_dir) / "timing.csv") if (Path(run_dir) / "timing.csv").is_file() else pd.DataFrame()
        rows.append({"method": label, **run_fields(run_config(run_dir)), "train_seconds": done.get("train_seconds"),
                     "steps": int(len(m)) if len(m) else None,
                     "median_step_s": float(m["seconds"].median()) if "seconds" in m and len(m) else math.nan,
                     "run": Path(run_dir).name})
    return pd.DataFrame(rows)


def selection_table(runs: dict[str, Path]) -> pd.DataFrame:
    """Model selection of each run: its ``selection`` rule and the checkpoint the evaluation used."""
    lines = []
    for label, run_dir in runs.items():
        cfg = run_config(run_dir)
        lines.append({"method": label, "selection": cfg.selection,
                      "checkpoint": selected_checkpoint(run_dir, cfg=cfg).name, "steps": cfg.steps})
    return pd.DataFrame(lines, columns=["method", "selection", "checkpoint", "steps"])
