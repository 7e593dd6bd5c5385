"""Build the Jupyter Book: offline assets, the figures the chapters include, the notebook executions
(:mod:`versemi.companion.notebooks`) and ``jupyter-book build -W -n``; and the two CLI entry points,
``versemi book`` (:func:`cli_book`) and ``versemi run`` (:func:`cli_run`; in Python :func:`run_group`, which
can train the group's runs as cluster jobs first, ``versemi/cluster.py``).

The book's source directory is the repository root (``_config.yml``, ``_toc.yml``); its pages live in
``book/`` and the executed notebooks in ``book/executed/``. Sphinx never executes a notebook: it renders
the outputs papermill stored.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt

from versemi.companion.figures import method_figure, save_figure
from versemi.companion.notebooks import (
    BOOK_EXECUTED,
    NOTEBOOKS,
    ROOT,
    RUNS_EXECUTED,
    Notebook,
    available,
    execute_notebooks,
    params_hash,
    parse_params,
    print_summary,
    select_group,
)
from versemi.utils import VersemiError

ASSETS_EXT = Path("book/_ext/versemi_assets.py")
FIGURES = Path("book/_static/figures")

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --------------------------------------------------------------------------- assets and figures


def _assets_module(root: Path):
    """``book/_ext/versemi_assets.py``, loaded by path: it is a Sphinx extension and a script (stdlib
    only), not part of the package."""
    path = Path(root) / ASSETS_EXT
    spec = importlib.util.spec_from_file_location("versemi_book_assets", path)
    if spec is None or not path.is_file():
        raise VersemiError(f"{path} is missing")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def ensure_assets(root: str | os.PathLike = ROOT) -> Path:
    """Fetch/copy the offline JS assets (npm ci once) into book/_static/vendor, and draw the figures
    that the chapters include (book/_static/figures/, generated, not committed)."""
    ensure_figures(root)
    mod = _assets_module(Path(root))
    try:
        return mod.ensure_assets(Path(root))
    except mod.AssetError as e:
        raise VersemiError(str(e)) from e


def ensure_figures(root: str | os.PathLike = ROOT) -> Path:
    """The method overview figure of the intro (``book/_static/figures/method.png``), drawn by
    :func:`versemi.companion.figures.method_figure` once and saved by its ``save_figure``."""
    out = Path(root) / FIGURES / "method.png"
    if not out.is_file():
        fig = method_figure()
        try:
            save_figure(fig, out)
        finally:
            plt.close(fig)
    return out


# --------------------------------------------------------------------------- jupyter-book


def _jupyter_book() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter-book")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("jupyter-book")
    if found:
        return [found]
    raise VersemiError("jupyter-book is not installed in this environment (pip install 'jupyter-book>=1.0.4,<2')")


def run_jupyter_book(root: str | os.PathLike = ROOT, path_output: str | os.PathLike | None = None,
                     nitpicky: bool = True, quiet: bool = False) -> tuple[int, list[str]]:
    """``jupyter-book build <root> -W [-n] --keep-going --all``; returns (exit code, warning lines).

    The output is echoed (unless quiet); the warning/error lines are collected for the summary.
    """
    cmd = [*_jupyter_book(), "build", str(root), "-W", "--keep-going", "--all"]
    if nitpicky:
        cmd.append("-n")
    if path_output is not None:
        cmd += ["--path-output", str(path_output)]
    env = {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    problems: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if not quiet:
            sys.stderr.write(line)
        plain = _ANSI.sub("", line).strip()
        if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", plain) and "Kernel is running over TCP" not in plain:
            problems.append(plain)
    return proc.wait(), problems


def build_book(
    profile: str = "demo",
    params: dict | None = None,
    build: bool = True,
    names: Sequence[str | os.PathLike | Notebook] | None = None,
    *,
    root: str | os.PathLike = ROOT,
    path_output: str | os.PathLike | None = None,
    kernel: str = "python3",
    timeout: float | None = None,
    nitpicky: bool = True,
    quiet: bool = False,
    wait: bool = True,
    parallel_runs: bool = True,
) -> int:
    """Execute the notebooks (all registered ones that exist, or ``names``) into book/executed,
    then build the book with ``jupyter-book build <root> -W -n --keep-going --all`` unless
    ``build=False``. Prints a summary; returns 0 when every notebook and the build succeeded,
    else 1, after listing the failures.

    ``parallel_runs``: first start the runs that the notebooks train in every build side by side
    (:func:`start_live_runs`); each notebook waits for its own. False: each notebook trains its runs in
    turn, multi-threaded.

    A full run (``names=None``) also removes executed notebooks whose name is no longer registered.
    ``path_output``: where ``_build/`` goes (default: the root).
    """
    root = Path(root).resolve()
    out_dir = root / BOOK_EXECUTED
    if build:
        ensure_assets(root)  # fail fast, before the long part, when npm is unavailable
    absent = [nb.source for nb in NOTEBOOKS if not (root / nb.source).is_file()]
    if names is None:
        names = available(root)
        if not names:
            raise VersemiError(f"no registered notebook exists under {root / 'notebooks'}")
        keep = {nb.name for nb in NOTEBOOKS}
        for stale in sorted(out_dir.glob("*.ipynb")) if out_dir.is_dir() else []:
            if stale.stem not in keep:
                stale.unlink()
                print(f"removed {stale.relative_to(root)} (no longer registered)", file=sys.stderr)
    live = start_live_runs(names, profile, params, root, log=None if quiet else _say) if parallel_runs else None
    results = execute_notebooks(names, profile, params, out_dir, kernel, root=root, timeout=timeout, quiet=quiet,
                                wait=wait, before=live.wait_for if live else None)
    if live:
        live.finish()
    build_res = None
    if build:
        if not quiet:
            print("building the book ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        build_res = run_jupyter_book(root, path_output=path_output, nitpicky=nitpicky, quiet=quiet)
        if not quiet:
            print(f"book build took {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    print_summary(results, build_res)
    if absent:
        print(f"not written yet (skipped): {', '.join(absent)}")
    failed = [r for r in results if not r.ok]
    code = 0
    if failed:
        code = 1
        print("FAILED notebooks (their partial outputs are kept in " f"{out_dir}):")
        for r in failed:
            print(f"  {r.name}: {r.error_line}")
    if build_res is not None and build_res[0] != 0:
        code = 1
        print(f"FAILED book build (exit {build_res[0]}):")
        for line in build_res[1][:20] or ["(no warning line captured; see the output above)"]:
            print(f"  {line}")
        if len(build_res[1]) > 20:
            print(f"  ... and {len(build_res[1]) - 20} more")
    if code == 0 and build_res is not None:
        html = Path(path_output or root) / "_build" / "html" / "index.html"
        print(f"book: {html}")
    return code


# --------------------------------------------------------------------------- the live runs, side by side

def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class LiveRuns:
    """The runs of a book build trained as local jobs before the notebooks that need them are executed
    (:func:`start_live_runs`). ``jobs``: run identity -> ``(label, submitit job)``; ``needs``: notebook name
    -> the identities of the runs it trains."""

    def __init__(self, jobs: dict, needs: dict[str, list[str]], log=None):
        self.jobs, self.needs, self.log = jobs, needs, log
        self.reports: dict[str, object] = {}

    def wait_for(self, name: str) -> None:
        """Wait for the jobs training the runs of notebook ``name`` (before it is executed, so that its page
        shows no lock wait). A failed job is reported by :meth:`finish`; the notebook then trains the run."""
        from versemi.cluster import wait_jobs

        todo = [i for i in self.needs.get(name, []) if i in self.jobs and i not in self.reports]
        if not todo:
            return
        t0 = time.perf_counter()
        for ident, report in zip(todo, wait_jobs([([self.jobs[i][0]], self.jobs[i][1]) for i in todo])):
            self.reports[ident] = report
        if self.log:
            self.log(f"{name}: waited {time.perf_counter() - t0:.0f} s for its runs "
                     f"({', '.join(self.jobs[i][0] for i in todo)})")

    def finish(self) -> list:
        """Wait for every job (also those of notebooks not executed after all: every job trains a run of some
        notebook in ``needs``) and say how each ended."""
        for name in self.needs:
            self.wait_for(name)
        if self.log:
            for r in self.reports.values():
                self.log(r.line())
        return list(self.reports.values())


def start_live_runs(names, profile: str, params: dict | None, root: str | os.PathLike = ROOT, log=_say,
                    cores: int | None = None) -> LiveRuns | None:
    """Start the runs that the notebooks ``names`` train in every build (``LIVE_RUNS`` in
    ``versemi/experiments.py``: the trained networks behind the training, t-SNE, failure and explorer
    chapters) as local submitit jobs (``versemi/cluster.py``), one per missing run, all at once, the
    machine's cores shared out between them, into the run cache the notebooks read (``<root>/results/runs``,
    on the data of ``<root>/results/data``, prepared here first). On this 2-core CPU two single-thread runs
    side by side train 1.35x the steps per second of one two-thread run (``bench/``-style side-by-side
    measurement in issue 15's notes).

    None (the notebooks train in turn, as without it) where it would not help: on a GPU (``device`` auto
    with CUDA present, or cuda), for a real-data profile (a run's memory is the paper's), on one core, or
    with fewer than two runs to train."""
    import torch

    from versemi.cluster import ClusterOptions, missing_runs, submit_runs
    from versemi.config import get_profile
    from versemi.data.ensure import DEFAULT_SEED, ensure_data
    from versemi.experiments import notebook_group_configs

    root = Path(root)
    params = dict(params or {})
    device = str(params.get("device", "auto"))
    cores = cores or len(os.sched_getaffinity(0))
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) \
            or not get_profile(profile).is_phantom or cores < 2:
        return None
    seed, ratio = int(params.get("seed", DEFAULT_SEED)), int(params.get("ratio", 10))
    nbs = _notebooks(names, root)
    needs = {nb.name: notebook_group_configs(nb.groups, profile, seed, ratio, live_only=True) for nb in nbs}
    configs = {c.identity(): (label, c) for cfgs in needs.values() for label, c in cfgs.items()}
    if not configs:
        return None
    prepared = ensure_data(root / "results" / "data", profile, seed)
    runs_root = root / "results" / "runs"
    todo = missing_runs({i: c for i, (_, c) in configs.items()}, prepared, runs_root)
    if len(todo) < 2:
        return None
    options = ClusterOptions(executor="local", gpus_per_run=0, max_parallel=len(todo))
    folder = root / options.folder / f"book-{params_hash(profile, params)}"
    jobs = {g[0]: (configs[g[0]][0], job)
            for g, job in submit_runs(todo, prepared, runs_root, options, device="cpu", folder=folder)}
    if log:
        log(f"training {len(jobs)} runs side by side for the notebooks ({', '.join(label for label, _ in jobs.values())}; "
            f"logs under {folder.relative_to(root) if folder.is_relative_to(root) else folder})")
    return LiveRuns(jobs, {n: [c.identity() for c in cfgs.values()] for n, cfgs in needs.items()}, log)


def _notebooks(names, root: Path) -> list[Notebook]:
    """The registered notebooks among ``names`` (registry names, entries or paths; others train nothing
    the book knows of)."""
    by_name = {nb.name: nb for nb in NOTEBOOKS}
    out = []
    for n in names:
        key = n.name if isinstance(n, Notebook) else Path(str(n)).stem
        if key in by_name:
            out.append(by_name[key])
    return out


# --------------------------------------------------------------------------- CLI glue


def cli_book(args) -> int:
    """``versemi book [--profile P] [--no-build] [--param k=v ...] [--only NAME ...] [--timeout S]``."""
    return build_book(
        profile=args.profile,
        params=parse_params(getattr(args, "param", None)),
        build=not getattr(args, "no_build", False),
        names=getattr(args, "only", None) or None,
        kernel=getattr(args, "kernel", "python3"),
        timeout=getattr(args, "timeout", None),
        wait=not getattr(args, "no_wait", False),
        parallel_runs=not getattr(args, "serial_runs", False),
    )


def run_group(group: str, profile: str = "demo", params: dict | None = None, out: str | os.PathLike | None = None,
              *, into_book: bool = False, executor: str | None = None, cluster=None, kernel: str = "python3",
              timeout: float | None = None, wait: bool = True, root: str | os.PathLike = ROOT, log=print):
    """Execute the notebooks of ``group`` with ``params`` (the Python form of ``versemi run``).

    ``out``: where the executed copies go (default ``results/executed/<group>-<hash of profile+params>/``;
    ``into_book``: ``book/executed``). ``executor`` ('local' | 'slurm', or ``cluster``: a
    :class:`versemi.cluster.ClusterOptions`): first train the runs the group's notebooks need
    (:func:`versemi.experiments.notebook_group_configs` at the ``seed`` and ``ratio`` of ``params``) as
    submitit jobs into the run cache ``results/runs`` (``versemi/cluster.py``); the notebooks then find them
    there. A failed job is listed and the notebooks still run. Returns ``(results, job_reports)``.
    """
    root = Path(root)
    params = dict(params or {})
    nbs = select_group(group, root)
    if into_book:
        out = root / BOOK_EXECUTED
    elif out is None:
        out = root / RUNS_EXECUTED / f"{group}-{params_hash(profile, params)}"
    reports = []
    if executor is not None or cluster is not None:
        from versemi.cluster import ClusterOptions, run_group_jobs
        from versemi.data.ensure import DEFAULT_SEED, ensure_data
        from versemi.experiments import notebook_group_configs

        cluster = cluster or ClusterOptions(executor=executor)
        seed, ratio = int(params.get("seed", DEFAULT_SEED)), int(params.get("ratio", 10))
        configs = notebook_group_configs([g for nb in nbs for g in nb.groups], profile, seed, ratio)
        if configs:
            prepared = ensure_data(root / "results" / "data", profile, seed)
            device = params.get("device")
            reports = run_group_jobs(configs, prepared, root / "results" / "runs", cluster,
                                     device=None if device in (None, "auto") else device,
                                     folder=root / cluster.folder / f"{group}-{params_hash(profile, params)}", log=log)
        else:
            log(f"the notebooks of {group!r} train no run: nothing to submit")
    results = execute_notebooks(nbs, profile, params, out, kernel, root=root, timeout=timeout, wait=wait)
    return results, reports


def cli_run(args, root: str | os.PathLike = ROOT) -> int:
    """``versemi run <group> [--profile P] [--param k=v ...] [--into-book] [--out DIR] [--executor local|slurm
    ...]``.

    Re-executes a notebook group with other parameters into
    ``results/executed/<group>-<hash of profile+params>/`` (or ``--out``), so the book's copies
    stay untouched, unless ``--into-book``; with ``--executor`` the group's runs are trained as cluster jobs
    first (:func:`run_group`). ``root``: the repository root the notebooks are taken from (and run in).
    Exit code 1 when a notebook or a job failed.
    """
    root = Path(root)
    params = parse_params(getattr(args, "param", None))
    cluster = None
    if getattr(args, "executor", None):
        from versemi.cluster import ClusterOptions

        gpus = args.gpus_per_run
        if gpus is None:
            import torch

            gpus = 1 if args.executor == "slurm" else min(1, torch.cuda.device_count())
        cluster = ClusterOptions(executor=args.executor, partition=args.slurm_partition, gpus_per_run=gpus,
                                 max_parallel=args.max_parallel, timeout_min=args.job_timeout,
                                 mem_gb=args.mem_gb)
    results, reports = run_group(args.group, args.profile, params, getattr(args, "out", None),
                                 into_book=getattr(args, "into_book", False), cluster=cluster,
                                 kernel=getattr(args, "kernel", "python3"), timeout=getattr(args, "timeout", None),
                                 wait=not getattr(args, "no_wait", False), root=root)
    print_summary(results)
    out = results[0].output.parent if results and results[0].output else None
    print(f"executed notebooks: {out}")
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"FAILED {r.name}: {r.error_line}")
    bad_jobs = [r for r in reports if r.state != "done"]
    for r in bad_jobs:
        print(f"FAILED {r.line()}")
    return 1 if failed or bad_jobs else 0
