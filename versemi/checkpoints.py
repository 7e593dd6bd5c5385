"""Checkpoint files of a run folder: written atomically, read with a fallback.

A run folder holds ``last.pt`` (the newest state: every network and optimiser the method declares,
the step, the logs so far, the best validation score), ``prev.pt`` (the one before, kept so that a
corrupt ``last.pt`` costs one checkpoint interval, not the run) and ``best.pt`` (the evaluated network
at its best validation score: ``{"net": state_dict, "step", "score"}``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from versemi.utils import VersemiError, atomic_path

LAST, PREV, BEST = "last.pt", "prev.pt", "best.pt"


def save_checkpoint(path: Path, state: dict, keep_previous: bool = False) -> None:
    """``torch.save(state)`` to ``path`` through a temporary file (never half-written).

    ``keep_previous``: once the new file is completely written, the current ``path`` becomes
    ``prev.pt`` (so a failed write never costs the current checkpoint). A failed write (disk full,
    unwritable folder) is a :class:`VersemiError` naming the file; the existing checkpoints stay as they
    were."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
            if keep_previous:
                rotate(path.parent)
    except (OSError, RuntimeError) as e:
        raise VersemiError(f"{path}: cannot write the checkpoint ({type(e).__name__}: {e}); the previous "
                           f"checkpoint is kept") from None


def _upgrade(state: dict) -> dict:
    """A checkpoint of the one-network trainer ({"net", "opt", "teacher"}) in today's layout."""
    if "nets" in state:
        return state
    nets = {"net": state["net"]}
    if state.get("teacher") is not None:
        nets["teacher"] = state["teacher"]
    return {**state, "nets": nets, "optimizers": {"net": state["opt"]} if "opt" in state else {}}


def load_checkpoint(run_dir: Path) -> dict | None:
    """The newest readable checkpoint of ``run_dir`` (``last.pt``, else ``prev.pt`` with a warning
    naming the unreadable file), or None when there is none."""
    for name in (LAST, PREV):
        p = Path(run_dir) / name
        if not p.is_file():
            continue
        try:
            state = torch.load(p, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or not ({"nets", "net"} & set(state)) or "step" not in state:
                raise ValueError("missing keys")
            return _upgrade(state)
        except Exception as e:  # noqa: BLE001 - a corrupt checkpoint is reported and skipped
            warnings.warn(f"{p}: unreadable checkpoint ({type(e).__name__}: {e}); trying the previous one",
                          stacklevel=2)
    return None


def rotate(run_dir: Path) -> None:
    """Keep the current ``last.pt`` as ``prev.pt`` before a new one is written."""
    last = Path(run_dir) / LAST
    if last.is_file():
        last.replace(Path(run_dir) / PREV)
