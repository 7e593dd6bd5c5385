"""Background batches: the cheapest-first plan, exclusive claims, committing only the export, a worker
that trains, exports and commits while skipping what is done, and workers that yield the CPU to other
sessions where the kernel schedules by autogroup."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from versemi import batch
from versemi.batch import (
    Item,
    autogroup_nice,
    autogroups_on,
    claim,
    commit_export,
    lower_priority,
    plan,
    step_costs,
    work,
)
from versemi.studies import export_dir, study_configs
from versemi.utils import VersemiError

LA_UB = "Fully supervised (la) 100%"


def _costs(tmp_path, rows):
    p = tmp_path / "method_costs.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    return p


def test_step_costs_read_the_profile_lines_only(tmp_path):
    p = _costs(tmp_path, [{"profile": "demo", "method": "bcp", "step_ms": 200.0},
                          {"profile": "paper", "method": "bcp", "step_ms": 9000.0}])
    assert step_costs("demo", p) == {"bcp": 0.2}
    assert step_costs("smoke", p) == {}
    assert step_costs("demo", tmp_path / "absent.csv") == {}


def test_the_plan_is_cheapest_first_and_covers_every_run_and_seed(smoke_root, tmp_path):
    costs = _costs(tmp_path, [{"profile": "smoke", "method": "sup_only", "step_ms": 10.0},
                              {"profile": "smoke", "method": "versemi", "step_ms": 1000.0}])
    items = plan(["curves", "ablations"], "smoke", seeds=[2333], out=tmp_path / "out",
                 data_dir=smoke_root / "data", costs_csv=costs)
    n_runs = len(study_configs("curves", "smoke", 2333)) + len(study_configs("ablations", "smoke", 2333))
    assert len(items) == n_runs
    assert [it.cost_s for it in items] == sorted(it.cost_s for it in items)
    # every cheap Sup-only curve run comes before every VerSemi ablation
    kinds = [it.method for it in items]
    assert kinds.index("versemi") > max(i for i, k in enumerate(kinds) if k == "sup_only")


def test_a_claim_is_exclusive_and_a_dead_holder_is_taken_over(tmp_path):
    it = Item("curves", 2333, LA_UB, "sup_only", 6, 1.0)
    assert claim(tmp_path, it)
    assert not claim(tmp_path, it)            # this very process holds it
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / it.claim_name).write_text(json.dumps({"pid": dead.pid}))
    assert claim(tmp_path, it)                # its holder is gone
    assert json.loads((tmp_path / it.claim_name).read_text())["pid"] == os.getpid()


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.org")
    _git(repo, "config", "user.name", "t")
    (repo / "a.txt").write_text("a\n")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "first")
    return repo


def test_commit_export_commits_only_the_export_and_keeps_the_rest_staged(tmp_path):
    repo = _repo(tmp_path)
    (repo / "a.txt").write_text("edited\n")
    _git(repo, "add", "a.txt")                # someone's staged work in progress
    exp = repo / "results" / "x" / "seed-1"
    exp.mkdir(parents=True)
    (exp / "cases.csv").write_text("case,dice\nc1,0.5\n")
    assert commit_export(repo, exp, "results x")
    assert _git(repo, "show", "--name-only", "--format=", "HEAD").split() == ["results/x/seed-1/cases.csv"]
    assert _git(repo, "diff", "--cached", "--name-only").split() == ["a.txt"]
    assert not commit_export(repo, exp, "again")   # nothing new to commit


def test_a_worker_trains_exports_commits_and_skips_what_is_done(smoke_root, tmp_path):
    repo = _repo(tmp_path)
    out = repo / "studies"
    items = [Item("curves", 2333, LA_UB, "sup_only", 6, 1.0)]
    kw = dict(profile="smoke", out=out, data_dir=smoke_root / "data", runs_root=smoke_root / "runs",
              claims=tmp_path / "claims", commit_to=repo, log=lambda s: None)
    paths = work(items, **kw)
    dest = export_dir(out, "smoke", "curves", LA_UB, 2333)
    assert paths == [dest] and (dest / "cases.csv").is_file()
    assert "studies/smoke/curves" in _git(repo, "log", "-1", "--name-only")
    assert not list((tmp_path / "claims").iterdir())      # the claim is released
    assert work(items, **kw) == []                          # exported by this code on this data: skipped
    # the plan no longer lists it either
    left = plan(["curves"], "smoke", seeds=[2333], out=out, data_dir=smoke_root / "data")
    assert LA_UB not in [it.label for it in left]


def test_a_la_real_worker_scores_each_export_on_the_released_grid_and_commits_it(smoke_root, tmp_path):
    """With the LA folder (--la-data) a worker scores its la-real export on the released grid while the run
    folder exists and commits the scores; a bad LA folder is logged and leaves the export committed."""
    from versemi.companion.la_study import RELEASED_FILE, RELEASED_RECORD, STUDY

    repo = _repo(tmp_path)
    raw_la = smoke_root / "data" / "smoke" / "raw" / "LA"
    item = Item(STUDY, 2333, "Sup-only 10%", "sup_only", 6, 1.0)
    said = []
    kw = dict(profile="smoke", data_dir=smoke_root / "data", runs_root=smoke_root / "runs",
              claims=tmp_path / "claims", commit_to=repo, log=said.append)
    (dest,) = work([item], out=repo / "first", **kw, la_data=tmp_path / "no-LA-here")
    assert not (dest / RELEASED_FILE).exists() and any("score-released" in s for s in said)
    assert "cases.csv" in _git(repo, "log", "-1", "--name-only")
    said.clear()
    (dest,) = work([item], out=repo / "second", **kw, la_data=raw_la)
    names = _git(repo, "log", "-1", "--name-only")
    assert f"second/smoke/{STUDY}" in names and RELEASED_FILE in names and RELEASED_RECORD in names, names
    assert "cases.csv" in _git(repo, "log", "-2", "--name-only")   # the export's own commit, before
    assert json.loads((dest / RELEASED_RECORD).read_text())["retrained"] is None   # scored from its own folder
    assert any("released grid" in s for s in said)
    # scored once: nothing left to score for that label
    assert batch.score_released_export("Sup-only 10%", raw_la, "smoke", repo / "second", smoke_root / "data",
                                       smoke_root / "runs") == []


def test_the_command_line_prints_the_plan_with_its_cost(smoke_root, tmp_path, capsys):
    from versemi.cli import main

    assert main(["study", "batch", "curves", "--profile", "smoke", "--seeds", "2333", "--dry-run",
                 "--out", str(tmp_path / "out"), "--data-dir", str(smoke_root / "data")]) == 0
    text = capsys.readouterr().out
    assert LA_UB in text and f"{len(study_configs('curves', 'smoke', 2333))} runs" in text and "CPU-hours" in text


def test_a_run_that_two_studies_share_is_one_item_exported_to_both(smoke_root, tmp_path):
    # the deviations' "VerSemi (full)" is the ablations' full model: the same configuration
    items = plan(["ablations", "deviations"], "smoke", seeds=[2333], out=tmp_path / "out",
                 data_dir=smoke_root / "data")
    n = len(study_configs("ablations", "smoke", 2333)) + len(study_configs("deviations", "smoke", 2333))
    shared = [it for it in items if it.also]
    assert len(items) == n - 1 and len(shared) == 1
    assert all(it.exports[0][0] == "ablations" and it.exports[1][0] == "deviations" for it in shared)


def test_only_keeps_the_named_runs_and_an_unknown_label_is_an_error(smoke_root, tmp_path, capsys):
    import pytest

    from versemi.cli import main
    from versemi.utils import VersemiError

    out, data = tmp_path / "out", smoke_root / "data"
    items = plan(["curves"], "smoke", seeds=[2333], out=out, data_dir=data, labels=[LA_UB])
    assert [it.label for it in items] == [LA_UB]
    with pytest.raises(VersemiError, match="no run labelled"):
        plan(["curves"], "smoke", seeds=[2333], out=out, data_dir=data, labels=["No such run"])
    assert main(["study", "batch", "curves", "--profile", "smoke", "--seeds", "2333", "--dry-run", "--only", LA_UB,
                 "--out", str(out), "--data-dir", str(data)]) == 0
    assert "1 runs" in capsys.readouterr().out


def test_lower_priority_writes_the_groups_nice_value_only_where_autogroups_are_on(tmp_path, monkeypatch):
    group, switch = tmp_path / "autogroup", tmp_path / "switch"
    group.write_text("/autogroup-7 nice 0\n")
    switch.write_text("0\n")
    assert not lower_priority(19, group, switch)                   # switched off: left alone
    assert group.read_text() == "/autogroup-7 nice 0\n"
    assert not lower_priority(19, group, tmp_path / "no-such-switch")   # a kernel without autogroups
    switch.write_text("1\n")
    assert lower_priority(19, group, switch)
    assert group.read_text() == "19\n"
    group.write_text("")                                            # a sandboxed /proc that reports nothing
    assert not lower_priority(19, group, switch)
    assert group.read_text() == ""
    monkeypatch.setattr(batch, "autogroup_nice", lambda path: 0)    # a group that reports, but a write that fails
    bad = tmp_path / "a-folder"
    bad.mkdir()
    with pytest.raises(VersemiError, match="a-folder"):
        lower_priority(19, bad, switch)


def test_autogroup_nice_reads_the_groups_value_or_says_it_cannot(tmp_path):
    group = tmp_path / "autogroup"
    group.write_text("/autogroup-7 nice -3\n")
    assert autogroup_nice(group) == -3
    for text in ("", "/autogroup-7\n", "/autogroup-7 nice\n", "/autogroup-7 nice x\n"):
        group.write_text(text)
        assert autogroup_nice(group) is None, text
    assert autogroup_nice(tmp_path / "missing") is None


@pytest.mark.skipif(not autogroups_on() or autogroup_nice() is None,
                    reason="the kernel does not schedule by autogroup here, or its /proc does not report the group")
def test_a_worker_in_its_own_session_lowers_its_group_and_not_its_parents():
    before = autogroup_nice()
    code = ("from versemi.batch import autogroup_nice, lower_priority; lower_priority(19); "
            "print(autogroup_nice())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         start_new_session=True).stdout
    assert int(out) == 19
    assert autogroup_nice() == before
