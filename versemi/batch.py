"""Background batches: the runs of several studies over several seeds, trained by worker processes.

The committed evidence (``results/studies/``) costs many CPU-hours. A batch trains it from a checkout
pinned at the commit whose code it tests (a ``git worktree``, never the tree being edited), with

* a **plan** (:func:`plan`): every (study, seed, run label) still to export, ordered cheapest first by
  the measured step time of each method (``results/bench/method_costs.csv``, written by
  ``bench/method_costs.py``) times the run's steps, so that the most runs finish per CPU-hour and a
  batch cut short leaves the complete seeds of the cheap runs behind rather than half of an expensive
  one; runs shared by two studies (the same config) are trained once and exported to both;
* ``workers`` single-thread **worker processes** (one torch thread each, ``nice`` 19: on a 2-core machine
  two of them keep both cores busy without the thread hand-offs that slow a multi-threaded process when
  another process takes a core). Where the Linux kernel groups tasks by session for CPU time
  (``/proc/sys/kernel/sched_autogroup_enabled`` = 1, the default of many distributions), a process's nice
  value only orders it *within its session's group*, and the groups share the CPU evenly: a niced batch
  would still take half the machine from a test run in another terminal. Each worker therefore starts in a
  session of its own and gives that group the same nice value (:func:`lower_priority`), so that a batch
  really runs on what interactive work leaves. The workers **claim** items with exclusive lock files
  (``<claims>/<study>--<key>--seed-<s>``; a claim whose process is gone is taken over), train each
  through the run cache (``versemi/runs.py``: an interrupted run resumes from its last checkpoint) and
  export it (:func:`versemi.studies.run_study`);
* optionally a **commit** of every finished export into a git checkout (``commit_to``: the folder the
  exports are written into belongs to it), with ``git commit --only <paths>``, so that whatever else is
  staged there stays staged; a busy index is retried.

``versemi study batch sota ablations --profile demo --seeds 2333 1 2 --workers 2 --out <main>/results/studies
--commit-to <main>`` runs it; ``versemi study batch ... --dry-run`` prints the plan with its estimated cost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from versemi.data.ensure import ensure_data
from versemi.studies import (
    SEEDS,
    STUDIES_DIR,
    export_dir,
    exported_by_current_code,
    run_key,
    run_study,
    study_configs,
)
from versemi.utils import VersemiError

COSTS_CSV = Path(__file__).resolve().parent.parent / "results" / "bench" / "method_costs.csv"
AUTOGROUP_SWITCH = Path("/proc/sys/kernel/sched_autogroup_enabled")


@dataclass(frozen=True)
class Item:
    """One run of the plan: the studies (and the label in each) that export it, its seed, method and
    steps, the estimated seconds. A run that several studies share (the same configuration) is one item:
    one worker trains it once and exports it to each, instead of a second worker waiting on its lock."""

    study: str
    seed: int
    label: str
    method: str
    steps: int
    cost_s: float
    also: tuple = ()    # ((study, label), ...) that export the same run

    @property
    def claim_name(self) -> str:
        return f"{self.study}--{run_key(self.label)}--seed-{self.seed}"

    @property
    def exports(self) -> list[tuple[str, str]]:
        return [(self.study, self.label), *[tuple(x) for x in self.also]]


def step_costs(profile: str, costs_csv: str | Path = COSTS_CSV) -> dict[str, float]:
    """method -> measured seconds per training step under ``profile`` (``bench/method_costs.py``); an
    empty dict when the CSV has no line of the profile (every method then costs the same per step)."""
    p = Path(costs_csv)
    if not p.is_file():
        return {}
    df = pd.read_csv(p)
    df = df[df["profile"] == profile]
    return {str(m): float(ms) / 1000.0 for m, ms in zip(df["method"], df["step_ms"])}


def plan(studies, profile: str, seeds=SEEDS, out=STUDIES_DIR, data_dir="results/data",
         costs_csv: str | Path = COSTS_CSV, include_done: bool = False, labels=None) -> list[Item]:
    """The items of ``studies`` x ``seeds`` not yet exported by the current code on the current data (all of
    them with ``include_done``; the phantoms of each seed are generated when missing), cheapest first (estimated cost, then seed in the order given, then study order);
    a method without a measured step time costs the mean of the measured ones. ``labels`` (run labels, as
    ``versemi study run --only``) keeps those runs only; a label no study has raises ``VersemiError``."""
    per_step = step_costs(profile, costs_csv)
    default = sum(per_step.values()) / len(per_step) if per_step else 1.0
    runs: dict[tuple, list] = {}     # (seed, run identity) -> [sort key, first (study, label, cfg), others]
    if labels:
        known = {label for study in studies for label in study_configs(study, profile, int(seeds[0]))}
        unknown = sorted(set(labels) - known)
        if unknown:
            raise VersemiError(f"no run labelled {unknown} in the studies {list(studies)} ({profile} profile); "
                               f"their labels: {sorted(known)}")
    for ki, seed in enumerate(seeds):
        prepared = ensure_data(data_dir, profile, int(seed))   # an export is current only on this very data
        for si, study in enumerate(studies):
            for label, cfg in study_configs(study, profile, int(seed)).items():
                if labels and label not in labels:
                    continue
                dest = export_dir(out, profile, study, label, seed)
                if not include_done and exported_by_current_code(dest, cfg, prepared):
                    continue
                key = (int(seed), cfg.identity())
                if key in runs:
                    runs[key][2].append((study, label))
                    continue
                cost = per_step.get(cfg.method, default) * int(cfg.steps)
                runs[key] = [(round(cost, 1), ki, si), (study, label, cfg, cost), []]
    items = []
    for (seed, _), (order, (study, label, cfg, cost), others) in runs.items():
        items.append((order, Item(study, seed, label, cfg.method, int(cfg.steps), cost, tuple(others))))
    return [it for _, it in sorted(items, key=lambda t: t[0])]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(claims: Path, item: Item) -> bool:
    """Take ``item`` for this process: create its claim file exclusively (pid and time inside). A claim
    whose process no longer exists is removed and taken over. False when another live process holds it."""
    claims.mkdir(parents=True, exist_ok=True)
    path = claims / item.claim_name
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text() or "{}").get("pid")
            except (OSError, ValueError):
                holder = None
            if holder is not None and _alive(int(holder)):
                return False
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "since": time.time()}, f)
        return True
    return False


def commit_export(repo: str | Path, path: str | Path, message: str, tries: int = 20) -> bool:
    """``git add`` + ``git commit --only`` of ``path`` inside ``repo`` (nothing else of the index is
    committed); retried while another git process holds the index. False when there was nothing to commit."""
    repo, path = Path(repo), Path(path)
    rel = str(path.resolve().relative_to(repo.resolve()))
    for attempt in range(tries):
        add = subprocess.run(["git", "-C", str(repo), "add", "--", rel], capture_output=True, text=True)
        if add.returncode == 0:
            diff = subprocess.run(["git", "-C", str(repo), "diff", "--cached", "--quiet", "--", rel])
            if diff.returncode == 0:
                return False
            done = subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", message, "--only", "--", rel],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                return True
            err = done.stderr
        else:
            err = add.stderr
        if "index.lock" not in err:
            raise VersemiError(f"{repo}: git failed to commit {rel}: {err.strip()}")
        time.sleep(1.0 + attempt)
    raise VersemiError(f"{repo}: the git index stayed locked; {rel} is exported but not committed")


def score_released_export(label: str, la_data, profile: str, out=STUDIES_DIR, data_dir="results/data",
                          runs_root="results/runs", log=print) -> list[Path]:
    """Score the committed ``la-real`` runs of ``label`` whose folders the run cache holds and that have no
    released-grid scores yet (:func:`versemi.companion.la_study.score_released` with ``skip_missing``: the
    run just exported, while its folder exists) against the released volumes of ``la_data``; the folders
    written. A failure is logged, not raised: the export stands, and ``versemi study score-released`` scores
    it later."""
    from versemi.companion.la_study import score_released
    from versemi.data.ensure import prepared_dir

    try:
        files = score_released(la_data, prepared_dir(data_dir, profile), runs_root, out, profile, labels=[label],
                               skip_missing=True, progress=False)
    except (VersemiError, OSError) as err:
        log(f"released-grid scoring of {label} failed: {err}; `versemi study score-released` can score it later")
        return []
    return sorted({Path(f).parent for f in files})


def work(items: list[Item], profile: str, out=STUDIES_DIR, data_dir="results/data", runs_root="results/runs",
         claims: str | Path | None = None, commit_to: str | Path | None = None, device: str | None = None,
         log=print, la_data: str | Path | None = None) -> list[Path]:
    """One worker: claim, train and export the items in order (skipping those another live worker holds
    or that are exported meanwhile); each export is committed into ``commit_to`` when given. ``la_data``
    (the Left Atrium folder): an item of the ``la-real`` study is also scored on the released grid right
    after its export (:func:`score_released_export`), and the scores are committed the same way."""
    claims = Path(claims) if claims is not None else Path(runs_root) / ".batch-claims"
    if la_data is not None:
        from versemi.companion.la_study import STUDY as LA_STUDY
    exported = []
    for it in items:
        if not claim(claims, it):
            continue
        t0 = time.perf_counter()
        try:
            paths = []
            for study, label in it.exports:   # the first trains; the others are served by the run cache
                paths += run_study(study, profile, [it.seed], out, data_dir, runs_root, labels=[label],
                                   device=device, progress=False)
            for p in paths:
                log(f"exported {p} ({time.perf_counter() - t0:.0f} s)")
                if commit_to is not None:
                    commit_export(commit_to, p, f"Committed study results: {profile} {it.study}, {it.label}, "
                                                f"seed {it.seed}")
            exported += paths
            if la_data is not None and any(study == LA_STUDY for study, _ in it.exports):
                for folder in score_released_export(it.label, la_data, profile, out, data_dir, runs_root, log):
                    log(f"scored on the released grid: {folder}")
                    if commit_to is not None:
                        commit_export(commit_to, folder, f"{profile} {LA_STUDY} {it.label}, {folder.name}: "
                                                         "scored on the released grid")
        finally:
            (claims / it.claim_name).unlink(missing_ok=True)
    return exported


def autogroups_on(switch: str | Path = AUTOGROUP_SWITCH) -> bool:
    """Whether the kernel schedules by autogroup (``switch`` reads 1); False where it has no such switch."""
    try:
        return Path(switch).read_text().strip() == "1"
    except OSError:
        return False


def autogroup_nice(autogroup: str | Path = "/proc/self/autogroup") -> int | None:
    """The nice value of a scheduler autogroup as its ``/proc/<pid>/autogroup`` file reports it
    (``/autogroup-7 nice 0``); None where the file is missing or does not say (a sandboxed ``/proc``, as in
    some CI containers, has the file but reads it empty)."""
    try:
        fields = Path(autogroup).read_text().split()
    except OSError:
        return None
    if "nice" not in fields[:-1]:
        return None
    try:
        return int(fields[fields.index("nice") + 1])
    except ValueError:
        return None


def lower_priority(nice: int, autogroup: str | Path = "/proc/self/autogroup",
                   switch: str | Path = AUTOGROUP_SWITCH) -> bool:
    """Give the calling process's scheduler autogroup (its session) the nice value ``nice`` (Linux
    ``/proc/<pid>/autogroup``, see ``sched(7)``), where the kernel schedules by autogroup; the process's own
    nice value is set by the ``nice`` command that starts it. True when the group's value was written; False
    where the kernel has no autogroups or has them switched off, or its ``/proc`` does not report the group
    (:func:`autogroup_nice` is None: nothing there to lower). Raising a nice value needs no privilege; an
    error names the file."""
    autogroup = Path(autogroup)
    if not autogroups_on(switch) or autogroup_nice(autogroup) is None:
        return False
    try:
        autogroup.write_text(f"{int(nice)}\n")
    except OSError as err:
        raise VersemiError(f"{autogroup}: could not set the batch worker's autogroup nice value to {nice}: "
                           f"{err}") from err
    return True


def run_batch(studies, profile: str, seeds=SEEDS, workers: int = 2, out=STUDIES_DIR, data_dir="results/data",
              runs_root="results/runs", commit_to: str | Path | None = None, device: str | None = None,
              nice: int = 19, log_dir: str | Path | None = None, labels=None, la_data: str | Path | None = None) -> int:
    """Start ``workers`` worker processes (one torch thread each, ``nice``) on the plan of ``studies`` x
    ``seeds`` (only the runs ``labels`` names, when given) and wait for them; each writes its log to ``<log_dir>/worker-<k>.log`` (default: the run
    cache); ``la_data``: see :func:`work`. Returns the number of workers that failed."""
    items = plan(studies, profile, seeds, out, data_dir, labels=labels)
    log_dir = Path(log_dir) if log_dir is not None else Path(runs_root) / ".batch-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    spec = json.dumps({"items": [it.__dict__ for it in items], "profile": profile, "out": str(out),
                       "data_dir": str(data_dir), "runs_root": str(runs_root), "device": device,
                       "commit_to": None if commit_to is None else str(commit_to), "nice": int(nice),
                       "la_data": None if la_data is None else str(la_data)})
    spec_path = log_dir / "plan.json"
    spec_path.write_text(spec)
    procs = []
    try:
        for k in range(int(workers)):
            log = open(log_dir / f"worker-{k}.log", "a")
            # a session of its own, so that lower_priority changes the worker's scheduler group only
            procs.append(subprocess.Popen(["nice", "-n", str(int(nice)), sys.executable, "-m", "versemi.batch",
                                           str(spec_path)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
            time.sleep(2.0)   # the first worker generates a seed's phantoms under their lock before the second asks
        return sum(p.wait() != 0 for p in procs)
    finally:
        # in their own sessions the workers miss the terminal's Ctrl-C: stop them with the batch (each resumes
        # from its run's last checkpoint on the next call)
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _main(spec_path: str) -> int:
    import torch

    torch.set_num_threads(1)
    spec = json.loads(Path(spec_path).read_text())
    lower_priority(spec.pop("nice"))
    items = [Item(**d) for d in spec.pop("items")]
    work(items, spec["profile"], spec["out"], spec["data_dir"], spec["runs_root"], commit_to=spec["commit_to"],
         device=spec["device"], log=lambda s: print(s, flush=True), la_data=spec.get("la_data"))
    return 0


if __name__ == "__main__":
    from versemi.allocator import configure

    configure()
    raise SystemExit(_main(sys.argv[1]))
