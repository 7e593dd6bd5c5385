"""The one provenance record: which code, configuration, tree and machine produced an output.

* :func:`code_fingerprint` — a hash of the code that trains and evaluates a run (the package modules
  listed in :data:`TRAINING_CODE`, as parsed syntax trees with docstrings removed, so that editing a
  comment or a docstring keeps the fingerprint while any change of behaviour changes it), combined with
  the run's resolved configuration when one is given. Every run records it (``DONE.json``); tables built
  from several runs check that the runs' fingerprints agree (:func:`check_compatible`).
* :func:`git_state` — the commit of the working tree and whether it was clean.
* :func:`machine` and :func:`library_versions` — where and with which libraries.
* :func:`record` — all of the above in one dict, written next to runs, executed notebooks and exported
  results.
"""

from __future__ import annotations

import ast
import datetime as _dt
import functools
import hashlib
import json
import os
import platform
import subprocess
import sys
import warnings
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import torch

from versemi.utils import VersemiError

PACKAGE = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE.parent

# The package modules whose behaviour decides what a trained and evaluated run contains (paths
# relative to versemi/; a folder stands for every .py file below it).
TRAINING_CODE = ("model.py", "losses.py", "mixing.py", "methods/base.py", "train.py", "checkpoints.py", "config.py",
                 "evaluate", "data/loaders.py", "data/registry.py", "runs.py", "utils.py")
# The code every run shares. Each method's own module is fingerprinted apart (:func:`method_fingerprint`,
# ``method_code`` in the record), so that adding or changing one method leaves the runs of the others
# current; ``DATA_CODE`` (readers, preparation, phantom generator) is recorded apart too.
DATA_CODE = ("data",)

LIBRARIES = ("versemi", "torch", "monai", "numpy", "scipy", "h5py", "scikit-image", "pandas", "papermill",
             "jupyter-book", "myst-nb", "ipywidgets", "ipykernel", "matplotlib")


def _code_files(entries=TRAINING_CODE, root: Path = PACKAGE) -> list[Path]:
    files: list[Path] = []
    for e in entries:
        p = Path(root) / e
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return files


def _normalised_source(path: Path) -> str:
    """The module's syntax tree without docstrings, as text (comments and layout never reach it)."""
    return _normalised_text(path.read_text())


@functools.lru_cache(maxsize=256)
def _normalised_text(text: str) -> str:
    """:func:`_normalised_source` of a module's text (cached: a process fingerprints the same sources for
    every run, checkpoint and evaluation it handles)."""
    tree = ast.parse(text)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def code_fingerprint(config: Mapping | None = None, entries=TRAINING_CODE, root: str | Path = PACKAGE) -> str:
    """16 hex digits of the SHA-256 over the normalised sources of ``entries`` (paths under ``root``,
    the package folder; see the module docstring) and, when given, the resolved ``config`` (a dict, e.g.
    ``RunConfig.to_dict()``)."""
    h = hashlib.sha256()
    for f in _code_files(entries, Path(root)):
        h.update(str(f.relative_to(root)).encode())
        h.update(_normalised_source(f).encode())
    if config is not None:
        h.update(json.dumps(dict(config), sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def git_state(root: str | Path = REPO_ROOT) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the git tree at ``root`` (None when git or
    the repository is not there; tracked files only decide "dirty")."""

    def git(*args: str) -> str | None:
        try:
            p = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return p.stdout.strip() if p.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def library_versions(names=LIBRARIES) -> dict[str, str | None]:
    """Installed version of each distribution in ``names`` (None when absent)."""
    out = {}
    for d in names:
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            out[d] = None
    return out


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``'s first ``model name``; ``platform.processor()`` where there
    is none): two instances of one machine class can differ here, and with it a CPU run's speed and its
    floating-point rounding (another instruction set for the same convolution)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    """Platform, Python, torch, CPU count and model, and the CUDA device (None without one)."""
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpus": os.cpu_count(), "cpu": cpu_model(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def method_fingerprint(method: str) -> str:
    """:func:`code_fingerprint` of the module that defines the registered method ``method`` and of the
    method modules it imports (UA-MT's uses Mean Teacher's noise and student pass), except the shared
    interface ``methods/base.py``, which :data:`TRAINING_CODE` covers."""
    import importlib

    cls = importlib.import_module("versemi.methods").get_method_class(method)
    path = Path(importlib.import_module(cls.__module__).__file__)
    names = sorted(method_modules(path))
    return code_fingerprint(entries=tuple(names), root=path.parent)


def method_modules(path: Path) -> set[str]:
    """File names of the method module ``path`` and of the sibling method modules it imports, transitively
    (``from .x import ...``, ``from versemi.methods.x import ...``, ``from . import x``), without base.py."""
    folder, seen, todo = path.parent, set(), [path.name]
    while todo:
        name = todo.pop()
        if name in seen or name == "base.py" or not (folder / name).is_file():
            continue
        seen.add(name)
        for node in ast.walk(ast.parse((folder / name).read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level == 1 and mod:
                    todo.append(mod.split(".")[0] + ".py")
                elif node.level == 1:
                    todo += [a.name + ".py" for a in node.names]
                elif mod.startswith("versemi.methods."):
                    todo.append(mod.split(".")[2] + ".py")
    return seen


def record(config: Mapping | None = None, root: str | Path = REPO_ROOT) -> dict:
    """The provenance record: ``code`` (the fingerprint of the code every run shares), ``method_code`` (of
    the run's method module, when ``config`` names one), ``data_code`` (readers, preparation, phantoms),
    ``code_and_config`` (with the resolved ``config``, when given), git state, machine, library versions,
    Python's command line and the time."""
    rec = {"code": code_fingerprint()}
    if config is not None and config.get("method"):
        rec["method_code"] = method_fingerprint(str(config["method"]))
    rec["data_code"] = code_fingerprint(entries=DATA_CODE)
    if config is not None:
        rec["code_and_config"] = code_fingerprint(config)
    return {**rec, "git": git_state(root),
            "machine": machine(), "libraries": library_versions(), "argv": list(sys.argv), "time": now()}


class CodeChangedWarning(UserWarning):
    """A run is resumed or evaluated by other code than the code that trained it."""


def code_state(method: str | None = None) -> dict:
    """The fingerprint of the training code (with the module of ``method``, when given) and the git state
    of the tree (stored in checkpoints)."""
    fp = code_fingerprint()
    if method:
        fp = hashlib.sha256(f"{fp}:{method_fingerprint(method)}".encode()).hexdigest()[:16]
    return {"fingerprint": fp, **git_state()}


def warn_if_code_changed(recorded: dict | None, current: dict, what: str) -> None:
    """Warn, naming both commits and fingerprints, when ``recorded`` (a checkpoint's :func:`code_state`)
    is not the ``current`` code. Checkpoints written before code states were recorded pass silently."""
    if recorded and recorded.get("fingerprint") != current.get("fingerprint"):
        warnings.warn(f"{what} with other code than the code that trained it: trained by commit "
                      f"{recorded.get('commit')} (code {recorded.get('fingerprint')}), now commit "
                      f"{current.get('commit')} (code {current.get('fingerprint')}); the results mix both",
                      CodeChangedWarning, stacklevel=3)


def check_compatible(fingerprints: Mapping[str, str | None], what: str = "table") -> str | None:
    """The one code fingerprint shared by every run of ``fingerprints`` (label -> the ``code`` entry
    of the run's record; None for a run that has none); a :class:`VersemiError` listing the groups when
    the runs were trained or evaluated by different code. Runs without a record are ignored; None when
    no run has one."""
    groups: dict[str, list[str]] = {}
    for label, fp in fingerprints.items():
        if fp:
            groups.setdefault(fp, []).append(str(label))
    if len(groups) > 1:
        parts = "; ".join(f"{fp}: {', '.join(labels)}" for fp, labels in groups.items())
        raise VersemiError(f"the runs of the {what} were produced by different code (code fingerprints {parts}); "
                           f"retrain the stale runs (delete their folders) so that one table holds one version "
                           f"of the code")
    return next(iter(groups), None)
