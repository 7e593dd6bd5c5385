"""Execute the companion's notebooks with papermill, one after the other, and record each execution.

Layout (the book's source directory is the repository root, see ``_config.yml``):

- ``notebooks/NN_name.ipynb``: the sources, stored without outputs, each with a papermill
  ``parameters`` cell; registered, in book order, in :data:`NOTEBOOKS`;
- ``book/executed/NN_name.ipynb``: their executed copies, rendered by the book as they are
  (``execute_notebooks: "off"``), listed by the glob ``book/executed/*`` in ``_toc.yml``;
  beside them ``run_summary.json`` and ``provenance.json``;
- ``results/executed/<group>-<hash>/``: re-executions by ``versemi run`` with other parameters,
  outside the book unless ``--into-book``.

A failing notebook does not stop the others. Its partly executed copy (papermill writes it with
an error cell above the failing cell) is kept and marked as failed, and the exit code says so.
``provenance.json`` holds the one provenance record of :func:`versemi.provenance.record` (code
fingerprint, git state, machine, library versions) plus, per notebook, its profile, parameters and
times. The book build itself lives in :mod:`versemi.companion.book`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
import papermill as pm
import yaml
from papermill.exceptions import PapermillExecutionError

from versemi.config import profile_names
from versemi.locks import folder_lock
from versemi.provenance import now, record
from versemi.utils import VersemiError, atomic_path, atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
BOOK_EXECUTED = Path("book/executed")
RUNS_EXECUTED = Path("results/executed")
SUMMARY_NAME = "run_summary.json"
PROVENANCE_NAME = "provenance.json"
RECORD_TAG = "versemi-run-record"
# parameters that versemi fills in itself (passed only to notebooks that declare them)
STANDARD_PARAMS = ("profile", "results_dir", "data_dir")


@dataclass(frozen=True)
class Notebook:
    """One registered notebook: ``name`` (``NN_name``, also the executed file's stem), its source
    path relative to the repository root, and the groups ``versemi run <group>`` selects it by."""

    name: str
    source: str
    groups: tuple[str, ...]


# The notebooks in book order. One line per notebook; the group "all" is implicit. Entries whose
# source does not exist are skipped (and reported as "not written yet").
NOTEBOOKS: tuple[Notebook, ...] = (
    Notebook("01_data", "notebooks/01_data.ipynb", ("data",)),
    Notebook("02_train", "notebooks/02_train.ipynb", ("train",)),
    Notebook("03_sota", "notebooks/03_sota.ipynb", ("sota",)),
    Notebook("04_ablations", "notebooks/04_ablations.ipynb", ("ablations",)),
    Notebook("05_tsne", "notebooks/05_tsne.ipynb", ("tsne",)),
    Notebook("06_failures", "notebooks/06_failures.ipynb", ("failures",)),
    Notebook("07_explorer", "notebooks/07_explorer.ipynb", ("explorer",)),
    Notebook("08_la_real", "notebooks/08_la_real.ipynb", ("la",)),
    Notebook("09_budget", "notebooks/09_budget.ipynb", ("budget",)),
    Notebook("10_conflict", "notebooks/10_conflict.ipynb", ("conflict",)),
    # executed last (it reads the others' results), shown first among the results: its executed copy's
    # name sorts first in the book's glob
    Notebook("00_claims", "notebooks/00_claims.ipynb", ("claims",)),
)


@dataclass
class Result:
    """The outcome of one notebook execution (times: ISO 8601 UTC; seconds: wall time)."""

    name: str
    status: str  # "ok" | "failed"
    seconds: float
    error: str | None = None  # "ename: evalue (cell N)", or why nothing ran
    output: Path | None = None  # executed notebook (also kept when the notebook failed)
    source: str = ""
    profile: str = ""
    parameters: dict = field(default_factory=dict)
    started: str = ""
    ended: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def error_line(self) -> str:
        return (self.error or "").strip().splitlines()[0] if self.error else ""

    def record(self) -> dict:
        d = asdict(self)
        d["output"] = str(self.output) if self.output else None
        d["error"] = self.error_line or None
        return d


# --------------------------------------------------------------------------- registry


def registered(name: str) -> Notebook:
    """The registered notebook ``name``; an unknown name is a :class:`VersemiError`."""
    for nb in NOTEBOOKS:
        if nb.name == name:
            return nb
    raise VersemiError(f"unknown notebook {name!r}; registered: {', '.join(n.name for n in NOTEBOOKS)}")


def groups() -> list[str]:
    """Every group name, "all" first."""
    seen: list[str] = ["all"]
    for nb in NOTEBOOKS:
        seen += [g for g in nb.groups if g not in seen]
    return seen


def available(root: Path = ROOT) -> list[Notebook]:
    """Registered notebooks whose source exists, in book order."""
    return [nb for nb in NOTEBOOKS if (Path(root) / nb.source).is_file()]


def select_group(group: str, root: Path = ROOT) -> list[Notebook]:
    """The existing notebooks of ``group`` ("all" = every one); an error when there are none."""
    if group not in groups():
        raise VersemiError(f"unknown notebook group {group!r}; groups: {', '.join(groups())}")
    chosen = [nb for nb in NOTEBOOKS if group == "all" or group in nb.groups]
    present = [nb for nb in chosen if (Path(root) / nb.source).is_file()]
    if not present:
        raise VersemiError(
            f"no notebook of group {group!r} exists yet (expected: {', '.join(nb.source for nb in chosen)})"
        )
    return present


def _resolve(items: Iterable[str | os.PathLike | Notebook], root: Path) -> list[tuple[str, Path]]:
    """Registry names, Notebook entries or paths to .ipynb files -> (name, source path)."""
    out: list[tuple[str, Path]] = []
    for item in items:
        if isinstance(item, Notebook):
            name, src = item.name, Path(root) / item.source
        elif str(item).endswith(".ipynb"):
            src = Path(item)
            name = src.stem
        else:
            nb = registered(str(item))
            name, src = nb.name, Path(root) / nb.source
        if not src.is_file():
            raise VersemiError(f"notebook {name!r}: source {src} does not exist")
        out.append((name, src))
    names = [n for n, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise VersemiError(f"notebooks given twice: {', '.join(dup)}")
    return out


# --------------------------------------------------------------------------- parameters


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def parse_params(items: Sequence[str] | None) -> dict:
    """``["lr=1e-3", "sizes=[1, 2]", "name=abc"]`` -> ``{"lr": 0.001, "sizes": [1, 2], "name": "abc"}``.

    Values are read with ``yaml.safe_load``; a number that YAML 1.1 leaves as a string (``1e-3``)
    becomes a float. ``profile`` is set with ``--profile``, not here.
    """
    params: dict = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise VersemiError(f"--param {item!r}: expected key=value with a Python identifier as key")
        if key == "profile":
            raise VersemiError("--param profile=...: use --profile instead")
        if key in params:
            raise VersemiError(f"--param {key} given twice")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise VersemiError(f"--param {item!r}: not a valid YAML value ({str(e).splitlines()[0]})") from e
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)
        params[key] = value
    return params


def declared_parameters(path: Path) -> dict[str, str]:
    """Names declared in the notebook's ``parameters`` cell -> their default (as written)."""
    try:
        info = pm.inspect_notebook(str(path))
    except Exception as e:  # unreadable notebook
        raise VersemiError(f"{path}: cannot read the parameters cell ({e})") from e
    return {k: v.get("default", "") for k, v in info.items()}


def params_hash(profile: str, params: dict) -> str:
    """10 hex digits identifying a (profile, parameters) pair: the folder name of ``versemi run``."""
    blob = json.dumps({"profile": profile, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


# --------------------------------------------------------------------------- records


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_records(out_dir: Path, results: list[Result], call: dict, provenance: dict) -> None:
    """Merge this call's results into run_summary.json and provenance.json in ``out_dir``.

    Entries of earlier calls are kept while their executed notebook still exists, so that the
    records describe every executed notebook in the folder, each with its own profile/commit.
    ``provenance``: this call's :func:`versemi.provenance.record`, written at the top level.
    """
    summary_path, prov_path = out_dir / SUMMARY_NAME, out_dir / PROVENANCE_NAME
    now_names = {r.name for r in results}

    old = _read_json(summary_path).get("notebooks", [])
    kept = [e for e in old if e.get("name") not in now_names and (out_dir / f"{e.get('name')}.ipynb").is_file()]
    entries = kept + [
        {"name": r.name, "status": r.status, "seconds": round(r.seconds, 2), "error": r.error_line or None,
         "profile": r.profile, "output": r.output.name if r.output else None}
        for r in results
    ]
    entries.sort(key=lambda e: e["name"])
    atomic_write_text(summary_path, json.dumps({"updated": call["ended"], "notebooks": entries}, indent=2) + "\n")

    old_prov = _read_json(prov_path).get("notebooks", {})
    nb_prov = {k: v for k, v in old_prov.items() if k not in now_names and (out_dir / f"{k}.ipynb").is_file()}
    for r in results:
        nb_prov[r.name] = {
            "status": r.status, "source": r.source, "profile": r.profile, "parameters": r.parameters,
            "git": call["git"], "started": r.started, "ended": r.ended, "seconds": round(r.seconds, 2),
        }
    prov = {
        "last_call": {k: call[k] for k in ("started", "ended", "wall_seconds", "profile", "params", "seed", "git")},
        **provenance,
        "notebooks": dict(sorted(nb_prov.items())),
    }
    atomic_write_text(prov_path, json.dumps(prov, indent=2, default=str) + "\n")


def _record_cell(result: Result, git: dict):
    params = ", ".join(f"`{k}={v!r}`" for k, v in sorted(result.parameters.items())) or "none"
    commit = (git.get("commit") or "unknown")[:10]
    dirty = " (with uncommitted changes)" if git.get("dirty") else ""
    when = result.started.replace("T", " ").replace("+00:00", " UTC")
    if result.ok:
        head, cls = "Run record", "note"
        status = f"executed without error in {result.seconds:.1f} s"
    else:
        head, cls = "Run record: this notebook FAILED", "error"
        status = f"**failed** after {result.seconds:.1f} s: `{result.error_line}`"
    text = (
        f"```{{admonition}} {head}\n:class: {cls}\n"
        f"Executed by papermill with profile **{result.profile}** on {when}, "
        f"git commit `{commit}`{dirty}; {status}. Parameters: {params}.\n```"
    )
    return nbformat.v4.new_markdown_cell(text, metadata={"tags": [RECORD_TAG]})


def _annotate(path: Path, result: Result, git: dict) -> None:
    """Insert the run-record box below the notebook's title (or at the top)."""
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if RECORD_TAG not in c.get("metadata", {}).get("tags", [])]
    at = 0
    for i, c in enumerate(nb.cells):
        if c.cell_type == "markdown" and c.source.lstrip().startswith("# "):
            at = i + 1
            break
        if c.cell_type == "code":
            break
    nb.cells.insert(at, _record_cell(result, git))
    nbformat.write(nb, path)


def _failure_notebook(path: Path, result: Result, git: dict) -> None:
    """A page that says plainly that the notebook could not be executed at all."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {result.name}"),
        nbformat.v4.new_markdown_cell(
            f"This notebook could not be executed, so this page has no outputs. Source: "
            f"`{result.source}`. Error: `{result.error_line}`."
        ),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    _annotate(path, result, git)


# --------------------------------------------------------------------------- execution


class _NoOutput(Exception):
    pass


def _execute_one(name: str, src: Path, out: Path, parameters: dict, profile: str, kernel: str,
                 cwd: Path, timeout: float | None, git: dict, source_label: str) -> Result:
    res = Result(name=name, status="ok", seconds=0.0, source=source_label, profile=profile,
                 parameters=parameters, started=now())
    t0 = time.perf_counter()

    def finish(error: str | None) -> None:
        res.seconds = time.perf_counter() - t0
        res.ended = now()
        if error:
            res.status, res.error = "failed", error

    try:
        with atomic_path(out, suffix=".ipynb") as tmp:
            try:
                pm.execute_notebook(
                    str(src), str(tmp), parameters=parameters, kernel_name=kernel, cwd=str(cwd),
                    progress_bar=False, log_output=False, execution_timeout=timeout,
                )
                finish(None)
            except PapermillExecutionError as e:
                finish(f"{e.ename}: {e.evalue} (cell {e.exec_count if e.exec_count is not None else '?'})")
            except Exception as e:  # kernel missing/died, timeout, unreadable notebook, ...
                finish(f"{type(e).__name__}: {str(e).strip() or repr(e)}")
            if tmp.stat().st_size == 0:
                raise _NoOutput
            _annotate(tmp, res, git)
        res.output = out
    except _NoOutput:
        # nothing was written: replace any older copy by a page that says so
        with atomic_path(out, suffix=".ipynb") as tmp:
            _failure_notebook(tmp, res, git)
        res.output = out
    return res


def execute_notebooks(
    names: Iterable[str | os.PathLike | Notebook],
    profile: str,
    params: dict | None = None,
    out_dir: str | os.PathLike = BOOK_EXECUTED,
    kernel: str = "python3",
    *,
    root: str | os.PathLike = ROOT,
    results_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    timeout: float | None = None,
    quiet: bool = False,
    wait: bool = True,
    before=None,
) -> list[Result]:
    """Execute notebooks with papermill into ``out_dir`` (relative paths are relative to ``root``).

    names: registry names (see ``NOTEBOOKS``), ``Notebook`` entries or paths to ``.ipynb`` files.
    profile: one of ``versemi.config.profile_names("notebooks")``.
    Each notebook gets, if its ``parameters`` cell declares them: ``profile``, ``results_dir``
    (default ``results``) and ``data_dir`` (default ``results/data``; both relative to ``root``, the
    working directory of the kernel, when inside it), plus those of
    ``params`` that it declares. A key of ``params`` that no notebook declares is an error.

    Every notebook runs, whatever happened to the ones before. The executed copy
    ``<out_dir>/<name>.ipynb`` is written atomically; a failed notebook keeps its partial
    execution (papermill's error cell marks the failing cell) and gets a "FAILED" record box.
    ``run_summary.json`` and ``provenance.json`` in ``out_dir`` are updated atomically.
    timeout: seconds per cell (None: no limit).
    before: called with each notebook's name just before it is executed (the book waits there for the
    runs it trains side by side, ``versemi/companion/book.py``).
    One process at a time writes ``out_dir`` (``versemi/locks.py``): a second one waits for it
    (``wait=False``: a ``LockBusy`` naming the holder).
    """
    root = Path(root).resolve()
    out_dir = Path(out_dir)
    out_dir = out_dir if out_dir.is_absolute() else root / out_dir
    known_profiles = profile_names("notebooks")
    if profile not in known_profiles:
        raise VersemiError(f"unknown profile {profile!r}; profiles: {', '.join(known_profiles)}")
    params = dict(params or {})
    todo = _resolve(names, root)
    if not todo:
        raise VersemiError("no notebook to execute")

    def rel(p: str | os.PathLike | None, default: str) -> str:
        # relative to the root (the notebooks' working directory) when inside it, so that the
        # published pages do not show the builder's absolute paths
        path = Path(p).resolve() if p else root / default
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)

    standard = {"profile": profile, "results_dir": rel(results_dir, "results"),
                "data_dir": rel(data_dir, "results/data")}
    declared = {name: declared_parameters(src) for name, src in todo}
    unknown = sorted(k for k in params if not any(k in d for d in declared.values()))
    if unknown:
        known = sorted(set().union(*declared.values()))
        raise VersemiError(
            f"parameter(s) {', '.join(unknown)} not declared by any of {', '.join(declared)}; "
            f"declared: {', '.join(known) or 'none'}"
        )
    with folder_lock(out_dir, "executed notebooks", wait=wait):
        return _execute_all(todo, declared, standard, params, profile, out_dir, kernel, root, timeout, quiet,
                            before)


def _execute_all(todo, declared, standard, params, profile, out_dir: Path, kernel, root: Path, timeout,
                 quiet, before=None) -> list[Result]:
    """The execution loop of :func:`execute_notebooks` (under the folder lock) and its records."""
    out_dir.mkdir(parents=True, exist_ok=True)
    provenance = record(root=root)
    git = provenance["git"]
    call = {"started": now(), "profile": profile, "params": params, "seed": params.get("seed"), "git": git}
    t0 = time.perf_counter()
    results: list[Result] = []
    for i, (name, src) in enumerate(todo, 1):
        merged = {**standard, **params}
        nb_params = {k: v for k, v in merged.items() if k in declared[name]}
        label = os.path.relpath(src, root) if src.is_relative_to(root) else str(src)
        if before is not None:
            before(name)
        if not quiet:
            print(f"[{i}/{len(todo)}] {name}: executing ({profile}) ...", file=sys.stderr, flush=True)
        res = _execute_one(name, src, out_dir / f"{name}.ipynb", nb_params, profile, kernel, root,
                           timeout, git, label)
        if not quiet:
            tail = "ok" if res.ok else f"FAILED: {res.error_line}"
            print(f"[{i}/{len(todo)}] {name}: {tail} ({res.seconds:.1f} s)", file=sys.stderr, flush=True)
        results.append(res)
    call.update(ended=now(), wall_seconds=round(time.perf_counter() - t0, 2))
    _write_records(out_dir, results, call, provenance)
    return results


def print_summary(results: Sequence[Result], build: tuple[int, list[str]] | None = None, file=None) -> None:
    """One line per notebook (status, seconds, first error line), and the book build's outcome."""
    file = file or sys.stdout
    w = max([len("notebook")] + [len(r.name) for r in results])
    print(f"{'notebook':<{w}}  {'status':<6}  {'seconds':>8}  error", file=file)
    for r in results:
        print(f"{r.name:<{w}}  {r.status:<6}  {r.seconds:8.1f}  {r.error_line}", file=file)
    if build is not None:
        code, problems = build
        print(f"book build: {'ok' if code == 0 else f'FAILED (exit {code})'}"
              + (f", {len(problems)} warning(s)/error(s)" if problems else ""), file=file)
