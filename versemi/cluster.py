"""Training a notebook group's runs as cluster jobs through submitit, before its notebooks are executed.

``versemi run <group> --executor slurm|local`` (:func:`run_group_jobs`) maps every run that the group's
notebooks train (:func:`versemi.experiments.notebook_group_configs`) and the run cache lacks to a job of
`submitit <https://github.com/facebookincubator/submitit>`_, the SLURM client of the research community:

* ``slurm``: one job per run, submitted as one job array whose ``--max-parallel`` bounds how many run at
  once (``slurm_array_parallelism``); each job asks for the resources of :func:`slurm_parameters`;
* ``local``: the same jobs as real subprocesses of this machine (submitit's ``LocalExecutor``, the code path
  SLURM uses); it has no queue, so the runs are dealt round-robin to ``--max-parallel`` jobs, each training
  its runs one after the other with its share of the cores (:func:`local_threads`). ``versemi book`` uses it
  to train the runs its notebooks need side by side before they are executed (``versemi/companion/book.py``).

Every job writes into the same run cache as ``versemi train`` (``versemi/runs.py``): a complete run is
skipped, a run folder whose holder died is taken over and resumes from its last checkpoint. Submitting a
group again is therefore idempotent, and a job that SLURM preempts or times out is requeued by submitit's
checkpointing hook (:meth:`TrainJob.checkpoint`) and continues where it stopped. With ``--gpus-per-run N >
1`` a job starts N tasks (one per GPU), exports the ``torch.distributed`` environment that ``torchrun`` would
(``submitit.helpers.TorchDistributedEnvironment``) and trains each run data-parallel (``versemi/train.py``).

A failed job is reported with its log files and does not stop the others (:class:`JobReport`); the
notebooks run afterwards either way and train what is still missing themselves.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from versemi.config import RunConfig
from versemi.runs import get_or_train, is_complete, run_dir_for
from versemi.utils import VersemiError

EXECUTORS = ("local", "slurm")
DEFAULT_TIMEOUT_MIN = 24 * 60


@dataclass(frozen=True)
class ClusterOptions:
    """How the runs become jobs. ``executor``: 'local' or 'slurm'; ``partition``: the SLURM partition
    (None: the cluster's default); ``gpus_per_run``: GPUs (and tasks) per job, 0 on a CPU-only machine;
    ``max_parallel``: jobs running at once; ``timeout_min``: wall-clock limit per job (minutes);
    ``mem_gb`` / ``cpus_per_task``: per job (None: :func:`slurm_parameters` decides); ``folder``: where
    submitit keeps its pickles and the jobs' logs; ``extra``: more ``slurm_*`` parameters passed through."""

    executor: str = "local"
    partition: str | None = None
    gpus_per_run: int = 1
    max_parallel: int = 4
    timeout_min: int = DEFAULT_TIMEOUT_MIN
    mem_gb: int | None = None
    cpus_per_task: int | None = None
    folder: str = "results/jobs"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise VersemiError(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.gpus_per_run < 0 or self.max_parallel < 1 or self.timeout_min < 1:
            raise VersemiError(f"need --gpus-per-run >= 0, --max-parallel >= 1 and --timeout >= 1 minute, got "
                               f"{self.gpus_per_run}, {self.max_parallel}, {self.timeout_min}")


# ---------------------------------------------------------------------------------------------- the job
class TrainJob:
    """A picklable job: train (or find complete) each run of ``configs`` (RunConfig dicts) on the prepared
    data ``prepared`` into ``runs_root``, one after the other. Returns the run folders (str). Under several
    tasks (``gpus_per_run > 1``) every task trains the same run data-parallel; rank 0 holds the run's lock,
    finishes and evaluates it."""

    def __init__(self, configs: Sequence[dict], prepared: str, runs_root: str, device: str | None = None,
                 distributed: bool = False, threads: int | None = None):
        self.configs = [dict(c) for c in configs]
        self.prepared, self.runs_root, self.device, self.distributed = str(prepared), str(runs_root), device, distributed
        self.threads = threads

    def __call__(self) -> list[str]:
        if self.threads:   # several local jobs share the machine's cores (see submit_runs)
            os.environ["OMP_NUM_THREADS"] = str(int(self.threads))
            import torch

            torch.set_num_threads(int(self.threads))
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)))))
        rank = 0
        if self.distributed:
            import submitit

            env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
            rank = env.rank
        out = []
        for c in self.configs:
            cfg = RunConfig.from_dict(c)
            if rank == 0:
                out.append(str(get_or_train(cfg, self.prepared, self.runs_root, device=self.device, progress=False)))
                continue
            run_dir = run_dir_for(cfg, self.prepared, self.runs_root)
            if not is_complete(run_dir):    # the other ranks train beside rank 0, which holds the lock
                from versemi.train import train

                train(cfg, self.prepared, run_dir, device=self.device, progress=False)
            out.append(str(run_dir))
        return out

    def checkpoint(self, *args, **kwargs):
        """submitit's requeue hook (SLURM preemption or timeout): resubmit the same job; its runs resume from
        their last checkpoints (the trainer writes one every ``ckpt_every`` steps)."""
        import submitit

        return submitit.helpers.DelayedSubmission(TrainJob(self.configs, self.prepared, self.runs_root, self.device,
                                                           self.distributed, self.threads))


# ---------------------------------------------------------------------------------------------- resources
# Memory per job (GB) at the paper settings: the authors' VerSemi stage-1 step at batch 8 + 8 and 96^3 peaked
# at 14.7 GB of host memory on a CPU (results/bench, issue 12 of the project); a GPU job keeps the data and
# the loaders in host memory, so ask for that much plus headroom; smaller profiles need far less.
PAPER_MEM_GB = 32
SMALL_MEM_GB = 8
# CPUs per task: the batches are drawn and augmented in the training process (versemi/data/loaders.py), so a
# GPU task needs a few cores for that and for evaluation's sliding windows
PAPER_CPUS = 8
SMALL_CPUS = 2


def slurm_parameters(configs: Sequence[RunConfig], options: ClusterOptions) -> dict:
    """The ``executor.update_parameters`` keywords of one job training ``configs``: time limit, partition,
    GPUs and tasks per node (one task per GPU), CPUs per task, memory per job (scaled by the GPUs),
    the requeue signal, plus ``options.extra``. Pure: checked without a cluster."""
    if not configs:
        raise VersemiError("no run to submit")
    profiles = {c.profile for c in configs}
    paper = "paper" in profiles
    gpus = int(options.gpus_per_run)
    params = {
        "timeout_min": int(options.timeout_min),
        "nodes": 1,
        "tasks_per_node": max(1, gpus),
        "cpus_per_task": int(options.cpus_per_task or (PAPER_CPUS if paper else SMALL_CPUS)),
        "mem_gb": int(options.mem_gb or (PAPER_MEM_GB if paper else SMALL_MEM_GB) * max(1, gpus)),
        "name": "versemi-" + "-".join(sorted({c.method for c in configs}))[:40],
    }
    if gpus:
        params["gpus_per_node"] = gpus
    if options.executor == "slurm":
        if options.partition:
            params["slurm_partition"] = options.partition
        params["slurm_signal_delay_s"] = 120     # time for the checkpointing hook before SLURM kills the job
        params["slurm_array_parallelism"] = int(options.max_parallel)
        params.update({k if k.startswith("slurm_") else f"slurm_{k}": v for k, v in options.extra.items()})
    return params


def local_parameters(params: dict) -> dict:
    """The subset of :func:`slurm_parameters` that submitit's local executor takes (timeout, tasks, GPUs)."""
    keep = ("timeout_min", "tasks_per_node", "gpus_per_node")
    return {k: v for k, v in params.items() if k in keep}


# ---------------------------------------------------------------------------------------------- submission
@dataclass
class JobReport:
    """One submitted job: its labels, submitit job id, state ('done' / 'failed'), the run folders it
    returned, the error and the paths of its logs."""

    labels: list[str]
    job_id: str
    state: str
    runs: list[str]
    error: str = ""
    stdout: str = ""
    stderr: str = ""

    def line(self) -> str:
        head = f"job {self.job_id} ({', '.join(self.labels)}): {self.state}"
        return head if self.state == "done" else f"{head}: {self.error.strip().splitlines()[-1] if self.error else ''} " \
                                                  f"(logs: {self.stdout}, {self.stderr})"


def missing_runs(configs: dict[str, RunConfig], prepared, runs_root) -> dict[str, RunConfig]:
    """The configs whose run folder under ``runs_root`` is not complete."""
    return {k: c for k, c in configs.items() if not is_complete(run_dir_for(c, prepared, runs_root))}


def chunks(labels: Sequence[str], options: ClusterOptions) -> list[list[str]]:
    """The runs of each job: one run per job on SLURM (the array's parallelism bounds the load), the runs
    dealt round-robin to ``max_parallel`` jobs on the local executor (which starts every job at once)."""
    labels = list(labels)
    if options.executor == "slurm":
        return [[k] for k in labels]
    n = min(len(labels), options.max_parallel)
    return [labels[i::n] for i in range(n)] if n else []


def make_executor(options: ClusterOptions, folder: Path):
    """A submitit executor writing its pickles and logs under ``folder``."""
    import submitit

    if options.executor == "slurm":
        return submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    return submitit.LocalExecutor(folder=str(folder))


def submit_runs(configs: dict[str, RunConfig], prepared, runs_root, options: ClusterOptions, device=None,
                folder: str | Path | None = None) -> list:
    """Submit the missing runs of ``configs`` (label -> config) as jobs; returns ``[(labels, job)]`` (empty when
    every run is complete)."""
    todo = missing_runs(configs, prepared, runs_root)
    if not todo:
        return []
    folder = Path(folder or options.folder)
    executor = make_executor(options, folder / "%j" if options.executor == "slurm" else folder)
    groups = chunks(list(todo), options)
    jobs = []
    params = [slurm_parameters([todo[k] for k in g], options) for g in groups]
    distributed = options.gpus_per_run > 1
    if options.executor == "slurm":
        executor.update_parameters(**params[0])   # one array: the resources of its first run (same profile)
        with executor.batch():
            for g in groups:
                jobs.append((g, executor.submit(TrainJob([todo[k].to_dict() for k in g], str(prepared),
                                                         str(runs_root), device, distributed))))
        return jobs
    threads = local_threads(len(groups), options)
    for g, p in zip(groups, params):
        executor.update_parameters(**local_parameters(p))
        jobs.append((g, executor.submit(TrainJob([todo[k].to_dict() for k in g], str(prepared), str(runs_root),
                                                 device, distributed, threads))))
    return jobs


def local_threads(n_jobs: int, options: ClusterOptions, cores: int | None = None) -> int | None:
    """Torch threads per job on the local executor, which starts its ``n_jobs`` jobs at once on this
    machine: ``options.cpus_per_task`` when set; None for a single job (it takes ``OMP_NUM_THREADS``, or
    every core); else the cores shared out (at least 1), so that the jobs together do not ask for more
    threads than there are cores (a multi-threaded process whose threads wait for a core stalls at every
    parallel region)."""
    if options.cpus_per_task:
        return int(options.cpus_per_task)
    if n_jobs <= 1:
        return None
    cores = cores or len(os.sched_getaffinity(0))
    return max(1, int(cores) // max(1, int(n_jobs)))


def wait_jobs(jobs) -> list[JobReport]:
    """Wait for every job; a failure is reported (with its logs), never raised."""
    reports = []
    for labels, job in jobs:
        paths = getattr(job, "paths", None)
        logs = {"stdout": str(getattr(paths, "stdout", "")), "stderr": str(getattr(paths, "stderr", ""))}
        try:
            runs = job.result()
            reports.append(JobReport(labels, str(job.job_id), "done", list(runs), **logs))
        except Exception as e:   # noqa: BLE001 - a failed job is reported, the others go on
            reports.append(JobReport(labels, str(job.job_id), "failed", [], error=str(e), **logs))
    return reports


def run_group_jobs(configs: dict[str, RunConfig], prepared, runs_root, options: ClusterOptions, device=None,
                   folder: str | Path | None = None, log=print) -> list[JobReport]:
    """:func:`submit_runs` then :func:`wait_jobs`, printing one line per job through ``log``."""
    jobs = submit_runs(configs, prepared, runs_root, options, device=device, folder=folder)
    n_runs = sum(len(g) for g, _ in jobs)
    log(f"{n_runs} of {len(configs)} runs to train, in {len(jobs)} {options.executor} job(s)"
        + (f" (logs under {folder or options.folder})" if jobs else ""))
    reports = wait_jobs(jobs)
    for r in reports:
        log(r.line())
    return reports


__all__ = ["EXECUTORS", "ClusterOptions", "TrainJob", "JobReport", "slurm_parameters", "local_parameters",
           "missing_runs", "chunks", "local_threads", "make_executor", "submit_runs", "wait_jobs", "run_group_jobs"]
