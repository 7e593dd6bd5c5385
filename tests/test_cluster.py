"""versemi.cluster: a notebook group's runs as submitit jobs (the local executor: real subprocesses, the code
path SLURM uses), idempotent resubmission, a killed job resumed from its checkpoint, and the SLURM parameters
of the paper profile (checked without a cluster)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from versemi import cluster as C
from versemi.companion import book
from versemi.config import make_config
from versemi.experiments import notebook_group_configs, sota_configs
from versemi.runs import get_or_train, is_complete, run_dir_for
from versemi.utils import VersemiError

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- pure parts
def test_slurm_parameters_of_the_paper_profile():
    cfgs = list(sota_configs("paper", 10, 2333).values())[:1]
    opts = C.ClusterOptions(executor="slurm", partition="gpu-a100", gpus_per_run=2, max_parallel=16,
                            timeout_min=600, extra={"account": "lab42"})
    p = C.slurm_parameters(cfgs, opts)
    assert p["slurm_partition"] == "gpu-a100" and p["gpus_per_node"] == 2 and p["tasks_per_node"] == 2
    assert p["timeout_min"] == 600 and p["nodes"] == 1 and p["slurm_array_parallelism"] == 16
    assert p["mem_gb"] == 2 * C.PAPER_MEM_GB and p["cpus_per_task"] == C.PAPER_CPUS
    assert p["slurm_account"] == "lab42" and p["slurm_signal_delay_s"] > 0
    assert p["name"].startswith("versemi-")
    # every key is one submitit's SLURM executor accepts
    import submitit

    ex = submitit.AutoExecutor(folder="unused", cluster="debug")
    valid = set(ex._valid_parameters()) | {f"slurm_{k}" for k in submitit.SlurmExecutor._valid_parameters()}
    assert set(p) <= valid | {"name"}, set(p) - valid
    small = C.slurm_parameters(list(sota_configs("demo", 10, 2333).values())[:1],
                               C.ClusterOptions(executor="slurm", gpus_per_run=1))
    assert small["mem_gb"] == C.SMALL_MEM_GB and "slurm_partition" not in small
    cpu = C.slurm_parameters(cfgs, C.ClusterOptions(executor="local", gpus_per_run=0))
    assert "gpus_per_node" not in cpu and cpu["tasks_per_node"] == 1 and "slurm_array_parallelism" not in cpu
    assert C.local_parameters(p) == {"timeout_min": 600, "tasks_per_node": 2, "gpus_per_node": 2}
    with pytest.raises(VersemiError, match="no run"):
        C.slurm_parameters([], opts)
    with pytest.raises(VersemiError, match="--executor"):
        C.ClusterOptions(executor="pbs")
    with pytest.raises(VersemiError, match="max-parallel"):
        C.ClusterOptions(max_parallel=0)


def test_runs_become_jobs():
    labels = [f"r{i}" for i in range(5)]
    assert C.chunks(labels, C.ClusterOptions(executor="slurm", max_parallel=2)) == [[k] for k in labels]
    assert C.chunks(labels, C.ClusterOptions(executor="local", max_parallel=2)) == [["r0", "r2", "r4"], ["r1", "r3"]]
    assert C.chunks(labels[:1], C.ClusterOptions(max_parallel=4)) == [["r0"]]
    assert C.chunks([], C.ClusterOptions()) == []


def test_notebook_groups_name_the_runs_their_notebooks_train():
    assert list(notebook_group_configs(["explorer"], "smoke")) == ["VerSemi 10%"]
    assert list(notebook_group_configs(["train"], "smoke")) == ["VerSemi 10%", "Uni-UA-MT 10%"]
    assert notebook_group_configs(["data", "budget", "la"], "smoke") == {}
    sota = notebook_group_configs(["sota"], "smoke")
    assert list(sota) == list(sota_configs("smoke", 10, 2333))
    paper = {c.identity() for r in (10, 20) for c in sota_configs("paper", r, 2333).values()}   # both ratios;
    assert len(notebook_group_configs(["sota"], "paper")) == len(paper) < 2 * len(sota_configs("paper", 10))  # UB once
    both = notebook_group_configs(["explorer", "train", "sota"], "smoke")
    assert len(both) == len(sota) and len({c.identity() for c in both.values()}) == len(both)   # shared runs once


# ---------------------------------------------------------------------------------------------- local executor
def _args(group: str, **kw) -> argparse.Namespace:
    base = dict(group=group, profile="smoke", param=[], into_book=False, out=None, kernel="python3", timeout=600,
                executor="local", slurm_partition=None, gpus_per_run=0, max_parallel=2, job_timeout=30, mem_gb=None)
    return argparse.Namespace(**{**base, **kw})


def _run_folders(root: Path) -> dict[str, float]:
    runs = root / "results" / "runs"
    return {p.name: (p / "DONE.json").stat().st_mtime for p in runs.iterdir() if (p / "DONE.json").is_file()} \
        if runs.is_dir() else {}


@pytest.mark.slow
def test_versemi_run_with_the_local_executor_trains_as_jobs_then_runs_the_notebooks(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "notebooks").mkdir(parents=True)
    shutil.copy2(ROOT / "notebooks" / "07_explorer.ipynb", src / "notebooks")
    assert book.cli_run(_args("explorer", out=str(tmp_path / "executed")), root=src) == 0
    said = capsys.readouterr().out
    assert "1 of 1 runs to train, in 1 local job(s)" in said and ": done" in said
    trained = _run_folders(src)
    assert len(trained) == 1                         # the job trained it; the notebook found it in the cache
    logs = list((src / "results" / "jobs").rglob("*_log.out"))
    assert logs, "submitit wrote no job log"
    assert (tmp_path / "executed" / "07_explorer.ipynb").is_file()
    # a second submission trains nothing and changes no run
    assert book.cli_run(_args("explorer", out=str(tmp_path / "executed2")), root=src) == 0
    assert "0 of 1 runs to train, in 0 local job(s)" in capsys.readouterr().out
    assert _run_folders(src) == trained


def _child_pids(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split()
        out += [int(k) for k in kids]
    return out + [g for k in out for g in _child_pids(k)]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to find the job's process")
def test_a_killed_job_is_resubmitted_and_resumes_from_its_checkpoint(smoke_root, tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")   # the job and the reference on one thread: bitwise comparable
    threads = torch.get_num_threads()
    prepared = smoke_root / "data" / "smoke" / "prepared"
    cfg = make_config("sup_only", "smoke", datasets=("la",), ratio=100, steps=300, ckpt_every=10, val_every=100)
    configs = {"Sup-only la": cfg}
    runs = tmp_path / "runs"
    run_dir = run_dir_for(cfg, prepared, runs)
    opts = C.ClusterOptions(executor="local", gpus_per_run=0, max_parallel=1, timeout_min=20)
    [(labels, job)] = C.submit_runs(configs, prepared, runs, opts, folder=tmp_path / "jobs")
    assert labels == ["Sup-only la"]
    deadline = time.time() + 240
    while not (run_dir / "last.pt").is_file():      # the first checkpoint: the run is under way
        assert time.time() < deadline and not job.done(), f"no checkpoint: {job.stderr()}"
        time.sleep(0.05)
    victims = _child_pids(int(job.job_id))
    assert victims, "the job's training process was not found"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    [report] = C.wait_jobs([(labels, job)])
    assert report.state == "failed" and report.stderr and "log" in report.line()
    assert not is_complete(run_dir), "the run finished before it could be killed"
    done_steps = len(pd.read_csv(run_dir / "metrics.csv"))
    assert 0 < done_steps < 300
    # resubmit: the new job takes the dead holder's lock over and resumes from the last checkpoint
    reports = C.run_group_jobs(configs, prepared, runs, opts, folder=tmp_path / "jobs", log=lambda s: None)
    assert [r.state for r in reports] == ["done"] and is_complete(run_dir)
    log = Path(reports[0].stdout).read_text() + Path(reports[0].stderr).read_text()
    assert "taking over the lock" in log
    assert C.submit_runs(configs, prepared, runs, opts, folder=tmp_path / "jobs") == []
    # the same final metrics as an uninterrupted run of the same config
    torch.set_num_threads(1)
    try:
        ref = get_or_train(cfg, prepared, tmp_path / "ref", progress=False)
    finally:
        torch.set_num_threads(threads)
    a, b = (pd.read_csv(d / "metrics.csv") for d in (run_dir, ref))
    assert len(a) == len(b) == 300
    pd.testing.assert_series_equal(a["loss"].iloc[-50:].reset_index(drop=True),
                                   b["loss"].iloc[-50:].reset_index(drop=True), rtol=1e-5)
    test_a, test_b = (json.loads((d / "DONE.json").read_text())["test"] for d in (run_dir, ref))
    assert test_a["la"]["dice_mean"] == pytest.approx(test_b["la"]["dice_mean"], abs=1e-6)


# ---------------------------------------------------------------------------------------------- the book's live runs
def test_local_jobs_share_the_cores_out():
    opts = C.ClusterOptions(executor="local", gpus_per_run=0)
    assert C.local_threads(3, opts, cores=2) == 1          # three runs at once on two cores: one thread each
    assert C.local_threads(2, opts, cores=16) == 8
    assert C.local_threads(1, opts, cores=4) is None       # one job: OMP_NUM_THREADS or every core, as before
    assert C.local_threads(2, C.ClusterOptions(executor="local", cpus_per_task=3), cores=16) == 3


def test_live_runs_are_those_a_notebook_trains_in_every_build():
    assert list(notebook_group_configs(["train"], "smoke", live_only=True)) == ["VerSemi 10%"]   # Uni-UA-MT: committed
    assert list(notebook_group_configs(["failures"], "smoke", live_only=True)) == ["VerSemi (full)", "w/o L_aux"]
    assert notebook_group_configs(["sota", "ablations", "claims", "conflict", "data"], "smoke", live_only=True) == {}
    live = notebook_group_configs(["train", "tsne", "failures", "explorer"], "smoke", live_only=True)
    assert len(live) == 3 and len({c.identity() for c in live.values()}) == 3   # VerSemi 10% == VerSemi (full)


def test_the_book_trains_live_runs_only_where_side_by_side_helps(tmp_path):
    assert book.start_live_runs(["06_failures"], "smoke", {"device": "cuda"}, tmp_path) is None
    assert book.start_live_runs(["06_failures"], "la-real", {}, tmp_path) is None     # real data: the paper's memory
    assert book.start_live_runs(["06_failures"], "smoke", {}, tmp_path, cores=1) is None
    assert book.start_live_runs(["03_sota", "00_claims", "01_data"], "smoke", {}, tmp_path, cores=2) is None
    assert not (tmp_path / "results").exists()              # nothing prepared, nothing submitted


@pytest.mark.slow
def test_the_book_trains_a_notebooks_runs_side_by_side_before_it(tmp_path):
    said: list[str] = []
    live = book.start_live_runs(["06_failures"], "smoke", {}, tmp_path, log=said.append, cores=2)
    assert live is not None and len(live.jobs) == 2 and "training 2 runs side by side" in said[0]
    prepared = tmp_path / "results" / "data" / "smoke" / "prepared"
    cfgs = notebook_group_configs(["failures"], "smoke", live_only=True)
    dirs = [run_dir_for(c, prepared, tmp_path / "results" / "runs") for c in cfgs.values()]
    from versemi.locks import holder_of
    both = False
    deadline = time.time() + 300
    while time.time() < deadline and not all(is_complete(d) for d in dirs):
        holders = [holder_of(d) for d in dirs]
        if all(holders) and holders[0]["pid"] != holders[1]["pid"]:
            both = True                                     # two processes train the two runs at once
        time.sleep(0.2)
    live.wait_for("01_data")                                # a notebook that trains nothing waits for nothing
    live.wait_for("06_failures")
    assert all(is_complete(d) for d in dirs)
    assert both, "the two runs were not trained at the same time"
    reports = live.finish()
    assert [r.state for r in reports] == ["done", "done"]
    assert any("06_failures: waited" in line for line in said)
    # everything is in the cache now: a second build trains nothing side by side
    assert book.start_live_runs(["06_failures"], "smoke", {}, tmp_path, cores=2) is None
